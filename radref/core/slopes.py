"""Slopes and breakpoints of the five-piece surjection from the boundary gating.

Paper eq. 10-13 and 26-30; notes sections 3 and 8.

The boundary gating distributions are ``P = p(. | v = +1)`` and
``Q = p(. | v = -1)``, each the softmax of three free logits.  Continuity of
the log-likelihood at ``u = -1, a, b, 1`` fixes the five slopes::

    alpha_2     = 1 + P1/P2 + Q3/Q2                      (eq. 26)
    alpha_1     = alpha_2 * P2 / P1                      (eq. 27)
    alpha_3     = alpha_2 * Q2 / Q3                      (eq. 28)
    alpha_minus = alpha_1 * Q1                           (eq. 29)
    alpha_plus  = alpha_3 * P3                           (eq. 30)
    a = 2 / alpha_1 - 1,   b = 1 - 2 / alpha_3           (eq. 11, 12)

(1-based indices as in the paper; the code indexes the last axis 0, 1, 2.)
Everything is computed in log space so that saturated boundary gating (P or Q
entries far below 1e-300) still gives exact, finite log-slopes.
"""
from typing import NamedTuple

import numpy as np

from radref.core.softmax import log_softmax, log_softmax_backward


class Slopes(NamedTuple):
    """Log-slopes and breakpoints; every field has the batch shape ``(...)``.

    ``log_p`` and ``log_q`` (shape ``(..., 3)``) are the log boundary gating
    distributions, kept because the gating (eq. 31-33) needs them too.
    """

    log_alpha_minus: np.ndarray
    log_alpha_1: np.ndarray
    log_alpha_2: np.ndarray
    log_alpha_3: np.ndarray
    log_alpha_plus: np.ndarray
    a: np.ndarray
    b: np.ndarray
    log_p: np.ndarray
    log_q: np.ndarray


class SlopesCache(NamedTuple):
    slopes: Slopes
    #: ``[log P; log Q; log w]``, shape (..., 3, 3): :func:`_stacked_rows` after log-softmax
    log_rows: np.ndarray
    inv_alpha_1: np.ndarray  # exp(-L1) = 1 / alpha_1, for d a / d L1
    inv_alpha_3: np.ndarray  # exp(-L3) = 1 / alpha_3, for d b / d L3


def _stacked_rows(p_logits, q_logits, ratio_p, ratio_q):
    """The rows ``[p; q; (0, r_p, r_q)]`` of one array of shape ``(..., 3, 3)``.

    ``log_softmax`` of it is ``[log P; log Q; log w]``, the three log-softmaxes
    of :func:`slopes_forward` (``w = softmax(0, r_p, r_q)``): the same
    arithmetic, row by row, as three calls, with a third of the NumPy calls
    (and ``log_softmax_backward`` likewise in :func:`slopes_backward`).
    """
    rows = np.empty(np.shape(p_logits)[:-1] + (3, 3), order="F")  # component-first, as p_logits
    rows[..., 0, :] = p_logits
    rows[..., 1, :] = q_logits
    rows[..., 2, 0] = 0.0
    rows[..., 2, 1] = ratio_p
    rows[..., 2, 2] = ratio_q
    return rows


def slopes_forward(p_logits, q_logits):
    """Log-slopes and breakpoints from the boundary logits (eq. 26-30).

    Parameters
    ----------
    p_logits, q_logits : ndarray, shape (..., 3)
        Free logits of ``P = softmax(p_logits)`` and ``Q = softmax(q_logits)``.

    Returns
    -------
    slopes : Slopes
        Fields of shape ``(...)`` (``log_p``, ``log_q`` of shape ``(..., 3)``).
    cache : SlopesCache

    Notes
    -----
    In log space (``L_i = log alpha_i``, ``lP = log P``, ``lQ = log Q``)::

        r_p = log(P1/P2) = p_logits[0] - p_logits[1]    (the normaliser cancels)
        r_q = log(Q3/Q2) = q_logits[2] - q_logits[1]
        L2 = log(1 + e^r_p + e^r_q) = -log w_0,  w = softmax(0, r_p, r_q)    (eq. 26)
        L1 = L2 - r_p,  L3 = L2 - r_q                                         (eq. 27, 28)
        L_minus = L1 + lQ1,  L_plus = L3 + lP3                                (eq. 29, 30)
        a = 2 e^-L1 - 1,  b = 1 - 2 e^-L3                                     (eq. 11, 12)

    so the three slopes of the folded region never see an underflowed probability.
    """
    ratio_p = p_logits[..., 0] - p_logits[..., 1]
    ratio_q = q_logits[..., 2] - q_logits[..., 1]
    log_rows = log_softmax(_stacked_rows(p_logits, q_logits, ratio_p, ratio_q))
    log_p, log_q, log_w = log_rows[..., 0, :], log_rows[..., 1, :], log_rows[..., 2, :]
    log_alpha_2 = -log_w[..., 0]
    log_alpha_1 = log_alpha_2 - ratio_p
    log_alpha_3 = log_alpha_2 - ratio_q
    inv_alpha_1 = np.exp(-log_alpha_1)
    inv_alpha_3 = np.exp(-log_alpha_3)
    slopes = Slopes(
        log_alpha_minus=log_alpha_1 + log_q[..., 0],
        log_alpha_1=log_alpha_1,
        log_alpha_2=log_alpha_2,
        log_alpha_3=log_alpha_3,
        log_alpha_plus=log_alpha_3 + log_p[..., 2],
        a=2.0 * inv_alpha_1 - 1.0,
        b=1.0 - 2.0 * inv_alpha_3,
        log_p=log_p,
        log_q=log_q,
    )
    return slopes, SlopesCache(slopes, log_rows, inv_alpha_1, inv_alpha_3)


def slopes_backward(dslopes, cache):
    """Backward of :func:`slopes_forward`.

    Parameters
    ----------
    dslopes : Slopes
        Upstream gradients, one per field of :class:`Slopes` (``b`` included).
    cache : SlopesCache

    Returns
    -------
    dp_logits, dq_logits : ndarray, shape (..., 3)

    Notes
    -----
    With ``L_i = log alpha_i`` (derivation in docs/derivations.md, section 2)::

        g1 = dL1 + dL_minus - 2 exp(-L1) da      (L_minus = L1 + lQ1,  a = 2 e^{-L1} - 1)
        g3 = dL3 + dL_plus  + 2 exp(-L3) db      (L_plus  = L3 + lP3,  b = 1 - 2 e^{-L3})
        g2 = dL2 + g1 + g3                       (L1 = L2 - r_p,  L3 = L2 - r_q)
        d r_p = g2 w_1 - g1,   d r_q = g2 w_2 - g3   (w = softmax(0, r_p, r_q))

    ``g2 w_j`` is the log-softmax backward of ``-g2`` on ``log w_0``, so, as in
    the forward pass, the three rows ``(P, Q, w)`` go through one call.
    """
    g1 = dslopes.log_alpha_1 + dslopes.log_alpha_minus - 2.0 * cache.inv_alpha_1 * dslopes.a
    g3 = dslopes.log_alpha_3 + dslopes.log_alpha_plus + 2.0 * cache.inv_alpha_3 * dslopes.b
    g2 = dslopes.log_alpha_2 + g1 + g3

    dlog_rows = np.zeros_like(cache.log_rows)  # adjoints of [log P; log Q; log w]
    dlog_rows[..., 0, :] = dslopes.log_p
    dlog_rows[..., 1, :] = dslopes.log_q
    dlog_rows[..., 0, 2] += dslopes.log_alpha_plus  # L_plus = L3 + lP3
    dlog_rows[..., 1, 0] += dslopes.log_alpha_minus  # L_minus = L1 + lQ1
    dlog_rows[..., 2, 0] = -g2  # L2 = -log w_0
    d_rows = log_softmax_backward(dlog_rows, np.exp(cache.log_rows))
    dp_logits, dq_logits = d_rows[..., 0, :], d_rows[..., 1, :]
    # r_p = p0 - p1 and r_q = q2 - q1 act on the raw logits directly.
    d_ratio_p = d_rows[..., 2, 1] - g1
    d_ratio_q = d_rows[..., 2, 2] - g3
    dp_logits[..., 0] += d_ratio_p
    dp_logits[..., 1] -= d_ratio_p
    dq_logits[..., 2] += d_ratio_q
    dq_logits[..., 1] -= d_ratio_q
    return dp_logits, dq_logits
