"""Central finite-difference gradient checks (CS231n style).

Every backward pass in radref is verified with these helpers: the analytic
gradient of a scalar ``L = sum(g * f(x))`` (``g`` a fixed random upstream
gradient) is compared with the centred difference
``(L(x + h e_i) - L(x - h e_i)) / (2 h)`` entry by entry.
"""
import numpy as np


def numerical_gradient(f, x, h=1e-6):
    """Centred finite-difference gradient of a scalar function.

    Parameters
    ----------
    f : callable
        ``f()`` returns a float; it must read ``x`` (which is perturbed in place).
    x : ndarray of float64
        The array to differentiate with respect to; restored on return.
    h : float
        Step size.

    Returns
    -------
    grad : ndarray, same shape as ``x``
    """
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        f_plus = f()
        x[i] = old - h
        f_minus = f()
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2.0 * h)
    return grad


def relative_error(analytic, numeric):
    """``max |x - y| / max(1e-8, |x| + |y|)`` over all entries (0 for empty)."""
    analytic = np.asarray(analytic, dtype=np.float64)
    numeric = np.asarray(numeric, dtype=np.float64)
    if analytic.size == 0:
        return 0.0
    denom = np.maximum(1e-8, np.abs(analytic) + np.abs(numeric))
    return float(np.max(np.abs(analytic - numeric) / denom))
