"""Adam (Kingma & Ba 2015, Algorithm 1): one formula, one packed update.

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

The formula is written once, in :func:`adam_step`, and applied by one code
path, :meth:`PackedAdam.update`, to all the parameters packed into one float64
vector per kind (:func:`pack`).  Training (:func:`radref.training.train.train`)
and the golden vectors' ``adam`` block call :meth:`PackedAdam.update`;
:func:`adam_update` (new arrays, inputs untouched) and
:func:`adam_update_inplace` (writes into the existing arrays) are that same
update on copies or on the caller's arrays.  The derivation is in
docs/derivations-mlp-adam.md.
"""
import math
import numbers
from typing import NamedTuple

import numpy as np

from radref.training.hyperparameters import check_hyperparameter


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
    for name in AdamConfig._fields:  # the ranges of the one table of hyperparameters
        try:
            check_hyperparameter(name, getattr(config, name))
        except TypeError as exc:  # a config is one value: every bad field is a ValueError
            raise ValueError(str(exc)) from None
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


def _check_inputs(params, grads, state, config):
    """Validate the arguments of an update (config, ``t``, keys and shapes)."""
    check_adam_config(config)
    t = state["t"]
    if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
        raise ValueError(f"state['t'] must be an integer >= 0, got {t!r}")
    others = (("grads", grads), ("state['m']", state["m"]), ("state['v']", state["v"]))
    for label, other in others:
        if other.keys() != params.keys():
            raise ValueError(
                f"{label} must have the keys of params {sorted(params)}, got {sorted(other)}")
        for name, value in params.items():
            if np.shape(other[name]) != np.shape(value):
                raise ValueError(f"{label}[{name!r}] has shape {np.shape(other[name])}, "
                                 f"params[{name!r}] has shape {np.shape(value)}")


def adam_step(g, m, v, t, config):
    """The Adam formula (docs/derivations-mlp-adam.md §3, steps 2-5), elementwise.

    Parameters
    ----------
    g, m, v : ndarray (float64), one shape
        Gradient of the loss to minimise, first and second moments before the step.
    t : int
        The step count *already incremented* (``>= 1``).
    config : AdamConfig

    Returns
    -------
    m_new, v_new, step : ndarray
        New moments and the step; the caller applies ``p - step``.  Nothing is
        written into the arguments.
    """
    lr, beta1, beta2, eps = config.lr, config.beta1, config.beta2, config.eps
    m_new = beta1 * m + (1.0 - beta1) * g
    v_new = beta2 * v + (1.0 - beta2) * (g * g)
    m_hat = m_new / (1.0 - beta1 ** t)
    v_hat = v_new / (1.0 - beta2 ** t)
    step = lr * m_hat / (np.sqrt(v_hat) + eps)
    return m_new, v_new, step


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
    evaluation of :func:`adam_step` on three vectors: about ten NumPy calls,
    whatever the number of parameter arrays, and no copying back.  On exit
    (also by an exception) the original arrays receive the current values and
    are put back into the dicts, so code holding references to them sees the
    update.  :meth:`update` is the only code that applies Adam: training, the
    golden vectors, :func:`adam_update` and :func:`adam_update_inplace` all
    call it.

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
        """The arrays of ``grads`` (keyed like the parameters) as one float64
        vector in the packed order; ValueError if a key is missing or a size
        differs."""
        try:
            parts = [np.ravel(grads[name]) for name in self.names]
        except KeyError as e:
            raise ValueError(f"grads has no entry {e.args[0]!r}") from None
        flat = np.concatenate(parts, dtype=np.float64) if parts else np.zeros(0)
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
        m_new, v_new, step = adam_step(g, m, v, t, self.config)
        p_new = p - step
        p[...], m[...], v[...] = p_new, m_new, v_new
        self.state["t"] = t


def adam_update(params, grads, state, config=AdamConfig()):
    """One Adam step, returning new objects (nothing is modified).

    :meth:`PackedAdam.update` applied to float64 copies of ``params`` and of
    the moments: the numbers training computes, bit for bit.

    Parameters
    ----------
    params : dict of array_like
        Real arrays (converted to float64).
    grads : dict of array_like
        Gradients of the loss to *minimise*; same keys and shapes as ``params``.
    state : dict
        From :func:`adam_init` or a previous call.
    config : AdamConfig

    Returns
    -------
    new_params : dict of ndarray (float64)
        ``p - lr * m_hat / (sqrt(v_hat) + eps)`` for every parameter.
    new_state : dict
        ``t`` incremented by one, new moment arrays.

    Raises
    ------
    ValueError
        Invalid ``config`` or mismatched keys or shapes.
    """
    _check_inputs(params, grads, state, config)
    new_params = {name: np.array(p, dtype=np.float64) for name, p in params.items()}
    new_state = {"t": state["t"],
                 "m": {name: np.array(state["m"][name], dtype=np.float64) for name in params},
                 "v": {name: np.array(state["v"][name], dtype=np.float64) for name in params}}
    with PackedAdam(new_params, new_state, config) as adam:
        adam.update(adam.flatten(grads))
    return new_params, new_state


def adam_update_inplace(params, grads, state, config=AdamConfig()):
    """One Adam step written into the existing arrays.

    :meth:`PackedAdam.update` on the caller's own arrays: every array of
    ``params``, ``state["m"]`` and ``state["v"]`` is overwritten in place and
    ``state["t"]`` is incremented, so code holding references to the parameter
    arrays (e.g. a model object) sees the update.  All or nothing: an error
    raised during the computation (e.g. an overflow under ``np.errstate``)
    leaves everything untouched.

    Parameters
    ----------
    params : dict of ndarray (float64)
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
        If a parameter or moment is not a float64 ndarray.
    """
    _check_inputs(params, grads, state, config)
    with PackedAdam(params, state, config) as adam:
        adam.update(adam.flatten(grads))
