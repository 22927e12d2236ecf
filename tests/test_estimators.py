"""Tests of the user layer: RadFlow and RealNVPFlow (radref.user.estimators) and the
training loop's failure mode (radref.training.train.NonFiniteError)."""
import numpy as np
import pytest

import radref
from helpers import check_gradient, flow_discrete_pattern, flow_kink_distance
from radref import NotFittedError, RadFlow, RealNVPFlow, load_model
from radref.training.checkpoint import CheckpointError
from radref.datasets import negative_entropy, train_test_split_samples
from radref.core.flow import flow_forward, flow_init, layer_params
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
    model = cls(n_layers=3, hidden=4, out_std=0.3, random_state=seed)
    model.fit(X, steps=1, batch_size=len(X))
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
    Z, K = model.transform(X)
    assert Z.shape == X.shape and K.shape == (300, 3, dim)
    assert np.abs(Z - X).max() > 0.1
    np.testing.assert_allclose(model.inverse_transform(Z, K), X, rtol=0, atol=1e-10)


def test_realnvp_inverse_transform_without_k():
    X = _data(2, 100)
    model = _small_model(RealNVPFlow, X)
    Z, K = model.transform(X)
    np.testing.assert_array_equal(K, -1)
    np.testing.assert_array_equal(model.inverse_transform(Z), model.inverse_transform(Z, K))
    rad = _small_model(RadFlow, X)
    with pytest.raises(ValueError, match="K"):
        rad.inverse_transform(rad.transform(X)[0])


@pytest.mark.parametrize("cls", CLASSES)
def test_transform_of_samples_reproduces_latents(cls):
    X = _data(2, 100)
    model = _small_model(cls, X)
    # sample() is flow_sample's x; its latents are the documented noise:
    # normals first, then uniforms, from default_rng(random_state)
    x = model.sample(500, random_state=5)
    normals = np.random.default_rng(5).standard_normal((500, 2))
    Z, K = model.transform(x)
    np.testing.assert_allclose(Z, normals, rtol=0, atol=1e-10)
    np.testing.assert_allclose(model.inverse_transform(Z, K), x, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(model.sample(500, random_state=5), x)
    if cls is RadFlow:
        assert set(np.unique(K[K >= 0])) == {0, 1, 2}


@pytest.mark.parametrize("cls", CLASSES)
def test_fit_is_deterministic(cls):
    X = _data(2, 1000)
    a = cls(n_layers=4, hidden=8, random_state=3).fit(X, steps=50, batch_size=200, lr=5e-3)
    b = cls(n_layers=4, hidden=8, random_state=3).fit(X, steps=50, batch_size=200, lr=5e-3)
    c = cls(n_layers=4, hidden=8, random_state=4).fit(X, steps=50, batch_size=200, lr=5e-3)
    pa, pb, pc = a.parameters(), b.parameters(), c.parameters()
    assert set(pa) == set(pb)
    for name in pa:
        assert pa[name].tobytes() == pb[name].tobytes(), name
    assert a.history_["loglik"] == b.history_["loglik"]
    # and the seed matters
    assert any(not np.array_equal(pa[name], pc[name]) for name in pa)
    # refitting the same object starts afresh
    a.fit(X, steps=50, batch_size=200, lr=5e-3)
    for name in pa:
        assert a.parameters()[name].tobytes() == pb[name].tobytes(), name


# ----------------------------------------------------------------- persistence

@pytest.mark.parametrize("cls", CLASSES)
def test_save_load_round_trip(cls, tmp_path):
    X = _data(2, 400)
    model = cls(n_layers=3, hidden=5, random_state=1).fit(X, steps=20, batch_size=100, lr=5e-3)
    path = tmp_path / "model.npz"
    model.save(path)
    for loaded in (cls.load(path), load_model(path), load_model(str(path))):
        assert type(loaded) is cls
        assert loaded.config_ == model.config_
        assert loaded.n_steps_ == 20
        assert loaded._hyperparameters() == model._hyperparameters()
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
    RealNVPFlow(n_layers=2, hidden=4, random_state=0).fit(X, steps=2, batch_size=100).save(path)
    with pytest.raises(CheckpointError, match="RealNVPFlow"):
        RadFlow.load(path)
    path_rad = tmp_path / "rad.npz"
    RadFlow(n_layers=2, hidden=4, random_state=0).fit(X, steps=2, batch_size=100).save(path_rad)
    with pytest.raises(CheckpointError, match="RadFlow"):
        RealNVPFlow.load(path_rad)
    assert type(load_model(path)) is RealNVPFlow
    assert type(load_model(path_rad)) is RadFlow


def test_numpy_integer_hyperparameters_can_be_saved(tmp_path):
    # Regression: RadFlow(hidden=np.int64(4)) kept gate_hidden as np.int64,
    # which the JSON metadata of a checkpoint cannot hold.
    X = _data(2, 200)
    model = RadFlow(n_layers=np.int64(2), hidden=np.int64(4), random_state=np.int64(0))
    model.fit(X, steps=2, batch_size=100)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.gate_hidden == 4 and type(loaded.gate_hidden) is int


def test_fit_checkpoint_resume_is_bit_identical(tmp_path):
    X = _data(2, 600)
    whole = RadFlow(n_layers=2, hidden=4, random_state=0).fit(X, steps=30, batch_size=100,
                                                              lr=5e-3)
    path = tmp_path / "resume.npz"
    RadFlow(n_layers=2, hidden=4, random_state=0).fit(X, steps=18, batch_size=100, lr=5e-3,
                                                      checkpoint=path, checkpoint_every=7)
    resumed = RadFlow(n_layers=2, hidden=4, random_state=0).fit(
        X, steps=30, batch_size=100, lr=5e-3, checkpoint=path, checkpoint_every=7)
    for name, value in whole.parameters().items():
        assert resumed.parameters()[name].tobytes() == value.tobytes(), name
    assert resumed.history_["loglik"] == whole.history_["loglik"]


# -------------------------------------------------------------------- training

@pytest.mark.parametrize("cls", CLASSES)
def test_training_improves_held_out_likelihood(cls):
    X_train, X_test = train_test_split_samples("two_moons", 5000, 2000, random_state=0)
    # The initial model: same seed, one step with a negligible learning rate
    # (Adam moves every parameter by ~1e-300), i.e. the model before training.
    initial = cls(random_state=0).fit(X_train, steps=1, lr=1e-300).score(X_test)
    trained = cls(random_state=0).fit(X_train, steps=400, lr=5e-3, X_val=X_test, eval_every=100)
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
    return {cls: cls(n_layers=2, hidden=4, random_state=0).fit(X, steps=2, batch_size=100)
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
    (np.array([[1.0, 2.0]], dtype=object), TypeError, "X must be a real numeric array"),
]


@pytest.mark.parametrize("bad,exc,message", BAD_X)
@pytest.mark.parametrize("cls", CLASSES)
def test_invalid_X_is_refused(cls, bad, exc, message, fitted):
    with pytest.raises(exc, match=message):
        cls(n_layers=2, hidden=4).fit(bad, steps=1, batch_size=1)
    model = fitted[cls]
    for method in (model.score_samples, model.score, model.transform, model.loglik_and_grad):
        with pytest.raises(exc, match=message):
            method(bad)


@pytest.mark.parametrize("cls", CLASSES)
def test_wrong_number_of_columns(cls, fitted):
    with pytest.raises(ValueError, match="X must have at least 2 columns"):
        cls(n_layers=2, hidden=4).fit(np.zeros((10, 1)), steps=1, batch_size=5)
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
        cls(n_layers=2, hidden=4).fit(np.zeros((10, 2)), steps=1, batch_size=5,
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
    Z, K = model.transform(readonly)
    Z.flags.writeable = False
    K.flags.writeable = False
    np.testing.assert_allclose(model.inverse_transform(Z, K), readonly, rtol=0, atol=1e-10)
    # fit accepts the same kinds of input and gives the same model
    a = cls(n_layers=2, hidden=4, random_state=0).fit(readonly, steps=3, batch_size=10)
    b = cls(n_layers=2, hidden=4, random_state=0).fit(X_int, steps=3, batch_size=10)
    c = cls(n_layers=2, hidden=4, random_state=0).fit(noncontiguous, steps=3, batch_size=10)
    for name in a.parameters():
        np.testing.assert_array_equal(a.parameters()[name], b.parameters()[name])
        np.testing.assert_array_equal(a.parameters()[name], c.parameters()[name])


@pytest.mark.parametrize("cls", CLASSES)
def test_hyperparameter_errors(cls):
    for kwargs, exc, message in [
        (dict(n_layers=0), ValueError, "n_layers must be >= 1"),
        (dict(n_layers=2.5), TypeError, "n_layers must be an integer"),
        (dict(n_layers=True), TypeError, "n_layers must be an integer"),
        (dict(hidden=-1), ValueError, "hidden must be >= 1"),
        (dict(hidden="8"), TypeError, "hidden must be an integer"),
        (dict(out_std=-0.1), ValueError, "out_std must be >= 0"),
        (dict(out_std=float("nan")), ValueError, "out_std must be a finite number"),
        (dict(random_state=-1), ValueError, "random_state must be >= 0"),
        (dict(random_state=1.5), TypeError, "random_state must be an integer"),
    ]:
        with pytest.raises(exc, match=message):
            cls(**kwargs)
    if cls is RadFlow:
        with pytest.raises(ValueError, match="gate_hidden must be >= 1"):
            RadFlow(gate_hidden=0)

    X = _data(2, 50)
    model = cls(n_layers=2, hidden=4, random_state=0)
    for kwargs, exc, message in [
        (dict(steps=0), ValueError, "steps must be >= 1"),
        (dict(steps=1.0), TypeError, "steps must be an integer"),
        (dict(batch_size=51), ValueError,
         r"batch_size \(51\) is larger than the number of samples"),
        (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
        (dict(lr=0.0), ValueError, "lr must be a finite number > 0"),
        (dict(lr=-1e-3), ValueError, "lr must be a finite number > 0"),
        (dict(lr=float("inf")), ValueError, "lr must be a finite number > 0"),
        (dict(beta1=1.0), ValueError, "beta1"),
        (dict(beta2=-0.1), ValueError, "beta2"),
        (dict(eps=0.0), ValueError, "eps"),
        (dict(eval_every=0), ValueError, "eval_every must be >= 1"),
    ]:
        with pytest.raises(exc, match=message):
            model.fit(X, **dict(dict(steps=1, batch_size=10), **kwargs))
        assert not hasattr(model, "params_")  # a refused fit leaves the model unfitted


@pytest.mark.parametrize("cls", CLASSES)
def test_not_fitted_error(cls, tmp_path):
    model = cls()
    X = np.zeros((3, 2))
    for call in (lambda: model.score_samples(X), lambda: model.score(X),
                 lambda: model.transform(X),
                 lambda: model.inverse_transform(X, np.zeros((3, 6, 2), dtype=int)),
                 lambda: model.sample(3), model.parameters, model.n_parameters,
                 lambda: model.loglik_and_grad(X), lambda: model.save(tmp_path / "m.npz")):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()
    assert not (tmp_path / "m.npz").exists()
    assert issubclass(NotFittedError, RuntimeError)
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
            RadFlow(n_layers=2, hidden=4, random_state=0).fit(X, steps=20, batch_size=40)


def test_failed_fit_leaves_a_consistent_model_at_its_last_finite_step(monkeypatch):
    # A model fitted once, then refitted on data whose 3rd batch poisons a
    # gradient: the model must hold the refit's last finite parameters, with the
    # optimizer state, step count and history of that same point (not a mix of
    # the two fits).
    X = _data(2, 200)
    model = RadFlow(n_layers=2, hidden=4, random_state=0).fit(X, steps=5, batch_size=50)
    first_params = {k: v.copy() for k, v in model.parameters().items()}
    seen = _poison_gradient(monkeypatch, call=3, name="0.cond.b2", value=np.inf)
    refit = RadFlow(n_layers=2, hidden=4, random_state=1)
    refit.__dict__.update({k: v for k, v in model.__dict__.items() if k.endswith("_")})
    with pytest.raises(NonFiniteError):
        refit.fit(X, steps=10, batch_size=50)
    assert refit.n_steps_ == 2
    assert refit.optimizer_state_["t"] == 2
    assert refit.history_["step"] == [1, 2]
    for name, value in refit.parameters().items():
        np.testing.assert_array_equal(value, seen[2][name])
    assert any(not np.array_equal(refit.parameters()[k], first_params[k]) for k in first_params)
