"""Tests of radref.training.train: the gradient in chunks (large batches) and
the training step as the documented Adam update."""
import numpy as np
import pytest

from radref.core.flow import FlowConfig, flow_backward, flow_forward, flow_init
from radref.training.optim import AdamConfig, adam_init, adam_update
from radref.training.train import (MinibatchSchedule, as_seed_sequence, mean_loglik_and_grad,
                                   train)

CONFIGS = [FlowConfig("rad", 2, 4, 8, 8), FlowConfig("affine", 3, 3, 16, 0)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.kind)
def test_chunked_gradient_equals_one_pass(config):
    params = flow_init(config, out_std=0.3, random_state=0)
    x = np.random.default_rng(1).normal(size=(1000, config.dim))
    # the reference: one forward and one backward pass over the whole batch
    log_px, _, _, cache = flow_forward(x, params, config)
    _, expected = flow_backward(np.full(1000, 1e-3), cache)
    for chunk_rows in (1, 7, 333, 999, 1000):
        loglik, grads = mean_loglik_and_grad(x, params, config, chunk_rows=chunk_rows)
        assert loglik == pytest.approx(np.mean(log_px), rel=1e-13)
        assert set(grads) == set(expected)
        for name, g in expected.items():
            scale = np.max(np.abs(g))
            assert np.max(np.abs(grads[name] - g)) <= 1e-12 * scale, name


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.kind)
def test_train_steps_are_adam_update_on_the_minibatch_gradients(config):
    """train() is, bit for bit, mean_loglik_and_grad on the scheduled minibatch
    followed by adam_update on the negated gradient: the Adam the golden
    vectors check (both are PackedAdam.update) and nothing else."""
    params = flow_init(config, out_std=0.3, random_state=2)
    x = np.random.default_rng(3).normal(size=(60, config.dim))
    adam = AdamConfig(lr=0.01, beta1=0.8, beta2=0.95, eps=1e-7)
    expected = {k: v.copy() for k, v in params.items()}
    state = adam_init(expected)
    schedule = MinibatchSchedule(60, 20, as_seed_sequence(4))
    for step in range(5):
        _, grads = mean_loglik_and_grad(x[schedule.indices(step)], expected, config)
        expected, state = adam_update(expected, {k: -g for k, g in grads.items()}, state, adam)
    history = train(params, config, x, steps=5, batch_size=20, adam=adam, random_state=4,
                    progress=False)
    assert history["optimizer_state"]["t"] == 5
    for name, value in expected.items():
        assert params[name].tobytes() == value.tobytes(), name
        for key in ("m", "v"):
            assert history["optimizer_state"][key][name].tobytes() == \
                state[key][name].tobytes(), (key, name)


def test_train_progress_writes_plain_lines_off_a_terminal(capsys):
    # train() shares the estimators' display: progress=True off a terminal gives plain
    # lines at every tenth of the run, ending with the last step; progress=False is silent
    config = FlowConfig("affine", 2, 2, 3)
    x = np.random.default_rng(0).normal(size=(40, 2))
    train(flow_init(config, random_state=0), config, x, 20, batch_size=10,
          random_state=0, progress=True)
    lines = capsys.readouterr().err.splitlines()
    # each line names the model first (config's layer kind), then the step
    assert all(line.startswith("Real NVP  step ") for line in lines), lines
    assert [line.split()[3] for line in lines] == [f"{s}/20" for s in range(2, 21, 2)]
    assert all("(smoothed)" in line and "ETA" in line for line in lines)
    train(flow_init(config, random_state=0), config, x, 20, batch_size=10,
          random_state=0, progress=False)
    assert capsys.readouterr().err == ""
