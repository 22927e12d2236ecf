"""Tests of radref.training.train.mean_loglik_and_grad in chunks (large batches)."""
import numpy as np
import pytest

from radref.core.flow import FlowConfig, flow_backward, flow_forward, flow_init
from radref.training.train import mean_loglik_and_grad

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
