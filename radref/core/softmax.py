"""Log-softmax over the last axis, and reductions over the model's 3-way axes.

Every 3-way quantity of Rad (P, Q, the gating logits) is an explicit last axis
of size 3.  A NumPy reduction over such a short axis costs several times more
than two elementwise operations, so :func:`sum_last` and :func:`max_last`
spell the size-3 case out; they return exactly what ``np.sum`` / ``np.max``
return (NumPy also adds three numbers left to right).
"""
import numpy as np


def sum_last(x):
    """``np.sum(x, axis=-1)``."""
    if x.shape[-1] == 3:
        return x[..., 0] + x[..., 1] + x[..., 2]
    return np.sum(x, axis=-1)


def max_last(x):
    """``np.max(x, axis=-1)``."""
    if x.shape[-1] == 3:
        return np.maximum(np.maximum(x[..., 0], x[..., 1]), x[..., 2])
    return np.max(x, axis=-1)


def log_softmax(logits):
    """Log-softmax over the last axis, ``logits - logsumexp(logits)``, alone
    (the forward passes of the model keep ``log_prob`` and leave
    ``prob = exp(log_prob)`` to the backward pass, which is the only user)."""
    shifted = logits - max_last(logits)[..., None]
    return shifted - np.log(sum_last(np.exp(shifted)))[..., None]


def log_softmax_forward(logits):
    """Log-softmax over the last axis: ``logits - logsumexp(logits)``.

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
