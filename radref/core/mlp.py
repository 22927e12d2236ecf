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

from radref.checks import check_int
from radref.core.chunks import matmul_in_row_blocks

OUTPUT_KINDS = ("tanh", "linear")


class MLPCache(NamedTuple):
    """Everything :func:`mlp_backward` needs, nothing more.

    ``tanh`` and ``scale`` are ``None`` for the linear head; ``tanh`` is what
    the tanh head needs for both ``d scale`` and ``1 - tanh(a)**2``, so the
    output pre-activation ``a`` itself is not kept.
    """

    x1: np.ndarray  # [x, 1], (n, n_in + 1): for dW1 and db1
    W1: np.ndarray  # (n_in, n_hidden): for dx
    W2: np.ndarray  # (n_hidden, n_out): for dh
    h: np.ndarray  # ReLU output, (n, n_hidden): for dW2 and (h > 0) the ReLU derivative
    tanh: Optional[np.ndarray]  # tanh(a), (n, n_out), tanh head only
    scale: Optional[np.ndarray]  # (n_out,), tanh head only

    @property
    def x(self):
        """The input ``x``, (n, n_in) (a view of ``x1``)."""
        return self.x1[:, :-1]

    @property
    def active(self):
        """``pre > 0`` (bool, (n, n_hidden)): where the ReLU passes its input."""
        return self.h > 0


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
    TypeError, ValueError
        If an argument is invalid (:mod:`radref.checks`); the message names
        the argument.
    """
    n_in, n_hidden, n_out = (check_int(name, value) for name, value in
                             (("n_in", n_in), ("n_hidden", n_hidden), ("n_out", n_out)))
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


def _with_ones_column(x):
    """``[x, 1]``: ``x`` (n, m) with a column of ones appended, (n, m + 1)."""
    x1 = np.empty((x.shape[0], x.shape[1] + 1))
    x1[:, :-1] = x
    x1[:, -1] = 1.0
    return x1


def _column_sums(m, ones):
    """``np.sum(m, axis=0)`` as ``ones @ m`` (for narrow ``m`` a reduction over
    the long axis costs several times more than this matrix-vector product)."""
    return ones @ m


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

    Notes
    -----
    The first layer is computed as ``[x, 1] @ [W1; b1]``: one matrix product
    instead of a product and a broadcast addition over the wide ``(n,
    n_hidden)`` array, and in the backward pass ``[x, 1].T @ dpre`` gives
    ``dW1`` and ``db1`` together.
    """
    x = np.asarray(x, dtype=np.float64)
    W1, W2 = params["W1"], params["W2"]
    if x.ndim != 2 or x.shape[1] != W1.shape[0]:
        raise ValueError(f"x must have shape (n, {W1.shape[0]}), got {x.shape}")
    x1 = _with_ones_column(x)
    # x1 @ [W1; b1] and h @ W2, in blocks of rows: a row's rounding then does
    # not depend on how many rows come with it (radref.core.chunks)
    pre = matmul_in_row_blocks(x1, np.concatenate([W1, params["b1"][None, :]]))
    h = np.maximum(pre, 0.0, out=pre)  # ReLU, in place: pre itself is not needed again
    a = matmul_in_row_blocks(h, W2)
    a += params["b2"]
    if "scale" in params:
        t = np.tanh(a)
        scale = params["scale"]
        return scale * t, MLPCache(x1, W1, W2, h, t, scale)
    return a, MLPCache(x1, W1, W2, h, None, None)


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
        [dW1; db1] = [x, 1].T @ dpre,   dx = dpre @ W1.T
    """
    ones = np.ones(len(dout))
    if cache.tanh is not None:
        t = cache.tanh
        dscale = _column_sums(dout * t, ones)
        da = dout * cache.scale * (1.0 - t * t)  # tanh'(a) = 1 - tanh(a)**2
    else:
        da = dout
    dW2 = cache.h.T @ da
    db2 = _column_sums(da, ones)
    # ReLU passes the gradient only where it passed the signal (h > 0 iff pre > 0).
    dpre = da @ cache.W2.T
    dpre *= cache.active
    dWb1 = cache.x1.T @ dpre
    grads = {"W1": dWb1[:-1], "b1": dWb1[-1], "W2": dW2, "b2": db2}
    if cache.tanh is not None:
        grads["scale"] = dscale
    dx = dpre @ cache.W1.T
    return dx, grads


def count_parameters(params):
    """Total number of scalar parameters (sum of the array sizes)."""
    return int(sum(np.size(value) for value in params.values()))
