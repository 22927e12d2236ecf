"""Threads over row chunks (issue #26): ``n_jobs`` of the functional core
(``flow_log_density``, ``flow_infer``, ``flow_inverse``,
``flow_sample_from_noise``, ``flow_sample``) and of the estimators
(``score_samples``, ``score``, ``transform``, ``infer``,
``inverse_transform``, ``sample``) and ``--jobs`` of ``radref score`` and
``radref sample``.

The chunks are cut the same way whatever the number of threads and each is
computed by the same calls, so every result must be *bit for bit* that of
one thread (compared as bytes: ``-0.0`` and ``0.0``, or two NaNs, would
differ), for inputs that are not a multiple of the chunk size too.  Bad
``n_jobs`` values are refused with scikit-learn's convention in the message,
and nothing warns (the suite turns warnings into errors).
"""
import threading
import time

import numpy as np
import pytest

import radref.checks
import radref.core.chunks as chunks_module
import radref.core.flow as flow_module
from radref import RadFlow, RealNVPFlow, datasets
from radref.checks import available_cpus, check_n_jobs, effective_n_jobs
from radref.core.chunks import CHUNK_ROWS, map_row_chunks, matmul_in_row_blocks
from radref.core.flow import (FlowConfig, flow_forward, flow_infer, flow_init, flow_inverse,
                              flow_log_density, flow_sample, flow_sample_from_noise)
from radref.core.layers import LAYER_KINDS
from radref.user.cli import main

CONFIGS = {"rad": FlowConfig("rad", 2, 4, 8, 8), "affine": FlowConfig("affine", 3, 3, 16)}
JOBS = (1, 2, -1, 3)  # 3: more threads than this machine's 2 CPUs is allowed
CHUNK = 64  # small chunks: many of them, cheaply
SIZES = (1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 17)


def _same_bits(a, b):
    """Equal as stored bytes (``assert_array_equal`` would let ``-0.0 == 0.0`` pass)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


def _params(config, seed=0):
    """Parameters away from the near-identity initialisation (folds that matter)."""
    return flow_init(config, out_std=0.5, random_state=seed)


def _points(config, n, seed=1):
    x = np.random.default_rng(seed).normal(0.0, 1.5, (n, config.dim))
    if n > 3:
        x[3] = 1e200  # a row out of range: -inf, z = inf, k = -1 in every thread too
    return x


@pytest.fixture
def small_chunks(monkeypatch):
    """The chunking at a small scale, so that small inputs have many chunks:
    one thread cuts CHUNK rows, several threads 2 CHUNK, products in blocks
    of CHUNK rows."""
    monkeypatch.setattr(flow_module, "CHUNK_ROWS", CHUNK)
    monkeypatch.setattr(chunks_module, "CHUNK_ROWS", CHUNK)
    for kind in LAYER_KINDS.values():
        monkeypatch.setattr(kind, "THREAD_CHUNK_ROWS", 2 * CHUNK)


# ------------------------------------------------------------- functional core

@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("n", SIZES)
def test_log_density_and_inference_are_bit_identical_for_every_n_jobs(kind, n):
    config = CONFIGS[kind]
    params, x = _params(config), _points(config, n)
    log_px = flow_log_density(x, params, config, chunk_rows=CHUNK)
    z, k = flow_infer(x, params, config, chunk_rows=CHUNK)
    for n_jobs in JOBS:
        _same_bits(flow_log_density(x, params, config, chunk_rows=CHUNK, n_jobs=n_jobs), log_px)
        z_jobs, k_jobs = flow_infer(x, params, config, chunk_rows=CHUNK, n_jobs=n_jobs)
        _same_bits(z_jobs, z)
        _same_bits(k_jobs, k)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_flow_infer_is_flow_forward_without_the_caches(kind):
    config = CONFIGS[kind]
    params, x = _params(config), _points(config, CHUNK + 5)
    _, z, k, _ = flow_forward(x, params, config)
    z_inf, k_inf = flow_infer(x, params, config, chunk_rows=len(x))  # one chunk: one call
    _same_bits(z_inf, z)
    _same_bits(k_inf, k)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("n", SIZES)
def test_sampling_and_inverse_are_bit_identical_for_every_n_jobs(kind, n, small_chunks):
    config = CONFIGS[kind]
    params = _params(config)
    x, normals, k = flow_sample(n, params, config, random_state=7)
    back = flow_inverse(normals, k, params, config)
    for n_jobs in JOBS:
        x_jobs, normals_jobs, k_jobs = flow_sample(n, params, config, random_state=7,
                                                   n_jobs=n_jobs)
        _same_bits(x_jobs, x)
        _same_bits(normals_jobs, normals)
        _same_bits(k_jobs, k)
        _same_bits(flow_inverse(normals, k, params, config, n_jobs=n_jobs), back)


def test_the_draw_of_flow_sample_does_not_depend_on_n_jobs(small_chunks):
    # The documented noise (normals, then uniforms, from one Generator) is drawn
    # before any layer runs, so n_jobs = 1 is the sampling of radref 0.2 and
    # every n_jobs gives flow_sample_from_noise of that noise.
    config = CONFIGS["rad"]
    params, n = _params(config), 3 * CHUNK + 1
    rng = np.random.default_rng(11)
    normals = rng.standard_normal((n, config.dim))
    uniforms = rng.random((n, config.n_layers, config.dim))
    x_ref, k_ref = flow_sample_from_noise(normals, uniforms, params, config)
    for n_jobs in JOBS:
        x, z, k = flow_sample(n, params, config, random_state=11, n_jobs=n_jobs)
        _same_bits(z, normals)
        _same_bits(x, x_ref)
        _same_bits(k, k_ref)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_default_chunks_give_the_same_bits_for_every_n_jobs(kind):
    # Without chunk_rows, one thread cuts CHUNK_ROWS rows and several threads
    # the kind's longer THREAD_CHUNK_ROWS: the results must still be those of
    # one thread, bit for bit (the matrix products are made in blocks of
    # CHUNK_ROWS rows either way), for the forward and the inverse direction.
    config = CONFIGS[kind]
    params = _params(config)
    n = 2 * flow_module.layer_kind(config.kind).THREAD_CHUNK_ROWS + 17
    x = _points(config, n)
    log_px, (z, k) = flow_log_density(x, params, config), flow_infer(x, params, config)
    x_s, normals, k_s = flow_sample(n, params, config, random_state=5)
    back = flow_inverse(normals, k_s, params, config)
    for n_jobs in (2, -1):
        _same_bits(flow_log_density(x, params, config, n_jobs=n_jobs), log_px)
        for got, want in zip(flow_infer(x, params, config, n_jobs=n_jobs), (z, k)):
            _same_bits(got, want)
        for got, want in zip(flow_sample(n, params, config, random_state=5, n_jobs=n_jobs),
                             (x_s, normals, k_s)):
            _same_bits(got, want)
        _same_bits(flow_inverse(normals, k_s, params, config, n_jobs=n_jobs), back)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_chunks_of_a_multiple_of_chunk_rows_give_the_same_bits(kind, factor):
    config, rows = CONFIGS[kind], factor * flow_module.CHUNK_ROWS
    params, x = _params(config), _points(config, 5 * flow_module.CHUNK_ROWS + 300)
    _same_bits(flow_log_density(x, params, config, chunk_rows=rows),
               flow_log_density(x, params, config))
    x_s, normals, k_s = flow_sample(len(x), params, config, random_state=2)
    uniforms = np.random.default_rng(2)
    uniforms.standard_normal((len(x), config.dim))  # the draw of flow_sample: normals first
    uniforms = uniforms.random((len(x), config.n_layers, config.dim))
    for got, want in zip(flow_sample_from_noise(normals, uniforms, params, config,
                                                chunk_rows=rows), (x_s, k_s)):
        _same_bits(got, want)
    _same_bits(flow_inverse(normals, k_s, params, config, chunk_rows=rows),
               flow_inverse(normals, k_s, params, config))


def test_products_in_row_blocks_are_the_products_of_each_block():
    rng = np.random.default_rng(0)
    b = rng.normal(size=(57, 56))
    small = rng.normal(size=(CHUNK_ROWS, 57))
    _same_bits(matmul_in_row_blocks(small, b), small @ b)  # up to CHUNK_ROWS rows: one call
    a = rng.normal(size=(2 * CHUNK_ROWS + 5, 57))
    got = matmul_in_row_blocks(a, b)
    for rows in (slice(0, CHUNK_ROWS), slice(CHUNK_ROWS, 2 * CHUNK_ROWS),
                 slice(2 * CHUNK_ROWS, None)):
        _same_bits(got[rows], a[rows] @ b)
    np.testing.assert_allclose(got, a @ b, rtol=1e-13, atol=1e-13)


def test_a_products_bits_do_not_depend_on_blas_threads():
    # n_jobs > 1 runs BLAS in one thread (one_blas_thread), one radref thread
    # leaves BLAS its own threads: the products of the paper's layers (a
    # column of 4,096 rows into 56 hidden units, 56 into 56, 56 into the
    # outputs) must be the same bits either way.
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(3)
    # OpenBLAS splits a product over threads only above 262,144 multiply-adds
    # (m n k): of these, the 56-by-56 layer and the 256-by-256 product are
    # split; the others check the one-thread path
    for k, m in ((1, 56), (56, 56), (56, 2), (8, 10), (256, 256)):
        a, b = rng.normal(size=(CHUNK_ROWS, k)), rng.normal(size=(k, m))
        with threadpool_limits(limits=1, user_api="blas"):
            one = matmul_in_row_blocks(a, b)
        with threadpool_limits(limits=2, user_api="blas"):
            _same_bits(matmul_in_row_blocks(a, b), one)


def _blas_threads():
    from threadpoolctl import threadpool_info
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_blas_runs_in_one_thread_while_the_chunks_run_in_threads():
    from threadpoolctl import threadpool_limits
    seen = {}

    def record(x):
        seen.setdefault(threading.get_ident(), []).append(_blas_threads())
        time.sleep(0.005)  # long enough for the second thread to take chunks
        return (2.0 * x,)

    x = np.arange(40.0).reshape(20, 2)
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        map_row_chunks(record, (x,), 3, n_jobs=2)
        # (every BLAS library loaded: scipy may bring its own beside NumPy's)
        assert len(seen) == 2 and all(set(n) == {1} for calls in seen.values() for n in calls)
        assert _blas_threads() == before  # BLAS has its threads back
        seen.clear()
        map_row_chunks(record, (x,), 3, n_jobs=1)  # one thread: BLAS keeps its own
        assert all(n == before for calls in seen.values() for n in calls)


def test_overlapping_calls_from_two_threads_give_blas_its_threads_back():
    # Two callers' blocks overlap and end in the other order than they began:
    # BLAS stays at one thread until both have ended, then has its threads
    # back (each restoring what it saw would leave it at one thread).
    from threadpoolctl import threadpool_limits
    first_in, second_in, first_may_end = (threading.Event() for _ in range(3))
    inside = []

    def first():
        with chunks_module.one_blas_thread():
            first_in.set()
            second_in.wait(10)
            inside.append(_blas_threads())
        first_may_end.set()

    def second():
        first_in.wait(10)
        with chunks_module.one_blas_thread():
            second_in.set()
            first_may_end.wait(10)  # the first block ends inside this one
            inside.append(_blas_threads())

    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        threads = [threading.Thread(target=f) for f in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert inside == [[1] * len(before)] * 2
        assert _blas_threads() == before


def test_without_threadpoolctl_the_threads_give_the_same_bits(monkeypatch):
    monkeypatch.setattr(chunks_module, "_blas_controller", lambda: None)
    config = CONFIGS["affine"]
    params, x = _params(config), _points(config, 5 * CHUNK + 17)
    _same_bits(flow_log_density(x, params, config, chunk_rows=CHUNK, n_jobs=2),
               flow_log_density(x, params, config, chunk_rows=CHUNK))


# ---------------------------------------------------------------- the machinery

def test_chunks_run_in_several_threads_and_land_at_their_rows():
    seen = set()

    def slow_double(x):
        seen.add(threading.get_ident())
        time.sleep(0.005)  # long enough for the second thread to take chunks
        return 2.0 * x, x[:, 0].astype(np.intp)

    x = np.arange(40.0).reshape(20, 2)
    doubled, first = map_row_chunks(slow_double, (x,), 3, n_jobs=2)
    _same_bits(doubled, 2.0 * x)
    _same_bits(first, x[:, 0].astype(np.intp))
    assert len(seen) == 2


def test_a_failing_chunk_raises_what_one_thread_raises():
    # The first chunk in row order that raises is reported, whichever thread
    # finished first; later chunks may have run, earlier ones all did.
    def fails_from_row_6(x):
        if x[0, 0] >= 6:
            time.sleep(0.01 if x[0, 0] == 6 else 0.0)  # the later chunks fail first
            raise ValueError(f"chunk at row {int(x[0, 0])}")
        return (x,)

    x = np.arange(12.0)[:, None]
    for n_jobs in (1, 2, 4):
        with pytest.raises(ValueError, match="chunk at row 6$"):
            map_row_chunks(fails_from_row_6, (x,), 3, n_jobs=n_jobs)


def test_numpy_errstate_of_the_caller_holds_in_the_threads():
    # np.errstate is a context variable: the threads run in copies of the
    # caller's context, so the estimators' errstate(over="raise") still raises.
    def exp(x):
        return (np.exp(x),)

    x = np.array([[0.0], [1.0], [2.0], [1000.0], [3.0]])
    for n_jobs in (1, 2):
        with np.errstate(over="raise"):
            with pytest.raises(FloatingPointError, match="overflow"):
                map_row_chunks(exp, (x,), 2, n_jobs=n_jobs)
        with np.errstate(over="ignore"):
            assert np.isinf(map_row_chunks(exp, (x,), 2, n_jobs=n_jobs)[0][3, 0])


# ------------------------------------------------------------------ the checks

def test_n_jobs_follows_scikit_learns_convention(monkeypatch):
    monkeypatch.setattr(radref.checks, "available_cpus", lambda: 4)
    assert [effective_n_jobs("n_jobs", v) for v in (None, 1, 3, 9, -1, -2, -4)] == \
        [1, 1, 3, 9, 4, 3, 1]
    assert check_n_jobs("n_jobs", None) is None and check_n_jobs("n_jobs", np.int64(-3)) == -3
    assert available_cpus() >= 1


@pytest.mark.parametrize("value, exc, fragment", [
    (0, ValueError, "n_jobs must be a nonzero integer (1: one thread, -1: every CPU"),
    (1.5, TypeError, "n_jobs must be an integer or None, got float 1.5"),
    (True, TypeError, "n_jobs must be an integer or None, got bool True"),
    ("2", TypeError, "n_jobs must be an integer or None, got str '2'"),
    (-5, ValueError, "n_jobs must be >= -4 on this machine (4 CPUs available; -1 uses every "
                     "CPU), got -5"),
])
def test_bad_n_jobs_are_refused_with_a_clear_message(value, exc, fragment, monkeypatch):
    monkeypatch.setattr(radref.checks, "available_cpus", lambda: 4)
    config = CONFIGS["rad"]
    params, x = _params(config), _points(config, 10)
    for call in (lambda: flow_log_density(x, params, config, n_jobs=value),
                 lambda: flow_infer(x, params, config, n_jobs=value),
                 lambda: flow_sample(5, params, config, n_jobs=value)):
        with pytest.raises(exc) as info:
            call()
        assert fragment in str(info.value)


# ------------------------------------------------------------------ estimators

@pytest.fixture(scope="module")
def fitted():
    X = datasets.sample("two_moons", 400, random_state=0)
    return {cls: cls(n_layers=2, hidden=4, steps=30, batch_size=100, random_state=0,
                     progress=False).fit(X) for cls in (RadFlow, RealNVPFlow)}


@pytest.mark.parametrize("cls", [RadFlow, RealNVPFlow], ids=lambda c: c.__name__)
def test_estimators_give_the_same_bits_for_every_n_jobs(cls, fitted):
    model = fitted[cls]
    n = 2 * flow_module.CHUNK_ROWS + 17  # three chunks, the last one short
    X = datasets.sample("two_moons", n, random_state=1)
    model.set_params(n_jobs=None)
    scores, score = model.score_samples(X), model.score(X)
    Z, K = model.infer(X)
    back, drawn = model.inverse_transform(Z, K), model.inverse_transform(Z, random_state=3)
    samples = model.sample(n, random_state=4)
    try:
        for n_jobs in (1, 2, -1):
            model.set_params(n_jobs=n_jobs)
            _same_bits(model.score_samples(X), scores)
            assert model.score(X) == score
            _same_bits(model.transform(X), Z)
            _same_bits(model.infer(X)[1], K)
            _same_bits(model.inverse_transform(Z, K), back)
            _same_bits(model.inverse_transform(Z, random_state=3), drawn)
            _same_bits(model.sample(n, random_state=4), samples)
    finally:
        model.set_params(n_jobs=None)


def test_n_jobs_is_an_estimator_parameter_that_training_ignores():
    X = datasets.sample("two_moons", 300, random_state=0)
    settings = dict(n_layers=2, hidden=4, steps=12, batch_size=50, random_state=1, progress=False)
    one, two = RadFlow(**settings).fit(X), RadFlow(n_jobs=2, **settings).fit(X)
    assert two.get_params()["n_jobs"] == 2 and one.get_params()["n_jobs"] is None
    for name, value in one.params_.items():
        _same_bits(two.params_[name], value)


def test_estimators_refuse_n_jobs_beyond_this_machine_when_they_compute(fitted, monkeypatch):
    monkeypatch.setattr(radref.checks, "available_cpus", lambda: 2)
    model = fitted[RadFlow]
    X = datasets.sample("two_moons", 10, random_state=1)
    try:
        model.set_params(n_jobs=-3)  # valid on a larger machine: checked when used
        for call in (lambda: model.score_samples(X), lambda: model.sample(3),
                     lambda: model.transform(X)):
            with pytest.raises(ValueError, match=r"n_jobs must be >= -2 on this machine"):
                call()
    finally:
        model.set_params(n_jobs=None)
    with pytest.raises(ValueError, match=r"^n_jobs must be a nonzero integer"):
        RadFlow(n_jobs=0, steps=1).fit(X)


# ------------------------------------------------------------------ command line

def test_score_and_sample_take_jobs(fitted, tmp_path, capsys):
    model_path, data_path = tmp_path / "rad.npz", tmp_path / "x.csv"
    fitted[RadFlow].save(model_path)
    n = flow_module.CHUNK_ROWS + 5
    np.savetxt(data_path, datasets.sample("two_moons", n, random_state=2), delimiter=",")
    outputs = {}
    for jobs in ("1", "2", "-1"):
        for command, extra in (("score", ["--data", str(data_path)]),
                               ("sample", ["-n", str(n), "--seed", "5"])):
            out = tmp_path / f"{command}{jobs}.npy"
            status = main([command, "--model", str(model_path), "--out", str(out),
                           "--jobs", jobs] + extra)
            assert status == 0, capsys.readouterr().err
            outputs[command, jobs] = np.load(out)
    capsys.readouterr()
    for (command, jobs), value in outputs.items():
        _same_bits(value, outputs[command, "1"])
    status = main(["score", "--model", str(model_path), "--data", str(data_path), "--jobs", "0"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("radref: error: --jobs must be a nonzero integer"), err
