"""A one-dimensional Rad model: the smallest complete Rad density (notes section 4).

Composition, for scalar data ``x``::

    u = (x - shift_in) * exp(-log_scale_in)          pre-affine
    v, k, log|f'(u)| = f(u; alpha(P, Q))              five-piece surjection (eq. 23)
    z = v * exp(log_scale_out) + shift_out           post-affine
    log p(x) = log N(z) + log p(k | v) + log|f'(u)| - log_scale_in + log_scale_out

(eq. 15).  The gating logits ``s`` are a free 3-vector here (in the coupling
flow they come from a network reading ``z``).  Integrating ``p(x)`` over the
line gives 1 for every parameter value: the three preimages of a ``z`` carry
gating probabilities that sum to one.
"""
import numpy as np

from radref.core.base import normal_logpdf_backward, normal_logpdf_forward
from radref.core.gating import (gating_probabilities, log_gating_backward,
                           log_gating_forward, sample_branch)
from radref.core.rad_transform import rad_transform_backward, rad_transform_forward
from radref.core.slopes import slopes_forward
from radref.core.surjection import surjection_inverse

PARAM_SHAPES = {
    "log_scale_in": (), "shift_in": (),
    "p_logits": (3,), "q_logits": (3,), "gate_logits": (3,),
    "log_scale_out": (), "shift_out": (),
}


def rad1d_init(random_state=None, scale=1.0):
    """Random parameters (normal with standard deviation ``scale``)."""
    rng = np.random.default_rng(random_state)
    return {name: scale * rng.standard_normal(shape) for name, shape in PARAM_SHAPES.items()}


def _batch_slopes(params, n):
    p_logits = np.broadcast_to(params["p_logits"], (n, 3))
    q_logits = np.broadcast_to(params["q_logits"], (n, 3))
    return slopes_forward(p_logits, q_logits)


def rad1d_forward(x, params):
    """Log-density of the 1-D Rad model.

    Parameters
    ----------
    x : ndarray of float64, shape (n,)
    params : dict
        Keys and shapes of :data:`PARAM_SHAPES`.

    Returns
    -------
    log_px : ndarray, shape (n,)
    cache : dict
    """
    n = x.shape[0]
    slopes, slopes_cache = _batch_slopes(params, n)
    z, v, k, log_slope, transform_cache = rad_transform_forward(
        x, params["log_scale_in"], params["shift_in"], slopes, params["log_scale_out"],
        params["shift_out"])
    s = np.broadcast_to(params["gate_logits"], (n, 3))
    log_gate, gate_cache = log_gating_forward(v, k, s, slopes.log_p, slopes.log_q)
    log_base, base_cache = normal_logpdf_forward(z[:, None])
    log_px = log_base + log_gate + log_slope - params["log_scale_in"] + params["log_scale_out"]
    cache = dict(k=k, u=transform_cache.u, v=v, slopes_cache=slopes_cache,
                 surj_cache=transform_cache.surj_cache, transform_cache=transform_cache,
                 gate_cache=gate_cache, base_cache=base_cache)
    return log_px, cache


def rad1d_backward(dlog_px, cache):
    """Backward of :func:`rad1d_forward`.

    Returns
    -------
    dx : ndarray, shape (n,)
    grads : dict
        Same keys and shapes as the parameters.
    """
    dz = normal_logpdf_backward(dlog_px, cache["base_cache"])[:, 0]
    dv_gate, ds, dlog_p, dlog_q = log_gating_backward(dlog_px, cache["gate_cache"])
    g = rad_transform_backward(dz, dlog_px, dv_gate, dlog_p, dlog_q, cache["transform_cache"],
                               cache["slopes_cache"])
    # the parameters are shared by every row: their gradients are sums over rows
    grads = {
        "log_scale_in": np.sum(g.dlog_scale_in), "shift_in": np.sum(g.dshift_in),
        "p_logits": g.dp_logits.sum(axis=0), "q_logits": g.dq_logits.sum(axis=0),
        "gate_logits": ds.sum(axis=0),
        "log_scale_out": np.sum(g.dlog_scale_out), "shift_out": np.sum(g.dshift_out),
    }
    return g.dx, grads


def rad1d_inverse(z, k, params):
    """Exact inverse ``(z, k) -> x`` (notes section 5); shapes ``(n,)``."""
    v = (z - params["shift_out"]) * np.exp(-params["log_scale_out"])
    slopes, _ = _batch_slopes(params, z.shape[0])
    u = surjection_inverse(v, k, slopes)
    return u * np.exp(params["log_scale_in"]) + params["shift_in"]


def rad1d_sample(n, params, random_state=None):
    """Exact samples: ``z ~ N(0, 1)``, ``k ~ p(k | z)``, ``x = f_k^{-1}``.

    Returns
    -------
    x : ndarray, shape (n,)
    k : ndarray of int, shape (n,)
    """
    rng = np.random.default_rng(random_state)
    z = rng.standard_normal(n)
    uniforms = rng.random(n)
    v = (z - params["shift_out"]) * np.exp(-params["log_scale_out"])
    slopes, _ = _batch_slopes(params, n)
    prob = gating_probabilities(v, np.broadcast_to(params["gate_logits"], (n, 3)),
                                slopes.log_p, slopes.log_q)
    k = sample_branch(prob, uniforms)
    return rad1d_inverse(z, k, params), k
