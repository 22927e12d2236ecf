"""Theorem 1 of the paper (universal approximation by folding, §3.3, eq. 34-37)
as executable mathematics; notes section 6; the walk-through is docs/theory.md.

Representation
--------------
A density on ``[-1, 1]`` is a :class:`Density`, three fields:

- ``pdf(x)``: an elementwise callable, float64 array of any shape ``(...)`` in,
  array of the same shape out; only ever evaluated on ``[-1, 1]``;
- ``derivative(x)``: ``p'(x)``, same convention;
- ``second_derivative_bound``: a float ``M2 >= sup |p''|`` on ``[-1, 1]``.  It is
  rigorous for the constructors of this module, and every fold maps it
  exactly, so the grid estimators below can state a rigorous error bound.

Nothing is tabulated: a folded density is a closure that evaluates the
original one at the preimages, so ``fold(p)`` is exact up to rounding at
every point.  A grid appears only where a supremum is estimated
(:func:`sup_distance_to_uniform`, :func:`lipschitz_constant`,
:func:`derivative_sup`), each returning an :class:`Interval` that contains the
true value.

Folds
-----
A three-piece fold is the normalized three-piece surjection of eq. 14,
restricted to ``[-1, 1]`` (which it maps onto ``[-1, 1]``): slopes
``alpha_1, alpha_2, alpha_3 > 1`` with ``1/alpha_1 + 1/alpha_2 + 1/alpha_3 = 1``
(eq. 10), breakpoints ``a = 2/alpha_1 - 1``, ``b = 1 - 2/alpha_3`` (eq. 11-12).
It is held in a :class:`radref.core.slopes.Slopes` with scalar fields, built by
:func:`fold_slopes`, and evaluated with the model's own
:func:`radref.core.surjection.three_piece_forward` and
:func:`radref.core.surjection.three_piece_inverse`, so the theory and the model
share one surjection.  Branches ``k`` are 0-based as everywhere in radref
(paper: 1, 2, 3).  The pushforward of ``p_X`` (change of variables on each
piece) is::

    p_Z(z) = sum_k p_X(x_k(z)) / alpha_k,        z in [-1, 1]

over the three preimages ``x_k(z)``.  With ``alpha_k = 3`` (the uniform fold,
``a = -1/3``, ``b = 1/3``) this is eq. 34::

    p_Z(z) = 1/3 [ p_X((z - 2)/3) + p_X(-z/3) + p_X((z + 2)/3) ].

The posterior gating ``p(k | z) = (p_X(x_k) / alpha_k) / p_Z(z)`` undoes the
fold exactly (eq. 15 with the gating and the slope of the active piece)::

    p_X(x) = p_Z(f(x)) * p(k(x) | f(x)) * alpha_{k(x)}.

Theorem 1 (proof of eq. 35-37)
------------------------------
``p_Z'(z) = 1/9 [p_X'((z-2)/3) - p_X'(-z/3) + p_X'((z+2)/3)]``, so
``||p_Z'|| <= ||p_X'|| / 3``; after ``N`` uniform folds ``||p_N'|| <= ||p_X'|| / 3^N``.
``p_N`` has mass 1 on an interval of length 2, so ``p_N(z0) = 1/2`` at some
``z0`` in ``(-1, 1)`` and ``|p_N(z) - 1/2| <= |z - z0| ||p_N'|| < 2 ||p_N'||``.
With ``N >= log_3(2 ||p_X'|| / epsilon)`` (:func:`folds_needed`) this is
``< epsilon``.
"""
import math
from typing import Callable, NamedTuple

import numpy as np

from radref.core.slopes import slopes_forward
from radref.core.surjection import three_piece_forward, three_piece_inverse

#: the density of U[-1, 1], the limit of repeated uniform folds
UNIFORM_VALUE = 0.5

#: ``d x_k / d z * alpha_k`` on branch k (0-based) of eq. 14: pieces 1 and 3
#: increase, the middle piece decreases
FOLD_SIGN = np.array([1.0, -1.0, 1.0])

_EPS = float(np.finfo(np.float64).eps)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

#: relative accuracy assumed for a computed density value in the rounding term
#: of :func:`lipschitz_constant` (generous: a value of ``p_N`` is a sum of
#: ``3^N`` terms, each a few ulps off)
_VALUE_ULPS = 64.0


class Density(NamedTuple):
    """A density on ``[-1, 1]`` (see the module docstring).

    ``pdf`` and ``derivative`` map a float64 array of shape ``(...)`` to one of
    the same shape; ``second_derivative_bound`` is a float ``>= sup |p''|``.
    """

    pdf: Callable
    derivative: Callable
    second_derivative_bound: float


class Interval(NamedTuple):
    """An enclosure ``lower <= true value <= upper`` of a supremum estimated on a
    grid: ``lower`` is the grid value (attained, hence a lower bound up to
    rounding) and ``upper`` adds the documented grid-error bound."""

    lower: float
    upper: float


# --------------------------------------------------------------- densities


def _check_domain(x, lower=-1.0, upper=1.0):
    x = np.asarray(x, dtype=np.float64)
    if np.any(~((x >= lower) & (x <= upper))):
        raise ValueError(f"densities of radref.reference.theory live on [{lower}, {upper}]; "
                         f"got values outside (or NaN)")
    return x


def bump_mixture_density(means, widths, weights, floor=0.0):
    """A mixture of Gaussian bumps truncated to ``[-1, 1]``, plus a uniform floor.

    .. math::

        p(x) = \\frac{\\text{floor}}{2} + (1 - \\text{floor}) \\sum_i w_i
               \\frac{\\varphi((x - \\mu_i)/\\sigma_i)}{\\sigma_i Z_i},
        \\qquad Z_i = \\Phi\\Big(\\frac{1 - \\mu_i}{\\sigma_i}\\Big)
                    - \\Phi\\Big(\\frac{-1 - \\mu_i}{\\sigma_i}\\Big)

    (``phi``, ``Phi``: standard normal density and distribution function), so
    every bump, and ``p``, integrates to 1 on ``[-1, 1]``.  ``p`` is smooth and,
    when ``floor > 0``, at least ``floor / 2`` everywhere.

    Parameters
    ----------
    means : array_like, shape (m,)
        Bump centres ``mu_i`` in ``[-1, 1]``.
    widths : array_like, shape (m,)
        Standard deviations ``sigma_i > 0``.
    weights : array_like, shape (m,)
        Positive weights, normalised here to sum to 1.
    floor : float
        Mass of the uniform component, in ``[0, 1)``.

    Returns
    -------
    Density
        ``second_derivative_bound`` uses ``|phi''(t)| = |t^2 - 1| phi(t) <= phi(0)``:
        ``M2 = (1 - floor) sum_i w_i phi(0) / (sigma_i^3 Z_i)``.
    """
    means = np.atleast_1d(np.asarray(means, dtype=np.float64))
    widths = np.atleast_1d(np.asarray(widths, dtype=np.float64))
    weights = np.atleast_1d(np.asarray(weights, dtype=np.float64))
    if not means.shape == widths.shape == weights.shape or means.ndim != 1 or means.size == 0:
        raise ValueError("means, widths and weights must be non-empty and of the same shape (m,)")
    if np.any(~(np.abs(means) <= 1.0)):
        raise ValueError("bump means must lie in [-1, 1]")
    if np.any(~(widths > 0.0)) or np.any(~np.isfinite(widths)):
        raise ValueError("bump widths must be positive and finite")
    if np.any(~(weights > 0.0)) or np.any(~np.isfinite(weights)):
        raise ValueError("bump weights must be positive and finite")
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"floor must be in [0, 1), got {floor}")
    weights = weights / np.sum(weights)
    # mu in [-1, 1]: the two erf arguments have opposite signs, so Z is a sum of
    # two non-negative terms and suffers no cancellation.
    mass = np.array([0.5 * (math.erf((1.0 - m) / (s * math.sqrt(2.0)))
                            + math.erf((1.0 + m) / (s * math.sqrt(2.0))))
                     for m, s in zip(means, widths)])
    # coefficient of phi((x - mu_i) / sigma_i) in p
    coef = (1.0 - floor) * weights / (widths * mass)

    def pdf(x):
        x = _check_domain(x)
        total = np.full(x.shape, 0.5 * floor)
        for m, s, c in zip(means, widths, coef):  # a loop keeps memory at one array per bump
            t = (x - m) / s
            total += c * _INV_SQRT_2PI * np.exp(-0.5 * t * t)
        return total

    def derivative(x):
        x = _check_domain(x)
        total = np.zeros(x.shape)
        for m, s, c in zip(means, widths, coef):
            t = (x - m) / s
            total -= (c / s) * _INV_SQRT_2PI * t * np.exp(-0.5 * t * t)
        return total

    bound = float(np.sum(coef * _INV_SQRT_2PI / widths**2))
    return Density(pdf, derivative, bound)


def random_bump_density(random_state=None, max_bumps=4, width_range=(0.1, 0.5),
                        floor_range=(0.05, 0.3)):
    """A random :func:`bump_mixture_density` (for property tests and figures).

    Parameters
    ----------
    random_state : None, int or numpy.random.Generator
        Passed to ``np.random.default_rng``.
    max_bumps : int
        The number of bumps is uniform on ``1..max_bumps``.
    width_range : (float, float)
        Widths are log-uniform on this range.
    floor_range : (float, float)
        The floor mass is uniform on this range.

    Returns
    -------
    Density
    """
    rng = np.random.default_rng(random_state)
    m = int(rng.integers(1, max_bumps + 1))
    means = rng.uniform(-1.0, 1.0, m)
    widths = np.exp(rng.uniform(np.log(width_range[0]), np.log(width_range[1]), m))
    weights = rng.dirichlet(np.ones(m))
    floor = float(rng.uniform(*floor_range))
    return bump_mixture_density(means, widths, weights, floor)


def trigonometric_density(cos_coefs=(), sin_coefs=()):
    """``p(x) = 1/2 + sum_j c_j cos(j pi x) + s_j sin(j pi x)``, ``j = 1, 2, ...``

    Every term with ``j >= 1`` integrates to 0 on ``[-1, 1]``, so ``p`` has mass
    1 exactly.  ``p >= 1/2 - sum_j (|c_j| + |s_j|)``, required here to be ``>= 0``
    (strictly positive when the sum is below 1/2).

    Parameters
    ----------
    cos_coefs, sin_coefs : array_like, shape (J,) and (J',)
        ``c_1, c_2, ...`` and ``s_1, s_2, ...`` (index 0 holds frequency 1).

    Returns
    -------
    Density
        ``second_derivative_bound = sum_j (j pi)^2 (|c_j| + |s_j|)``.
    """
    c = np.atleast_1d(np.asarray(cos_coefs, dtype=np.float64))
    s = np.atleast_1d(np.asarray(sin_coefs, dtype=np.float64))
    if np.sum(np.abs(c)) + np.sum(np.abs(s)) > 0.5:
        raise ValueError("sum of |coefficients| must be <= 1/2 for a non-negative density")
    freq_c = np.pi * np.arange(1, c.size + 1)
    freq_s = np.pi * np.arange(1, s.size + 1)

    def pdf(x):
        x = _check_domain(x)
        total = np.full(x.shape, UNIFORM_VALUE)
        for cj, wj in zip(c, freq_c):
            total += cj * np.cos(wj * x)
        for sj, wj in zip(s, freq_s):
            total += sj * np.sin(wj * x)
        return total

    def derivative(x):
        x = _check_domain(x)
        total = np.zeros(x.shape)
        for cj, wj in zip(c, freq_c):
            total -= cj * wj * np.sin(wj * x)
        for sj, wj in zip(s, freq_s):
            total += sj * wj * np.cos(wj * x)
        return total

    bound = float(np.sum(freq_c**2 * np.abs(c)) + np.sum(freq_s**2 * np.abs(s)))
    return Density(pdf, derivative, bound)


# ------------------------------------------------------------------- folds


def fold_slopes(alphas):
    """The :class:`radref.core.slopes.Slopes` of the three-piece fold with slopes ``alphas``.

    Parameters
    ----------
    alphas : array_like, shape (3,)
        ``alpha_1, alpha_2, alpha_3``, each ``> 1``, with
        ``1/alpha_1 + 1/alpha_2 + 1/alpha_3 = 1`` (eq. 10) to 1e-12.

    Returns
    -------
    Slopes
        Scalar fields.  Built by :func:`radref.core.slopes.slopes_forward` with both
        boundary logits equal to ``-log alpha``, i.e. ``P = Q = (1/alpha_k)_k``:
        eq. 26-28 then give back ``alpha_1..3`` (``alpha_2 = 1 + alpha_2/alpha_1
        + alpha_2/alpha_3`` is eq. 10 times ``alpha_2``), ``a`` and ``b`` follow
        eq. 11-12, and the outer slopes (unused by a three-piece fold) are
        ``alpha_- = alpha_+ = 1``.  ``P = Q = (1/alpha_k)`` is the posterior gating of
        the uniform density, the fixed point of every fold.

    Raises
    ------
    ValueError
        If a slope is not ``> 1`` or eq. 10 does not hold.
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.shape != (3,):
        raise ValueError(f"alphas must have shape (3,), got {alphas.shape}")
    if np.any(~(alphas > 1.0)) or np.any(~np.isfinite(alphas)):
        raise ValueError(f"each slope of a fold must be finite and > 1, got {alphas}")
    if abs(np.sum(1.0 / alphas) - 1.0) > 1e-12:
        raise ValueError(f"1/alpha_1 + 1/alpha_2 + 1/alpha_3 must be 1 (eq. 10), "
                         f"got {np.sum(1.0 / alphas)!r}")
    logits = -np.log(alphas)
    return slopes_forward(logits, logits)[0]


def uniform_fold_slopes():
    """:func:`fold_slopes` of ``alpha_1 = alpha_2 = alpha_3 = 3`` (``a = -1/3``, ``b = 1/3``)."""
    return fold_slopes([3.0, 3.0, 3.0])


def _inverse_alphas(slopes, ndim):
    """``1 / alpha_k`` of branches 0..2, shape ``(3,) + (1,) * ndim``."""
    log_alphas = np.stack([np.asarray(slopes.log_alpha_1), np.asarray(slopes.log_alpha_2),
                           np.asarray(slopes.log_alpha_3)])
    if log_alphas.shape != (3,):
        raise ValueError("radref.reference.theory folds take Slopes with scalar fields (see fold_slopes)")
    return np.exp(-log_alphas).reshape((3,) + (1,) * ndim)


def fold_preimages(z, slopes):
    """The three preimages ``x_k(z)`` of ``z`` under a fold (notes section 5).

    Parameters
    ----------
    z : array_like, shape (...)
        Points of ``[-1, 1]``.
    slopes : Slopes
        Scalar fields (:func:`fold_slopes`).

    Returns
    -------
    x : ndarray, shape (3, ...)
        ``x[k]`` is the preimage on branch ``k`` (0-based), computed by
        :func:`radref.core.surjection.three_piece_inverse`.
    """
    z = _check_domain(z)
    shape = (3,) + z.shape
    k = np.broadcast_to(np.arange(3).reshape((3,) + (1,) * z.ndim), shape)
    return three_piece_inverse(np.broadcast_to(z, shape), k, slopes)


def fold(density, slopes):
    """Pushforward of a density through a three-piece fold.

    .. math::

        p_Z(z) = \\sum_{k} \\frac{p_X(x_k(z))}{\\alpha_k}, \\qquad
        p_Z'(z) = \\sum_k \\sigma_k \\frac{p_X'(x_k(z))}{\\alpha_k^2}, \\qquad
        |p_Z''| \\le \\|p_X''\\|_\\infty \\sum_k \\alpha_k^{-3}

    (``sigma_k = FOLD_SIGN[k]``; ``x_k(z)`` is linear with slope
    ``sigma_k / alpha_k``).  With ``alpha_k = 3`` this is eq. 34.

    Parameters
    ----------
    density : Density
        ``p_X``.
    slopes : Slopes
        Scalar fields (:func:`fold_slopes`).

    Returns
    -------
    Density
        ``p_Z``; its callables accept any shape ``(...)`` of points in ``[-1, 1]``.
    """
    # one call of the inner density on a stacked (3, ...) array per level: a
    # composition of N folds calls the original density once, on 3^N points.
    def pdf(z):
        x = fold_preimages(z, slopes)
        return np.sum(_inverse_alphas(slopes, x.ndim - 1) * density.pdf(x), axis=0)

    def derivative(z):
        x = fold_preimages(z, slopes)
        w = _inverse_alphas(slopes, x.ndim - 1)
        sign = FOLD_SIGN.reshape(w.shape)
        return np.sum(sign * w * w * density.derivative(x), axis=0)

    inverse_alphas = _inverse_alphas(slopes, 0)
    bound = density.second_derivative_bound * float(np.sum(inverse_alphas**3))
    return Density(pdf, derivative, bound)


def uniform_fold(density):
    """The uniform fold of eq. 34, written out (``alpha_1 = alpha_2 = alpha_3 = 3``).

    .. math::

        p_Z(z) = \\tfrac13 \\Big[ p_X\\big(\\tfrac{z - 2}{3}\\big) + p_X\\big(-\\tfrac{z}{3}\\big)
                 + p_X\\big(\\tfrac{z + 2}{3}\\big) \\Big],
        \\qquad
        p_Z'(z) = \\tfrac19 \\Big[ p_X'\\big(\\tfrac{z - 2}{3}\\big)
                  - p_X'\\big(-\\tfrac{z}{3}\\big)
                 + p_X'\\big(\\tfrac{z + 2}{3}\\big) \\Big]

    so ``||p_Z'|| <= ||p_X'|| / 3`` and ``||p_Z''|| <= ||p_X''|| / 9``.  Equal (up to
    rounding) to ``fold(density, uniform_fold_slopes())``, which goes through
    the model's surjection; this one is the paper's formula, independently.

    Parameters
    ----------
    density : Density

    Returns
    -------
    Density
    """
    def preimages(z):
        z = _check_domain(z)
        return np.stack([(z - 2.0) / 3.0, -z / 3.0, (z + 2.0) / 3.0])

    def pdf(z):
        return np.sum(density.pdf(preimages(z)), axis=0) / 3.0

    def derivative(z):
        d = density.derivative(preimages(z))
        return (d[0] - d[1] + d[2]) / 9.0

    return Density(pdf, derivative, density.second_derivative_bound / 9.0)


def fold_sequence(density, slopes_seq):
    """Compose folds: ``[p_0, p_1, ..., p_N]`` with ``p_0 = density`` and
    ``p_n = fold(p_{n-1}, slopes_seq[n-1])``, the density of
    ``f_n o ... o f_1 (X)``.

    Parameters
    ----------
    density : Density
    slopes_seq : sequence of Slopes
        ``slopes_seq[0]`` is applied first (to the data side).

    Returns
    -------
    list of Density, length ``N + 1``
    """
    densities = [density]
    for slopes in slopes_seq:
        densities.append(fold(densities[-1], slopes))
    return densities


def uniform_folds(density, n_folds):
    """``[p_0, ..., p_N]`` for ``N = n_folds`` uniform folds (eq. 34 applied N times)."""
    densities = [density]
    for _ in range(n_folds):
        densities.append(uniform_fold(densities[-1]))
    return densities


# ------------------------------------------------------------------ gating


def posterior_gating(density, slopes):
    """The exact gating that undoes a fold: ``p(k | z) = (p_X(x_k) / alpha_k) / p_Z(z)``.

    Parameters
    ----------
    density : Density
        ``p_X``, the density *before* the fold.
    slopes : Slopes
        Scalar fields (:func:`fold_slopes`).

    Returns
    -------
    gating : callable
        ``gating(z)`` maps points of shape ``(...)`` in ``[-1, 1]`` to
        probabilities of shape ``(..., 3)`` (last axis ``k = 0, 1, 2``, as
        :func:`radref.core.gating.gating_probabilities`).

    Notes
    -----
    At ``z = +1`` the preimages are ``(a, a, 1)``, at ``z = -1`` they are
    ``(-1, b, b)``; for a continuous ``p_X`` the gating there, ``P`` and ``Q``,
    satisfies ``alpha_1 P_0 = alpha_2 P_1`` and ``alpha_2 Q_1 = alpha_3 Q_2``:
    the continuity conditions (eq. 18-19) hold for the exact posterior, and
    eq. 26-28 applied to ``(P, Q)`` give back the fold's slopes.
    """
    def gating(z):
        x = fold_preimages(z, slopes)
        joint = _inverse_alphas(slopes, x.ndim - 1) * density.pdf(x)
        return np.moveaxis(joint / np.sum(joint, axis=0), 0, -1)

    return gating


def unfold(top, gatings, slopes_seq):
    """The density recovered from the folded one through gatings (eq. 15, N times).

    .. math::

        \\log p_X(x) = \\log p_N(v_N) + \\sum_{n=1}^{N}
            \\big[\\log p_n(k_n \\mid v_n) + \\log \\alpha^{(n)}_{k_n}\\big],
        \\qquad (v_n, k_n) = f_n(v_{n-1}),\\ v_0 = x,

    where ``f_n`` is :func:`radref.core.surjection.three_piece_forward` with
    ``slopes_seq[n-1]`` (which gives ``k_n`` and ``log alpha`` of the active piece).

    Parameters
    ----------
    top : Density
        ``p_N``, the density after all folds.
    gatings : sequence of callables
        ``gatings[n-1](v)`` -> probabilities ``(..., 3)``, the gating of fold ``n``.
    slopes_seq : sequence of Slopes
        As for :func:`fold_sequence`.

    Returns
    -------
    pdf : callable
        Points of shape ``(...)`` in ``[-1, 1]`` -> densities of shape ``(...)``.
    """
    if len(gatings) != len(slopes_seq):
        raise ValueError("one gating per fold is needed")

    def pdf(x):
        v = _check_domain(x)
        log_p = np.zeros(v.shape)
        for gating, slopes in zip(gatings, slopes_seq):
            v, k, log_slope, _ = three_piece_forward(v, slopes)
            prob_k = np.take_along_axis(gating(v), k[..., None], axis=-1)[..., 0]
            log_p += np.log(prob_k) + log_slope
        return np.exp(log_p) * top.pdf(v)

    return pdf


def reconstruct(density, slopes_seq):
    """Fold ``density`` through ``slopes_seq`` and unfold it with the exact
    posterior gatings; returns the recovered ``pdf`` (equal to ``density.pdf``
    up to rounding)."""
    densities = fold_sequence(density, slopes_seq)
    gatings = [posterior_gating(p, s) for p, s in zip(densities[:-1], slopes_seq)]
    return unfold(densities[-1], gatings, slopes_seq)


def absolute_value_fold(density):
    """The two-piece fold ``z = |x|`` of paper §2 (Fig. 4), from ``[-1, 1]`` onto ``[0, 1]``.

    ``p_Z(z) = p_X(-z) + p_X(z)`` (both slopes are 1) and the exact gating is
    ``p(x < 0 | z) = p_X(-z) / p_Z(z)``, ``p(x > 0 | z) = p_X(z) / p_Z(z)``.

    Parameters
    ----------
    density : Density

    Returns
    -------
    pdf : callable
        Points ``(...)`` in ``[0, 1]`` -> ``p_Z``, shape ``(...)``.
    gating : callable
        Points ``(...)`` in ``[0, 1]`` -> ``(p(x < 0 | z), p(x > 0 | z))``, shape ``(..., 2)``.
    """
    def pdf(z):
        z = _check_domain(z, 0.0, 1.0)
        return density.pdf(-z) + density.pdf(z)

    def gating(z):
        z = _check_domain(z, 0.0, 1.0)
        both = np.stack([density.pdf(-z), density.pdf(z)], axis=-1)
        return both / np.sum(both, axis=-1, keepdims=True)

    return pdf, gating


# ------------------------------------------------- numerical estimates


def integrate(f, lower=-1.0, upper=1.0, n_panels=64, order=20):
    """Composite Gauss-Legendre quadrature of ``f`` on ``[lower, upper]``.

    ``n_panels`` equal panels with ``order`` nodes each: exact for piecewise
    polynomials of degree ``2 order - 1`` on the panels; for the smooth
    densities of this module (bump widths >= 0.05) its error is at the
    rounding level (tests/test_theory.py checks it against twice the panels).

    Parameters
    ----------
    f : callable
        Elementwise, array ``(n,)`` -> ``(n,)``.

    Returns
    -------
    float
    """
    nodes, weights = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(lower, upper, n_panels + 1)
    half = 0.5 * np.diff(edges)[:, None]
    mid = 0.5 * (edges[:-1] + edges[1:])[:, None]
    x = np.clip(mid + half * nodes, lower, upper)
    return float(np.sum(half * weights * f(x.ravel()).reshape(x.shape)))


def grid(n_grid):
    """``n_grid`` equally spaced points of ``[-1, 1]``, endpoints included."""
    if n_grid < 2:
        raise ValueError(f"n_grid must be >= 2, got {n_grid}")
    return np.linspace(-1.0, 1.0, n_grid)


def derivative_sup(density, n_grid=2001):
    """``||p'||_inf`` on ``[-1, 1]``, from the exact derivative on a grid.

    Every point is within ``h/2`` of a grid point (``h = 2 / (n_grid - 1)``), so

        max_grid |p'|  <=  ||p'||_inf  <=  max_grid |p'| + (h/2) M2

    with ``M2 = density.second_derivative_bound``.

    Returns
    -------
    Interval
    """
    x = grid(n_grid)
    lower = float(np.max(np.abs(density.derivative(x))))
    h = 2.0 / (n_grid - 1)
    return Interval(lower, lower + 0.5 * h * density.second_derivative_bound)


def lipschitz_constant(density, n_grid=2001):
    """The Lipschitz constant of ``p`` (``= ||p'||_inf`` for C^1 ``p``) from the
    largest difference quotient ``|Delta p / Delta x|`` on a grid.

    Each quotient is ``p'(xi)`` for some ``xi`` in its cell (mean value
    theorem), so it is a lower bound; the cell holding a maximiser ``x*`` of
    ``|p'|`` has ``|xi - x*| <= h``, hence for C^2 ``p``

        L_h  <=  Lip(p)  <=  L_h + h M2 + 2 * 64 eps max|p| / h

    (``h = 2 / (n_grid - 1)``, ``M2 = density.second_derivative_bound``; the last
    term bounds rounding, each value of ``p`` being taken accurate to 64 ulps).

    Returns
    -------
    Interval
    """
    x = grid(n_grid)
    p = density.pdf(x)
    lower = float(np.max(np.abs(np.diff(p) / np.diff(x))))
    h = 2.0 / (n_grid - 1)
    rounding = 2.0 * _VALUE_ULPS * _EPS * float(np.max(np.abs(p))) / h
    return Interval(lower, lower + h * density.second_derivative_bound + rounding)


def sup_distance_to_uniform(density, n_grid=2001):
    """``||p - 1/2||_inf`` on ``[-1, 1]`` (distance to U[-1, 1], eq. 37) on a grid.

    Every point is within ``h/2`` of a grid point, so

        max_grid |p - 1/2|  <=  ||p - 1/2||_inf  <=  max_grid |p - 1/2| + (h/2) ||p'||_inf

    with ``||p'||_inf`` replaced by the upper end of :func:`derivative_sup`.

    Returns
    -------
    Interval
    """
    x = grid(n_grid)
    lower = float(np.max(np.abs(density.pdf(x) - UNIFORM_VALUE)))
    h = 2.0 / (n_grid - 1)
    return Interval(lower, lower + 0.5 * h * derivative_sup(density, n_grid).upper)


def folds_needed(epsilon, derivative_bound):
    """The number of uniform folds of eq. 35: ``N = ceil(log_3(2 ||p'|| / epsilon))``.

    Computed exactly as the smallest integer ``N >= 0`` with
    ``3^N >= 2 * derivative_bound / epsilon`` (no floating-point logarithm:
    ``log(9) / log(3)`` need not round to 2).  Then ``||p_N'|| <= epsilon / 2``
    (eq. 36) and ``||p_N - 1/2|| < epsilon`` (eq. 37).

    Parameters
    ----------
    epsilon : float
        Target sup-distance to U[-1, 1], ``> 0``.
    derivative_bound : float
        An upper bound of ``||p_X'||_inf`` (e.g. ``derivative_sup(p).upper``), ``>= 0``.

    Returns
    -------
    int
    """
    if not (epsilon > 0.0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be positive and finite, got {epsilon}")
    if not (derivative_bound >= 0.0 and math.isfinite(derivative_bound)):
        raise ValueError(f"derivative_bound must be >= 0 and finite, got {derivative_bound}")
    target = 2.0 * derivative_bound / epsilon
    if not math.isfinite(target):
        raise ValueError("2 * derivative_bound / epsilon overflows")
    n = 0
    while 3.0**n < target:  # 3.0**n is exact for n <= 33 and correctly ordered beyond
        n += 1
    return n
