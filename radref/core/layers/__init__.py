"""Coupling layers (paper §4.2, Fig. 10): one contract, one module per kind.

A *layer kind* is a module (or any object) with these six functions; the
flow (:mod:`radref.core.flow`) calls them only through this contract, so a
new kind is one new module added to :data:`LAYER_KINDS`, and no loop changes.
Shapes: ``n`` rows, ``d`` columns, ``d_B`` transformed columns
(:mod:`radref.core.layers.masks`: layer ``layer`` transforms the columns
``columns(d, layer).transformed`` and passes the others through).

``init(dim, layer, hidden, gate_hidden, out_std=0.01, random_state=None) -> params``
    Random parameters: a dict ``{net: {name: ndarray}}`` (e.g. ``{"cond":
    mlp_params}``); the flow stores them flat as ``"<layer>.<net>.<name>"``.
    A kind may ignore ``gate_hidden``.  Draws only from
    ``np.random.default_rng(random_state)``.
``forward(x, params, layer) -> (z, k, term, cache)``
    ``x``, ``z`` of shape ``(n, d)``; ``k`` the discrete latents, int of shape
    ``(n, d_B)``, or ``None`` for a kind without them; ``term`` of shape
    ``(n,)``, the layer's contribution to ``log p(x)`` (eq. 15: ``log|det|``,
    plus ``log p(k | z)`` for Rad), as nflows' ``forward -> (outputs,
    logabsdet)``; ``cache`` everything ``backward`` needs, nothing more (the
    CS231n forward/backward-with-cache pattern).  ``x`` is not modified.
``backward(dz, dterm, cache) -> (dx, grads)``
    Upstream gradients on ``z`` (``(n, d)``) and ``term`` (``(n,)``) to the
    gradient on ``x`` (``(n, d)``) and on every parameter (``grads`` shaped
    like ``params``).  ``dz`` and ``dterm`` are not modified.
``inverse(z, k, params, layer) -> x``
    The exact inverse of ``forward`` given the discrete latents ``k`` (shape
    ``(n, d_B)``; ignored by a kind without them).
``sample(z, uniforms, params, layer) -> (x, k)``
    The exact sampling step: draw ``k ~ p(k | z)`` from ``uniforms`` (shape
    ``(n, d_B)``, on [0, 1)) and invert; a kind without discrete latents
    ignores ``uniforms`` and returns ``(inverse(z, None, ...), None)``.
``folded(cache) -> mask``
    Bool ``(n, d_B)``: where the input of ``forward`` lies in a region the
    layer folds (several preimages: ``k`` is needed to invert), ``None`` for
    a kind without discrete latents (used for figures,
    :func:`radref.core.flow.flow_trajectory`).

Besides the six functions, a kind module defines the constants the layers
above the core read, so that no code outside this package compares a
kind's name:

``NAME``
    Its key in :data:`LAYER_KINDS` (``FlowConfig.kind``).
``MODEL_NAME``
    The model's name on the command line and in ``radref reproduce``'s runs
    (``"rad"``, ``"realnvp"``); :func:`layer_kind` accepts it as an alias.
``DISPLAY_NAME``
    For people (``"Real NVP"``).
``MODEL_CLASS``
    The name of its estimator class (:mod:`radref.user.estimators`), which a
    checkpoint records as its ``model``.
``THREAD_CHUNK_ROWS``
    Rows per chunk when several threads evaluate the kind (``n_jobs``), a
    multiple of :data:`radref.core.chunks.CHUNK_ROWS` chosen by measurement
    (:mod:`radref.core.chunks`).
``HAS_DISCRETE_LATENTS``, ``N_BRANCHES``
    Whether ``forward`` returns discrete latents ``k``, and how many values
    (``0 .. N_BRANCHES - 1``) they take.
``DEFAULT_ARCHITECTURE``
    The architecture hyperparameters its models take, with their defaults
    (``n_layers``, ``hidden``, ``out_std``, and ``gate_hidden`` for a kind
    with a gating network; :mod:`radref.training.hyperparameters` checks them).
``N_FEATURES``, ``OUTPUT_LOG_SCALE``
    Conditioner outputs per transformed dimension, and which of them is the
    log-scale of the layer's output (test cases set it to reach the range's edge).

Range (docs/errors.md, "Numerical extremes"): the flow passes ``forward``
only rows within ``+-radref.core.numerics.RANGE`` (it screens the others,
:func:`radref.core.flow.screen_out_of_range`).  An output beyond float64 must
come out as ``+-inf`` without a floating-point warning (the flow then reports
its row), never as NaN, and ``term`` must stay finite.
"""
from radref.core.layers import affine, rad
from radref.core.layers.masks import Columns, columns, split, sum_over_transformed

#: Layer kind name (``FlowConfig.kind``) -> the module implementing the contract.
#: The one place where a kind is registered.
LAYER_KINDS = {kind.NAME: kind for kind in (rad, affine)}
#: The models' names (``MODEL_NAME``) -> their kinds, in registration order.
MODEL_KINDS = {kind.MODEL_NAME: kind for kind in LAYER_KINDS.values()}

__all__ = ["LAYER_KINDS", "MODEL_KINDS", "layer_kind", "split", "columns", "Columns",
           "sum_over_transformed", "rad", "affine"]


def layer_kind(kind):
    """The module registered under ``kind`` in :data:`LAYER_KINDS`, or whose
    model is named ``kind`` (:data:`MODEL_KINDS`: ``"realnvp"`` is ``"affine"``).

    Raises
    ------
    ValueError
        If no kind of that name is registered (the message lists the known ones).
    """
    if kind in LAYER_KINDS:
        return LAYER_KINDS[kind]
    if kind in MODEL_KINDS:
        return MODEL_KINDS[kind]
    raise ValueError(f"unknown layer kind {kind!r}; registered: {sorted(LAYER_KINDS)} "
                     f"(models {sorted(MODEL_KINDS)})")
