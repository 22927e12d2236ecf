"""Shared hypothesis strategies and numerical helpers for the radref tests.

Imported by the test modules as ``from helpers import ...`` (pytest puts this
directory on ``sys.path``, the test directory having no ``__init__.py``).
"""
import json

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from radref.core.flow import flow_forward, layer_params
from radref.reference.gradcheck import numerical_gradient, max_norm_relative_error

EPS = float(np.finfo(np.float64).eps)

#: seeds for ``np.random.default_rng`` drawn by hypothesis (shrinking a seed is
#: meaningless, but it makes every example reproducible from the failure report)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def logits(max_abs, min_rows=1, max_rows=8, rows=None):
    """Strategy for ``(n, 3)`` float64 arrays with entries in ``[-max_abs, max_abs]``.

    ``rows`` fixes ``n``; otherwise ``n`` is drawn from ``[min_rows, max_rows]``.
    """
    elements = st.floats(-max_abs, max_abs, allow_nan=False, allow_infinity=False)
    if rows is not None:
        return hnp.arrays(np.float64, (rows, 3), elements=elements)
    return st.integers(min_rows, max_rows).flatmap(
        lambda n: hnp.arrays(np.float64, (n, 3), elements=elements))


def logit_pairs(max_abs, min_rows=1, max_rows=8):
    """Strategy for ``(p_logits, q_logits)``, two ``(n, 3)`` arrays of the same ``n``."""
    return st.integers(min_rows, max_rows).flatmap(
        lambda n: st.tuples(logits(max_abs, rows=n), logits(max_abs, rows=n)))


#: largest relative error seen by :func:`check_gradient`, per label (for reports)
MAX_GRAD_ERROR = {}
#: other largest errors worth reporting (e.g. density normalization), per label
MAX_ERROR = {}


def record_error(label, err):
    """Keep the largest ``err`` seen under ``label`` in :data:`MAX_ERROR`."""
    MAX_ERROR[label] = max(MAX_ERROR.get(label, 0.0), float(err))


def check_gradient(forward_scalar, analytic, array, tol=1e-6, label=None, h=1e-6, atol=0.0):
    """Compare an analytic gradient with a centred finite difference.

    Parameters
    ----------
    forward_scalar : callable
        ``forward_scalar()`` returns the scalar ``L`` (a float); it must read
        ``array``, which :func:`radref.reference.gradcheck.numerical_gradient` perturbs in
        place (and restores).
    analytic : ndarray
        The analytic ``dL / d array``, same shape as ``array``.
    array : ndarray of float64
        The input being checked (must be a writable array, 0-d allowed).
    tol : float
        Bound on :func:`radref.reference.gradcheck.max_norm_relative_error`.
    label : str, optional
        Key under which the largest error is recorded in :data:`MAX_GRAD_ERROR`.
    h : float
        Finite-difference step.
    atol : float
        Optional absolute noise floor (default 0: pure relative criterion).  An
        entry passes if ``|analytic - numeric| <= tol (|analytic| + |numeric|)
        + atol``; for entries that cancel to ~0, where the relative error only
        measures finite-difference noise.  A sign error still fails unless the
        entry itself is below ``atol``.

    Returns
    -------
    err : float
        The relative error (asserted ``<= tol``, unless every entry is within
        the ``atol`` noise floor).
    """
    assert isinstance(array, np.ndarray) and array.dtype == np.float64
    analytic = np.asarray(analytic, dtype=np.float64)
    assert analytic.shape == array.shape, (analytic.shape, array.shape)
    numeric = numerical_gradient(lambda: float(forward_scalar()), array, h=h)
    err = max_norm_relative_error(analytic, numeric)
    ok = np.abs(analytic - numeric) <= tol * (np.abs(analytic) + np.abs(numeric)) + atol
    if label is not None:
        key = label if err <= tol else label + " (passed by noise floor)"
        MAX_GRAD_ERROR[key] = max(MAX_GRAD_ERROR.get(key, 0.0), err)
    assert err <= tol or (atol > 0 and np.all(ok)), \
        f"{label}: relative error {err:.3e} > {tol:.1e}\nanalytic={analytic!r}\nnumeric={numeric!r}"
    return err


def contract(upstream, outputs, baseline):
    """``sum_j sum(g_j * (f_j - f0_j))`` over pairs of upstream gradients and outputs.

    Subtracting the unperturbed outputs ``f0`` (a constant: the gradient is
    unchanged) before summing keeps the loss's rounding local: entries a
    finite-difference step does not touch contribute exact zeros, so the noise
    on one gradient entry is ~eps |its own term| / h rather than eps |L| / h.
    """
    return float(sum(np.sum(g * (np.asarray(f) - np.asarray(f0)))
                     for g, f, f0 in zip(upstream, outputs, baseline)))


def mutable_copy(x):
    """A writable float64 copy (also of 0-d values) that the finite-difference
    helper can perturb in place."""
    return np.array(x, dtype=np.float64, copy=True)


# ------------------------------------------------- whole-flow kink avoidance

def flow_kink_distance(x, params, config):
    """Per row, the distance to the nearest kink over all layers: ReLU
    pre-activations of every network, and (Rad) u against -1, a, b, 1."""
    _, _, _, cache = flow_forward(x, params, config)
    dist = np.full(len(x), np.inf)
    for layer, lc in enumerate(cache.layer_caches):
        nested = layer_params(params, layer)
        nets = [("cond", lc.cond_cache)]
        if config.kind == "rad":
            nets.append(("gate", lc.gate_cache))
        for net, mc in nets:
            pre = mc.x @ nested[net]["W1"] + nested[net]["b1"]
            dist = np.minimum(dist, np.abs(pre).min(axis=1))
        if config.kind == "rad":
            u, s = lc.u, lc.surj_cache.slopes
            d_u = np.min([np.abs(u + 1), np.abs(u - s.a), np.abs(u - s.b), np.abs(u - 1)], axis=0)
            dist = np.minimum(dist, d_u.min(axis=1))
    return dist


def flow_discrete_pattern(x, params, config):
    """Discrete state that a finite difference must not change."""
    _, _, k, cache = flow_forward(x, params, config)
    out = [k]
    for lc in cache.layer_caches:
        out.append(lc.cond_cache.active)
        if config.kind == "rad":
            out += [lc.gate_cache.active, lc.surj_cache.piece]
    return out


# ------------------------------------------------------------ forged checkpoints

def checkpoint_arrays(path):
    """Every array of a checkpoint file (to tamper with and write back)."""
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def forge_checkpoint(path, source, array_changes=None, **meta_changes):
    """Rewrite checkpoint ``source`` at ``path`` with metadata fields changed and
    arrays replaced (``None`` removes one), built exactly as ``save_checkpoint``
    builds a file (valid checksum), so that only the change can make loading fail."""
    from radref.training import checkpoint
    arrays = checkpoint_arrays(source)
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    del meta["checksum"]
    meta.update(meta_changes)
    for key, value in (array_changes or {}).items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    meta["checksum"] = checkpoint._digest(meta, arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def fit(model, X, **kwargs):
    """``model.fit(X, ...)`` with the training hyperparameters among ``kwargs``
    set on the model first (radref 0.1's ``fit(X, steps=...)`` is deprecated)."""
    names = model.get_params()
    model.set_params(**{k: v for k, v in kwargs.items() if k in names})
    return model.fit(X, **{k: v for k, v in kwargs.items() if k not in names})


def validation_module(name):
    """The script ``validation/NAME.py`` imported as a module (validation/ is
    not a package: its scripts are run from a clone)."""
    import importlib.util
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        f"radref_validation_{name}", os.path.join(root, "validation", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
