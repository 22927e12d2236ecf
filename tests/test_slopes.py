"""Tests of radref.core.slopes: slopes and breakpoints from the boundary gating
(paper eq. 26-30, notes sections 3 and 8)."""
import numpy as np
import pytest
import scipy.special
from hypothesis import given
from hypothesis import strategies as st

from helpers import EPS, check_gradient, contract, logit_pairs, seeds
from radref.core.slopes import Slopes, slopes_backward, slopes_forward

LOG_ALPHA_FIELDS = ("log_alpha_minus", "log_alpha_1", "log_alpha_2",
                    "log_alpha_3", "log_alpha_plus")


def _magnitude(*terms):
    """Largest absolute value among the terms, at least 1 (per batch entry)."""
    return np.maximum(1.0, np.max(np.abs(np.stack(terms)), axis=0))


# ----------------------------------------------------- identities of notes §3


def _check_boundary_identities(p_logits, q_logits):
    s, _ = slopes_forward(p_logits, q_logits)
    for field in s:
        assert np.all(np.isfinite(field))
    lp, lq = s.log_p, s.log_q
    # Each identity, in log space, is exact up to rounding of terms whose size is
    # the size of the logits: tolerance 1e-12 relative to the largest term.
    pairs = [
        # alpha_1 P_1 = alpha_2 P_2  (continuity at u = a)
        ((s.log_alpha_1, lp[:, 0]), (s.log_alpha_2, lp[:, 1])),
        # alpha_2 Q_2 = alpha_3 Q_3  (continuity at u = b)
        ((s.log_alpha_2, lq[:, 1]), (s.log_alpha_3, lq[:, 2])),
        # P_3 = alpha_+ / alpha_3    (continuity at u = 1)
        ((lp[:, 2], s.log_alpha_3), (s.log_alpha_plus,)),
        # Q_1 = alpha_- / alpha_1    (continuity at u = -1)
        ((lq[:, 0], s.log_alpha_1), (s.log_alpha_minus,)),
    ]
    for lhs, rhs in pairs:
        diff = sum(lhs) - sum(rhs)
        assert np.all(np.abs(diff) <= 1e-12 * _magnitude(*lhs, *rhs)), diff


@given(pq=logit_pairs(30.0))
def test_boundary_identities(pq):
    _check_boundary_identities(*pq)


@given(pq=logit_pairs(300.0))
def test_boundary_identities_extreme_logits_stay_finite(pq):
    # Probabilities down to e^-600 ~ 1e-261 (and ratios far beyond float range):
    # the log-space computation keeps every log-slope finite and exact.
    _check_boundary_identities(*pq)


def _check_inverse_slopes_sum_to_one(p_logits, q_logits):
    s, _ = slopes_forward(p_logits, q_logits)
    total = np.exp(-s.log_alpha_1) + np.exp(-s.log_alpha_2) + np.exp(-s.log_alpha_3)
    assert np.all(np.abs(total - 1.0) <= 1e-12)


@given(pq=logit_pairs(30.0))
def test_inverse_slopes_sum_to_one(pq):
    _check_inverse_slopes_sum_to_one(*pq)


@given(pq=logit_pairs(300.0))
def test_inverse_slopes_sum_to_one_extreme_logits(pq):
    _check_inverse_slopes_sum_to_one(*pq)


@given(pq=logit_pairs(8.0))
def test_breakpoints_strictly_ordered_moderate_logits(pq):
    # With |logit| <= 8 every 1/alpha_i >= e^-32 / 3 >> eps, so -1 < a < b < 1
    # holds strictly in float64 too.
    s, _ = slopes_forward(*pq)
    assert np.all(-1.0 < s.a)
    assert np.all(s.a < s.b)
    assert np.all(s.b < 1.0)


def _gap_tolerance(s):
    # a = 2 exp(-L1) - 1 and b = 1 - 2 exp(-L3): an exponent L known to
    # eps * |L| (absolute) gives exp(-L) to a relative eps * |L|.  For saturated
    # logits |L| reaches ~600, so a and b carry absolute errors ~1e-13.
    return 4.0 * EPS * (1.0 + np.maximum.reduce(
        [np.abs(s.log_alpha_1), np.abs(s.log_alpha_2), np.abs(s.log_alpha_3)]))


@pytest.mark.parametrize("max_abs", [30.0, 300.0])
@given(data=st.data())
def test_breakpoints_ordered_wide_logits(max_abs, data):
    # For saturated logits the mathematically strict inequalities can round away:
    # a = -1 exactly when 2/alpha_1 < eps/2, a = b = 1 when P1 >> P2, and the
    # gap b - a = 2/alpha_2 (e.g. 1e-236) is far below one ulp.  Worse, a and b
    # are computed separately from exp(-L1), exp(-L3) with L up to ~600, so a can
    # exceed b by ~1e-13 (found by this suite; see _gap_tolerance).  In the wide
    # range we therefore test -1 <= a, b <= 1 exactly and a <= b up to that
    # rounding.
    s, _ = slopes_forward(*data.draw(logit_pairs(max_abs)))
    assert np.all(-1.0 <= s.a) and np.all(s.a <= 1.0)
    assert np.all(-1.0 <= s.b) and np.all(s.b <= 1.0)
    assert np.all(s.a <= s.b + _gap_tolerance(s))


def test_breakpoints_can_round_to_the_ends():
    # The documented float64 saturation (why the wide-range test uses <=):
    # P1 / P2 = e^-600 gives 2/alpha_1 ~ 1e-261 and a == -1 exactly.
    s, _ = slopes_forward(np.array([[-300.0, 300.0, 0.0]]), np.array([[0.0, 300.0, -300.0]]))
    assert s.a[0] == -1.0
    assert np.isfinite(s.log_alpha_1[0]) and s.log_alpha_1[0] > 599.0


@pytest.mark.parametrize("max_abs", [8.0, 30.0, 300.0])
@given(data=st.data())
def test_breakpoint_gap_is_two_over_alpha_2(max_abs, data):
    # b - a = 2 (1 - 1/alpha_1 - 1/alpha_3) = 2 / alpha_2
    s, _ = slopes_forward(*data.draw(logit_pairs(max_abs)))
    diff = (s.b - s.a) - 2.0 * np.exp(-s.log_alpha_2)
    assert np.all(np.abs(diff) <= _gap_tolerance(s)), diff


@given(pq=logit_pairs(30.0))
def test_log_p_log_q_fields_are_log_softmax(pq):
    p_logits, q_logits = pq
    s, _ = slopes_forward(p_logits, q_logits)
    for field, x in ((s.log_p, p_logits), (s.log_q, q_logits)):
        scale = np.maximum(1.0, np.max(np.abs(x), axis=-1, keepdims=True))
        assert np.all(np.abs(field - scipy.special.log_softmax(x, axis=-1)) <= 1e-14 * scale)


# ------------------------------- independent probability-space implementation


def _slopes_in_probability_space(p_logits, q_logits):
    """Direct transcription of paper eq. 26-30 and 11-12 (1-based P1..P3 -> [:, 0..2])."""
    P = np.exp(p_logits) / np.exp(p_logits).sum(axis=-1, keepdims=True)
    Q = np.exp(q_logits) / np.exp(q_logits).sum(axis=-1, keepdims=True)
    alpha_2 = 1.0 + P[:, 0] / P[:, 1] + Q[:, 2] / Q[:, 1]
    alpha_1 = alpha_2 * P[:, 1] / P[:, 0]
    alpha_3 = alpha_2 * Q[:, 1] / Q[:, 2]
    alpha_minus = alpha_1 * Q[:, 0]
    alpha_plus = alpha_3 * P[:, 2]
    a = 2.0 / alpha_1 - 1.0
    b = 1.0 - 2.0 / alpha_3
    return alpha_minus, alpha_1, alpha_2, alpha_3, alpha_plus, a, b, P, Q


@given(pq=logit_pairs(5.0))
def test_slopes_match_probability_space_formulas(pq):
    p_logits, q_logits = pq
    s, _ = slopes_forward(p_logits, q_logits)
    *alphas, a, b, P, Q = _slopes_in_probability_space(p_logits, q_logits)
    for name, alpha in zip(LOG_ALPHA_FIELDS, alphas):
        np.testing.assert_allclose(getattr(s, name), np.log(alpha), rtol=1e-12, atol=1e-12,
                                   err_msg=name)
    np.testing.assert_allclose(s.a, a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.b, b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.exp(s.log_p), P, rtol=1e-12)
    np.testing.assert_allclose(np.exp(s.log_q), Q, rtol=1e-12)


def test_slopes_hand_example():
    # P = Q = uniform: alpha_2 = 3, alpha_1 = alpha_3 = 3, alpha_-+ = 1,
    # a = -1/3, b = 1/3 (the uniform fold of notes §6 with unit outer slopes).
    s, _ = slopes_forward(np.zeros((1, 3)), np.zeros((1, 3)))
    np.testing.assert_allclose([s.log_alpha_1[0], s.log_alpha_2[0], s.log_alpha_3[0]],
                               np.log(3.0), rtol=1e-15)
    np.testing.assert_allclose([s.log_alpha_minus[0], s.log_alpha_plus[0]], 0.0, atol=1e-15)
    np.testing.assert_allclose([s.a[0], s.b[0]], [-1.0 / 3.0, 1.0 / 3.0], rtol=1e-15)


def test_slopes_broadcast_over_batch_shape():
    rng = np.random.default_rng(7)
    p, q = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4, 3))
    s, _ = slopes_forward(p, q)
    flat, _ = slopes_forward(p.reshape(8, 3), q.reshape(8, 3))
    for name in Slopes._fields:
        field = getattr(s, name)
        assert field.shape == ((2, 4, 3) if name in ("log_p", "log_q") else (2, 4))
        np.testing.assert_array_equal(field.reshape(getattr(flat, name).shape),
                                      getattr(flat, name))


# ---------------------------------------------------------------- gradients


@given(seed=seeds, n=st.integers(1, 4))
def test_slopes_backward_gradient(seed, n):
    rng = np.random.default_rng(seed)
    p_logits = 1.5 * rng.standard_normal((n, 3))
    q_logits = 1.5 * rng.standard_normal((n, 3))
    # a random upstream gradient on every field of Slopes
    upstream = Slopes(*(rng.standard_normal(np.shape(f))
                        for f in slopes_forward(p_logits, q_logits)[0]))

    base = [f.copy() for f in slopes_forward(p_logits, q_logits)[0]]

    def loss():
        return contract(upstream, slopes_forward(p_logits, q_logits)[0], base)

    _, cache = slopes_forward(p_logits, q_logits)
    dp, dq = slopes_backward(upstream, cache)
    check_gradient(loss, dp, p_logits, label="slopes_backward")
    check_gradient(loss, dq, q_logits, label="slopes_backward")


@pytest.mark.parametrize("field", Slopes._fields)
def test_slopes_backward_each_field_alone(field):
    # Upstream gradient on one field only: each term of the backward pass is
    # checked in isolation (a wrong sign in one term cannot hide behind others).
    rng = np.random.default_rng(Slopes._fields.index(field))
    p_logits = rng.standard_normal((5, 3))
    q_logits = rng.standard_normal((5, 3))
    s, cache = slopes_forward(p_logits, q_logits)
    g = rng.standard_normal(np.shape(getattr(s, field)))
    upstream = Slopes(*(g if name == field else np.zeros(np.shape(f))
                        for name, f in zip(Slopes._fields, s)))

    base = getattr(s, field).copy()

    def loss():
        return contract([g], [getattr(slopes_forward(p_logits, q_logits)[0], field)], [base])

    dp, dq = slopes_backward(upstream, cache)
    check_gradient(loss, dp, p_logits, label="slopes_backward")
    check_gradient(loss, dq, q_logits, label="slopes_backward")
