"""Argument checking for the public entry points (the functional core does none)."""
import numbers

import numpy as np


def check_int(name, value, minimum=1):
    """An integer ``>= minimum`` (bool refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(name, value, positive=True):
    """A finite real number (``> 0`` if ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value) or (positive and value <= 0):
        kind = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{name} must be {kind}, got {value}")
    return value


def check_array(name, value, dim=None, ndim=2, allow_empty=False):
    """A finite float64 array of ``ndim`` dimensions (last axis ``dim`` if given).

    Integer arrays are converted; boolean, complex, object and string arrays are
    refused with ``TypeError``.  Read-only and non-contiguous arrays are fine
    (the result is a fresh float64 array when a conversion is needed).
    """
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged nested sequences, ...
        raise TypeError(f"{name} must be a real numeric array: {exc}") from None
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer)
                                   or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    if array.dtype.kind == "f" and array.dtype.itemsize > 8 and array.size:
        # long double: values beyond the float64 range would overflow in the cast
        if not np.all(np.abs(array[np.isfinite(array)]) <= np.finfo(np.float64).max):
            raise ValueError(f"{name} has values beyond the float64 range")
    array = array.astype(np.float64, copy=False)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {array.shape}")
    if array.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if dim is not None and array.shape[-1] != dim:
        raise ValueError(f"{name} must have {dim} columns (the model's dimension), "
                         f"got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array
