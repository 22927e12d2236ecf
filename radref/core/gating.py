"""The gating distribution p(k | z) (paper eq. 31-33; notes section 2).

In logit space, for ``v`` in ``[-1, 1]``::

    lambda(v) = w_s(v) * s + w_P(v) * log P + w_Q(v) * log Q
    w_s(v) = (1 + cos(pi v)) / 2
    w_P(v) = (1 + sin(pi v / 2)) / 2
    w_Q(v) = (1 - sin(pi v / 2)) / 2
    log p(k | z) = log_softmax(lambda(v))_k

(each weight is named after what it weighs).  ``w_s(+-1) = 0``,
``w_P(1) = w_Q(-1) = 1`` and ``w_P(-1) = w_Q(1) = 0``, so the gating equals P
at ``v = 1`` and Q at ``v = -1`` whatever the logits ``s`` (``s = s(z)`` comes
from the gating network).  Outside ``[-1, 1]`` only one branch exists:
``p(k = 2 | v > 1) = 1`` and ``p(k = 0 | v < -1) = 1`` (0-based k; paper: 3 and 1).
"""
from typing import NamedTuple

import numpy as np

from radref.core.softmax import log_softmax, log_softmax_forward, sum_last


class GatingCache(NamedTuple):
    k: np.ndarray
    inside: np.ndarray  # |v| <= 1
    s: np.ndarray
    log_p: np.ndarray
    log_q: np.ndarray
    log_prob: np.ndarray  # log_softmax(lambda), shape (..., 3)
    weights: tuple  # (w_s, w_P, w_Q) at v
    v_clipped: np.ndarray  # v clipped to [-1, 1]
    sin_half: np.ndarray  # sin(pi v / 2) at v_clipped: w_s' needs it, with cos(pi v / 2)


#: row k is the unit vector e_k
_ONEHOT = np.eye(3)


def _weights_and_sin_half(v_clipped):
    """``(w_s, w_P, w_Q)`` and ``sin(pi v / 2)`` at ``v_clipped`` (in ``[-1, 1]``)."""
    sin_half = np.sin(0.5 * np.pi * v_clipped)
    w_s = 0.5 * (1.0 + np.cos(np.pi * v_clipped))
    return (w_s, 0.5 * (1.0 + sin_half), 0.5 * (1.0 - sin_half)), sin_half


def _clip(v):
    """``v`` clipped to the folded interval ``[-1, 1]``."""
    return np.minimum(np.maximum(v, -1.0), 1.0)


def interpolation_weights(v):
    """The trigonometric weights ``(w_s, w_P, w_Q)`` of eq. 31-33 (Fig. 7).

    ``v`` is clipped to ``[-1, 1]``; returns three arrays of ``v``'s shape.
    """
    return _weights_and_sin_half(_clip(v))[0]


def _mix(weights, s, log_p, log_q):
    """``lambda = w_s s + w_P log P + w_Q log Q`` (eq. 31-33), shape (..., 3)."""
    w_s, w_p, w_q = weights
    return w_s[..., None] * s + w_p[..., None] * log_p + w_q[..., None] * log_q


def gating_logits(v, s, log_p, log_q):
    """``lambda(v)`` of eq. 31-33, shape ``(..., 3)`` (meaningful for |v| <= 1)."""
    return _mix(interpolation_weights(v), s, log_p, log_q)


def _entry(x, k):
    """``x[..., k]`` for an int array ``k`` of ``x.shape[:-1]`` (entries 0, 1, 2)."""
    return np.where(k == 0, x[..., 0], np.where(k == 1, x[..., 1], x[..., 2]))


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
    v_clipped = _clip(v)
    weights, sin_half = _weights_and_sin_half(v_clipped)
    log_prob = log_softmax(_mix(weights, s, log_p, log_q))
    only_branch_outside = np.where(v > 1.0, 2, 0)
    log_gate = np.where(inside, _entry(log_prob, k),
                        np.where(k == only_branch_outside, 0.0, -np.inf))
    return log_gate, GatingCache(k, inside, s, log_p, log_q, log_prob, weights,
                                 v_clipped, sin_half)


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
    ``d lambda = dlog_gate * (e_k - softmax(lambda))``; then
    ``ds = w_s d lambda``, ``dlog P = w_P d lambda``, ``dlog Q = w_Q d lambda`` and
    ``dv = sum_j d lambda_j (w_s' s_j + w_P' log P_j + w_Q' log Q_j)`` with
    ``w_s' = -pi/2 sin(pi v) = -pi sin(pi v / 2) cos(pi v / 2)`` and
    ``w_P' = -w_Q' = pi/4 cos(pi v / 2)``.
    Outside ``[-1, 1]`` the gating is constant: every gradient is zero.
    """
    g = np.where(cache.inside, dlog_gate, 0.0)[..., None]
    dlam = g * _ONEHOT[cache.k] - np.exp(cache.log_prob) * g  # log-softmax backward of g e_k
    cos_half = np.cos(0.5 * np.pi * cache.v_clipped)
    w_s_prime = -np.pi * cache.sin_half * cos_half
    w_p_prime = 0.25 * np.pi * cos_half
    dlam_dv = w_s_prime[..., None] * cache.s + w_p_prime[..., None] * (cache.log_p - cache.log_q)
    dv = np.where(cache.inside, sum_last(dlam * dlam_dv), 0.0)
    w_s, w_p, w_q = cache.weights
    return dv, w_s[..., None] * dlam, w_p[..., None] * dlam, w_q[..., None] * dlam


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
