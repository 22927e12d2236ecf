"""Coupling layers: the Rad coupling layer (paper §4.2, Fig. 10; notes §4) and
the affine coupling layer of Real NVP (the baseline).

Both split ``x`` (shape ``(n, d)``) into a conditioning part ``x_A`` that is
passed through (``z_A = x_A``) and a transformed part ``x_B``; :func:`split`
says which columns are which.

Rad coupling layer, per transformed dimension (``c = conditioner(x_A)``)::

    u   = (x_B - shift_in) * exp(-log_scale_in)
    v, k, log|f'(u)| = f(u; alpha(P, Q))            P = softmax(p_logits), Q = softmax(q_logits)
    z_B = v * exp(log_scale_out) + shift_out
    s   = gating_net(z)                             (reads the whole layer output)
    term = sum_B [ log p(k | z) + log|f'(u)| - log_scale_in + log_scale_out ]

Conditioner output layout (column ``10 i + j`` for transformed dimension ``i``):
``j = 0`` log_scale_in, ``1`` shift_in, ``2..4`` p_logits, ``5..7`` q_logits,
``8`` log_scale_out, ``9`` shift_out.  Gating network output: column ``3 i + j``
is the logit of branch ``j`` for transformed dimension ``i``.

Affine coupling layer: ``z_B = x_B * exp(log_scale) + shift``, ``term = sum_B
log_scale``; conditioner column ``2 i + j``: ``j = 0`` log_scale, ``1`` shift.

Layer parameters are dicts ``{"cond": mlp_params}`` (affine) and
``{"cond": mlp_params, "gate": mlp_params}`` (Rad).

Range (docs/errors.md, "Numerical extremes"): the layers expect inputs within
``+-numerics.RANGE`` (``1e120``; :mod:`radref.core.flow` screens them).  An output that
overflows float64 (e.g. ``v = inf`` on an outer piece of slope ``e^1000``)
comes out as ``+-inf`` without a warning; the Rad gating network, which reads
the layer output, is then evaluated at ``z = 0`` for the rows of ``z`` that
leave ``+-numerics.RANGE``, and the flow reports those rows as out of range.
"""
import functools
from typing import NamedTuple

import numpy as np

from radref.core.gating import (gating_probabilities, log_gating_backward,
                           log_gating_forward, sample_branch)
from radref.core.numerics import all_in_range, out_of_range_rows, zero_rows
from radref.core.mlp import mlp_backward, mlp_forward, mlp_init
from radref.core.slopes import slopes_backward, slopes_forward
from radref.core.surjection import surjection_backward, surjection_forward, surjection_inverse

N_RAD_FEATURES = 10
N_AFFINE_FEATURES = 2
def split(dim, layer):
    """Column indices ``(A, B)`` of layer ``layer`` for data of dimension ``dim``.

    Alternating half masks: columns whose index has the parity of ``layer`` are
    conditioning (``A``), the others are transformed (``B``).  In 2-D: layer 0
    conditions on column 0 and transforms column 1, layer 1 the reverse, ...
    """
    columns = np.arange(dim)
    is_a = (columns + layer) % 2 == 0
    return columns[is_a], columns[~is_a]


class Columns(NamedTuple):
    """:func:`split` as index arrays (read-only) and as the equivalent slices
    (``x[:, a]`` with a slice is a view, with an index array a copy)."""

    cols_a: np.ndarray
    cols_b: np.ndarray
    a: slice
    b: slice
    n_b: int


@functools.lru_cache(maxsize=None)
def columns(dim, layer):
    """The :class:`Columns` of layer ``layer`` for dimension ``dim`` (cached)."""
    cols_a, cols_b = split(dim, layer)
    cols_a.setflags(write=False)
    cols_b.setflags(write=False)
    return Columns(cols_a, cols_b, slice(layer % 2, None, 2), slice((layer + 1) % 2, None, 2),
                   len(cols_b))


def _row_sums(m):
    """``np.sum(m, axis=1)`` of an (n, m) array, as a matrix-vector product."""
    return m @ np.ones(m.shape[1])


# ---------------------------------------------------------------- Rad coupling

class RadCouplingCache(NamedTuple):
    cols: Columns
    cond_cache: tuple
    gate_cache: tuple
    slopes_cache: tuple
    surj_cache: tuple
    gating_cache: tuple
    u: np.ndarray
    v: np.ndarray
    log_scale_in: np.ndarray
    log_scale_out: np.ndarray
    out_of_range: np.ndarray = None  # rows of z out of range (None: all in range)


def rad_coupling_init(dim, layer, hidden, gate_hidden, out_std=0.01, random_state=None):
    """Parameters of a Rad coupling layer: conditioner (tanh) and gating net (linear)."""
    rng = np.random.default_rng(random_state)
    cols_a, cols_b = split(dim, layer)
    return {
        "cond": mlp_init(len(cols_a), hidden, N_RAD_FEATURES * len(cols_b), "tanh",
                         out_std=out_std, random_state=rng),
        "gate": mlp_init(dim, gate_hidden, 3 * len(cols_b), "linear",
                         out_std=out_std, random_state=rng),
    }


def _rad_conditioner(x_a, params, n_b):
    out, cond_cache = mlp_forward(x_a, params["cond"])
    c = out.reshape(len(x_a), n_b, N_RAD_FEATURES)
    return c, cond_cache


def rad_coupling_forward(x, params, layer):
    """Rad coupling layer ``x -> (z, k, term)``.

    Parameters
    ----------
    x : ndarray, shape (n, d)
    params : dict
        ``{"cond": ..., "gate": ...}`` MLP parameters.
    layer : int
        Layer index; selects the mask (:func:`split`).

    Returns
    -------
    z : ndarray, shape (n, d)
    k : ndarray of int, shape (n, d_B)
        Branch of each transformed dimension (0-based).
    term : ndarray, shape (n,)
        ``sum_B [log p(k | z) + log|f'(u)| - log_scale_in + log_scale_out]``.
    cache : RadCouplingCache
    """
    n, dim = x.shape
    cols = columns(dim, layer)
    c, cond_cache = _rad_conditioner(x[:, cols.a], params, cols.n_b)
    log_scale_in, shift_in = c[..., 0], c[..., 1]
    log_scale_out, shift_out = c[..., 8], c[..., 9]
    slopes, slopes_cache = slopes_forward(c[..., 2:5], c[..., 5:8])

    u = (x[:, cols.b] - shift_in) * np.exp(-log_scale_in)
    v, k, log_slope, surj_cache = surjection_forward(u, slopes)
    z = x.copy()
    with np.errstate(over="ignore"):  # beyond float64: +-inf, reported by the flow
        z[:, cols.b] = v * np.exp(log_scale_out) + shift_out

    far = None if all_in_range(z) else out_of_range_rows(z)
    gate_out, gate_cache = mlp_forward(z if far is None else zero_rows(z, far), params["gate"])
    s = gate_out.reshape(n, cols.n_b, 3)
    log_gate, gating_cache = log_gating_forward(v, k, s, slopes.log_p, slopes.log_q)

    term = _row_sums(log_gate + log_slope - log_scale_in + log_scale_out)
    cache = RadCouplingCache(cols, cond_cache, gate_cache, slopes_cache,
                             surj_cache, gating_cache, u, v, log_scale_in, log_scale_out, far)
    return z, k, term, cache


def rad_coupling_backward(dz, dterm, cache):
    """Backward of :func:`rad_coupling_forward`.

    Parameters
    ----------
    dz : ndarray, shape (n, d)
        Upstream gradient on the layer output ``z``.
    dterm : ndarray, shape (n,)
        Upstream gradient on the log-likelihood term.

    Returns
    -------
    dx : ndarray, shape (n, d)
    grads : dict
        ``{"cond": ..., "gate": ...}``, shaped like the parameters.
    """
    n = dz.shape[0]
    cols = cache.cols
    dterm_b = dterm[:, None]  # the same for every transformed dimension

    # The gating net reads z, so z receives gradient from it as well.
    dv_gate, ds, dlog_p, dlog_q = log_gating_backward(dterm_b, cache.gating_cache)
    dz_gate, gate_grads = mlp_backward(ds.reshape(n, -1), cache.gate_cache)
    dz = dz + dz_gate
    dz_b = dz[:, cols.b]

    scale_out = np.exp(cache.log_scale_out)
    dc = np.empty((n, cols.n_b, N_RAD_FEATURES))
    dc[..., 8] = dz_b * cache.v * scale_out + dterm_b
    dc[..., 9] = dz_b
    du, dslopes = surjection_backward(dz_b * scale_out + dv_gate, dterm_b, cache.surj_cache)
    dslopes = dslopes._replace(log_p=dlog_p, log_q=dlog_q)
    dc[..., 2:5], dc[..., 5:8] = slopes_backward(dslopes, cache.slopes_cache)

    inv_scale_in = np.exp(-cache.log_scale_in)
    dc[..., 0] = -du * cache.u - dterm_b
    dc[..., 1] = -du * inv_scale_in
    dx_a, cond_grads = mlp_backward(dc.reshape(n, -1), cache.cond_cache)

    dx = np.empty_like(dz)
    dx[:, cols.a] = dz[:, cols.a] + dx_a
    dx[:, cols.b] = du * inv_scale_in
    return dx, {"cond": cond_grads, "gate": gate_grads}


def _rad_invert(z, k_or_uniforms, params, layer, sample):
    n, dim = z.shape
    cols_a, cols_b = split(dim, layer)
    c, _ = _rad_conditioner(z[:, cols_a], params, len(cols_b))
    slopes, _ = slopes_forward(c[..., 2:5], c[..., 5:8])
    v = (z[:, cols_b] - c[..., 9]) * np.exp(-c[..., 8])
    if sample:
        gate_out, _ = mlp_forward(z, params["gate"])
        prob = gating_probabilities(v, gate_out.reshape(n, len(cols_b), 3),
                                    slopes.log_p, slopes.log_q)
        k = sample_branch(prob, k_or_uniforms)
    else:
        k = k_or_uniforms
    u = surjection_inverse(v, k, slopes)
    x = z.copy()
    with np.errstate(over="ignore"):  # beyond float64: +-inf, reported by the flow
        x[:, cols_b] = u * np.exp(c[..., 0]) + c[..., 1]
    return x, k


def rad_coupling_inverse(z, k, params, layer):
    """Exact inverse ``(z, k) -> x`` of :func:`rad_coupling_forward` (notes §5).

    ``k`` has shape ``(n, d_B)``; returns ``x`` of shape ``(n, d)``.
    """
    return _rad_invert(z, k, params, layer, sample=False)[0]


def rad_coupling_sample(z, uniforms, params, layer):
    """Exact sampling step: draw ``k ~ p(k | z)`` from ``uniforms`` (shape
    ``(n, d_B)``, by inverse CDF) and invert.  Returns ``(x, k)``."""
    return _rad_invert(z, uniforms, params, layer, sample=True)


# ------------------------------------------------------------- affine coupling

class AffineCouplingCache(NamedTuple):
    cols: Columns
    cond_cache: tuple
    x_b: np.ndarray
    scale: np.ndarray


def affine_coupling_init(dim, layer, hidden, out_std=0.01, random_state=None):
    """Parameters of an affine (Real NVP) coupling layer."""
    cols_a, cols_b = split(dim, layer)
    return {"cond": mlp_init(len(cols_a), hidden, N_AFFINE_FEATURES * len(cols_b), "tanh",
                             out_std=out_std, random_state=random_state)}


def affine_coupling_forward(x, params, layer):
    """Affine coupling ``z_B = x_B exp(log_scale) + shift``; returns ``(z, term, cache)``
    with ``term = sum_B log_scale`` of shape ``(n,)``."""
    n, dim = x.shape
    cols = columns(dim, layer)
    out, cond_cache = mlp_forward(x[:, cols.a], params["cond"])
    c = out.reshape(n, cols.n_b, N_AFFINE_FEATURES)
    scale = np.exp(c[..., 0])
    x_b = x[:, cols.b]
    z = x.copy()
    with np.errstate(over="ignore"):  # beyond float64: +-inf, reported by the flow
        z[:, cols.b] = x_b * scale + c[..., 1]
    cache = AffineCouplingCache(cols, cond_cache, x_b, scale)
    return z, _row_sums(c[..., 0]), cache


def affine_coupling_backward(dz, dterm, cache):
    """Backward of :func:`affine_coupling_forward`; returns ``(dx, {"cond": grads})``."""
    n, cols = dz.shape[0], cache.cols
    dz_b = dz[:, cols.b]
    dc = np.empty((n, cols.n_b, N_AFFINE_FEATURES))
    dc[..., 0] = dz_b * cache.x_b * cache.scale + dterm[:, None]
    dc[..., 1] = dz_b
    dx_a, cond_grads = mlp_backward(dc.reshape(n, -1), cache.cond_cache)
    dx = np.empty_like(dz)
    dx[:, cols.a] = dz[:, cols.a] + dx_a
    dx[:, cols.b] = dz_b * cache.scale
    return dx, {"cond": cond_grads}


def affine_coupling_inverse(z, params, layer):
    """Inverse of :func:`affine_coupling_forward`: ``x_B = (z_B - shift) exp(-log_scale)``."""
    n, dim = z.shape
    cols_a, cols_b = split(dim, layer)
    out, _ = mlp_forward(z[:, cols_a], params["cond"])
    c = out.reshape(n, len(cols_b), N_AFFINE_FEATURES)
    x = z.copy()
    with np.errstate(over="ignore"):  # beyond float64: +-inf, reported by the flow
        x[:, cols_b] = (z[:, cols_b] - c[..., 1]) * np.exp(-c[..., 0])
    return x
