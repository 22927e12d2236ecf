"""Tests of radref.datasets_nd: the rotated products of the 2-D problems in
4, 6 and 8 dimensions (issue 24).

The density is normalised because the factors are (tests/test_datasets.py
integrates each 2-D problem) and the rotation has Jacobian determinant 1:
these tests check the two facts the argument needs (R is a proper rotation;
the log-density is the sum of the factors' at the un-rotated coordinates),
that the sampler and the density use the same rotation, determinism and
the input checks."""
import numpy as np
import pytest

from radref import datasets, datasets_nd


@pytest.mark.parametrize("name", datasets_nd.PROBLEMS)
def test_rotation_is_a_proper_rotation(name):
    R = datasets_nd.rotation(name)
    d = datasets_nd.dimension(name)
    assert R.shape == (d, d) and d == int(name.split("_")[1][:-1])
    np.testing.assert_allclose(R.T @ R, np.eye(d), atol=1e-14)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)
    # it mixes coordinates: no column is (close to) an axis
    assert np.max(np.abs(R)) < 0.95
    assert not R.flags.writeable


@pytest.mark.parametrize("name", datasets_nd.PROBLEMS)
def test_log_density_is_the_product_of_the_factors(name):
    # draw the factors by hand, turn them by R, compare with the factors'
    # own log-densities at the un-rotated points (no use of log_density's R^T)
    factors = datasets_nd.FACTORS[name]
    rng = np.random.default_rng(5)
    Y = np.concatenate([datasets.sample(f, 300, rng) for f in factors], axis=1)
    Y[:50] += rng.normal(scale=0.5, size=(50, Y.shape[1]))  # off the data too
    X = Y @ datasets_nd.rotation(name).T
    expected = sum(datasets.log_density(f, Y[:, 2 * j:2 * j + 2]) for j, f in enumerate(factors))
    np.testing.assert_allclose(datasets_nd.log_density(name, X), expected, rtol=1e-10,
                               atol=1e-9)


def test_sampler_and_density_agree():
    # the mean log-density of the sample is the sum of the factors' negative
    # entropies (each estimated on its own 2-D sample): a sampler turning by
    # R^T instead of R would land far from the density's mass
    name = "rotated_4d"
    estimate, se = datasets_nd.negative_entropy(name, n=20_000, random_state=3)
    parts = [datasets.negative_entropy(f, n=20_000, random_state=4) for f in
             datasets_nd.FACTORS[name]]
    total, total_se = sum(p[0] for p in parts), np.sqrt(sum(p[1] ** 2 for p in parts))
    assert abs(estimate - total) < 5 * np.hypot(se, total_se)
    wrong = datasets_nd.sample(name, 2000, 3) @ datasets_nd.rotation(name).T @ \
        datasets_nd.rotation(name).T  # turned twice
    assert np.mean(datasets_nd.log_density(name, wrong)) < estimate - 10


def test_sample_marginals_are_the_factors():
    # un-rotating a sample gives the factor samples drawn from the spawned streams
    name = "rotated_6d"
    X = datasets_nd.sample(name, 500, random_state=11)
    streams = np.random.SeedSequence(11).spawn(3)
    Y = X @ datasets_nd.rotation(name)
    for j, (f, s) in enumerate(zip(datasets_nd.FACTORS[name], streams)):
        np.testing.assert_allclose(Y[:, 2 * j:2 * j + 2], datasets.sample(f, 500, s), atol=1e-12)


def test_determinism_and_independent_splits():
    a_train, a_test = datasets_nd.train_test_split_samples("rotated_8d", 200, 100, 7)
    b_train, b_test = datasets_nd.train_test_split_samples("rotated_8d", 200, 100, 7)
    assert a_train.shape == (200, 8) and a_test.shape == (100, 8)
    np.testing.assert_array_equal(a_train, b_train)
    np.testing.assert_array_equal(a_test, b_test)
    other, _ = datasets_nd.train_test_split_samples("rotated_8d", 200, 100, 8)
    assert not np.allclose(a_train, other)
    assert not np.allclose(a_train[:100], a_test)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="unknown problem"):
        datasets_nd.sample("rotated_5d", 10)
    with pytest.raises(ValueError, match="X"):
        datasets_nd.log_density("rotated_4d", np.zeros((3, 6)))
    with pytest.raises(ValueError):
        datasets_nd.log_density("rotated_4d", np.full((2, 4), np.nan))
    with pytest.raises(TypeError):
        datasets_nd.sample("rotated_4d", 2.5)
    assert datasets_nd.log_density("rotated_4d", np.empty((0, 4))).shape == (0,)
