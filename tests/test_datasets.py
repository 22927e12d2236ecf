"""Tests for radref.datasets: sampling, exact log-densities, splits, validation."""
import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from radref import datasets as D

PROBLEMS = D.PROBLEMS
CURVES = ("two_moons", "two_circles", "spiral", "many_moons")

# Paper's Rad mean log-likelihoods (notes section 7).
PAPER_RAD = {
    "grid": -1.20,
    "ring": 3.57,
    "two_moons": -1.21,
    "two_circles": -1.81,
    "spiral": 0.29,
    "many_moons": -0.83,
}

# Boxes holding all the mass: curve / centre extent plus at least 8 sigma on every side.
BOXES = {
    "grid": ((-3.75, 3.75), (-3.75, 3.75)),
    "ring": ((-3.1, 3.1), (-3.1, 3.1)),
    "two_moons": ((-2.0, 3.0), (-1.5, 2.0)),
    "two_circles": ((-2.0, 2.0), (-2.0, 2.0)),
    "spiral": ((-1.1, 1.1), (-1.1, 1.1)),
    "many_moons": ((-3.4, 3.4), (-3.4, 3.4)),
}

SIGMAS = {
    "grid": D.GRID_SIGMA,
    "ring": D.RING_SIGMA,
    "two_moons": D.MOONS_SIGMA,
    "two_circles": D.CIRCLES_SIGMA,
    "spiral": D.SPIRAL_SIGMA,
    "many_moons": D.MANY_MOONS_SIGMA,
}

N_BINS = 8  # chi-square binning: N_BINS x N_BINS cells over the box


@functools.lru_cache(maxsize=None)
def density_grid(name):
    """Cell-centred grid over the box: (density on the grid, cell area, x centres, y centres).

    The spacing is at most sigma (sigma / 2 for the cheap Gaussian mixtures).
    Over the whole box the midpoint rule is then spectrally accurate (the
    density is a convolution with N(0, sigma^2 I), negligible at the box edges:
    aliasing error ~ 2 exp(-2 pi^2 sigma^2 / h^2) <= 6e-9).  Per chi-square bin
    the error is an edge term, far below the chi-square's resolution.  Each box
    side is a whole number of chi-square bins, each a whole number of cells.
    """
    (x0, x1), (y0, y1) = BOXES[name]
    h = SIGMAS[name] / (1.0 if name in CURVES else 2.0)
    per_bin_x = int(np.ceil((x1 - x0) / N_BINS / h))
    per_bin_y = int(np.ceil((y1 - y0) / N_BINS / h))
    nx, ny = per_bin_x * N_BINS, per_bin_y * N_BINS
    hx, hy = (x1 - x0) / nx, (y1 - y0) / ny
    xc = x0 + hx * (np.arange(nx) + 0.5)
    yc = y0 + hy * (np.arange(ny) + 0.5)
    gx, gy = np.meshgrid(xc, yc, indexing="ij")
    dens = np.exp(D.log_density(name, np.stack([gx.ravel(), gy.ravel()], axis=1)))
    return dens.reshape(nx, ny), hx * hy, per_bin_x, per_bin_y


# ---------------------------------------------------------------------------
# Shapes, dtypes, API
# ---------------------------------------------------------------------------


def test_problem_names():
    assert D.PROBLEMS == ("grid", "ring", "two_moons", "two_circles", "spiral", "many_moons")


@pytest.mark.parametrize("name", PROBLEMS)
def test_shapes_and_dtypes(name):
    X = D.sample(name, 7, random_state=0)
    assert X.shape == (7, 2) and X.dtype == np.float64
    lp = D.log_density(name, X)
    assert lp.shape == (7,) and lp.dtype == np.float64
    assert np.all(np.isfinite(lp))
    one = D.sample(name, 1, random_state=0)
    assert one.shape == (1, 2)
    assert D.log_density(name, np.empty((0, 2))).shape == (0,)


@pytest.mark.parametrize("name", PROBLEMS)
def test_per_problem_functions_match(name):
    make = getattr(D, f"make_{name}")
    logp = getattr(D, f"{name}_log_density")
    X = make(50, random_state=3)
    np.testing.assert_array_equal(X, D.sample(name, 50, random_state=3))
    np.testing.assert_array_equal(logp(X), D.log_density(name, X))


@pytest.mark.parametrize("name", PROBLEMS)
def test_scale_within_box(name):
    X = D.sample(name, 10_000, random_state=1)
    assert np.all(np.abs(X) < 4.0)
    (x0, x1), (y0, y1) = BOXES[name]
    assert np.all((X[:, 0] > x0) & (X[:, 0] < x1) & (X[:, 1] > y0) & (X[:, 1] < y1))


# ---------------------------------------------------------------------------
# Determinism and independence
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROBLEMS)
def test_determinism(name):
    a = D.sample(name, 300, random_state=42)
    b = D.sample(name, 300, random_state=42)
    c = D.sample(name, 300, random_state=43)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    seq = D.sample(name, 300, random_state=np.random.SeedSequence(42))
    np.testing.assert_array_equal(a, seq)


def test_global_state_untouched():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    for name in PROBLEMS:
        D.sample(name, 100, random_state=None)
        D.train_test_split_samples(name, 10, 10, random_state=1)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_generator_is_advanced_in_place():
    rng = np.random.default_rng(5)
    a = D.sample("two_moons", 10, random_state=rng)
    b = D.sample("two_moons", 10, random_state=rng)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", PROBLEMS)
def test_train_test_independent(name):
    tr, te = D.train_test_split_samples(name, 500, 200, random_state=7)
    assert tr.shape == (500, 2) and te.shape == (200, 2)
    assert not np.array_equal(tr[:200], te)
    rows_tr = {tuple(r) for r in tr}
    assert not rows_tr & {tuple(r) for r in te}
    # same streams as the documented spawn, reproducible, and not the root seed reused
    s_tr, s_te = np.random.SeedSequence(7).spawn(2)
    np.testing.assert_array_equal(tr, D.sample(name, 500, s_tr))
    np.testing.assert_array_equal(te, D.sample(name, 200, s_te))
    tr2, te2 = D.train_test_split_samples(name, 500, 200, random_state=7)
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(te, te2)
    assert not np.array_equal(tr[:200], D.sample(name, 200, random_state=7))
    # equal sizes must still differ (the peer bug: one seed for both)
    a, b = D.train_test_split_samples(name, 100, 100, random_state=0)
    assert not np.array_equal(a, b)


# ---------------------------------------------------------------------------
# The density: normalisation, independent checks, agreement with samples
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROBLEMS)
def test_density_integrates_to_one(name):
    dens, area, _, _ = density_grid(name)
    total = dens.sum() * area
    assert abs(total - 1.0) <= 1e-3, total
    assert abs(total - 1.0) <= 1e-6, total  # in fact far tighter


@pytest.mark.parametrize("name", ["grid", "ring"])
def test_gaussian_mixture_matches_scipy(name):
    spec = D._spec(name)
    X = np.concatenate(
        [D.sample(name, 200, random_state=9), [[0.0, 0.0], [0.3, -0.7], [5.0, 5.0], [30.0, -20.0]]]
    )
    comp = np.stack(
        [
            stats.multivariate_normal(mean=c, cov=spec.sigma**2 * np.eye(2)).logpdf(X)
            for c in spec.centres
        ],
        axis=1,
    )
    expected = special.logsumexp(comp + np.log(spec.weights), axis=1)
    np.testing.assert_allclose(D.log_density(name, X), expected, rtol=1e-12, atol=1e-9)


def test_two_circles_matches_bessel_closed_form():
    # (1/2pi) int N(x; r(cos t, sin t), s^2 I) dt = exp(-(rho - r)^2 / 2s^2) i0e(rho r / s^2) / (2 pi s^2)
    rng = np.random.default_rng(0)
    X = np.concatenate([D.sample("two_circles", 300, random_state=2), rng.uniform(-2, 2, (200, 2))])
    rho = np.hypot(X[:, 0], X[:, 1])
    s = D.CIRCLES_SIGMA
    terms = [
        np.log(w)
        - (rho - r) ** 2 / (2 * s * s)
        + np.log(special.i0e(rho * r / (s * s)))
        - np.log(2 * np.pi * s * s)
        for r, w in zip(D.CIRCLES_RADII, D.CIRCLES_WEIGHTS)
    ]
    expected = np.logaddexp(*terms)
    np.testing.assert_allclose(D.log_density("two_circles", X), expected, rtol=0, atol=1e-9)


def _reference_curves(name):
    """Curves re-implemented from docs/datasets.md: list of (weight, c(t), t_lo, t_hi, p(t))."""
    if name == "two_moons":
        return [
            (0.5, lambda t: np.stack([np.cos(t), np.sin(t)], -1), 0.0, np.pi, lambda t: 1 / np.pi + 0 * t),
            (0.5, lambda t: np.stack([1 - np.cos(t), 0.5 - np.sin(t)], -1), 0.0, np.pi,
             lambda t: 1 / np.pi + 0 * t),
        ]
    if name == "spiral":
        T, s = 3 * np.pi, 0.1
        out = []
        for sign in (1.0, -1.0):
            out.append((0.5, lambda t, sign=sign: sign * s * np.stack([-t * np.cos(t), t * np.sin(t)], -1),
                        0.0, T, lambda t: 2 * t / T**2))
        return out
    if name == "many_moons":
        K, R, r = 8, 2.5, 0.4
        out = []
        for k in range(K):
            phi = 2 * np.pi * k / K
            m = R * np.array([np.cos(phi), np.sin(phi)])
            lo = phi - np.pi / 2 + (np.pi if k % 2 else 0.0)
            out.append((1 / K, lambda t, m=m: m + r * np.stack([np.cos(t), np.sin(t)], -1),
                        lo, lo + np.pi, lambda t: 1 / np.pi + 0 * t))
        return out
    raise KeyError(name)


@pytest.mark.parametrize("name", ["two_moons", "spiral", "many_moons"])
def test_curve_density_matches_fine_simpson_rule(name):
    """Independent check: composite Simpson over t, 40,000 intervals per curve.

    Curves re-implemented from the documentation; the integrand is smooth, so
    the Simpson error is O(h^4), far below the tolerance.
    """
    s = SIGMAS[name]
    rng = np.random.default_rng(1)
    X = D.sample(name, 60, random_state=11)
    X = np.concatenate([X, X[:30] + 3 * s * rng.standard_normal((30, 2))])
    n_int = 40_000
    simpson = np.ones(n_int + 1)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
    terms = []
    for w, c, lo, hi, p in _reference_curves(name):
        h = (hi - lo) / n_int
        t = np.linspace(lo, hi, n_int + 1)
        pts = c(t)
        d2 = (X[:, :1] - pts[None, :, 0]) ** 2 + (X[:, 1:] - pts[None, :, 1]) ** 2
        with np.errstate(divide="ignore"):  # p(0) = 0 for the spiral
            lw = np.log(w * h / 3 * simpson * p(t))
        terms.append(special.logsumexp(lw[None, :] - d2 / (2 * s * s), axis=1))
    expected = special.logsumexp(np.stack(terms, 1), axis=1) - np.log(2 * np.pi * s * s)
    np.testing.assert_allclose(D.log_density(name, X), expected, rtol=0, atol=1e-9)


def test_curve_density_matches_adaptive_quad():
    """Independent check with scipy.integrate.quad for a few two-moons points."""
    from scipy import integrate

    s = D.MOONS_SIGMA
    pts = [(0.0, 1.0), (1.0, -0.5), (0.5, 0.25), (-1.0, 0.0), (2.0, 0.5), (0.9, 0.6)]
    got = D.log_density("two_moons", np.array(pts))
    for (x, y), g in zip(pts, got):
        total = 0.0
        for w, c, lo, hi, p in _reference_curves("two_moons"):
            def f(t):
                cx, cy = c(np.array([t]))[0]
                return w * p(t) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s)) / (2 * np.pi * s * s)

            total += integrate.quad(f, lo, hi, epsabs=0, epsrel=1e-12, limit=200)[0]
        assert abs(np.log(total) - g) < 1e-9


@pytest.mark.parametrize("name", CURVES)
def test_quadrature_converged(name):
    """Doubling the number of panels changes nothing where the data live."""
    s = SIGMAS[name]
    X = D.sample(name, 2000, random_state=4)
    X = np.concatenate([X, X + 2 * s * np.random.default_rng(0).standard_normal(X.shape)])
    base = D.log_density(name, X)
    finer = D._mixture_log_density(X, *D._quadrature(name, 2))
    np.testing.assert_allclose(base, finer, rtol=0, atol=1e-6)
    np.testing.assert_allclose(base[:2000], finer[:2000], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", PROBLEMS)
def test_samples_agree_with_density_chi_square(name):
    n = 20_000
    X = D.sample(name, n, random_state=2024)
    dens, area, pbx, pby = density_grid(name)
    nx, ny = dens.shape
    probs = (dens.reshape(N_BINS, pbx, N_BINS, pby).sum(axis=(1, 3)) * area).ravel()
    (x0, x1), (y0, y1) = BOXES[name]
    ix = np.floor((X[:, 0] - x0) / (x1 - x0) * N_BINS).astype(int)
    iy = np.floor((X[:, 1] - y0) / (y1 - y0) * N_BINS).astype(int)
    inside = (ix >= 0) & (ix < N_BINS) & (iy >= 0) & (iy < N_BINS)
    counts = np.bincount(ix[inside] * N_BINS + iy[inside], minlength=N_BINS * N_BINS)
    expected = n * probs
    keep = expected >= 5
    obs = np.append(counts[keep], n - counts[keep].sum())
    exp = np.append(expected[keep], n - expected[keep].sum())
    if exp[-1] < 1e-6:  # nothing worth a "rest" bin
        assert obs[-1] == 0
        obs, exp = obs[:-1], exp[:-1] * n / exp[:-1].sum()
    assert keep.sum() >= 4
    p = stats.chisquare(obs, exp).pvalue
    assert p > 1e-3, (name, p)


@pytest.mark.parametrize("name", PROBLEMS)
def test_negative_entropy_above_paper_figure(name):
    est, se = D.negative_entropy(name, n=4000, random_state=0)
    assert isinstance(est, float) and isinstance(se, float)
    assert 0 < se < 0.05
    assert est - 5 * se > PAPER_RAD[name]
    assert est < PAPER_RAD[name] + 1.0  # room, but not absurdly far above
    assert D.negative_entropy(name, n=4000, random_state=0) == (est, se)


# ---------------------------------------------------------------------------
# Far away and numerically awkward inputs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROBLEMS)
def test_finite_far_away(name):
    X = np.array([[1e3, 1e3], [-1e3, 0.0], [0.0, 1e5], [1e100, -1e100], [40.0, 40.0]])
    lp = D.log_density(name, X)
    assert np.all(np.isfinite(lp))
    assert np.all(lp < -100)
    assert lp[3] < lp[2] < lp[0] < lp[4]


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(PROBLEMS),
    xy=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=2),
)
def test_finite_everywhere_property(name, xy):
    lp = D.log_density(name, np.array([xy]))
    assert lp.shape == (1,) and np.isfinite(lp[0])
    # bounded by the peak of a single Gaussian with weight 1
    assert lp[0] <= -np.log(2 * np.pi * SIGMAS[name] ** 2) + 1e-9


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(PROBLEMS), n=st.integers(1, 50), seed=st.integers(0, 2**32 - 1))
def test_sample_property(name, n, seed):
    X = D.sample(name, n, random_state=seed)
    assert X.shape == (n, 2) and np.all(np.isfinite(X))
    np.testing.assert_array_equal(X, D.sample(name, n, random_state=seed))


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["moons", "", "Grid", 3, None])
def test_unknown_name(bad):
    with pytest.raises(ValueError, match="valid names are grid, ring, two_moons"):
        D.sample(bad, 10)
    with pytest.raises(ValueError, match="valid names"):
        D.log_density(bad, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="valid names"):
        D.train_test_split_samples(bad, 1, 1)
    with pytest.raises(ValueError, match="valid names"):
        D.negative_entropy(bad, n=10)


@pytest.mark.parametrize("n", [0, -1, -100])
def test_nonpositive_n(n):
    with pytest.raises(ValueError, match="n must be >= 1"):
        D.sample("grid", n)
    with pytest.raises(ValueError, match="n_train must be >= 1"):
        D.train_test_split_samples("grid", n, 5)
    with pytest.raises(ValueError, match="n_test must be >= 1"):
        D.train_test_split_samples("grid", 5, n)


@pytest.mark.parametrize("n", [True, False, 2.0, "3", None, np.bool_(True), [3]])
def test_non_int_n(n):
    with pytest.raises(TypeError, match="n must be an integer"):
        D.sample("ring", n)
    with pytest.raises(TypeError, match="n must be an integer"):
        D.make_ring(n)


def test_numpy_int_n_accepted():
    assert D.sample("ring", np.int64(4), 0).shape == (4, 2)
    assert D.sample("ring", np.uint8(4), 0).shape == (4, 2)


def test_negative_entropy_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        D.negative_entropy("grid", n=1)


def test_split_rejects_generator():
    with pytest.raises(TypeError, match="SeedSequence"):
        D.train_test_split_samples("grid", 3, 3, random_state=np.random.default_rng(0))
    tr, te = D.train_test_split_samples("grid", 3, 3, random_state=np.random.SeedSequence(1))
    assert tr.shape == te.shape == (3, 2)


@pytest.mark.parametrize(
    "X, exc, match",
    [
        (np.zeros(2), ValueError, r"shape \(n, 2\)"),
        (np.zeros((3, 3)), ValueError, r"shape \(n, 2\)"),
        (np.zeros((2, 2, 1)), ValueError, r"shape \(n, 2\)"),
        (np.array([[0.0, np.nan]]), ValueError, "finite"),
        (np.array([[np.inf, 0.0]]), ValueError, "finite"),
        (np.zeros((2, 2), dtype=complex), TypeError, "real numeric"),
        (np.zeros((2, 2), dtype=bool), TypeError, "real numeric"),
        (np.array([["a", "b"]]), TypeError, "real numeric"),
        ([[1.0, 2.0], [3.0]], TypeError, "numeric array"),
        (np.array([[None, 1.0]]), TypeError, "real numeric"),
    ],
)
def test_bad_points(X, exc, match):
    with pytest.raises(exc, match=match):
        D.log_density("two_moons", X)


def test_integer_and_list_inputs_accepted():
    Xi = np.array([[0, 1], [1, 0], [-2, 3]])
    ref = D.log_density("two_circles", Xi.astype(np.float64))
    np.testing.assert_array_equal(D.log_density("two_circles", Xi), ref)
    np.testing.assert_array_equal(D.log_density("two_circles", Xi.astype(np.int8)), ref)
    np.testing.assert_array_equal(D.log_density("two_circles", Xi.tolist()), ref)
    np.testing.assert_array_equal(
        D.log_density("two_circles", Xi.astype(np.float32)), ref
    )
