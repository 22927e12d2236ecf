"""Tests of radref.core.numerics: the range limit and the overflow-safe formulas.

The references are independent of the code under test: plain NumPy products
and sums where these cannot overflow (compared bit for bit: the numerics
functions promise to *be* the formula as written there), and Python's
``decimal`` arithmetic at 50 significant digits, whose exponent range has no
float64 limit, everywhere else.  Every test runs under
``np.errstate(over/invalid/divide="raise")`` besides the suite's
``filterwarnings = error``: a floating-point exception fails it.
"""
import decimal
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from radref.core import numerics
from radref.core.numerics import (all_in_range, exp_times, exp_times_cumulative,
                                  half_squared_norm, out_of_range_rows, zero_rows)

EPS = float(np.finfo(np.float64).eps)
DBL_MAX = float(np.finfo(np.float64).max)
# The documented limits (docs/errors.md, module docstring), written out rather
# than imported, so that a changed constant fails the tests below.
RANGE = 1e120
LOG_MAX = math.log(DBL_MAX)  # 709.78...
SAFE_LOG_SCALE = 230.0
SAFE_FACTOR = 2.0 ** 300
SAFE_SQUARE = 2.0 ** 500
CONTEXT = decimal.Context(prec=50, Emax=10 ** 6, Emin=-10 ** 6)


@pytest.fixture(autouse=True)
def _raise_on_floating_point_errors():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        yield


def _decimal_exp_times(log_scale, *factors):
    """``prod(factors) * exp(log_scale)`` in 50-digit decimal, rounded to float64
    (``float()`` of a Decimal rounds correctly, to +-inf beyond the range)."""
    value = CONTEXT.exp(decimal.Decimal(float(log_scale)))
    for f in factors:
        value = CONTEXT.multiply(value, decimal.Decimal(float(f)))
    return float(value)


def _decimal_half_squared_norm(row):
    total = decimal.Decimal(0)
    for x in row:
        total = CONTEXT.add(total, CONTEXT.multiply(decimal.Decimal(float(x)),
                                                    decimal.Decimal(float(x))))
    return float(CONTEXT.multiply(total, decimal.Decimal("0.5")))


def _close(got, expected, log_size):
    """``got`` within the documented ``~eps * |L + sum log|f||`` (plus a few
    roundings) of the correctly rounded ``expected``."""
    if expected == 0.0 or math.isinf(expected) or abs(expected) < 1e-300:
        return got == expected or (abs(expected) < 1e-300 and abs(got) < 1e-290)
    return abs(got - expected) <= 8.0 * EPS * (4.0 + log_size) * abs(expected)


# Factors of every magnitude float64 has, with both signs, and exact zeros.
magnitudes = st.floats(-1074.0, 1023.9)
factors = st.one_of(st.just(0.0), st.tuples(st.sampled_from([-1.0, 1.0]), magnitudes).map(
    lambda t: t[0] * 2.0 ** t[1]))
log_scales = st.floats(-1500.0, 1500.0)


# ------------------------------------------------------------- range limit

def test_range_limit_is_exact():
    assert all_in_range(np.array([[RANGE, -RANGE], [0.0, 1.0]]))
    assert not all_in_range(np.array([np.nextafter(RANGE, np.inf)]))
    assert not all_in_range(np.array([np.nextafter(-RANGE, -np.inf)]))
    assert not all_in_range(np.array([0.0, np.nan]))
    assert not all_in_range(np.array([np.inf]))
    assert all_in_range(np.zeros((0, 2)))


def test_out_of_range_rows_marks_every_kind_of_far_row():
    z = np.array([[RANGE, -RANGE], [np.nextafter(RANGE, np.inf), 0.0], [0.0, -np.inf],
                  [np.nan, 0.0], [1.0, 2.0], [0.0, np.nextafter(-RANGE, -np.inf)]])
    np.testing.assert_array_equal(out_of_range_rows(z), [False, True, True, True, False, True])
    rows = out_of_range_rows(np.ones((4, 3)))
    assert rows.dtype == bool and rows.shape == (4,) and not rows.any()


def test_zero_rows_replaces_exactly_the_given_rows():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 3))
    rows = np.array([False, True, False, False, True])
    out = zero_rows(z, rows)
    assert np.all(out[rows] == 0.0)
    np.testing.assert_array_equal(out[~rows], z[~rows])
    assert zero_rows(z, np.zeros(5, dtype=bool)) is z


# ------------------------------------------------------------ exp_times

@given(log_scale=st.floats(-SAFE_LOG_SCALE, SAFE_LOG_SCALE),
       f1=st.floats(-SAFE_FACTOR, SAFE_FACTOR), f2=st.floats(-SAFE_FACTOR, SAFE_FACTOR))
def test_exp_times_is_the_direct_product_where_it_cannot_overflow(log_scale, f1, f2):
    L, a, b = np.array([log_scale]), np.array([f1]), np.array([f2])
    np.testing.assert_array_equal(exp_times(L, a), np.exp(L) * a)
    np.testing.assert_array_equal(exp_times(L, a, b), np.exp(L) * a * b)


def test_exp_times_is_the_direct_product_at_the_thresholds():
    # The largest moderate entries, where the log-space evaluation differs from
    # the product in the last bits: they must still be the product as written.
    rng = np.random.default_rng(1)
    L = np.concatenate([[SAFE_LOG_SCALE, -SAFE_LOG_SCALE],
                        rng.uniform(0.999, 1.0, 200) * SAFE_LOG_SCALE])
    L = L * rng.choice([-1.0, 1.0], L.size)
    f = rng.uniform(0.5, 1.0, L.size) * SAFE_FACTOR * rng.choice([-1.0, 1.0], L.size)
    f[:4] = [SAFE_FACTOR, -SAFE_FACTOR, SAFE_FACTOR, -SAFE_FACTOR]
    g = rng.uniform(0.5, 1.0, L.size) * SAFE_FACTOR
    g[:4] = SAFE_FACTOR
    # and entries exactly at each bound, the other argument random
    L[4:100] = SAFE_LOG_SCALE * rng.choice([-1.0, 1.0], 96)
    f[100:150] = SAFE_FACTOR * rng.choice([-1.0, 1.0], 50)
    g[150:200] = SAFE_FACTOR * rng.choice([-1.0, 1.0], 50)
    np.testing.assert_array_equal(exp_times(L, f), np.exp(L) * f)
    np.testing.assert_array_equal(exp_times(L, f, g), np.exp(L) * f * g)
    # the same entries beside one far entry (which takes the other path)
    L_far, f_far, g_far = (np.append(x, far) for x, far in ((L, 1e3), (f, 1.0), (g, 1.0)))
    np.testing.assert_array_equal(exp_times(L_far, f_far)[:-1], np.exp(L) * f)
    np.testing.assert_array_equal(exp_times(L_far, f_far, g_far)[:-1], np.exp(L) * f * g)


@pytest.mark.parametrize("log_scale", [231.0, 260.0, 300.0, 400.0, 700.0, 1000.0])
@pytest.mark.parametrize("size", [2.0 ** 300, 2.0 ** 301, 2.0 ** 400, 2.0 ** 600])
def test_exp_times_just_beyond_the_thresholds(log_scale, size):
    # Large scales and factors together, where a product of the plain formula
    # would overflow: the correctly rounded value (often +-inf), and no warning.
    for L in (log_scale, -log_scale, SAFE_LOG_SCALE, -SAFE_LOG_SCALE):
        for f1, f2 in ((size, size), (-size, size), (size, 1.0 / size), (1.0 / size, size)):
            got = exp_times(np.array([L]), np.array([f1]), np.array([f2]))[0]
            expected = _decimal_exp_times(L, f1, f2)
            log_size = abs(L) + abs(math.log(abs(f1))) + abs(math.log(abs(f2)))
            assert _close(got, expected, log_size), (L, f1, f2, got, expected)


@given(log_scale=log_scales, f1=factors, f2=factors)
def test_exp_times_matches_decimal_arithmetic_for_any_magnitude(log_scale, f1, f2):
    for args in ((f1,), (f1, f2)):
        got = exp_times(np.array([log_scale]), *(np.array([f]) for f in args))[0]
        expected = _decimal_exp_times(log_scale, *args)
        log_size = abs(log_scale) + sum(abs(math.log(abs(f))) for f in args if f != 0.0)
        assert _close(got, expected, log_size), (log_scale, args, got, expected)
        assert math.copysign(1.0, got) == math.copysign(1.0, expected) or expected == 0.0


def test_exp_times_zero_factor_gives_exact_zero():
    # u at the anchor of a piece of slope e^1000: 0 * e^1000 = 0, not inf * 0 = NaN
    L = np.array([1000.0, -1000.0, 0.0, 709.0, 5000.0])
    zero = np.zeros(5)
    np.testing.assert_array_equal(exp_times(L, zero), 0.0)
    np.testing.assert_array_equal(exp_times(L, zero, np.full(5, 1e300)), 0.0)
    np.testing.assert_array_equal(exp_times(L, np.full(5, 3.0), zero), 0.0)
    np.testing.assert_array_equal(exp_times(L, np.full(5, np.inf), zero), 0.0)


def test_exp_times_signed_infinity_beyond_float64():
    # e^1000 = 1.97e434: times 1e-100 still beyond float64
    L = np.array([1000.0, 1000.0, 800.0, 800.0, LOG_MAX + 1e-9])
    f = np.array([1e-100, -1e-100, 1.0, -1.0, 1.0])
    np.testing.assert_array_equal(exp_times(L, f), [np.inf, -np.inf, np.inf, -np.inf, np.inf])
    g = np.array([-1.0, -1.0, 1e-10, -1e-10, 1.0])
    np.testing.assert_array_equal(exp_times(L, f, g), [-np.inf, np.inf, np.inf, np.inf, np.inf])


def test_exp_times_finite_where_the_slope_alone_overflows():
    # e^1000 is not a float64, but e^1000 * e^-700 = e^300 is
    got = exp_times(np.array([1000.0, 1000.0]), np.array([math.exp(-700.0), -math.exp(-700.0)]))
    expected = _decimal_exp_times(1000.0, math.exp(-700.0))
    assert np.isfinite(got).all() and got[0] == -got[1]
    assert abs(got[0] - expected) <= 1e-12 * expected
    # and e^-1000 * 1e300 = 5e-135, where exp(-1000) alone underflows to 0
    got = exp_times(np.array([-1000.0]), np.array([1e300]))[0]
    assert abs(got - _decimal_exp_times(-1000.0, 1e300)) <= 1e-12 * got


@pytest.mark.parametrize("log_scale", [300.0, 700.0, 709.0, 709.5, 709.78])
def test_exp_times_just_inside_float64(log_scale):
    # exp(L) alone is finite up to L = log(DBL_MAX) = 709.78...: no early inf
    got = exp_times(np.array([log_scale, log_scale]), np.array([1.0, -0.5]))
    expected = _decimal_exp_times(log_scale, 1.0)
    assert np.isfinite(got).all()
    assert abs(got[0] - expected) <= 1e-12 * expected
    assert abs(got[1] + 0.5 * expected) <= 1e-12 * expected


def test_exp_times_at_the_edge_of_float64():
    # exp(LOG_MAX) is the largest power of e below DBL_MAX: finite and exact
    np.testing.assert_array_equal(exp_times(np.array([LOG_MAX]), np.array([1.0])),
                                  np.exp(LOG_MAX))
    just_below = np.nextafter(LOG_MAX, 0.0)
    assert exp_times(np.array([just_below]), np.array([1.0]))[0] == np.exp(just_below)
    assert exp_times(np.array([np.nextafter(LOG_MAX, np.inf)]), np.array([1.0]))[0] == np.inf
    # far below the range: a correctly signed zero
    assert exp_times(np.array([-1000.0]), np.array([-1.0]))[0] == 0.0


def test_exp_times_each_entry_is_independent_of_the_batch():
    # Moderate entries are the plain product also when other entries are extreme.
    rng = np.random.default_rng(2)
    L = rng.uniform(-SAFE_LOG_SCALE, SAFE_LOG_SCALE, 300)
    f = rng.normal(0.0, 1e3, 300)
    g = rng.normal(0.0, 1.0, 300)
    far = rng.random(300) < 0.3
    L_mixed = np.where(far, 1e3, L)
    f_mixed = np.where(rng.random(300) < 0.1, 1e305, f)
    moderate = ~far & (f_mixed == f)
    np.testing.assert_array_equal(exp_times(L_mixed, f_mixed)[moderate],
                                  (np.exp(L) * f)[moderate])
    np.testing.assert_array_equal(exp_times(L_mixed, f_mixed, g)[moderate],
                                  (np.exp(L) * f * g)[moderate])


def test_exp_times_nan_stays_nan_and_broadcasts():
    got = exp_times(np.array([np.nan, 1.0, 1e3]), np.array([1.0, np.nan, np.nan]))
    assert np.isnan(got).all()
    got = exp_times(np.array([[0.0], [1.0]]), np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(got, np.exp([[0.0], [1.0]]) * np.array([1.0, 2.0, 3.0]))
    got = exp_times(np.array([[0.0], [1e3]]), np.array([1.0, 0.0, -1e-100]))
    np.testing.assert_array_equal(got, [[1.0, 0.0, -1e-100], [np.inf, 0.0, -np.inf]])
    assert exp_times(np.zeros(0), np.zeros(0)).shape == (0,)
    assert exp_times(2.0, 3.0) == 3.0 * np.exp(2.0) and exp_times(1e3, -0.5) == -np.inf


@given(log_scale=log_scales, f1=factors, f2=factors)
def test_exp_times_cumulative_gives_both_running_products(log_scale, f1, f2):
    L, a, b = np.array([log_scale]), np.array([f1]), np.array([f2])
    first, second = exp_times_cumulative(L, a, b)
    np.testing.assert_array_equal(first, exp_times(L, a))
    np.testing.assert_array_equal(second, exp_times(L, a, b))
    (only,) = exp_times_cumulative(L, a)
    np.testing.assert_array_equal(only, exp_times(L, a))


def test_exp_times_takes_one_or_two_factors():
    with pytest.raises(ValueError):
        exp_times(np.zeros(2))
    with pytest.raises(ValueError):
        exp_times(np.zeros(2), np.ones(2), np.ones(2), np.ones(2))


def test_documented_thresholds():
    assert (numerics.RANGE, numerics.SAFE_LOG_SCALE, numerics.SAFE_FACTOR,
            numerics.SAFE_SQUARE) == (RANGE, SAFE_LOG_SCALE, SAFE_FACTOR, SAFE_SQUARE)
    assert numerics.LOG_MAX == LOG_MAX
    # the direct product of exp(SAFE_LOG_SCALE) and two factors of SAFE_FACTOR is
    # finite, and so is a sum of 2^23 squares of SAFE_SQUARE
    assert LOG_MAX > SAFE_LOG_SCALE + 2 * math.log(SAFE_FACTOR)
    assert 2.0 ** 23 * SAFE_SQUARE ** 2 < DBL_MAX


# ------------------------------------------------------ half_squared_norm

@given(z=hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 4)),
                    elements=st.floats(-SAFE_SQUARE, SAFE_SQUARE)))
def test_half_squared_norm_is_the_direct_sum_where_it_cannot_overflow(z):
    np.testing.assert_array_equal(half_squared_norm(z), 0.5 * np.sum(z * z, axis=-1))


@given(z=hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 4)),
                    elements=st.floats(allow_nan=False)))
def test_half_squared_norm_matches_decimal_arithmetic(z):
    got = half_squared_norm(z)
    for row, value in zip(z, got):
        expected = _decimal_half_squared_norm(row)
        if math.isinf(expected):
            assert value == np.inf
        else:
            assert abs(value - expected) <= 4.0 * EPS * z.shape[1] * expected, (row, value)


def test_half_squared_norm_far_rows():
    big = 2.0 ** 511
    z = np.array([[big, big, big, big],          # 2^1023: finite, although z*z sums to 2^1024
                  [2.0 ** 512, 2.0 ** 512, 0.0, 0.0],  # exactly 2^1024: beyond float64
                  [1e200, 1.0, 0.0, 0.0],        # 5e399
                  [2.0 ** 600, 1e-300, 0.0, 0.0],
                  [np.inf, 0.0, 0.0, 0.0],
                  [3.0, 4.0, 0.0, 0.0]])
    np.testing.assert_array_equal(half_squared_norm(z),
                                  [2.0 ** 1023, np.inf, np.inf, np.inf, np.inf, 12.5])


def test_half_squared_norm_mixed_batch_and_shapes():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(4, 6, 3))
    plain = 0.5 * np.sum(z * z, axis=-1)
    z_mixed = z.copy()
    z_mixed[1, 2, 0] = 1e300  # one far row: the others stay the plain sum, bit for bit
    got = half_squared_norm(z_mixed)
    assert got.shape == (4, 6) and got[1, 2] == np.inf
    keep = np.ones((4, 6), dtype=bool)
    keep[1, 2] = False
    np.testing.assert_array_equal(got[keep], plain[keep])
    got = half_squared_norm(np.array([[np.nan, 1.0], [1e300, np.nan], [1.0, 1.0]]))
    assert np.isnan(got[0]) and np.isnan(got[1]) and got[2] == 1.0
    assert half_squared_norm(np.zeros((0, 3))).shape == (0,)
    np.testing.assert_array_equal(half_squared_norm(np.zeros((2, 0))), [0.0, 0.0])


def test_far_outside_near_the_largest_float_without_a_warning():
    # Found by tests/test_fuzz.py: the bounds "range ± its width" overflow
    # near 1.8e308; the answer must still be right and raise no warning (the
    # suite turns warnings into errors).
    from radref.training.diagnostics import far_outside
    big = 2.0 ** 1023  # the fuzz test's point: big + big overflows
    x = np.array([[big, 1e119], [1e119, 0.0], [1e119, 1e119]])
    assert not far_outside(x, 2)  # its bound big + (big - 1e119) overflows to inf
    assert far_outside(x, 0)  # 2**1023 lies beyond [1e119, 1e119] by far more than 0
    x = np.array([[-big, 0.0], [big, 0.0], [0.0, 0.0]])
    assert not far_outside(x, 2)  # the others' width, 2**1024, overflows: no bound
    assert not far_outside(x, 0)  # bound 0 - 2**1023: -big is on it, not beyond
    # ordinary points: beyond the others' range by more than its width, or not
    assert far_outside(np.array([[0.0], [1.0], [2.01]]), 2)  # beyond 1 + 1
    assert not far_outside(np.array([[0.0], [1.0], [2.0]]), 2)  # at the bound: not beyond
    assert far_outside(np.array([[0.0], [1.0], [-1.01]]), 2)  # below 0 - 1
