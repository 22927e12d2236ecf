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
only in where they store its results, so they agree bit for bit.  The
derivation is in docs/derivations-mlp-adam.md.
"""
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


def _check_inputs(params, grads, state, config):
    check_adam_config(config)
    t = state["t"]
    if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
        raise ValueError(f"state['t'] must be an integer >= 0, got {t!r}")
    names = set(params)
    for label, other in (("grads", grads), ("state['m']", state["m"]), ("state['v']", state["v"])):
        if set(other) != names:
            raise ValueError(
                f"{label} must have the keys of params {sorted(names)}, got {sorted(other)}")
    for name in params:
        shape = np.shape(params[name])
        for label, other in (("grads", grads), ("state['m']", state["m"]), ("state['v']", state["v"])):
            if np.shape(other[name]) != shape:
                raise ValueError(
                    f"{label}[{name!r}] has shape {np.shape(other[name])}, "
                    f"params[{name!r}] has shape {shape}")


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
    _check_inputs(params, grads, state, config)
    t = state["t"] + 1
    new_params, new_m, new_v = {}, {}, {}
    for name, p in params.items():
        new_m[name], new_v[name], step = _adam_step(
            grads[name], state["m"][name], state["v"][name], t, config)
        new_params[name] = p - step
    return new_params, {"t": t, "m": new_m, "v": new_v}


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
    _check_inputs(params, grads, state, config)
    for name, p in params.items():
        if not (isinstance(p, np.ndarray) and np.issubdtype(p.dtype, np.floating)):
            raise TypeError(
                f"params[{name!r}] must be a floating-point ndarray to be updated in place")
    # Compute everything, the new parameter values included, before writing
    # anything, so that a failure (e.g. an overflow raised under np.errstate)
    # leaves all untouched.
    t = state["t"] + 1
    results = {}
    for name in params:
        m_new, v_new, step = _adam_step(grads[name], state["m"][name], state["v"][name], t,
                                        config)
        results[name] = (params[name] - step, m_new, v_new)
    for name, (p_new, m_new, v_new) in results.items():
        params[name][...] = p_new
        state["m"][name][...] = m_new
        state["v"][name][...] = v_new
    state["t"] = t
