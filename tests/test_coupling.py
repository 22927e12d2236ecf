"""Tests of radref.core.layers: the coupling-layer contract, the Rad coupling layer
(paper §4.2, notes §4-5) and the affine coupling layer of Real NVP.

- The contract: every registered kind has the same functions with the same
  signatures.
- ``split``, ``columns``: complementary, alternating masks.
- Forward pass against an independent re-implementation of notes §1-4 written
  in probability space (slopes as ratios of probabilities, eq. 23 piece by piece).
- Backward passes against central finite differences, for ``x`` and every
  parameter of ``cond`` and ``gate``, with random upstream gradients on both
  outputs ``z`` and ``term``, for d = 2 and d = 5 and both masks.
- Exact inverse and exact sampling (inverse CDF over gating probabilities
  computed in the test from notes §2).
"""
import inspect

import numpy as np
import pytest

from helpers import check_gradient
from radref.core.layers import LAYER_KINDS, affine, layer_kind, rad
from radref.core.layers.masks import columns, split, sum_over_transformed
from radref.core.mlp import mlp_forward

GRAD_TOL = 1e-6
# h = 1e-6: the round-off error eps |L| / h ~ 1e-9 is far below the tolerance
# for losses of size ~10-100, and the truncation error O(h^2) is negligible.
FD_STEP = 1e-6
KINK_MARGIN = 1e-4  # no ReLU pre-activation and no u this close to a kink
N_ROWS = 40
HIDDEN = 6
OUT_STD = 0.4  # far from the identity: slopes ~3, all five pieces visited
CASES = [(dim, layer) for dim in (2, 5) for layer in (0, 1)]


# -------------------------------------------------------------------- helpers

def _nontrivial(net, rng):
    """Non-zero biases and non-unit output scales (fresh ones are 0 and 1, which
    would hide a missing or transposed bias / scale gradient)."""
    net["b1"] = 0.3 * rng.standard_normal(net["b1"].shape)
    net["b2"] = 0.3 * rng.standard_normal(net["b2"].shape)
    if "scale" in net:
        net["scale"] = rng.uniform(0.6, 1.4, net["scale"].shape)


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _rad_reference(x, params, layer):
    """Independent Rad coupling layer, notes §1-4 in probability space.

    Uses only the documented conditioner layout (column ``10 i + j``) and gating
    layout (column ``3 i + j``) and the MLP (tested in test_mlp.py).  Returns
    ``z, k (0-based), term`` and the quantities the kink checks need.
    """
    n, dim = x.shape
    cols_a, cols_b = split(dim, layer)
    nb = len(cols_b)
    c = mlp_forward(x[:, cols_a], params["cond"])[0].reshape(n, nb, 10)
    s_in, t_in, s_out, t_out = c[..., 0], c[..., 1], c[..., 8], c[..., 9]
    P, Q = _softmax(c[..., 2:5]), _softmax(c[..., 5:8])
    P1, P2, P3 = P[..., 0], P[..., 1], P[..., 2]
    Q1, Q2, Q3 = Q[..., 0], Q[..., 1], Q[..., 2]
    al2 = 1.0 + P1 / P2 + Q3 / Q2                       # eq. 26
    al1, al3 = al2 * P2 / P1, al2 * Q2 / Q3              # eq. 27, 28
    alm, alp = al1 * Q1, al3 * P3                        # eq. 29, 30
    a, b = 2.0 / al1 - 1.0, 1.0 - 2.0 / al3

    u = (x[:, cols_b] - t_in) * np.exp(-s_in)
    # eq. 23 piece by piece (closed interval [-1, 1]; a, b belong to the right piece)
    conds = [u < -1, (u >= -1) & (u < a), (u >= a) & (u < b), (u >= b) & (u <= 1), u > 1]
    v = np.select(conds, [alm * (u + 1) - 1, al1 * (u + 1) - 1, -al2 * (u - a) + 1,
                          al3 * (u - 1) + 1, alp * (u - 1) + 1])
    slope = np.select(conds, [alm, al1, al2, al3, alp])
    k = np.select(conds, [0, 0, 1, 2, 2])

    z = x.copy()
    z[:, cols_b] = v * np.exp(s_out) + t_out
    s = mlp_forward(z, params["gate"])[0].reshape(n, nb, 3)
    vc = np.clip(v, -1.0, 1.0)[..., None]
    lam = (0.5 * (1 + np.cos(np.pi * vc)) * s + 0.5 * (1 + np.sin(np.pi * vc / 2)) * np.log(P)
           + 0.5 * (1 - np.sin(np.pi * vc / 2)) * np.log(Q))
    gate = np.take_along_axis(_softmax(lam), k[..., None], axis=-1)[..., 0]
    gate = np.where(np.abs(v) <= 1, gate, 1.0)           # one branch outside [-1, 1]
    term = np.sum(np.log(gate) + np.log(slope) - s_in + s_out, axis=1)
    return z, k, term, {"u": u, "a": a, "b": b, "piece": np.select(conds, [0, 1, 2, 3, 4])}


def _relu_pre(x_in, net):
    return x_in @ net["W1"] + net["b1"]


def _rad_margins(x, params, layer):
    """Distance of every row to the nearest kink: ReLU pre-activations of both
    networks and u against -1, a, b, 1.  Shape ``(n,)``."""
    cols_a, _ = split(x.shape[1], layer)
    z, _, _, ref = _rad_reference(x, params, layer)
    pre_cond = np.abs(_relu_pre(x[:, cols_a], params["cond"])).min(axis=1)
    pre_gate = np.abs(_relu_pre(z, params["gate"])).min(axis=1)
    u, a, b = ref["u"], ref["a"], ref["b"]
    u_dist = np.min([np.abs(u + 1), np.abs(u - a), np.abs(u - b), np.abs(u - 1)], axis=0)
    u_dist = u_dist.min(axis=1)
    return np.minimum(np.minimum(pre_cond, pre_gate), u_dist)


def _rad_problem(dim, layer, seed, n=N_ROWS):
    """Parameters, input away from kinks, and random upstream gradients."""
    rng = np.random.default_rng(seed)
    params = rad.init(dim, layer, HIDDEN, HIDDEN, out_std=OUT_STD, random_state=rng)
    for net in params.values():
        _nontrivial(net, rng)
    x = rng.normal(0.0, 1.5, (n, dim))
    for _ in range(100):
        bad = _rad_margins(x, params, layer) <= KINK_MARGIN
        if not bad.any():
            break
        x[bad] = rng.normal(0.0, 1.5, (int(bad.sum()), dim))
    assert np.all(_rad_margins(x, params, layer) > KINK_MARGIN)
    dz = rng.standard_normal((n, dim))
    dterm = rng.standard_normal(n)
    return x, params, dz, dterm


def _rad_pattern(x, params, layer):
    """The discrete state a finite difference must not change: the piece of every
    u and the ReLU activity of both networks."""
    _, _, _, cache = rad.forward(x, params, layer)
    return (cache.surj_cache.piece.copy(), cache.cond_cache.active.copy(),
            cache.gate_cache.active.copy())


def _affine_problem(dim, layer, seed, n=N_ROWS):
    rng = np.random.default_rng(seed)
    params = affine.init(dim, layer, HIDDEN, out_std=0.5, random_state=rng)
    _nontrivial(params["cond"], rng)
    cols_a, _ = split(dim, layer)
    x = rng.normal(0.0, 1.5, (n, dim))
    for _ in range(100):
        bad = np.abs(_relu_pre(x[:, cols_a], params["cond"])).min(axis=1) <= KINK_MARGIN
        if not bad.any():
            break
        x[bad] = rng.normal(0.0, 1.5, (int(bad.sum()), dim))
    assert np.abs(_relu_pre(x[:, cols_a], params["cond"])).min() > KINK_MARGIN
    return x, params, rng.standard_normal((n, dim)), rng.standard_normal(n)


# -------------------------------------------------------------------- contract

CONTRACT = {  # function -> parameter names (docstring of radref.core.layers)
    "init": ["dim", "layer", "hidden", "gate_hidden", "out_std", "random_state"],
    "forward": ["x", "params", "layer"],
    "backward": ["dz", "dterm", "cache"],
    "inverse": ["z", "k", "params", "layer"],
    "sample": ["z", "uniforms", "params", "layer"],
    "folded": ["cache"],
}


@pytest.mark.parametrize("kind", sorted(LAYER_KINDS))
def test_every_kind_implements_the_contract(kind):
    module = layer_kind(kind)
    for function, names in CONTRACT.items():
        assert list(inspect.signature(getattr(module, function)).parameters) == names, function
    # init's defaults are the same for every kind
    defaults = {n: p.default for n, p in inspect.signature(module.init).parameters.items()}
    assert defaults["out_std"] == 0.01 and defaults["random_state"] is None


def test_unknown_kind_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown layer kind 'spline'.*'affine', 'rad'"):
        layer_kind("spline")


@pytest.mark.parametrize("kind", sorted(LAYER_KINDS))
def test_forward_returns_the_contract_tuple(kind):
    dim, layer, n = 5, 1, 6
    module = layer_kind(kind)
    params = module.init(dim, layer, 4, 4, out_std=0.3, random_state=0)
    x = np.random.default_rng(1).normal(size=(n, dim))
    z, k, term, cache = module.forward(x, params, layer)
    n_transformed = len(split(dim, layer)[1])
    assert z.shape == (n, dim) and term.shape == (n,)
    if k is not None:
        assert k.shape == (n, n_transformed) and np.issubdtype(k.dtype, np.integer)
    dx, grads = module.backward(np.ones((n, dim)), np.ones(n), cache)
    assert dx.shape == (n, dim)
    assert {net: set(g) for net, g in grads.items()} == {net: set(p) for net, p in params.items()}
    uniforms = np.random.default_rng(2).random((n, n_transformed))
    x_sampled, k_sampled = module.sample(z, uniforms, params, layer)
    assert x_sampled.shape == (n, dim) and (k_sampled is None) == (k is None)
    folded = module.folded(cache)
    assert (folded is None) == (k is None)
    if folded is not None:
        assert folded.shape == (n, n_transformed) and folded.dtype == bool


# ----------------------------------------------------------------------- split

@pytest.mark.parametrize("dim", [2, 3, 4, 5, 6, 7])
def test_split_masks_are_complementary_and_alternate(dim):
    for layer in range(6):
        cols_a, cols_b = split(dim, layer)
        assert len(cols_a) > 0 and len(cols_b) > 0
        assert np.intersect1d(cols_a, cols_b).size == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([cols_a, cols_b])), np.arange(dim))
        # alternation: what layer l transforms, layer l + 1 conditions on
        next_a, next_b = split(dim, layer + 1)
        np.testing.assert_array_equal(next_a, cols_b)
        np.testing.assert_array_equal(next_b, cols_a)
        # and two consecutive layers transform every column once
        np.testing.assert_array_equal(np.sort(np.concatenate([cols_b, next_b])), np.arange(dim))


@pytest.mark.parametrize("dim", [2, 3, 4, 5, 6, 7, 8, 9])
def test_columns_slices_select_the_split_columns(dim):
    # The layers index with the slices; split() defines the mask.
    x = np.arange(3 * dim, dtype=float).reshape(3, dim)
    for layer in range(5):
        cols = columns(dim, layer)
        conditioning, transformed = split(dim, layer)
        np.testing.assert_array_equal(x[:, cols.conditioning], x[:, conditioning])
        np.testing.assert_array_equal(x[:, cols.transformed], x[:, transformed])
        assert cols.n_transformed == len(transformed)
        assert columns(dim, layer) is cols  # cached: one shared object


def test_sum_over_transformed_is_the_row_sum():
    m = np.random.default_rng(0).integers(-100, 100, (7, 3)).astype(float)  # exact sums
    np.testing.assert_array_equal(sum_over_transformed(m), m[:, 0] + m[:, 1] + m[:, 2])


def test_split_2d_documented_order():
    # docstring: layer 0 conditions on column 0 and transforms column 1, then the reverse
    assert [list(c) for c in split(2, 0)] == [[0], [1]]
    assert [list(c) for c in split(2, 1)] == [[1], [0]]
    assert [list(c) for c in split(2, 2)] == [[0], [1]]


# ----------------------------------------------------------------- forward pass

@pytest.mark.parametrize("dim,layer", CASES)
def test_rad_forward_matches_independent_reference(dim, layer):
    x, params, _, _ = _rad_problem(dim, layer, seed=10 + dim + layer)
    z, k, term, cache = rad.forward(x, params, layer)
    z_ref, k_ref, term_ref, ref = _rad_reference(x, params, layer)
    cols_a, cols_b = split(dim, layer)
    assert k.shape == (x.shape[0], len(cols_b)) and term.shape == (x.shape[0],)
    np.testing.assert_array_equal(z[:, cols_a], x[:, cols_a])  # pass-through, exactly
    np.testing.assert_allclose(z, z_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(k, k_ref)
    np.testing.assert_allclose(term, term_ref, rtol=1e-11, atol=1e-11)
    # the case is far from trivial: every piece of the surjection is visited
    assert set(np.unique(cache.surj_cache.piece)) == {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(cache.surj_cache.piece, ref["piece"])


@pytest.mark.parametrize("dim,layer", CASES)
def test_affine_forward_matches_formula(dim, layer):
    x, params, _, _ = _affine_problem(dim, layer, seed=20 + dim + layer)
    z, k, term, _ = affine.forward(x, params, layer)
    assert k is None  # no discrete latent
    cols_a, cols_b = split(dim, layer)
    c = mlp_forward(x[:, cols_a], params["cond"])[0].reshape(len(x), len(cols_b), 2)
    np.testing.assert_array_equal(z[:, cols_a], x[:, cols_a])
    np.testing.assert_allclose(z[:, cols_b], x[:, cols_b] * np.exp(c[..., 0]) + c[..., 1],
                               rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(term, c[..., 0].sum(axis=1), rtol=1e-13, atol=1e-13)
    assert np.std(term) > 0.05  # a non-trivial log-determinant


def test_forward_does_not_modify_input():
    x, params, _, _ = _rad_problem(2, 0, seed=3)
    x0 = x.copy()
    rad.forward(x, params, 0)
    affine.forward(x, affine.init(2, 0, 4, out_std=0.5, random_state=0), 0)
    np.testing.assert_array_equal(x, x0)


# ---------------------------------------------------------------- backward pass

@pytest.mark.parametrize("dim,layer", CASES)
def test_rad_backward_matches_finite_differences(dim, layer):
    x, params, dz, dterm = _rad_problem(dim, layer, seed=dim * 10 + layer)
    z, k, term, cache = rad.forward(x, params, layer)
    pieces = cache.surj_cache.piece
    assert set(np.unique(pieces)) == {0, 1, 2, 3, 4}, np.bincount(pieces.ravel())
    assert set(np.unique(k)) == {0, 1, 2}
    # both ReLU states occur in both networks
    for c in (cache.cond_cache, cache.gate_cache):
        assert c.active.any() and not c.active.all()
    pattern = _rad_pattern(x, params, layer)

    dx, grads = rad.backward(dz, dterm, cache)
    assert set(grads) == {"cond", "gate"}
    for net in ("cond", "gate"):
        assert set(grads[net]) == set(params[net])

    def loss():
        z_, _, term_, _ = rad.forward(x, params, layer)
        # a finite difference across a kink would be meaningless: fail loudly instead
        for now, then in zip(_rad_pattern(x, params, layer), pattern):
            assert np.array_equal(now, then), "finite difference crossed a kink"
        return np.sum(dz * z_) + np.sum(dterm * term_)

    label = f"rad coupling d={dim}"
    check_gradient(loss, dx, x, tol=GRAD_TOL, label=label, h=FD_STEP)
    for net in ("cond", "gate"):
        for name, value in params[net].items():
            assert grads[net][name].shape == value.shape
            check_gradient(loss, grads[net][name], value, tol=GRAD_TOL, label=label, h=FD_STEP)


@pytest.mark.parametrize("dim,layer", CASES)
def test_affine_backward_matches_finite_differences(dim, layer):
    x, params, dz, dterm = _affine_problem(dim, layer, seed=dim * 10 + layer + 100)
    z, _, term, cache = affine.forward(x, params, layer)
    active = cache.cond_cache.active.copy()
    assert active.any() and not active.all()
    dx, grads = affine.backward(dz, dterm, cache)
    assert set(grads) == {"cond"} and set(grads["cond"]) == set(params["cond"])

    def loss():
        z_, _, term_, c_ = affine.forward(x, params, layer)
        assert np.array_equal(c_.cond_cache.active, active), "finite difference crossed a kink"
        return np.sum(dz * z_) + np.sum(dterm * term_)

    label = f"affine coupling d={dim}"
    check_gradient(loss, dx, x, tol=GRAD_TOL, label=label, h=FD_STEP)
    for name, value in params["cond"].items():
        check_gradient(loss, grads["cond"][name], value, tol=GRAD_TOL, label=label, h=FD_STEP)


@pytest.mark.parametrize("kind", ["rad", "affine"])
def test_backward_does_not_modify_upstream_gradients(kind):
    problem = _rad_problem if kind == "rad" else _affine_problem
    module = layer_kind(kind)
    x, params, dz, dterm = problem(2, 1, seed=5)
    dz0, dterm0 = dz.copy(), dterm.copy()
    _, _, _, cache = module.forward(x, params, 1)
    module.backward(dz, dterm, cache)
    np.testing.assert_array_equal(dz, dz0)
    np.testing.assert_array_equal(dterm, dterm0)


# ----------------------------------------------------------- inverse, sampling

@pytest.mark.parametrize("dim,layer", CASES)
def test_rad_inverse_recovers_input(dim, layer):
    x, params, _, _ = _rad_problem(dim, layer, seed=30 + dim + layer, n=200)
    z, k, _, cache = rad.forward(x, params, layer)
    assert set(np.unique(cache.surj_cache.piece)) == {0, 1, 2, 3, 4}
    x_back = rad.inverse(z, k, params, layer)
    np.testing.assert_allclose(x_back, x, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dim,layer", CASES)
def test_rad_folded_is_where_other_branches_have_preimages(dim, layer):
    # folded(cache) marks |u| <= 1: there (and only there) |v| <= 1, so every
    # branch has a preimage; outside, k is fixed by the sign of v.
    x, params, _, _ = _rad_problem(dim, layer, seed=70 + dim + layer, n=200)
    _, k, _, cache = rad.forward(x, params, layer)
    folded = rad.folded(cache)
    np.testing.assert_array_equal(folded, np.abs(cache.v) <= 1.0)
    assert folded.any() and not folded.all()
    np.testing.assert_array_equal(k[~folded], np.where(cache.v[~folded] > 1, 2, 0))


@pytest.mark.parametrize("dim,layer", CASES)
def test_rad_inverse_with_other_branch_gives_another_preimage(dim, layer):
    # Where |v| <= 1 every branch has a preimage: inverting with a different k
    # must give a different x that maps to the same z (and to that k).
    x, params, _, _ = _rad_problem(dim, layer, seed=40 + dim + layer, n=200)
    z, k, _, cache = rad.forward(x, params, layer)
    inside = np.all(np.abs(cache.v) <= 1.0, axis=1)
    assert inside.sum() >= 5
    zi, ki = z[inside], (k[inside] + 1) % 3
    x_other = rad.inverse(zi, ki, params, layer)
    assert np.all(np.abs(x_other - x[inside]).max(axis=1) > 1e-6)
    z2, k2, _, _ = rad.forward(x_other, params, layer)
    np.testing.assert_array_equal(k2, ki)
    np.testing.assert_allclose(z2, zi, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dim,layer", CASES)
def test_affine_inverse_recovers_input(dim, layer):
    x, params, _, _ = _affine_problem(dim, layer, seed=50 + dim + layer, n=200)
    z, _, _, _ = affine.forward(x, params, layer)
    assert np.abs(z - x).max() > 0.1  # not the identity
    np.testing.assert_allclose(affine.inverse(z, None, params, layer), x, rtol=0, atol=1e-10)
    # sampling has nothing to draw: it is the inverse, with no k
    x_sampled, k = affine.sample(z, np.full((len(z), len(split(dim, layer)[1])), 0.5), params,
                                 layer)
    assert k is None
    np.testing.assert_array_equal(x_sampled, affine.inverse(z, None, params, layer))


def _gating_probabilities_reference(z, params, layer):
    """p(k | z) of notes §2 from scratch: v from the output affine map, P and Q
    from the conditioner, s from the gating net, the trigonometric interpolation
    in logit space inside [-1, 1] and one-hot outside."""
    n, dim = z.shape
    cols_a, cols_b = split(dim, layer)
    nb = len(cols_b)
    c = mlp_forward(z[:, cols_a], params["cond"])[0].reshape(n, nb, 10)
    v = (z[:, cols_b] - c[..., 9]) * np.exp(-c[..., 8])
    P, Q = _softmax(c[..., 2:5]), _softmax(c[..., 5:8])
    s = mlp_forward(z, params["gate"])[0].reshape(n, nb, 3)
    prob = np.empty((n, nb, 3))
    for i in range(n):
        for j in range(nb):
            vij = v[i, j]
            if vij > 1:
                prob[i, j] = [0.0, 0.0, 1.0]
            elif vij < -1:
                prob[i, j] = [1.0, 0.0, 0.0]
            else:
                lam = (0.5 * (1 + np.cos(np.pi * vij)) * s[i, j]
                       + 0.5 * (1 + np.sin(np.pi * vij / 2)) * np.log(P[i, j])
                       + 0.5 * (1 - np.sin(np.pi * vij / 2)) * np.log(Q[i, j]))
                prob[i, j] = _softmax(lam)
    return prob, v


@pytest.mark.parametrize("dim,layer", CASES)
def test_rad_sample_draws_k_by_inverse_cdf(dim, layer):
    rng = np.random.default_rng(60 + dim + layer)
    params = rad.init(dim, layer, HIDDEN, HIDDEN, out_std=OUT_STD, random_state=rng)
    for net in params.values():
        _nontrivial(net, rng)
    n = 300
    z = rng.normal(0.0, 1.5, (n, dim))
    uniforms = rng.random((n, len(split(dim, layer)[1])))
    x, k = rad.sample(z, uniforms, params, layer)

    prob, v = _gating_probabilities_reference(z, params, layer)
    cdf = np.cumsum(prob, axis=-1)
    expected = np.empty_like(k)
    for idx in np.ndindex(*uniforms.shape):
        # the smallest k with uniform < P(K <= k); the last branch takes the rest
        expected[idx] = next((j for j in range(2) if uniforms[idx] < cdf[idx][j]), 2)
    np.testing.assert_array_equal(k, expected)
    inside = np.abs(v) <= 1
    assert inside.any() and (~inside).any()
    for branch in (0, 1, 2):  # every branch drawn somewhere inside the folded region
        assert np.any(k[inside] == branch)

    # the drawn (z, k) is inverted exactly: the forward pass gives back z and k
    z2, k2, _, _ = rad.forward(x, params, layer)
    np.testing.assert_array_equal(k2, k)
    np.testing.assert_allclose(z2, z, rtol=0, atol=1e-10)
    # and sampling with given k is the inverse
    np.testing.assert_allclose(rad.inverse(z, k, params, layer), x, rtol=0, atol=1e-12)


def test_rad_sample_uniform_thresholds():
    # Uniforms just below / above the CDF values select the branch by the rule
    # "smallest k with u < cdf_k", exactly at the boundaries too.
    rng = np.random.default_rng(7)
    params = rad.init(2, 0, HIDDEN, HIDDEN, out_std=OUT_STD, random_state=rng)
    for net in params.values():
        _nontrivial(net, rng)
    z = rng.normal(0.0, 0.5, (400, 2))
    prob, v = _gating_probabilities_reference(z, params, 0)
    inside = (np.abs(v[:, 0]) < 1) & (prob[:, 0, :].min(axis=1) > 1e-3)
    z = z[inside][:20]
    cdf = np.cumsum(prob[inside][:20, 0, :], axis=-1)
    assert len(z) == 20
    for j, expected in ((0, 1), (1, 2)):
        at = cdf[:, j:j + 1]
        _, k_below = rad.sample(z, at - 1e-12, params, 0)
        np.testing.assert_array_equal(k_below[:, 0], j)
        _, k_above = rad.sample(z, at + 1e-12, params, 0)
        np.testing.assert_array_equal(k_above[:, 0], expected)
