"""Diagnostics: where a flow's log-likelihood or gradient first goes wrong.

Used by :mod:`radref.training.train` to turn a non-finite loss into a precise error
(:class:`radref.training.train.NonFiniteError`); it re-runs one minibatch layer by layer,
so it costs nothing in normal training.
"""
import numpy as np

from radref.core.base import normal_logpdf_forward
from radref.core.flow import FlowCache, flow_layers, flow_layers_backward
from radref.core.numerics import RANGE, out_of_range_rows


def locate_non_finite(x, params, config, row_names=None):
    """Where the log-likelihood of ``x`` (or its gradient) first goes wrong.

    Re-runs the flow's layer loop (:func:`radref.core.flow.flow_layers`) with
    floating-point errors raised, stopping at the first layer whose output
    leaves the range or whose term is not finite, then (if the forward pass
    is clean) the backward sweep (:func:`radref.core.flow.flow_layers_backward`).

    Parameters
    ----------
    x : ndarray, shape (n, d)
    params, config
        As for :func:`radref.core.flow.flow_forward`.
    row_names : sequence, optional
        How to name row ``i`` of ``x`` in ``detail`` (default ``"row i"``).

    Returns
    -------
    where : {"loss", "gradient"} or None
        ``None`` if nothing goes wrong.
    layer : int or None
    row : int or None
        A row of ``x`` concerned (when known).
    detail : str
    """
    def first(rows):
        return int(np.flatnonzero(rows)[0])

    def name(row):
        return f"row {row}" if row_names is None else str(row_names[row])

    limit = f"{RANGE:g}".replace("e+", "e")
    outside = out_of_range_rows(x)
    if outside.any():
        row = first(outside)
        return "loss", None, row, f"{name(row)} lies beyond +-{limit}: out of range"
    records = []
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        try:
            for record in flow_layers(x, params, config):
                if record.out_of_range.any():
                    row = first(record.out_of_range)
                    return "loss", record.layer, row, \
                        f"its output leaves +-{limit} for {name(row)}"
                if not np.all(np.isfinite(record.term)):
                    row = first(~np.isfinite(record.term))
                    return "loss", record.layer, row, \
                        f"its log-likelihood term is not finite for {name(row)}"
                records.append(record)
        except FloatingPointError as exc:  # raised by the layer after the last record
            return "loss", len(records), None, f"{exc} in its forward pass"
        try:
            log_base, base_cache = normal_logpdf_forward(records[-1].z)
        except FloatingPointError as exc:
            return "loss", None, None, f"{exc} in the base density"
        if not np.all(np.isfinite(log_base)):
            row = first(~np.isfinite(log_base))
            return "loss", None, row, f"the base density is not finite for {name(row)}"
        cache = FlowCache(config, [r.cache for r in records], base_cache, outside)
        running = config.n_layers - 1  # the layer whose backward pass runs next
        try:
            for layer, dz, grads in flow_layers_backward(np.full(len(x), 1.0 / len(x)), cache):
                if not (np.all(np.isfinite(dz))
                        and all(np.all(np.isfinite(g)) for net in grads.values()
                                for g in net.values())):
                    return "gradient", layer, None, "its gradient is not finite"
                running = layer - 1
        except FloatingPointError as exc:
            return "gradient", running, None, f"{exc} in its backward pass"
    return None, None, None, ""
