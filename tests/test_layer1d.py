"""Tests of radref.core.layer1d: the one-dimensional Rad density (notes sections 4-5),
built from slopes, surjection, gating and the normal base density."""
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

from helpers import EPS, check_gradient, contract, mutable_copy, record_error, seeds
from radref.core.base import LOG_2PI
from radref.core.gating import log_gating_forward
from radref.core.layer1d import (PARAM_SHAPES, rad1d_backward, rad1d_forward, rad1d_init,
                            rad1d_inverse, rad1d_sample)
from radref.core.slopes import slopes_forward
from radref.core.surjection import surjection_forward, three_piece_forward

scales = st.floats(0.1, 1.0)


@st.composite
def model_params(draw, scale=scales):
    """rad1d_init with a random scale, then random pre/post affine maps."""
    rng = np.random.default_rng(draw(seeds))
    params = rad1d_init(rng, scale=draw(scale))
    params["log_scale_in"] = draw(st.floats(-1.5, 1.5))
    params["shift_in"] = draw(st.floats(-3.0, 3.0))
    params["log_scale_out"] = draw(st.floats(-1.5, 1.5))
    params["shift_out"] = draw(st.floats(-3.0, 3.0))
    return {name: mutable_copy(value) for name, value in params.items()}


def _slopes(params):
    return slopes_forward(params["p_logits"][None], params["q_logits"][None])[0]


def _breakpoints_u(params):
    s = _slopes(params)
    return np.array([-1.0, s.a[0], s.b[0], 1.0])


def _x_of_u(u, params):
    return np.asarray(u) * np.exp(params["log_scale_in"]) + params["shift_in"]


def _log_density(x, params):
    return rad1d_forward(np.atleast_1d(np.asarray(x, dtype=np.float64)), params)[0]


# ------------------------------------------------------------- continuity


def _one_sided_limits(log_density, params, u0, delta=5e-10):
    """Left and right limits of ``log_density`` (a function of x) at x(u0),
    from the points u0 -+ delta and u0 -+ 2 delta by linear extrapolation.

    The raw values at u0 -+ delta differ by 2 delta times the local slope of the
    log-density, which reaches ~1e3 per unit u for steep pieces (alpha ~ 1e2,
    e^s_out ~ 4): ~1e-6 with delta = 5e-10.  Extrapolating each side to u0
    removes that first-order term; the remainder is O(delta^2) plus rounding.
    Also returns the piece index of the four points.
    """
    u = u0 + delta * np.array([-2.0, -1.0, 1.0, 2.0])
    values, piece = log_density(_x_of_u(u, params), params)
    left = 2.0 * values[1] - values[0]
    right = 2.0 * values[2] - values[3]
    return left, right, values, piece


def _rad1d_log_density_and_piece(x, params):
    log_px, cache = rad1d_forward(x, params)
    return log_px, cache["surj_cache"].piece


@given(params=model_params())
def test_log_density_continuous_at_breakpoints(params):
    for j, u0 in enumerate(_breakpoints_u(params)):
        left, right, values, piece = _one_sided_limits(_rad1d_log_density_and_piece, params, u0)
        # the points really lie on the two pieces that meet at the breakpoint
        np.testing.assert_array_equal(piece, [j, j, j + 1, j + 1])
        assert np.all(np.isfinite(values))
        record_error("log-density jump at a breakpoint", abs(right - left))
        assert abs(right - left) <= 1e-6, (j, values)
        # the raw values at u0 -+ 5e-10 agree to 1e-6 beyond the change that the
        # one-sided slopes (finite differences over 5e-10) account for
        slopes = np.abs(values[1] - values[0]) + np.abs(values[3] - values[2])
        assert abs(values[2] - values[1]) <= 1e-6 + slopes, (j, values)


def test_log_density_at_one_third_regression():
    # P = Q = uniform, identity affine maps: b = 1/3 (rounded up) and the float
    # 1/3 lies one ulp left of it.  By continuity the log-density there is
    # log N(-1) + log Q_3 + log alpha_3 = log N(-1) + log(1/3) + log 3.
    # (It was -inf before v was kept within [-1, 1] on the folded pieces.)
    params = {name: np.zeros(shape) for name, shape in PARAM_SHAPES.items()}
    x = np.array([1.0 / 3.0, np.nextafter(1.0 / 3.0, np.inf), -1.0 / 3.0])
    expected = -0.5 - 0.5 * LOG_2PI  # log N(+-1)
    np.testing.assert_allclose(_log_density(x, params), expected, rtol=0, atol=1e-14)


def _composed_log_density(x, params, surjection):
    """The 1-D composition written out in the test: pre-affine, surjection,
    gating with free logits, post-affine, standard normal."""
    u = (x - params["shift_in"]) * np.exp(-params["log_scale_in"])
    s = slopes_forward(np.broadcast_to(params["p_logits"], (x.size, 3)),
                       np.broadcast_to(params["q_logits"], (x.size, 3)))[0]
    v, k, log_slope, _ = surjection(u, s)
    log_gate, _ = log_gating_forward(v, k, np.broadcast_to(params["gate_logits"], (x.size, 3)),
                                     s.log_p, s.log_q)
    z = v * np.exp(params["log_scale_out"]) + params["shift_out"]
    log_normal = -0.5 * z ** 2 - 0.5 * np.log(2.0 * np.pi)
    return log_normal + log_gate + log_slope - params["log_scale_in"] + params["log_scale_out"]


@given(params=model_params())
def test_test_composition_matches_rad1d_forward(params):
    # validates _composed_log_density (used below for the three-piece version)
    x = _x_of_u(np.linspace(-3.0, 3.0, 41), params)
    np.testing.assert_allclose(_composed_log_density(x, params, surjection_forward),
                               _log_density(x, params), rtol=1e-13, atol=1e-12)


@given(params=model_params())
def test_three_piece_version_is_discontinuous_at_plus_minus_one(params):
    # Paper Fig. 6: without the outer pieces the boundary conditions cannot hold.
    # At u = 1 the left side has log p(k=3 | v -> 1) = log P3, the right side
    # (v > 1, one-hot gating) has 0, with the same slope alpha_3 on both sides:
    # the jump is -log P3 = |log P3|; at u = -1 likewise |log Q1|.
    s = _slopes(params)

    def three_piece(x, params):
        return _composed_log_density(x, params, three_piece_forward), None

    jumps = []
    for u0 in _breakpoints_u(params):
        left, right, _, _ = _one_sided_limits(three_piece, params, u0)
        jumps.append(right - left)
    log_p3, log_q1 = s.log_p[0, 2], s.log_q[0, 0]
    assert abs(jumps[3] - (-log_p3)) <= 1e-6   # u = 1: right minus left = -log P3
    assert abs(jumps[0] - log_q1) <= 1e-6      # u = -1: right minus left = log Q1
    assert abs(jumps[0]) > 1e-3 and abs(jumps[3]) > 1e-3
    # at a and b it is as continuous as the five-piece version
    assert abs(jumps[1]) <= 1e-6 and abs(jumps[2]) <= 1e-6


# ---------------------------------------------------------- normalization


def _integrate_density(params, lo, hi):
    def density(x):
        return float(np.exp(_log_density(x, params)[0]))
    value, _ = quad(density, lo, hi, epsabs=1e-13, epsrel=1e-12, limit=200)
    return value


def _segment_edges(params):
    """x of the four breakpoints, with -inf and +inf: the density is smooth in between."""
    return np.concatenate([[-np.inf], _x_of_u(_breakpoints_u(params), params), [np.inf]])


@settings(max_examples=25)
@given(params=model_params(scale=st.floats(0.1, 1.5)))
def test_density_integrates_to_one(params):
    edges = _segment_edges(params)
    total = sum(_integrate_density(params, lo, hi) for lo, hi in zip(edges[:-1], edges[1:]))
    record_error("density normalization |int p - 1|", abs(total - 1.0))
    assert abs(total - 1.0) <= 1e-8


def test_density_without_gating_counts_the_fold_three_times():
    # Control for the normalization test: dropping log p(k | z) leaves
    # sum_k int N(z) dz over the three branches, i.e. 1 + 2 P(|v| <= 1) with
    # v = (z - shift_out) e^-s_out, z ~ N(0, 1): the gating is what makes it 1.
    params = {name: mutable_copy(v) for name, v in rad1d_init(3, scale=0.7).items()}
    edges = _segment_edges(params)

    def density(x):
        log_px, cache = rad1d_forward(np.array([x]), params)
        gate = cache["gate_cache"]
        log_gate, _ = log_gating_forward(cache["v"], cache["k"], gate.s, gate.log_p, gate.log_q)
        return float(np.exp(log_px[0] - log_gate[0]))

    total = sum(quad(density, lo, hi, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
                for lo, hi in zip(edges[:-1], edges[1:]))
    scale_out, shift_out = np.exp(params["log_scale_out"]), params["shift_out"]
    p_fold = (scipy.stats.norm.cdf(scale_out + shift_out)
              - scipy.stats.norm.cdf(-scale_out + shift_out))
    assert abs(total - (1.0 + 2.0 * p_fold)) <= 1e-8
    assert total - 1.0 > 0.05


# ---------------------------------------------------------------- gradients


def _x_in_every_piece(rng, params, per_piece):
    """x whose u lies in each of the five pieces, > 1e-4 (in u) from breakpoints."""
    bp = _breakpoints_u(params)
    bounds = [(bp[0] - 3.0, bp[0]), (bp[0], bp[1]), (bp[1], bp[2]), (bp[2], bp[3]),
              (bp[3], bp[3] + 3.0)]
    u = []
    for lo, hi in bounds:
        m = min(1e-3, (hi - lo) / 4.0)
        assert m > 1e-4
        u.append(rng.uniform(lo + m, hi - m, per_piece))
    return _x_of_u(np.concatenate(u), params)


@given(params=model_params(scale=st.floats(0.1, 0.8)), seed=seeds)
def test_rad1d_backward_gradient(params, seed):
    # scale <= 0.8 keeps every piece wider than 4e-4 (|logit| <= ~4 in practice)
    rng = np.random.default_rng(seed)
    x = mutable_copy(_x_in_every_piece(rng, params, per_piece=2))
    g = rng.standard_normal(x.size)

    base = rad1d_forward(x, params)[0].copy()

    def loss():
        return contract([g], [rad1d_forward(x, params)[0]], [base])

    _, cache = rad1d_forward(x, params)
    dx, grads = rad1d_backward(g, cache)
    assert set(grads) == set(PARAM_SHAPES)
    check_gradient(loss, dx, x, label="rad1d_backward")
    for name in PARAM_SHAPES:
        assert np.shape(grads[name]) == PARAM_SHAPES[name]
        check_gradient(loss, grads[name], params[name], label="rad1d_backward")


# ------------------------------------------------------ inverse and sampling


@given(params=model_params(), seed=seeds)
def test_inverse_round_trip_from_data(params, seed):
    rng = np.random.default_rng(seed)
    x = _x_in_every_piece(rng, params, per_piece=4)
    _, cache = rad1d_forward(x, params)
    v, k = cache["v"], cache["k"]
    z = v * np.exp(params["log_scale_out"]) + params["shift_out"]
    x_back = rad1d_inverse(z, k, params)
    # v is recovered from z to ~eps (|v| + |shift_out| e^-s_out); the inverse of a
    # piece divides that by its slope, and x = u e^s_in + t_in scales it again
    alpha = np.exp(cache["surj_cache"].log_slope)
    shift_v = np.abs(params["shift_out"]) * np.exp(-params["log_scale_out"])
    v_err = 4.0 * EPS * (1.0 + np.abs(v) + shift_v)
    tol = 1e-12 * (1.0 + np.abs(x)) + np.exp(params["log_scale_in"]) * v_err / alpha
    assert np.all(np.abs(x_back - x) <= tol)


@given(params=model_params(), seed=seeds)
def test_inverse_round_trip_from_latent(params, seed):
    # (z, k) with k a branch that exists for v(z) -> x -> the same (z, k)
    rng = np.random.default_rng(seed)
    n = 30
    z = 2.0 * rng.standard_normal(n)
    v = (z - params["shift_out"]) * np.exp(-params["log_scale_out"])
    v = np.where(np.abs(np.abs(v) - 1.0) < 1e-6, 0.0, v)  # no v within 1e-6 of +-1
    z = v * np.exp(params["log_scale_out"]) + params["shift_out"]
    k = np.where(v > 1.0, 2, np.where(v < -1.0, 0, rng.integers(0, 3, n)))
    x = rad1d_inverse(z, k, params)
    _, cache = rad1d_forward(x, params)
    np.testing.assert_array_equal(cache["k"], k)
    z_back = cache["v"] * np.exp(params["log_scale_out"]) + params["shift_out"]
    np.testing.assert_allclose(z_back, z, rtol=1e-10, atol=1e-10)


def _chi_square_bins(params):
    """x edges: each inner piece cut in 4 equal u-intervals; each outer piece cut
    at z = z(v = -+1) -+ {0.5, 1, 2} (mapped to x on that branch)."""
    bp = _breakpoints_u(params)
    inner_u = np.concatenate([np.linspace(bp[i], bp[i + 1], 5)[:-1] for i in range(3)] + [[bp[3]]])
    scale_out = np.exp(params["log_scale_out"])
    z_low = -scale_out + params["shift_out"]
    z_high = scale_out + params["shift_out"]
    offsets = np.array([2.0, 1.0, 0.5])
    left = rad1d_inverse(z_low - offsets, np.zeros(3, dtype=int), params)
    right = rad1d_inverse(z_high + offsets[::-1], np.full(3, 2), params)
    return np.concatenate([[-np.inf], left, _x_of_u(inner_u, params), right, [np.inf]])


def _fixed_params(seed):
    """Pre-registered parameter sets for the statistical test (see below)."""
    rng = np.random.default_rng(seed)
    params = rad1d_init(rng, scale=rng.uniform(0.3, 1.0))
    params["log_scale_in"] = rng.uniform(-1.0, 1.0)
    params["shift_in"] = rng.uniform(-2.0, 2.0)
    params["log_scale_out"] = rng.uniform(-1.0, 1.0)
    params["shift_out"] = rng.uniform(-1.5, 1.5)
    return {name: mutable_copy(value) for name, value in params.items()}


# A goodness-of-fit test is run on fixed parameters with a fixed sampling seed:
# letting hypothesis search over seeds would eventually find the 1-in-1000
# sample that fails p > 1e-3 by chance.
@pytest.mark.parametrize("param_seed", [0, 1, 2, 3, 4])
def test_samples_follow_the_density(param_seed):
    params = _fixed_params(param_seed)
    n = 20_000
    x, k = rad1d_sample(n, params, random_state=1000 + param_seed)
    edges = _chi_square_bins(params)
    assert np.all(np.diff(edges) > 0)
    expected = np.array([_integrate_density(params, lo, hi)
                         for lo, hi in zip(edges[:-1], edges[1:])]) * n
    observed = np.histogram(x, bins=edges)[0]
    assert observed.sum() == n
    # merge neighbouring bins until each expects >= 5 draws
    obs_m, exp_m = [0], [0.0]
    for o, e in zip(observed, expected):
        if exp_m[-1] >= 5.0:
            obs_m.append(0)
            exp_m.append(0.0)
        obs_m[-1] += o
        exp_m[-1] += e
    if exp_m[-1] < 5.0 and len(exp_m) > 1:
        last_obs, last_exp = obs_m.pop(), exp_m.pop()
        obs_m[-1] += last_obs
        exp_m[-1] += last_exp
    exp_m = np.array(exp_m) * n / np.sum(exp_m)  # normalised to 1e-8 above
    assert len(exp_m) >= 8
    assert scipy.stats.chisquare(obs_m, exp_m).pvalue > 1e-3
    # each sample's k is the branch its x lies on
    _, cache = rad1d_forward(x, params)
    np.testing.assert_array_equal(cache["k"], k)
    assert np.all(np.isfinite(cache["v"]))


@given(params=model_params(), seed=seeds)
def test_sampled_branch_is_the_branch_of_the_sample(params, seed):
    x, k = rad1d_sample(200, params, random_state=seed)
    log_px, cache = rad1d_forward(x, params)
    np.testing.assert_array_equal(cache["k"], k)
    assert np.all(np.isfinite(log_px))


def test_sampling_is_deterministic_given_random_state():
    params = rad1d_init(5, scale=0.8)
    x1, k1 = rad1d_sample(500, params, random_state=123)
    x2, k2 = rad1d_sample(500, params, random_state=123)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(k1, k2)
    x3, _ = rad1d_sample(500, params, random_state=np.random.default_rng(123))
    np.testing.assert_array_equal(x1, x3)
    x4, _ = rad1d_sample(500, params, random_state=124)
    assert not np.array_equal(x1, x4)
    # rad1d_init is deterministic too
    again = rad1d_init(5, scale=0.8)
    for name in PARAM_SHAPES:
        np.testing.assert_array_equal(params[name], again[name])
