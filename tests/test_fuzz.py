"""Fuzzing the public API (issue 7) with hypothesis.

Arbitrary arrays (every NumPy scalar dtype but object: bool, integers,
floats, complex, datetimes, strings; every shape from 0-d to 3-d, empty ones
included; values with NaN, infinities, huge and subnormal numbers) and
arbitrary hyperparameters go into RadFlow / RealNVPFlow (fit, score_samples,
transform, inverse_transform, sample), radref.datasets (sample, log_density)
and load_model (random bytes, damaged checkpoints).  Each call either works or
raises the documented error (docs/errors.md): ValueError / TypeError for a bad
argument, CheckpointError (a ValueError) for a bad file, NonFiniteError for a
fit that diverges.  Never another exception, never a NumPy warning (pytest
runs with filterwarnings = error), never NaN for finite input.

Tiny models and at most three training steps keep the whole module well
under a minute; the examples are derandomized (tests/conftest.py profile).
"""
import numbers
import os

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import fit
from radref import RadFlow, RealNVPFlow, datasets, load_model
from radref.training.checkpoint import CheckpointError
from radref.training.train import NonFiniteError

CLASSES = (RadFlow, RealNVPFlow)
DOCUMENTED = (ValueError, TypeError)  # CheckpointError is a ValueError

#: any dtype but object
ANY_DTYPE = st.one_of(hnp.scalar_dtypes(), hnp.byte_string_dtypes(max_len=3),
                      hnp.unicode_string_dtypes(max_len=3))
#: any array: 0-d to 3-d, empty sides allowed
ANY_ARRAY = hnp.arrays(ANY_DTYPE, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0,
                                                   max_side=5))
#: every float64 (NaN, +-inf, huge, subnormal, -0.0 included)
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)
#: finite float64 values, weighted towards the extremes
EXTREME_FLOAT = st.one_of(st.floats(-10.0, 10.0),
                          st.floats(allow_nan=False, allow_infinity=False),
                          st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2e-308, 1e8, -1e8,
                                           1e120, -1e120, 1.0000000000000002e120, 1e154,
                                           1.7976931348623157e308, -1.7976931348623157e308]))


def points(d=2, max_rows=6, elements=None):
    """(n, d) float64 arrays, n >= 0; by default mostly finite, some NaN / inf."""
    elements = elements if elements is not None else st.one_of(EXTREME_FLOAT, ANY_FLOAT)
    return hnp.arrays(np.float64, st.tuples(st.integers(0, max_rows), st.just(d)),
                      elements=elements)


#: arrays a model might be given: arbitrary ones, and (n, d) points of d = 1..3
ARRAYS = st.one_of(ANY_ARRAY, points(2), points(2, elements=EXTREME_FLOAT),
                   st.integers(1, 3).flatmap(points))

ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), ANY_FLOAT,
                      st.text(max_size=2), st.just([1, 2]))


def _finite_input(X):
    try:
        a = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return bool(np.all(np.isfinite(a)))


def _no_nan(*arrays):
    for a in arrays:
        assert not np.any(np.isnan(a)), a


@pytest.fixture(scope="module")
def models():
    X = datasets.sample("two_moons", 60, random_state=0)
    return {cls: fit(cls(n_layers=2, hidden=3, random_state=0), X, steps=2, batch_size=30)
            for cls in CLASSES}


# ------------------------------------------------------------- estimators

@settings(max_examples=300)
@given(X=ARRAYS, which=st.sampled_from(CLASSES))
def test_score_and_transform(models, X, which):
    model = models[which]
    try:
        log_p = model.score_samples(X)
    except DOCUMENTED as exc:
        event(f"refused: {type(exc).__name__}")
        with pytest.raises(DOCUMENTED):
            model.transform(X)
        return
    event("evaluated" + (" (some rows out of range)" if np.any(log_p == -np.inf) else ""))
    n = log_p.shape[0]
    assert log_p.shape == (n,) and n >= 1
    assert _finite_input(X)
    _no_nan(log_p)
    assert not np.any(log_p == np.inf)
    Z, K = model.infer(X)
    _no_nan(Z)
    assert Z.shape == (n, 2) and K.shape == (n, 2, 2)
    assert set(np.unique(K)) <= {-1, 0, 1, 2}
    # -inf exactly for the rows out of range, which transform marks with inf
    np.testing.assert_array_equal(log_p == -np.inf, np.isinf(Z).any(axis=1))
    ok = np.isfinite(log_p)
    back = model.inverse_transform(Z[ok], K[ok]) if ok.any() else None
    if back is not None:
        _no_nan(back)


@settings(max_examples=300)
@given(Z=ARRAYS, data=st.data(), which=st.sampled_from(CLASSES))
def test_inverse_transform(models, Z, data, which):
    n = np.shape(Z)[0] if np.ndim(Z) else 0
    K = data.draw(st.one_of(
        st.none(), ANY_ARRAY,
        hnp.arrays(hnp.integer_dtypes(), (n, 2, 2), elements=st.integers(-2, 4)),
        hnp.arrays(np.int64, (n, 2, 2), elements=st.integers(0, 2))), label="K")
    try:
        X = models[which].inverse_transform(Z, K)
    except DOCUMENTED as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event("inverted" + (" (some rows out of range)" if np.any(np.isinf(X)) else ""))
    assert _finite_input(Z)
    _no_nan(X)
    assert X.shape == np.shape(Z)


@settings(max_examples=100)
@given(n=st.one_of(st.integers(-3, 40), ANY_VALUE),
       random_state=st.one_of(ANY_VALUE, st.integers(-2 ** 70, 2 ** 70),
                              st.lists(st.integers(-1, 2 ** 40), max_size=3)),
       which=st.sampled_from(CLASSES))
def test_sample(models, n, random_state, which):
    try:
        X = models[which].sample(n, random_state=random_state)
    except DOCUMENTED:
        return
    assert X.shape == (n, 2)
    assert np.all(np.isfinite(X))


def mostly(valid, invalid):
    """``valid`` about nine times out of ten, else ``invalid``."""
    return st.integers(0, 9).flatmap(lambda i: valid if i else invalid)


@settings(max_examples=200)
@given(X=mostly(points(2, elements=EXTREME_FLOAT), ARRAYS), cls=st.sampled_from(CLASSES),
       n_layers=mostly(st.integers(1, 3), st.one_of(st.integers(-1, 0), ANY_VALUE)),
       hidden=mostly(st.integers(1, 4), st.one_of(st.integers(-1, 0), ANY_VALUE)),
       out_std=mostly(st.floats(0.0, 2.0), ANY_VALUE),
       steps=mostly(st.integers(1, 3), st.one_of(st.integers(-2, 0), ANY_VALUE)),
       batch_size=mostly(st.integers(1, 3), st.one_of(st.integers(-1, 8), ANY_VALUE)),
       lr=mostly(st.floats(1e-6, 1.0), st.one_of(ANY_FLOAT, ANY_VALUE)),
       beta1=mostly(st.just(0.9), ANY_FLOAT), beta2=mostly(st.just(0.999), ANY_FLOAT),
       eps=mostly(st.just(1e-8), ANY_FLOAT))
def test_fit_arbitrary_arguments(X, cls, n_layers, hidden, out_std, steps, batch_size, lr,
                                 beta1, beta2, eps):
    try:
        model = cls(n_layers=n_layers, hidden=hidden, out_std=out_std, random_state=0)
    except DOCUMENTED:
        event("constructor refused")
        return
    _fit_and_check(model, X, steps=steps, batch_size=batch_size, lr=lr, beta1=beta1,
                   beta2=beta2, eps=eps)


def _fit_and_check(model, X, **kwargs):
    try:
        fit(model, X, **kwargs)
        event("fitted")
    except DOCUMENTED as exc:
        event(f"fit refused: {type(exc).__name__}")
        assert not hasattr(model, "params_")  # a refused fit leaves the model unfitted
        return
    except NonFiniteError as err:  # diverged: the model keeps its last finite step
        event("NonFiniteError")
        assert err.step >= 1 and model.n_steps_ == err.step - 1
    assert _finite_input(X)
    for value in model.parameters().values():
        assert np.all(np.isfinite(value))
    lr = kwargs["lr"]
    _score_after_fit(model, X, float(lr) if isinstance(lr, numbers.Real) else 0.0)


def _score_after_fit(model, X, lr):
    # A few steps at lr = 355 leave log-scales of ~1000 (and lr = 1e300 weights
    # of ~1e300): evaluating such a model overflows, which is a FloatingPointError
    # (documented), never NaN.  A small lr can do the same when beta2 is small:
    # Adam's step lr * m_hat / sqrt(v_hat) is unbounded when the newest gradient
    # is tiny next to the earlier ones (lr = 0.0625, beta2 = 0 gave scale = -719 and
    # weights of 5e12 in three steps).
    try:
        log_p = model.score_samples(X)
    except FloatingPointError:
        event("score_samples: FloatingPointError (parameters beyond float64 range)")
        largest = max(float(np.max(np.abs(v))) for v in model.parameters().values())
        # exp(log_scale) overflows beyond log_scale = 709, bounded by |scale| (init 1)
        assert lr > 1.0 or largest > 100.0, (lr, largest)
        return
    _no_nan(log_p)


POSITIVE = st.floats(min_value=5e-324, max_value=1.7976931348623157e308)


@settings(max_examples=300)
@given(data=st.data(), cls=st.sampled_from(CLASSES), n_layers=st.integers(1, 3),
       hidden=st.integers(1, 4), out_std=st.floats(0.0, 2.0), d=st.integers(2, 3),
       steps=st.integers(1, 3), lr=st.one_of(st.floats(1e-4, 0.1), POSITIVE),
       beta1=st.floats(0.0, 1.0, exclude_max=True), beta2=st.floats(0.0, 1.0, exclude_max=True),
       eps=st.one_of(st.just(1e-8), POSITIVE))
def test_fit_valid_arguments_extreme_values(data, cls, n_layers, hidden, out_std, d, steps, lr,
                                            beta1, beta2, eps):
    # Every argument valid, values anywhere in float64: fit works or stops
    # with NonFiniteError; never a warning, never NaN parameters.
    X = data.draw(hnp.arrays(np.float64, st.tuples(st.integers(1, 8), st.just(d)),
                             elements=EXTREME_FLOAT), label="X")
    batch_size = data.draw(st.integers(1, len(X)), label="batch_size")
    model = cls(n_layers=n_layers, hidden=hidden, out_std=out_std, random_state=0)
    try:
        fit(model, X, steps=steps, batch_size=batch_size, lr=lr, beta1=beta1, beta2=beta2,
                  eps=eps)
        event("fitted")
    except NonFiniteError as err:
        event("NonFiniteError: " + err.where if err.where in ("loss", "gradient")
              else "NonFiniteError: parameter")
        assert model.n_steps_ == err.step - 1
    for value in model.parameters().values():
        assert np.all(np.isfinite(value))
    _score_after_fit(model, X, lr)


# --------------------------------------------------------------- datasets

NAMES = st.one_of(st.sampled_from(datasets.PROBLEMS), st.text(max_size=4), st.integers(),
                  st.none())


@settings(max_examples=200)
@given(name=NAMES, X=ARRAYS)
def test_datasets_log_density(name, X):
    try:
        log_p = datasets.log_density(name, X)
    except DOCUMENTED:
        return
    assert _finite_input(X)
    _no_nan(log_p)
    assert log_p.shape == (np.shape(X)[0],)
    assert not np.any(log_p == np.inf)


@settings(max_examples=100)
@given(name=NAMES, n=st.one_of(st.integers(-2, 30), ANY_VALUE),
       random_state=st.one_of(ANY_VALUE, st.integers(-2 ** 70, 2 ** 70)))
def test_datasets_sample(name, n, random_state):
    try:
        X = datasets.sample(name, n, random_state=random_state)
    except DOCUMENTED:
        return
    assert X.shape == (n, 2) and np.all(np.isfinite(X))


# ------------------------------------------------------------ checkpoints

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    good = directory / "good.npz"
    model = fit(RadFlow(n_layers=2, hidden=3, random_state=0),
        datasets.sample("ring", 40, random_state=0), steps=2, batch_size=20)
    model.save(good)
    return directory, good.read_bytes(), model


@settings(max_examples=100)
@given(data=st.binary(max_size=3000))
def test_load_model_on_random_bytes(files, data):
    directory, _, _ = files
    path = directory / "random.npz"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="random.npz"):
        load_model(path)


@settings(max_examples=300)
@given(cut=st.one_of(st.none(), st.integers(0, 10 ** 6)),
       flips=st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(1, 255)), max_size=3))
def test_load_model_on_damaged_checkpoints(files, cut, flips):
    # Truncation and byte flips anywhere: a CheckpointError, or (a flip in a
    # field zipfile ignores, e.g. a timestamp) the original model exactly;
    # never another exception, never a half-loaded or altered model.
    directory, good, original = files
    data = bytearray(good if cut is None else good[: cut % len(good)])
    for position, mask in flips:
        if data:
            data[position % len(data)] ^= mask
    path = directory / "damaged.npz"
    path.write_bytes(bytes(data))
    try:
        model = load_model(path)
    except CheckpointError:
        return
    assert type(model) is RadFlow
    assert model.get_params() == original.get_params()
    for name, value in original.parameters().items():
        assert model.parameters()[name].tobytes() == value.tobytes(), name


def test_fuzz_directory_is_clean(files):
    directory, _, _ = files
    assert not [f for f in os.listdir(directory) if f.endswith(".tmp")]
