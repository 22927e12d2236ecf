"""A flow: a stack of coupling layers with alternating masks and a standard
normal base (paper §4.2; notes §4-5).

``log p(x) = log N(z_L; 0, I) + sum_l term_l``  (eq. 15 summed over layers), with
``z_0 = x`` and ``z_{l+1}, k_l, term_l = layer_l(z_l)``.

Every layer is reached through the coupling-layer contract of
:mod:`radref.core.layers` (``FlowConfig.kind`` names the registered kind), in
one loop: :func:`flow_layers` (data to latent) is what the log-density,
inference, trajectories and the diagnostics iterate over, and
:func:`flow_layers_backward` is its reverse sweep.  Inverse and sampling
(latent to data) share :func:`_invert_layers`.  Rows are independent, so
the log-density, inference, the inverse and sampling evaluate large inputs a
chunk of rows at a time, in ``n_jobs`` threads if asked
(:mod:`radref.core.chunks`; the result does not depend on ``n_jobs``).

Parameters are one flat dict ``{"<layer>.<net>.<name>": array}`` (for example
``"0.cond.W1"``, ``"3.gate.b2"``), convenient for Adam, checkpoints and ports;
:func:`layer_params` gives the nested view a layer function takes (same arrays).
:func:`flatten_params` and :func:`nest_params` are the one conversion between
the two forms (the golden vectors use them too).

Discrete latents are returned as one int array ``k`` of shape ``(n, L, d)``:
``k[:, l, j]`` is the branch (0, 1, 2) of column ``j`` in layer ``l`` and ``-1``
where layer ``l`` does not transform column ``j`` (conditioning columns, and
every column of a layer kind without discrete latents, e.g. affine).

Out-of-range rows (docs/errors.md, "Numerical extremes"): a row whose input, or
whose value after some layer, has an entry beyond ``+-numerics.RANGE`` (1e120)
or not finite (e.g. ``inf`` from an outer piece of slope ``e^1000``) is not
evaluated further (:func:`screen_out_of_range`).  :func:`flow_forward` gives it
``log_px = -inf``, ``z = inf`` and ``k = -1`` (and ``cache.out_of_range``
marks it); its layers are evaluated at a stand-in ``z = 0`` so that every
cache stays finite, and :func:`flow_backward` gives it a zero gradient.
:func:`flow_inverse` and the samplers give such a row ``x = inf`` (and
``k = -1``).  Rows in range are computed as if the others were absent (to
rounding: BLAS may sum a matrix product in another order for another number
of rows).
"""
from typing import NamedTuple

import numpy as np

from radref.checks import effective_n_jobs
from radref.core.base import normal_logpdf_backward, normal_logpdf_forward
from radref.core.chunks import CHUNK_ROWS, map_row_chunks, row_chunks  # noqa: F401 (re-exported)
from radref.core.layers import columns, layer_kind
from radref.core.numerics import all_in_range, out_of_range_rows, zero_rows


class FlowConfig(NamedTuple):
    """Architecture of a flow.

    kind : a layer kind of :data:`radref.core.layers.LAYER_KINDS` ("rad" or
    "affine"); dim : data dimension d >= 2; n_layers : L >= 1; hidden :
    conditioner hidden units; gate_hidden : gating-net hidden units (Rad).
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
    out_of_range: np.ndarray  # bool (n,): rows not evaluated (module docstring)


class LayerRecord(NamedTuple):
    """One layer of :func:`flow_layers`.  Rows out of range have ``z = inf``,
    ``k = -1`` and ``term = -inf``."""

    layer: int
    z: np.ndarray  # the layer's output z_{l+1}, (n, d)
    k: object  # int (n, d_B), or None for a kind without discrete latents
    term: np.ndarray  # (n,), the layer's term of eq. 15
    cache: tuple  # the layer's cache (evaluated at the stand-in for rows out of range)
    out_of_range: np.ndarray  # bool (n,): rows out of range after this layer (input included)


# ------------------------------------------------------------------ parameters

def flow_init(config, out_std=0.01, random_state=None):
    """Random parameters of a flow, as a flat dict (see module docstring); the
    layers draw, in order, from one ``np.random.default_rng(random_state)``."""
    kind = layer_kind(config.kind)
    rng = np.random.default_rng(random_state)
    params = {}
    for layer in range(config.n_layers):
        nets = kind.init(config.dim, layer, config.hidden, config.gate_hidden,
                         out_std=out_std, random_state=rng)
        params.update(_flatten(layer, nets))
    return params


def flatten_params(nested, prefix=""):
    """``{net: {name: array}}`` -> ``{"<prefix><net>.<name>": array}`` (same
    arrays); a flow's parameters use ``prefix = "<layer>."``."""
    return {f"{prefix}{net}.{name}": value
            for net, net_values in nested.items() for name, value in net_values.items()}


def nest_params(flat, prefix=""):
    """The inverse of :func:`flatten_params`: the entries of ``flat`` whose key
    starts with ``prefix``, as ``{net: {name: array}}`` (same arrays)."""
    nested = {}
    for key, value in flat.items():
        if key.startswith(prefix):
            net, name = key[len(prefix):].split(".")
            nested.setdefault(net, {})[name] = value
    return nested


def layer_params(params, layer):
    """Nested view ``{"cond": {...}, "gate": {...}}`` of one layer's parameters."""
    return nest_params(params, f"{layer}.")


def _all_layer_params(params, n_layers):
    """``[layer_params(params, l) for l in range(n_layers)]`` in one pass over the keys."""
    nested = [{} for _ in range(n_layers)]
    for key, value in params.items():
        layer, net, name = key.split(".")
        if int(layer) < n_layers:
            nested[int(layer)].setdefault(net, {})[name] = value
    return nested


def _flatten(layer, nested):
    return flatten_params(nested, f"{layer}.")


# ------------------------------------------------------------- the layer loop

def screen_out_of_range(forward, z, params, layer, outside):
    """One layer evaluated on the rows in range: the screening step of the loop.

    Rows in ``outside`` are evaluated at the stand-in ``z = 0``, so that the
    layer's cache stays finite.  If the output of a row in range leaves
    ``+-RANGE`` (or is not finite), that row joins ``outside`` and the layer is
    evaluated again with it at the stand-in, until no new row leaves (in
    practice at most twice: rows are independent, so the second evaluation
    changes the rows in range by rounding at most).

    Parameters
    ----------
    forward : callable
        The ``forward(x, params, layer)`` of a layer kind.
    z : ndarray, shape (n, d)
        The layer's input (rows in ``outside`` are not read).
    params : dict
        The layer's nested parameters.
    layer : int
    outside : ndarray of bool, shape (n,)
        Rows already out of range.

    Returns
    -------
    z_next, k, term, cache
        As ``forward`` returns them, with ``z_next = inf``, ``k = -1`` and
        ``term = -inf`` in the rows out of range.
    outside : ndarray of bool, shape (n,)
        ``outside`` with the rows that left the range in this layer.
    """
    while True:
        z_next, k, term, cache = forward(zero_rows(z, outside), params, layer)
        if all_in_range(z_next):  # the usual case: no row left the range
            break
        leaving = out_of_range_rows(z_next) & ~outside
        if not leaving.any():
            break
        outside = outside | leaving
    if outside.any():
        z_next = np.where(outside[:, None], np.inf, z_next)
        k = None if k is None else np.where(outside[:, None], -1, k)
        term = np.where(outside, -np.inf, term)
    return z_next, k, term, cache, outside


def flow_layers(x, params, config):
    """The layer loop of the flow (data to latent), one :class:`LayerRecord` per layer.

    For ``l = 0, ..., L-1``: ``(z_{l+1}, k_l, term_l) = layer_l(z_l)`` with
    ``z_0 = x``, each layer evaluated by :func:`screen_out_of_range`.  The
    log-density (:func:`flow_forward`, :func:`flow_log_density`), the
    trajectory (:func:`flow_trajectory`) and the diagnostics
    (:func:`radref.training.diagnostics.locate_non_finite`) all iterate over
    it; each keeps what it needs.

    A generator rather than a per-layer hook: the caller's loop body is plain
    code with its own state (a list of caches, a running sum), it can stop
    at the first bad layer (``return`` inside the ``for``), and an exception
    raised by a layer surfaces in the caller's ``for`` statement, where the
    caller knows which layer it was waiting for.  A layer's record (and its
    cache) can be dropped as soon as the next one arrives.

    Parameters
    ----------
    x : ndarray of float64, shape (n, d)
    params : dict
        Flat parameter dict (:func:`flow_init`).
    config : FlowConfig

    Yields
    ------
    LayerRecord
        ``(layer, z, k, term, cache, out_of_range)`` of layers ``0, ..., L-1``.
    """
    kind = layer_kind(config.kind)
    z, outside = x, out_of_range_rows(x)
    for layer, nested in enumerate(_all_layer_params(params, config.n_layers)):
        z, k, term, cache, outside = screen_out_of_range(kind.forward, z, nested, layer, outside)
        yield LayerRecord(layer, z, k, term, cache, outside)


def flow_layers_backward(dlog_px, cache):
    """The reverse sweep of :func:`flow_layers` (derivations.md §9).

    Because ``log_px`` is a plain sum, every layer's ``term`` receives
    ``dlog_px`` itself, and ``z_L`` the base density's gradient.  Rows out of
    range receive zero.

    Parameters
    ----------
    dlog_px : ndarray, shape (n,)
        Upstream gradient on ``log p(x)``.
    cache : FlowCache
        From :func:`flow_forward`.

    Yields
    ------
    layer : int
        ``L-1, ..., 0``.
    dz : ndarray, shape (n, d)
        Gradient on the layer's input ``z_l`` (for ``layer = 0``: on ``x``).
    grads : dict
        The layer's parameter gradients, nested like :func:`layer_params`.
    """
    kind = layer_kind(cache.config.kind)
    dlog_px = np.where(cache.out_of_range, 0.0, dlog_px)
    dz = normal_logpdf_backward(dlog_px, cache.base_cache)
    for layer in reversed(range(cache.config.n_layers)):
        dz, grads = kind.backward(dz, dlog_px, cache.layer_caches[layer])
        yield layer, dz, grads


def _k_array(n, config):
    """``k`` of shape ``(n, L, d)``, ``-1`` everywhere (no discrete latent yet)."""
    return np.full((n, config.n_layers, config.dim), -1, dtype=np.intp)


def _store_k(k, record, config):
    """Write a layer's ``k`` (shape ``(n, d_B)``) into the flow's ``k`` array."""
    if record.k is not None:
        k[:, record.layer, columns(config.dim, record.layer).transformed] = record.k


# ------------------------------------------------------- log-density, inference

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
    k, log_px, layer_caches = _k_array(len(x), config), np.zeros(len(x)), []
    for record in flow_layers(x, params, config):
        log_px += record.term
        _store_k(k, record, config)
        layer_caches.append(record.cache)
    z, outside = record.z, record.out_of_range
    log_base, base_cache = normal_logpdf_forward(zero_rows(z, outside))  # finite cache
    if outside.any():  # rows that left the range after some layer wrote their k
        k[outside] = -1
    return log_px + log_base, z, k, FlowCache(config, layer_caches, base_cache, outside)


def flow_backward(dlog_px, cache):
    """Backward of :func:`flow_forward` with respect to ``x`` and every parameter.

    Parameters
    ----------
    dlog_px : ndarray, shape (n,)
        Upstream gradient on ``log p(x)`` (for the mean log-likelihood: ``1/n``).
    cache : FlowCache

    Returns
    -------
    dx : ndarray, shape (n, d)
    grads : dict
        Flat, keyed like the parameters.
    """
    grads = {}
    for layer, dz, layer_grads in flow_layers_backward(dlog_px, cache):
        grads.update(_flatten(layer, layer_grads))
    return dz, grads


def _log_density(x, params, config):
    """``flow_forward(x, params, config)[0]``, keeping no cache."""
    log_px = np.zeros(len(x))
    for record in flow_layers(x, params, config):
        log_px += record.term
    return log_px + normal_logpdf_forward(zero_rows(record.z, record.out_of_range))[0]


def _infer(x, params, config):
    """``flow_forward(x, params, config)[1:3]``, keeping no cache."""
    k = _k_array(len(x), config)
    for record in flow_layers(x, params, config):
        _store_k(k, record, config)
    k[record.out_of_range] = -1
    return record.z, k


def flow_trajectory(x, params, config):
    """Every intermediate representation of :func:`flow_forward` (for figures).

    Returns
    -------
    zs : list of ndarray, shape (n, d)
        ``zs[0] = x`` and ``zs[l + 1]`` the output of layer ``l`` (``inf`` in
        the rows out of range).
    folded : list of ndarray of bool, shape (n, d), or None
        For a Rad layer ``l``: ``True`` where the column is transformed and its
        normalized input lies in the folded interval ``|u| <= 1`` (where ``k``
        is needed to invert); ``None`` for a kind without discrete latents.
    k : ndarray of int, shape (n, L, d)
        As returned by :func:`flow_forward`.
    """
    kind = layer_kind(config.kind)
    zs, folded, k = [x], [], _k_array(len(x), config)
    for record in flow_layers(x, params, config):
        zs.append(record.z)
        _store_k(k, record, config)
        layer_folded = kind.folded(record.cache)
        if layer_folded is not None:
            mask = np.zeros(x.shape, dtype=bool)
            mask[:, columns(config.dim, record.layer).transformed] = layer_folded
            layer_folded = mask & ~record.out_of_range[:, None]
        folded.append(layer_folded)
    k[record.out_of_range] = -1
    return zs, folded, k


# ------------------------------------------------------------ inverse, sampling

def _invert_layers(z, layer_inputs, params, config, invert):
    """The layer loop of the inverse direction (latent to data), shared by
    :func:`flow_inverse` and :func:`flow_sample_from_noise`.

    From the top layer down, ``invert(z_rows, inputs, params, layer) -> (x_rows,
    k_rows)`` (a kind's ``sample``, or its ``inverse`` with ``k_rows = None``)
    is applied to the rows still in range; ``inputs`` are the entries of
    ``layer_inputs`` (shape ``(n, L, d)``: the discrete latents or the
    uniforms) at the layer's transformed columns.  Returns ``(x, k)``, with
    ``x = inf`` and ``k = -1`` in the rows out of range.
    """
    x, outside, k = z, out_of_range_rows(z), _k_array(len(z), config)
    all_nested = _all_layer_params(params, config.n_layers)
    for layer in reversed(range(config.n_layers)):
        transformed = columns(config.dim, layer).transformed
        rows = ~outside if outside.any() else slice(None)  # no copy when every row is in range
        x_rows, k_rows = invert(x[rows], layer_inputs[:, layer, transformed][rows],
                                all_nested[layer], layer)
        if k_rows is not None:
            k[:, layer, transformed][rows] = k_rows  # a view of k: written in place
        x, outside = _merge_rows(x, x_rows, outside)
    k[outside] = -1
    return np.where(outside[:, None], np.inf, x) if outside.any() else x, k


def _merge_rows(x, x_rows, outside):
    """Put ``x_rows`` (the rows of ``x`` not in ``outside``) back; mark new out-of-range rows."""
    if outside.any():
        merged = x.copy()
        merged[~outside] = x_rows
        x_rows = merged
    return x_rows, outside | out_of_range_rows(x_rows)


def flow_inverse(z, k, params, config, n_jobs=None, chunk_rows=None):
    """Exact inverse ``(z, k) -> x``; ``k`` of shape ``(n, L, d)`` as returned by
    :func:`flow_forward` (its entries are ignored where a layer has no discrete
    latent: conditioning columns, affine layers).  Out-of-range rows (module
    docstring) give ``x = inf``.  More than :data:`CHUNK_ROWS` rows are
    inverted chunk by chunk, in ``n_jobs`` threads (:func:`map_row_chunks`;
    the same result for every ``n_jobs``; ``chunk_rows`` as in
    :func:`flow_log_density`)."""
    inverse = layer_kind(config.kind).inverse

    def invert(z_rows, k_rows, nested, layer):
        return inverse(z_rows, k_rows, nested, layer), None

    return map_row_chunks(lambda z, k: _invert_layers(z, k, params, config, invert)[:1],
                          (z, k), _chunk_rows(config, chunk_rows, n_jobs), n_jobs)[0]


def flow_sample_from_noise(normals, uniforms, params, config, n_jobs=None, chunk_rows=None):
    """Exact sampling from given noise (notes §5): ``z_L = normals``; from the top
    layer down, draw each ``k`` by inverse CDF from ``uniforms`` and invert.
    More than :data:`CHUNK_ROWS` rows are sampled chunk by chunk, in ``n_jobs``
    threads (:func:`map_row_chunks`; the same result for every ``n_jobs``).

    Parameters
    ----------
    normals : ndarray, shape (n, d)
        Standard normal draws (the latent ``z_L``).
    uniforms : ndarray, shape (n, L, d)
        Uniform draws on [0, 1); entry ``[:, l, j]`` is used only where layer
        ``l`` transforms column ``j`` and has discrete latents.
    n_jobs : int or None
        Threads (scikit-learn's convention: ``None`` is 1, ``-1`` every CPU).
    chunk_rows : int or None
        Rows per chunk, as in :func:`flow_log_density`.

    Returns
    -------
    x : ndarray, shape (n, d)
    k : ndarray of int, shape (n, L, d)
    """
    sample = layer_kind(config.kind).sample
    return map_row_chunks(lambda z, u: _invert_layers(z, u, params, config, sample),
                          (normals, uniforms), _chunk_rows(config, chunk_rows, n_jobs), n_jobs)


def flow_sample(n, params, config, random_state=None, n_jobs=None):
    """Draw ``n`` exact samples; returns ``(x, z, k)``.  The normals are drawn
    before the uniforms from one ``np.random.default_rng(random_state)``, all
    of them before any layer runs, so the draw and the samples do not depend
    on ``n_jobs`` (threads for :func:`flow_sample_from_noise`)."""
    rng = np.random.default_rng(random_state)
    normals = rng.standard_normal((n, config.dim))
    uniforms = rng.random((n, config.n_layers, config.dim))
    x, k = flow_sample_from_noise(normals, uniforms, params, config, n_jobs)
    return x, normals, k


# ------------------------------------------------------- chunked evaluations

def _chunk_rows(config, chunk_rows, n_jobs):
    """Rows per chunk: ``chunk_rows`` if given; otherwise :data:`CHUNK_ROWS`
    for one thread and the kind's ``THREAD_CHUNK_ROWS`` for several (longer
    loops, so that the threads wait less for the GIL; the same bits either
    way, :mod:`radref.core.chunks`)."""
    if chunk_rows is not None:
        return chunk_rows
    if effective_n_jobs("n_jobs", n_jobs) == 1:
        return CHUNK_ROWS
    return layer_kind(config.kind).THREAD_CHUNK_ROWS


def flow_log_density(x, params, config, chunk_rows=None, n_jobs=None):
    """``log p(x)`` alone: ``flow_forward(x, params, config)[0]``, evaluated
    ``chunk_rows`` rows at a time, in ``n_jobs`` threads (:func:`map_row_chunks`).

    Rows are independent, so the result does not depend on the chunking
    (bit for bit for chunks of a multiple of :data:`CHUNK_ROWS` rows, to
    rounding for others: see :mod:`radref.core.chunks`) nor on ``n_jobs``
    (bit for bit); evaluating in chunks keeps the working set in the CPU
    cache (time per point flat in ``n``) and the memory to ``O(chunk_rows)``
    per thread besides the output (no backward caches are kept, not even one
    chunk's: memory does not grow with the depth either).

    Parameters
    ----------
    x : ndarray of float64, shape (n, d)
    params : dict
    config : FlowConfig
    chunk_rows : int or None
        Rows per chunk, ``>= 1``; ``None``: :data:`CHUNK_ROWS` in one thread,
        the layer kind's ``THREAD_CHUNK_ROWS`` in several.
    n_jobs : int or None
        Threads (scikit-learn's convention: ``None`` is 1, ``-1`` every CPU).

    Returns
    -------
    log_px : ndarray, shape (n,)
    """
    return map_row_chunks(lambda x: (_log_density(x, params, config),), (x,),
                          _chunk_rows(config, chunk_rows, n_jobs), n_jobs)[0]


def flow_infer(x, params, config, chunk_rows=None, n_jobs=None):
    """Exact inference ``x -> (z, k)`` alone: ``flow_forward(x, params,
    config)[1:3]``, evaluated as :func:`flow_log_density` is (chunks of
    ``chunk_rows`` rows in ``n_jobs`` threads, no backward caches kept).

    Returns
    -------
    z : ndarray, shape (n, d)
    k : ndarray of int, shape (n, L, d)
    """
    return map_row_chunks(lambda x: _infer(x, params, config), (x,),
                          _chunk_rows(config, chunk_rows, n_jobs), n_jobs)
