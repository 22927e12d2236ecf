"""Standard normal base density, ``log N(z; 0, I)`` summed over the last axis."""
import numpy as np

LOG_2PI = float(np.log(2.0 * np.pi))
#: entries up to this magnitude: ``z * z`` and the row sums cannot overflow
_DIRECT = 2.0 ** 500


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
        infinite entry), without overflow warnings.
    cache : ndarray
        ``z`` itself.
    """
    const = 0.5 * z.shape[-1] * LOG_2PI
    if z.size == 0 or (z.max() <= _DIRECT and z.min() >= -_DIRECT):
        return -0.5 * np.sum(z * z, axis=-1) - const, z
    direct = np.all(np.abs(z) <= _DIRECT, axis=-1)
    # Far rows: |z|^2 / 2 = q 2^1200 with q from z 2^-600 (power-of-two scaling is
    # exact; entries too small to survive it are negligible next to the far one),
    # so no square can overflow; q >= 2^-176 means -|z|^2/2 < -2^1024 < -DBL_MAX.
    log_prob = np.empty(z.shape[:-1])
    log_prob[direct] = -0.5 * np.sum(z[direct] * z[direct], axis=-1) - const
    y = z[~direct] * 2.0 ** -600
    q = 0.5 * np.sum(y * y, axis=-1)
    overflow = q >= 2.0 ** -176  # False for NaN: a NaN stays a NaN
    log_prob[~direct] = np.where(overflow, -np.inf,
                                 -np.ldexp(np.where(overflow, 0.0, q), 1200) - const)
    return log_prob, z


def normal_logpdf_backward(dlog_prob, z):
    """Backward of :func:`normal_logpdf_forward`: ``dz = -z * dlog_prob``."""
    return -z * dlog_prob[..., None]
