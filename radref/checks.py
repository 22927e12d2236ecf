"""Argument checking for the public entry points.

The one home of argument validation: the estimators, the data sets, the
command line and the one initialiser of the functional core that takes sizes
(:func:`radref.core.mlp.mlp_init`) call these functions (the core's forward
and backward passes check nothing: they do the math on what they are
given), so that one mistake gets one wording wherever it is made.  Every
function raises ``TypeError`` for a value of the wrong kind and ``ValueError`` for a value of the right kind out of range, and
names the argument (``name``).

The array messages also carry the phrases scikit-learn's estimator checks
look for (``"0 feature(s) (shape=(12, 0)) while a minimum of 2 is
required"``, ``"X has 1 features, but RadFlow is expecting 2 features as
input"``, ``"Complex data not supported"``, ``"sparse"``), so the
estimators pass ``sklearn.utils.estimator_checks`` without depending on
scikit-learn.
"""
import numbers
import os
from typing import NamedTuple

import numpy as np


class ComplexDataError(TypeError, ValueError):
    """Complex input: a ``TypeError`` (the wrong kind of number) that is also a
    ``ValueError``, the exception scikit-learn's conventions expect for it."""


def described(value):
    """A value for a message: its type and its repr (``str '1'``), or the repr
    alone when it already names the type (``Generator(PCG64) at 0x...``)."""
    kind, shown = type(value).__name__, repr(value)
    return shown if shown.startswith(kind) else f"{kind} {shown}"


def check_int(name, value, minimum=1):
    """An integer ``>= minimum`` (bool refused), as a plain ``int``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {described(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_real(name, value):
    """A real number (bool refused), as a ``float``; its range is the caller's."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {described(value)}")
    return float(value)


def check_float(name, value, positive=True):
    """A finite real number (``> 0`` if ``positive``)."""
    value = check_real(name, value)
    if not np.isfinite(value) or (positive and value <= 0):
        kind = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{name} must be {kind}, got {value}")
    return value


def check_bool(name, value):
    """``True`` or ``False`` (NumPy booleans accepted)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {described(value)}")
    return bool(value)


def check_choice(what, value, choices):
    """One of the strings ``choices``; ``what`` names the kind (``"problem"``)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid names are {', '.join(choices)}")
    return value


def available_cpus():
    """The CPUs this process may run on (its affinity mask where the system
    has one, as ``taskset`` sets it; else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_n_jobs(name, value):
    """scikit-learn's ``n_jobs``: ``None`` or a nonzero integer, returned as
    given (``None`` and ``1``: one thread; ``-1``: every CPU; ``-2``: all but
    one ...).  Whether a negative value fits this machine is
    :func:`effective_n_jobs`'s question: a model saved on a larger machine
    must still load."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer or None, got {described(value)}")
    if value == 0:
        raise ValueError(f"{name} must be a nonzero integer (1: one thread, -1: every CPU, "
                         f"-2: all but one), got 0")
    return int(value)


def effective_n_jobs(name, value):
    """The number of threads ``n_jobs = value`` asks for on this machine
    (scikit-learn's convention): ``None`` is 1, a positive value itself, a
    negative one ``available_cpus() + 1 + value`` (``-1``: every CPU).

    Raises
    ------
    TypeError, ValueError
        As :func:`check_n_jobs`; ``ValueError`` also for a negative value
        below ``-available_cpus()`` (it would ask for fewer than one thread).
    """
    value = check_n_jobs(name, value)
    if value is None:
        return 1
    if value > 0:
        return value
    cpus = available_cpus()
    if value < -cpus:
        raise ValueError(f"{name} must be >= -{cpus} on this machine ({cpus} CPUs available; "
                         f"-1 uses every CPU), got {value}")
    return cpus + 1 + value


def check_random_state(name, value):
    """``None`` or an integer ``>= 0``, as a plain ``int`` (storable in a
    checkpoint's JSON metadata)."""
    if value is None:
        return None
    return check_int(name, value, minimum=0)


def check_generator(name, value):
    """``np.random.default_rng(value)``, with an error that names the argument."""
    try:
        return np.random.default_rng(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name} must be None, a non-negative int, a sequence of them, "
                        f"a SeedSequence or a Generator, got {value!r} ({exc})") from None


def check_seed_sequence(name, value):
    """A :class:`numpy.random.SeedSequence` built from ``value`` (``None``, an
    int, a sequence of ints or a SeedSequence; a Generator is refused because
    it cannot be split into independent streams reproducibly)."""
    if isinstance(value, np.random.SeedSequence):
        return value
    if isinstance(value, (np.random.Generator, np.random.BitGenerator)):
        raise TypeError(f"{name} must be None, an int, a sequence of ints or a SeedSequence, "
                        f"not a {type(value).__name__}")
    try:
        return np.random.SeedSequence(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name} must be None, a non-negative int, a sequence of them or a "
                        f"SeedSequence, got {value!r} ({exc})") from None


def check_path(name, path):
    """A file path (str, bytes or os.PathLike) whose directory exists; returned as given."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or os.PathLike), "
                        f"got {described(path)}")
    directory = os.path.dirname(os.path.abspath(os.fsdecode(path)))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{name}: directory {directory} does not exist")
    return path


class ArrayWording(NamedTuple):
    """Messages of :func:`check_array` in another wording (``str.format``
    templates with ``name`` and, as they apply, ``dtype``, ``shape``, ``row``):
    the ``radref`` command's, which speak of files holding points."""

    wrong_dtype: str
    wrong_shape: str
    empty: str
    beyond_float64: str
    non_finite: str


#: The wording of the ``radref`` command for points read from a file
#: (``name`` is the option and the file, ``--data pts.csv``).
POINTS_IN_A_FILE = ArrayWording(
    wrong_dtype="{name}: holds {dtype} values, not real numbers",
    wrong_shape="{name}: holds an array of shape {shape}; points are a table of shape (n, d): "
                "one point per row",
    empty="{name}: holds no points (shape {shape})",
    beyond_float64="{name}: values beyond the float64 range",
    non_finite="{name}: point {row} (row {row}) holds NaN or an infinite value; every "
               "coordinate must be a finite number")


def check_array(name, value, dim=None, ndim=2, allow_empty=False, min_columns=None,
                owner=None, wording=None):
    """A finite float64 array of ``ndim`` dimensions.

    Parameters
    ----------
    name : str
        The argument's name, used in messages.
    value : array_like
        Integer arrays are converted; an object array is converted if every
        element is a real number.  Boolean, complex, string, datetime and
        sparse inputs are refused.  Read-only and non-contiguous arrays are
        fine (the result is a fresh float64 array when a conversion is needed).
    dim : int, optional
        Required size of the last axis.
    allow_empty : bool
        Accept arrays with no rows (never arrays with no columns).
    min_columns : int, optional
        Smallest size of the last axis (when ``dim`` is not fixed).
    owner : str, optional
        The estimator that checks (``"RadFlow"``): a wrong number of columns
        is then worded as scikit-learn words it.
    wording : ArrayWording, optional
        Other messages (:data:`POINTS_IN_A_FILE`, the command line's); the
        checks are the same.
    """
    if wording is not None:
        return _check_worded(name, value, wording)
    array = _as_numeric_array(name, value)
    if array.ndim != ndim:
        expected = f"; expected shape (n, {dim})" if dim is not None and ndim == 2 else ""
        hint = ""
        if ndim == 2 and array.ndim == 1:
            hint = _reshape_hint(name, dim, min_columns)
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {array.shape}"
                         f"{expected}{hint}")
    if ndim == 2:
        _check_2d_shape(name, array.shape, dim, allow_empty, min_columns, owner)
    elif array.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values; it must be finite")
    return array


def _reshape_hint(name, dim, min_columns):
    """How to make a 1-D array the 2-D one asked for; one feature per sample
    is offered only where one column is allowed (a flow needs two)."""
    needed = dim if dim is not None else (min_columns or 1)
    one_sample = f"{name}.reshape(1, -1) if it holds one sample"
    if needed >= 2 and dim is None:
        # a flow: X.reshape(-1, 1), scikit-learn's usual advice, cannot help
        return (f". Reshape your data: {one_sample}; a single column cannot be modelled (a "
                f"flow needs {needed} or more columns: each coupling layer transforms some "
                f"columns given the others), so stack it with other columns, e.g. "
                f"np.column_stack([x1, x2])")
    if needed >= 2:
        return (f". Reshape your data: {one_sample} of {dim} features, or "
                f"{name}.reshape(-1, {dim}) if it holds points of {dim} coordinates one after "
                f"the other")
    return f". Reshape your data: {name}.reshape(-1, 1) if it holds one feature, {one_sample}"


def _check_worded(name, value, wording):
    """:func:`check_array` of a 2-D array with at least one row and column,
    worded by ``wording``; every message is a ``ValueError``."""
    array = np.asarray(value)
    if not _is_real_dtype(array.dtype):
        raise ValueError(wording.wrong_dtype.format(name=name, dtype=array.dtype))
    if array.ndim != 2:
        raise ValueError(wording.wrong_shape.format(name=name, shape=array.shape))
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(wording.empty.format(name=name, shape=array.shape))
    if _beyond_float64(array):
        raise ValueError(wording.beyond_float64.format(name=name))
    array = array.astype(np.float64)
    bad = ~np.all(np.isfinite(array), axis=1)
    if bad.any():
        raise ValueError(wording.non_finite.format(name=name, row=int(np.flatnonzero(bad)[0]) + 1))
    return array


def _is_real_dtype(dtype):
    """Integers and floats (not booleans, complex numbers, strings, dates, ...)."""
    return dtype != bool and (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating))


def _beyond_float64(array):
    """A long double array holding finite values beyond the float64 range
    (which the cast to float64 would overflow)."""
    if array.dtype.kind != "f" or array.dtype.itemsize <= 8 or not array.size:
        return False
    return not np.all(np.abs(array[np.isfinite(array)]) <= np.finfo(np.float64).max)


def _as_numeric_array(name, value):
    """``value`` as a float64 ndarray, or the TypeError that says why not."""
    if _is_sparse(value):
        raise TypeError(f"{name} is a sparse matrix: sparse input is not supported, "
                        f"pass a dense array ({name}.toarray())")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged nested sequences, ...
        raise TypeError(f"{name} must be a real numeric array: {exc}") from None
    if array.dtype == object:
        return _object_to_float(name, array)
    if np.issubdtype(array.dtype, np.complexfloating):
        raise ComplexDataError(f"{name} must be a real numeric array, got dtype {array.dtype}. "
                               f"Complex data not supported.")
    if not _is_real_dtype(array.dtype):
        raise TypeError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    if _beyond_float64(array):  # long double: the cast to float64 would overflow
        raise ValueError(f"{name} has values beyond the float64 range")
    return array.astype(np.float64, copy=False)


def _object_to_float(name, array):
    """An object array of real numbers (e.g. from a mixed-type table) as float64.

    Strings, booleans and ``None`` are refused as they are in typed arrays
    (NumPy would turn ``None`` into NaN); anything else that is not a real
    number fails with Python's own reason (``float() argument must be a
    string or a real number, not 'dict'``).
    """
    converted = np.empty(array.shape, dtype=np.float64)
    for index, element in np.ndenumerate(array):
        if isinstance(element, (complex, np.complexfloating)):
            raise ComplexDataError(f"{name} must be a real numeric array: element "
                                   f"{list(index)} is complex. Complex data not supported.")
        if element is None or isinstance(element, (str, bytes, bool, np.bool_)):
            raise TypeError(f"{name} must be a real numeric array: element {list(index)} "
                            f"is {type(element).__name__} {element!r}")
        try:
            converted[index] = float(element)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"{name} must be a real numeric array: element {list(index)}: "
                            f"{exc}") from None
    return converted


def _is_sparse(value):
    """A SciPy sparse matrix or array (recognised without importing SciPy)."""
    module = type(value).__module__ or ""
    return module.startswith("scipy.sparse") and hasattr(value, "toarray")


def _check_2d_shape(name, shape, dim, allow_empty, min_columns, owner):
    n_rows, n_columns = shape
    needed = dim if dim is not None else (min_columns or 1)
    if n_columns == 0:
        raise ValueError(f"{name} is empty: 0 feature(s) (shape={shape}) while a minimum of "
                         f"{needed} is required.")
    if n_rows == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: 0 sample(s) (shape={shape}) while a minimum of "
                         f"1 is required.")
    if dim is not None and n_columns != dim:
        if owner is None:
            raise ValueError(f"{name} must have shape (n, {dim}), got shape {shape}")
        raise ValueError(f"{name} must have {dim} columns: {name} has {n_columns} features, "
                         f"but {owner} is expecting {dim} features as input")
    if min_columns is not None and n_columns < min_columns:
        raise ValueError(f"{name} must have at least {min_columns} columns: {n_columns} "
                         f"feature(s) (shape={shape}) while a minimum of {min_columns} is "
                         f"required.")
