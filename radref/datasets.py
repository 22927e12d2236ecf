"""The six 2-D toy problems of the paper (section 4.1), with exact log-densities.

The paper names its problems (grid Gaussian mixture, ring Gaussian mixture,
two moons, two circles, spiral, many moons) but does not give their
generators; the definitions below follow common public conventions (FFJORD's
toy data for the ring and the spiral, scikit-learn's ``make_moons`` /
``make_circles`` layouts) with noise levels chosen so that each problem's
negative entropy (the best achievable mean log-likelihood) lies somewhat above
the paper's Rad figure.  Full definitions, formulas and the negative-entropy
table are in ``docs/datasets.md``.

Every problem is a *mixture of isotropic Gaussians with a common standard
deviation* ``sigma``:

- the two Gaussian mixtures have finitely many centres, so the log-density is
  a closed-form log-sum-exp;
- the four noisy-curve problems draw a component ``k`` (a curve ``c_k``), a
  curve parameter ``t ~ p_k(t)`` on ``[t_lo, t_hi]`` and add ``N(0, sigma^2 I)``
  noise, so ``p(x) = sum_k w_k  int p_k(t) N(x; c_k(t), sigma^2 I) dt``.  The
  integral over ``t`` is done by composite Gauss-Legendre quadrature (panels of
  equal arc length, ``QUAD_PANEL_ARC_SIGMAS * sigma`` long, each with
  ``QUAD_NODES_PER_PANEL`` nodes), which turns it into a finite Gaussian
  mixture over the quadrature nodes.  Doubling the number of panels changes
  the log-density by less than 1e-12 nats on samples and within 20 nats of
  the peak, by less than 1e-6 nats within 100 nats of the peak, and by a
  relative 1e-4 far away (e.g. ``|x| = 1e3``), where the integrand over ``t``
  becomes a spike narrower than the node spacing (tested/measured).

Everything is evaluated in log space (log-sum-exp over centres or nodes), so
``log_density`` is finite and warning-free far away from the data.

Public entry points: :data:`PROBLEMS`, :func:`sample`, :func:`log_density`,
:func:`train_test_split_samples`, :func:`negative_entropy`, plus one
``make_<name>`` / ``<name>_log_density`` pair per problem.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from radref.checks import (check_array, check_choice, check_generator, check_int,
                           check_seed_sequence)

__all__ = [
    "GENERATOR_VERSION",
    "PROBLEMS",
    "sample",
    "log_density",
    "train_test_split_samples",
    "negative_entropy",
    "make_grid",
    "grid_log_density",
    "make_ring",
    "ring_log_density",
    "make_two_moons",
    "two_moons_log_density",
    "make_two_circles",
    "two_circles_log_density",
    "make_spiral",
    "spiral_log_density",
    "make_many_moons",
    "many_moons_log_density",
]

PROBLEMS: tuple[str, ...] = ("grid", "ring", "two_moons", "two_circles", "spiral", "many_moons")
#: Version of the generators: bump it whenever a change alters the points drawn for a seed.
GENERATOR_VERSION = 1

LOG_2PI = float(np.log(2.0 * np.pi))

# ---------------------------------------------------------------------------
# Constants.  Every number that defines a distribution lives here.
# ---------------------------------------------------------------------------

# grid: equal-weight mixture of GRID_SIZE x GRID_SIZE isotropic Gaussians on a
# square lattice centred at the origin (the "25 Gaussians" layout).
GRID_SIZE = 5  # lattice points per axis (25 components)
GRID_SPACING = 1.5  # distance between neighbouring centres; centres in {-3, -1.5, 0, 1.5, 3}
GRID_SIGMA = 0.075  # standard deviation of every component

# ring: FFJORD's "8gaussians" layout, equal weights, with a much smaller noise.
RING_N_COMPONENTS = 8  # centres at angles 2*pi*k/8, k = 0..7
RING_RADIUS = 2.0 * np.sqrt(2.0)  # FFJORD: 4 / 1.414 ~= 2.8289; we use 2*sqrt(2) exactly
RING_SIGMA = 0.012  # standard deviation of every component (FFJORD: 0.5 / 1.414)

# two_moons: scikit-learn make_moons layout, unscaled, unshifted.
#   upper moon: (cos t, sin t),            t in [0, pi]
#   lower moon: (1 - cos t, 0.5 - sin t),  t in [0, pi]
MOONS_SIGMA = 0.1  # isotropic Gaussian noise (make_moons(noise=0.1))
MOONS_WEIGHTS = (0.5, 0.5)  # P(upper moon), P(lower moon)
MOONS_LOWER_OFFSET = (1.0, 0.5)  # lower moon = offset - (cos t, sin t)

# two_circles: scikit-learn make_circles layout (two concentric circles).
CIRCLES_RADII = (1.0, 0.5)  # outer radius, inner radius (make_circles(factor=0.5))
CIRCLES_WEIGHTS = (0.5, 0.5)  # P(outer), P(inner), as make_circles' n // 2 split
CIRCLES_SIGMA = 0.1  # isotropic Gaussian noise

# spiral: FFJORD's "2spirals" shape, two interleaved arms through the origin,
#   arm 1: c(t) = SPIRAL_SCALE * (-t cos t, t sin t),  arm 2: -c(t),
#   t = SPIRAL_T_MAX * sqrt(U), U ~ U[0, 1]  (density p(t) = 2 t / T^2).
# FFJORD uses scale 1/3, noise 0.1 and an extra uniform jitter; we drop the
# jitter (so the density stays exact) and shrink the spiral so that the
# paper's figure (0.29 nats) stays achievable with a visibly thick curve.
SPIRAL_T_MAX = 3.0 * np.pi  # 540 degrees: 1.5 turns per arm (as FFJORD)
SPIRAL_SCALE = 0.1  # radius of the point at parameter t is SPIRAL_SCALE * t (max ~0.94)
SPIRAL_WEIGHTS = (0.5, 0.5)  # P(arm 1), P(arm 2)
SPIRAL_SIGMA = 0.0125  # isotropic Gaussian noise

# many_moons (our definition, no public standard): MANY_MOONS_K half-circle
# arcs ("moons") of radius MANY_MOONS_ARC_RADIUS whose centres sit on a circle
# of radius MANY_MOONS_RING_RADIUS at angles phi_k = 2*pi*k/K.  Arc k is
#   m_k + r (cos(phi_k + theta), sin(phi_k + theta)),
#   theta ~ U[-pi/2, pi/2]          for even k (bulging outwards),
#   theta ~ U[pi/2, 3*pi/2]         for odd k  (bulging inwards).
# Each moon is a 0.4x copy of a scikit-learn moon, noise included (0.04 = 0.4 * 0.1).
MANY_MOONS_K = 8  # number of moons (equal weights 1/K)
MANY_MOONS_RING_RADIUS = 2.5  # distance of every arc centre from the origin
MANY_MOONS_ARC_RADIUS = 0.4  # radius of every half-circle arc
MANY_MOONS_SIGMA = 0.04  # isotropic Gaussian noise

# Quadrature for the noisy curves (composite Gauss-Legendre over t).
QUAD_NODES_PER_PANEL = 8  # Gauss-Legendre nodes per panel
QUAD_PANEL_ARC_SIGMAS = 1.0  # arc length of one panel, in units of the problem's sigma

_CHUNK_ELEMENTS = 1 << 16  # rows x nodes per block in log_density (bounds memory)
# Rows with an entry beyond this go through _far_log_density: below it the
# expanded squares of _mixture_log_density cannot overflow (|x|^2 / sigma^2 < 1e306).
_FAR = 2.0 ** 500


# ---------------------------------------------------------------------------
# Problem specifications
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Curve:
    """One noisy-curve mixture component: ``x = point(t) + sigma * eps``."""

    weight: float  # mixture weight of the component
    point: Callable[[np.ndarray], np.ndarray]  # t, shape (m,) -> c(t), shape (m, 2)
    t_lo: float  # parameter interval [t_lo, t_hi]
    t_hi: float
    inv_cdf: Callable[[np.ndarray], np.ndarray]  # U[0, 1] draws -> t ~ p(t)
    log_pdf: Callable[[np.ndarray], np.ndarray]  # log p(t) on (t_lo, t_hi)


@dataclass(frozen=True)
class _Spec:
    """A problem: a Gaussian mixture (``centres``) or a curve mixture (``curves``)."""

    sigma: float
    centres: np.ndarray | None = None  # (K, 2), Gaussian mixtures only
    weights: np.ndarray | None = None  # (K,), Gaussian mixtures only
    curves: tuple[_Curve, ...] = ()


def _uniform_curve(weight, point, t_lo, t_hi):
    width = t_hi - t_lo
    log_p = -float(np.log(width))
    return _Curve(
        weight=weight,
        point=point,
        t_lo=t_lo,
        t_hi=t_hi,
        inv_cdf=lambda u: t_lo + width * u,
        log_pdf=lambda t: np.full(np.shape(t), log_p),
    )


def _circle_arc(centre, radius):
    cx, cy = float(centre[0]), float(centre[1])
    return lambda t: np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=-1)


def _grid_spec():
    half = (GRID_SIZE - 1) / 2.0
    axis = (np.arange(GRID_SIZE) - half) * GRID_SPACING
    gx, gy = np.meshgrid(axis, axis, indexing="ij")
    centres = np.stack([gx.ravel(), gy.ravel()], axis=1)
    weights = np.full(len(centres), 1.0 / len(centres))
    return _Spec(sigma=GRID_SIGMA, centres=centres, weights=weights)


def _ring_spec():
    angles = 2.0 * np.pi * np.arange(RING_N_COMPONENTS) / RING_N_COMPONENTS
    centres = RING_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    weights = np.full(RING_N_COMPONENTS, 1.0 / RING_N_COMPONENTS)
    return _Spec(sigma=RING_SIGMA, centres=centres, weights=weights)


def _two_moons_spec():
    ox, oy = MOONS_LOWER_OFFSET

    def upper(t):
        return np.stack([np.cos(t), np.sin(t)], axis=-1)

    def lower(t):
        return np.stack([ox - np.cos(t), oy - np.sin(t)], axis=-1)

    curves = (
        _uniform_curve(MOONS_WEIGHTS[0], upper, 0.0, np.pi),
        _uniform_curve(MOONS_WEIGHTS[1], lower, 0.0, np.pi),
    )
    return _Spec(sigma=MOONS_SIGMA, curves=curves)


def _two_circles_spec():
    curves = tuple(
        _uniform_curve(w, _circle_arc((0.0, 0.0), r), 0.0, 2.0 * np.pi)
        for r, w in zip(CIRCLES_RADII, CIRCLES_WEIGHTS)
    )
    return _Spec(sigma=CIRCLES_SIGMA, curves=curves)


def _spiral_spec():
    T = SPIRAL_T_MAX
    s = SPIRAL_SCALE
    log_norm = float(np.log(2.0 / (T * T)))

    def arm(sign):
        return lambda t: sign * s * np.stack([-t * np.cos(t), t * np.sin(t)], axis=-1)

    def inv_cdf(u):
        return T * np.sqrt(u)

    def log_pdf(t):
        return log_norm + np.log(t)

    curves = tuple(
        _Curve(weight=w, point=arm(sign), t_lo=0.0, t_hi=T, inv_cdf=inv_cdf, log_pdf=log_pdf)
        for sign, w in zip((1.0, -1.0), SPIRAL_WEIGHTS)
    )
    return _Spec(sigma=SPIRAL_SIGMA, curves=curves)


def _many_moons_spec():
    K = MANY_MOONS_K
    curves = []
    for k in range(K):
        phi = 2.0 * np.pi * k / K
        centre = MANY_MOONS_RING_RADIUS * np.array([np.cos(phi), np.sin(phi)])
        start = phi - np.pi / 2.0 + (np.pi if k % 2 else 0.0)
        curves.append(
            _uniform_curve(1.0 / K, _circle_arc(centre, MANY_MOONS_ARC_RADIUS), start, start + np.pi)
        )
    return _Spec(sigma=MANY_MOONS_SIGMA, curves=tuple(curves))


_SPEC_BUILDERS = {
    "grid": _grid_spec,
    "ring": _ring_spec,
    "two_moons": _two_moons_spec,
    "two_circles": _two_circles_spec,
    "spiral": _spiral_spec,
    "many_moons": _many_moons_spec,
}


@functools.lru_cache(maxsize=None)
def _spec(name):
    return _SPEC_BUILDERS[name]()


def _arc_length_edges(point, t_lo, t_hi, n_panels, n_fine=20_001):
    """Panel edges in ``t`` that cut the curve into ``n_panels`` equal-length pieces."""
    t = np.linspace(t_lo, t_hi, n_fine)
    xy = point(t)
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
    edges = np.interp(np.linspace(0.0, s[-1], n_panels + 1), s, t)
    edges[0], edges[-1] = t_lo, t_hi
    return edges, float(s[-1])


@functools.lru_cache(maxsize=None)
def _quadrature(name, refine=1):
    """Gaussian-mixture form of problem ``name``: ``(centres, log_weights, sigma)``.

    For the Gaussian mixtures this is exact.  For the noisy curves the
    centres are the curve points at the Gauss-Legendre nodes and the log
    weights are ``log(w_k * gl_weight * p_k(t))``; ``refine`` multiplies the
    number of panels (used to check convergence).

    Returns
    -------
    centres : ndarray, shape (M, 2)
    log_weights : ndarray, shape (M,)
    sigma : float
    """
    spec = _spec(name)
    if spec.centres is not None:
        return spec.centres, np.log(spec.weights), spec.sigma
    gl_x, gl_w = np.polynomial.legendre.leggauss(QUAD_NODES_PER_PANEL)
    all_c, all_lw = [], []
    for curve in spec.curves:
        _, length = _arc_length_edges(curve.point, curve.t_lo, curve.t_hi, 1)
        n_panels = int(refine) * max(1, int(np.ceil(length / (QUAD_PANEL_ARC_SIGMAS * spec.sigma))))
        edges, _ = _arc_length_edges(curve.point, curve.t_lo, curve.t_hi, n_panels)
        half = 0.5 * np.diff(edges)  # (P,)
        mid = 0.5 * (edges[1:] + edges[:-1])
        t = (mid[:, None] + half[:, None] * gl_x[None, :]).ravel()
        w = (half[:, None] * gl_w[None, :]).ravel()
        all_c.append(curve.point(t))
        all_lw.append(np.log(curve.weight) + np.log(w) + curve.log_pdf(t))
    return np.concatenate(all_c), np.concatenate(all_lw), spec.sigma


# ---------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------


def _check_name(name):
    return check_choice("problem", name, PROBLEMS)


# ---------------------------------------------------------------------------
# Core: sampling and log-density
# ---------------------------------------------------------------------------


def sample(name, n, random_state=None):
    """Draw ``n`` i.i.d. points from problem ``name``.

    Parameters
    ----------
    name : str
        One of :data:`PROBLEMS`.
    n : int
        Number of points, ``n >= 1``.
    random_state : None, int, sequence of int, SeedSequence or Generator
        Passed to ``np.random.default_rng``; the global NumPy state is never
        used.  The same seed gives bit-identical output.  A ``Generator`` is
        used (and advanced) in place.

    Returns
    -------
    X : ndarray, shape (n, 2), float64

    Notes
    -----
    Draw order (fixed, part of the reproducibility contract): component
    labels ``rng.choice(K, n, p=weights)``; for curves one ``rng.random(n)``
    mapped through the inverse CDF of ``p(t)``; then
    ``rng.standard_normal((n, 2))`` scaled by ``sigma``.
    """
    spec = _spec(_check_name(name))
    n = check_int("n", n)
    rng = check_generator("random_state", random_state)
    if spec.centres is not None:
        labels = rng.choice(len(spec.weights), size=n, p=spec.weights)
        mean = spec.centres[labels]
    else:
        weights = np.array([c.weight for c in spec.curves])
        labels = rng.choice(len(weights), size=n, p=weights)
        u = rng.random(n)
        mean = np.empty((n, 2))
        for k, curve in enumerate(spec.curves):
            mask = labels == k
            mean[mask] = curve.point(curve.inv_cdf(u[mask]))
    return mean + spec.sigma * rng.standard_normal((n, 2))


def _mixture_log_density(X, centres, log_weights, sigma):
    """``log sum_j exp(lw_j) N(x; c_j, sigma^2 I)`` for every row, in log space.

    Uses ``|x - c|^2 = |x|^2 - 2 x.c + |c|^2`` with the ``|x|^2`` term taken
    out of the log-sum-exp (one matrix product per block instead of explicit
    differences); the rounding error this adds is ``~1e-16 |x|^2 / sigma^2``
    (below 1e-11 nats for every problem where the data live).
    """
    out = np.empty(len(X))
    inv = 1.0 / (sigma * sigma)
    bias = log_weights - 0.5 * inv * np.sum(centres * centres, axis=1)  # (M,)
    proj = centres.T * inv  # (2, M)
    const = -LOG_2PI - 2.0 * np.log(sigma)
    rows = max(1, _CHUNK_ELEMENTS // len(centres))
    for lo in range(0, len(X), rows):
        x = X[lo:lo + rows]
        a = x @ proj  # (rows, M)
        a += bias
        m = np.max(a, axis=1, keepdims=True)
        a -= m
        np.exp(a, out=a)
        out[lo:lo + rows] = m[:, 0] + np.log(np.sum(a, axis=1)) - 0.5 * inv * np.sum(x * x, axis=1)
    return out + const


def log_density(name, X):
    """Exact log-density of problem ``name`` at the rows of ``X``.

    Gaussian mixtures: closed-form log-sum-exp over the components.  Noisy
    curves: log-sum-exp over composite Gauss-Legendre nodes of
    ``log(w_k p_k(t) N(x; c_k(t), sigma^2 I))`` (quadrature error below
    1e-12 nats where the data live, relative error below 1e-4 in the far
    tails; see the module docstring).

    Parameters
    ----------
    name : str
        One of :data:`PROBLEMS`.
    X : array_like, shape (n, 2)
        Finite real numbers; integer arrays are converted to float64.

    Returns
    -------
    log_p : ndarray, shape (n,), float64
        Finite wherever the log-density is a float64 (up to ``|x| ~ 1e152``);
        ``-inf`` beyond, where ``|x|^2 / (2 sigma^2)`` exceeds the largest
        float64.  Never NaN, no floating-point warnings.
    """
    centres, log_weights, sigma = _quadrature(_check_name(name))
    X = check_array("X", X, dim=2, allow_empty=True)
    if len(X) == 0:
        return np.empty(0)
    near = np.all(np.abs(X) <= _FAR, axis=1)
    if np.all(near):
        return _mixture_log_density(X, centres, log_weights, sigma)
    out = np.empty(len(X))
    out[near] = _mixture_log_density(X[near], centres, log_weights, sigma)
    out[~near] = _far_log_density(X[~near], sigma)
    return out


def _far_log_density(X, sigma):
    """``-|x|^2 / (2 sigma^2)`` for rows with an entry beyond ``_FAR``: there the
    centres, weights and normalising constant change the log-density by a
    relative 1e-140, far below one ulp.  Computed after an exact power-of-two
    scaling (no square can overflow); ``-inf`` where the value is below -DBL_MAX."""
    y = X * 2.0 ** -600
    q = 0.5 / (sigma * sigma) * np.sum(y * y, axis=1)  # |x|^2 / (2 sigma^2) = q 2^1200
    overflow = q >= 2.0 ** -176
    return np.where(overflow, -np.inf, -np.ldexp(np.where(overflow, 0.0, q), 1200))


def train_test_split_samples(name, n_train, n_test, random_state=None):
    """Independent training and test sets for problem ``name``.

    The two sets come from independent streams
    ``np.random.SeedSequence(random_state).spawn(2)`` (never one seed reused).

    Parameters
    ----------
    name : str
        One of :data:`PROBLEMS`.
    n_train, n_test : int
        Positive sizes.
    random_state : None, int, sequence of int or SeedSequence
        Root entropy.  ``None`` draws fresh OS entropy.

    Returns
    -------
    X_train : ndarray, shape (n_train, 2)
    X_test : ndarray, shape (n_test, 2)
    """
    _check_name(name)
    n_train = check_int("n_train", n_train)
    n_test = check_int("n_test", n_test)
    root = check_seed_sequence("random_state", random_state)
    train_seq, test_seq = root.spawn(2)
    return sample(name, n_train, train_seq), sample(name, n_test, test_seq)


def negative_entropy(name, n=200_000, random_state=0):
    """Monte Carlo estimate of ``E[log p(X)]`` (the best achievable mean log-likelihood).

    Parameters
    ----------
    name : str
        One of :data:`PROBLEMS`.
    n : int
        Number of fresh samples, ``n >= 2``.
    random_state : seed accepted by :func:`sample`

    Returns
    -------
    estimate : float
        Mean of ``log_density(name, X)`` over ``X = sample(name, n, random_state)``.
    standard_error : float
        Sample standard deviation of the log-densities divided by ``sqrt(n)``.
    """
    n = check_int("n", n)
    if n < 2:
        raise ValueError("n must be at least 2 to estimate a standard error")
    lp = log_density(name, sample(name, n, random_state))
    return float(np.mean(lp)), float(np.std(lp, ddof=1) / np.sqrt(n))


# ---------------------------------------------------------------------------
# Per-problem entry points
# ---------------------------------------------------------------------------


def _make_pair(name, title):
    def make(n, random_state=None):
        return sample(name, n, random_state)

    def logp(X):
        return log_density(name, X)

    make.__name__ = f"make_{name}"
    logp.__name__ = f"{name}_log_density"
    make.__qualname__, logp.__qualname__ = make.__name__, logp.__name__
    make.__doc__ = (
        f"Draw ``n`` points from the {title} problem: ``sample({name!r}, n, random_state)``.\n\n"
        "    Returns\n    -------\n    X : ndarray, shape (n, 2), float64\n    "
    )
    logp.__doc__ = (
        f"Exact log-density of the {title} problem: ``log_density({name!r}, X)``.\n\n"
        "    Parameters\n    ----------\n    X : array_like, shape (n, 2)\n\n"
        "    Returns\n    -------\n    log_p : ndarray, shape (n,)\n    "
    )
    return make, logp


make_grid, grid_log_density = _make_pair("grid", "grid Gaussian mixture")
make_ring, ring_log_density = _make_pair("ring", "ring Gaussian mixture")
make_two_moons, two_moons_log_density = _make_pair("two_moons", "two moons")
make_two_circles, two_circles_log_density = _make_pair("two_circles", "two circles")
make_spiral, spiral_log_density = _make_pair("spiral", "spiral")
make_many_moons, many_moons_log_density = _make_pair("many_moons", "many moons")
