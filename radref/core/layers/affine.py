"""The affine coupling layer of Real NVP, the baseline (notes §4; docs/model.md §6.4)::

    log_scale, shift = conditioner(x_A)
    z_B = x_B * exp(log_scale) + shift,   z_A = x_A
    term = sum_B log_scale

Conditioner output layout: column ``2 i + j`` belongs to transformed
dimension ``i``, ``j`` = :data:`LOG_SCALE` or :data:`SHIFT`.  Parameters:
``{"cond": mlp_params}``.  The layer has no discrete latent: ``forward``
returns ``k = None``, ``inverse`` ignores its ``k`` and ``sample`` its
uniforms.

This module implements the coupling-layer contract of
:mod:`radref.core.layers`.  An output beyond float64 comes out as ``+-inf``
without a warning; the flow reports its row as out of range.
"""
from typing import NamedTuple

import numpy as np

from radref.core.layers.masks import Columns, columns, sum_over_transformed
from radref.core.mlp import mlp_backward, mlp_forward, mlp_init

#: What the layers above the core ask of a kind (the contract's constants).
NAME = "affine"  # the key of radref.core.layers.LAYER_KINDS (FlowConfig.kind)
MODEL_NAME = "realnvp"  # the model's name on the command line and in reproduce's runs
DISPLAY_NAME = "Real NVP"
MODEL_CLASS = "RealNVPFlow"  # its estimator (radref.user.estimators; a checkpoint's "model")
#: rows per chunk when several threads evaluate this kind (a multiple of
#: radref.core.chunks.CHUNK_ROWS), measured in docs/performance.md ("Threads"):
#: two threads' speed-up over one thread with 4,096 rows, on 1M points, log-density
#: and sampling, summed over three settings (AMD native and AVX2, Intel native):
#: 8,192 rows 10.1, 4,096 rows 9.8, 16,384 rows 9.2 (8,192 loses 0.02-0.10 on
#: AMD natively and gains up to 0.18 elsewhere); longer chunks leave AMD's cache
THREAD_CHUNK_ROWS = 8192
HAS_DISCRETE_LATENTS = False
N_BRANCHES = 1
#: the paper's baseline (§4.2): as many parameters as Rad's with 56 hidden units
DEFAULT_ARCHITECTURE = {"n_layers": 6, "hidden": 56, "out_std": 0.01}

#: Conditioner outputs per transformed dimension, and where each one sits.
N_FEATURES = 2
LOG_SCALE, SHIFT = 0, 1
#: the conditioner output (per transformed dimension) that is the log-scale of z_B
OUTPUT_LOG_SCALE = LOG_SCALE


class AffineCouplingCache(NamedTuple):
    cols: Columns
    cond_cache: tuple  # conditioner MLP
    x_trans: np.ndarray  # x_B, (n, d_B)
    scale: np.ndarray  # exp(log_scale), (n, d_B)


def init(dim, layer, hidden, gate_hidden=0, out_std=0.01, random_state=None):
    """Random parameters: a conditioner ``d_A -> 2 d_B`` (tanh head).
    ``gate_hidden`` is not used (the contract's signature)."""
    cols = columns(dim, layer)
    return {"cond": mlp_init(dim - cols.n_transformed, hidden, N_FEATURES * cols.n_transformed,
                             "tanh", out_std=out_std, random_state=random_state)}


def _conditioner(x, params, cols):
    """``cond_out``, shape ``(n, d_B, N_FEATURES)``, and the conditioner's cache."""
    mlp_out, cond_cache = mlp_forward(x[:, cols.conditioning], params["cond"])
    return mlp_out.reshape(len(x), cols.n_transformed, N_FEATURES), cond_cache


def forward(x, params, layer):
    """Affine coupling ``x -> (z, None, term, cache)``; ``x``, ``z`` of shape
    ``(n, d)``, ``term = sum_B log_scale`` of shape ``(n,)``."""
    cols = columns(x.shape[1], layer)
    cond_out, cond_cache = _conditioner(x, params, cols)
    x_trans, scale = x[:, cols.transformed], np.exp(cond_out[..., LOG_SCALE])
    z = x.copy()
    with np.errstate(over="ignore"):  # beyond float64: +-inf, reported by the flow
        z[:, cols.transformed] = x_trans * scale + cond_out[..., SHIFT]
    term = sum_over_transformed(cond_out[..., LOG_SCALE])
    return z, None, term, AffineCouplingCache(cols, cond_cache, x_trans, scale)


def backward(dz, dterm, cache):
    """Backward of :func:`forward` (derivations.md §8): ``(dx, {"cond": grads})``."""
    n, cols = len(dz), cache.cols
    dz_trans = dz[:, cols.transformed]
    dcond_out = np.empty((n, cols.n_transformed, N_FEATURES))
    dcond_out[..., LOG_SCALE] = dz_trans * cache.x_trans * cache.scale + dterm[:, None]
    dcond_out[..., SHIFT] = dz_trans
    dx_cond, cond_grads = mlp_backward(dcond_out.reshape(n, -1), cache.cond_cache)
    dx = np.empty_like(dz)
    dx[:, cols.conditioning] = dz[:, cols.conditioning] + dx_cond
    dx[:, cols.transformed] = dz_trans * cache.scale
    return dx, {"cond": cond_grads}


def inverse(z, k, params, layer):
    """Inverse of :func:`forward`: ``x_B = (z_B - shift) exp(-log_scale)``
    (``k`` is ignored: there is no discrete latent)."""
    cols = columns(z.shape[1], layer)
    cond_out, _ = _conditioner(z, params, cols)
    x = z.copy()
    with np.errstate(over="ignore"):  # beyond float64: +-inf, reported by the flow
        x[:, cols.transformed] = ((z[:, cols.transformed] - cond_out[..., SHIFT])
                                  * np.exp(-cond_out[..., LOG_SCALE]))
    return x


def sample(z, uniforms, params, layer):
    """The sampling step of the contract: the inverse (nothing to draw);
    returns ``(x, None)``."""
    return inverse(z, None, params, layer), None


def folded(cache):
    """``None``: an affine layer folds nothing (one preimage everywhere)."""
    return None
