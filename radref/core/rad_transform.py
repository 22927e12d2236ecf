"""The Rad transformation of one coordinate (notes §4; eq. 15), written once
for the 1-D model (:mod:`radref.core.layer1d`) and the coupling layer
(:mod:`radref.core.layers.rad`)::

    u = (x - shift_in) * exp(-log_scale_in)          pre-affine
    v, k, log|f'(u)| = f(u; alpha(P, Q))              five-piece surjection (eq. 23)
    z = v * exp(log_scale_out) + shift_out           post-affine

Every argument is elementwise (the 1-D model passes scalars for the affine
parameters, the coupling layer arrays of shape ``(n, d_B)``).  The gating
term ``log p(k | z)`` (eq. 31-33) reads ``v`` and the slopes; its gradients
on ``v`` and on ``log P``, ``log Q`` enter :func:`rad_transform_backward`.
"""
from typing import NamedTuple

import numpy as np

from radref.core.slopes import slopes_backward
from radref.core.surjection import surjection_backward, surjection_forward


class RadTransformCache(NamedTuple):
    u: np.ndarray  # surjection input
    v: np.ndarray  # surjection output
    log_scale_in: np.ndarray
    log_scale_out: np.ndarray
    surj_cache: tuple


class RadTransformGrads(NamedTuple):
    """Gradients of :func:`rad_transform_backward`, elementwise (not summed)."""

    dx: np.ndarray
    dlog_scale_in: np.ndarray
    dshift_in: np.ndarray
    dp_logits: np.ndarray  # (..., 3)
    dq_logits: np.ndarray  # (..., 3)
    dlog_scale_out: np.ndarray
    dshift_out: np.ndarray


def rad_transform_forward(x, log_scale_in, shift_in, slopes, log_scale_out, shift_out):
    """``x -> (z, v, k, log|f'(u)|, cache)``; ``slopes`` from
    :func:`radref.core.slopes.slopes_forward`.  A ``z`` beyond float64 comes
    out as ``+-inf`` without a warning (the flow reports its row)."""
    u = (x - shift_in) * np.exp(-log_scale_in)
    v, k, log_slope, surj_cache = surjection_forward(u, slopes)
    with np.errstate(over="ignore"):
        z = v * np.exp(log_scale_out) + shift_out
    return z, v, k, log_slope, RadTransformCache(u, v, log_scale_in, log_scale_out, surj_cache)


def rad_transform_backward(dz, dterm, dv_gate, dlog_p, dlog_q, cache, slopes_cache):
    """Backward of :func:`rad_transform_forward` (derivations.md §7).

    Parameters
    ----------
    dz : ndarray
        Upstream gradient on ``z``.
    dterm : ndarray
        Upstream gradient on the log-density terms ``log|f'(u)| -
        log_scale_in + log_scale_out`` (each with coefficient 1).
    dv_gate, dlog_p, dlog_q : ndarray
        The gating term's gradients on ``v`` and on the log-slopes (from
        :func:`radref.core.gating.log_gating_backward`): the only gradients
        on ``log P``, ``log Q`` besides the surjection's breakpoints.
    cache : RadTransformCache
    slopes_cache : tuple
        From :func:`radref.core.slopes.slopes_forward`.

    Returns
    -------
    RadTransformGrads
    """
    scale_out = np.exp(cache.log_scale_out)
    dlog_scale_out = dz * cache.v * scale_out + dterm
    du, dslopes = surjection_backward(dz * scale_out + dv_gate, dterm, cache.surj_cache)
    dslopes = dslopes._replace(log_p=dlog_p, log_q=dlog_q)
    dp_logits, dq_logits = slopes_backward(dslopes, slopes_cache)
    inv_scale_in = np.exp(-cache.log_scale_in)
    return RadTransformGrads(du * inv_scale_in, -du * cache.u - dterm, -du * inv_scale_in,
                             dp_logits, dq_logits, dlog_scale_out, dz)
