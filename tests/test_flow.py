"""Tests of radref.core.flow: whole-model gradients, density normalization, exact
sampling (goodness of fit against the integrated density), inverse and
inference round trips (notes §4-5); the layer loop (order, out-of-range
screening), chunking (results and bounded memory), and a third layer kind
registered in radref.core.layers.LAYER_KINDS run through the flow untouched.
"""
import types

import numpy as np
import pytest
from scipy import stats

from helpers import check_gradient, record_error, flow_discrete_pattern, flow_kink_distance
from radref.core.flow import (FlowConfig, flow_backward, flow_forward, flow_init, flow_inverse,
                              flow_layers, flow_log_density, flow_sample, flow_sample_from_noise,
                              flow_trajectory, layer_params, map_row_chunks, row_chunks,
                              screen_out_of_range)
from radref.core.layers import LAYER_KINDS, rad
from radref.core.layers.masks import columns, split
from radref.core.mlp import mlp_backward, mlp_forward, mlp_init
from radref.core.numerics import RANGE
from radref.training.diagnostics import locate_non_finite

GRAD_TOL = 1e-6
# h = 3e-7: the log-density of a 4-layer flow is strongly curved in some parameters
# (exponentials of conditioner outputs, composed); with h = 1e-6 the O(h^2)
# truncation error alone reached 8e-7 (measured; it scales as h^2), while the
# round-off error eps |L| / h stays ~1e-8 at h = 3e-7.
FD_STEP = 3e-7
KINK_MARGIN = 1e-4

GRAD_CONFIGS = {
    "rad d=2": FlowConfig("rad", 2, 4, 8, 8),
    "rad d=5": FlowConfig("rad", 5, 3, 6, 6),
    "affine d=2": FlowConfig("affine", 2, 4, 8),
    "affine d=5": FlowConfig("affine", 5, 3, 6),
}


# -------------------------------------------------------------------- helpers

def _nontrivial_params(config, seed, out_std=0.3):
    """Random parameters with non-zero biases and non-unit output scales."""
    rng = np.random.default_rng(seed)
    params = flow_init(config, out_std=out_std, random_state=rng)
    for name, value in params.items():
        if name.endswith(".b1") or name.endswith(".b2"):
            value[...] = 0.2 * rng.standard_normal(value.shape)
        elif name.endswith(".scale"):
            value[...] = rng.uniform(0.7, 1.3, value.shape)
    return params




# ----------------------------------------------------------------- gradients

@pytest.mark.parametrize("label", sorted(GRAD_CONFIGS))
def test_flow_backward_matches_finite_differences(label):
    config = GRAD_CONFIGS[label]
    seed = sorted(GRAD_CONFIGS).index(label)
    params = _nontrivial_params(config, seed)
    rng = np.random.default_rng(1000 + seed)
    # points from the model itself (typical log-densities, every branch visited),
    # resampled where a kink is within KINK_MARGIN
    n = 30
    x = flow_sample(n, params, config, random_state=rng)[0]
    for _ in range(50):
        bad = flow_kink_distance(x, params, config) <= KINK_MARGIN
        if not bad.any():
            break
        x[bad] = flow_sample(int(bad.sum()), params, config, random_state=rng)[0]
    assert np.all(flow_kink_distance(x, params, config) > KINK_MARGIN)

    log_px, _, k, cache = flow_forward(x, params, config)
    if config.kind == "rad":
        # far from trivial: every piece of the surjection is visited somewhere
        pieces = np.concatenate([lc.surj_cache.piece.ravel() for lc in cache.layer_caches])
        assert set(np.unique(pieces)) == {0, 1, 2, 3, 4}
    dlog_px = rng.standard_normal(n)
    dx, grads = flow_backward(dlog_px, cache)
    assert set(grads) == set(params)
    pattern = flow_discrete_pattern(x, params, config)

    def loss():
        lp = flow_forward(x, params, config)[0]
        for now, then in zip(flow_discrete_pattern(x, params, config), pattern):
            assert np.array_equal(now, then), "finite difference crossed a kink"
        return np.sum(dlog_px * lp)

    check_gradient(loss, dx, x, tol=GRAD_TOL, label=f"flow {label}", h=FD_STEP)
    for name in sorted(params):
        assert grads[name].shape == params[name].shape, name
        check_gradient(loss, grads[name], params[name], tol=GRAD_TOL, label=f"flow {label}",
                       h=FD_STEP)


def test_flow_log_density_is_sum_of_layer_terms_and_base():
    # Two layers of identity-initialised conditioners (out_std = 0): every
    # conditioner output is 0, so an affine flow is the identity and log p is
    # exactly the standard normal log-density.
    config = FlowConfig("affine", 3, 2, 4)
    params = flow_init(config, out_std=0.0, random_state=0)
    x = np.random.default_rng(0).standard_normal((10, 3))
    log_px, z, _, _ = flow_forward(x, params, config)
    np.testing.assert_array_equal(z, x)
    np.testing.assert_allclose(log_px, stats.multivariate_normal(np.zeros(3)).logpdf(x),
                               rtol=1e-13)


# ---------------------------------------------- normalization and sampling

# Parameters: flow_init(FlowConfig(kind, 2, 4, 8, 8), out_std=0.3, seed).  At
# this out_std most random Rad flows have long, very thin tails (samples out to
# |x| ~ 500); the seeds below have compact ones (99.99 % of the mass within a
# few units), so a 1200 x 1200 grid resolves the density.  They were chosen
# for that reason only, from the sample quantiles, before integrating.
DENSITY_CASES = {"rad": 7, "affine": 8}
N_GRID = 1200
N_BOX_SAMPLES = 100_000
N_FIT_SAMPLES = 20_000


def _grid_edges(column, lo, hi, n_cells):
    """Cell edges on [lo, hi]: half uniform, half at sample quantiles, so the
    resolution follows the mass (the Rad density has sharp, narrow peaks)."""
    quantiles = np.quantile(column, np.linspace(0.0, 1.0, n_cells // 2 + 1)[1:-1])
    uniform = np.linspace(lo, hi, n_cells - len(quantiles) + 1)
    return np.unique(np.concatenate([uniform, quantiles]))


def _cell_masses(params, config, ex, ey, chunk=240_000):
    """Midpoint rule: density at each cell centre times the cell area."""
    cx, cy = 0.5 * (ex[1:] + ex[:-1]), 0.5 * (ey[1:] + ey[:-1])
    wx, wy = np.diff(ex), np.diff(ey)
    mass = np.empty((len(cy), len(cx)))
    rows = max(1, chunk // len(cx))
    for i in range(0, len(cy), rows):
        gx, gy = np.meshgrid(cx, cy[i:i + rows])
        log_p = flow_forward(np.column_stack([gx.ravel(), gy.ravel()]), params, config)[0]
        mass[i:i + rows] = np.exp(log_p).reshape(gx.shape) * wy[i:i + rows, None] * wx[None, :]
    return mass


@pytest.fixture(scope="module", params=sorted(DENSITY_CASES))
def integrated(request):
    kind = request.param
    seed = DENSITY_CASES[kind]
    config = FlowConfig(kind, 2, 4, 8, 8)
    params = flow_init(config, out_std=0.3, random_state=seed)
    x_box = flow_sample(N_BOX_SAMPLES, params, config, random_state=10 * seed + 1)[0]
    q_lo, q_hi = np.quantile(x_box, [1e-4, 1 - 1e-4], axis=0)
    lo, hi = q_lo - 0.15 * (q_hi - q_lo), q_hi + 0.15 * (q_hi - q_lo)
    ex = _grid_edges(x_box[:, 0], lo[0], hi[0], N_GRID)
    ey = _grid_edges(x_box[:, 1], lo[1], hi[1], N_GRID)
    mass = _cell_masses(params, config, ex, ey)
    return dict(kind=kind, seed=seed, config=config, params=params, ex=ex, ey=ey, mass=mass)


def test_density_integrates_to_one(integrated):
    d = integrated
    # Mass outside the box, estimated with fresh samples, is negligible.
    x = flow_sample(200_000, d["params"], d["config"], random_state=10 * d["seed"] + 2)[0]
    outside = np.any((x < [d["ex"][0], d["ey"][0]]) | (x > [d["ex"][-1], d["ey"][-1]]), axis=1)
    assert outside.mean() <= 2e-4
    total = d["mass"].sum()
    record_error(f"normalization {d['kind']}", abs(total - 1.0))
    assert abs(total - 1.0) <= 1e-3, total
    # and the density is far from the base N(0, I): total variation > 0.2
    cx, cy = 0.5 * (d["ex"][1:] + d["ex"][:-1]), 0.5 * (d["ey"][1:] + d["ey"][:-1])
    normal = np.outer(stats.norm.pdf(cy) * np.diff(d["ey"]), stats.norm.pdf(cx) * np.diff(d["ex"]))
    assert 0.5 * np.abs(d["mass"] - normal).sum() > 0.2


def _merge_small(f_obs, f_exp, minimum=5.0):
    """Pool every bin with expected count < ``minimum`` into one bin (and that
    bin into the smallest remaining one if it is still below ``minimum``)."""
    small = f_exp < minimum
    obs, exp = list(f_obs[~small]), list(f_exp[~small])
    pooled_obs, pooled_exp = f_obs[small].sum(), f_exp[small].sum()
    if pooled_exp >= minimum:
        obs.append(pooled_obs)
        exp.append(pooled_exp)
    else:
        i = int(np.argmin(exp))
        obs[i] += pooled_obs
        exp[i] += pooled_exp
    return np.array(obs, dtype=float), np.array(exp)


def test_samples_match_integrated_density(integrated):
    d = integrated
    x, _, k = flow_sample(N_FIT_SAMPLES, d["params"], d["config"], random_state=10 * d["seed"] + 3)
    if d["kind"] == "rad":
        assert set(np.unique(k[k >= 0])) == {0, 1, 2}  # the folds are used
    # about 30 x 30 bins whose edges are grid edges (every 40th and the last),
    # plus one bin for "outside the box"
    step = N_GRID // 30
    ix = np.append(np.arange(0, len(d["ex"]) - 1, step), len(d["ex"]) - 1)
    iy = np.append(np.arange(0, len(d["ey"]) - 1, step), len(d["ey"]) - 1)
    bx, by = d["ex"][ix], d["ey"][iy]
    bin_mass = np.add.reduceat(np.add.reduceat(d["mass"], iy[:-1], axis=0), ix[:-1], axis=1)
    assert bin_mass.shape == (len(by) - 1, len(bx) - 1)
    assert bin_mass.sum() == pytest.approx(d["mass"].sum(), rel=1e-12)
    counts, _, _ = np.histogram2d(x[:, 1], x[:, 0], bins=[by, bx])
    n_out = N_FIT_SAMPLES - counts.sum()
    f_obs = np.append(counts.ravel(), n_out)
    f_exp = N_FIT_SAMPLES * np.append(bin_mass.ravel(), max(0.0, 1.0 - bin_mass.sum()))
    f_obs, f_exp = _merge_small(f_obs, f_exp)
    assert len(f_exp) > 100
    f_exp *= f_obs.sum() / f_exp.sum()  # the integral is 1 to 1e-3 (tested above)
    p = stats.chisquare(f_obs, f_exp).pvalue
    record_error(f"chi-square 1-p {d['kind']}", 1.0 - p)
    assert p > 1e-3, (d["kind"], p)


# ----------------------------------------------------- inverse and inference

@pytest.mark.parametrize("label", sorted(GRAD_CONFIGS))
def test_flow_inverse_of_forward_is_identity(label):
    config = GRAD_CONFIGS[label]
    params = _nontrivial_params(config, seed=7)
    x = np.random.default_rng(3).normal(0.0, 2.0, (500, config.dim))
    _, z, k, _ = flow_forward(x, params, config)
    assert np.abs(z - x).max() > 0.1
    np.testing.assert_allclose(flow_inverse(z, k, params, config), x, rtol=0, atol=1e-10)


@pytest.mark.parametrize("label", sorted(GRAD_CONFIGS))
def test_forward_of_samples_reproduces_latents(label):
    config = GRAD_CONFIGS[label]
    params = _nontrivial_params(config, seed=8)
    x, z, k = flow_sample(2000, params, config, random_state=4)
    _, z2, k2, _ = flow_forward(x, params, config)
    np.testing.assert_array_equal(k2, k)
    np.testing.assert_allclose(z2, z, rtol=0, atol=1e-10)
    if config.kind == "rad":
        assert set(np.unique(k[k >= 0])) == {0, 1, 2}


@pytest.mark.parametrize("label", sorted(GRAD_CONFIGS))
def test_k_layout(label):
    config = GRAD_CONFIGS[label]
    params = _nontrivial_params(config, seed=9)
    x = np.random.default_rng(5).normal(0.0, 2.0, (300, config.dim))
    _, _, k, _ = flow_forward(x, params, config)
    assert k.shape == (300, config.n_layers, config.dim)
    assert np.issubdtype(k.dtype, np.integer)
    for layer in range(config.n_layers):
        cols_a, cols_b = split(config.dim, layer)
        np.testing.assert_array_equal(k[:, layer, cols_a], -1)
        if config.kind == "rad":
            assert np.all(np.isin(k[:, layer, cols_b], [0, 1, 2]))
        else:
            np.testing.assert_array_equal(k[:, layer, cols_b], -1)


@pytest.mark.parametrize("label", sorted(GRAD_CONFIGS))
def test_sample_from_noise_is_deterministic(label):
    config = GRAD_CONFIGS[label]
    params = _nontrivial_params(config, seed=11)
    rng = np.random.default_rng(6)
    normals = rng.standard_normal((400, config.dim))
    uniforms = rng.random((400, config.n_layers, config.dim))
    normals0, uniforms0 = normals.copy(), uniforms.copy()
    x1, k1 = flow_sample_from_noise(normals, uniforms, params, config)
    x2, k2 = flow_sample_from_noise(normals, uniforms, params, config)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(k1, k2)
    np.testing.assert_array_equal(normals, normals0)  # the noise is not modified
    np.testing.assert_array_equal(uniforms, uniforms0)

    transformed = np.zeros((config.n_layers, config.dim), dtype=bool)
    if config.kind == "rad":
        for layer in range(config.n_layers):
            transformed[layer, split(config.dim, layer)[1]] = True
    np.testing.assert_array_equal(k1[:, ~transformed], -1)
    if config.kind == "rad":
        assert np.all(np.isin(k1[:, transformed], [0, 1, 2]))

    # uniforms where no k is drawn are not used
    other = uniforms.copy()
    other[:, ~transformed] = rng.random(other[:, ~transformed].shape)
    x3, k3 = flow_sample_from_noise(normals, other, params, config)
    np.testing.assert_array_equal(x3, x1)
    np.testing.assert_array_equal(k3, k1)
    if config.kind == "rad":
        # ... while the others are
        x4, _ = flow_sample_from_noise(normals, rng.random(uniforms.shape), params, config)
        assert not np.array_equal(x4, x1)

    # the latent of a sample is the given normal draw
    _, z, k = flow_forward(x1, params, config)[:3]
    np.testing.assert_allclose(z, normals, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(k, k1)


def test_flow_sample_draws_normals_then_uniforms():
    # flow_sample's documented draw order: normals, then uniforms, one Generator
    config = GRAD_CONFIGS["rad d=2"]
    params = _nontrivial_params(config, seed=12)
    x, z, k = flow_sample(100, params, config, random_state=123)
    rng = np.random.default_rng(123)
    normals = rng.standard_normal((100, 2))
    uniforms = rng.random((100, config.n_layers, 2))
    x2, k2 = flow_sample_from_noise(normals, uniforms, params, config)
    np.testing.assert_array_equal(z, normals)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(k, k2)


# ------------------------------------------------------------ flow_log_density

@pytest.mark.parametrize("name", list(GRAD_CONFIGS))
def test_log_density_in_chunks_equals_flow_forward(name):
    config = GRAD_CONFIGS[name]
    params = flow_init(config, out_std=0.3, random_state=3)
    x = np.random.default_rng(4).normal(size=(1003, config.dim))
    x[5] = 1e200  # an out-of-range row inside one chunk
    expected = flow_forward(x, params, config)[0]
    assert expected[5] == -np.inf
    for chunk_rows in (1, 17, 500, 1003, 5000):
        got = flow_log_density(x, params, config, chunk_rows=chunk_rows)
        assert got.shape == expected.shape and got[5] == -np.inf
        finite = np.isfinite(expected)
        # rows are independent; only the order of BLAS's sums may differ with the chunk size
        np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_rows, error", [(0, ValueError), (-3, ValueError),
                                               (2.5, TypeError), (True, TypeError),
                                               ("10", TypeError)])
def test_log_density_rejects_bad_chunk_rows(chunk_rows, error):
    # a wrong type is a TypeError, a wrong value a ValueError (docs/errors.md)
    config = GRAD_CONFIGS["rad d=2"]
    params = flow_init(config, random_state=0)
    with pytest.raises(error, match="chunk_rows must be a positive integer"):
        flow_log_density(np.zeros((3, 2)), params, config, chunk_rows=chunk_rows)


def test_log_density_memory_does_not_grow_with_n():
    # flow_log_density keeps no caches and works in chunks: beyond the output
    # (8 bytes per point), its peak memory is that of one chunk, whatever n.
    import tracemalloc
    config = FlowConfig("rad", 2, 6, 8, 8)
    params = flow_init(config, random_state=0)
    peaks = {}
    for n in (3 * 4096, 12 * 4096):
        x = np.random.default_rng(0).normal(size=(n, 2))
        flow_log_density(x, params, config)  # warm-up
        tracemalloc.start()
        flow_log_density(x, params, config)
        peaks[n] = tracemalloc.get_traced_memory()[1] - 8 * n
        tracemalloc.stop()
    small, large = peaks.values()
    assert large <= 1.2 * small, peaks
    # and flow_forward, which keeps every layer's cache, does grow with n
    x = np.random.default_rng(0).normal(size=(3 * 4096, 2))
    tracemalloc.start()
    flow_forward(x, params, config)
    assert tracemalloc.get_traced_memory()[1] > 4 * small
    tracemalloc.stop()


@pytest.mark.parametrize("name", ["rad d=2", "affine d=5"])
def test_sampling_and_inverse_in_chunks_equal_one_pass(name, monkeypatch):
    # Above CHUNK_ROWS rows, flow_sample_from_noise and flow_inverse work chunk by
    # chunk; rows are independent, so the result is the one-pass result (to rounding).
    import radref.core.flow as flow_module
    config = GRAD_CONFIGS[name]
    params = flow_init(config, out_std=0.3, random_state=5)
    rng = np.random.default_rng(6)
    n = 2 * flow_module.CHUNK_ROWS + 17
    normals = rng.normal(size=(n, config.dim))
    normals[3] = 1e200  # out of range: x = inf, k = -1
    uniforms = rng.random((n, config.n_layers, config.dim))
    x, k = flow_sample_from_noise(normals, uniforms, params, config)
    back = flow_inverse(normals, k, params, config)
    with monkeypatch.context() as m:
        m.setattr(flow_module, "CHUNK_ROWS", 10 ** 9)
        x_ref, k_ref = flow_sample_from_noise(normals, uniforms, params, config)
        back_ref = flow_inverse(normals, k_ref, params, config)
    np.testing.assert_array_equal(k, k_ref)
    assert np.all(np.isinf(x[3])) and np.all(k[3] == -1)
    np.testing.assert_allclose(x, x_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(back, back_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(back[4:], x[4:], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("which", ["inverse", "sample"])
def test_inverse_and_sampling_memory_does_not_grow_with_n(which, monkeypatch):
    # Like flow_log_density: above CHUNK_ROWS rows, flow_inverse and
    # flow_sample_from_noise work chunk by chunk and write into outputs
    # allocated once, so beyond the outputs their peak memory is that of one
    # chunk, whatever n.  A single pass over all rows grows with n (checked
    # last, so that the measurement is known to see it).
    import tracemalloc
    import radref.core.flow as flow_module
    config = FlowConfig("rad", 2, 6, 8, 8)
    params = flow_init(config, random_state=0)

    def call_and_output_bytes(n):
        rng = np.random.default_rng(0)
        normals, uniforms = rng.normal(size=(n, 2)), rng.random((n, 6, 2))
        if which == "inverse":
            k = flow_sample_from_noise(normals, uniforms, params, config)[1]
            return lambda: flow_inverse(normals, k, params, config), normals.nbytes
        return (lambda: flow_sample_from_noise(normals, uniforms, params, config),
                normals.nbytes + uniforms.size * np.dtype(np.intp).itemsize)

    def peak_beyond_output(n):
        call, output_bytes = call_and_output_bytes(n)
        call()  # warm-up
        tracemalloc.start()
        call()
        peak = tracemalloc.get_traced_memory()[1] - output_bytes
        tracemalloc.stop()
        return peak

    small, large = peak_beyond_output(3 * 4096), peak_beyond_output(12 * 4096)
    assert large <= 1.2 * small, (small, large)
    monkeypatch.setattr(flow_module, "CHUNK_ROWS", 10 ** 9)  # one pass
    assert peak_beyond_output(12 * 4096) > 4 * small


# ------------------------------------------------------------- the layer loop

def test_flow_layers_runs_the_layers_in_order():
    # Each record is the layer's forward applied to the previous record's z.
    config = GRAD_CONFIGS["rad d=5"]
    params = _nontrivial_params(config, seed=13)
    x = np.random.default_rng(7).normal(0.0, 2.0, (50, config.dim))
    records = list(flow_layers(x, params, config))
    assert [r.layer for r in records] == list(range(config.n_layers))
    z = x
    for record in records:
        z_next, k, term, _ = rad.forward(z, layer_params(params, record.layer), record.layer)
        np.testing.assert_array_equal(record.z, z_next)
        np.testing.assert_array_equal(record.k, k)
        np.testing.assert_array_equal(record.term, term)
        assert not record.out_of_range.any()
        z = z_next
    log_px, z_flow, _, _ = flow_forward(x, params, config)
    np.testing.assert_array_equal(z_flow, z)
    np.testing.assert_allclose(log_px, sum(r.term for r in records)
                               + stats.multivariate_normal(np.zeros(config.dim)).logpdf(z),
                               rtol=1e-13)


def test_screen_out_of_range_evaluates_rows_that_leave_at_the_stand_in():
    # A layer that doubles its input: row 1 leaves +-RANGE.  The step re-runs
    # the layer with row 1 (and the row already out, 3) at z = 0, and reports
    # z = inf, k = -1, term = -inf for both; the other rows are untouched.
    calls = []

    def doubling(z, params, layer):
        calls.append(z.copy())
        return 2.0 * z, np.zeros((len(z), 1), dtype=np.intp), z.sum(axis=1), "cache"

    z = np.array([[1.0, 2.0], [RANGE, 0.0], [-3.0, 0.5], [np.inf, 0.0]])
    out = np.array([False, False, False, True])
    z_next, k, term, cache, out = screen_out_of_range(doubling, z, None, 0, out)
    np.testing.assert_array_equal(out, [False, True, False, True])
    assert len(calls) == 2  # once, then again with row 1 at the stand-in
    np.testing.assert_array_equal(calls[0], [[1.0, 2.0], [RANGE, 0.0], [-3.0, 0.5], [0.0, 0.0]])
    np.testing.assert_array_equal(calls[1], [[1.0, 2.0], [0.0, 0.0], [-3.0, 0.5], [0.0, 0.0]])
    np.testing.assert_array_equal(z_next, [[2.0, 4.0], [np.inf] * 2, [-6.0, 1.0], [np.inf] * 2])
    np.testing.assert_array_equal(k[:, 0], [0, -1, 0, -1])
    np.testing.assert_array_equal(term, [3.0, -np.inf, -2.5, -np.inf])
    assert cache == "cache"


def test_row_chunks_cover_the_rows():
    assert row_chunks(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert row_chunks(8, 4) == [slice(0, 4), slice(4, 8)]
    assert row_chunks(0, 4) == []
    with pytest.raises(ValueError, match="chunk_rows"):
        row_chunks(10, 0)


def test_map_row_chunks_writes_every_output_in_place():
    x = np.arange(10.0)[:, None] * [1.0, 10.0]
    doubled, row_sums = map_row_chunks(lambda x: (2 * x, x.sum(axis=1)), (x,), 3)
    np.testing.assert_array_equal(doubled, 2 * x)
    np.testing.assert_array_equal(row_sums, 11.0 * np.arange(10.0))
    assert map_row_chunks(lambda x: (x.sum(axis=1),), (np.zeros((0, 2)),), 3)[0].shape == (0,)


# ------------------------------------------- a third layer kind, registered once

def _additive_init(dim, layer, hidden, gate_hidden, out_std=0.01, random_state=None):
    rng = np.random.default_rng(random_state)
    n_transformed = columns(dim, layer).n_transformed
    return {"shift": mlp_init(dim - n_transformed, hidden, n_transformed, "linear",
                              out_std=out_std, random_state=rng),
            "scale": {"log": rng.normal(0.0, 0.5, n_transformed)}}


def _additive_forward(x, params, layer):
    """z_B = x_B exp(w) + t(x_A), term = sum_B w: a conditioned shift and a free
    per-column scale (NICE with its diagonal scaling folded into every layer)."""
    cols = columns(x.shape[1], layer)
    shift, mlp_cache = mlp_forward(x[:, cols.conditioning], params["shift"])
    log_scale = params["scale"]["log"]
    z = x.copy()
    z[:, cols.transformed] = x[:, cols.transformed] * np.exp(log_scale) + shift
    term = np.full(len(x), log_scale.sum())
    return z, None, term, (cols, mlp_cache, x[:, cols.transformed], log_scale)


def _additive_backward(dz, dterm, cache):
    cols, mlp_cache, x_trans, log_scale = cache
    dz_trans = dz[:, cols.transformed]
    dx_cond, shift_grads = mlp_backward(dz_trans, mlp_cache)
    dlog_scale = np.sum(dz_trans * x_trans, axis=0) * np.exp(log_scale) + np.sum(dterm)
    dx = np.empty_like(dz)
    dx[:, cols.conditioning] = dz[:, cols.conditioning] + dx_cond
    dx[:, cols.transformed] = dz_trans * np.exp(log_scale)
    return dx, {"shift": shift_grads, "scale": {"log": dlog_scale}}


def _additive_inverse(z, k, params, layer):
    cols = columns(z.shape[1], layer)
    shift, _ = mlp_forward(z[:, cols.conditioning], params["shift"])
    x = z.copy()
    x[:, cols.transformed] = (z[:, cols.transformed] - shift) * np.exp(-params["scale"]["log"])
    return x


ADDITIVE = types.SimpleNamespace(
    init=_additive_init, forward=_additive_forward, backward=_additive_backward,
    inverse=_additive_inverse,
    sample=lambda z, uniforms, params, layer: (_additive_inverse(z, None, params, layer), None),
    folded=lambda cache: None)


def test_a_third_kind_runs_through_the_flow_once_registered(monkeypatch):
    # Registering a module in LAYER_KINDS is all a new kind needs: the
    # log-density, its gradient, the inverse, sampling, trajectories and the
    # diagnostics run it through the flow's one loop.
    monkeypatch.setitem(LAYER_KINDS, "additive", ADDITIVE)
    config = FlowConfig("additive", 3, 4, 5)
    params = flow_init(config, out_std=0.5, random_state=0)
    assert "3.scale.log" in params and "0.shift.W1" in params
    x = np.random.default_rng(1).normal(0.0, 1.5, (40, 3))

    # log p(x), composed here independently: eq. 15 summed over the layers
    z_ref, log_det = x, np.zeros(len(x))
    for layer in range(config.n_layers):
        cols_a, cols_b = split(3, layer)
        nested = layer_params(params, layer)
        shift = mlp_forward(z_ref[:, cols_a], nested["shift"])[0]
        z_ref = z_ref.copy()
        z_ref[:, cols_b] = z_ref[:, cols_b] * np.exp(nested["scale"]["log"]) + shift
        log_det += nested["scale"]["log"].sum()
    log_px, z, k, cache = flow_forward(x, params, config)
    np.testing.assert_allclose(z, z_ref, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(log_px, stats.multivariate_normal(np.zeros(3)).logpdf(z_ref)
                               + log_det, rtol=1e-13)
    np.testing.assert_array_equal(k, -1)
    np.testing.assert_allclose(flow_log_density(x, params, config, chunk_rows=7), log_px,
                               rtol=1e-13)

    # the gradient, against central finite differences
    dlog_px = np.random.default_rng(2).standard_normal(len(x))
    dx, grads = flow_backward(dlog_px, cache)
    assert set(grads) == set(params)

    pattern = [layer_cache[1].active.copy() for layer_cache in cache.layer_caches]

    def loss():
        lp, _, _, c = flow_forward(x, params, config)
        for layer_cache, active in zip(c.layer_caches, pattern):  # no ReLU kink crossed
            assert np.array_equal(layer_cache[1].active, active)
        return float(np.sum(dlog_px * lp))
    check_gradient(loss, dx, x, tol=GRAD_TOL, h=FD_STEP)
    for name in sorted(params):
        check_gradient(loss, grads[name], params[name], tol=GRAD_TOL, h=FD_STEP)

    # inverse, sampling, trajectory, diagnostics
    np.testing.assert_allclose(flow_inverse(z, k, params, config), x, rtol=0, atol=1e-12)
    normals = np.random.default_rng(3).standard_normal((30, 3))
    x_sampled, k_sampled = flow_sample_from_noise(normals, np.full((30, 4, 3), 0.5), params,
                                                  config)
    np.testing.assert_array_equal(k_sampled, -1)
    np.testing.assert_allclose(flow_forward(x_sampled, params, config)[1], normals,
                               rtol=0, atol=1e-12)
    zs, folded, k_traj = flow_trajectory(x, params, config)
    np.testing.assert_array_equal(zs[-1], z)
    assert folded == [None] * 4
    assert locate_non_finite(x, params, config) == (None, None, None, "")


@pytest.mark.parametrize("label,row_5,leaves_in", [("rad d=2", [9e119, 0.5], 1),
                                                    ("affine d=5", [9.9e119] * 5, 0)])
def test_trajectory_matches_forward_with_rows_out_of_range(label, row_5, leaves_in):
    # flow_trajectory runs the same loop as flow_forward: rows out of range
    # (row 2 from the input on, row 5 from the layer whose output leaves
    # +-RANGE) are inf from there on, and have k = -1 in every layer (also
    # in the layers before they left) and nothing folded.
    config = GRAD_CONFIGS[label]
    params = _nontrivial_params(config, seed=14)
    x = np.random.default_rng(8).normal(0.0, 2.0, (20, config.dim))
    x[2, 0] = 2e120
    x[5] = row_5  # in range; the output of layer `leaves_in` is not
    log_px, z, k, cache = flow_forward(x, params, config)
    np.testing.assert_array_equal(np.flatnonzero(cache.out_of_range), [2, 5])
    zs, folded, k_traj = flow_trajectory(x, params, config)
    assert zs[0] is x
    np.testing.assert_array_equal(zs[-1], z)
    np.testing.assert_array_equal(k_traj, k)
    np.testing.assert_array_equal(k[[2, 5]], -1)
    out = cache.out_of_range
    for layer, (layer_z, mask) in enumerate(zip(zs[1:], folded)):
        assert np.all(np.isinf(layer_z[2])) and np.all(np.isfinite(layer_z[~out]))
        assert np.all(np.isinf(layer_z[5]) if layer >= leaves_in else np.isfinite(layer_z[5]))
        if mask is not None:
            assert not mask[out].any() and mask[~out].any()
