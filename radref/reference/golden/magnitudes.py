"""Per-entry magnitudes ``M``: the size of what an output or a gradient entry
is computed *from*, so that the error allowance knows about cancellation
(docs/golden.md §5, "The magnitude M").

An entry computed as a sum of terms much larger than itself carries, in any
correct port, a rounding error of about ``eps * (sum of |terms|)``, not
``eps * |entry|``.  Two such sums are measured here, each with the backward
passes that radref already has:

- **gradients** are sums over rows (the parameters') and over the outputs that
  enter the loss (``z`` and ``term`` of a coupling layer).  ``M`` of a gradient
  entry is ``sum_{o, r} |dL_{o, r} / d name|``, where ``L_{o, r}`` is the loss
  restricted to row ``r`` of output ``o``: the sum of the absolute values of
  the terms the gradient adds up.
- **outputs** are functions of inputs and parameters that a port holds only to
  its own precision (a float32 port rounds every stored number once).
  Rounding input ``x_j`` by a relative ``delta`` moves output ``y_i`` by
  ``(dy_i / dx_j) x_j delta`` to first order, so ``M`` of an output entry is
  the componentwise condition ``sum_j |dy_i / dx_j| |x_j|`` over every float
  input and parameter (the log-density of a far point, a sum of terms of size
  ``z^2 / 2``, gets an ``M`` of that size).

Magnitudes are stored rounded up to two significant digits: they set an
allowance, not a value, and need not be reproduced bit for bit.
"""
import numpy as np


def round_up_2_digits(values):
    """``values`` (>= 0) rounded up to two significant decimal digits (0 stays 0).

    A magnitude beyond the largest double (a product ``L v`` of a huge ``v``)
    is stored as the largest double: an infinite allowance would pass any
    value.
    """
    largest = np.finfo(np.float64).max
    values = np.minimum(np.asarray(values, dtype=np.float64), largest)
    out = np.zeros_like(values)
    positive = values > 0
    exponent = np.floor(np.log10(values[positive])) - 1.0
    step = 10.0 ** exponent
    with np.errstate(over="ignore"):
        rounded = np.ceil(values[positive] / step * (1 - 1e-12)) * step
    out[positive] = np.minimum(rounded, largest)
    return out


def _only(loss_weights, output, index, weight=None):
    """Loss weights that are 0 everywhere but at ``output[index]``, where they
    are ``weight`` (default: the case's own weights there)."""
    weights = {o: np.zeros_like(w) for o, w in loss_weights.items()}
    weights[output][index] = loss_weights[output][index] if weight is None else weight
    return weights


def gradient_magnitudes(block, ctx_of, loss_weights):
    """``{name: sum_{o, r} |dL_{o, r} / d name|}`` for every gradient of a case.

    ``ctx_of()`` runs the block's forward pass and returns its context (a fresh
    one per backward pass: a backward may consume its cache).
    """
    total = None
    for output, weights in loss_weights.items():
        for row in range(weights.shape[0]):
            if not np.any(weights[row]):
                continue
            grads = block.backward(ctx_of(), _only(loss_weights, output, row))
            parts = {name: np.abs(np.asarray(g, dtype=np.float64)) for name, g in grads.items()}
            total = parts if total is None else {n: total[n] + parts[n] for n in total}
    return total or {}


def _weighted(grad, value):
    """``|grad * value|`` with ``0 * inf = 0`` (a zero derivative times any input)."""
    grad, value = np.abs(np.asarray(grad, dtype=np.float64)), np.abs(np.asarray(value))
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(grad == 0, 0.0, grad * value)


def output_magnitudes(block, ctx_of, loss_weights, values):
    """``{output: sum_j |dy_i / dx_j| |x_j|}`` per entry of every output in the loss.

    ``values`` are the case's float inputs and parameters by name (the names of
    the gradients).  Entries with loss weight 0 (rows outside the contract, for
    example out of range) get magnitude 0: their allowance is ``|golden|``.
    """
    result = {}
    for output, weights in loss_weights.items():
        magnitude = np.zeros(np.shape(weights))
        for index in map(tuple, np.argwhere(weights != 0)):
            grads = block.backward(ctx_of(), _only(loss_weights, output, index, 1.0))
            magnitude[index] = sum(float(np.sum(_weighted(g, values[name])))
                                   for name, g in grads.items())
        result[output] = magnitude
    return result


def case_magnitudes(block, inputs, params, config, loss_weights):
    """The stored ``magnitudes`` section of one case: ``{"outputs.<o>": M,
    "grads.<name>": M}`` rounded up to two digits (empty without a loss)."""
    if not loss_weights or block.backward is None:
        return {}

    def ctx_of():
        return block.forward(inputs, params, config)[1]

    values = dict(inputs, **params)
    grads = gradient_magnitudes(block, ctx_of, loss_weights)
    outputs = output_magnitudes(block, ctx_of, loss_weights, values)
    section = {f"outputs.{o}": round_up_2_digits(m) for o, m in outputs.items()}
    section.update({f"grads.{n}": round_up_2_digits(m) for n, m in grads.items()})
    return section
