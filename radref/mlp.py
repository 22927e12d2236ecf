"""The conditioner network of the coupling layers (paper section 4.2).

One hidden ReLU layer, then one of two output heads::

    pre = x @ W1 + b1              hidden pre-activation, (n, n_hidden)
    h   = max(pre, 0)              ReLU
    a   = h @ W2 + b2              output pre-activation, (n, n_out)

    "tanh":   out = scale * tanh(a)     Real NVP style bounded output
    "linear": out = a                   e.g. the gating logit network

The bounded head keeps every output (e.g. the log-scale of an affine
coupling) in ``[-|scale|, |scale|]``, so a large pre-activation cannot blow up
``exp(log_scale)``; the learned per-output ``scale`` sets how wide that range
is.  Logits need no such bound, hence the linear head.

Which head a parameter dict uses is decided by the presence of the key
``"scale"`` (see :func:`mlp_forward`): there is no separate flag that could
disagree with the parameters.  The backward pass is derived step by step in
docs/derivations-mlp-adam.md.
"""
import numbers
from typing import NamedTuple, Optional

import numpy as np

OUTPUT_KINDS = ("tanh", "linear")


class MLPCache(NamedTuple):
    """Everything :func:`mlp_backward` needs, nothing more.

    ``tanh`` and ``scale`` are ``None`` for the linear head; ``tanh`` is what
    the tanh head needs for both ``d scale`` and ``1 - tanh(a)**2``, so the
    output pre-activation ``a`` itself is not kept.
    """

    x: np.ndarray  # input, (n, n_in): for dW1
    W1: np.ndarray  # (n_in, n_hidden): for dx
    W2: np.ndarray  # (n_hidden, n_out): for dh
    active: np.ndarray  # pre > 0, bool (n, n_hidden): the ReLU derivative
    h: np.ndarray  # ReLU output, (n, n_hidden): for dW2
    tanh: Optional[np.ndarray]  # tanh(a), (n, n_out), tanh head only
    scale: Optional[np.ndarray]  # (n_out,), tanh head only


def _check_positive_int(name, value):
    # bool is an int subclass; mlp_init(True, ...) is almost surely a bug.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def mlp_init(n_in, n_hidden, n_out, output="tanh", out_std=0.01, random_state=None):
    """Random initial parameters of the conditioner network.

    Parameters
    ----------
    n_in, n_hidden, n_out : int
        Input, hidden and output widths (positive).
    output : {"tanh", "linear"}
        Output head; ``"tanh"`` adds the per-output ``scale`` parameter.
    out_std : float
        Standard deviation of ``W2`` (finite, ``>= 0``).  Small by default so
        that a fresh coupling layer starts near its zero-output state (the
        identity for an affine layer; for a Rad layer the uniform fold with
        alpha_1 = alpha_2 = alpha_3 = 3 and uniform gating); ``0`` is allowed
        and makes the initial output exactly 0 (as ``b2 = 0``).
    random_state : None, int, or numpy.random.Generator
        Passed to :func:`numpy.random.default_rng`.

    Returns
    -------
    params : dict of ndarray (float64)
        ``"W1"`` (n_in, n_hidden) ~ N(0, 2 / n_in) (He initialisation, which
        keeps the variance of ``pre`` independent of ``n_in`` for ReLU);
        ``"b1"`` (n_hidden,) zeros; ``"W2"`` (n_hidden, n_out) ~ N(0, out_std**2);
        ``"b2"`` (n_out,) zeros; for ``output="tanh"`` also ``"scale"``
        (n_out,) ones.

    Raises
    ------
    ValueError
        If an argument is invalid; the message names the argument.
    """
    _check_positive_int("n_in", n_in)
    _check_positive_int("n_hidden", n_hidden)
    _check_positive_int("n_out", n_out)
    if output not in OUTPUT_KINDS:
        raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
    if not isinstance(out_std, numbers.Real) or not (np.isfinite(out_std) and out_std >= 0):
        raise ValueError(f"out_std must be a finite number >= 0, got {out_std!r}")
    rng = np.random.default_rng(random_state)
    params = {
        "W1": rng.normal(0.0, np.sqrt(2.0 / n_in), size=(n_in, n_hidden)),
        "b1": np.zeros(n_hidden),
        "W2": rng.normal(0.0, float(out_std), size=(n_hidden, n_out)),
        "b2": np.zeros(n_out),
    }
    if output == "tanh":
        params["scale"] = np.ones(n_out)
    return params


def mlp_forward(x, params):
    """Forward pass of the conditioner network.

    Parameters
    ----------
    x : ndarray of float64, shape (n, n_in)
    params : dict
        As returned by :func:`mlp_init`.  The output head is the tanh head if
        and only if ``"scale"`` is a key of ``params``; otherwise it is linear.

    Returns
    -------
    out : ndarray, shape (n, n_out)
        ``scale * tanh(h @ W2 + b2)`` or ``h @ W2 + b2``, ``h = relu(x @ W1 + b1)``.
    cache : MLPCache

    Raises
    ------
    ValueError
        If ``x`` is not 2-D with ``W1.shape[0]`` columns.
    """
    x = np.asarray(x, dtype=np.float64)
    W1, W2 = params["W1"], params["W2"]
    if x.ndim != 2 or x.shape[1] != W1.shape[0]:
        raise ValueError(f"x must have shape (n, {W1.shape[0]}), got {x.shape}")
    pre = x @ W1 + params["b1"]
    # Strict inequality: at pre == 0 the ReLU derivative is taken to be 0.
    active = pre > 0
    h = np.where(active, pre, 0.0)
    a = h @ W2 + params["b2"]
    if "scale" in params:
        t = np.tanh(a)
        scale = params["scale"]
        return scale * t, MLPCache(x, W1, W2, active, h, t, scale)
    return a, MLPCache(x, W1, W2, active, h, None, None)


def mlp_backward(dout, cache):
    """Backward of :func:`mlp_forward`.

    Parameters
    ----------
    dout : ndarray, shape (n, n_out)
        Upstream gradient ``dL/d out``.
    cache : MLPCache

    Returns
    -------
    dx : ndarray, shape (n, n_in)
    grads : dict of ndarray
        Same keys and shapes as the parameters (``"scale"`` only for the tanh head).

    Notes
    -----
    (derivation in docs/derivations-mlp-adam.md)::

        tanh head:  d scale = sum_n dout * t,   da = dout * scale * (1 - t**2)
        linear head: da = dout
        dW2 = h.T @ da,   db2 = sum_n da,   dh = da @ W2.T
        dpre = dh * [pre > 0]
        dW1 = x.T @ dpre,  db1 = sum_n dpre,  dx = dpre @ W1.T
    """
    if cache.tanh is not None:
        t = cache.tanh
        dscale = np.sum(dout * t, axis=0)
        da = dout * cache.scale * (1.0 - t * t)  # tanh'(a) = 1 - tanh(a)**2
    else:
        da = dout
    dW2 = cache.h.T @ da
    db2 = np.sum(da, axis=0)
    # ReLU passes the gradient only where it passed the signal.
    dpre = np.where(cache.active, da @ cache.W2.T, 0.0)
    grads = {"W1": cache.x.T @ dpre, "b1": np.sum(dpre, axis=0), "W2": dW2, "b2": db2}
    if cache.tanh is not None:
        grads["scale"] = dscale
    dx = dpre @ cache.W1.T
    return dx, grads


def count_parameters(params):
    """Total number of scalar parameters (sum of the array sizes)."""
    return int(sum(np.size(value) for value in params.values()))
