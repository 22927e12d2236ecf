"""Tests of the user layer: RadFlow and RealNVPFlow (radref.user.estimators) and the
training loop's failure mode (radref.training.train.NonFiniteError)."""
from pathlib import Path

import numpy as np
import pytest

import radref
from helpers import check_gradient, flow_discrete_pattern, flow_kink_distance
from radref import NotFittedError, RadFlow, RealNVPFlow, load_model
from radref.training.checkpoint import CheckpointError
from radref.datasets import negative_entropy, train_test_split_samples
from radref.core.flow import flow_init
from radref.training.optim import AdamConfig
from radref.training.train import NonFiniteError, train

CLASSES = [RadFlow, RealNVPFlow]
GRAD_TOL = 1e-6
# h = 1e-5: the loss is a mean over the batch, so some gradients (the gating
# nets') are small and round-off (eps |L| / h) dominates: measured worst
# relative error 7e-7 at h = 1e-7, 7e-8 at 1e-6, 7e-9 at 1e-5.  The kink check
# in the loss guarantees the larger step crosses no kink.
FD_STEP = 1e-5
KINK_MARGIN = 1e-4


def _data(dim, n, seed=0):
    if dim == 2:
        return train_test_split_samples("two_moons", n, 1, random_state=seed)[0]
    return np.random.default_rng(seed).normal(0.0, 1.0, (n, dim))


def _small_model(cls, X, seed=0):
    """Small model, initialised by one step of fit, then perturbed through the
    live parameters() so that every gradient is far from trivial."""
    model = cls(n_layers=3, hidden=4, out_std=0.3, steps=1, batch_size=len(X), random_state=seed)
    model.fit(X)
    rng = np.random.default_rng(seed + 1)
    for name, value in model.parameters().items():
        if name.endswith((".b1", ".b2")):
            value += 0.2 * rng.standard_normal(value.shape)
        elif name.endswith(".scale"):
            value *= rng.uniform(0.7, 1.3, value.shape)
    return model




# ------------------------------------------------------------------ gradients

@pytest.mark.parametrize("dim", [2, 5])
@pytest.mark.parametrize("cls", CLASSES)
def test_loglik_and_grad_matches_finite_differences(cls, dim):
    X = _data(dim, 25, seed=dim)
    model = _small_model(cls, X, seed=dim)
    params, config = model.parameters(), model.config_
    rng = np.random.default_rng(99)
    for _ in range(50):
        bad = flow_kink_distance(X, params, config) <= KINK_MARGIN
        if not bad.any():
            break
        X[bad] = rng.normal(0.0, 1.0, (int(bad.sum()), dim))
    assert np.all(flow_kink_distance(X, params, config) > KINK_MARGIN)

    loglik, grads = model.loglik_and_grad(X)
    assert loglik == pytest.approx(model.score(X), rel=1e-14)
    assert set(grads) == set(params)
    pattern = flow_discrete_pattern(X, params, config)

    def loss():
        for now, then in zip(flow_discrete_pattern(X, params, config), pattern):
            assert np.array_equal(now, then), "finite difference crossed a kink"
        return model.score(X)

    for name in sorted(params):
        check_gradient(loss, grads[name], params[name], tol=GRAD_TOL,
                       label=f"{cls.__name__} d={dim}", h=FD_STEP)


# ----------------------------------------------------- parameters, transforms

@pytest.mark.parametrize("cls", CLASSES)
def test_parameters_are_live(cls):
    X = _data(2, 200)
    model = _small_model(cls, X)
    before = model.score_samples(X)
    params = model.parameters()
    assert params is model.parameters()
    name = "0.cond.b2"
    params[name][1] += 0.5  # shift_in (Rad) / shift (affine) of layer 0
    after = model.score_samples(X)
    assert np.all(after != before)  # every point moves (layer 0 transforms column 1)
    params[name][1] -= 0.5
    np.testing.assert_allclose(model.score_samples(X), before, rtol=0, atol=1e-13)
    expected = sum(v.size for v in params.values())
    assert model.n_parameters() == expected


@pytest.mark.parametrize("dim", [2, 5])
@pytest.mark.parametrize("cls", CLASSES)
def test_inverse_transform_of_transform(cls, dim):
    X = _data(dim, 300, seed=1)
    model = _small_model(cls, X)
    Z, K = model.infer(X)
    np.testing.assert_array_equal(model.transform(X), Z)
    assert Z.shape == X.shape and K.shape == (300, 3, dim)
    assert np.abs(Z - X).max() > 0.1
    np.testing.assert_allclose(model.inverse_transform(Z, K), X, rtol=0, atol=1e-10)


def test_realnvp_inverse_transform_without_k():
    X = _data(2, 100)
    model = _small_model(RealNVPFlow, X)
    Z, K = model.infer(X)
    np.testing.assert_array_equal(K, -1)
    np.testing.assert_array_equal(model.inverse_transform(Z), model.inverse_transform(Z, K))
    np.testing.assert_allclose(model.inverse_transform(model.transform(X)), X, rtol=0, atol=1e-10)


def test_rad_inverse_transform_without_k_draws_k_as_sampling_does():
    # sample(n, random_state=s) draws n x d normals, then the uniforms that
    # pick each k, from one default_rng(s) (documented): handing the same
    # generator, after its normals, to inverse_transform(Z) must reproduce it.
    X = _data(2, 100)
    model = _small_model(RadFlow, X)
    rng = np.random.default_rng(5)
    normals = rng.standard_normal((400, 2))
    x = model.inverse_transform(normals, random_state=rng)
    np.testing.assert_array_equal(x, model.sample(400, random_state=5))
    # a drawn K is one the exact inference finds again
    np.testing.assert_allclose(model.transform(x), normals, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cls", CLASSES)
def test_transform_of_samples_reproduces_latents(cls):
    X = _data(2, 100)
    model = _small_model(cls, X)
    # sample() is flow_sample's x; its latents are the documented noise:
    # normals first, then uniforms, from default_rng(random_state)
    x = model.sample(500, random_state=5)
    normals = np.random.default_rng(5).standard_normal((500, 2))
    Z, K = model.infer(x)
    np.testing.assert_allclose(Z, normals, rtol=0, atol=1e-10)
    np.testing.assert_allclose(model.inverse_transform(Z, K), x, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(model.sample(500, random_state=5), x)
    if cls is RadFlow:
        assert set(np.unique(K[K >= 0])) == {0, 1, 2}


@pytest.mark.parametrize("cls", CLASSES)
def test_fit_is_deterministic(cls):
    X = _data(2, 1000)
    settings = dict(n_layers=4, hidden=8, steps=50, batch_size=200, lr=5e-3)
    a = cls(random_state=3, **settings).fit(X)
    b = cls(random_state=3, **settings).fit(X)
    c = cls(random_state=4, **settings).fit(X)
    pa, pb, pc = a.parameters(), b.parameters(), c.parameters()
    assert set(pa) == set(pb)
    for name in pa:
        assert pa[name].tobytes() == pb[name].tobytes(), name
    assert a.history_["loglik"] == b.history_["loglik"]
    # and the seed matters
    assert any(not np.array_equal(pa[name], pc[name]) for name in pa)
    # refitting the same object starts afresh
    a.fit(X)
    for name in pa:
        assert a.parameters()[name].tobytes() == pb[name].tobytes(), name


# ----------------------------------------------------------------- persistence

@pytest.mark.parametrize("cls", CLASSES)
def test_save_load_round_trip(cls, tmp_path):
    X = _data(2, 400)
    model = cls(n_layers=3, hidden=5, steps=20, batch_size=100, random_state=1).fit(X)
    path = tmp_path / "model.npz"
    model.save(path)
    for loaded in (cls.load(path), load_model(path), load_model(str(path))):
        assert type(loaded) is cls
        assert loaded.config_ == model.config_
        assert loaded.n_steps_ == 20
        assert loaded.get_params() == model.get_params()
        assert loaded.n_features_in_ == 2
        assert loaded.history_ == model.history_
        assert set(loaded.parameters()) == set(model.parameters())
        for name, value in model.parameters().items():
            assert loaded.parameters()[name].tobytes() == value.tobytes(), name
        np.testing.assert_array_equal(loaded.score_samples(X), model.score_samples(X))
        np.testing.assert_array_equal(loaded.sample(50, random_state=2),
                                      model.sample(50, random_state=2))
        state, saved = loaded.optimizer_state_, model.optimizer_state_
        assert state["t"] == saved["t"] == 20
        for key in ("m", "v"):
            for name in saved[key]:
                np.testing.assert_array_equal(state[key][name], saved[key][name])
    # the loaded parameters are the model's own (writable, live) arrays
    loaded = cls.load(path)
    loaded.parameters()["0.cond.b2"][0] += 1.0
    assert not np.array_equal(loaded.score_samples(X), model.score_samples(X))


def test_load_wrong_class_raises(tmp_path):
    X = _data(2, 200)
    path = tmp_path / "realnvp.npz"
    RealNVPFlow(n_layers=2, hidden=4, steps=2, batch_size=100, random_state=0).fit(X).save(path)
    with pytest.raises(CheckpointError, match="RealNVPFlow"):
        RadFlow.load(path)
    path_rad = tmp_path / "rad.npz"
    RadFlow(n_layers=2, hidden=4, steps=2, batch_size=100, random_state=0).fit(X).save(path_rad)
    with pytest.raises(CheckpointError, match="RadFlow"):
        RealNVPFlow.load(path_rad)
    assert type(load_model(path)) is RealNVPFlow
    assert type(load_model(path_rad)) is RadFlow


def test_numpy_integer_hyperparameters_can_be_saved(tmp_path):
    # Regression: RadFlow(hidden=np.int64(4)) kept gate_hidden as np.int64,
    # which the JSON metadata of a checkpoint cannot hold.  The parameters are
    # stored unmodified (scikit-learn's convention) and converted when saved.
    X = _data(2, 200)
    hidden = np.int64(4)
    model = RadFlow(n_layers=np.int64(2), hidden=hidden, gate_hidden=np.int64(3),
                    steps=np.int64(2), batch_size=np.int64(100), random_state=np.int64(0))
    assert model.hidden is hidden
    model.fit(X)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    for name in ("hidden", "gate_hidden", "steps", "batch_size", "random_state"):
        assert loaded.get_params()[name] == model.get_params()[name]
        assert type(loaded.get_params()[name]) is int, name


def test_fit_checkpoint_resume_is_bit_identical(tmp_path):
    X = _data(2, 600)
    settings = dict(n_layers=2, hidden=4, batch_size=100, random_state=0)
    whole = RadFlow(steps=30, **settings).fit(X)
    path = tmp_path / "resume.npz"
    RadFlow(steps=18, **settings).fit(X, checkpoint=path, checkpoint_every=7)
    resumed = RadFlow(steps=30, **settings).fit(X, checkpoint=path, checkpoint_every=7)
    for name, value in whole.parameters().items():
        assert resumed.parameters()[name].tobytes() == value.tobytes(), name
    assert resumed.history_["loglik"] == whole.history_["loglik"]


# -------------------------------------------------------------------- training

@pytest.mark.parametrize("cls", CLASSES)
def test_training_improves_held_out_likelihood(cls):
    X_train, X_test = train_test_split_samples("two_moons", 5000, 2000, random_state=0)
    # The initial model: same seed, one step with a negligible learning rate
    # (Adam moves every parameter by ~1e-300), i.e. the model before training.
    initial = cls(steps=1, lr=1e-300, random_state=0).fit(X_train).score(X_test)
    trained = cls(steps=400, lr=5e-3, eval_every=100, random_state=0).fit(X_train, X_val=X_test)
    final = trained.score(X_test)
    assert final > initial + 0.5, (initial, final)
    assert trained.history_["val_step"] == [100, 200, 300, 400]
    assert trained.history_["val_loglik"][-1] == pytest.approx(final, rel=1e-12)
    # nor can it beat the best achievable mean log-likelihood (the negative
    # entropy of the data) by more than the noise of 2000 test points (~0.02)
    best, _ = negative_entropy("two_moons", n=20_000, random_state=1)
    assert final < best + 0.1, (final, best)


# ------------------------------------------------------------ input validation

@pytest.fixture(scope="module")
def fitted():
    X = _data(2, 200)
    return {cls: cls(n_layers=2, hidden=4, steps=2, batch_size=100, random_state=0).fit(X)
            for cls in CLASSES}


BAD_X = [
    (np.zeros(10), ValueError, "X must be 2-dimensional"),
    (np.zeros((2, 5, 2)), ValueError, "X must be 2-dimensional"),
    (np.array([[0.0, np.nan]]), ValueError, "X contains NaN"),
    (np.array([[0.0, np.inf]]), ValueError, "X contains NaN or infinite"),
    (np.array([[0.0, -np.inf]]), ValueError, "X contains NaN or infinite"),
    (np.zeros((0, 2)), ValueError, "X is empty"),
    (np.zeros((3, 2), dtype=complex), TypeError, "X must be a real numeric array"),
    (np.array([["a", "b"]]), TypeError, "X must be a real numeric array"),
    (np.zeros((3, 2), dtype=bool), TypeError, "X must be a real numeric array"),
    ([[1.0, "x"]], TypeError, "X must be a real numeric array"),
    (np.array([[1.0, {"a": 1}]], dtype=object), TypeError,
     "X must be a real numeric array: element .* argument must be a string or a.* number"),
    (np.array([[1.0, None]], dtype=object), TypeError, "X must be a real numeric array"),
    (np.array([[1.0, "2"]], dtype=object), TypeError, "X must be a real numeric array"),
]


@pytest.mark.parametrize("bad,exc,message", BAD_X)
@pytest.mark.parametrize("cls", CLASSES)
def test_invalid_X_is_refused(cls, bad, exc, message, fitted):
    with pytest.raises(exc, match=message):
        cls(n_layers=2, hidden=4, steps=1, batch_size=1).fit(bad)
    model = fitted[cls]
    for method in (model.score_samples, model.score, model.transform, model.infer,
                   model.loglik_and_grad):
        with pytest.raises(exc, match=message):
            method(bad)


@pytest.mark.parametrize("cls", CLASSES)
def test_wrong_number_of_columns(cls, fitted):
    with pytest.raises(ValueError, match="X must have at least 2 columns"):
        cls(n_layers=2, hidden=4, steps=1, batch_size=5).fit(np.zeros((10, 1)))
    model = fitted[cls]
    with pytest.raises(ValueError, match="X must have 2 columns"):
        model.score_samples(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="Z must have 2 columns"):
        model.inverse_transform(np.zeros((4, 3)), np.zeros((4, 2, 3), dtype=int))
    with pytest.raises(ValueError, match="K must be an integer array of shape"):
        model.inverse_transform(np.zeros((4, 2)), np.zeros((4, 2, 2)))  # float K
    with pytest.raises(ValueError, match="K must be an integer array of shape"):
        model.inverse_transform(np.zeros((4, 2)), np.zeros((4, 3, 2), dtype=int))
    with pytest.raises(ValueError, match="X_val must have 2 columns"):
        cls(n_layers=2, hidden=4, steps=1, batch_size=5).fit(np.zeros((10, 2)),
                                                             X_val=np.zeros((3, 3)))


@pytest.mark.parametrize("cls", CLASSES)
def test_integer_noncontiguous_and_readonly_input_accepted(cls, fitted):
    model = fitted[cls]
    rng = np.random.default_rng(0)
    X_int = rng.integers(-2, 3, (20, 2))
    expected = model.score_samples(X_int.astype(float))
    np.testing.assert_array_equal(model.score_samples(X_int), expected)
    np.testing.assert_array_equal(model.score_samples(X_int.tolist()), expected)
    wide = np.zeros((20, 4))
    wide[:, ::2] = X_int
    noncontiguous = wide[:, ::2]
    assert not noncontiguous.flags.c_contiguous
    np.testing.assert_array_equal(model.score_samples(noncontiguous), expected)
    fortran = np.asfortranarray(X_int.astype(float))
    np.testing.assert_array_equal(model.score_samples(fortran), expected)
    readonly = X_int.astype(float)
    readonly.flags.writeable = False
    np.testing.assert_array_equal(model.score_samples(readonly), expected)
    Z, K = model.infer(readonly)
    Z.flags.writeable = False
    K.flags.writeable = False
    np.testing.assert_allclose(model.inverse_transform(Z, K), readonly, rtol=0, atol=1e-10)
    # fit accepts the same kinds of input and gives the same model
    settings = dict(n_layers=2, hidden=4, steps=3, batch_size=10, random_state=0)
    a = cls(**settings).fit(readonly)
    b = cls(**settings).fit(X_int)
    c = cls(**settings).fit(noncontiguous)
    d = cls(**settings).fit(X_int.astype(object))  # a mixed-type table's numbers
    for name in a.parameters():
        np.testing.assert_array_equal(a.parameters()[name], b.parameters()[name])
        np.testing.assert_array_equal(a.parameters()[name], c.parameters()[name])
        np.testing.assert_array_equal(a.parameters()[name], d.parameters()[name])


HYPERPARAMETER_ERRORS = [
    (dict(n_layers=0), ValueError, "n_layers must be >= 1"),
    (dict(n_layers=2.5), TypeError, "n_layers must be an integer"),
    (dict(n_layers=True), TypeError, "n_layers must be an integer"),
    (dict(hidden=-1), ValueError, "hidden must be >= 1"),
    (dict(hidden="8"), TypeError, "hidden must be an integer"),
    (dict(out_std=-0.1), ValueError, "out_std must be a finite number >= 0"),
    (dict(out_std=float("nan")), ValueError, "out_std must be a finite number"),
    (dict(random_state=-1), ValueError, "random_state must be >= 0"),
    (dict(random_state=1.5), TypeError, "random_state must be an integer"),
    (dict(steps=0), ValueError, "steps must be >= 1"),
    (dict(steps=1.0), TypeError, "steps must be an integer"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(lr=0.0), ValueError, "lr must be a finite number > 0"),
    (dict(lr=-1e-3), ValueError, "lr must be a finite number > 0"),
    (dict(lr=float("inf")), ValueError, "lr must be a finite number > 0"),
    (dict(beta1=1.0), ValueError, "beta1"),
    (dict(beta2=-0.1), ValueError, "beta2"),
    (dict(eps=0.0), ValueError, "eps"),
    (dict(eval_every=0), ValueError, "eval_every must be >= 1"),
    (dict(warm_start="yes"), TypeError, "warm_start must be True or False"),
    (dict(progress=1), TypeError, "progress must be True, False or None"),
]


@pytest.mark.parametrize("kwargs,exc,message", HYPERPARAMETER_ERRORS)
@pytest.mark.parametrize("cls", CLASSES)
def test_hyperparameter_errors_are_raised_by_fit(cls, kwargs, exc, message):
    # scikit-learn's convention: the constructor and set_params store any
    # value, fit checks it (and a refused fit leaves the model unfitted)
    X = _data(2, 50)
    model = cls(**dict(dict(n_layers=2, hidden=4, steps=1, batch_size=10), **kwargs))
    for name, value in kwargs.items():
        assert getattr(model, name) is value
    with pytest.raises(exc, match=message):
        model.fit(X)
    assert not hasattr(model, "params_")
    other = cls(n_layers=2, hidden=4, steps=1, batch_size=10).set_params(**kwargs)
    with pytest.raises(exc, match=message):
        other.fit(X)


def test_gate_hidden_error_is_raised_by_fit():
    model = RadFlow(gate_hidden=0, steps=1)
    with pytest.raises(ValueError, match="gate_hidden must be >= 1"):
        model.fit(_data(2, 50))


@pytest.mark.parametrize("cls", CLASSES)
def test_not_fitted_error(cls, tmp_path):
    model = cls()
    X = np.zeros((3, 2))
    for call in (lambda: model.score_samples(X), lambda: model.score(X),
                 lambda: model.transform(X), lambda: model.infer(X),
                 lambda: model.inverse_transform(X, np.zeros((3, 6, 2), dtype=int)),
                 lambda: model.sample(3), model.parameters, model.n_parameters,
                 lambda: model.loglik_and_grad(X), lambda: model.save(tmp_path / "m.npz")):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()
    assert not (tmp_path / "m.npz").exists()
    assert issubclass(NotFittedError, RuntimeError)
    # and, like scikit-learn's NotFittedError, a ValueError and an AttributeError
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    assert radref.NotFittedError is NotFittedError


@pytest.mark.parametrize("cls", CLASSES)
def test_sample_argument_errors(cls, fitted):
    model = fitted[cls]
    with pytest.raises(ValueError, match="n must be >= 1"):
        model.sample(0)
    with pytest.raises(TypeError, match="n must be an integer"):
        model.sample(2.0)


# --------------------------------------------------------------- NonFiniteError

def _tiny_flow(kind):
    from radref.core.flow import FlowConfig
    config = FlowConfig(kind, 2, 2, 4, 4)
    return config, flow_init(config, out_std=0.1, random_state=0)


@pytest.mark.parametrize("kind", ["rad", "affine"])
def test_non_finite_loss_names_step_and_keeps_last_finite_parameters(kind):
    # A training set with one point at 1e300, passed to train() directly
    # (RadFlow.fit would accept it too, it is finite): the batch holding it has
    # a non-finite log-likelihood.
    config, params = _tiny_flow(kind)
    X = _data(2, 40)
    X[17] = [1e300, -1e300]
    reference = {k: v.copy() for k, v in params.items()}
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(NonFiniteError) as info:
            train(params, config, X, steps=40, batch_size=8, adam=AdamConfig(lr=1e-2),
                  random_state=5)
    err = info.value
    step = err.step
    assert step >= 2, "the bad point should not be in the first batch (choose another seed)"
    assert err.where == "loss"
    assert f"step {step}" in str(err) and "loss" in str(err)
    assert isinstance(err, FloatingPointError)
    # The parameters are exactly those after step - 1 good steps: rerun them.
    train(reference, config, X, steps=step - 1, batch_size=8, adam=AdamConfig(lr=1e-2),
          random_state=5)
    for name in params:
        assert np.all(np.isfinite(params[name]))
        assert params[name].tobytes() == reference[name].tobytes(), name


def _poison_gradient(monkeypatch, call, name, value):
    """Make the ``call``-th gradient evaluation of training return ``value`` in
    the first entry of gradient ``name``; returns the list of the parameters
    each evaluation saw (copies)."""
    import radref.training.train as train_module
    real = train_module.mean_loglik_and_grad
    seen = []

    def poisoned(x, p, c):
        loglik, grads = real(x, p, c)
        seen.append({k: v.copy() for k, v in p.items()})
        if len(seen) == call:
            grads[name] = grads[name].copy()
            grads[name].flat[0] = value
        return loglik, grads

    monkeypatch.setattr(train_module, "mean_loglik_and_grad", poisoned)
    return seen


def test_non_finite_gradient_names_parameter(monkeypatch):
    # Force a NaN into one gradient at the 4th step (the loss stays finite).
    config, params = _tiny_flow("rad")
    X = _data(2, 100)
    calls = _poison_gradient(monkeypatch, call=4, name="1.gate.W2", value=np.nan)
    with pytest.raises(NonFiniteError) as info:
        train(params, config, X, steps=10, batch_size=20, random_state=0, start_step=0)
    err = info.value
    assert (err.step, err.where) == (4, "1.gate.W2")
    assert "step 4" in str(err) and "layer 1" in str(err) and "1.gate.W2" in str(err)
    # unchanged since the last good update (the parameters the 4th call saw)
    assert any(not np.array_equal(calls[0][k], calls[3][k]) for k in params)
    for name in params:
        np.testing.assert_array_equal(params[name], calls[3][name])


def test_fit_propagates_non_finite_error():
    X = _data(2, 40)
    X[3] = [1e300, 1e300]
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(NonFiniteError, match="non-finite value at training step"):
            RadFlow(n_layers=2, hidden=4, steps=20, batch_size=40, random_state=0).fit(X)


def test_failed_fit_leaves_a_consistent_model_at_its_last_finite_step(monkeypatch):
    # A model fitted once, then refitted on data whose 3rd batch poisons a
    # gradient: the model must hold the refit's last finite parameters, with the
    # optimizer state, step count and history of that same point (not a mix of
    # the two fits).
    X = _data(2, 200)
    model = RadFlow(n_layers=2, hidden=4, steps=5, batch_size=50, random_state=0).fit(X)
    first_params = {k: v.copy() for k, v in model.parameters().items()}
    seen = _poison_gradient(monkeypatch, call=3, name="0.cond.b2", value=np.inf)
    refit = RadFlow(n_layers=2, hidden=4, steps=10, batch_size=50, random_state=1)
    refit.__dict__.update({k: v for k, v in model.__dict__.items() if k.endswith("_")})
    with pytest.raises(NonFiniteError):
        refit.fit(X)
    assert refit.n_steps_ == 2
    assert refit.optimizer_state_["t"] == 2
    assert refit.history_["step"] == [1, 2]
    for name, value in refit.parameters().items():
        np.testing.assert_array_equal(value, seen[2][name])
    assert any(not np.array_equal(refit.parameters()[k], first_params[k]) for k in first_params)


# ------------------------------------------------- scikit-learn's conventions

RECIPE_PARAMETERS = ["lr_schedule", "lr_decay_steps", "lr_final_fraction", "lr_step_size",
                     "lr_gamma", "ema_decay", "early_stopping", "validation_fraction",
                     "n_iter_no_change"]
ALL_PARAMETERS = {
    RadFlow: ["n_layers", "hidden", "gate_hidden", "out_std", "steps", "batch_size", "lr",
              "beta1", "beta2", "eps", "eval_every", "warm_start", "progress", "random_state",
              *RECIPE_PARAMETERS, "n_jobs"],
    RealNVPFlow: ["n_layers", "hidden", "out_std", "steps", "batch_size", "lr", "beta1",
                  "beta2", "eps", "eval_every", "warm_start", "progress", "random_state",
                  *RECIPE_PARAMETERS, "n_jobs"],
}


@pytest.mark.parametrize("cls", CLASSES)
def test_every_hyperparameter_is_a_constructor_parameter_that_fit_uses(cls):
    # The documented meaning of each parameter, rebuilt from the functional
    # core: SeedSequence(random_state) split in two (initialisation, minibatch
    # order), flow_init with out_std, then train() with the Adam settings.
    X, X_val = _data(2, 300), _data(2, 50, seed=1)
    arch = dict(n_layers=2, hidden=3, out_std=0.2)
    if cls is RadFlow:
        arch["gate_hidden"] = 2
    training = dict(steps=7, batch_size=40, lr=0.02, beta1=0.8, beta2=0.99, eps=1e-6,
                    eval_every=3)
    model = cls(random_state=3, **arch, **training).fit(X, X_val=X_val)
    assert list(model.get_params()) == ALL_PARAMETERS[cls]

    from radref.core.flow import FlowConfig
    config = (FlowConfig("rad", 2, 2, 3, 2) if cls is RadFlow else FlowConfig("affine", 2, 2, 3))
    init_seed, order_seed = np.random.SeedSequence(3).spawn(2)
    params = flow_init(config, out_std=0.2, random_state=np.random.default_rng(init_seed))
    history = train(params, config, X, 7, 40, AdamConfig(0.02, 0.8, 0.99, 1e-6),
                    random_state=order_seed, x_val=X_val, eval_every=3)
    for name, value in params.items():
        assert model.parameters()[name].tobytes() == value.tobytes(), name
    assert model.history_["val_step"] == [3, 6, 7]
    assert model.history_["val_loglik"] == history["val_loglik"]
    assert model.n_steps_ == 7 and model.n_features_in_ == 2 and model.config_ == config
    # and each setting matters: changing one changes the fitted parameters
    for name, value in dict(steps=8, batch_size=30, lr=0.03, beta1=0.7, beta2=0.9, eps=1e-3,
                            out_std=0.3, random_state=4).items():
        changed = cls(**{**arch, **training, "random_state": 3, name: value}).fit(X)
        assert any(not np.array_equal(changed.parameters()[k], v) for k, v in params.items()), name


@pytest.mark.parametrize("cls", CLASSES)
def test_get_params_set_params_and_repr(cls):
    model = cls()
    assert repr(model) == f"{cls.__name__}()"
    defaults = model.get_params()
    assert list(defaults) == ALL_PARAMETERS[cls]
    assert defaults["steps"] == 3000 and defaults["lr"] == 5e-3 and defaults["batch_size"] == 500
    assert model.get_params(deep=False) == defaults
    lr = np.float32(0.01)
    assert model.set_params(hidden=4, lr=lr) is model
    assert model.lr is lr and model.hidden == 4  # stored unmodified
    assert repr(model) == f"{cls.__name__}(hidden=4, lr={lr!r})"
    assert repr(cls(random_state=0, progress=False)) == (
        f"{cls.__name__}(progress=False, random_state=0)")
    with pytest.raises(ValueError, match="invalid parameter 'hiden'.*valid parameters are"):
        model.set_params(hiden=3)
    with pytest.raises(ValueError, match="hidden has no parameters of its own"):
        model.set_params(hidden__size=3)
    assert model.hidden == 4


@pytest.mark.parametrize("cls", CLASSES)
def test_fit_keywords_of_radref_0_1_are_set_params(cls):
    X = _data(2, 200)
    old_style = cls(n_layers=2, hidden=4, random_state=0)
    # deprecated, with the release that removes it named
    with pytest.warns(DeprecationWarning, match=r"fit\(steps=\.\.\., .*removed in radref 0\.4"):
        old_style.fit(X, steps=6, batch_size=50, lr=0.01, progress=False)
    new_style = cls(n_layers=2, hidden=4, steps=6, batch_size=50, lr=0.01, progress=False,
                    random_state=0).fit(X)
    assert old_style.get_params() == new_style.get_params()
    for name, value in new_style.parameters().items():
        assert old_style.parameters()[name].tobytes() == value.tobytes(), name
    with pytest.raises(TypeError, match="unexpected keyword argument 'stepz'"):
        cls().fit(X, stepz=3)
    # fit(X, 500) meant 500 steps in 0.1; y is ignored now, so a number is refused
    with pytest.raises(TypeError, match="pass steps to the constructor"):
        cls(steps=1).fit(X, 500)


@pytest.mark.parametrize("cls", CLASSES)
def test_batch_size_larger_than_the_data_is_the_whole_data(cls):
    X = _data(2, 120)
    big = cls(n_layers=2, hidden=4, steps=3, batch_size=10_000, random_state=0).fit(X)
    exact = cls(n_layers=2, hidden=4, steps=3, batch_size=120, random_state=0).fit(X)
    assert big.batch_size == 10_000  # the parameter is kept as given
    for name, value in exact.parameters().items():
        assert big.parameters()[name].tobytes() == value.tobytes(), name


@pytest.mark.parametrize("random_state", [0, None])
@pytest.mark.parametrize("cls", CLASSES)
def test_warm_start_continues_bit_identically(cls, random_state, tmp_path):
    X = _data(2, 300)
    settings = dict(n_layers=2, hidden=4, batch_size=50, random_state=random_state)
    model = cls(steps=10, **settings).fit(X)
    model.save(tmp_path / "at10.npz")
    model.set_params(steps=25, warm_start=True).fit(X)
    assert model.n_steps_ == 25 and model.optimizer_state_["t"] == 25
    assert model.history_["step"] == list(range(1, 26))
    # the same as one uninterrupted run (random_state=None: the drawn seed is
    # remembered, so compare with the resumption of the saved file instead)
    if random_state is not None:
        reference = cls(steps=25, **settings).fit(X)
    else:
        reference = cls(steps=25, **settings).fit(X, checkpoint=tmp_path / "at10.npz")
    for name, value in reference.parameters().items():
        assert model.parameters()[name].tobytes() == value.tobytes(), name
    assert model.history_["loglik"] == reference.history_["loglik"]


def test_warm_start_errors_and_nothing_to_do():
    X = _data(2, 200)
    model = RadFlow(n_layers=2, hidden=4, steps=5, batch_size=50, random_state=0,
                    warm_start=True).fit(X)
    before = {k: v.copy() for k, v in model.parameters().items()}
    with pytest.warns(UserWarning, match="already done its 5 steps"):
        model.fit(X)
    for name, value in before.items():
        np.testing.assert_array_equal(model.parameters()[name], value)
    with pytest.raises(ValueError, match=r"steps \(3\) is below the 5 steps"):
        model.set_params(steps=3).fit(X)
    with pytest.raises(ValueError, match="architecture .* differs"):
        model.set_params(steps=10, hidden=5).fit(X)
    with pytest.raises(ValueError, match="X has 3 features, but RadFlow is expecting 2"):
        model.set_params(hidden=4).fit(_data(3, 100))
    assert model.n_steps_ == 5  # nothing above changed the model
    for name, value in before.items():
        np.testing.assert_array_equal(model.parameters()[name], value)


@pytest.mark.parametrize("with_checkpoint", [False, True])
def test_ctrl_c_stops_fit_between_steps_and_resumes_bit_identically(
        monkeypatch, tmp_path, with_checkpoint):
    # A real SIGINT, sent by the training loop's callback after step 7 (so
    # the test is deterministic); the handler fit installs must turn it into a
    # stop after that step, not a KeyboardInterrupt in the middle of one.
    import os
    import signal

    import radref.training.run as estimators  # the module whose training loop fit runs
    from radref.user.estimators import TrainingInterrupted

    real_train = estimators.train

    def train_sending_sigint(*args, callback=None, **kwargs):
        def callback_then_signal(step, *rest):
            if step == 7:
                os.kill(os.getpid(), signal.SIGINT)
            return callback(step, *rest)
        return real_train(*args, callback=callback_then_signal, **kwargs)

    monkeypatch.setattr(estimators, "train", train_sending_sigint)
    X = _data(2, 300)
    settings = dict(n_layers=2, hidden=4, batch_size=50, random_state=0)
    path = tmp_path / "ckpt.npz" if with_checkpoint else None
    model = RadFlow(steps=20, **settings)
    with pytest.raises(TrainingInterrupted) as info:
        model.fit(X, checkpoint=path, checkpoint_every=5)
    assert isinstance(info.value, KeyboardInterrupt)
    assert info.value.step == 7 and info.value.checkpoint == path
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    assert model.n_steps_ == 7 and model.optimizer_state_["t"] == 7
    assert model.history_["step"] == list(range(1, 8))
    monkeypatch.setattr(estimators, "train", real_train)
    if with_checkpoint:
        resumed = RadFlow(steps=20, **settings).fit(X, checkpoint=path)
    else:
        resumed = model.set_params(warm_start=True).fit(X)
    whole = RadFlow(steps=20, **settings).fit(X)
    for name, value in whole.parameters().items():
        assert resumed.parameters()[name].tobytes() == value.tobytes(), name
    assert resumed.history_["loglik"] == whole.history_["loglik"]


# ------------------------------------------------ checkpoints of radref 0.1

V0_1 = Path(__file__).parent / "data" / "v0_1"  # written by tests/data/make_v0_1_checkpoints.py


@pytest.mark.parametrize("cls", CLASSES)
def test_models_saved_by_radref_0_1_load(cls):
    expected = np.load(V0_1 / "expected.npz")
    model = load_model(V0_1 / f"{cls.__name__}-saved.npz")
    assert type(model) is cls
    # 0.1's save() recorded the architecture and the step count, not the
    # training settings: those take their defaults, steps the steps done
    params = model.get_params()
    assert (params["n_layers"], params["hidden"], params["random_state"]) == (2, 4, 0)
    assert params["steps"] == model.n_steps_ == 10
    assert params["batch_size"] == 500
    np.testing.assert_allclose(model.score_samples(expected["X"]), expected[cls.__name__],
                               rtol=1e-12, atol=0)


def test_a_fit_checkpoint_of_radref_0_1_resumes(tmp_path):
    # 0.1's fit(X, steps=10, batch_size=50, lr=5e-3, checkpoint=...) resumed
    # to 20 steps by this version: the run 0.1 would have made, as this
    # version makes it uninterrupted
    X = np.load(V0_1 / "expected.npz")["X"]
    path = tmp_path / "ckpt.npz"
    path.write_bytes((V0_1 / "RadFlow-checkpoint.npz").read_bytes())
    loaded = load_model(path)
    assert loaded.get_params()["batch_size"] == 50 and loaded.get_params()["lr"] == 5e-3
    settings = dict(n_layers=2, hidden=4, steps=20, batch_size=50, lr=5e-3, random_state=0)
    resumed = RadFlow(**settings).fit(X, checkpoint=path)
    whole = RadFlow(**settings).fit(X)
    assert resumed.history_["step"] == list(range(1, 21))
    for name, value in whole.parameters().items():
        np.testing.assert_allclose(resumed.parameters()[name], value, rtol=1e-12, atol=1e-14,
                                   err_msg=name)


def test_reshape_hint_offers_only_shapes_a_flow_can_use():
    # a flow needs two or more columns: "one feature per sample" is not offered
    with pytest.raises(ValueError, match=r"X.reshape\(1, -1\) if it holds one sample") as info:
        RadFlow(steps=1).fit(np.arange(10.0))
    assert "reshape(-1, 1)" not in str(info.value)
    assert "a flow needs 2 or more columns" in str(info.value)
    assert "np.column_stack([x1, x2])" in str(info.value)  # what works instead
    model = RadFlow(n_layers=2, hidden=3, steps=2, random_state=0).fit(
        np.random.default_rng(0).normal(size=(50, 3)))
    with pytest.raises(ValueError, match=r"reshape\(1, -1\) if it holds one sample of 3 "
                                         r"features") as info:
        model.score_samples(np.zeros(3))
    assert "reshape(-1, 1)" not in str(info.value)
    with pytest.raises(ValueError, match=r"X\.reshape\(-1, 3\) if it holds points of 3 "):
        model.score_samples(np.zeros(12))  # points laid out one after the other
    # where one column is allowed, both hints are offered
    from radref.checks import check_array
    with pytest.raises(ValueError, match=r"reshape\(-1, 1\) if it holds one feature, "
                                         r"x.reshape\(1, -1\)"):
        check_array("x", np.arange(3.0))


def test_continuing_a_fit_that_has_nothing_to_train_says_so(tmp_path):
    X = np.random.default_rng(0).normal(size=(300, 2))
    common = dict(n_layers=2, hidden=3, batch_size=50, random_state=0, progress=False)
    path = tmp_path / "ck.npz"
    RadFlow(steps=30, **common).fit(X, checkpoint=path)
    # fewer steps than the checkpoint holds: refused, as warm_start refuses them
    with pytest.raises(ValueError, match=r"steps \(10\) is below the 30 steps of checkpoint"):
        RadFlow(steps=10, **common).fit(X, checkpoint=path)
    with pytest.warns(UserWarning, match=r"the checkpoint .*ck.npz has already done its 30 "
                                         r"steps"):
        assert RadFlow(steps=30, **common).fit(X, checkpoint=path).n_steps_ == 30
    # a run that early stopping has stopped trains no further, and says so
    stopping = dict(common, early_stopping=True, eval_every=5, n_iter_no_change=1, lr=0.3)
    model = RadFlow(steps=2000, **stopping).fit(X)
    assert model.stopped_at_ is not None and model.n_steps_ < 2000
    with pytest.warns(UserWarning, match=rf"stopped by early stopping at step "
                                         rf"{model.stopped_at_}; it trains no further"):
        model.set_params(steps=4000, warm_start=True).fit(X)
    assert model.n_steps_ == model.stopped_at_


def test_a_cosine_decay_continued_with_warm_start_names_lr_decay_steps():
    X = np.random.default_rng(0).normal(size=(200, 2))
    model = RadFlow(n_layers=2, hidden=3, steps=20, batch_size=50, lr_schedule="cosine",
                    random_state=0, progress=False).fit(X)
    with pytest.raises(ValueError, match=r"lr_decay_steps 20 then, 40 now.*set lr_decay_steps "
                                         r"to the final total from the first fit on"):
        model.set_params(steps=40, warm_start=True).fit(X)


def test_messages_name_a_value_once_and_offer_none_where_it_is_valid():
    X = np.zeros((10, 2))
    with pytest.raises(TypeError, match=r"^progress must be True, False or None, got str 'no'$"):
        RadFlow(progress="no").fit(X)
    with pytest.raises(TypeError, match=r"^random_state must be an integer, got "
                                        r"Generator\(PCG64\) at 0x[0-9A-F]+$"):
        RadFlow(random_state=np.random.default_rng(0)).fit(X)
    with pytest.raises(TypeError, match=r"^steps must be an integer, got str '3'$"):
        RadFlow(steps="3").fit(X)

