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


def max_norm_relative_error(analytic, numeric):
    """Relative error of a gradient array, in the max norm, symmetric in its arguments.

    ``max |x - y| / max(1e-8, max |x| + max |y|)`` (0 for empty arrays): the
    largest difference over the sum of the two arrays' largest entries.  (The
    port checker's measure, :mod:`radref.reference.golden.port_check`, differs:
    it trusts one side, the golden values.)

    The error is measured against the scale of the whole gradient array rather
    than entry by entry: a finite difference has an absolute error of about
    ``eps |L| / h``, which would dominate an entrywise ratio on entries whose
    true gradient is tiny (say a weight feeding a branch of probability 1e-9)
    without saying anything about the backward pass.  A wrong sign or index
    changes entries of the array's own magnitude and is caught.
    """
    analytic = np.asarray(analytic, dtype=np.float64)
    numeric = np.asarray(numeric, dtype=np.float64)
    if analytic.shape != numeric.shape:
        raise ValueError(f"shape mismatch: {analytic.shape} vs {numeric.shape}")
    if analytic.size == 0:
        return 0.0
    scale = max(1e-8, float(np.max(np.abs(analytic)) + np.max(np.abs(numeric))))
    return float(np.max(np.abs(analytic - numeric))) / scale


#: The name of :func:`max_norm_relative_error` before radref 0.2, kept for
#: existing callers.
relative_error = max_norm_relative_error
