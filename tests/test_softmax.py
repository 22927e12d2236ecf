"""Tests of radref.core.softmax: log-softmax over the last axis and the size-3
reductions, on arrays of any number of dimensions and any last-axis length."""
import numpy as np
import pytest
import scipy.special
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import EPS, check_gradient, contract, logits, seeds
from radref.core.softmax import (log_softmax, log_softmax_backward, log_softmax_forward,
                                 max_last, sum_last)

#: batch shapes of one to three axes, and last axes of length 1..6 (3 included)
shapes = st.tuples(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), st.integers(1, 6)).map(
    lambda t: t[0] + (t[1],))


def _direct_log_softmax(x):
    """``x - log(sum(exp(x)))`` over the last axis, unshifted (for moderate ``x``)."""
    return x - np.log(np.sum(np.exp(x), axis=-1, keepdims=True))


@given(x=logits(300.0))
def test_log_softmax_matches_scipy(x):
    log_prob, prob = log_softmax_forward(x)
    expected = scipy.special.log_softmax(x, axis=-1)
    # both are x - logsumexp(x): rounding is relative to the size of the entries
    scale = np.maximum(1.0, np.max(np.abs(x), axis=-1, keepdims=True))
    assert np.all(np.abs(log_prob - expected) <= 1e-14 * scale)
    np.testing.assert_allclose(prob, np.exp(expected), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(prob.sum(axis=-1), 1.0, rtol=0, atol=4 * EPS)


@given(shape=shapes, data=st.data())
def test_log_softmax_any_shape_matches_the_direct_formula(shape, data):
    # Arrays of two to four dimensions whose last axis is 1..6 long: the
    # reductions run over the last axis only, whatever the other axes are.
    x = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-30.0, 30.0)))
    log_prob, prob = log_softmax_forward(x)
    assert log_prob.shape == shape and prob.shape == shape
    np.testing.assert_allclose(log_prob, _direct_log_softmax(x), rtol=0, atol=1e-13)
    np.testing.assert_array_equal(log_softmax(x), log_prob)
    np.testing.assert_array_equal(prob, np.exp(log_prob))
    np.testing.assert_allclose(np.sum(prob, axis=-1), 1.0, rtol=0, atol=8 * EPS)


def test_log_softmax_rows_are_independent_in_three_dimensions():
    # Each (i, j) row of a (2, 3, 5) array is the log-softmax of that row alone.
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 4.0, (2, 3, 5))
    log_prob = log_softmax(x)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(log_prob[i, j], _direct_log_softmax(x[i, j]),
                                       rtol=0, atol=1e-14)
    # a constant added to one row changes nothing
    shifted = x.copy()
    shifted[1, 2] += 7.0
    np.testing.assert_allclose(log_softmax(shifted), log_prob, rtol=0, atol=1e-14)


@given(seed=seeds, m=st.integers(1, 5), n=st.integers(1, 4))
def test_log_softmax_backward_gradient(seed, m, n):
    rng = np.random.default_rng(seed)
    x = 3.0 * rng.standard_normal((n, m))
    g = rng.standard_normal((n, m))

    base = log_softmax_forward(x)[0].copy()

    def loss():
        return contract([g], [log_softmax_forward(x)[0]], [base])

    _, prob = log_softmax_forward(x)
    check_gradient(loss, log_softmax_backward(g, prob), x, label="log_softmax_backward")


@pytest.mark.parametrize("shape", [(2, 3, 4), (3, 2, 5), (2, 2, 2, 2), (1, 4, 3, 6), (2, 1, 1)])
def test_log_softmax_backward_gradient_many_dimensions(shape):
    # The backward pass of arrays of three or four dimensions whose last axis is
    # not 3 (and one that is), against central finite differences.
    rng = np.random.default_rng(sum(shape))
    x = 3.0 * rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    base = log_softmax_forward(x)[0].copy()

    def loss():
        return contract([g], [log_softmax_forward(x)[0]], [base])

    _, prob = log_softmax_forward(x)
    dx = log_softmax_backward(g, prob)
    assert dx.shape == shape
    check_gradient(loss, dx, x, label="log_softmax_backward")


@given(shape=shapes, data=st.data())
def test_sum_last_and_max_last_are_the_numpy_reductions(shape, data):
    x = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-1e6, 1e6)))
    np.testing.assert_array_equal(sum_last(x), np.sum(x, axis=-1))
    np.testing.assert_array_equal(max_last(x), np.max(x, axis=-1))


def test_sum_last_size_three_adds_left_to_right():
    # (1e16 + 1) + 1 = 1e16 in float64, while 1e16 + (1 + 1) = 1e16 + 2
    x = np.array([[1e16, 1.0, 1.0], [1.0, 1.0, 1e16]])
    np.testing.assert_array_equal(sum_last(x), [1e16, 1e16 + 2.0])
    np.testing.assert_array_equal(max_last(np.array([[-1.0, -3.0, -2.0], [0.0, 5.0, 7.0]])),
                                  [-1.0, 7.0])
