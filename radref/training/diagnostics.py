"""Diagnostics: where a flow's log-likelihood or gradient first goes wrong.

Used by :mod:`radref.training.train` to turn a non-finite loss into a precise error
(:class:`radref.training.train.NonFiniteError`); it re-runs one minibatch layer by layer,
so it costs nothing in normal training.
"""
import numpy as np

from radref.core.base import normal_logpdf_backward, normal_logpdf_forward
from radref.core.coupling import (affine_coupling_backward, affine_coupling_forward,
                                  rad_coupling_backward, rad_coupling_forward)
from radref.core.numerics import RANGE, out_of_range_rows
from radref.core.flow import layer_params


def _layer_forward(z, params, layer, config):
    nested = layer_params(params, layer)
    if config.kind == "rad":
        z, _, term, cache = rad_coupling_forward(z, nested, layer)
    else:
        z, term, cache = affine_coupling_forward(z, nested, layer)
    return z, term, cache


def locate_non_finite(x, params, config, row_names=None):
    """Where the log-likelihood of ``x`` (or its gradient) first goes wrong.

    Re-runs the forward pass layer by layer with floating-point errors raised,
    then (if the forward pass is clean) the backward pass layer by layer.

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
    far = out_of_range_rows(x)
    if far.any():
        row = first(far)
        return "loss", None, row, f"{name(row)} lies beyond +-{limit}: out of range"
    z, caches = x, []
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for layer in range(config.n_layers):
            try:
                z_next, term, cache = _layer_forward(z, params, layer, config)
            except FloatingPointError as exc:
                return "loss", layer, None, f"{exc} in its forward pass"
            far = out_of_range_rows(z_next)
            if far.any():
                row = first(far)
                return "loss", layer, row, f"its output leaves +-{limit} for {name(row)}"
            if not np.all(np.isfinite(term)):
                row = first(~np.isfinite(term))
                return "loss", layer, row, \
                    f"its log-likelihood term is not finite for {name(row)}"
            z = z_next
            caches.append(cache)
        try:
            log_base, base_cache = normal_logpdf_forward(z)
        except FloatingPointError as exc:
            return "loss", None, None, f"{exc} in the base density"
        if not np.all(np.isfinite(log_base)):
            row = first(~np.isfinite(log_base))
            return "loss", None, row, f"the base density is not finite for {name(row)}"
        backward = rad_coupling_backward if config.kind == "rad" else affine_coupling_backward
        n = x.shape[0]
        dlog = np.full(n, 1.0 / n)
        dz = normal_logpdf_backward(dlog, base_cache)
        for layer in reversed(range(config.n_layers)):
            try:
                dz, grads = backward(dz, dlog, caches[layer])
            except FloatingPointError as exc:
                return "gradient", layer, None, f"{exc} in its backward pass"
            if not (np.all(np.isfinite(dz))
                    and all(np.all(np.isfinite(g)) for net in grads.values()
                            for g in net.values())):
                return "gradient", layer, None, "its gradient is not finite"
    return None, None, None, ""
