"""Tests of radref.core.mlp: gradient checks, forward formula, init, validation."""
import math

import numpy as np
import pytest

from radref.reference.gradcheck import numerical_gradient, max_norm_relative_error
from radref.core.mlp import count_parameters, mlp_backward, mlp_forward, mlp_init

N, N_IN, N_HIDDEN, N_OUT = 6, 3, 8, 4
KINK_MARGIN = 1e-3  # no hidden pre-activation this close to the ReLU kink
GRAD_TOL = 1e-6
# Finite-difference step: h = 1e-5 balances the O(h**2) truncation error
# against the O(eps_machine |L| / h) round-off best here (measured with the
# entrywise ratio below: h = 1e-6 gives up to ~1e-6 on the smallest gradient
# entries, h = 1e-5 about 2e-7).  It moves a hidden pre-activation by
# ~h * |W1| << KINK_MARGIN, so no ReLU flips.
FD_STEP = 1e-5


def _problem(output, seed=0):
    """Random input, parameters (no zero biases, non-unit scale) and upstream gradient."""
    rng = np.random.default_rng(seed)
    # out_std = 0.7 so that tanh is neither linear nor saturated; a small
    # out_std would make every gradient except d scale and dW2 nearly vanish.
    params = mlp_init(N_IN, N_HIDDEN, N_OUT, output=output, out_std=0.7, random_state=rng)
    params["b1"] = 0.3 * rng.standard_normal(N_HIDDEN)
    params["b2"] = 0.3 * rng.standard_normal(N_OUT)
    if output == "tanh":
        params["scale"] = rng.uniform(0.5, 2.0, N_OUT) * rng.choice([-1.0, 1.0], N_OUT)
    x = rng.standard_normal((N, N_IN))
    # Random (not all-ones) upstream gradient: a transposed or mis-indexed
    # gradient would otherwise often go unnoticed.
    dout = rng.standard_normal((N, N_OUT))
    return x, params, dout


def _entrywise_relative_error(analytic, numeric):
    """``max |a - n| / max(1e-8, |a| + |n|)`` entry by entry.

    Stricter than :func:`max_norm_relative_error` (normalised by the whole array's
    magnitude): an error confined to the small entries of a gradient is caught too.
    """
    denom = np.maximum(1e-8, np.abs(analytic) + np.abs(numeric))
    return float(np.max(np.abs(analytic - numeric) / denom))


def _hidden_pre(x, params):
    return x @ params["W1"] + params["b1"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("output", ["tanh", "linear"])
def test_gradients_match_finite_differences(output, seed):
    x, params, dout = _problem(output, seed)
    pre = _hidden_pre(x, params)
    # Finite differences are only valid away from the ReLU kink; also make sure
    # both ReLU branches are exercised.
    assert np.min(np.abs(pre)) > KINK_MARGIN
    assert np.any(pre > 0) and np.any(pre < 0)

    out, cache = mlp_forward(x, params)
    dx, grads = mlp_backward(dout, cache)
    assert set(grads) == set(params)
    for name, value in params.items():
        assert grads[name].shape == value.shape, name
    assert dx.shape == x.shape

    def loss():
        return float(np.sum(dout * mlp_forward(x, params)[0]))

    analytic = {"x": dx, **grads}
    numeric = {"x": numerical_gradient(loss, x, FD_STEP)}
    for name in params:
        numeric[name] = numerical_gradient(loss, params[name], FD_STEP)
    for name in analytic:
        err = max_norm_relative_error(analytic[name], numeric[name])
        assert err <= GRAD_TOL, (output, name, err)
        err = _entrywise_relative_error(analytic[name], numeric[name])
        assert err <= GRAD_TOL, (output, name, "entrywise", err)


@pytest.mark.parametrize("output", ["tanh", "linear"])
def test_gradients_are_not_trivial(output):
    """The checked gradients are not all (near) zero, so the check has teeth."""
    x, params, dout = _problem(output)
    dx, grads = mlp_backward(dout, mlp_forward(x, params)[1])
    assert np.max(np.abs(dx)) > 1e-2
    for name, g in grads.items():
        assert np.max(np.abs(g)) > 1e-2, name


def _forward_by_loops(x, params):
    """The network written out scalar by scalar, independently of mlp_forward."""
    n, n_in = x.shape
    n_hidden = params["b1"].shape[0]
    n_out = params["b2"].shape[0]
    out = np.empty((n, n_out))
    for i in range(n):
        h = []
        for j in range(n_hidden):
            s = params["b1"][j] + sum(x[i, k] * params["W1"][k, j] for k in range(n_in))
            h.append(s if s > 0 else 0.0)
        for o in range(n_out):
            a = params["b2"][o] + sum(h[j] * params["W2"][j, o] for j in range(n_hidden))
            out[i, o] = params["scale"][o] * math.tanh(a) if "scale" in params else a
    return out


@pytest.mark.parametrize("output", ["tanh", "linear"])
def test_forward_matches_scalar_formula(output):
    x, params, _ = _problem(output, seed=1)
    out, _ = mlp_forward(x, params)
    assert out.shape == (N, N_OUT)
    np.testing.assert_allclose(out, _forward_by_loops(x, params), rtol=1e-12, atol=1e-14)


def test_tanh_output_is_bounded_by_scale():
    x, params, _ = _problem("tanh", seed=2)
    out, _ = mlp_forward(100.0 * x, params)
    assert np.all(np.abs(out) <= np.abs(params["scale"]))


def test_output_kind_is_presence_of_scale():
    x, params, _ = _problem("tanh", seed=3)
    linear = {k: v for k, v in params.items() if k != "scale"}
    out_lin, cache = mlp_forward(x, linear)
    a = np.maximum(x @ params["W1"] + params["b1"], 0.0) @ params["W2"] + params["b2"]
    np.testing.assert_allclose(out_lin, a, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(mlp_forward(x, params)[0], params["scale"] * np.tanh(a),
                               rtol=1e-13, atol=1e-15)
    _, grads = mlp_backward(np.ones_like(out_lin), cache)
    assert "scale" not in grads


def test_relu_derivative_is_zero_at_the_kink():
    params = mlp_init(1, 1, 1, output="linear", random_state=0)
    params["W1"][...] = 1.0
    params["W2"][...] = 1.0
    dx, grads = mlp_backward(np.ones((1, 1)), mlp_forward(np.zeros((1, 1)), params)[1])
    assert dx[0, 0] == 0.0 and grads["W1"][0, 0] == 0.0 and grads["b1"][0] == 0.0


def test_forward_rejects_wrong_input_shape():
    params = mlp_init(N_IN, N_HIDDEN, N_OUT, random_state=0)
    with pytest.raises(ValueError, match="x must have shape"):
        mlp_forward(np.zeros((2, N_IN + 1)), params)
    with pytest.raises(ValueError, match="x must have shape"):
        mlp_forward(np.zeros(N_IN), params)


@pytest.mark.parametrize("output", ["tanh", "linear"])
def test_init_shapes_and_constants(output):
    params = mlp_init(N_IN, N_HIDDEN, N_OUT, output=output, random_state=0)
    expected = {"W1": (N_IN, N_HIDDEN), "b1": (N_HIDDEN,), "W2": (N_HIDDEN, N_OUT), "b2": (N_OUT,)}
    if output == "tanh":
        expected["scale"] = (N_OUT,)
    assert {k: v.shape for k, v in params.items()} == expected
    for value in params.values():
        assert value.dtype == np.float64
    assert np.all(params["b1"] == 0.0) and np.all(params["b2"] == 0.0)
    if output == "tanh":
        assert np.all(params["scale"] == 1.0)
    assert count_parameters(params) == (N_IN * N_HIDDEN + N_HIDDEN + N_HIDDEN * N_OUT + N_OUT
                                        + (N_OUT if output == "tanh" else 0))


def test_init_statistics():
    n_in, n_hidden, n_out, out_std = 50, 400, 30, 0.05
    params = mlp_init(n_in, n_hidden, n_out, out_std=out_std, random_state=123)
    for name, std in (("W1", math.sqrt(2.0 / n_in)), ("W2", out_std)):
        w = params[name]
        # Standard errors: std / sqrt(N) for the mean, about std / sqrt(2 N) for the std.
        assert abs(np.mean(w)) < 5.0 * std / math.sqrt(w.size), name
        assert abs(np.std(w) / std - 1.0) < 5.0 / math.sqrt(2.0 * w.size), name


def test_init_zero_out_std_gives_zero_output():
    params = mlp_init(N_IN, N_HIDDEN, N_OUT, out_std=0.0, random_state=0)
    assert np.all(params["W2"] == 0.0)
    out, _ = mlp_forward(np.random.default_rng(0).standard_normal((N, N_IN)), params)
    assert np.all(out == 0.0)


def test_init_is_deterministic_given_seed():
    a = mlp_init(N_IN, N_HIDDEN, N_OUT, random_state=42)
    b = mlp_init(N_IN, N_HIDDEN, N_OUT, random_state=42)
    c = mlp_init(N_IN, N_HIDDEN, N_OUT, random_state=43)
    d = mlp_init(N_IN, N_HIDDEN, N_OUT, random_state=np.random.default_rng(42))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        np.testing.assert_array_equal(a[name], d[name])
    assert not np.array_equal(a["W1"], c["W1"])
    assert not np.array_equal(a["W2"], c["W2"])


@pytest.mark.parametrize("kwargs, argument", [
    ({"n_in": 0}, "n_in"),
    ({"n_in": -2}, "n_in"),
    ({"n_in": 2.0}, "n_in"),
    ({"n_in": True}, "n_in"),
    ({"n_in": "3"}, "n_in"),
    ({"n_hidden": 0}, "n_hidden"),
    ({"n_hidden": 1.5}, "n_hidden"),
    ({"n_out": 0}, "n_out"),
    ({"n_out": None}, "n_out"),
    ({"output": "relu"}, "output"),
    ({"output": None}, "output"),
    ({"out_std": -0.1}, "out_std"),
    ({"out_std": float("nan")}, "out_std"),
    ({"out_std": float("inf")}, "out_std"),
    ({"out_std": "0.1"}, "out_std"),
])
def test_init_validates_arguments(kwargs, argument):
    args = {"n_in": 3, "n_hidden": 4, "n_out": 2}
    args.update(kwargs)
    with pytest.raises((TypeError, ValueError), match=argument):
        mlp_init(**args)


def test_init_accepts_numpy_integers():
    params = mlp_init(np.int64(2), np.int32(3), np.int16(1), out_std=np.float64(0.1), random_state=0)
    assert params["W1"].shape == (2, 3) and params["W2"].shape == (3, 1)
