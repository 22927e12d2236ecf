"""Problems in 4, 6 and 8 dimensions with exact log-densities (issue 24).

Each problem is a **product of the paper's 2-D problems turned by a fixed
random rotation**: draw independent points ``y_j`` of the 2-D problems
``f_1, ..., f_m`` (:mod:`radref.datasets`), stack them into
``y = (y_1, ..., y_m)`` of dimension ``d = 2 m`` and return ``x = R y`` with a
fixed rotation ``R`` (orthogonal, ``det R = +1``).  Without the rotation the
coordinates would split into independent pairs, which a coupling flow with
alternating halves or a mixture with diagonal-block covariances could exploit;
after it every coordinate depends on every other.

The density follows by the change of variables ``y = R^T x``, whose Jacobian
determinant is ``|det R| = 1``:

    log p(x) = sum_j log p_{f_j}((R^T x)_{2j-1, 2j}),

exact up to the 2-D problems' own quadrature (below 1e-12 nats where the data
live, see :mod:`radref.datasets`), and normalised because each factor is.

``R`` is the orthogonal factor of the QR decomposition of a standard normal
``d x d`` matrix drawn from ``np.random.default_rng(ROTATION_SEED + d)``,
with the signs that make the decomposition unique (``diag(r) > 0``, which
makes ``R`` uniformly distributed on the orthogonal group) and its first
column negated if needed so that ``det R = +1``.

Public entry points: :data:`PROBLEMS`, :data:`FACTORS`, :func:`rotation`,
:func:`sample`, :func:`log_density`, :func:`train_test_split_samples`,
:func:`negative_entropy`.
"""
from __future__ import annotations

import functools

import numpy as np

from radref import datasets
from radref.checks import check_array, check_choice, check_int, check_seed_sequence

__all__ = ["PROBLEMS", "FACTORS", "ROTATION_SEED", "rotation", "dimension", "sample",
           "log_density", "train_test_split_samples", "negative_entropy"]

#: each problem's 2-D factors, in the order of the coordinates before the
#: rotation; each dimension adds one factor to the previous problem, so the
#: problems grow one curve or mixture at a time (smooth curves and sharp modes)
FACTORS: dict[str, tuple[str, ...]] = {
    "rotated_4d": ("two_moons", "ring"),
    "rotated_6d": ("two_moons", "ring", "two_circles"),
    "rotated_8d": ("two_moons", "ring", "two_circles", "grid"),
}
PROBLEMS: tuple[str, ...] = tuple(FACTORS)
#: the rotation of a ``d``-dimensional problem comes from the seed ``ROTATION_SEED + d``
ROTATION_SEED = 2024


def _check_name(name):
    return check_choice("problem", name, PROBLEMS)


def dimension(name):
    """Number of coordinates of problem ``name`` (twice its number of factors)."""
    return 2 * len(FACTORS[_check_name(name)])


@functools.lru_cache(maxsize=None)
def _rotation(d):
    a = np.random.default_rng(ROTATION_SEED + d).standard_normal((d, d))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))  # the unique QR with diag(r) > 0: Haar-distributed q
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]  # a proper rotation
    q.setflags(write=False)
    return q


def rotation(name):
    """The fixed rotation ``R`` of problem ``name``, shape ``(d, d)``: ``x = R y``."""
    return _rotation(dimension(name))


def sample(name, n, random_state=None):
    """Draw ``n`` i.i.d. points of problem ``name``.

    Parameters
    ----------
    name : str
        One of :data:`PROBLEMS`.
    n : int
        Number of points, ``n >= 1``.
    random_state : None, int, sequence of int or SeedSequence
        Root entropy; factor ``j`` is drawn by :func:`radref.datasets.sample`
        from the ``j``-th of ``SeedSequence(random_state).spawn(m)`` (one
        independent stream per factor).

    Returns
    -------
    X : ndarray, shape (n, d), float64
        ``X = Y R^T``, the rows ``y`` of the stacked factor samples turned by ``R``.
    """
    factors = FACTORS[_check_name(name)]
    n = check_int("n", n)
    streams = check_seed_sequence("random_state", random_state).spawn(len(factors))
    Y = np.concatenate([datasets.sample(f, n, s) for f, s in zip(factors, streams)], axis=1)
    return Y @ rotation(name).T


def log_density(name, X):
    """Exact log-density of problem ``name`` at the rows of ``X``.

    Parameters
    ----------
    name : str
        One of :data:`PROBLEMS`.
    X : array_like, shape (n, d)
        Finite real numbers.

    Returns
    -------
    log_p : ndarray, shape (n,), float64
        ``sum_j log p_{f_j}`` of the un-rotated coordinate pairs ``Y = X R``
        (the rotation's Jacobian determinant is 1).
    """
    factors = FACTORS[_check_name(name)]
    X = check_array("X", X, dim=2 * len(factors), allow_empty=True)
    Y = X @ rotation(name)
    out = np.zeros(len(X))
    for j, f in enumerate(factors):
        out += datasets.log_density(f, Y[:, 2 * j:2 * j + 2])
    return out


def train_test_split_samples(name, n_train, n_test, random_state=None):
    """Independent training and test sets for problem ``name``, from the
    streams ``SeedSequence(random_state).spawn(2)`` (as in :mod:`radref.datasets`).

    Returns
    -------
    X_train : ndarray, shape (n_train, d)
    X_test : ndarray, shape (n_test, d)
    """
    _check_name(name)
    n_train = check_int("n_train", n_train)
    n_test = check_int("n_test", n_test)
    train_seq, test_seq = check_seed_sequence("random_state", random_state).spawn(2)
    return sample(name, n_train, train_seq), sample(name, n_test, test_seq)


def negative_entropy(name, n=200_000, random_state=0):
    """Monte Carlo estimate of ``E[log p(X)]`` and its standard error, as
    :func:`radref.datasets.negative_entropy` (the entropy of the product is
    the sum of the factors'; the rotation leaves it unchanged)."""
    n = check_int("n", n)
    if n < 2:
        raise ValueError("n must be at least 2 to estimate a standard error")
    lp = log_density(name, sample(name, n, random_state))
    return float(np.mean(lp)), float(np.std(lp, ddof=1) / np.sqrt(n))
