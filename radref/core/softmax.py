"""Log-softmax over the last axis (the model's 3-way axes: P, Q, the gating logits).

``log_softmax(x)_i = x_i - log sum_j exp(x_j)``, evaluated after subtracting
``m = max_j x_j`` (the shift cancels exactly, and no ``exp`` can overflow).

Every 3-way quantity of Rad is an explicit last axis of size 3, and a NumPy
reduction over such a short axis costs several times more than the two
elementwise operations that spell it out: :func:`sum_last` and
:func:`max_last` are ``np.sum`` and ``np.max`` over the last axis, written
out for size 3 (the same numbers: NumPy also adds three numbers left to
right).
"""
import numpy as np


def sum_last(x):
    """``sum_j x[..., j]``, i.e. ``np.sum(x, axis=-1)`` (``x0 + x1 + x2`` for size 3)."""
    if x.shape[-1] == 3:
        return x[..., 0] + x[..., 1] + x[..., 2]
    return np.sum(x, axis=-1)


def max_last(x):
    """``max_j x[..., j]``, i.e. ``np.max(x, axis=-1)`` (two ``np.maximum`` for size 3)."""
    if x.shape[-1] == 3:
        return np.maximum(np.maximum(x[..., 0], x[..., 1]), x[..., 2])
    return np.max(x, axis=-1)


def log_softmax(logits):
    """``log_prob = logits - log sum_j exp(logits_j)`` over the last axis, alone.

    The forward passes of the model keep ``log_prob`` and leave
    ``prob = exp(log_prob)`` to the backward pass, its only user.
    """
    shifted = logits - max_last(logits)[..., None]
    return shifted - np.log(sum_last(np.exp(shifted)))[..., None]


def log_softmax_forward(logits):
    """Log-softmax over the last axis: ``logits - log sum_j exp(logits_j)``.

    Parameters
    ----------
    logits : ndarray, shape (..., m)

    Returns
    -------
    log_prob : ndarray, shape (..., m)
    prob : ndarray, shape (..., m)
        ``exp(log_prob)``, all the backward pass needs (the cache).
    """
    log_prob = log_softmax(logits)
    return log_prob, np.exp(log_prob)


def log_softmax_backward(dlog_prob, prob):
    """Backward of :func:`log_softmax_forward`.

    ``d logits_j = d log_prob_j - prob_j * sum_i d log_prob_i``.
    """
    return dlog_prob - prob * sum_last(dlog_prob)[..., None]
