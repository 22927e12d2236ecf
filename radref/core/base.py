"""Standard normal base density, ``log N(z; 0, I)`` summed over the last axis."""
import numpy as np

from radref.core.numerics import half_squared_norm

LOG_2PI = float(np.log(2.0 * np.pi))


def normal_logpdf_forward(z):
    """``log N(z; 0, I) = -|z|^2 / 2 - d/2 log(2 pi)``.

    Parameters
    ----------
    z : ndarray, shape (n, d)

    Returns
    -------
    log_prob : ndarray, shape (n,)
        Finite wherever the true value is a float64; ``-inf`` where
        ``|z|^2 / 2`` exceeds the largest float64 (``|z| > ~1.3e154``, or an
        infinite entry), without overflow warnings
        (:func:`radref.core.numerics.half_squared_norm`).
    cache : ndarray
        ``z`` itself.
    """
    return -half_squared_norm(z) - 0.5 * z.shape[-1] * LOG_2PI, z


def normal_logpdf_backward(dlog_prob, z):
    """Backward of :func:`normal_logpdf_forward`: ``dz = -z * dlog_prob``."""
    return -z * dlog_prob[..., None]
