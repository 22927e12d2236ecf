"""Adam (Kingma & Ba 2015, Algorithm 1), pure and functional.

For every parameter array ``p`` with gradient ``g``, at step ``t = 1, 2, ...``::

    m     = beta1 * m + (1 - beta1) * g
    v     = beta2 * v + (1 - beta2) * g**2
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    p     = p - lr * m_hat / (sqrt(v_hat) + eps)

The update *minimises*: ``grads`` are gradients of the loss.  ``t`` counts the
updates already applied and is incremented *before* the bias correction, so
the first update uses ``t = 1``.  With ``m = v = 0`` initially the bias
correction makes the first step ``lr * g / (|g| + eps)``, of magnitude ``lr``
for any gradient much larger than ``eps``.

The formula is written once, in :func:`_adam_step`; :func:`adam_update`
(new arrays, inputs untouched) and :func:`adam_update_inplace` (writes into
the existing arrays, for models whose users hold references to them) differ
only in where they store its results, so they agree bit for bit.  Both apply
it once to all the parameters joined into flat vectors (:func:`_new_values`),
which gives the same bits as one application per array.  The derivation is
in docs/derivations-mlp-adam.md.
"""
import itertools
import math
import numbers
from typing import NamedTuple

import numpy as np


class AdamConfig(NamedTuple):
    """Adam hyperparameters (defaults of Kingma & Ba 2015).

    Immutable, so a schedule builds a new config per step, e.g.
    ``config._replace(lr=...)``.  Checked by :func:`check_adam_config`.
    """

    lr: float = 1e-3  # step size, finite and > 0
    beta1: float = 0.9  # decay of the first moment, in [0, 1)
    beta2: float = 0.999  # decay of the second moment, in [0, 1)
    eps: float = 1e-8  # added to sqrt(v_hat), finite and > 0


def check_adam_config(config):
    """Validate an :class:`AdamConfig`.

    Parameters
    ----------
    config : AdamConfig

    Returns
    -------
    config : AdamConfig
        The argument, unchanged, so calls can be chained.

    Raises
    ------
    ValueError
        Naming the first offending field: ``lr`` must be finite and > 0,
        ``beta1`` and ``beta2`` in ``[0, 1)`` (``beta < 1`` keeps the bias
        correction ``1 - beta**t`` non-zero), ``eps`` finite and > 0 (so that a
        zero gradient gives ``0 / eps = 0``, never ``0 / 0``).
    """
    if not isinstance(config, AdamConfig):
        raise ValueError(f"config must be an AdamConfig, got {type(config).__name__}")
    for name in AdamConfig._fields:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} must be a real number, got {value!r}")
    # Written so that NaN fails every test (all comparisons with NaN are False).
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise ValueError(f"lr must be finite and > 0, got {config.lr!r}")
    for name in ("beta1", "beta2"):
        value = getattr(config, name)
        if not (0 <= value < 1):
            raise ValueError(f"{name} must satisfy 0 <= {name} < 1, got {value!r}")
    if not (math.isfinite(config.eps) and config.eps > 0):
        raise ValueError(f"eps must be finite and > 0, got {config.eps!r}")
    return config


def adam_init(params):
    """Initial Adam state for a parameter dict.

    Parameters
    ----------
    params : dict of ndarray

    Returns
    -------
    state : dict
        ``{"t": 0, "m": {name: zeros}, "v": {name: zeros}}``; the moment arrays
        have the shapes of the parameters and dtype float64.
    """
    return {
        "t": 0,
        "m": {name: np.zeros(np.shape(p)) for name, p in params.items()},
        "v": {name: np.zeros(np.shape(p)) for name, p in params.items()},
    }


def _shapes(arrays):
    """The shape of every item of the list ``arrays``."""
    try:
        return [a.shape for a in arrays]
    except AttributeError:  # a Python scalar or a list among them
        return [np.shape(a) for a in arrays]


def _check_inputs(params, grads, state, config):
    """Validate the arguments of an update.

    Returns the parameters, gradients, first and second moments as four lists
    of arrays, in the order of ``params``.
    """
    check_adam_config(config)
    t = state["t"]
    if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
        raise ValueError(f"state['t'] must be an integer >= 0, got {t!r}")
    others = (("grads", grads), ("state['m']", state["m"]), ("state['v']", state["v"]))
    for label, other in others:
        if other.keys() != params.keys():
            raise ValueError(
                f"{label} must have the keys of params {sorted(params)}, got {sorted(other)}")
    p = list(params.values())
    g, m, v = ([other[name] for name in params] for _, other in others)
    # One comparison of shape lists per dict; the first mismatch is searched
    # for only when there is one.
    shapes = _shapes(p)
    if not _shapes(g) == _shapes(m) == _shapes(v) == shapes:
        for name in params:
            shape = np.shape(params[name])
            for label, other in others:
                if np.shape(other[name]) != shape:
                    raise ValueError(
                        f"{label}[{name!r}] has shape {np.shape(other[name])}, "
                        f"params[{name!r}] has shape {shape}")
    return p, g, m, v


def _adam_step(g, m, v, t, config):
    """The Adam formula for one array: returns new ``(m, v, step)``.

    ``t`` is the already incremented step count (``>= 1``); the caller applies
    ``p - step``.  Nothing is written into the arguments.
    """
    lr, beta1, beta2, eps = config.lr, config.beta1, config.beta2, config.eps
    m_new = beta1 * m + (1.0 - beta1) * g
    v_new = beta2 * v + (1.0 - beta2) * (g * g)
    m_hat = m_new / (1.0 - beta1 ** t)
    v_hat = v_new / (1.0 - beta2 ** t)
    step = lr * m_hat / (np.sqrt(v_hat) + eps)
    return m_new, v_new, step


def _flat(arrays):
    """The arrays flattened (C order) and joined into one float64 vector.

    ``casting="no"``: an array of any other dtype raises TypeError instead of
    being converted.
    """
    return np.concatenate(arrays, axis=None, dtype=np.float64, casting="no")


def _new_values(p, g, m, v, t, config, shaped=True):
    """New parameters and moments at step ``t``; nothing is written.

    ``p, g, m, v`` are lists of arrays (from :func:`_check_inputs`); returns
    three lists of new arrays ``(p_new, m_new, v_new)`` in the same order,
    each array of the shape of its parameter, or, with ``shaped=False``,
    possibly flat (the values in C order, as ``array.flat`` writes them).

    The formula is elementwise, so when every array is float64 (always in
    training) :func:`_adam_step` is applied once, to flat vectors that each
    join all the arrays of one kind, and the results are cut back into the
    parameters' shapes: the same operations on the same numbers as one call
    per array, hence the same bits, in about ten NumPy calls instead of ten
    per array.  Other dtypes (whose results NumPy's promotion rules make
    depend on each array's dtype) get one call per array.
    """
    try:
        # One vector per kind: the rows of one joining all four lists.
        p_flat, g_flat, m_flat, v_flat = _flat(p + g + m + v).reshape(4, -1)
    except (TypeError, ValueError):  # not all float64, or no parameters at all
        p_new, m_new, v_new = [], [], []
        for p_i, g_i, m_i, v_i in zip(p, g, m, v):
            m_new_i, v_new_i, step_i = _adam_step(g_i, m_i, v_i, t, config)
            p_new.append(p_i - step_i)
            m_new.append(m_new_i)
            v_new.append(v_new_i)
        return p_new, m_new, v_new
    m_flat, v_flat, step = _adam_step(g_flat, m_flat, v_flat, t, config)
    p_flat = p_flat - step
    # Parameter i is flat[cuts[i]], in C order.
    shapes = _shapes(p)
    ends = list(itertools.accumulate(math.prod(shape) for shape in shapes))
    cuts = [slice(i, j) for i, j in zip([0] + ends[:-1], ends)]
    if shaped:
        return tuple([flat[cut].reshape(shape) for cut, shape in zip(cuts, shapes)]
                     for flat in (p_flat, m_flat, v_flat))
    return tuple([flat[cut] for cut in cuts] for flat in (p_flat, m_flat, v_flat))


def adam_update(params, grads, state, config=AdamConfig()):
    """One Adam step, returning new objects (nothing is modified).

    Parameters
    ----------
    params : dict of ndarray
    grads : dict of ndarray
        Gradients of the loss to *minimise*; same keys and shapes as ``params``.
    state : dict
        From :func:`adam_init` or a previous call.
    config : AdamConfig

    Returns
    -------
    new_params : dict of ndarray
        ``p - lr * m_hat / (sqrt(v_hat) + eps)`` for every parameter.
    new_state : dict
        ``t`` incremented by one, new moment arrays.

    Raises
    ------
    ValueError
        Invalid ``config`` or mismatched keys or shapes.
    """
    p, g, m, v = _check_inputs(params, grads, state, config)
    t = state["t"] + 1
    p_new, m_new, v_new = _new_values(p, g, m, v, t, config)
    return (dict(zip(params, p_new)),
            {"t": t, "m": dict(zip(params, m_new)), "v": dict(zip(params, v_new))})


def adam_update_inplace(params, grads, state, config=AdamConfig()):
    """One Adam step written into the existing arrays.

    Same arithmetic as :func:`adam_update` (bit for bit), but every array of
    ``params``, ``state["m"]`` and ``state["v"]`` is overwritten in place and
    ``state["t"]`` is incremented, so code holding references to the parameter
    arrays (e.g. a model object) sees the update.

    Parameters
    ----------
    params : dict of ndarray
        Writable floating-point arrays (a NumPy scalar cannot be updated in place).
    grads, state, config
        As for :func:`adam_update`.

    Returns
    -------
    None

    Raises
    ------
    ValueError
        Invalid ``config`` or mismatched keys or shapes.
    TypeError
        If a parameter is not a floating-point ndarray.
    """
    p, g, m, v = _check_inputs(params, grads, state, config)
    for name, value in params.items():
        if not (isinstance(value, np.ndarray) and value.dtype.kind == "f"):  # np.floating
            raise TypeError(
                f"params[{name!r}] must be a floating-point ndarray to be updated in place")
    # Compute everything, the new parameter values included, before writing
    # anything, so that a failure (e.g. an overflow raised under np.errstate)
    # leaves all untouched.
    t = state["t"] + 1
    p_new, m_new, v_new = _new_values(p, g, m, v, t, config, shaped=False)
    for arrays, new_values in ((p, p_new), (m, m_new), (v, v_new)):
        for array, new_value in zip(arrays, new_values):
            array.flat = new_value  # in C order
    state["t"] = t


def pack(arrays, names=None):
    """One contiguous float64 vector holding the arrays of a dict, and views into it.

    Parameters
    ----------
    arrays : dict of ndarray (float64)
    names : list of str, optional
        The keys, in the order they are laid out in the vector (default: the
        dict's order).

    Returns
    -------
    vector : ndarray, shape (total size,)
        The values of ``arrays[name]`` for every name, flattened in C order, one after the other.
    views : dict of ndarray
        ``views[name]``: a view into ``vector`` with the shape and values of
        ``arrays[name]``; writing ``vector`` writes every view.
    """
    names = list(arrays) if names is None else names
    vector = np.concatenate([np.ravel(arrays[name]) for name in names]) if names else np.zeros(0)
    views, start = {}, 0
    for name in names:
        shape = np.shape(arrays[name])
        stop = start + math.prod(shape)
        views[name] = vector[start:stop].reshape(shape)
        start = stop
    return vector, views


class PackedAdam:
    """Adam for a training loop, on parameters packed into one vector.

    Inside ``with PackedAdam(params, state, config) as adam:`` every array of
    ``params``, ``state["m"]`` and ``state["v"]`` is replaced by a view into
    one contiguous vector per kind (:func:`pack`), so an update is one
    evaluation of :func:`_adam_step` on three vectors: about ten NumPy calls,
    whatever the number of parameter arrays, and no copying back.  On exit
    (also by an exception) the original arrays receive the current values and
    are put back into the dicts, so code holding references to them sees the
    update, as with :func:`adam_update_inplace`, which computes the same bits.

    Parameters
    ----------
    params : dict of ndarray (float64)
    state : dict
        From :func:`adam_init` (or a checkpoint); updated in place.
    config : AdamConfig

    Raises
    ------
    ValueError
        As :func:`adam_update` (invalid config, keys or shapes).
    TypeError
        If a parameter or moment is not a float64 ndarray.
    """

    def __init__(self, params, state, config=AdamConfig()):
        _check_inputs(params, state["m"], state, config)
        for label, arrays in (("params", params), ("state['m']", state["m"]),
                              ("state['v']", state["v"])):
            for name, value in arrays.items():
                if not (isinstance(value, np.ndarray) and value.dtype == np.float64):
                    raise TypeError(f"{label}[{name!r}] must be a float64 ndarray")
        self.params, self.state, self.config = params, state, config
        self.names = list(params)

    def __enter__(self):
        dicts = (self.params, self.state["m"], self.state["v"])
        self._originals = [dict(d) for d in dicts]
        self._vectors = []
        for d in dicts:
            vector, views = pack(d, self.names)
            d.update(views)
            self._vectors.append(vector)
        return self

    def __exit__(self, *exc_info):
        for d, originals in zip((self.params, self.state["m"], self.state["v"]),
                                self._originals):
            for name, original in originals.items():
                original[...] = d[name]
                d[name] = original
        return False

    def flatten(self, grads):
        """The arrays of ``grads`` (keyed like the parameters) as one vector in
        the packed order; ValueError if a key is missing or a size differs."""
        try:
            flat = np.concatenate([np.ravel(grads[name]) for name in self.names])
        except KeyError as e:
            raise ValueError(f"grads has no entry {e.args[0]!r}") from None
        if flat.shape != self._vectors[0].shape:
            raise ValueError("grads must have the shapes of params")
        return flat

    def update(self, g):
        """One Adam step with the flat gradient ``g`` (of the loss to minimise,
        from :meth:`flatten`).  Everything is computed before anything is
        written, so a floating-point error raised under ``np.errstate`` leaves
        the parameters and the state untouched."""
        p, m, v = self._vectors
        t = self.state["t"] + 1
        m_new, v_new, step = _adam_step(g, m, v, t, self.config)
        p_new = p - step
        p[...], m[...], v[...] = p_new, m_new, v_new
        self.state["t"] = t
