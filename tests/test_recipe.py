"""Tests of the training recipe beyond the paper's (issue 15): learning-rate
schedules, the parameter average (EMA) and early stopping, in the training
loop and in the estimators, with bit-exact resume from checkpoints."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import radref.training.run as estimators  # where fit's training loop is called
from radref import RadFlow, RealNVPFlow, datasets, load_model
from radref.core.flow import FlowConfig, flow_init, flow_log_density
from radref.training.optim import AdamConfig, adam_init, adam_update
from radref.training.schedules import (EarlyStopping, LRSchedule, ParameterAverage,
                                       check_lr_schedule, learning_rate, validation_split)
from radref.training.train import MinibatchSchedule, as_seed_sequence, mean_loglik_and_grad, train

CONFIG = FlowConfig("rad", 2, 2, 4, 4)


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.normal(size=n), 0.5 * rng.normal(size=n) ** 2])


# ----------------------------------------------------------------- schedules

def test_constant_schedule_is_the_given_rate():
    assert learning_rate(7, 0.003, LRSchedule()) is 0.003


def test_cosine_schedule_values_by_hand():
    # lr = 0.1, decay over T = 4 steps down to 0.1 * lr: at step t,
    # 0.1 * (0.1 + 0.9 * (1 + cos(pi t / 4)) / 2), with cos(pi/4) = sqrt(2)/2
    schedule = LRSchedule("cosine", horizon=4, final_fraction=0.1)
    half_root2 = math.sqrt(2) / 2
    expected = {1: 0.1 * (0.1 + 0.9 * (1 + half_root2) / 2),  # 0.0868198...
                2: 0.1 * (0.1 + 0.45),                         # cos(pi/2) = 0
                3: 0.1 * (0.1 + 0.9 * (1 - half_root2) / 2),  # 0.0231801...
                4: 0.01, 5: 0.01, 100: 0.01}                   # the final rate, kept
    for t, value in expected.items():
        assert learning_rate(t, 0.1, schedule) == pytest.approx(value, rel=1e-14), t
    assert learning_rate(1, 0.1, schedule) == pytest.approx(0.08681980515339464, rel=1e-14)


def test_step_schedule_values_by_hand():
    schedule = LRSchedule("step", step_size=3, gamma=0.5)
    rates = [learning_rate(t, 1.0, schedule) for t in range(1, 11)]
    assert rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]


@given(lr=st.floats(1e-6, 1.0), horizon=st.integers(1, 10_000),
       fraction=st.floats(0.0, 1.0), t=st.integers(1, 20_000))
def test_cosine_schedule_decreases_between_lr_and_final_rate(lr, horizon, fraction, t):
    schedule = LRSchedule("cosine", horizon=horizon, final_fraction=fraction)
    now, later = learning_rate(t, lr, schedule), learning_rate(t + 1, lr, schedule)
    assert later <= now * (1 + 1e-15)
    assert lr * fraction * (1 - 1e-15) <= now <= lr * (1 + 1e-15)


@pytest.mark.parametrize("field, value, exc", [
    ("kind", "linear", ValueError), ("horizon", 0, ValueError), ("horizon", 2.5, TypeError),
    ("final_fraction", -0.1, ValueError), ("final_fraction", 1.5, ValueError),
    ("final_fraction", float("nan"), ValueError), ("step_size", 0, ValueError),
    ("gamma", 0.0, ValueError), ("gamma", 1.5, ValueError), ("gamma", float("nan"), ValueError)])
def test_invalid_schedules_are_refused(field, value, exc):
    with pytest.raises(exc):
        check_lr_schedule(LRSchedule()._replace(**{field: value}))


def test_train_with_a_schedule_is_adam_with_the_scheduled_rate_at_each_step():
    params = flow_init(CONFIG, out_std=0.3, random_state=2)
    x = _data(60, 3)
    adam = AdamConfig(lr=0.05, beta1=0.8, beta2=0.95, eps=1e-7)
    schedule = LRSchedule("step", step_size=2, gamma=0.25)
    expected = {k: v.copy() for k, v in params.items()}
    state = adam_init(expected)
    batches = MinibatchSchedule(60, 20, as_seed_sequence(4))
    for step, lr in enumerate([0.05, 0.05, 0.0125, 0.0125, 0.003125]):
        _, grads = mean_loglik_and_grad(x[batches.indices(step)], expected, CONFIG)
        expected, state = adam_update(expected, {k: -g for k, g in grads.items()}, state,
                                      adam._replace(lr=lr))
    train(params, CONFIG, x, steps=5, batch_size=20, adam=adam, random_state=4,
          lr_schedule=schedule, progress=False)
    for name, value in expected.items():
        assert params[name].tobytes() == value.tobytes(), name


# -------------------------------------------------------------------- average

def test_parameter_average_by_hand():
    # decay 0.5, iterates 1, 2, 3: a = 0.5, 1.25, 2.125; debiased 2.125 / 0.875,
    # the weighted mean (0.25 * 1 + 0.5 * 2 + 1 * 3) / 1.75
    average = ParameterAverage(0.5, {"w": np.zeros(2)})
    assert average.average() is None
    for value in (1.0, 2.0, 3.0):
        average.update({"w": np.full(2, value)})
    np.testing.assert_allclose(average.accumulator["w"], 2.125, rtol=1e-15)
    np.testing.assert_allclose(average.average()["w"], 4.25 / 1.75, rtol=1e-15)


def test_train_keeps_the_average_of_the_iterates_and_scores_it():
    params = flow_init(CONFIG, out_std=0.3, random_state=0)
    x, x_val = _data(100, 1), _data(40, 2)
    iterates = []
    average = ParameterAverage(0.7, params)
    history = train(params, CONFIG, x, steps=6, batch_size=25, adam=AdamConfig(0.05),
                    random_state=1, x_val=x_val, eval_every=3, average=average,
                    callback=lambda step, p, s, h: iterates.append(
                        {k: v.copy() for k, v in p.items()}), callback_every=1)
    weights = 0.7 ** np.arange(5, -1, -1) * 0.3
    for name in params:
        expected = sum(w * it[name] for w, it in zip(weights, iterates)) / weights.sum()
        np.testing.assert_allclose(average.average()[name], expected, rtol=1e-12, atol=1e-15)
        assert params[name].tobytes() == iterates[-1][name].tobytes()  # the raw iterate
    assert history["val_loglik"][-1] == float(np.mean(
        flow_log_density(x_val, average.average(), CONFIG)))


@pytest.mark.parametrize("cls", [RadFlow, RealNVPFlow])
def test_fitted_model_with_ema_scores_with_the_average(cls):
    X, X_test = _data(300), _data(100, 5)
    settings = dict(n_layers=2, hidden=4, steps=12, batch_size=50, lr=0.02, random_state=0)
    plain = cls(**settings).fit(X)
    averaged = cls(ema_decay=0.8, **settings).fit(X)
    for name, value in plain.parameters().items():  # same iterates
        assert averaged.training_params_[name].tobytes() == value.tobytes(), name
    assert any(not np.array_equal(averaged.params_[k], v) for k, v in plain.params_.items())
    assert averaged.score(X_test) == float(np.mean(
        flow_log_density(X_test, averaged.params_, averaged.config_)))
    assert averaged.score(X_test) != plain.score(X_test)


# -------------------------------------------------------------- early stopping

def test_validation_split_partitions_the_training_rows():
    train_rows, validation_rows = validation_split(50, 0.2, np.random.SeedSequence(3))
    assert len(validation_rows) == 10 and len(train_rows) == 40
    assert np.array_equal(np.sort(np.concatenate([train_rows, validation_rows])), np.arange(50))
    again = validation_split(50, 0.2, np.random.SeedSequence(3))
    assert np.array_equal(again[1], validation_rows)
    assert len(validation_split(3, 0.01, 0)[1]) == 1 and len(validation_split(3, 0.99, 0)[1]) == 2


def test_early_stopping_records_the_best_and_stops_after_n_scores_without_improvement():
    stopper = EarlyStopping(np.zeros((1, 2)), n_iter_no_change=2)
    scores = {10: -3.0, 20: -2.0, 30: -2.5, 40: -1.0, 50: -1.0, 60: -1.5}
    stops = {}
    for step, score in scores.items():
        stops[step] = stopper.record(step, score, {"w": np.full(1, float(step))})
        if stops[step]:
            break
    assert stops == {10: False, 20: False, 30: False, 40: False, 50: False, 60: True}
    assert stopper.best_step == 40 and stopper.best_score == -1.0  # a tie is no improvement
    assert stopper.best_params["w"][0] == 40.0 and stopper.stopped_at == 60


def _stopping_settings(**changes):
    return dict(dict(n_layers=2, hidden=4, steps=200, batch_size=40, lr=0.05, eval_every=5,
                     random_state=1, early_stopping=True, validation_fraction=0.25,
                     n_iter_no_change=2), **changes)


def test_early_stopping_stops_and_keeps_the_best_validation_parameters():
    X = _data(200)
    model = RadFlow(**_stopping_settings()).fit(X)
    assert model.stopped_at_ is not None and model.stopped_at_ < 200
    assert model.n_steps_ == model.stopped_at_ == model.history_["step"][-1]
    assert model.best_step_ <= model.stopped_at_ - 2 * 5
    # the documented split: rows of X, seeded by the third child of the run's seed
    entropy = np.random.SeedSequence(1).entropy
    _, rows = validation_split(200, 0.25, np.random.SeedSequence(entropy, spawn_key=(2,)))
    assert model.best_validation_score_ == float(np.mean(
        flow_log_density(X[rows], model.params_, model.config_)))
    assert any(not np.array_equal(model.params_[k], v) for k, v in model.training_params_.items())


def test_early_stopping_never_reads_the_test_set(monkeypatch):
    X, X_test = _data(200), _data(80, seed=9)
    seen = {}
    real_train = estimators.train

    def spy(params, config, x, *args, stopper=None, x_val=None, **kwargs):
        seen.update(x=x.copy(), stop=stopper.x.copy(), x_val=x_val)
        return real_train(params, config, x, *args, stopper=stopper, x_val=x_val, **kwargs)

    monkeypatch.setattr(estimators, "train", spy)
    with_test = RadFlow(**_stopping_settings()).fit(X, X_val=X_test)
    rows = {tuple(r) for r in X}
    stop_rows, train_rows = {tuple(r) for r in seen["stop"]}, {tuple(r) for r in seen["x"]}
    assert stop_rows <= rows and train_rows <= rows and not stop_rows & train_rows
    assert len(stop_rows) == 50 and len(train_rows) == 150
    assert not stop_rows & {tuple(r) for r in X_test}
    monkeypatch.setattr(estimators, "train", real_train)
    # the test set changes nothing: not given, or replaced by other points
    without = RadFlow(**_stopping_settings()).fit(X)
    other = RadFlow(**_stopping_settings()).fit(X, X_val=X_test * 7 + 3)
    for model in (without, other):
        assert model.stopped_at_ == with_test.stopped_at_
        assert model.best_step_ == with_test.best_step_
        for name, value in with_test.params_.items():
            assert model.params_[name].tobytes() == value.tobytes(), name


# ------------------------------------------------------------- bit-exact resume

RESUMABLE = {
    "cosine+ema": dict(lr_schedule="cosine", lr_decay_steps=30, lr_final_fraction=0.05,
                       ema_decay=0.9),
    "step+ema": dict(lr_schedule="step", lr_step_size=4, lr_gamma=0.7, ema_decay=0.95),
    "cosine+ema+stopping": dict(lr_schedule="cosine", lr_decay_steps=30, ema_decay=0.9,
                                early_stopping=True, n_iter_no_change=100),
}


def _assert_same_model(a, b):
    for attribute in ("params_", "training_params_"):
        for name, value in getattr(a, attribute).items():
            assert getattr(b, attribute)[name].tobytes() == value.tobytes(), (attribute, name)
    for key in ("m", "v"):
        for name, value in a.optimizer_state_[key].items():
            assert b.optimizer_state_[key][name].tobytes() == value.tobytes(), (key, name)
    assert a.history_ == b.history_ and a.n_steps_ == b.n_steps_
    assert (a.best_step_, a.best_validation_score_, a.stopped_at_) == \
        (b.best_step_, b.best_validation_score_, b.stopped_at_)


@pytest.mark.parametrize("recipe", list(RESUMABLE), ids=list(RESUMABLE))
@pytest.mark.parametrize("cls", [RadFlow, RealNVPFlow])
def test_resume_from_a_checkpoint_is_bit_identical(cls, recipe, tmp_path):
    X, X_val = _data(400), _data(60, 4)
    settings = dict(n_layers=2, hidden=4, batch_size=50, lr=0.02, eval_every=6, random_state=0,
                    **RESUMABLE[recipe])
    whole = cls(steps=30, **settings).fit(X, X_val=X_val)
    path = tmp_path / "ckpt.npz"
    # interrupted after step 18 (a multiple of eval_every, where an
    # uninterrupted run scores too), saved every 7 steps and at the end
    cls(steps=18, **settings).fit(X, X_val=X_val, checkpoint=path, checkpoint_every=7)
    resumed = cls(steps=30, **settings).fit(X, X_val=X_val, checkpoint=path)
    _assert_same_model(whole, resumed)
    # and the final checkpoint loads as the same model
    resumed.save(tmp_path / "saved.npz")
    _assert_same_model(whole, load_model(tmp_path / "saved.npz"))


def test_warm_start_with_schedule_and_ema_is_bit_identical():
    X = _data(300)
    settings = dict(n_layers=2, hidden=4, batch_size=50, lr=0.02, random_state=3,
                    **RESUMABLE["step+ema"])
    whole = RadFlow(steps=25, **settings).fit(X)
    model = RadFlow(steps=11, **settings).fit(X)
    model.set_params(warm_start=True, steps=25).fit(X)
    _assert_same_model(whole, model)


def test_resume_with_another_recipe_is_refused(tmp_path):
    X = _data(300)
    settings = dict(n_layers=2, hidden=4, batch_size=50, random_state=0)
    path = tmp_path / "ckpt.npz"
    RadFlow(steps=5, ema_decay=0.9, **settings).fit(X, checkpoint=path)
    with pytest.raises(ValueError, match="other data or training settings"):
        RadFlow(steps=10, **settings).fit(X, checkpoint=path)
    model = RadFlow(steps=5, **settings).fit(X)
    with pytest.raises(ValueError, match="recipe"):
        model.set_params(warm_start=True, steps=8, ema_decay=0.5).fit(X)


# ------------------------------------------------------- defaults and errors

def test_step_schedule_with_gamma_one_is_the_constant_rate_bit_for_bit():
    X = _data(300)
    settings = dict(n_layers=2, hidden=4, steps=9, batch_size=50, random_state=0)
    plain = RadFlow(**settings).fit(X)
    stepped = RadFlow(lr_schedule="step", lr_step_size=2, lr_gamma=1.0, **settings).fit(X)
    for name, value in plain.params_.items():
        assert stepped.params_[name].tobytes() == value.tobytes(), name
    assert plain.params_ is plain.training_params_  # no recipe: the last iterate
    assert plain.best_step_ is None and plain.stopped_at_ is None


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(lr_schedule="linear"), ValueError, "lr_schedule"),
    (dict(lr_schedule="cosine", lr_decay_steps=0), ValueError, "lr_decay_steps"),
    (dict(lr_final_fraction=2.0), ValueError, "lr_final_fraction"),
    (dict(lr_step_size=1.5), TypeError, "lr_step_size"),
    (dict(lr_gamma=0.0), ValueError, "lr_gamma"),
    (dict(ema_decay=1.0), ValueError, "ema_decay"),
    (dict(ema_decay="0.9"), TypeError, "ema_decay"),
    (dict(early_stopping=1), TypeError, "early_stopping"),
    (dict(validation_fraction=1.0), ValueError, "validation_fraction"),
    (dict(n_iter_no_change=0), ValueError, "n_iter_no_change"),
])
def test_invalid_recipe_parameters_are_refused_by_fit(kwargs, exc, message):
    model = RadFlow(steps=2, **kwargs)  # stored unchecked
    with pytest.raises(exc, match=message):
        model.fit(_data(50))


def test_a_run_that_stopped_early_stays_stopped_when_resumed(tmp_path):
    X = _data(200)
    path = tmp_path / "ckpt.npz"
    stopped = RadFlow(ema_decay=0.9, **_stopping_settings()).fit(X, checkpoint=path)
    assert stopped.stopped_at_ < 200
    # the checkpoint is saved at the end, early or not (checkpoint_every is 1000)
    assert load_model(path).n_steps_ == stopped.stopped_at_
    with pytest.warns(UserWarning, match="stopped by early stopping"):
        resumed = RadFlow(ema_decay=0.9, **_stopping_settings()).fit(X, checkpoint=path)
    _assert_same_model(stopped, resumed)
    with pytest.warns(UserWarning, match="it trains no further"):
        stopped.set_params(warm_start=True, steps=300).fit(X)  # nothing left to do
    _assert_same_model(resumed, stopped)


def test_cosine_checkpoint_is_not_resumed_under_another_decay(tmp_path):
    # Without lr_decay_steps the cosine spans the fit's steps: resuming a
    # 20-step checkpoint to 50 steps would change every rate, so it is refused
    # naming the horizon; with the horizon spelled out it equals one fit.
    from radref.user.estimators import CheckpointMismatchError
    X = datasets.sample("two_moons", 300, random_state=0)
    path = str(tmp_path / "c.npz")
    common = dict(random_state=1, batch_size=100, progress=False, lr_schedule="cosine")
    RadFlow(steps=20, **common).fit(X, checkpoint=path)
    with pytest.raises(CheckpointMismatchError) as info:
        RadFlow(steps=50, **common).fit(X, checkpoint=path)
    assert info.value.differing == ["lr_decay_steps"]
    assert info.value.theirs["lr_decay_steps"] == 20
    assert info.value.mine["lr_decay_steps"] == 50
    path = str(tmp_path / "d.npz")
    RadFlow(steps=20, lr_decay_steps=50, **common).fit(X, checkpoint=path)
    resumed = RadFlow(steps=50, lr_decay_steps=50, **common).fit(X, checkpoint=path)
    whole = RadFlow(steps=50, **common).fit(X)
    for name, value in whole.params_.items():
        np.testing.assert_array_equal(resumed.params_[name], value)


def test_cosine_checkpoint_of_radref_0_2_0_resumes(tmp_path):
    # radref 0.2.0 recorded no horizon in a cosine checkpoint whose horizon
    # was the fit's steps; it is read as those steps.
    from radref.training.checkpoint import load_checkpoint, save_checkpoint
    X = datasets.sample("two_moons", 300, random_state=0)
    path = str(tmp_path / "c.npz")
    common = dict(random_state=1, batch_size=100, progress=False, lr_schedule="cosine")
    RadFlow(steps=20, lr_decay_steps=40, **common).fit(X, checkpoint=path)
    meta, params, state, groups = load_checkpoint(path, extra_arrays=True)
    extra = dict(meta["extra"])
    # radref 0.2.0's layout: Adam's settings as a list, the recipe's non-default
    # settings, and (the point here) no horizon
    settings = extra.pop("settings")
    extra.update(batch_size=settings["batch_size"],
                 adam=[settings[k] for k in ("lr", "beta1", "beta2", "eps")],
                 recipe={"lr_schedule": "cosine"})
    extra["estimator_params"] = dict(extra["estimator_params"], steps=40, lr_decay_steps=None)
    save_checkpoint(path, meta["model"], meta["hyperparameters"], params, state, meta["step"],
                    extra=extra, extra_arrays=groups or None)
    resumed = RadFlow(steps=40, **common).fit(X, checkpoint=path)
    whole = RadFlow(steps=40, **common).fit(X)
    for name, value in whole.params_.items():
        np.testing.assert_array_equal(resumed.params_[name], value)
