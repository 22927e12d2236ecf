"""The Rad coupling layer (paper §4.2, Fig. 10; notes §4-5).

Per transformed dimension, with the conditioner output ``cond_out =
conditioner(x_A)`` (eq. 15 for one layer; docs/model.md §6.3)::

    u   = (x_B - shift_in) * exp(-log_scale_in)                 pre-affine
    v, k, log|f'(u)| = f(u; alpha(P, Q))                          surjection (eq. 23, 26-30)
    z_B = v * exp(log_scale_out) + shift_out,   z_A = x_A        post-affine
    s   = gating_net(z)                                           reads the whole output z
    term = sum_B [ log p(k | z) + log|f'(u)| - log_scale_in + log_scale_out ]

with ``P = softmax(p_logits)``, ``Q = softmax(q_logits)`` and ``log p(k | z)``
the gating distribution of eq. 31-33.

Conditioner output layout (**choice**): column ``10 i + j`` belongs to
transformed dimension ``i``, with ``j`` as in the constants below
(:data:`LOG_SCALE_IN` ... :data:`SHIFT_OUT`).  Gating network output: column
``3 i + j`` is the logit of branch ``j`` for transformed dimension ``i``.
Parameters: ``{"cond": mlp_params, "gate": mlp_params}``.

This module implements the coupling-layer contract of
:mod:`radref.core.layers` (``init``, ``forward``, ``backward``, ``inverse``,
``sample``, ``folded``).

Range (docs/errors.md, "Numerical extremes"): an output beyond float64 (``v``
on an outer piece of slope ``e^1000``) comes out as ``+-inf`` without a
warning, and the flow reports its row as out of range; the gating network,
which reads that output, is evaluated at ``z = 0`` for such rows
(:func:`radref.core.numerics.zero_rows`) so that ``term`` stays finite.
"""
from typing import NamedTuple

import numpy as np

from radref.core.gating import (gating_probabilities, log_gating_backward, log_gating_forward,
                                sample_branch)
from radref.core.layers.masks import Columns, columns, sum_over_transformed
from radref.core.mlp import mlp_backward, mlp_forward, mlp_init
from radref.core.numerics import out_of_range_rows, zero_rows
from radref.core.rad_transform import rad_transform_backward, rad_transform_forward
from radref.core.slopes import slopes_forward
from radref.core.surjection import surjection_inverse

#: What the layers above the core ask of a kind (the contract's constants).
NAME = "rad"  # the key of radref.core.layers.LAYER_KINDS (FlowConfig.kind)
MODEL_NAME = "rad"  # the model's name on the command line and in reproduce's runs
DISPLAY_NAME = "Rad"
MODEL_CLASS = "RadFlow"  # its estimator (radref.user.estimators; a checkpoint's "model")
#: rows per chunk when several threads evaluate this kind (a multiple of
#: radref.core.chunks.CHUNK_ROWS), measured in docs/performance.md ("Threads"):
#: on 1M points two threads are 1.6-1.8 times as fast as one thread with 4,096-row
#: chunks (native and AVX2), against 1.05-1.5 with 4,096-row chunks
THREAD_CHUNK_ROWS = 16384
HAS_DISCRETE_LATENTS = True
N_BRANCHES = 3  # k in {0, 1, 2}: the branches of the five-piece surjection
#: the paper's architecture (§4.2); ``gate_hidden=None`` is ``hidden``
DEFAULT_ARCHITECTURE = {"n_layers": 6, "hidden": 8, "gate_hidden": None, "out_std": 0.01}

#: Conditioner outputs per transformed dimension, and where each one sits.
N_FEATURES = 10
LOG_SCALE_IN, SHIFT_IN = 0, 1
P_LOGITS, Q_LOGITS = slice(2, 5), slice(5, 8)
LOG_SCALE_OUT, SHIFT_OUT = 8, 9
#: the conditioner output (per transformed dimension) that is the log-scale of z_B
OUTPUT_LOG_SCALE = LOG_SCALE_OUT


class RadCouplingCache(NamedTuple):
    """What :func:`backward` needs; arrays of shape ``(n, d_B)`` unless stated."""

    cols: Columns
    cond_cache: tuple  # conditioner MLP
    gate_cache: tuple  # gating MLP
    slopes_cache: tuple
    gating_cache: tuple
    transform_cache: tuple  # radref.core.rad_transform: u, v, the scales, the surjection's

    @property
    def u(self):
        """The surjection's input, ``(n, d_B)``."""
        return self.transform_cache.u

    @property
    def v(self):
        """The surjection's output, ``(n, d_B)``."""
        return self.transform_cache.v

    @property
    def surj_cache(self):
        """The surjection's cache (its ``piece`` is the piece of each ``u``)."""
        return self.transform_cache.surj_cache


def init(dim, layer, hidden, gate_hidden, out_std=0.01, random_state=None):
    """Random parameters: a conditioner ``d_A -> 10 d_B`` (tanh head), then a
    gating network ``d -> 3 d_B`` (linear head), drawn in that order from one
    ``np.random.default_rng(random_state)``."""
    rng = np.random.default_rng(random_state)
    cols = columns(dim, layer)
    n_conditioning = dim - cols.n_transformed
    return {
        "cond": mlp_init(n_conditioning, hidden, N_FEATURES * cols.n_transformed, "tanh",
                         out_std=out_std, random_state=rng),
        "gate": mlp_init(dim, gate_hidden, 3 * cols.n_transformed, "linear",
                         out_std=out_std, random_state=rng),
    }


def _conditioner(x, params, cols):
    """``cond_out`` of shape ``(n, d_B, N_FEATURES)`` and the slopes it sets.

    ``cond_out`` and the gating logits (:func:`_gating_logits`) are the
    networks' outputs reshaped, stored component-first (column-major): the
    same numbers, but each ``[..., j]`` is one contiguous run of ``n`` numbers,
    so NumPy's loops over the 3-way axes (P, Q, the gating logits) run along
    the rows, not along axes of length 3 (docs/performance.md, "The cost model").
    """
    mlp_out, cond_cache = mlp_forward(x[:, cols.conditioning], params["cond"])
    cond_out = np.asfortranarray(mlp_out).reshape(len(x), cols.n_transformed, N_FEATURES)
    slopes, slopes_cache = slopes_forward(cond_out[..., P_LOGITS], cond_out[..., Q_LOGITS])
    return cond_out, cond_cache, slopes, slopes_cache


def _gating_logits(z, params, cols):
    """``s(z)``, shape ``(n, d_B, 3)``, and the gating network's cache."""
    mlp_out, gate_cache = mlp_forward(z, params["gate"])
    s = np.asfortranarray(mlp_out).reshape(len(z), cols.n_transformed, 3)  # as cond_out
    return s, gate_cache


def forward(x, params, layer):
    """Rad coupling layer ``x -> (z, k, term)``.

    Parameters
    ----------
    x : ndarray of float64, shape (n, d)
    params : dict
        ``{"cond": ..., "gate": ...}`` MLP parameters.
    layer : int
        Layer index; selects the mask (:func:`radref.core.layers.masks.split`).

    Returns
    -------
    z : ndarray, shape (n, d)
    k : ndarray of int, shape (n, d_B)
        Branch of each transformed dimension (0-based).
    term : ndarray, shape (n,)
        ``sum_B [log p(k | z) + log|f'(u)| - log_scale_in + log_scale_out]``.
    cache : RadCouplingCache
    """
    cols = columns(x.shape[1], layer)
    cond_out, cond_cache, slopes, slopes_cache = _conditioner(x, params, cols)
    log_scale_in, shift_in = cond_out[..., LOG_SCALE_IN], cond_out[..., SHIFT_IN]
    log_scale_out, shift_out = cond_out[..., LOG_SCALE_OUT], cond_out[..., SHIFT_OUT]

    z_trans, v, k, log_slope, transform_cache = rad_transform_forward(
        x[:, cols.transformed], log_scale_in, shift_in, slopes, log_scale_out, shift_out)
    z = x.copy()
    z[:, cols.transformed] = z_trans  # beyond float64: +-inf, reported by the flow

    s, gate_cache = _gating_logits(zero_rows(z, out_of_range_rows(z)), params, cols)
    log_gate, gating_cache = log_gating_forward(v, k, s, slopes.log_p, slopes.log_q)

    term = sum_over_transformed(log_gate + log_slope - log_scale_in + log_scale_out)
    cache = RadCouplingCache(cols, cond_cache, gate_cache, slopes_cache, gating_cache,
                             transform_cache)
    return z, k, term, cache


def backward(dz, dterm, cache):
    """Backward of :func:`forward` (derivations.md §7).

    Parameters
    ----------
    dz : ndarray, shape (n, d)
        Upstream gradient on the layer output ``z``.
    dterm : ndarray, shape (n,)
        Upstream gradient on ``term``.
    cache : RadCouplingCache

    Returns
    -------
    dx : ndarray, shape (n, d)
    grads : dict
        ``{"cond": ..., "gate": ...}``, shaped like the parameters.
    """
    n, cols = len(dz), cache.cols
    dterm_b = dterm[:, None]  # every summand of term has coefficient 1

    # The gating network reads z: z receives its gradient too.
    dv_gate, ds, dlog_p, dlog_q = log_gating_backward(dterm_b, cache.gating_cache)
    dz_gate, gate_grads = mlp_backward(ds.reshape(n, -1), cache.gate_cache)
    dz = dz + dz_gate
    g = rad_transform_backward(dz[:, cols.transformed], dterm_b, dv_gate, dlog_p, dlog_q,
                               cache.transform_cache, cache.slopes_cache)
    dcond_out = np.empty((n, cols.n_transformed, N_FEATURES))
    dcond_out[..., LOG_SCALE_IN], dcond_out[..., SHIFT_IN] = g.dlog_scale_in, g.dshift_in
    dcond_out[..., P_LOGITS], dcond_out[..., Q_LOGITS] = g.dp_logits, g.dq_logits
    dcond_out[..., LOG_SCALE_OUT], dcond_out[..., SHIFT_OUT] = g.dlog_scale_out, g.dshift_out
    dx_cond, cond_grads = mlp_backward(dcond_out.reshape(n, -1), cache.cond_cache)

    dx = np.empty_like(dz)
    dx[:, cols.conditioning] = dz[:, cols.conditioning] + dx_cond
    dx[:, cols.transformed] = g.dx
    return dx, {"cond": cond_grads, "gate": gate_grads}


def _undo_post_affine(z, params, cols):
    """``v = (z_B - shift_out) exp(-log_scale_out)``, with the conditioner
    output and slopes (the conditioner reads ``z_A = x_A``)."""
    cond_out, _, slopes, _ = _conditioner(z, params, cols)
    v = (z[:, cols.transformed] - cond_out[..., SHIFT_OUT]) * np.exp(-cond_out[..., LOG_SCALE_OUT])
    return v, cond_out, slopes


def _unfold(z, v, k, cond_out, slopes, cols):
    """``x``: ``z`` with ``x_B = f_k^{-1}(v) exp(log_scale_in) + shift_in``."""
    u = surjection_inverse(v, k, slopes)
    x = z.copy()
    with np.errstate(over="ignore"):  # beyond float64: +-inf, reported by the flow
        x[:, cols.transformed] = u * np.exp(cond_out[..., LOG_SCALE_IN]) + cond_out[..., SHIFT_IN]
    return x


def inverse(z, k, params, layer):
    """Exact inverse ``(z, k) -> x`` of :func:`forward` (notes §5).

    ``z`` has shape ``(n, d)``, ``k`` shape ``(n, d_B)`` (branches, 0-based);
    returns ``x`` of shape ``(n, d)``.  ``ValueError`` (from
    :func:`radref.core.surjection.surjection_inverse`) if a ``(v, k)`` has no
    preimage.
    """
    cols = columns(z.shape[1], layer)
    v, cond_out, slopes = _undo_post_affine(z, params, cols)
    return _unfold(z, v, k, cond_out, slopes, cols)


def sample(z, uniforms, params, layer):
    """Exact sampling step: draw ``k ~ p(k | z)`` from ``uniforms`` (shape
    ``(n, d_B)``, by inverse CDF, :func:`radref.core.gating.sample_branch`)
    and invert.  The gating network reads the layer's output ``z``, so ``k``
    can be drawn before ``x`` is known.  Returns ``(x, k)``."""
    cols = columns(z.shape[1], layer)
    v, cond_out, slopes = _undo_post_affine(z, params, cols)
    s, _ = _gating_logits(z, params, cols)
    k = sample_branch(gating_probabilities(v, s, slopes.log_p, slopes.log_q), uniforms)
    return _unfold(z, v, k, cond_out, slopes, cols), k


def folded(cache):
    """Where the input of :func:`forward` lies in the folded interval ``|u| <= 1``
    (three preimages: ``k`` is needed to invert); bool, shape ``(n, d_B)``."""
    return np.abs(cache.u) <= 1.0
