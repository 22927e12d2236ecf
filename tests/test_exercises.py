"""Answers of the classroom exercises of docs/exercises.md, checked against radref.

One test per exercise, named ``test_exercise_<n>_...``; the exercise text and
its derivation are in docs/exercises.md.  Indices are 0-based as in radref
(the paper's P_1, P_2, P_3 are P[0], P[1], P[2] here).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radref.core.gating import gating_probabilities, log_gating_backward, log_gating_forward
from radref.core.slopes import slopes_forward
from radref.core.surjection import surjection_forward, three_piece_forward
from radref.reference.theory import (Density, derivative_sup, fold, fold_slopes, folds_needed, grid,
                           integrate, posterior_gating, random_bump_density,
                           sup_distance_to_uniform, trigonometric_density, unfold, uniform_fold,
                           uniform_fold_slopes, uniform_folds)

EPS = float(np.finfo(np.float64).eps)
#: seeds for np.random.default_rng drawn by hypothesis (the densities and folds
#: are drawn from the seed, so every example is reproducible from its report)
seeds = st.integers(min_value=0, max_value=2**32 - 1)

# The boundary gating of exercises 1, 2 and 4.
P = np.array([0.2, 0.5, 0.3])
Q = np.array([0.6, 0.3, 0.1])


def _alphas(slopes):
    return np.exp([slopes.log_alpha_minus, slopes.log_alpha_1, slopes.log_alpha_2,
                   slopes.log_alpha_3, slopes.log_alpha_plus])


def test_exercise_1_slopes_from_the_boundary_conditions():
    # alpha_2 = 1 + P0/P1 + Q2/Q1 = 1 + 2/5 + 1/3 = 26/15,
    # alpha_1 = alpha_2 P1/P0 = 13/3, alpha_3 = alpha_2 Q1/Q2 = 26/5,
    # alpha_- = alpha_1 Q0 = 13/5, alpha_+ = alpha_3 P2 = 39/25.
    s, _ = slopes_forward(np.log(P), np.log(Q))
    np.testing.assert_allclose(_alphas(s), [13 / 5, 13 / 3, 26 / 15, 26 / 5, 39 / 25],
                               rtol=8 * EPS)
    # and the three conditions it was derived from
    a_minus, a1, a2, a3, a_plus = _alphas(s)
    assert a1 * P[0] == pytest.approx(a2 * P[1], rel=8 * EPS)
    assert a2 * Q[1] == pytest.approx(a3 * Q[2], rel=8 * EPS)
    assert 1 / a1 + 1 / a2 + 1 / a3 == pytest.approx(1.0, rel=8 * EPS)


def test_exercise_2_width_of_the_middle_piece():
    # a = 2/alpha_1 - 1 = -7/13, b = 1 - 2/alpha_3 = 8/13, b - a = 2/alpha_2 = 15/13
    s, _ = slopes_forward(np.log(P), np.log(Q))
    assert s.a == pytest.approx(-7 / 13, abs=4 * EPS)
    assert s.b == pytest.approx(8 / 13, abs=4 * EPS)
    assert s.b - s.a == pytest.approx(2 * np.exp(-s.log_alpha_2), abs=8 * EPS)
    assert s.b - s.a == pytest.approx(15 / 13, abs=8 * EPS)


@given(seed=seeds)
@settings(max_examples=20, deadline=None)
def test_exercise_3_derivative_of_the_log_gating(seed):
    # d/dv log p(k | v) = sum_j (delta_jk - p_j) lambda_j'(v),
    # lambda' = c' s + w_P' log P + w_Q' log Q,
    # c' = -pi/2 sin(pi v), w_P' = -w_Q' = pi/4 cos(pi v / 2).
    rng = np.random.default_rng(seed)
    n = 20
    v = rng.uniform(-1.0, 1.0, n)
    k = rng.integers(0, 3, n)
    s = rng.normal(size=(n, 3))
    log_p = np.broadcast_to(np.log(P), (n, 3))
    log_q = np.broadcast_to(np.log(Q), (n, 3))
    prob = gating_probabilities(v, s, log_p, log_q)
    dlam = (-0.5 * np.pi * np.sin(np.pi * v))[:, None] * s \
        + (0.25 * np.pi * np.cos(0.5 * np.pi * v))[:, None] * (log_p - log_q)
    answer = np.sum((np.eye(3)[k] - prob) * dlam, axis=-1)
    _, cache = log_gating_forward(v, k, s, log_p, log_q)
    dv = log_gating_backward(np.ones(n), cache)[0]
    np.testing.assert_allclose(answer, dv, rtol=1e-12, atol=1e-14)
    h = 1e-6
    vh = np.clip(v, -1 + h, 1 - h)
    numeric = (log_gating_forward(vh + h, k, s, log_p, log_q)[0]
               - log_gating_forward(vh - h, k, s, log_p, log_q)[0]) / (2 * h)
    _, cache = log_gating_forward(vh, k, s, log_p, log_q)
    np.testing.assert_allclose(log_gating_backward(np.ones(n), cache)[0], numeric,
                               rtol=1e-6, atol=1e-8)


def test_exercise_4_three_pieces_cannot_meet_the_condition_at_u_equal_1():
    # jump of log p(k | f(u)) + log|f'(u)| across u = 1 (right minus left):
    # three pieces: -log P2 (nonzero unless P2 = 1); five pieces: 0, as
    # alpha_+ = alpha_3 P2.  Across u = -1: +log Q0 and 0 (alpha_- = alpha_1 Q0).
    s, _ = slopes_forward(np.log(P), np.log(Q))
    gate_logits = np.array([0.7, -0.4, 1.1])
    delta = 1e-9
    for u0, expected_three in ((1.0, -np.log(P[2])), (-1.0, np.log(Q[0]))):
        u = np.array([u0 - delta, u0 + delta])
        jumps = {}
        for name, forward in (("three", three_piece_forward), ("five", surjection_forward)):
            v, k, log_slope, _ = forward(u, s)
            log_gate, _ = log_gating_forward(v, k, np.broadcast_to(gate_logits, (2, 3)),
                                             s.log_p, s.log_q)
            contribution = log_gate + log_slope
            jumps[name] = contribution[1] - contribution[0]
        # the contribution is smooth on each side: O(delta) away from the limits
        assert jumps["three"] == pytest.approx(expected_three, abs=1e-7)
        assert jumps["five"] == pytest.approx(0.0, abs=1e-7)


def test_exercise_5_uniform_fold_of_a_quadratic_density():
    # p_X(x) = 3/8 (1 + x^2)  ->  p_Z(z) = (35 + 3 z^2) / 72
    p = Density(lambda x: 0.375 * (1 + np.asarray(x) ** 2), lambda x: 0.75 * np.asarray(x), 0.75)
    z = grid(101)
    # warm-up: p_X(x) = 1/2 + c x  ->  p_Z(z) = 1/2 + c z / 9
    c = 0.25
    linear = Density(lambda x: 0.5 + c * np.asarray(x), lambda x: np.full(np.shape(x), c), 0.0)
    np.testing.assert_allclose(uniform_fold(linear).pdf(z), 0.5 + c * z / 9, rtol=0, atol=4 * EPS)
    np.testing.assert_allclose(uniform_fold(linear).derivative(z), c / 9, rtol=4 * EPS)
    expected = (35 + 3 * z**2) / 72
    np.testing.assert_allclose(uniform_fold(p).pdf(z), expected, rtol=4 * EPS)
    np.testing.assert_allclose(fold(p, uniform_fold_slopes()).pdf(z), expected, rtol=1e-14)
    assert integrate(lambda x: (35 + 3 * x**2) / 72) == pytest.approx(1.0, abs=1e-15)


def test_exercise_6_uniform_fold_divides_frequencies_by_three():
    # fold(1/2 + c cos(j pi x)) = 1/2 + c cos(j pi z / 3) if 3 | j, else 1/2
    c = np.array([0.1, 0.05, -0.08, 0.04, 0.06, 0.07])  # c_1 .. c_6
    folded = uniform_fold(trigonometric_density(c))
    z = grid(201)
    expected = 0.5 + c[2] * np.cos(np.pi * z) + c[5] * np.cos(2 * np.pi * z)
    np.testing.assert_allclose(folded.pdf(z), expected, rtol=0, atol=1e-15)
    # so one fold flattens 1/2 + c cos(pi x) completely
    np.testing.assert_allclose(uniform_fold(trigonometric_density([0.4])).pdf(z), 0.5,
                               rtol=0, atol=1e-15)


def test_exercise_7_number_of_folds_for_epsilon():
    # ||p_X'|| = 3/4 for p_X = 3/8 (1 + x^2): N = ceil(log_3(150)) = 5 (81 < 150 <= 243).
    # Exactly, p_N(z) = 1/2 + 3/8 * 9^-N (z^2 - 1/3), so ||p_N - 1/2|| = 9^-N / 4,
    # already below 0.01 at N = 2: eq. 35 is a sufficient, pessimistic count.
    p = Density(lambda x: 0.375 * (1 + np.asarray(x) ** 2), lambda x: 0.75 * np.asarray(x), 0.75)
    assert folds_needed(0.01, 0.75) == 5
    z = grid(101)
    densities = uniform_folds(p, 5)
    for n, p_n in enumerate(densities):
        np.testing.assert_allclose(p_n.pdf(z), 0.5 + 0.375 * 9.0**-n * (z**2 - 1 / 3),
                                   rtol=0, atol=1e-15)
        distance = sup_distance_to_uniform(p_n, 101)  # grid holds the maximiser z = +-1
        assert distance.lower == pytest.approx(9.0**-n / 4, rel=1e-9, abs=1e-15)
    assert sup_distance_to_uniform(densities[5]).upper < 0.01
    assert sup_distance_to_uniform(densities[2]).upper < 0.01 < sup_distance_to_uniform(
        densities[1]).lower


def _random_fold_slopes(rng, spread):
    """Slopes alpha_k = 1 / w_k of a random fold, w = softmax of logits drawn
    uniformly on [-spread, spread] (so sum_k 1 / alpha_k = 1, eq. 10)."""
    logits = rng.uniform(-spread, spread, 3)
    return 1.0 / (np.exp(logits) / np.exp(logits).sum())


@given(seed=seeds)
@settings(max_examples=20, deadline=None)
def test_exercise_8_the_uniform_fold_contracts_best(seed):
    # ||p_Z'|| <= ||p_X'|| sum_k alpha_k^-2, and sum_k alpha_k^-2 >= 1/3
    # (Cauchy-Schwarz with sum_k alpha_k^-1 = 1), with equality iff alpha_k = 3.
    rng = np.random.default_rng(seed)
    alphas = _random_fold_slopes(rng, spread=2.0)
    contraction = np.sum(alphas**-2.0)
    assert contraction >= 1 / 3 - 4 * EPS
    s = fold_slopes(alphas)
    assert np.sum(np.exp(-2.0 * np.array([s.log_alpha_1, s.log_alpha_2, s.log_alpha_3]))) \
        == pytest.approx(contraction, rel=1e-14)
    assert np.sum(np.full(3, 3.0) ** -2.0) == pytest.approx(1 / 3, rel=EPS)
    p = random_bump_density(rng)
    assert derivative_sup(fold(p, s)).lower <= derivative_sup(p).upper * contraction


@given(seed=seeds)
@settings(max_examples=20, deadline=None)
def test_exercise_9_exact_posterior_meets_the_continuity_conditions(seed):
    # At z = 1 the preimages of branches 0 and 1 coincide (x = a), so
    # P0 / P1 = alpha_2 / alpha_1; at z = -1 those of branches 1 and 2 (x = b),
    # so Q2 / Q1 = alpha_2 / alpha_3: eq. 18-19 hold for any continuous p_X.
    rng = np.random.default_rng(seed)
    alphas = _random_fold_slopes(rng, spread=1.5)
    gating = posterior_gating(random_bump_density(rng), fold_slopes(alphas))
    big_p, big_q = gating(np.array(1.0)), gating(np.array(-1.0))
    assert alphas[0] * big_p[0] == pytest.approx(alphas[1] * big_p[1], rel=1e-13)
    assert alphas[1] * big_q[1] == pytest.approx(alphas[2] * big_q[2], rel=1e-13)


def test_exercise_10_unfolding_with_a_constant_gating_is_figure_2():
    # Gating 1/3 and alpha = 3: p_X(x) = p_Z(f(x)) * 1/3 * 3 = p_Z(3x + 2) on
    # [-1, -1/3), p_Z(-3x) on [-1/3, 1/3), p_Z(3x - 2) on [1/3, 1] (Fig. 2 caption).
    p_z = trigonometric_density([0.4])
    unfolded = unfold(p_z, [lambda v: np.full(np.shape(v) + (3,), 1.0 / 3.0)],
                      [uniform_fold_slopes()])
    x = np.concatenate([grid(301), np.random.default_rng(0).uniform(-1, 1, 300)])
    caption = np.where(x < -1 / 3, p_z.pdf(np.clip(3 * x + 2, -1, 1)),
                       np.where(x < 1 / 3, p_z.pdf(np.clip(-3 * x, -1, 1)),
                                p_z.pdf(np.clip(3 * x - 2, -1, 1))))
    np.testing.assert_allclose(unfolded(x), caption, rtol=1e-13)
    assert integrate(unfolded) == pytest.approx(1.0, abs=1e-13)
