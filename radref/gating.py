"""The gating distribution p(k | z) (paper eq. 31-33; notes section 2).

In logit space, for ``v`` in ``[-1, 1]``::

    lambda(v) = c(v) * s + w_P(v) * log P + w_Q(v) * log Q
    c(v)   = (1 + cos(pi v)) / 2
    w_P(v) = (1 + sin(pi v / 2)) / 2
    w_Q(v) = (1 - sin(pi v / 2)) / 2
    log p(k | z) = log_softmax(lambda(v))_k

``c(+-1) = 0``, ``w_P(1) = w_Q(-1) = 1`` and ``w_P(-1) = w_Q(1) = 0``, so the
gating equals P at ``v = 1`` and Q at ``v = -1`` whatever the logits ``s``
(``s = s(z)`` comes from the gating network).  Outside ``[-1, 1]`` only one
branch exists: ``p(k = 2 | v > 1) = 1`` and ``p(k = 0 | v < -1) = 1``
(0-based k; paper: 3 and 1).
"""
from typing import NamedTuple

import numpy as np

from radref.softmax import log_softmax_backward, log_softmax_forward, sum_last


class GatingCache(NamedTuple):
    v: np.ndarray
    k: np.ndarray
    inside: np.ndarray  # |v| <= 1
    s: np.ndarray
    log_p: np.ndarray
    log_q: np.ndarray
    prob: np.ndarray  # softmax(lambda), shape (..., 3)


def interpolation_weights(v):
    """The trigonometric weights ``(c, w_P, w_Q)`` of eq. 31-33 (Fig. 7).

    ``v`` is clipped to ``[-1, 1]``; returns three arrays of ``v``'s shape.
    """
    v = np.clip(v, -1.0, 1.0)
    c = 0.5 * (1.0 + np.cos(np.pi * v))
    sin_half = np.sin(0.5 * np.pi * v)
    return c, 0.5 * (1.0 + sin_half), 0.5 * (1.0 - sin_half)


def gating_logits(v, s, log_p, log_q):
    """``lambda(v)`` of eq. 31-33, shape ``(..., 3)`` (meaningful for |v| <= 1)."""
    c, w_p, w_q = interpolation_weights(v)
    return c[..., None] * s + w_p[..., None] * log_p + w_q[..., None] * log_q


def log_gating_forward(v, k, s, log_p, log_q):
    """``log p(k | z)`` for given branches ``k`` (eq. 31-33).

    Parameters
    ----------
    v : ndarray of float64, shape (...)
        Normalized output of the surjection.
    k : ndarray of int, shape (...)
        Branch (0-based).
    s : ndarray, shape (..., 3)
        Gating logits from the gating network, ``s(z)``.
    log_p, log_q : ndarray, shape (..., 3)
        Log boundary gating distributions (``Slopes.log_p``, ``Slopes.log_q``).

    Returns
    -------
    log_gate : ndarray, shape (...)
        ``log p(k | z)``; 0 for the only branch when ``|v| > 1`` and ``-inf``
        for a branch that has no preimage there.
    cache : GatingCache
    """
    inside = np.abs(v) <= 1.0
    log_prob, prob = log_softmax_forward(gating_logits(v, s, log_p, log_q))
    log_gate = np.take_along_axis(log_prob, k[..., None], axis=-1)[..., 0]
    forced = np.where(v > 1.0, 2, 0)
    outside_value = np.where(k == forced, 0.0, -np.inf)
    log_gate = np.where(inside, log_gate, outside_value)
    return log_gate, GatingCache(v, k, inside, s, log_p, log_q, prob)


def log_gating_backward(dlog_gate, cache):
    """Backward of :func:`log_gating_forward`.

    Parameters
    ----------
    dlog_gate : ndarray, shape (...)
    cache : GatingCache

    Returns
    -------
    dv : ndarray, shape (...)
    ds, dlog_p, dlog_q : ndarray, shape (..., 3)

    Notes
    -----
    ``d lambda = dlog_gate * (onehot(k) - softmax(lambda))``; then
    ``ds = c d lambda``, ``dlog P = w_P d lambda``, ``dlog Q = w_Q d lambda`` and
    ``dv = sum_j d lambda_j (c' s_j + w_P' log P_j + w_Q' log Q_j)`` with
    ``c' = -pi/2 sin(pi v)``, ``w_P' = -w_Q' = pi/4 cos(pi v / 2)``.
    Outside ``[-1, 1]`` the gating is constant: every gradient is zero.
    """
    g = np.where(cache.inside, dlog_gate, 0.0)
    onehot = np.arange(3) == cache.k[..., None]
    dlam = log_softmax_backward(g[..., None] * onehot, cache.prob)
    c, w_p, w_q = interpolation_weights(cache.v)
    v = np.clip(cache.v, -1.0, 1.0)
    dc = -0.5 * np.pi * np.sin(np.pi * v)
    dw_p = 0.25 * np.pi * np.cos(0.5 * np.pi * v)
    dlam_dv = dc[..., None] * cache.s + dw_p[..., None] * (cache.log_p - cache.log_q)
    dv = np.where(cache.inside, sum_last(dlam * dlam_dv), 0.0)
    return dv, c[..., None] * dlam, w_p[..., None] * dlam, w_q[..., None] * dlam


def gating_probabilities(v, s, log_p, log_q):
    """``p(. | z)``, shape ``(..., 3)``; one-hot outside ``[-1, 1]``."""
    _, prob = log_softmax_forward(gating_logits(v, s, log_p, log_q))
    prob = np.where((v > 1.0)[..., None], np.array([0.0, 0.0, 1.0]), prob)
    return np.where((v < -1.0)[..., None], np.array([1.0, 0.0, 0.0]), prob)


def sample_branch(prob, uniforms):
    """Draw ``k`` by inverse CDF: the smallest ``k`` with ``uniform < P(K <= k)``.

    Parameters
    ----------
    prob : ndarray, shape (..., 3)
    uniforms : ndarray, shape (...)
        Uniform draws on ``[0, 1)``; ports receive the same numbers.

    Returns
    -------
    k : ndarray of int, shape (...)
    """
    cdf = np.cumsum(prob, axis=-1)
    k = (uniforms[..., None] >= cdf[..., :2]).sum(axis=-1)
    return k.astype(np.intp)
