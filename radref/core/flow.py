"""A flow: a stack of coupling layers with alternating masks and a standard
normal base (paper §4.2; notes §4-5).

``log p(x) = log N(z_L; 0, I) + sum_l term_l``  (eq. 15 summed over layers), with
``z_0 = x`` and ``z_{l+1}, k_l, term_l = layer_l(z_l)``.

Parameters are one flat dict ``{"<layer>.<net>.<name>": array}`` (for example
``"0.cond.W1"``, ``"3.gate.b2"``), convenient for Adam, checkpoints and ports;
:func:`layer_params` gives the nested view a layer function takes (same arrays).

Discrete latents are returned as one int array ``k`` of shape ``(n, L, d)``:
``k[:, l, j]`` is the branch (0, 1, 2) of column ``j`` in layer ``l`` and ``-1``
where layer ``l`` does not transform column ``j`` (conditioning columns, and
every column of an affine layer).

Out-of-range rows (docs/errors.md, "Numerical extremes"): a row whose input, or
whose value after some layer, has an entry beyond ``+-numerics.RANGE`` (1e120)
or not finite (e.g. ``inf`` from an outer piece of slope ``e^1000``) is not
evaluated further.  :func:`flow_forward` gives it ``log_px = -inf``, ``z = inf``
and ``k = -1`` (and ``cache.out_of_range`` marks it); its layers are evaluated
at a stand-in ``z = 0`` so that every cache stays finite, and
:func:`flow_backward` gives it a zero gradient.  :func:`flow_inverse` and the
samplers give such a row ``x = inf`` (and ``k = -1`` for the layers not
reached).  Rows in range are computed as if the others were absent (to
rounding: BLAS may sum a matrix product in another order for another number
of rows).
"""
import numbers
from typing import NamedTuple

import numpy as np

from radref.core.base import normal_logpdf_backward, normal_logpdf_forward
from radref.core.coupling import (columns, affine_coupling_backward, affine_coupling_forward,
                             affine_coupling_init, affine_coupling_inverse,
                             rad_coupling_backward, rad_coupling_forward,
                             rad_coupling_init, rad_coupling_inverse,
                             rad_coupling_sample, split)
from radref.core.numerics import all_in_range, out_of_range_rows, zero_rows

KINDS = ("rad", "affine")


class FlowConfig(NamedTuple):
    """Architecture of a flow.

    kind : "rad" or "affine"; dim : data dimension d >= 2; n_layers : L >= 1;
    hidden : conditioner hidden units; gate_hidden : gating-net hidden units (Rad).
    """

    kind: str
    dim: int
    n_layers: int
    hidden: int
    gate_hidden: int = 0


class FlowCache(NamedTuple):
    config: FlowConfig
    layer_caches: list
    base_cache: np.ndarray
    out_of_range: np.ndarray = None  # bool (n,): rows not evaluated (module docstring)


def flow_init(config, out_std=0.01, random_state=None):
    """Random parameters of a flow, as a flat dict (see module docstring)."""
    rng = np.random.default_rng(random_state)
    params = {}
    for layer in range(config.n_layers):
        if config.kind == "rad":
            nets = rad_coupling_init(config.dim, layer, config.hidden, config.gate_hidden,
                                     out_std=out_std, random_state=rng)
        else:
            nets = affine_coupling_init(config.dim, layer, config.hidden,
                                        out_std=out_std, random_state=rng)
        for net, net_params in nets.items():
            for name, value in net_params.items():
                params[f"{layer}.{net}.{name}"] = value
    return params


def layer_params(params, layer):
    """Nested view ``{"cond": {...}, "gate": {...}}`` of one layer's parameters."""
    nested = {}
    prefix = f"{layer}."
    for key, value in params.items():
        if key.startswith(prefix):
            _, net, name = key.split(".")
            nested.setdefault(net, {})[name] = value
    return nested


def _all_layer_params(params, n_layers):
    """``[layer_params(params, l) for l in range(n_layers)]`` in one pass over the keys."""
    nested = [{} for _ in range(n_layers)]
    for key, value in params.items():
        layer, net, name = key.split(".")
        if int(layer) < n_layers:
            nested[int(layer)].setdefault(net, {})[name] = value
    return nested


def _flatten(layer, nested):
    return {f"{layer}.{net}.{name}": value
            for net, net_grads in nested.items() for name, value in net_grads.items()}


def flow_forward(x, params, config):
    """Exact log-density and inference ``x -> (z, k)``.

    Parameters
    ----------
    x : ndarray of float64, shape (n, d)
    params : dict
        Flat parameter dict from :func:`flow_init`.
    config : FlowConfig

    Returns
    -------
    log_px : ndarray, shape (n,)
    z : ndarray, shape (n, d)
        Latent ``z_L``.
    k : ndarray of int, shape (n, L, d)
    cache : FlowCache
    """
    return _forward(x, params, config, keep_caches=True)


def _forward(x, params, config, keep_caches):
    """:func:`flow_forward`; with ``keep_caches=False`` each layer's cache is
    dropped as soon as the next layer runs (``cache.layer_caches`` is then
    empty), so a deep flow's intermediate arrays need not fit in memory, or in
    the CPU cache, at once."""
    n = x.shape[0]
    k = np.full((n, config.n_layers, config.dim), -1, dtype=np.intp)
    log_px = np.zeros(n)
    layer_caches = []
    out = out_of_range_rows(x)
    any_out = bool(out.any())
    z = zero_rows(x, out) if any_out else x
    for layer, nested in enumerate(_all_layer_params(params, config.n_layers)):
        while True:
            if config.kind == "rad":
                z_next, k_layer, term, layer_cache = rad_coupling_forward(z, nested, layer)
                far = layer_cache.out_of_range  # the layer has checked its output
            else:
                z_next, term, layer_cache = affine_coupling_forward(z, nested, layer)
                far = None if all_in_range(z_next) else out_of_range_rows(z_next)
            if far is None or not (far & ~out).any():
                break
            # Recompute the layer with the new out-of-range rows at the stand-in,
            # so that its cache (read by flow_backward) holds no infinities.
            out = out | far
            any_out = True
            z = zero_rows(z, out)
        if config.kind == "rad":
            k[:, layer, columns(config.dim, layer).b] = k_layer
        z = zero_rows(z_next, out) if any_out else z_next
        log_px += term
        if keep_caches:
            layer_caches.append(layer_cache)
    log_base, base_cache = normal_logpdf_forward(z)
    log_px = log_px + log_base
    if any_out:
        log_px[out] = -np.inf
        z = z.copy()
        z[out] = np.inf
        k[out] = -1
    return log_px, z, k, FlowCache(config, layer_caches, base_cache, out)


#: Rows per chunk in :func:`flow_log_density`: the arrays of one chunk stay
#: in the CPU cache (measured in validation/benchmark.py; 2,000-8,000 rows are
#: equally fast for the paper's models), and memory stays bounded in ``n``.
CHUNK_ROWS = 4096


def flow_log_density(x, params, config, chunk_rows=CHUNK_ROWS):
    """``log p(x)`` alone: ``flow_forward(x, params, config)[0]``, evaluated
    ``chunk_rows`` rows at a time.

    Rows are independent, so the result does not depend on the chunking;
    evaluating in chunks keeps the working set in the CPU cache (time per point
    flat in ``n``) and the memory to ``O(chunk_rows)`` besides the output (no
    backward caches are kept, not even one chunk's: memory does not grow with
    the depth either).

    Parameters
    ----------
    x : ndarray of float64, shape (n, d)
    params : dict
    config : FlowConfig
    chunk_rows : int
        Rows per chunk, ``>= 1``.

    Returns
    -------
    log_px : ndarray, shape (n,)
    """
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, numbers.Integral) \
            or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    n = x.shape[0]
    if n <= chunk_rows:
        return _forward(x, params, config, keep_caches=False)[0]
    log_px = np.empty(n)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        log_px[start:stop] = _forward(x[start:stop], params, config, keep_caches=False)[0]
    return log_px


def flow_backward(dlog_px, cache):
    """Backward of :func:`flow_forward` with respect to ``x`` and every parameter.

    Parameters
    ----------
    dlog_px : ndarray, shape (n,)
        Upstream gradient on ``log p(x)`` (for the mean log-likelihood: ``1/n``).

    Returns
    -------
    dx : ndarray, shape (n, d)
    grads : dict
        Flat, keyed like the parameters.
    """
    backward = rad_coupling_backward if cache.config.kind == "rad" else affine_coupling_backward
    if cache.out_of_range is not None and cache.out_of_range.any():
        dlog_px = np.where(cache.out_of_range, 0.0, dlog_px)  # their gradient is zero
    dz = normal_logpdf_backward(dlog_px, cache.base_cache)
    grads = {}
    for layer in reversed(range(cache.config.n_layers)):
        dz, layer_grads = backward(dz, dlog_px, cache.layer_caches[layer])
        grads.update(_flatten(layer, layer_grads))
    return dz, grads


def flow_inverse(z, k, params, config):
    """Exact inverse ``(z, k) -> x``; ``k`` of shape ``(n, L, d)`` as returned by
    :func:`flow_forward` (ignored for affine flows).  Out-of-range rows (module
    docstring) give ``x = inf``."""
    if z.shape[0] > CHUNK_ROWS:  # rows are independent: bounded memory, warm caches
        return np.concatenate([flow_inverse(z[i:i + CHUNK_ROWS], k[i:i + CHUNK_ROWS], params,
                                            config) for i in range(0, z.shape[0], CHUNK_ROWS)])

    def rad_step(x_in, rows, layer, nested, cols_b):
        return rad_coupling_inverse(x_in, k[:, layer, cols_b][rows], nested, layer)

    return _invert_layers(z, params, config, rad_step)[0]


def flow_sample_from_noise(normals, uniforms, params, config):
    """Exact sampling from given noise (notes §5): ``z_L = normals``; from the top
    layer down, draw each ``k`` by inverse CDF from ``uniforms`` and invert.

    Parameters
    ----------
    normals : ndarray, shape (n, d)
        Standard normal draws (the latent ``z_L``).
    uniforms : ndarray, shape (n, L, d)
        Uniform draws on [0, 1); entry ``[:, l, j]`` is used only where layer
        ``l`` transforms column ``j`` of a Rad flow.

    Returns
    -------
    x : ndarray, shape (n, d)
    k : ndarray of int, shape (n, L, d)
    """
    if normals.shape[0] > CHUNK_ROWS:  # rows are independent: bounded memory, warm caches
        parts = [flow_sample_from_noise(normals[i:i + CHUNK_ROWS], uniforms[i:i + CHUNK_ROWS],
                                        params, config)
                 for i in range(0, normals.shape[0], CHUNK_ROWS)]
        return (np.concatenate([x for x, _ in parts]), np.concatenate([k for _, k in parts]))
    k = np.full((normals.shape[0], config.n_layers, config.dim), -1, dtype=np.intp)

    def rad_step(x_in, rows, layer, nested, cols_b):
        x_new, k_layer = rad_coupling_sample(x_in, uniforms[:, layer, cols_b][rows],
                                             nested, layer)
        k[:, layer, cols_b][rows] = k_layer  # cols_b is a slice: a view of k
        return x_new

    x, out = _invert_layers(normals, params, config, rad_step)
    k[out] = -1
    return x, k


def _invert_layers(z, params, config, rad_step):
    """Run the layers backwards from ``z`` (shared by :func:`flow_inverse` and
    :func:`flow_sample_from_noise`); a Rad layer is inverted by
    ``rad_step(x_in, rows, layer, nested_params, cols_b) -> x``, where ``rows``
    selects the rows in range (a bool mask, or ``slice(None)`` when all are)
    and ``cols_b`` is the slice of the transformed columns.  Only the rows in
    range are evaluated; returns ``(x, out_of_range_rows)``."""
    x = z
    out = out_of_range_rows(z)
    all_nested = _all_layer_params(params, config.n_layers)
    for layer in reversed(range(config.n_layers)):
        nested = all_nested[layer]
        rows = ~out if np.any(out) else slice(None)
        x_in = x[rows]
        if config.kind == "rad":
            x_new = rad_step(x_in, rows, layer, nested, columns(config.dim, layer).b)
        else:
            x_new = affine_coupling_inverse(x_in, nested, layer)
        x, out = _merge_rows(x, x_new, out)
    if np.any(out):
        x = x.copy()
        x[out] = np.inf
    return x, out


def _merge_rows(x, x_new, out):
    """Put ``x_new`` (the rows of ``x`` not in ``out``) back; mark new out-of-range rows."""
    if np.any(out):
        merged = x.copy()
        merged[~out] = x_new
        x_new = merged
    return x_new, out | out_of_range_rows(x_new)


def flow_sample(n, params, config, random_state=None):
    """Draw ``n`` exact samples; returns ``(x, z, k)``.  The normals are drawn
    before the uniforms from one ``np.random.default_rng(random_state)``."""
    rng = np.random.default_rng(random_state)
    normals = rng.standard_normal((n, config.dim))
    uniforms = rng.random((n, config.n_layers, config.dim))
    x, k = flow_sample_from_noise(normals, uniforms, params, config)
    return x, normals, k


def flow_trajectory(x, params, config):
    """Every intermediate representation of :func:`flow_forward` (for figures).

    Returns
    -------
    zs : list of ndarray, shape (n, d)
        ``zs[0] = x`` and ``zs[l + 1]`` the output of layer ``l``.
    folded : list of ndarray of bool, shape (n, d) or None
        For a Rad layer ``l``: ``True`` where the column is transformed and its
        normalized input lies in the folded interval ``|u| <= 1`` (where ``k``
        is needed to invert); ``None`` for an affine layer.
    k : ndarray of int, shape (n, L, d)
        As returned by :func:`flow_forward`.
    """
    zs, folded = [x], []
    k = np.full((x.shape[0], config.n_layers, config.dim), -1, dtype=np.intp)
    for layer in range(config.n_layers):
        nested = layer_params(params, layer)
        if config.kind == "rad":
            cols_b = split(config.dim, layer)[1]
            z, k[:, layer, cols_b], _, cache = rad_coupling_forward(zs[-1], nested, layer)
            mask = np.zeros(x.shape, dtype=bool)
            mask[:, cols_b] = np.abs(cache.u) <= 1.0
            folded.append(mask)
        else:
            z, _, _ = affine_coupling_forward(zs[-1], nested, layer)
            folded.append(None)
        zs.append(z)
    return zs, folded, k
