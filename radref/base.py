"""Standard normal base density, ``log N(z; 0, I)`` summed over the last axis."""
import numpy as np

LOG_2PI = float(np.log(2.0 * np.pi))


def normal_logpdf_forward(z):
    """``log N(z; 0, I) = -|z|^2 / 2 - d/2 log(2 pi)``.

    Parameters
    ----------
    z : ndarray, shape (n, d)

    Returns
    -------
    log_prob : ndarray, shape (n,)
    cache : ndarray
        ``z`` itself.
    """
    return -0.5 * np.sum(z * z, axis=-1) - 0.5 * z.shape[-1] * LOG_2PI, z


def normal_logpdf_backward(dlog_prob, z):
    """Backward of :func:`normal_logpdf_forward`: ``dz = -z * dlog_prob``."""
    return -z * dlog_prob[..., None]
