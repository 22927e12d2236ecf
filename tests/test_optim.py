"""Tests of radref.training.optim (Adam)."""
import copy
import math

import numpy as np
import pytest

from radref.training.optim import (AdamConfig, PackedAdam, adam_init, adam_update,
                                   adam_update_inplace, check_adam_config, pack)


def _run(config, grads_seq, p0):
    """Apply adam_update for each gradient of grads_seq to the single parameter "w"."""
    params = {"w": np.array(p0, dtype=np.float64)}
    state = adam_init(params)
    for g in grads_seq:
        params, state = adam_update(params, {"w": np.array(g, dtype=np.float64)}, state, config)
    return params["w"], state


def test_defaults():
    assert AdamConfig() == AdamConfig(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
    assert check_adam_config(AdamConfig()) == AdamConfig()


def test_init_state():
    params = {"a": np.ones((2, 3)), "b": np.ones(4)}
    state = adam_init(params)
    assert state["t"] == 0
    for key in ("m", "v"):
        assert set(state[key]) == {"a", "b"}
        for name, value in params.items():
            assert state[key][name].shape == value.shape
            assert np.all(state[key][name] == 0.0)
            assert state[key][name] is not value


def test_first_three_steps_by_hand():
    # lr = 0.1, beta1 = 0.9, beta2 = 0.999, eps = 0.01 (large, so that eps
    # visibly enters); gradients 0.5, -0.2, 0.1 at p0 = 1.  Moments computed by
    # hand:
    #   t=1: m = 0.1*0.5 = 0.05                 v = 0.001*0.25 = 0.00025
    #   t=2: m = 0.045 - 0.02 = 0.025           v = 0.00024975 + 0.00004 = 0.00028975
    #   t=3: m = 0.0225 + 0.01 = 0.0325         v = 0.00028946025 + 0.00001 = 0.00029946025
    # bias corrections 1 - 0.9**t = 0.1, 0.19, 0.271 and
    # 1 - 0.999**t = 0.001, 0.001999, 0.002997001.
    config = AdamConfig(lr=0.1, beta1=0.9, beta2=0.999, eps=0.01)
    p1 = 1.0 - 0.1 * (0.05 / 0.1) / (math.sqrt(0.00025 / 0.001) + 0.01)
    p2 = p1 - 0.1 * (0.025 / 0.19) / (math.sqrt(0.00028975 / 0.001999) + 0.01)
    p3 = p2 - 0.1 * (0.0325 / 0.271) / (math.sqrt(0.00029946025 / 0.002997001) + 0.01)
    # p1 = 1 - 0.05 / 0.51
    assert p1 == pytest.approx(1.0 - 0.05 / 0.51, rel=1e-15)

    grads = [0.5, -0.2, 0.1]
    params = {"w": np.array(1.0)}
    state = adam_init(params)
    expected_m = [0.05, 0.025, 0.0325]
    expected_v = [0.00025, 0.00028975, 0.00029946025]
    for t, (g, p_exp) in enumerate(zip(grads, [p1, p2, p3]), start=1):
        params, state = adam_update(params, {"w": np.array(g)}, state, config)
        assert state["t"] == t
        assert state["m"]["w"] == pytest.approx(expected_m[t - 1], rel=1e-13)
        assert state["v"]["w"] == pytest.approx(expected_v[t - 1], rel=1e-13)
        assert params["w"] == pytest.approx(p_exp, rel=1e-13, abs=0.0)


def test_update_is_elementwise():
    """A vector parameter is updated as independent scalars."""
    rng = np.random.default_rng(0)
    grads_seq = rng.standard_normal((3, 5))
    p0 = rng.standard_normal(5)
    config = AdamConfig(lr=0.05)
    w, _ = _run(config, grads_seq, p0)
    for i in range(5):
        wi, _ = _run(config, grads_seq[:, i], p0[i])
        assert w[i] == pytest.approx(float(wi), rel=1e-15)


def test_several_parameters_use_their_own_moments():
    params = {"a": np.array([1.0]), "b": np.array([1.0])}
    state = adam_init(params)
    config = AdamConfig(lr=0.1)
    for ga, gb in [(1.0, 0.0), (0.0, 1.0)]:
        params, state = adam_update(params, {"a": np.array([ga]), "b": np.array([gb])},
                                    state, config)
    wa, _ = _run(config, [[1.0], [0.0]], [1.0])
    wb, _ = _run(config, [[0.0], [1.0]], [1.0])
    assert params["a"][0] == wa[0] and params["b"][0] == wb[0]
    assert params["a"][0] != params["b"][0]


# Tiny, varying gradients: eps = 1e-8 is comparable to sqrt(v_hat), and with a
# constant gradient the bias-corrected m_hat (and v_hat) would not depend on
# beta1 (beta2) at all.
TINY_GRADS = [[3e-9, -1e-8], [-2e-8, 5e-9], [1e-8, 2e-8]]


@pytest.mark.parametrize("field, value", [
    ("lr", 2e-3), ("beta1", 0.5), ("beta2", 0.5), ("eps", 1e-6),
])
def test_every_hyperparameter_changes_the_result(field, value):
    base = AdamConfig()
    p0 = [0.3, -0.7]
    w_base, _ = _run(base, TINY_GRADS, p0)
    w_changed, _ = _run(base._replace(**{field: value}), TINY_GRADS, p0)
    displacement = np.abs(w_base - np.array(p0))
    # The change is a sizeable fraction of the total displacement, far above round-off.
    assert np.max(np.abs(w_changed - w_base)) > 1e-2 * np.max(displacement), field


@pytest.mark.parametrize("g", [1e-4, -3e-3, 0.7, -1.0, 42.0, -1e4])
def test_first_step_has_magnitude_lr(g):
    """Bias correction: m_hat = g, v_hat = g**2 at t = 1, so the step is lr * sign(g)."""
    config = AdamConfig(lr=1e-3, eps=1e-12)
    w, _ = _run(config, [[g]], [0.5])
    assert w[0] - 0.5 == pytest.approx(-math.copysign(1e-3, g), rel=1e-7)


def test_zero_gradient_gives_zero_step():
    w, state = _run(AdamConfig(), [[0.0, 0.0]] * 3, [1.5, -2.0])
    np.testing.assert_array_equal(w, [1.5, -2.0])
    assert state["t"] == 3


def test_minimises_a_convex_quadratic():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((5, 5))
    a = q @ q.T + 0.5 * np.eye(5)  # symmetric positive definite
    c = rng.standard_normal(5)
    params = {"x": np.zeros(5)}
    state = adam_init(params)
    config = AdamConfig(lr=0.05)
    for _ in range(1000):
        grads = {"x": a @ (params["x"] - c)}  # gradient of 0.5 (x - c)' A (x - c)
        params, state = adam_update(params, grads, state, config)
    assert np.max(np.abs(params["x"] - c)) < 1e-6


def test_adam_update_does_not_mutate_inputs():
    rng = np.random.default_rng(2)
    params = {"a": rng.standard_normal((2, 3)), "b": rng.standard_normal(4)}
    state = adam_init(params)
    params, state = adam_update(params, {k: rng.standard_normal(v.shape)
                                         for k, v in params.items()}, state, AdamConfig())
    grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    before = copy.deepcopy((params, grads, state))
    new_params, new_state = adam_update(params, grads, state, AdamConfig(lr=0.1))
    for old, snapshot in zip((params, grads), before[:2]):
        for name in old:
            np.testing.assert_array_equal(old[name], snapshot[name])
    assert state["t"] == before[2]["t"] == 1
    for key in ("m", "v"):
        for name in params:
            np.testing.assert_array_equal(state[key][name], before[2][key][name])
    # The results are new arrays, not views of the inputs.
    assert new_state["t"] == 2
    for name in params:
        assert not np.shares_memory(new_params[name], params[name])
        assert not np.shares_memory(new_state["m"][name], state["m"][name])
        assert not np.shares_memory(new_state["v"][name], state["v"][name])
        assert not np.array_equal(new_params[name], params[name])


def test_inplace_and_pure_agree_bitwise():
    rng = np.random.default_rng(3)
    shapes = {"W": (3, 4), "b": (4,), "s": ()}
    pure = {k: rng.standard_normal(s) for k, s in shapes.items()}
    pure["s"] = np.array(pure["s"])  # a writable 0-d array
    inplace = {k: v.copy() for k, v in pure.items()}
    refs = dict(inplace)  # e.g. a model holding the parameter arrays
    state_pure, state_inplace = adam_init(pure), adam_init(inplace)
    config = AdamConfig(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-7)
    for _ in range(5):
        grads = {k: rng.standard_normal(s) for k, s in shapes.items()}
        pure, state_pure = adam_update(pure, grads, state_pure, config)
        assert adam_update_inplace(inplace, grads, state_inplace, config) is None
    assert state_inplace["t"] == state_pure["t"] == 5
    for name in shapes:
        assert inplace[name] is refs[name]
        assert np.array_equal(inplace[name], pure[name])
        assert np.array_equal(state_inplace["m"][name], state_pure["m"][name])
        assert np.array_equal(state_inplace["v"][name], state_pure["v"][name])


def test_inplace_rejects_arrays_it_cannot_update():
    config = AdamConfig()
    for params in ({"w": np.float64(1.0)}, {"w": np.array([1, 2])}):
        state = adam_init(params)
        with pytest.raises(TypeError, match="'w'"):
            adam_update_inplace(params, {"w": np.ones(np.shape(params["w"]))}, state, config)
        assert state["t"] == 0


@pytest.mark.parametrize("field, value", [
    ("lr", 0.0), ("lr", -1e-3), ("lr", math.inf), ("lr", math.nan), ("lr", "0.1"),
    ("beta1", -0.1), ("beta1", 1.0), ("beta1", math.nan),
    ("beta2", -1e-9), ("beta2", 1.0), ("beta2", 1.5),
    ("eps", 0.0), ("eps", -1e-8), ("eps", math.inf), ("eps", math.nan), ("eps", None),
])
def test_config_validation(field, value):
    config = AdamConfig()._replace(**{field: value})
    with pytest.raises(ValueError, match=field):
        check_adam_config(config)
    params = {"w": np.ones(2)}
    state = adam_init(params)
    with pytest.raises(ValueError, match=field):
        adam_update(params, {"w": np.ones(2)}, state, config)
    with pytest.raises(ValueError, match=field):
        adam_update_inplace(params, {"w": np.ones(2)}, state, config)
    np.testing.assert_array_equal(params["w"], [1.0, 1.0])


def test_config_boundary_values_are_accepted():
    check_adam_config(AdamConfig(beta1=0.0, beta2=0.0))
    w, _ = _run(AdamConfig(lr=0.1, beta1=0.0, beta2=0.0, eps=1e-12), [[2.0], [-3.0]], [0.0])
    # With beta1 = beta2 = 0 every step is lr * g / (|g| + eps): +0.1 then -0.1 ... back to 0.
    assert w[0] == pytest.approx(0.0, abs=1e-12)


def test_config_must_be_an_adam_config():
    with pytest.raises(ValueError, match="AdamConfig"):
        check_adam_config({"lr": 1e-3})


def test_mismatched_keys_and_shapes_are_rejected():
    params = {"a": np.ones(2), "b": np.ones(3)}
    state = adam_init(params)
    with pytest.raises(ValueError, match="grads"):
        adam_update(params, {"a": np.ones(2)}, state, AdamConfig())
    with pytest.raises(ValueError, match="shape"):
        adam_update(params, {"a": np.ones(2), "b": np.ones(2)}, state, AdamConfig())
    with pytest.raises(ValueError, match="state"):
        adam_update(params, {"a": np.ones(2), "b": np.ones(3)}, adam_init({"a": np.ones(2)}),
                    AdamConfig())


def test_many_arrays_agree_bitwise_with_the_formula_per_array():
    # The updates join all the arrays into one flat vector per kind; the result
    # must be, bit for bit, that of the formula applied to each array on its
    # own, as written out here.  Many shapes (0-d, empty, 1-d to 3-d), one
    # Fortran-ordered parameter (written in place through its own layout), one
    # non-contiguous gradient, gradients spanning many orders of magnitude.
    rng = np.random.default_rng(5)
    shapes = [(), (1,), (0,), (2, 0), (8, 8), (3, 1, 4), (80,), (7, 3)]
    shapes += [tuple(rng.integers(1, 9, size=rng.integers(1, 3))) for _ in range(42)]
    names = [f"{i}.w" for i in range(len(shapes))]
    start = {n: rng.standard_normal(s) for n, s in zip(names, shapes)}
    start["4.w"] = np.asfortranarray(start["4.w"])
    config = AdamConfig(lr=0.02, beta1=0.8, beta2=0.95, eps=1e-7)
    lr, beta1, beta2, eps = config
    ref_p = {n: p.copy() for n, p in start.items()}
    ref_m = {n: np.zeros(p.shape) for n, p in start.items()}
    ref_v = {n: np.zeros(p.shape) for n, p in start.items()}
    inplace = {n: p.copy(order="K") for n, p in start.items()}
    refs = dict(inplace)
    state_inplace = adam_init(inplace)
    pure, state_pure = dict(start), adam_init(start)
    for t in range(1, 6):
        grads = {n: rng.standard_normal(s) * 10.0 ** rng.integers(-9, 4, size=s)
                 for n, s in zip(names, shapes)}
        grads["7.w"] = np.ascontiguousarray(grads["7.w"].T).T  # a non-contiguous view
        for n, g in grads.items():
            ref_m[n] = beta1 * ref_m[n] + (1.0 - beta1) * g
            ref_v[n] = beta2 * ref_v[n] + (1.0 - beta2) * (g * g)
            m_hat = ref_m[n] / (1.0 - beta1 ** t)
            v_hat = ref_v[n] / (1.0 - beta2 ** t)
            ref_p[n] = ref_p[n] - lr * m_hat / (np.sqrt(v_hat) + eps)
        pure, state_pure = adam_update(pure, grads, state_pure, config)
        adam_update_inplace(inplace, grads, state_inplace, config)
        assert state_pure["t"] == state_inplace["t"] == t
        for n in names:
            for got in (pure[n], inplace[n]):
                assert got.shape == start[n].shape and got.dtype == np.float64, n
                assert np.asarray(got).tobytes() == np.asarray(ref_p[n]).tobytes(), (t, n)
            for key, ref in (("m", ref_m), ("v", ref_v)):
                for state in (state_pure, state_inplace):
                    assert np.asarray(state[key][n]).tobytes() == \
                        np.asarray(ref[n]).tobytes(), (t, key, n)
    for n in names:
        assert inplace[n] is refs[n]
    assert inplace["4.w"].flags.f_contiguous and not inplace["4.w"].flags.c_contiguous


# ------------------------------------------------------------------ PackedAdam

def _random_problem(seed):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (4,), (1, 7), (), (2, 2, 2), (5,)]
    params = {f"p{i}": rng.normal(size=shape) for i, shape in enumerate(shapes)}
    grads = [{name: rng.normal(size=np.shape(p)) * 10.0 ** rng.integers(-6, 3)
              for name, p in params.items()} for _ in range(6)]
    return params, grads


def test_pack_views_share_one_vector():
    params, _ = _random_problem(0)
    vector, views = pack(params)
    assert vector.shape == (sum(np.size(p) for p in params.values()),)
    for name, p in params.items():
        np.testing.assert_array_equal(views[name], p)
        assert np.shares_memory(views[name], vector)
    vector[:] = 7.0
    assert all(np.all(v == 7.0) for v in views.values())


def test_packed_adam_matches_adam_update_inplace_bitwise():
    # (adam_update_inplace is PackedAdam on the caller's arrays; this checks
    # that entering and leaving the context once per step, or once for many
    # steps, gives the same numbers and the views show them during training)
    params, grads = _random_problem(1)
    reference, ref_state = copy.deepcopy(params), adam_init(params)
    state = adam_init(params)
    originals = dict(params)
    config = AdamConfig(lr=3e-3)
    with PackedAdam(params, state, config) as adam:
        for g in grads:
            adam_update_inplace(reference, g, ref_state, config)
            adam.update(adam.flatten(g))
            for name in params:  # the views show the current values during training
                assert np.array_equal(params[name], reference[name])
    assert state["t"] == ref_state["t"] == len(grads)
    for name in params:
        # on exit: the caller's own arrays again, holding the final values
        assert params[name] is originals[name]
        assert np.array_equal(params[name], reference[name])
        assert np.array_equal(state["m"][name], ref_state["m"][name])
        assert np.array_equal(state["v"][name], ref_state["v"][name])


def test_packed_adam_is_all_or_nothing_on_overflow():
    params = {"a": np.array([1.0, 2.0]), "b": np.array([3.0])}
    state = adam_init(params)
    with PackedAdam(params, state, AdamConfig()) as adam:
        adam.update(adam.flatten({"a": np.array([1.0, 1.0]), "b": np.array([1.0])}))
        before = {k: v.copy() for k, v in params.items()}
        m_before = {k: v.copy() for k, v in state["m"].items()}
        with pytest.raises(FloatingPointError), np.errstate(over="raise"):
            adam.update(adam.flatten({"a": np.array([1e300, 1.0]), "b": np.array([1.0])}))
        assert state["t"] == 1
        for k in params:
            assert np.array_equal(params[k], before[k])
            assert np.array_equal(state["m"][k], m_before[k])


def test_packed_adam_restores_arrays_after_an_exception():
    params, grads = _random_problem(2)
    originals = dict(params)
    state = adam_init(params)
    with pytest.raises(RuntimeError):
        with PackedAdam(params, state, AdamConfig()) as adam:
            adam.update(adam.flatten(grads[0]))
            raise RuntimeError("interrupted")
    assert all(params[k] is originals[k] for k in params)
    assert state["t"] == 1 and all(np.any(params[k] != 0) for k in params)


def test_packed_adam_rejects_bad_input():
    params = {"a": np.zeros(2)}
    with pytest.raises(TypeError, match="float64"):
        PackedAdam({"a": np.zeros(2, dtype=np.float32)}, adam_init(params))
    with pytest.raises(ValueError, match="keys"):
        PackedAdam(params, {"t": 0, "m": {"b": np.zeros(2)}, "v": {"a": np.zeros(2)}})
    with PackedAdam(params, adam_init(params)) as adam:
        with pytest.raises(ValueError, match="no entry"):
            adam.flatten({"b": np.zeros(2)})
        with pytest.raises(ValueError, match="shapes"):
            adam.flatten({"a": np.zeros(3)})


def _reference_adam(p, g, m, v, t, config):
    """Kingma & Ba's Algorithm 1 for one array, written out independently of
    radref (docs/derivations-mlp-adam.md §3): ``t`` already incremented."""
    lr, beta1, beta2, eps = config
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * (g * g)
    m_hat = m / (1.0 - beta1 ** t)
    v_hat = v / (1.0 - beta2 ** t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def _split_shapes(rng, total):
    """Random shapes (0-d, empty, 1-d, 2-d) whose sizes add up to ``total``."""
    shapes, left = [], total
    while left > 0:
        size = int(rng.integers(1, left + 1))
        shapes.append({0: (size,), 1: (1, size), 2: (size, 1)}[int(rng.integers(0, 3))]
                      if size > 1 else [(), (1,)][int(rng.integers(0, 2))])
        left -= size
    shapes.insert(int(rng.integers(0, len(shapes) + 1)), (0,))  # an empty array anywhere
    return shapes


@pytest.mark.parametrize("total", range(0, 41))
def test_packed_update_is_the_formula_per_array_for_every_parameter_count(total):
    """The packed path that training runs (PackedAdam.update), and the
    functions built on it, agree bit for bit with the formula applied to each
    array on its own, for every total parameter count 0..40 (multiples of 4
    included: a fast path broken only for those once survived the tests)."""
    rng = np.random.default_rng(total)
    shapes = _split_shapes(rng, total)
    names = [f"{i}.w" for i in range(len(shapes))]
    start = {n: rng.standard_normal(s) for n, s in zip(names, shapes)}
    config = AdamConfig(lr=0.03, beta1=0.7, beta2=0.9, eps=1e-6)
    ref = {n: (p.copy(), np.zeros(p.shape), np.zeros(p.shape)) for n, p in start.items()}
    packed, packed_state = {n: p.copy() for n, p in start.items()}, adam_init(start)
    inplace, inplace_state = {n: p.copy() for n, p in start.items()}, adam_init(start)
    pure, pure_state = dict(start), adam_init(start)
    with PackedAdam(packed, packed_state, config) as adam:
        for t in range(1, 4):
            grads = {n: rng.standard_normal(s) * 10.0 ** rng.integers(-8, 3, size=s)
                     for n, s in zip(names, shapes)}
            ref = {n: _reference_adam(ref[n][0], grads[n], ref[n][1], ref[n][2], t, config)
                   for n in names}
            adam.update(adam.flatten(grads))
            adam_update_inplace(inplace, grads, inplace_state, config)
            pure, pure_state = adam_update(pure, grads, pure_state, config)
            for n in names:
                for p, state in ((packed[n], packed_state), (inplace[n], inplace_state),
                                 (pure[n], pure_state)):
                    assert state["t"] == t
                    assert p.shape == start[n].shape
                    for got, want in ((p, ref[n][0]), (state["m"][n], ref[n][1]),
                                      (state["v"][n], ref[n][2])):
                        assert got.tobytes() == np.asarray(want).tobytes(), (total, t, n)


def test_adam_update_computes_in_float64():
    """Non-float64 inputs are converted (float64 is radref's precision): the
    result is that of the float64 values."""
    config = AdamConfig(lr=0.1)
    params32 = {"w": np.array([1.0, -2.0], dtype=np.float32), "n": np.array([3, 4])}
    grads32 = {"w": np.array([0.1, 0.3], dtype=np.float32), "n": np.array([1, -1])}
    new, state = adam_update(params32, grads32, adam_init(params32), config)
    params64 = {k: v.astype(np.float64) for k, v in params32.items()}
    grads64 = {k: v.astype(np.float64) for k, v in grads32.items()}
    want, _ = adam_update(params64, grads64, adam_init(params64), config)
    for k in params32:
        assert new[k].dtype == np.float64 and state["m"][k].dtype == np.float64
        assert new[k].tobytes() == want[k].tobytes()
