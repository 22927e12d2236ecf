"""Tests of radref.core.gating: the gating distribution p(k | z) of paper eq. 31-33
(notes section 2) and inverse-CDF sampling of k (notes section 8)."""
import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import EPS, check_gradient, contract, logits, mutable_copy, seeds
from radref.core.gating import (gating_logits, gating_probabilities, interpolation_weights,
                           log_gating_backward, log_gating_forward, sample_branch)

unit_v = st.floats(-1.0, 1.0)


# ---------------------------------------------------- interpolation weights


def test_interpolation_weights_at_the_ends_are_exact():
    w_s, w_p, w_q = interpolation_weights(np.array([-1.0, 1.0]))
    np.testing.assert_array_equal(w_s, [0.0, 0.0])
    np.testing.assert_array_equal(w_p, [0.0, 1.0])
    np.testing.assert_array_equal(w_q, [1.0, 0.0])


def test_interpolation_weights_hand_values():
    # w_s = (1 + cos pi v)/2, w_P = (1 + sin(pi v/2))/2 at v = 0, +-1/2
    w_s, w_p, w_q = interpolation_weights(np.array([0.0, 0.5, -0.5]))
    h = np.sqrt(0.5)
    np.testing.assert_allclose(w_s, [1.0, 0.5, 0.5], rtol=0, atol=1e-15)
    np.testing.assert_allclose(w_p, [0.5, (1 + h) / 2, (1 - h) / 2], rtol=0, atol=1e-15)
    np.testing.assert_allclose(w_q, [0.5, (1 - h) / 2, (1 + h) / 2], rtol=0, atol=1e-15)


@given(v=hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(-5.0, 5.0)))
def test_interpolation_weights_partition_and_range(v):
    w_s, w_p, w_q = interpolation_weights(v)
    np.testing.assert_allclose(w_p + w_q, 1.0, rtol=0, atol=1e-15)
    for w in (w_s, w_p, w_q):
        assert np.all((0.0 <= w) & (w <= 1.0))
    # outside [-1, 1] the weights are those of the nearest end (clipping)
    clipped = interpolation_weights(np.clip(v, -1.0, 1.0))
    for w, w_clip in zip((w_s, w_p, w_q), clipped):
        np.testing.assert_array_equal(w, w_clip)


# -------------------------------------------------------- gating at v = +-1


@st.composite
def gating_inputs(draw, max_s=1e6, max_logit=10.0, n=None):
    n = draw(st.integers(1, 6)) if n is None else n
    s = draw(hnp.arrays(np.float64, (n, 3), elements=st.floats(-max_s, max_s)))
    log_p = scipy.special.log_softmax(draw(logits(max_logit, rows=n)), axis=-1)
    log_q = scipy.special.log_softmax(draw(logits(max_logit, rows=n)), axis=-1)
    return s, log_p, log_q


@given(inputs=gating_inputs())
def test_gating_equals_p_at_one_and_q_at_minus_one(inputs):
    # whatever the network logits s (here up to 1e6 in size), since w_s(+-1) = 0
    s, log_p, log_q = inputs
    n = s.shape[0]
    for v_end, log_target in ((1.0, log_p), (-1.0, log_q)):
        v = np.full(n, v_end)
        np.testing.assert_allclose(gating_probabilities(v, s, log_p, log_q),
                                   np.exp(log_target), rtol=0, atol=1e-15)
        for k in range(3):
            log_gate, _ = log_gating_forward(v, np.full(n, k), s, log_p, log_q)
            # log-softmax of log P renormalises: rounding relative to |log P|
            tol = 1e-15 * np.maximum(1.0, np.max(np.abs(log_target), axis=-1))
            assert np.all(np.abs(log_gate - log_target[:, k]) <= tol)


@given(inputs=gating_inputs(max_s=30.0), data=st.data())
def test_gating_probabilities_sum_to_one(inputs, data):
    s, log_p, log_q = inputs
    n = s.shape[0]
    v = data.draw(hnp.arrays(np.float64, (n,), elements=st.floats(-3.0, 3.0)))
    prob = gating_probabilities(v, s, log_p, log_q)
    assert np.all(prob >= 0.0)
    np.testing.assert_allclose(prob.sum(axis=-1), 1.0, rtol=0, atol=4 * EPS)
    # and log_gating_forward agrees with them, branch by branch
    for k in range(3):
        log_gate, _ = log_gating_forward(v, np.full(n, k), s, log_p, log_q)
        np.testing.assert_allclose(np.exp(log_gate), prob[:, k], rtol=1e-13, atol=1e-300)


@given(inputs=gating_inputs(max_s=30.0), data=st.data())
def test_gating_matches_independent_formula(inputs, data):
    # eq. 31-33 written out directly, softmax by scipy
    s, log_p, log_q = inputs
    n = s.shape[0]
    v = data.draw(hnp.arrays(np.float64, (n,), elements=unit_v))
    lam = ((1 + np.cos(np.pi * v))[:, None] / 2 * s
           + (1 + np.sin(np.pi * v / 2))[:, None] / 2 * log_p
           + (1 - np.sin(np.pi * v / 2))[:, None] / 2 * log_q)
    scale = np.maximum(1.0, np.max(np.abs(lam), axis=-1, keepdims=True))
    assert np.all(np.abs(gating_logits(v, s, log_p, log_q) - lam) <= 1e-14 * scale)
    expected = scipy.special.softmax(lam, axis=-1)
    np.testing.assert_allclose(gating_probabilities(v, s, log_p, log_q), expected,
                               rtol=1e-11, atol=1e-15)


@given(inputs=gating_inputs(max_s=30.0), data=st.data())
def test_one_hot_outside_unit_interval(inputs, data):
    s, log_p, log_q = inputs
    n = s.shape[0]
    above = data.draw(hnp.arrays(np.float64, (n,), elements=st.floats(1.0, 1e6, exclude_min=True)))
    below = -data.draw(hnp.arrays(np.float64, (n,), elements=st.floats(1.0, 1e6, exclude_min=True)))
    for v, forced in ((above, 2), (below, 0)):
        prob = gating_probabilities(v, s, log_p, log_q)
        np.testing.assert_array_equal(prob, np.eye(3)[np.full(n, forced)])
        for k in range(3):
            log_gate, _ = log_gating_forward(v, np.full(n, k), s, log_p, log_q)
            np.testing.assert_array_equal(log_gate, 0.0 if k == forced else -np.inf)


# ---------------------------------------------------------------- gradients


def _gating_gradient_case(rng, v):
    n = v.shape[0]
    k = rng.integers(0, 3, n)
    s = mutable_copy(rng.standard_normal((n, 3)))
    # log P and log Q are independent inputs here (need not be normalised)
    log_p = mutable_copy(scipy.special.log_softmax(rng.standard_normal((n, 3)), axis=-1))
    log_q = mutable_copy(scipy.special.log_softmax(rng.standard_normal((n, 3)), axis=-1))
    g = rng.standard_normal(n)

    base = log_gating_forward(v, k, s, log_p, log_q)[0].copy()

    def loss():
        return contract([g], [log_gating_forward(v, k, s, log_p, log_q)[0]], [base])

    _, cache = log_gating_forward(v, k, s, log_p, log_q)
    return loss, log_gating_backward(g, cache), (v, s, log_p, log_q)


@given(seed=seeds, n=st.integers(1, 6))
def test_log_gating_backward_gradient_inside(seed, n):
    rng = np.random.default_rng(seed)
    v = mutable_copy(rng.uniform(-0.9, 0.9, n))
    loss, grads, inputs = _gating_gradient_case(rng, v)
    for analytic, x in zip(grads, inputs):
        check_gradient(loss, analytic, x, label="log_gating_backward")


@given(seed=seeds, side=st.sampled_from([-1.0, 1.0]))
def test_log_gating_backward_gradient_near_the_ends(seed, side):
    # 0.9 <= |v| < 1 - 1e-3.  Near v = +-1 the weights w_s, w_P or w_Q fall to
    # ~1e-6, and so do the gradients on s, log P or log Q: a step h = 1e-6 in
    # them moves lambda by ~1e-12, below the rounding noise of the loss.  So
    # each input is stepped by 1e-6 / (its weight): lambda then moves by ~1e-6
    # as in an ordinary check (one row, so the weight is a single number).
    rng = np.random.default_rng(seed)
    v = mutable_copy([side * rng.uniform(0.9, 1.0 - 1e-3)])
    loss, grads, inputs = _gating_gradient_case(rng, v)
    w_s, w_p, w_q = (w[0] for w in interpolation_weights(v))
    steps = (1e-5, 1e-6 / w_s, 1e-6 / w_p, 1e-6 / w_q)
    # dv = sum_j d lambda_j (w_s' s_j + w_P' (log P_j - log Q_j)) with w_s', w_P' ~ 1e-3
    # here: its three terms can cancel to ~1e-6 (seed 414), where a step of 1e-5
    # resolves only ~1e-11 (rounding eps |loss| / h): noise floor for dv only.
    floors = (4.0 * EPS * (1.0 + abs(loss())) / 1e-5, 0.0, 0.0, 0.0)
    for analytic, x, h, floor in zip(grads, inputs, steps, floors):
        check_gradient(loss, analytic, x, h=h, atol=floor, label="log_gating_backward")


@given(seed=seeds, n=st.integers(1, 6))
def test_log_gating_backward_zero_outside(seed, n):
    rng = np.random.default_rng(seed)
    v = rng.uniform(1.0, 4.0, n) * rng.choice([-1.0, 1.0], n)
    v[np.abs(v) == 1.0] = 2.0
    k = np.where(v > 1.0, 2, 0)  # the only branch with a preimage
    s = rng.standard_normal((n, 3))
    log_p = scipy.special.log_softmax(rng.standard_normal((n, 3)), axis=-1)
    log_q = scipy.special.log_softmax(rng.standard_normal((n, 3)), axis=-1)
    _, cache = log_gating_forward(v, k, s, log_p, log_q)
    dv, ds, dlog_p, dlog_q = log_gating_backward(rng.standard_normal(n), cache)
    for grad in (dv, ds, dlog_p, dlog_q):
        assert np.all(grad == 0.0)


def test_log_gating_backward_nonzero_inside():
    # guards the inside gradient test against vacuity
    rng = np.random.default_rng(5)
    n = 8
    v = rng.uniform(-0.9, 0.9, n)
    s, lp, lq = (scipy.special.log_softmax(rng.standard_normal((n, 3)), axis=-1) for _ in range(3))
    _, cache = log_gating_forward(v, rng.integers(0, 3, n), s, lp, lq)
    for grad in log_gating_backward(rng.standard_normal(n), cache):
        assert np.all(grad != 0.0)


# ----------------------------------------------------------------- sampling


def test_sample_branch_inverse_cdf_exact():
    # dyadic probabilities: the CDF (0.25, 0.75, 1) is exact in float64
    prob = np.array([0.25, 0.5, 0.25])
    uniforms = np.array([0.0, np.nextafter(0.25, 0.0), 0.25, 0.5,
                         np.nextafter(0.75, 0.0), 0.75, 0.9, np.nextafter(1.0, 0.0)])
    k = sample_branch(np.broadcast_to(prob, (uniforms.size, 3)), uniforms)
    np.testing.assert_array_equal(k, [0, 0, 1, 1, 1, 2, 2, 2])
    assert k.dtype.kind == "i"


def test_sample_branch_zero_probability_and_one_hot():
    uniforms = np.array([0.0, 0.3, 0.5, np.nextafter(0.5, 0.0), 0.99])
    n = uniforms.size
    # a zero-probability branch is never drawn
    np.testing.assert_array_equal(
        sample_branch(np.broadcast_to([0.5, 0.0, 0.5], (n, 3)), uniforms), [0, 0, 2, 0, 2])
    # one-hot rows (as outside [-1, 1]) always give their branch
    for k in range(3):
        one_hot = np.broadcast_to(np.eye(3)[k], (n, 3))
        np.testing.assert_array_equal(sample_branch(one_hot, uniforms), k)


def test_sample_branch_batch_shape():
    rng = np.random.default_rng(2)
    prob = scipy.special.softmax(rng.standard_normal((4, 5, 3)), axis=-1)
    uniforms = rng.random((4, 5))
    k = sample_branch(prob, uniforms)
    assert k.shape == (4, 5)
    np.testing.assert_array_equal(k.ravel(), sample_branch(prob.reshape(20, 3), uniforms.ravel()))


@pytest.mark.parametrize("prob", [[0.2, 0.3, 0.5], [0.7, 0.05, 0.25], [1 / 3, 1 / 3, 1 / 3]])
def test_sample_branch_chi_square(prob):
    rng = np.random.default_rng(20240601)
    n = 60_000
    k = sample_branch(np.broadcast_to(prob, (n, 3)), rng.random(n))
    counts = np.bincount(k, minlength=3)
    assert scipy.stats.chisquare(counts, n * np.asarray(prob)).pvalue > 1e-3


def test_sample_branch_chi_square_varying_rows():
    # rows with different probabilities: pool the draws over two row types
    rng = np.random.default_rng(77)
    n = 40_000
    prob = np.where(np.arange(n)[:, None] % 2 == 0, [0.1, 0.6, 0.3], [0.5, 0.25, 0.25])
    k = sample_branch(prob, rng.random(n))
    for parity, p in ((0, [0.1, 0.6, 0.3]), (1, [0.5, 0.25, 0.25])):
        counts = np.bincount(k[parity::2], minlength=3)
        assert scipy.stats.chisquare(counts, n / 2 * np.asarray(p)).pvalue > 1e-3
