"""Tests of radref.core.surjection: the five-piece surjection of paper eq. 23 and the
three-piece surjection of eq. 14 (notes sections 1 and 5)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import EPS, check_gradient, contract, logit_pairs, mutable_copy, seeds
from radref.core.slopes import Slopes, slopes_forward
from radref.core.surjection import (PIECE_TO_K, five_piece_index, surjection_backward,
                               surjection_forward, surjection_inverse, three_piece_forward,
                               three_piece_index, three_piece_inverse)

LOG_ALPHA_FIELDS = ("log_alpha_minus", "log_alpha_1", "log_alpha_2",
                    "log_alpha_3", "log_alpha_plus")
FORWARD = {"five": surjection_forward, "three": three_piece_forward}
INVERSE = {"five": surjection_inverse, "three": three_piece_inverse}


def _alpha_of_piece(s, piece):
    """exp(log alpha) of the given five-piece index (0..4), computed in the test."""
    log_alphas = np.stack([getattr(s, name) for name in LOG_ALPHA_FIELDS])
    return np.exp(np.take_along_axis(log_alphas, piece[None], axis=0)[0])


def _piece_bounds(s):
    """Per-row (lo, hi) of the five pieces' domains; outer ones truncated to width 3.
    (The three-piece version uses the same intervals: its piece 1 is the union of
    the first two, its piece 3 of the last two.)"""
    minus_one = -np.ones_like(s.a)
    one = np.ones_like(s.a)
    return [(minus_one - 3.0, minus_one), (minus_one, s.a), (s.a, s.b),
            (s.b, one), (one, one + 3.0)]


def _u_in_pieces(rng, s, margin=1e-3):
    """One u per row, row i in five-piece domain ``i % 5``, at a distance > 1e-4
    from every breakpoint -1, a, b, 1."""
    bounds = _piece_bounds(s)
    which = np.arange(s.a.shape[0]) % 5
    lo = np.choose(which, [lo for lo, _ in bounds])
    hi = np.choose(which, [hi for _, hi in bounds])
    m = np.minimum(margin, (hi - lo) / 4.0)
    assert np.all(m > 1e-4)
    u = rng.uniform(lo + m, hi - m)
    breakpoints = np.stack([-np.ones_like(s.a), s.a, s.b, np.ones_like(s.a)])
    assert np.all(np.min(np.abs(u - breakpoints), axis=0) > 1e-4)
    return u


def _random_slopes(rng, n, max_logit=2.0):
    # |logit| <= 2 keeps every piece at least 6e-4 wide (1/alpha_i >= 3.3e-4),
    # room for the 1e-4 margin of the gradient checks.
    return slopes_forward(rng.uniform(-max_logit, max_logit, (n, 3)),
                          rng.uniform(-max_logit, max_logit, (n, 3)))[0]


# ------------------------------------------------------------ invertibility


@st.composite
def slopes_and_u(draw, max_logit, max_abs_u=10.0):
    p, q = draw(logit_pairs(max_logit, max_rows=6))
    n = p.shape[0]
    u = draw(hnp.arrays(np.float64, (n,), elements=st.floats(-max_abs_u, max_abs_u)))
    return slopes_forward(p, q)[0], u


@pytest.mark.parametrize("version", ["five", "three"])
@given(data=slopes_and_u(30.0))
def test_inverse_of_forward_is_identity(version, data):
    s, u = data
    v, k, log_slope, cache = FORWARD[version](u, s)
    u_back = INVERSE[version](v, k, s)
    # v carries an absolute rounding error of a few eps * (1 + |v|); the inverse
    # divides it by the slope of the piece, so a very flat piece (alpha << 1)
    # cannot be inverted more precisely than 4 eps (1 + |v|) / alpha.  The
    # 1e-12 * max(1, |u|) term covers the relative rounding of u itself.
    alpha = np.exp(log_slope)
    tol = 1e-12 * np.maximum(1.0, np.abs(u)) + 4.0 * EPS * (1.0 + np.abs(v)) / alpha
    assert np.all(np.abs(u_back - u) <= tol), (u, u_back, tol)


# Margin from v = +-1: |v| <= 1 - 1e-9 (and |v| >= 1 + 1e-9 below) with
# |logit| <= 3 keep each preimage >= 1e-9 / alpha >= 6e-15 away from its piece's
# ends (alpha <= 1.6e5), well above rounding; closer to v = +-1 a preimage can
# round onto the breakpoint, which the tie-break gives to the neighbouring piece.
inner_v = st.floats(-1.0 + 1e-9, 1.0 - 1e-9)


@given(pq=logit_pairs(3.0, max_rows=1), v=inner_v)
def test_every_inner_v_has_three_preimages(pq, v):
    s = slopes_forward(*pq)[0]
    v_arr = np.array([v])
    a, b = s.a[0], s.b[0]
    domains = {"five": [(-1.0, a), (a, b), (b, 1.0)],
               "three": [(-np.inf, a), (a, b), (b, np.inf)]}
    for version in ("five", "three"):
        for k, (lo, hi) in enumerate(domains[version]):
            u = INVERSE[version](v_arr, np.array([k]), s)
            # in the piece's domain (tie-break: left end closed, right end open;
            # for the five-piece k = 2 piece [b, 1] both ends closed)
            assert lo <= u[0] < hi or (k == 2 and u[0] == hi), (version, k, u, lo, hi)
            v_back, k_back, log_slope, _ = FORWARD[version](u, s)
            assert k_back[0] == k
            # u carries a rounding error ~eps (1 + |u|), amplified by the slope
            alpha = np.exp(log_slope[0])
            assert abs(v_back[0] - v) <= 4.0 * EPS * (2.0 + alpha * (3.0 + abs(u[0])))
        assert_preimage_count(s, v, 3, FORWARD[version])


@given(pq=logit_pairs(3.0, max_rows=1),
       v=st.one_of(st.floats(1.0 + 1e-9, 50.0), st.floats(-50.0, -1.0 - 1e-9)))
def test_every_outer_v_has_one_preimage(pq, v):
    s = slopes_forward(*pq)[0]
    v_arr = np.array([v])
    only_k = 2 if v > 1.0 else 0
    for version in ("five", "three"):
        u = INVERSE[version](v_arr, np.array([only_k]), s)
        assert (u[0] > 1.0) if v > 1.0 else (u[0] < -1.0)
        v_back, k_back, log_slope, _ = FORWARD[version](u, s)
        assert k_back[0] == only_k
        alpha = np.exp(log_slope[0])
        assert abs(v_back[0] - v) <= 4.0 * EPS * (1.0 + abs(v) + alpha * (2.0 + abs(u[0])))
        for k in {0, 1, 2} - {only_k}:
            with pytest.raises(ValueError):
                INVERSE[version](v_arr, np.array([k]), s)
        assert_preimage_count(s, v, 1, FORWARD[version])


def assert_preimage_count(s, v, expected, forward):
    """Count the solutions of f(u) = v on a fine grid by sign changes of f - v,
    independently of surjection_inverse (every piece is strictly monotone and
    f is continuous, so each crossing is one preimage)."""
    a, b = s.a[0], s.b[0]
    reach = 2.0 + abs(v) * np.exp(-min(s.log_alpha_minus[0], s.log_alpha_plus[0],
                                       s.log_alpha_1[0], s.log_alpha_3[0]))
    grid = np.unique(np.concatenate([
        np.linspace(-1.0 - reach, -1.0, 200), np.linspace(-1.0, a, 200),
        np.linspace(a, b, 200), np.linspace(b, 1.0, 200), np.linspace(1.0, 1.0 + reach, 200)]))
    row = Slopes(*(np.broadcast_to(f, (grid.size,) + np.shape(f)[1:]) for f in s))
    f_grid, _, _, _ = forward(grid, row)
    sign = np.sign(f_grid - v)
    sign = sign[sign != 0]
    assert np.count_nonzero(np.diff(sign)) == expected


def test_inverse_rejects_impossible_branches_in_a_batch():
    s = _random_slopes(np.random.default_rng(0), 3)
    v = np.array([0.5, 2.0, -0.5])
    for inverse in INVERSE.values():
        with pytest.raises(ValueError):
            inverse(v, np.array([0, 1, 0]), s)  # v = 2 has only k = 2
        with pytest.raises(ValueError):
            inverse(v, np.array([0, 2, 3]), s)  # k = 3 does not exist
        with pytest.raises(ValueError):
            inverse(v, np.array([-1, 2, 0]), s)
        assert np.all(np.isfinite(inverse(v, np.array([1, 2, 0]), s)))


# ------------------------------------------------ breakpoints and tie-break


def _breakpoint_slopes():
    rng = np.random.default_rng(11)
    p = np.concatenate([np.zeros((1, 3)), rng.uniform(-4, 4, (20, 3))])
    q = np.concatenate([np.zeros((1, 3)), rng.uniform(-4, 4, (20, 3))])
    return slopes_forward(p, q)[0]


def test_tie_break_at_breakpoints_five_piece():
    # documented rule: u = -1 -> piece 1, a -> 2, b -> 3, 1 -> 3 (k = 0, 1, 2, 2)
    s = _breakpoint_slopes()
    one = np.ones_like(s.a)
    cases = [(-one, 1, s.log_alpha_1), (s.a, 2, s.log_alpha_2),
             (s.b, 3, s.log_alpha_3), (one, 3, s.log_alpha_3)]
    for u, piece, log_alpha in cases:
        np.testing.assert_array_equal(five_piece_index(u, s.a, s.b), piece)
        _, k, log_slope, _ = surjection_forward(u, s)
        np.testing.assert_array_equal(k, PIECE_TO_K[piece])
        np.testing.assert_array_equal(log_slope, log_alpha)
    # one ulp to the left of each breakpoint: the piece on the left
    left = [(-one, 0), (s.a, 1), (s.b, 2), (one, 3)]
    for u, piece in left:
        np.testing.assert_array_equal(five_piece_index(np.nextafter(u, -np.inf), s.a, s.b), piece)
    np.testing.assert_array_equal(five_piece_index(np.nextafter(one, np.inf), s.a, s.b), 4)
    np.testing.assert_array_equal(PIECE_TO_K, [0, 0, 1, 2, 2])


def test_tie_break_at_breakpoints_three_piece():
    s = _breakpoint_slopes()
    one = np.ones_like(s.a)
    for u, piece in [(-one, 1), (s.a, 2), (s.b, 3), (one, 3), (-one - 5.0, 1), (one + 5.0, 3)]:
        np.testing.assert_array_equal(three_piece_index(u, s.a, s.b), piece)
        _, k, log_slope, _ = three_piece_forward(u, s)
        np.testing.assert_array_equal(k, piece - 1)
        np.testing.assert_array_equal(
            log_slope, (s.log_alpha_1, s.log_alpha_2, s.log_alpha_3)[piece - 1])
    for u, piece in [(s.a, 1), (s.b, 2)]:
        np.testing.assert_array_equal(
            three_piece_index(np.nextafter(u, -np.inf), s.a, s.b), piece)


@pytest.mark.parametrize("version", ["five", "three"])
def test_values_at_breakpoints(version):
    # f(-1) = f(b) = -1 and f(a) = f(1) = 1.  f(-1), f(a), f(1) evaluate a piece at
    # its own anchor: exact.  f(b) = 1 + alpha_3 (b - 1) multiplies the rounding of
    # b (a few eps) by alpha_3.
    s = _breakpoint_slopes()
    one = np.ones_like(s.a)
    f = FORWARD[version]
    np.testing.assert_array_equal(f(-one, s)[0], -1.0)
    np.testing.assert_array_equal(f(s.a, s)[0], 1.0)
    np.testing.assert_array_equal(f(one, s)[0], 1.0)
    alpha_3 = np.exp(s.log_alpha_3)
    assert np.all(np.abs(f(s.b, s)[0] + 1.0) <= 4.0 * EPS * (1.0 + alpha_3))


@pytest.mark.parametrize("version", ["five", "three"])
def test_continuity_at_breakpoints(version):
    s = _breakpoint_slopes()
    one = np.ones_like(s.a)
    f = FORWARD[version]
    delta = 1e-9
    alpha_max = np.exp(np.max([getattr(s, n) for n in LOG_ALPHA_FIELDS], axis=0))
    for bp in (-one, s.a, s.b, one):
        v_left = f(bp - delta, s)[0]
        v_right = f(bp + delta, s)[0]
        # a line of slope <= alpha_max moves by <= alpha_max * delta on each side;
        # rounding of the breakpoints is amplified by the slope
        tol = 2.0 * alpha_max * delta * (1.0 + 1e-6) + 8.0 * EPS * (1.0 + alpha_max)
        assert np.all(np.abs(v_right - v_left) <= tol)


def test_three_piece_slope_differs_from_five_piece_outside():
    # Outside [-1, 1] the three-piece version keeps alpha_1 / alpha_3 while the
    # five-piece one switches to alpha_- = alpha_1 Q1 / alpha_+ = alpha_3 P3.
    s = _breakpoint_slopes()
    one = np.ones_like(s.a)
    np.testing.assert_array_equal(three_piece_forward(one + 0.5, s)[2], s.log_alpha_3)
    np.testing.assert_array_equal(surjection_forward(one + 0.5, s)[2], s.log_alpha_plus)
    np.testing.assert_array_equal(three_piece_forward(-one - 0.5, s)[2], s.log_alpha_1)
    np.testing.assert_array_equal(surjection_forward(-one - 0.5, s)[2], s.log_alpha_minus)
    np.testing.assert_allclose(surjection_forward(one + 0.5, s)[0],
                               1.0 + 0.5 * np.exp(s.log_alpha_plus))
    np.testing.assert_allclose(surjection_forward(-one - 0.5, s)[0],
                               -1.0 - 0.5 * np.exp(s.log_alpha_minus))


def test_forward_matches_eq23_by_hand():
    # P = Q = uniform: alpha_1..3 = 3, alpha_-+ = 1, a = -1/3, b = 1/3.
    s = slopes_forward(np.zeros((7, 3)), np.zeros((7, 3)))[0]
    u = np.array([-2.0, -1.0, -2.0 / 3.0, 0.0, 0.5, 1.0, 3.0])
    expected_v = np.array([-2.0, -1.0, 0.0, 0.0, -0.5, 1.0, 3.0])
    v, k, log_slope, _ = surjection_forward(u, s)
    np.testing.assert_allclose(v, expected_v, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(k, [0, 0, 0, 1, 2, 2, 2])
    np.testing.assert_allclose(log_slope, np.log([1, 3, 3, 3, 3, 3, 1]), rtol=0, atol=1e-15)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("version", ["five", "three"])
@given(seed=seeds, per_piece=st.integers(1, 3))
def test_surjection_backward_gradient(version, seed, per_piece):
    rng = np.random.default_rng(seed)
    n = 5 * per_piece
    s = _random_slopes(rng, n)
    u = _u_in_pieces(rng, s)
    fields = [mutable_copy(f) for f in s]  # every Slopes field is an input
    u = mutable_copy(u)
    dv = rng.standard_normal(n)
    dlog_slope = rng.standard_normal(n)
    forward = FORWARD[version]

    v0, _, log_slope0, _ = forward(u, Slopes(*fields))

    def loss():
        v, _, log_slope, _ = forward(u, Slopes(*fields))
        return contract([dv, dlog_slope], [v, log_slope], [v0, log_slope0])

    _, _, _, cache = forward(u, Slopes(*fields))
    du, dslopes = surjection_backward(dv, dlog_slope, cache)
    label = f"surjection_backward[{version}]"
    check_gradient(loss, du, u, label=label)
    for name, field, grad in zip(Slopes._fields, fields, dslopes):
        check_gradient(loss, grad, field, label=label)
    # b, log_p and log_q do not enter f between breakpoints
    assert np.all(dslopes.b == 0) and np.all(dslopes.log_p == 0) and np.all(dslopes.log_q == 0)


@pytest.mark.parametrize("version", ["five", "three"])
def test_surjection_backward_reaches_every_used_slope(version):
    # guards the gradient test against vacuity: with u in every piece, each
    # log-slope used by the version and a get nonzero gradients
    rng = np.random.default_rng(3)
    n = 10
    s = _random_slopes(rng, n)
    u = _u_in_pieces(rng, s)
    _, _, _, cache = FORWARD[version](u, s)
    _, dslopes = surjection_backward(rng.standard_normal(n), rng.standard_normal(n), cache)
    used = LOG_ALPHA_FIELDS if version == "five" else LOG_ALPHA_FIELDS[1:4]
    for name in used + ("a",):
        assert np.count_nonzero(getattr(dslopes, name)) >= 2, name


# ------------------------------------------------- rounding at breakpoints


@pytest.mark.parametrize("version", ["five", "three"])
@given(pq=logit_pairs(5.0, max_rows=1), which=st.integers(0, 3), ulps=st.integers(-4, 4))
def test_rounding_never_moves_v_across_one(version, pq, which, ulps):
    # The tie-break rule promises |u| <= 1 exactly when |v| <= 1, also within a
    # few ulps of a breakpoint where f's value is a rounded +-1.  (Regression:
    # u = b - 1 ulp gave v = -1 - 4e-16 on piece 2, hence log p(k | z) = -inf.)
    s = slopes_forward(*pq)[0]
    u = np.array([(-1.0, s.a[0], s.b[0], 1.0)[which]])
    for _ in range(abs(ulps)):
        u = np.nextafter(u, np.copysign(np.inf, ulps))
    v, k, _, _ = FORWARD[version](u, s)
    assert (abs(u[0]) <= 1.0) == (abs(v[0]) <= 1.0), (u, v)
    if v[0] > 1.0:
        assert k[0] == 2
    if v[0] < -1.0:
        assert k[0] == 0


def test_uniform_fold_breakpoint_regression():
    # P = Q = uniform: b = 1/3 rounds to 0.33333333333333337 and the float 1/3
    # lies one ulp to its left, on piece 2, where v must stay >= -1.
    s = slopes_forward(np.zeros((2, 3)), np.zeros((2, 3)))[0]
    u = np.array([1.0 / 3.0, -1.0 / 3.0])
    v, k, _, _ = surjection_forward(u, s)
    assert np.all(np.abs(v) <= 1.0)
    np.testing.assert_allclose(v, [-1.0, 1.0], rtol=0, atol=4 * EPS)
