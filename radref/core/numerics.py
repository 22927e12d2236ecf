"""Numerical extremes, in one place (docs/errors.md, "Numerical extremes").

The mathematics modules write the paper's formulas; wherever a value of a
formula could leave the float64 range they call one function of this module
by name.  Two kinds of names live here.

**The range limit of the flow.**  The layers and the flow evaluate values
within ``+-RANGE`` (1e120).  Beyond it a row is *out of range*: its squares,
and gradients that grow like ``|x|^2``, could overflow.  The flow evaluates
such a row at the stand-in ``z = 0`` (:func:`zero_rows`) and reports it.

**Overflow-safe formulas.**  :func:`exp_times`, :func:`exp_times_cumulative`
and :func:`half_squared_norm` each compute one formula for inputs of any
magnitude: where the plain evaluation of the formula cannot overflow they
*are* the plain evaluation, operation for operation (so their results are
bit for bit those of the formula as written; the golden vectors rely on it),
and elsewhere they give the correctly signed value, ``+-inf`` where it
exceeds float64 and exact zeros where a factor is zero, without a
floating-point warning.  Each entry's result depends on that entry alone (not
on the other entries of the batch).  They always return arrays.
"""
import numpy as np

#: Largest magnitude of a value the layers (and the flow) evaluate.
RANGE = 1e120

#: ``exp(L)`` is a finite float64 exactly when ``L <= LOG_MAX`` (about 709.78).
LOG_MAX = float(np.log(np.finfo(np.float64).max))
#: :func:`exp_times` multiplies directly where ``|L| <= SAFE_LOG_SCALE`` and
#: every ``|factor| <= SAFE_FACTOR``: then no intermediate product of
#: ``exp(L)`` and up to two factors can overflow (``e^230 (2^300)^2 < 2^932``).
SAFE_LOG_SCALE = 230.0
SAFE_FACTOR = 2.0 ** 300
#: :func:`half_squared_norm` squares directly where every ``|z_j| <= SAFE_SQUARE``:
#: ``z_j^2 <= 2^1000`` and a sum of up to ``2^23`` of them cannot overflow.
SAFE_SQUARE = 2.0 ** 500


# ------------------------------------------------------------- range limit

def all_in_range(z):
    """Whether every entry of ``z`` lies within ``+-RANGE`` (False for a NaN)."""
    return z.size == 0 or bool(z.max() <= RANGE) and bool(z.min() >= -RANGE)


def out_of_range_rows(z):
    """Rows of ``z`` (shape ``(n, d)``) with an entry beyond ``+-RANGE`` or not
    finite (NaN included); bool array of shape ``(n,)``."""
    if all_in_range(z):
        return np.zeros(z.shape[0], dtype=bool)
    return ~np.all(np.abs(z) <= RANGE, axis=1)


def zero_rows(z, rows):
    """``z`` with the rows ``rows`` (bool, shape ``(n,)``) replaced by zeros: the
    finite stand-in at which out-of-range rows are evaluated (``z`` itself if
    ``rows`` selects none)."""
    return np.where(rows[:, None], 0.0, z) if rows.any() else z


# ------------------------------------------------- overflow-safe formulas

def _max_abs_within(x, bound):
    """Whether every ``|x| <= bound`` (False if ``x`` holds a NaN; True if empty)."""
    return bool(np.abs(x).max(initial=0.0) <= bound)


def _plain_products(log_scale, factors):
    """``[e^L f_1, e^L f_1 f_2, ...]`` multiplied left to right, as written."""
    product = np.exp(log_scale)
    products = []
    for factor in factors:
        product = product * factor
        products.append(product)
    return products


def _log_space_products(log_scale, factors):
    """:func:`_plain_products` as ``sign * exp(L + sum log|f_i|)``: any
    magnitudes; relative error about ``eps * |L + sum log|f_i||``."""
    log_magnitude = np.array(log_scale, dtype=np.float64)
    negative = np.zeros(log_magnitude.shape, dtype=bool)
    zero = np.zeros(log_magnitude.shape, dtype=bool)
    products = []
    for factor in factors:
        size = np.abs(factor)
        zero = zero | (size == 0)
        negative = negative ^ (factor < 0)
        log_magnitude = log_magnitude + np.log(np.where(size == 0, 1.0, size))
        magnitude = np.where(log_magnitude > LOG_MAX, np.inf,
                             np.exp(np.minimum(log_magnitude, LOG_MAX)))
        magnitude = np.where(zero, 0.0, magnitude)
        products.append(np.where(negative, -magnitude, magnitude))
    return products


def exp_times_cumulative(log_scale, *factors):
    """The running products ``e^L f_1`` and ``e^L f_1 f_2`` of :func:`exp_times`.

    Parameters
    ----------
    log_scale : ndarray, shape (...)
        ``L``, any float64 (a NaN gives NaN).
    *factors : ndarray, shape (...)
        One or two factors ``f_1, f_2``.

    Returns
    -------
    products : list of ndarray, shape (...)
        ``[exp_times(L, f_1)]`` or ``[exp_times(L, f_1), exp_times(L, f_1, f_2)]``,
        computed with one range check (a backward pass needs both).
    """
    if len(factors) not in (1, 2):
        raise ValueError("exp_times takes one or two factors")
    if _max_abs_within(log_scale, SAFE_LOG_SCALE) and all(
            _max_abs_within(f, SAFE_FACTOR) for f in factors):
        return _plain_products(log_scale, factors)  # the usual case: every entry moderate
    moderate = np.abs(log_scale) <= SAFE_LOG_SCALE
    for f in factors:
        moderate = moderate & (np.abs(f) <= SAFE_FACTOR)
    plain = _plain_products(np.where(moderate, log_scale, 0.0),
                            [np.where(moderate, f, 0.0) for f in factors])
    in_log_space = _log_space_products(log_scale, factors)
    return [np.where(moderate, p, q) for p, q in zip(plain, in_log_space)]


def exp_times(log_scale, *factors):
    """``f_1 * exp(L)`` or ``f_1 * f_2 * exp(L)``, for factors and ``L`` of any size.

    A slope ``alpha = exp(L)`` of the surjection need not be a float64 (a
    saturated gating gives ``L = 1000``), while ``L`` is exact; this is the
    product of such a slope with one or two factors.

    Parameters
    ----------
    log_scale : ndarray, shape (...)
        ``L``.
    *factors : ndarray, shape (...)
        ``f_1`` and optionally ``f_2`` (broadcast against ``L``).

    Returns
    -------
    product : ndarray, shape (...)
        ``(exp(L) * f_1) * f_2`` as written, bit for bit, wherever
        ``|L| <= SAFE_LOG_SCALE`` and ``|f_i| <= SAFE_FACTOR`` (then no
        intermediate overflows).  Elsewhere ``sign * exp(L + sum log|f_i|)``:
        exactly 0 where a factor is 0 (not ``inf * 0 = NaN``), ``+-inf`` where
        the magnitude exceeds float64, otherwise within a relative
        ``~eps * |L + sum log|f_i||``.  A NaN in an entry gives NaN there.
        No floating-point warnings.  (A result below ``2^-722`` in magnitude
        may lose relative precision to gradual underflow of ``exp(L) f_1``.)
    """
    return exp_times_cumulative(log_scale, *factors)[-1]


def half_squared_norm(z):
    """``|z|^2 / 2 = sum_j z_j^2 / 2`` over the last axis, for entries of any size.

    Parameters
    ----------
    z : ndarray, shape (..., d)

    Returns
    -------
    half_norm2 : ndarray, shape (...)
        ``0.5 * np.sum(z * z, axis=-1)``, bit for bit, for the rows whose entries
        are all within ``+-SAFE_SQUARE``; for the other rows computed after an
        exact power-of-two scaling (``|z|^2 / 2 = q 2^1200`` with ``q`` from
        ``z 2^-600``; entries too small to survive the scaling are negligible
        next to the large one), ``+inf`` where it exceeds float64.  A NaN stays
        a NaN.  No floating-point warnings.
    """
    if z.size == 0 or (z.max() <= SAFE_SQUARE and z.min() >= -SAFE_SQUARE):
        return 0.5 * np.sum(z * z, axis=-1)
    moderate = np.all(np.abs(z) <= SAFE_SQUARE, axis=-1)
    half_norm2 = np.empty(z.shape[:-1])
    half_norm2[moderate] = 0.5 * np.sum(z[moderate] * z[moderate], axis=-1)
    scaled = z[~moderate] * 2.0 ** -600
    q = 0.5 * np.sum(scaled * scaled, axis=-1)
    overflow = q >= 2.0 ** -176  # q 2^1200 >= 2^1024 > DBL_MAX; False for a NaN
    half_norm2[~moderate] = np.where(overflow, np.inf,
                                     np.ldexp(np.where(overflow, 0.0, q), 1200))
    return half_norm2
