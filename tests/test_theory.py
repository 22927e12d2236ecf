"""Tests of radref.reference.theory: Theorem 1 of the paper (§3.3, eq. 34-37; notes
section 6) checked on random smooth densities.

Densities are mixtures of truncated Gaussian bumps (widths 0.1-0.5, a uniform
floor of mass 0.05-0.3) from :func:`radref.reference.theory.random_bump_density`; their
``||p'||`` reaches about 21, so eq. 35 asks for up to 8 folds at epsilon = 0.01.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radref.core.gating import sample_branch
from radref.core.slopes import slopes_forward
from radref.core.surjection import three_piece_forward
from radref.reference.theory import (FOLD_SIGN, absolute_value_fold, bump_mixture_density,
                           derivative_sup, fold, fold_preimages, fold_sequence, fold_slopes,
                           folds_needed, grid, integrate, lipschitz_constant, posterior_gating,
                           random_bump_density, reconstruct, sup_distance_to_uniform,
                           trigonometric_density, unfold, uniform_fold, uniform_fold_slopes,
                           uniform_folds)

EPS = float(np.finfo(np.float64).eps)
#: seeds for np.random.default_rng drawn by hypothesis (the densities and folds
#: are drawn from the seed, so every example is reproducible from its report)
seeds = st.integers(min_value=0, max_value=2**32 - 1)

#: |integral - 1| allowed.  The composite Gauss-Legendre rule (64 panels x 20
#: nodes) integrates these densities to rounding level: a single bump of width
#: 0.03, narrower than any drawn here, already integrates to within 2e-16 and
#: agrees with 128 panels (test_quadrature_is_converged).  Summing 1280
#: products of O(10) values adds at most ~1280 * 10 * eps = 3e-12 in the worst
#: case and ~1e-15 in practice; 1e-12 leaves a factor 100 over what we observe
#: while a fold that loses mass (e.g. a 1/alpha_k off by 1e-9) fails.
MASS_TOL = 1e-12


def _random_alphas(rng, max_logit=1.5):
    """Slopes of a random three-piece fold: 1/alpha = softmax(l), |l| <= max_logit,
    so eq. 10 holds by construction and every piece is at least 0.03 wide."""
    logits = rng.uniform(-max_logit, max_logit, 3)
    prob = np.exp(logits - logits.max())
    return 1.0 / (prob / prob.sum())


def _random_folds(rng, n_folds):
    """A mix of uniform and random general folds."""
    return [uniform_fold_slopes() if rng.random() < 0.4 else fold_slopes(_random_alphas(rng))
            for _ in range(n_folds)]


# ---------------------------------------------------------------- densities


def test_quadrature_is_converged():
    # The narrowest bump the tests could meet, and narrower: doubling the panels
    # changes nothing beyond rounding, and the exact mass is 1.
    for width in (0.03, 0.1):
        p = bump_mixture_density([0.37], [width], [1.0])
        coarse, fine = integrate(p.pdf), integrate(p.pdf, n_panels=128)
        assert abs(coarse - fine) < 1e-14
        assert abs(coarse - 1.0) < 1e-14


@given(seed=seeds)
@settings(max_examples=20, deadline=None)
def test_random_densities_are_normalised_positive_and_differentiated_exactly(seed):
    p = random_bump_density(seed)
    assert abs(integrate(p.pdf) - 1.0) <= MASS_TOL
    x = grid(2001)
    assert np.all(p.pdf(x) > 0.0)
    # exact derivative against a central difference (error h^2 p'''/6 + eps p / h)
    h = 1e-5
    xi = np.clip(x, -1.0 + h, 1.0 - h)
    numeric = (p.pdf(xi + h) - p.pdf(xi - h)) / (2.0 * h)
    assert np.max(np.abs(numeric - p.derivative(xi))) < 1e-6
    # second_derivative_bound: a second difference equals p''(xi) for some xi
    # (mean value theorem), so it may never exceed the bound beyond rounding
    h2 = 1e-3
    xi = np.clip(x, -1.0 + h2, 1.0 - h2)
    second = (p.pdf(xi + h2) - 2.0 * p.pdf(xi) + p.pdf(xi - h2)) / h2**2
    rounding = 8.0 * EPS * np.max(p.pdf(x)) / h2**2
    assert np.max(np.abs(second)) <= p.second_derivative_bound + rounding


def test_trigonometric_density():
    p = trigonometric_density([0.1, -0.2], [0.05, 0.0, 0.1])
    assert abs(integrate(p.pdf) - 1.0) <= MASS_TOL
    x = np.linspace(-1.0, 1.0, 7)
    expected = (0.5 + 0.1 * np.cos(np.pi * x) - 0.2 * np.cos(2 * np.pi * x)
                + 0.05 * np.sin(np.pi * x) + 0.1 * np.sin(3 * np.pi * x))
    np.testing.assert_allclose(p.pdf(x), expected, rtol=0, atol=1e-15)
    expected_d = np.pi * (-0.1 * np.sin(np.pi * x) + 0.4 * np.sin(2 * np.pi * x)
                          + 0.05 * np.cos(np.pi * x) + 0.3 * np.cos(3 * np.pi * x))
    np.testing.assert_allclose(p.derivative(x), expected_d, rtol=0, atol=1e-14)
    assert p.second_derivative_bound == pytest.approx(np.pi**2 * (0.1 + 0.8 + 0.05 + 0.9))
    with pytest.raises(ValueError, match="1/2"):
        trigonometric_density([0.3, 0.3])


def test_densities_refuse_points_outside_the_interval():
    p = random_bump_density(0)
    with pytest.raises(ValueError, match=r"\[-1.0, 1.0\]"):
        p.pdf(np.array([0.0, 1.0 + 1e-12]))
    with pytest.raises(ValueError):
        uniform_fold(p).pdf(np.array([np.nan]))


def test_grid_estimators_enclose_known_values():
    # p = 1/2 + c cos(pi x): ||p'|| = Lip(p) = c pi, attained at x = +-1/2 only;
    # q = 1/2 + c sin(pi x): ||q - 1/2|| = c, attained at x = +-1/2 only.
    # 100 points (h = 2/99) miss +-1/2, so the grid values are strictly below
    # the true ones and the error bounds have to do the work.
    c = 0.3
    p, q = trigonometric_density([c]), trigonometric_density([], [c])
    for estimate, true in ((derivative_sup(p, 100), c * np.pi),
                           (lipschitz_constant(p, 100), c * np.pi),
                           (sup_distance_to_uniform(q, 100), c)):
        assert estimate.lower < true <= estimate.upper
        assert estimate.upper - estimate.lower < 0.1 * true  # and not vacuous
    # a linear density has M2 = 0: the difference quotient is exact
    linear = trigonometric_density()._replace(pdf=lambda x: 0.5 + 0.2 * np.asarray(x),
                                              derivative=lambda x: np.full(np.shape(x), 0.2))
    assert lipschitz_constant(linear, 50).lower == pytest.approx(0.2, rel=1e-13)


# ----------------------------------------------------------------- the fold


def test_fold_slopes_give_back_the_slopes_and_breakpoints():
    s = uniform_fold_slopes()
    np.testing.assert_allclose(np.exp([s.log_alpha_1, s.log_alpha_2, s.log_alpha_3]), 3.0,
                               rtol=4 * EPS)
    assert s.a == pytest.approx(-1.0 / 3.0, abs=4 * EPS)
    assert s.b == pytest.approx(1.0 / 3.0, abs=4 * EPS)
    # the outer slopes, unused by a three-piece fold, are 1
    assert s.log_alpha_minus == pytest.approx(0.0, abs=4 * EPS)
    assert s.log_alpha_plus == pytest.approx(0.0, abs=4 * EPS)
    alphas = np.array([2.0, 8.0, 8.0 / 3.0])  # 1/2 + 1/8 + 3/8 = 1
    s = fold_slopes(alphas)
    np.testing.assert_allclose(np.exp([s.log_alpha_1, s.log_alpha_2, s.log_alpha_3]), alphas,
                               rtol=8 * EPS)
    assert s.a == pytest.approx(2.0 / 2.0 - 1.0, abs=4 * EPS)        # eq. 11
    assert s.b == pytest.approx(1.0 - 2.0 / (8.0 / 3.0), abs=4 * EPS)  # eq. 12
    for bad in ([3.0, 3.0, 3.1], [0.5, 4.0, 4.0], [2.0, 4.0], [np.inf, 2.0, 2.0]):
        with pytest.raises(ValueError):
            fold_slopes(bad)


@given(seed=seeds)
@settings(max_examples=20, deadline=None)
def test_preimages_map_to_z_on_their_branch(seed):
    rng = np.random.default_rng(seed)
    s = fold_slopes(_random_alphas(rng))
    z = rng.uniform(-1.0, 1.0, 50)
    x = fold_preimages(z, s)
    for k in range(3):
        v, branch, log_slope, _ = three_piece_forward(x[k], s)
        np.testing.assert_allclose(v, z, rtol=0, atol=8 * EPS)
        assert np.all(branch == k)
        # d x_k / dz = FOLD_SIGN[k] / alpha_k: preimages move linearly with z
        dx = (fold_preimages(z + 1e-3 * (z < 0), s)[k] - fold_preimages(z - 1e-3 * (z >= 0), s)[k])
        np.testing.assert_allclose(dx / 1e-3, FOLD_SIGN[k] * np.exp(-log_slope), rtol=1e-9)


@given(seed=seeds)
@settings(max_examples=20, deadline=None)
def test_uniform_fold_formula_matches_the_models_surjection(seed):
    # eq. 34 written out (uniform_fold) against the pushforward through
    # radref.core.surjection.three_piece_inverse with alpha = 3 (fold)
    p = random_bump_density(seed)
    z = grid(1001)
    by_formula, by_model = uniform_fold(p), fold(p, uniform_fold_slopes())
    np.testing.assert_allclose(by_formula.pdf(z), by_model.pdf(z), rtol=1e-14, atol=0)
    np.testing.assert_allclose(by_formula.derivative(z), by_model.derivative(z),
                               rtol=0, atol=1e-14 * derivative_sup(p).upper)
    assert by_formula.second_derivative_bound == pytest.approx(
        by_model.second_derivative_bound, rel=1e-14)


@given(seed=seeds)
@settings(max_examples=20, deadline=None)
def test_fold_derivative_and_curvature_bound(seed):
    rng = np.random.default_rng(seed)
    p = fold(random_bump_density(rng), fold_slopes(_random_alphas(rng)))
    h = 1e-5
    z = rng.uniform(-1.0 + h, 1.0 - h, 200)
    numeric = (p.pdf(z + h) - p.pdf(z - h)) / (2.0 * h)
    assert np.max(np.abs(numeric - p.derivative(z))) < 1e-6
    h2 = 1e-3
    zz = np.linspace(-1.0 + h2, 1.0 - h2, 1999)
    second = (p.pdf(zz + h2) - 2.0 * p.pdf(zz) + p.pdf(zz - h2)) / h2**2
    assert np.max(np.abs(second)) <= p.second_derivative_bound + 8.0 * EPS * 100.0 / h2**2


@given(seed=seeds)
@settings(max_examples=15, deadline=None)
def test_every_uniform_fold_preserves_mass(seed):
    for n, p in enumerate(uniform_folds(random_bump_density(seed), 4)):
        err = abs(integrate(p.pdf) - 1.0)
        assert err <= MASS_TOL, (n, err)


@given(seed=seeds)
@settings(max_examples=20, deadline=None)
def test_general_folds_preserve_mass_and_posterior_gating_sums_to_one(seed):
    rng = np.random.default_rng(seed)
    slopes_seq = _random_folds(rng, 3)
    densities = fold_sequence(random_bump_density(rng), slopes_seq)
    for p in densities:
        err = abs(integrate(p.pdf) - 1.0)
        assert err <= MASS_TOL
    z = np.concatenate([[-1.0, 1.0], rng.uniform(-1.0, 1.0, 200)])
    for p, s in zip(densities[:-1], slopes_seq):
        prob = posterior_gating(p, s)(z)
        assert prob.shape == (z.size, 3)
        assert np.all(prob > 0.0)
        np.testing.assert_allclose(prob.sum(axis=-1), 1.0, rtol=0, atol=4 * EPS)
        # the gating is a valid input of the model's inverse-CDF sampler
        k = sample_branch(prob, rng.random(z.size))
        assert set(np.unique(k)) <= {0, 1, 2}


@given(seed=seeds)
@settings(max_examples=20, deadline=None)
def test_posterior_gating_at_the_boundaries_satisfies_eq_26_to_28(seed):
    # P = p(. | z = 1), Q = p(. | z = -1) of the exact posterior: eq. 26-28
    # applied to them give back the fold's slopes (the posterior of a continuous
    # density meets the continuity conditions eq. 18-19 by itself).
    rng = np.random.default_rng(seed)
    alphas = _random_alphas(rng)
    gating = posterior_gating(random_bump_density(rng), fold_slopes(alphas))
    prob_p, prob_q = gating(np.array(1.0)), gating(np.array(-1.0))
    s, _ = slopes_forward(np.log(prob_p), np.log(prob_q))
    np.testing.assert_allclose(np.exp([s.log_alpha_1, s.log_alpha_2, s.log_alpha_3]), alphas,
                               rtol=1e-13)


# ------------------------------------------------------------ Theorem 1


@given(seed=seeds)
@settings(max_examples=20, deadline=None)
def test_each_uniform_fold_divides_the_lipschitz_constant_by_three(seed):
    # Lip(p_Z) <= Lip(p_X) / 3 (from eq. 34).  On a grid of spacing h the
    # estimate L_h satisfies L_h <= Lip <= L_h + h M2 + rounding (M2 >= ||p''||,
    # see radref.reference.theory.lipschitz_constant), so the test asserts
    #     L_h(p_n)  <=  (L_h(p_{n-1}) + h M2(p_{n-1}) + rounding) / 3,
    # i.e. the grid error allowed is h M2 / 3, below 1e-3 * 350 / 3 = 0.12 for
    # these densities (M2 < 350 over 200 draws), against Lipschitz constants of
    # order 1-20.  Measured (200 draws): Lip(p_1)/Lip(p_0) is at most 0.29
    # (median 0.11) and the ratio tends to 1/9 over later folds.
    # The same with the exact derivative: max|p_n'| <= (max|p_{n-1}'| + h M2 / 2) / 3.
    densities = uniform_folds(random_bump_density(seed), 4)
    for before, after in zip(densities[:-1], densities[1:]):
        lip_before, lip_after = lipschitz_constant(before), lipschitz_constant(after)
        assert lip_after.lower <= lip_before.upper / 3.0
        assert derivative_sup(after).lower <= derivative_sup(before).upper / 3.0


@given(seed=seeds)
@settings(max_examples=20, deadline=None)
def test_general_fold_contracts_the_derivative_by_sum_of_inverse_squared_slopes(seed):
    # |p_Z'(z)| <= sum_k |p_X'(x_k)| / alpha_k^2 <= ||p_X'|| sum_k alpha_k^-2
    rng = np.random.default_rng(seed)
    p = random_bump_density(rng)
    alphas = _random_alphas(rng)
    contraction = np.sum(alphas**-2.0)
    assert derivative_sup(fold(p, fold_slopes(alphas))).lower <= \
        derivative_sup(p).upper * contraction * (1.0 + 1e-12)


@given(seed=seeds)
@settings(max_examples=20, deadline=None)
def test_every_folded_density_takes_the_value_one_half(seed):
    # The Rolle step of eq. 37: F(z) - (z + 1)/2 (F the distribution function)
    # vanishes at z = -1 and z = 1, so p_n(z0) = 1/2 for some z0 in (-1, 1); on
    # a grid, min p_n <= 1/2 <= max p_n.  (A fold that lost or created mass
    # would be entirely above or below 1/2 after a few folds.)
    rng = np.random.default_rng(seed)
    for p in fold_sequence(random_bump_density(rng), _random_folds(rng, 5)):
        values = p.pdf(grid(2001))
        assert values.min() <= 0.5 <= values.max()


@pytest.mark.parametrize("epsilon", [0.2, 0.05, 0.01])
@given(seed=seeds)
@settings(max_examples=12, deadline=None)
def test_enough_uniform_folds_bring_the_density_within_epsilon_of_uniform(epsilon, seed):
    p = random_bump_density(seed)
    # an upper bound of ||p'|| (grid value + h M2 / 2), so N satisfies eq. 35
    n_folds = folds_needed(epsilon, derivative_sup(p).upper)
    top = uniform_folds(p, n_folds)[-1]
    # eq. 36: ||p_N'|| <= epsilon / 2, and eq. 37: ||p_N - 1/2|| < epsilon.
    # After the folds the density is flat, so a 201-point grid suffices: its
    # error bound (h/2) ||p_N'|| <= 0.005 * epsilon / 2 is included in .upper.
    assert derivative_sup(top, 201).lower <= epsilon / 2.0
    distance = sup_distance_to_uniform(top, 201)
    assert distance.upper < epsilon


def test_folds_needed_is_exact_at_powers_of_three():
    assert folds_needed(1.0, 0.5) == 0       # 2 ||p'|| / eps = 1 = 3^0
    assert folds_needed(1.0, 0.4) == 0
    assert folds_needed(1.0, 0.0) == 0
    assert folds_needed(1.0, 1.5) == 1       # target 3
    assert folds_needed(1.0, 1.5000001) == 2
    assert folds_needed(2.0, 9.0) == 2       # target 9 (log(9)/log(3) rounding must not matter)
    assert folds_needed(0.1, 3.0**9 / 20.0) == 9
    assert folds_needed(0.01, 20.0) == int(np.ceil(np.log(4000.0) / np.log(3.0))) == 8
    for bad in ((0.0, 1.0), (-1.0, 1.0), (1.0, -1.0), (np.inf, 1.0), (1.0, np.nan)):
        with pytest.raises(ValueError):
            folds_needed(*bad)


@given(seed=seeds, n_folds=st.integers(1, 4))
@settings(max_examples=20, deadline=None)
def test_exact_gating_after_the_folds_recovers_the_density(seed, n_folds):
    rng = np.random.default_rng(seed)
    p = random_bump_density(rng)
    slopes_seq = _random_folds(rng, n_folds)
    # grid, endpoints, the breakpoints of the first fold and random points
    s = slopes_seq[0]
    x = np.concatenate([grid(2001), [float(s.a), float(s.b)], rng.uniform(-1.0, 1.0, 500)])
    err = np.max(np.abs(reconstruct(p, slopes_seq)(x) - p.pdf(x)))
    assert err <= 1e-10


def test_reconstruction_needs_the_posterior_gating():
    # Control for the test above: the uniform gating p(k | z) = 1/3 gives back
    # p_Z(f(x)), a periodic copy of the folded density (Fig. 2), not p_X.
    p = random_bump_density(1)
    s = uniform_fold_slopes()
    top = uniform_fold(p)
    wrong = unfold(top, [lambda v: np.full(np.shape(v) + (3,), 1.0 / 3.0)], [s])
    x = grid(501)
    np.testing.assert_allclose(wrong(x), top.pdf(three_piece_forward(x, s)[0]), rtol=1e-14)
    assert np.max(np.abs(wrong(x) - p.pdf(x))) > 0.1


def test_absolute_value_fold_of_a_sine_is_uniform_and_the_gating_recovers_it():
    # Fig. 4: p_X = 1/2 (1 + 0.9 sin(4 pi x)); z = |x| gives U[0, 1], and the
    # gating p(x > 0 | z) = p_X(z) carries the whole sine.
    p = trigonometric_density([0.0] * 3, [0.0, 0.0, 0.0, 0.45])
    pdf_z, gating = absolute_value_fold(p)
    z = np.linspace(0.0, 1.0, 101)
    np.testing.assert_allclose(pdf_z(z), 1.0, rtol=0, atol=1e-15)
    prob = gating(z)
    np.testing.assert_allclose(prob.sum(axis=-1), 1.0, rtol=0, atol=4 * EPS)
    np.testing.assert_allclose(prob[:, 1], 0.5 * (1 + 0.9 * np.sin(4 * np.pi * z)), atol=1e-15)
    x = grid(201)
    recovered = pdf_z(np.abs(x)) * np.where(x > 0, gating(np.abs(x))[:, 1], gating(np.abs(x))[:, 0])
    np.testing.assert_allclose(recovered, p.pdf(x), rtol=1e-14)
    # and for a density that is not symmetric-complementary the fold keeps mass
    q = random_bump_density(5)
    assert abs(integrate(absolute_value_fold(q)[0], 0.0, 1.0) - 1.0) <= MASS_TOL
