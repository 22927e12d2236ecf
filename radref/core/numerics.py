"""Numerical extremes, in one place (docs/errors.md, "Numerical extremes").

The mathematics modules call these by name wherever a value could leave the
float64 range, so that the formula of the paper stays readable next to one
named call.

Range limit: the layers and the flow evaluate values within ``+-RANGE``
(1e120).  Beyond it a row is *out of range*: its squares, and gradients that
grow like ``|x|^2``, could overflow.  The flow evaluates such a row at the
stand-in ``z = 0`` (:func:`zero_rows`) and reports it.
"""
import numpy as np

#: Largest magnitude of a value the layers (and the flow) evaluate.
RANGE = 1e120


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
