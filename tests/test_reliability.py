"""Reliability (issue 7): bad input, numerical extremes, checkpoints, the
non-finite guard.  The policies tested here are documented in docs/errors.md.

What the older test modules already cover is not repeated: the basic X
checks of the estimators (test_estimators.BAD_X), hyperparameter errors,
integer / non-contiguous / read-only inputs, checkpoint corruption and atomic
saving (test_checkpoint.py), resume bit-identity for a resumed fit, the CLI's
usage errors (test_cli.py), datasets validation (test_datasets.py) and
malformed port files (test_golden.py).

1. Bad input: a table of every further bad argument of the public API and
   the ValueError / TypeError (message pattern) it gets; the CLI's one-line
   errors for bad options, before any work is done.
2. Numerical extremes: log-densities and gradients finite (no warning: pytest
   runs with filterwarnings = error) for |x| up to 1e8 with random and trained
   parameters; saturated gating (boundary probabilities 1e-300 and e^-1000,
   boundary and gating logits +-1e3) through slopes, surjection, gating,
   coupling layer and flow; values beyond float64 (-inf, never NaN); the
   out-of-range rows of a flow.
3. Checkpoints: what test_checkpoint.py does not reach through the
   estimators: a failed resume never touches the model, forged files,
   non-finite parameters, resume after a crash between two checkpoints.
4. NonFiniteError names the step, the layer and the training point.
"""
import json
import os

import numpy as np
import pytest

from helpers import check_gradient, fit, forge_checkpoint
from radref import RadFlow, RealNVPFlow, datasets, load_model
from radref.reference import golden
from radref.training import checkpoint as ck
from radref.core.base import normal_logpdf_forward
from radref.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from radref.user.cli import main
from radref.core.numerics import RANGE
from radref.core.layers import rad
from radref.core.flow import (FlowConfig, flow_backward, flow_forward, flow_init, flow_inverse,
                         flow_sample_from_noise, layer_params)
from radref.core.gating import log_gating_backward, log_gating_forward
from radref.training.optim import AdamConfig
from radref.core.slopes import Slopes, slopes_backward, slopes_forward
from radref.core.surjection import (surjection_backward, surjection_forward,
                               surjection_inverse)
from radref.training.train import NonFiniteError, locate_non_finite, train

CLASSES = [RadFlow, RealNVPFlow]
LOG_MAX = float(np.log(np.finfo(np.float64).max))


def _moons(n, seed=0):
    return datasets.sample("two_moons", n, random_state=seed)


@pytest.fixture(scope="module")
def fitted():
    X = _moons(200)
    return {cls: fit(cls(n_layers=2, hidden=4, random_state=0), X, steps=2, batch_size=100)
            for cls in CLASSES}


# ======================================================================
# 1. Bad input
# ======================================================================

X2 = np.zeros((4, 2))
K_OK = np.zeros((4, 2, 2), dtype=int)

#: (label, call(model), exception, message pattern); the model is fitted, d = 2,
#: 2 layers.  Each row is an input the older tests do not try.
ESTIMATOR_CASES = [
    # arrays: shapes, dtypes, values
    ("X 0-d", lambda m: m.score_samples(np.float64(1.0)), ValueError,
     r"X must be 2-dimensional, got shape \(\)"),
    ("X ragged", lambda m: m.score_samples([[1.0, 2.0], [3.0]]), TypeError,
     "X must be a real numeric array"),
    ("X datetime", lambda m: m.score_samples(np.zeros((2, 2), "M8[s]")), TypeError,
     "X must be a real numeric array, got dtype datetime64"),
    ("X no columns", lambda m: m.score_samples(np.zeros((3, 0))), ValueError, "X is empty"),
    ("X 1 column for a 2-d model", lambda m: m.score_samples(np.zeros((3, 1))), ValueError,
     "X must have 2 columns"),
    pytest.param("X long double beyond float64", lambda m: m.score_samples(
        np.array([[np.longdouble("1e400"), 0]])), ValueError, "X has values beyond the float64",
        marks=pytest.mark.skipif(np.finfo(np.longdouble).max <= np.finfo(np.float64).max,
                                 reason="long double is float64 here")),
    ("X NaN in transform", lambda m: m.transform([[np.nan, 0.0]]), ValueError, "X contains NaN"),
    ("X wrong d in loglik_and_grad", lambda m: m.loglik_and_grad(np.zeros((3, 5))), ValueError,
     "X must have 2 columns"),
    ("Z empty", lambda m: m.inverse_transform(np.zeros((0, 2)), np.zeros((0, 2, 2), int)),
     ValueError, "Z is empty"),
    ("Z 3-d", lambda m: m.inverse_transform(np.zeros((4, 2, 1)), K_OK), ValueError,
     "Z must be 2-dimensional"),
    ("Z inf", lambda m: m.inverse_transform(np.array([[np.inf, 0.0]]), np.zeros((1, 2, 2), int)),
     ValueError, "Z contains NaN or infinite"),
    ("Z complex", lambda m: m.inverse_transform(X2 + 0j, K_OK), TypeError,
     "Z must be a real numeric array"),
    # sample
    ("sample n < 0", lambda m: m.sample(-5), ValueError, "n must be >= 1"),
    ("sample n str", lambda m: m.sample("3"), TypeError, "n must be an integer"),
    ("sample random_state -1", lambda m: m.sample(3, random_state=-1), ValueError,
     "random_state must be None, a non-negative int"),
    ("sample random_state str", lambda m: m.sample(3, random_state="a"), TypeError,
     "random_state must be None"),
    ("sample random_state float", lambda m: m.sample(3, random_state=1.5), TypeError,
     "random_state must be None"),
    # persistence
    ("save to a non-path", lambda m: m.save(3), TypeError, "path must be a file path"),
    ("save into a missing directory", lambda m: m.save("/nonexistent-dir/m.npz"),
     FileNotFoundError, "directory /nonexistent-dir does not exist"),
]

RAD_ONLY_CASES = [
    ("K = 5", lambda m: m.inverse_transform(X2, np.full((4, 2, 2), 5)), ValueError,
     r"K must be a branch 0, 1 or 2 where layer 0 transforms column 1, got K\[0, 0, 1\] = 5"),
    ("K = -1 where a layer transforms", lambda m: m.inverse_transform(X2, np.full((4, 2, 2), -1)),
     ValueError, "K must be a branch 0, 1 or 2"),
    ("K ragged", lambda m: m.inverse_transform(X2, [[[0, 0]], [[0]]]), TypeError,
     "K must be an integer array"),
    ("K without preimage", lambda m: m.inverse_transform(np.full((4, 2), 50.0), K_OK), ValueError,
     r"K does not match Z: \(v, k\) has no preimage"),
    # without K, a Rad flow draws the branches: from a generator named as everywhere
    ("K None, random_state str", lambda m: m.inverse_transform(X2, random_state="a"), TypeError,
     "random_state must be None"),
]


@pytest.mark.parametrize("label,call,exc,message", ESTIMATOR_CASES,
                         ids=[c.values[0] if hasattr(c, "marks") else c[0]
                              for c in ESTIMATOR_CASES])
@pytest.mark.parametrize("cls", CLASSES)
def test_estimator_bad_input(cls, label, call, exc, message, fitted):
    with pytest.raises(exc, match=message):
        call(fitted[cls])


@pytest.mark.parametrize("label,call,exc,message", RAD_ONLY_CASES,
                         ids=[c[0] for c in RAD_ONLY_CASES])
def test_rad_bad_k(label, call, exc, message, fitted):
    with pytest.raises(exc, match=message):
        call(fitted[RadFlow])


def test_realnvp_ignores_k_values(fitted):
    # A Real NVP flow has no discrete latent: K is ignored (documented).
    model = fitted[RealNVPFlow]
    np.testing.assert_array_equal(model.inverse_transform(X2, np.full((4, 2, 2), 7)),
                                  model.inverse_transform(X2))


FIT_CASES = [
    # (kwargs, exception, message)
    (dict(X=np.float64(2.0)), ValueError, "X must be 2-dimensional"),
    (dict(X=[[1.0, 2.0], [3.0]]), TypeError, "X must be a real numeric array"),
    (dict(X=np.zeros((5, 2), dtype=np.complex128)), TypeError, "X must be a real numeric"),
    (dict(steps=-3), ValueError, "steps must be >= 1, got -3"),
    (dict(steps=np.float64(3)), TypeError, "steps must be an integer"),
    (dict(batch_size=-1), ValueError, "batch_size must be >= 1"),
    (dict(batch_size=2.5), TypeError, "batch_size must be an integer"),
    (dict(lr=float("nan")), ValueError, "lr must be a finite number > 0"),
    (dict(lr="0.1"), TypeError, "lr must be a real number"),
    (dict(beta1=-0.1), ValueError, r"beta1 must be in \[0, 1\)"),
    (dict(beta1=float("nan")), ValueError, "beta1 must be in"),
    (dict(beta2=1.0), ValueError, r"beta2 must be in \[0, 1\)"),
    (dict(beta2="0.9"), TypeError, "beta2 must be a real number"),
    (dict(eps=None), TypeError, "eps must be a real number"),
    (dict(beta1=True), TypeError, "beta1 must be a real number"),
    (dict(eps=-1e-8), ValueError, "eps must be a finite number > 0"),
    (dict(eps=float("inf")), ValueError, "eps must be a finite number > 0"),
    (dict(eval_every=-1), ValueError, "eval_every must be >= 1"),
    (dict(checkpoint_every=0), ValueError, "checkpoint_every must be >= 1"),
    (dict(X_val=np.array([[np.nan, 0.0]])), ValueError, "X_val contains NaN"),
    (dict(X_val=np.zeros((0, 2))), ValueError, "X_val is empty"),
    (dict(X_val=np.zeros(2)), ValueError, "X_val must be 2-dimensional"),
    (dict(X_val=[[1.0, "a"]]), TypeError, "X_val must be a real numeric array"),
    (dict(checkpoint=3), TypeError, "checkpoint must be a file path"),
    (dict(checkpoint="/nonexistent-dir/ck.npz"), FileNotFoundError,
     "checkpoint: directory /nonexistent-dir does not exist"),
]


@pytest.mark.parametrize("kwargs,exc,message", FIT_CASES,
                         ids=[next(iter(c[0])) + "=" + repr(next(iter(c[0].values())))[:20]
                              for c in FIT_CASES])
@pytest.mark.parametrize("cls", CLASSES)
def test_fit_bad_input(cls, kwargs, exc, message):
    args = dict(X=_moons(20), steps=1, batch_size=10)
    args.update(kwargs)
    X = args.pop("X")
    model = cls(n_layers=1, hidden=2, random_state=0)
    with pytest.raises(exc, match=message):
        fit(model, X, **args)
    assert not hasattr(model, "params_")  # nothing was trained


CONSTRUCTOR_CASES = [
    (dict(n_layers=-1), ValueError, "n_layers must be >= 1"),
    (dict(n_layers=np.float64(2)), TypeError, "n_layers must be an integer"),
    (dict(hidden=0), ValueError, "hidden must be >= 1"),
    (dict(hidden=None), TypeError, "hidden must be an integer"),
    (dict(out_std=float("inf")), ValueError, "out_std must be a finite number"),
    (dict(out_std="0.1"), TypeError, "out_std must be a real number"),
    (dict(random_state="seed"), TypeError, "random_state must be an integer"),
    (dict(random_state=np.random.default_rng(0)), TypeError, "random_state must be an integer"),
]


@pytest.mark.parametrize("kwargs,exc,message", CONSTRUCTOR_CASES)
@pytest.mark.parametrize("cls", CLASSES)
def test_constructor_bad_input(cls, kwargs, exc, message):
    # stored as given (scikit-learn's convention), refused by fit
    model = cls(steps=1, **kwargs)
    with pytest.raises(exc, match=message):
        model.fit(_moons(20))
    assert not hasattr(model, "params_")


@pytest.mark.parametrize("value,exc", [(-2, ValueError), (2.0, TypeError), (True, TypeError)])
def test_gate_hidden_bad_input(value, exc):
    with pytest.raises(exc, match="gate_hidden must be"):
        RadFlow(gate_hidden=value, steps=1).fit(_moons(20))


@pytest.mark.parametrize("path,exc,message", [
    (3, TypeError, "path must be a file path"),
    (None, TypeError, "path must be a file path"),
    ("/", CheckpointError, "not a readable radref checkpoint"),
])
def test_load_model_bad_path(path, exc, message):
    with pytest.raises(exc, match=message):
        load_model(path)


DATASET_CASES = [
    (lambda: datasets.sample("grid", 3, random_state=-1), ValueError,
     "random_state must be None, a non-negative int"),
    (lambda: datasets.sample("grid", 3, random_state="x"), TypeError, "random_state must be"),
    (lambda: datasets.make_spiral(3, random_state=1.5), TypeError, "random_state must be"),
    (lambda: datasets.train_test_split_samples("grid", 3, 3, random_state=-1), ValueError,
     "random_state must be"),
    (lambda: datasets.negative_entropy("grid", n=10, random_state="x"), TypeError,
     "random_state must be"),
    (lambda: datasets.log_density("grid", np.float64(1.0)), ValueError, r"shape \(n, 2\)"),
    (lambda: datasets.log_density("grid", np.zeros((2, 2), "M8[s]")), TypeError, "real numeric"),
    (lambda: datasets.log_density("grid", [[np.nan, np.inf]]), ValueError, "finite"),
]


@pytest.mark.parametrize("call,exc,message", DATASET_CASES)
def test_datasets_bad_input(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


def test_datasets_empty_points_give_an_empty_result():
    # Documented: a pure vectorised function, (0, 2) points -> (0,) densities
    # (the estimators, which train and score, refuse an empty X instead).
    assert datasets.log_density("ring", np.zeros((0, 2))).shape == (0,)


@pytest.mark.parametrize("port,gold,tolerance,exc,message", [
    (None, {"blocks": {}}, "float64", TypeError, "port_doc must be a document"),
    ({"blocks": {}}, [], "float64", TypeError, "golden_doc must be a document"),
    ({"blocks": {}}, {"blocks": {}}, "float16", ValueError, "tolerance must be one of"),
    ({"blocks": {}}, {"blocks": {}}, ["float64"], ValueError, "tolerance must be one of"),
])
def test_check_port_bad_arguments(port, gold, tolerance, exc, message):
    with pytest.raises(exc, match=message):
        golden.check_port(port, gold, tolerance=tolerance)


def test_golden_decode_bad_arrays():
    for obj, message in (({"shape": [2], "dtype": "float64", "hex": ["0x1p+0", None]},
                          "hex entry 1"),
                         ({"shape": [-1], "dtype": "float64", "hex": []}, "non-negative"),
                         ({"shape": [1], "dtype": "complex", "data": [1]}, "unknown dtype"),
                         ({"shape": [1], "dtype": "int64", "data": [1.5]}, "list of integers"),
                         ([1, 2], "expected an array object")):
        with pytest.raises(golden.GoldenFormatError, match=message):
            golden.decode_array(obj, "x")


# --------------------------------------------------------------------- CLI

def _cli(capsys, argv):
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def _one_line_error(status, err, *fragments):
    assert status == 2
    assert err.startswith("radref: error: ") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "m.npz"
    fit(RadFlow(n_layers=2, hidden=3, random_state=0), _moons(100), steps=2,
                                                       batch_size=50).save(path)
    return path


def test_cli_bad_seeds_fail_before_any_work(tmp_path, capsys, cli_model):
    out = tmp_path / "m.npz"
    for argv in (["demo", "--seed", "-1", "--figure", "", "--quiet"],
                 ["train", "--out", str(out), "--seed", "-2", "--quiet"],
                 ["sample", "--model", str(cli_model), "--seed", "-3",
                  "--out", str(tmp_path / "s.npy")]):
        status, _, err = _cli(capsys, argv)
        _one_line_error(status, err, "--seed must be >= 0")
    assert os.listdir(tmp_path) == []


def test_cli_outputs_checked_before_any_work(tmp_path, capsys, cli_model, monkeypatch):
    # fit must not run at all: make it explode if it does
    monkeypatch.setattr(RadFlow, "fit", lambda *a, **k: pytest.fail("fit ran"))
    status, _, err = _cli(capsys, ["train", "--out", str(tmp_path / "no" / "m.npz"), "--quiet"])
    _one_line_error(status, err, "does not exist")
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((3, 2)))
    for argv, fragment in (
            (["sample", "--model", str(cli_model), "--out", str(tmp_path / "no" / "s.npy")],
             "does not exist"),
            (["score", "--model", str(tmp_path / "missing.npz"), "--data", str(data),
              "--out", str(tmp_path / "scores.json")], "must end in .npy, .csv, .tsv or .txt"),
            (["demo", "--figure", str(tmp_path / "no" / "f.png"), "--quiet"], "does not exist")):
        status, _, err = _cli(capsys, argv)
        _one_line_error(status, err, fragment)
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


@pytest.mark.parametrize("argv,fragment", [
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--seeds", "0", "-1"], "--seeds must be >= 0, got -1"),
    (["--lr", "-1"], "--lr must be a finite number > 0"),
    (["--lr", "nan"], "--lr must be a finite number > 0"),
    (["--workers", "0"], "--workers must be >= 1, got 0"),
])
def test_cli_reproduce_checks_settings_before_starting(tmp_path, capsys, argv, fragment):
    out = tmp_path / "results"
    status, _, err = _cli(capsys, ["reproduce", "--quick", "--out", str(out)] + argv)
    _one_line_error(status, err, fragment)
    assert not out.exists()  # no directory, no worker processes


def test_cli_non_finite_training_is_a_one_line_error(tmp_path, capsys):
    data = tmp_path / "far.npy"
    np.save(data, np.array([[1e200, 0.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]))
    status, _, err = _cli(capsys, ["train", "--data", str(data), "--out", str(tmp_path / "m.npz"),
                                   "--steps", "2", "--batch-size", "4", "--quiet"])
    _one_line_error(status, err, "non-finite value at training step 1", "training point 0",
                    "out of range")
    assert not (tmp_path / "m.npz").exists()


def test_cli_memory_error_is_a_one_line_error(tmp_path, capsys, cli_model, monkeypatch):
    def huge(self, n, random_state=None):
        raise MemoryError("Unable to allocate 1.42 PiB")
    monkeypatch.setattr(RadFlow, "sample", huge)
    status, _, err = _cli(capsys, ["sample", "--model", str(cli_model), "-n", str(10**14),
                                   "--out", str(tmp_path / "s.npy")])
    _one_line_error(status, err, "out of memory")


def test_cli_check_port_on_a_directory_and_binary_file(tmp_path, capsys):
    binary = tmp_path / "port.json"
    binary.write_bytes(b"\x93NUMPY\x00\xff")
    for path, fragment in ((tmp_path, "is a directory; pass your port's result file"),
                           (binary, "not a UTF-8 text file")):
        status, _, err = _cli(capsys, ["check-port", str(path)])
        _one_line_error(status, err, fragment)


# ======================================================================
# 2. Numerical extremes
# ======================================================================

def _far_points():
    signs = np.array([[1, 0], [0, 1], [1, 1], [-1, 1], [-1, -1], [1, -1], [-1, 0], [0, -1]])
    return np.concatenate([m * signs for m in (1e2, 1e4, 1e6, 1e8)]).astype(float)


@pytest.fixture(scope="module")
def models_for_extremes():
    X = _moons(1000)
    models = {}
    for cls in CLASSES:
        models[(cls.__name__, "init")] = fit(cls(random_state=0), X, steps=1, lr=1e-300)
        models[(cls.__name__, "random")] = fit(cls(random_state=1, out_std=1.0),
            X, steps=1, lr=1e-300)
        models[(cls.__name__, "trained")] = fit(cls(random_state=2), X, steps=200, lr=5e-3)
    return models


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("which", ["init", "random", "trained"])
def test_log_density_and_gradient_finite_up_to_1e8(models_for_extremes, cls, which):
    model = models_for_extremes[(cls.__name__, which)]
    P = _far_points()
    log_p = model.score_samples(P)
    assert np.all(np.isfinite(log_p)), log_p
    # far is less likely than near: the density decays in every direction
    near = model.score_samples(P / 1e6)
    assert np.all(log_p[-8:] < near[-8:])
    for i in range(0, len(P), 4):  # batches of 4 points, one magnitude each
        loglik, grads = model.loglik_and_grad(P[i:i + 4])
        assert np.isfinite(loglik)
        for name, g in grads.items():
            assert np.all(np.isfinite(g)), name


# ---------------------------------------------------------- saturated gating

def _pq(p, q, n=1):
    return (np.tile(np.asarray(p, dtype=float), (n, 1)),
            np.tile(np.asarray(q, dtype=float), (n, 1)))


SATURATED = {
    # name: (p_logits, q_logits)
    "P1=1e-300": ([np.log(1e-300), 0.0, 0.0], [0.0, 0.0, 0.0]),
    "P2=1e-300,Q3=1e-300": ([0.0, np.log(1e-300), 0.0], [0.0, 0.0, np.log(1e-300)]),
    "P2=e^-1000": ([0.0, -1000.0, 0.0], [0.0, 0.0, 0.0]),
    "Q1=e^-1000": ([0.0, 0.0, 0.0], [-1000.0, 0.0, 0.0]),
    "P2=e^-2000": ([1000.0, -1000.0, 1000.0], [0.0, 0.0, 0.0]),
    "logits+-1e3": ([1e3, -1e3, 1e3], [-1e3, 1e3, -1e3]),
    "logits-+1e3": ([-1e3, 1e3, -1e3], [1e3, -1e3, 1e3]),
    "P3=Q1=e^-2000": ([1e3, 0.0, -1e3], [-1e3, 0.0, 1e3]),
}


def _slopes_rows(p, q, n):
    s, _ = slopes_forward(*_pq(p, q, n))
    return s


@pytest.mark.parametrize("name", sorted(SATURATED))
def test_saturated_slopes_exact_in_log_space(name):
    p, q = SATURATED[name]
    s, cache = slopes_forward(*_pq(p, q))
    for field in Slopes._fields:
        assert np.all(np.isfinite(getattr(s, field))), field
    # the identities of eq. 26-30 in log space
    lp, lq = s.log_p[0], s.log_q[0]
    assert s.log_alpha_1[0] == pytest.approx(s.log_alpha_2[0] + lp[1] - lp[0], abs=1e-9)
    assert s.log_alpha_3[0] == pytest.approx(s.log_alpha_2[0] + lq[1] - lq[2], abs=1e-9)
    assert -1.0 <= s.a[0] <= 1.0 and -1.0 <= s.b[0] <= 1.0
    ones = Slopes(*(np.ones_like(getattr(s, f)) for f in Slopes._fields))
    for g in slopes_backward(ones, cache):
        assert np.all(np.isfinite(g))


def _u_grid(s):
    a, b = float(s.a[0]), float(s.b[0])
    pts = [-1e8, -5.0, -1.0 - 1e-9, -1.0, a, 0.5 * (a + b), b, 0.0, 0.5, 1.0,
           1.0 + 1e-12, 1.0 + 1e-9, 5.0, 1e8]
    pts += [np.nextafter(t, np.inf) for t in (-1.0, a, b)]
    pts += [np.nextafter(t, -np.inf) for t in (a, b, 1.0)]
    return np.array(pts)


def _saturated_grid(name):
    """Points ``u`` around every breakpoint of the saturated case ``name``, and
    its slopes repeated once per point."""
    p, q = SATURATED[name]
    u = _u_grid(_slopes_rows(p, q, 1))
    return u, _slopes_rows(p, q, len(u))


@pytest.mark.parametrize("name", sorted(SATURATED))
def test_saturated_surjection_never_nan(name):
    u, s = _saturated_grid(name)
    v, k, log_slope, cache = surjection_forward(u, s)
    assert not np.any(np.isnan(v))
    assert np.all(np.isfinite(log_slope))
    # |u| <= 1 exactly when |v| <= 1 (the tie-break rule), also saturated
    np.testing.assert_array_equal(np.abs(u) <= 1.0, np.abs(v) <= 1.0)
    # v is infinite only on an outer piece whose slope times |u -+ 1| exceeds float64
    outer = np.abs(u) > 1.0
    log_alpha = np.where(u > 1, s.log_alpha_plus, s.log_alpha_minus)
    beyond = outer & (log_alpha + np.log(np.where(outer, np.abs(u) - 1.0, 1.0)) > LOG_MAX + 1e-9)
    np.testing.assert_array_equal(np.isinf(v), beyond)
    # the backward pass: never NaN; finite wherever the slope times the upstream
    # gradient is a float64 (the exact gradient is +-alpha there)
    du, dslopes = surjection_backward(np.ones_like(u), np.ones_like(u), cache)
    assert not np.any(np.isnan(du))
    np.testing.assert_array_equal(np.isinf(du), log_slope > LOG_MAX)
    for field in Slopes._fields:
        assert not np.any(np.isnan(getattr(dslopes, field))), field
    # upstream gradient 0 gives exactly 0 (not inf * 0 = NaN)
    du0, dslopes0 = surjection_backward(np.zeros_like(u), np.zeros_like(u), cache)
    assert np.all(du0 == 0) and np.all(dslopes0.a == 0)


def test_anchor_of_a_piece_with_slope_beyond_float64():
    # P2 = e^-1000, Q uniform: alpha_3 = e^1000, b rounds to 1; u = 1 sits on
    # piece 3 at its anchor: v = 1 exactly (it was inf * 0 = NaN), log-slope 1000.
    s = _slopes_rows(*SATURATED["P2=e^-1000"], 1)
    assert s.b[0] == 1.0 and s.log_alpha_3[0] == pytest.approx(1000.0)
    v, k, log_slope, _ = surjection_forward(np.array([1.0]), s)
    assert (v[0], k[0]) == (1.0, 2) and log_slope[0] == pytest.approx(1000.0)
    # just above 1: an outer piece of slope e^999.3, v beyond float64
    v, k, _, _ = surjection_forward(np.array([np.nextafter(1.0, 2.0)]), s)
    assert v[0] == np.inf and k[0] == 2


@pytest.mark.parametrize("name", sorted(SATURATED))
def test_saturated_inverse_round_trip(name):
    u, s = _saturated_grid(name)
    v, k, _, _ = surjection_forward(u, s)
    finite = np.isfinite(v)
    back = surjection_inverse(v[finite], k[finite],
                              Slopes(*(np.asarray(f)[finite] for f in s)))
    assert not np.any(np.isnan(back))
    # Where v is finite, the inverse recovers u up to the conditioning of the
    # piece: |du| <= |dv| / alpha with |dv| ~ eps |v| ... and is never NaN.
    ok = np.isfinite(back)
    assert np.all(np.abs(back[ok] - u[finite][ok]) <= 1e-6 * np.maximum(1.0, np.abs(u[finite][ok])))


def test_inverse_of_a_tiny_outer_slope_is_beyond_float64():
    # Q1 = e^-1000: alpha_- = e^-999.6; v = -5 on branch 0 has preimage
    # u = -1 - 4 e^999.6: -inf (the true value is beyond float64), no warning.
    s = _slopes_rows(*SATURATED["Q1=e^-1000"], 2)
    u = surjection_inverse(np.array([-5.0, -1.0]), np.array([0, 0]), s)
    assert u[0] == -np.inf and u[1] == -1.0


@pytest.mark.parametrize("size", [30.0, 1e3])
def test_saturated_gating_logits_gradient(size):
    rng = np.random.default_rng(int(size))
    n = 12
    v = rng.uniform(-1.0, 1.0, n)
    k = rng.integers(0, 3, n)
    s = size * rng.choice([-1.0, 1.0], (n, 3)) + rng.normal(0.0, 0.5, (n, 3))
    p_logits = size * rng.choice([-1.0, 1.0], (n, 3))
    q_logits = size * rng.choice([-1.0, 1.0], (n, 3))
    slopes, _ = slopes_forward(p_logits, q_logits)
    log_p, log_q = slopes.log_p, slopes.log_q
    log_gate, cache = log_gating_forward(v, k, s, log_p, log_q)
    assert np.all(np.isfinite(log_gate))
    w = rng.normal(0.0, 1.0, n)
    dv, ds, dlog_p, dlog_q = log_gating_backward(w, cache)
    for g in (dv, ds, dlog_p, dlog_q):
        assert np.all(np.isfinite(g))
    base = log_gating_forward(v, k, s, log_p, log_q)[0]

    def loss():
        return float(np.sum(w * (log_gating_forward(v, k, s, log_p, log_q)[0] - base)))
    check_gradient(loss, ds, s, tol=1e-6, h=1e-6, atol=1e-9)
    check_gradient(loss, dlog_p, log_p, tol=1e-6, h=1e-6, atol=1e-9)


def _saturated_layer(p_logits, q_logits, gate_logits, seed=0, shift_in=0.0):
    """Rad coupling parameters (d = 2, layer 0: transforms column 1) whose
    boundary logits and gating logits are the given constants: their
    conditioner outputs are scale * tanh(50) = scale exactly."""
    params = rad.init(2, 0, hidden=4, gate_hidden=4, out_std=0.3, random_state=seed)
    cond, gate = params["cond"], params["gate"]
    constant = np.zeros(10)
    constant[1] = shift_in
    constant[2:5], constant[5:8] = p_logits, q_logits
    cond["W2"][:, :8] = 0.0  # u = x_B - shift_in; logits constant
    cond["b2"][:8] = np.where(constant[:8] == 0, 0.0, 50.0)
    cond["scale"][:8] = constant[:8]
    gate["W2"][:] = 0.0
    gate["b2"][:] = gate_logits
    return params


@pytest.mark.parametrize("name", ["P2=e^-1000", "logits+-1e3", "P2=1e-300,Q3=1e-300"])
def test_saturated_coupling_layer(name):
    p, q = SATURATED[name]
    params = _saturated_layer(p, q, [1e3, -1e3, 0.0])
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(0.0, 1.0, 40), rng.uniform(-3.0, 3.0, 40)])
    z, k, term, cache = rad.forward(x, params, 0)
    assert np.all(np.isfinite(term)) and not np.any(np.isnan(z))
    u = cache.u[:, 0]
    s = cache.surj_cache.slopes
    log_alpha = np.where(u > 1, s.log_alpha_plus[:, 0], s.log_alpha_minus[:, 0])
    outer = np.abs(u) > 1
    beyond = outer & (log_alpha + np.log(np.where(outer, np.abs(u) - 1, 1.0)) > LOG_MAX - 5)
    assert np.all(np.isfinite(z[~beyond]))
    # backward on the rows whose output is a float64
    rows = ~np.any(np.isinf(z), axis=1)
    z, k, term, cache = rad.forward(x[rows], params, 0)
    dx, grads = rad.backward(-z / len(z), np.full(len(z), 1.0 / len(z)), cache)
    assert np.all(np.isfinite(dx))
    for net in grads.values():
        for g in net.values():
            assert np.all(np.isfinite(g))


def _saturated_flow(p, q, n_layers=3):
    config = FlowConfig("rad", 2, n_layers, 4, 4)
    params = flow_init(config, out_std=0.3, random_state=0)
    for layer in range(n_layers):
        nested = _saturated_layer(p, q, [1e3, -1e3, 0.0], seed=layer)
        if layer % 2:  # layer 1 transforms column 0 from column 1: same shapes
            pass
        for net, values in nested.items():
            for key, value in values.items():
                params[f"{layer}.{net}.{key}"] = value
    return config, params


@pytest.mark.parametrize("name", sorted(SATURATED))
def test_saturated_flow_log_density_gradient_inverse(name):
    config, params = _saturated_flow(*SATURATED[name])
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0.0, 1.0, (30, 2)), rng.uniform(-1.0, 1.0, (30, 2)),
                        [[1e8, -1e8], [0.0, 1e8], [3.0, 0.5]]])
    log_px, z, k, cache = flow_forward(x, params, config)
    assert not np.any(np.isnan(log_px))
    out = cache.out_of_range
    np.testing.assert_array_equal(np.isinf(log_px), out)  # -inf exactly when out of range
    assert np.all(log_px[out] == -np.inf) and np.all(z[out] == np.inf) and np.all(k[out] == -1)
    assert np.all(np.isfinite(z[~out])) and np.all(k[~out][:, :, :] >= -1)
    dx, grads = flow_backward(np.full(len(x), 1.0 / len(x)), cache)
    assert np.all(np.isfinite(dx)) and np.all(dx[out] == 0)
    for key, g in grads.items():
        assert np.all(np.isfinite(g)), key
    back = flow_inverse(z, k, params, config)
    assert not np.any(np.isnan(back))
    assert np.all(np.isinf(back[out]))
    # A piece whose slope is below float64 resolution (alpha_- = e^-1000) maps a
    # whole interval of u to (nearly) one v: the inverse of the rounded v is then
    # another point of that interval, or beyond float64 (inf), never NaN.  With
    # no such piece every row in range comes back.
    s = _slopes_rows(*SATURATED[name], 1)
    if min(float(getattr(s, f)[0]) for f in Slopes._fields[:5]) > -30.0:
        np.testing.assert_array_equal(np.all(np.isfinite(back), axis=1), ~out)
        np.testing.assert_allclose(back[~out], x[~out], rtol=1e-9, atol=1e-9)
    xs, ks = flow_sample_from_noise(rng.normal(0.0, 1.0, (50, 2)), rng.random((50, 3, 2)),
                                    params, config)
    assert not np.any(np.isnan(xs))
    assert np.all(np.isfinite(xs) | (ks == -1).all(axis=(1, 2))[:, None])


def test_outer_piece_of_astronomical_slope_is_minus_inf():
    # The policy in docs/errors.md: P2 = e^-1000 makes alpha_+ = e^999.3; a point
    # with u > 1 has v >= e^963 (u - 1 >= 2^-52): |z| and -|z|^2/2 are beyond
    # float64, so its log-density is -inf, its gradient zero.  Points with
    # u <= 1 are unaffected (finite).
    config, params = _saturated_flow(*SATURATED["P2=e^-1000"], n_layers=1)
    x = np.array([[0.3, 0.5], [0.3, 1.0], [0.3, np.nextafter(1.0, 2.0)], [0.3, 2.0],
                  [0.3, -3.0]])
    log_px, _, _, cache = flow_forward(x, params, config)
    assert np.all(np.isfinite(log_px[[0, 1, 4]]))
    assert np.all(log_px[[2, 3]] == -np.inf)
    np.testing.assert_array_equal(cache.out_of_range, [False, False, True, True, False])


def test_saturated_flow_gradient_matches_finite_differences():
    # Boundary probabilities 1e-300 (log-slopes ~690, through the log-space path):
    # the analytic gradient is right, not merely finite.
    config, params = _saturated_flow(*SATURATED["P2=1e-300,Q3=1e-300"], n_layers=2)
    rng = np.random.default_rng(3)
    x = rng.uniform(-0.8, 0.8, (10, 2))
    log_px, _, _, cache = flow_forward(x, params, config)
    assert np.all(np.isfinite(log_px))
    _, grads = flow_backward(np.full(10, 0.1), cache)
    base = float(np.mean(log_px))
    for key in ("0.cond.scale", "1.cond.scale", "0.gate.b2", "1.cond.b1"):
        check_gradient(lambda: float(np.mean(flow_forward(x, params, config)[0])) - base,
                       grads[key], params[key], tol=1e-5, h=1e-6, atol=1e-8, label=None)


# ----------------------------------------------------------- beyond float64

def test_base_density_beyond_float64():
    z = np.array([[1e154, 0.0], [1.3e154, 1.0], [2.0 ** 501, 3.0], [1e300, 0.0],
                  [1.7e308, -1.7e308], [np.inf, 0.0], [np.nan, 1e200], [3.0, 4.0]])
    log_p, _ = normal_logpdf_forward(z)
    c = np.log(2 * np.pi)
    assert log_p[0] == pytest.approx(-5e307, rel=1e-15)
    assert log_p[1] == pytest.approx(-0.5 * 1.3e154 ** 2, rel=1e-15)
    assert log_p[2] == pytest.approx(-0.5 * 2.0 ** 1002, rel=1e-15)
    assert np.all(log_p[3:6] == -np.inf)
    assert np.isnan(log_p[6])  # a NaN stays a NaN: never turned into -inf
    assert log_p[7] == -12.5 - c


@pytest.mark.parametrize("name", datasets.PROBLEMS)
def test_dataset_log_density_beyond_1e150(name):
    X = np.array([[3e150, 0.0], [4e150, 0.0], [1e153, 1.0], [1e200, 0.0], [1.7e308, -1.7e308],
                  [5e-324, -5e-324], [1e-310, 0.0]])
    log_p = datasets.log_density(name, X)
    assert not np.any(np.isnan(log_p))
    assert np.all(np.isfinite(log_p[[0, 1, 5, 6]]))
    assert np.all(log_p[[3, 4]] == -np.inf)
    # continuous across the switch to the far formula at 2^500 ~ 3.3e150
    assert log_p[1] / log_p[0] == pytest.approx((4.0 / 3.0) ** 2, rel=1e-12)


@pytest.mark.parametrize("cls", CLASSES)
def test_out_of_range_rows_through_the_estimators(cls, fitted):
    model = fitted[cls]
    X = np.array([[0.1, 0.2], [1e130, 0.0], [0.0, -2e120], [1.7e308, 1.7e308], [0.5, -0.3]])
    log_p = model.score_samples(X)
    assert np.all(np.isfinite(log_p[[0, 4]])) and np.all(log_p[1:4] == -np.inf)
    Z, K = model.infer(X)
    assert np.all(np.isinf(Z[1:4])) and np.all(K[1:4] == -1) and np.all(np.isfinite(Z[[0, 4]]))
    np.testing.assert_allclose(model.inverse_transform(Z[[0, 4]], K[[0, 4]]), X[[0, 4]],
                               rtol=0, atol=1e-10)
    assert np.all(np.isinf(model.inverse_transform(np.array([[1e130, 0.0]]),
                                                   np.zeros((1, 2, 2), int))))
    # the mean log-likelihood is -inf; the out-of-range rows add nothing to its gradient
    loglik, grads = model.loglik_and_grad(X)
    assert loglik == -np.inf
    _, grads_in = model.loglik_and_grad(X[[0, 4]])
    for name in grads:
        np.testing.assert_allclose(grads[name], grads_in[name] * 2 / 5, rtol=1e-12, atol=1e-300)


def test_range_is_where_the_flow_stops():
    # 1e120 is in range, the next float beyond it is not.
    config = FlowConfig("affine", 2, 2, 3)
    params = flow_init(config, out_std=0.0, random_state=0)  # identity layers
    x = np.array([[RANGE, 0.0], [np.nextafter(RANGE, np.inf), 0.0]])
    log_px, z, _, cache = flow_forward(x, params, config)
    assert log_px[0] == pytest.approx(-0.5 * RANGE ** 2, rel=1e-12) and log_px[1] == -np.inf
    np.testing.assert_array_equal(cache.out_of_range, [False, True])


# ======================================================================
# 3. Checkpoints
# ======================================================================

@pytest.mark.parametrize("cls", CLASSES)
def test_resume_after_a_crash_between_checkpoints_is_bit_identical(cls, tmp_path, monkeypatch):
    # Checkpoints every 7 steps; the process "dies" in step 17: the file holds
    # step 14 and resuming from it redoes 15..30 exactly.
    import radref.training.train as train_module
    X = _moons(600)
    kwargs = dict(steps=30, batch_size=100, lr=5e-3)
    whole = fit(cls(n_layers=2, hidden=4, random_state=0), X, **kwargs)
    path = tmp_path / "ck.npz"
    real, calls = train_module.mean_loglik_and_grad, []

    def dies_at_step_17(*args):
        calls.append(1)
        if len(calls) == 17:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train_module, "mean_loglik_and_grad", dies_at_step_17)
    with pytest.raises(KeyboardInterrupt):
        fit(cls(n_layers=2, hidden=4, random_state=0), X, checkpoint=path, checkpoint_every=7,
                                                      **kwargs)
    monkeypatch.undo()
    assert load_checkpoint(path)[0]["step"] == 14
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []
    resumed = fit(cls(n_layers=2, hidden=4, random_state=0), X, checkpoint=path,
                                                            checkpoint_every=7, **kwargs)
    for name, value in whole.parameters().items():
        assert resumed.parameters()[name].tobytes() == value.tobytes(), name
    assert resumed.history_["loglik"] == whole.history_["loglik"]
    assert resumed.optimizer_state_["t"] == 30 and resumed.n_steps_ == 30


def _snapshot(model):
    return ({k: v.tobytes() for k, v in model.parameters().items()}, model.n_steps_,
            model.optimizer_state_["t"], list(model.history_["loglik"]))


@pytest.mark.parametrize("damage", ["truncated", "flipped", "other_hyperparameters",
                                    "other_data", "other_settings", "other_class",
                                    "no_optimizer_state", "wrong_version"])
def test_failed_resume_never_touches_the_model(damage, tmp_path):
    X = _moons(300)
    model = fit(RadFlow(n_layers=2, hidden=4, random_state=0), X, steps=5, batch_size=100)
    before = _snapshot(model)
    path = tmp_path / "ck.npz"
    source = RadFlow(n_layers=2, hidden=4, random_state=0)
    fit(source, X, steps=3, batch_size=100, checkpoint=path)
    fit_args = dict(steps=6, batch_size=100)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
        exc, message = CheckpointError, "not a readable radref checkpoint"
    elif damage == "flipped":  # one bit of a parameter's stored bytes
        flipped = bytearray(data)
        flipped[data.find(b"\x93NUMPY", data.find(b"param/0.cond.W1")) + 130] ^= 0x01
        path.write_bytes(bytes(flipped))
        exc, message = CheckpointError, "(corrupted|not a readable)"
    elif damage == "other_hyperparameters":
        model.hidden = 5  # a model of another architecture resuming this file
        model.gate_hidden = 5
        exc, message = ValueError, "other hyperparameters"
    elif damage == "other_data":
        X = X + 1.0
        exc, message = ValueError, "other data or training settings"
    elif damage == "other_settings":
        fit_args["lr"] = 0.5
        exc, message = ValueError, "other data or training settings"
    elif damage == "other_class":
        path.unlink()
        fit(RealNVPFlow(n_layers=2, hidden=4, random_state=0), X, steps=1, batch_size=100,
                                                              checkpoint=path)
        exc, message = CheckpointError, "holds a RealNVPFlow, not a RadFlow"
    elif damage == "no_optimizer_state":
        meta, params, _ = load_checkpoint(path)
        save_checkpoint(path, meta["model"], meta["hyperparameters"], params, None,
                        meta["step"], meta["extra"])
        exc, message = ValueError, "holds no optimizer state"
    else:
        _rewrite(path, version=2)
        exc, message = CheckpointError, "version 2 is not supported"
    with pytest.raises(exc, match=message):
        fit(model, X, checkpoint=path, **fit_args)
    model.hidden = model.gate_hidden = 4
    assert _snapshot(model) == before


def _rewrite(path, **meta_changes):
    """Rewrite a checkpoint in place with metadata (and ``_arrays``) changed and a
    valid checksum (a forgery)."""
    forge_checkpoint(path, path, meta_changes.pop("_arrays", None), **meta_changes)


@pytest.fixture
def saved_model(tmp_path):
    path = tmp_path / "m.npz"
    fit(RadFlow(n_layers=2, hidden=3, random_state=0), _moons(100), steps=2,
                                                       batch_size=50).save(path)
    return path


@pytest.mark.parametrize("change,message", [
    (dict(names=["0.cond.W1", "no.such.param"]), "checkpoint is incomplete"),
    (dict(step="three"), "invalid model description"),
    (dict(hyperparameters={"n_layers": 2, "hidden": 3}), "invalid model description"),
    (dict(hyperparameters={"n_layers": 0, "hidden": 3, "gate_hidden": 3, "out_std": 0.01,
                           "random_state": 0, "dim": 2}), "invalid model description"),
    (dict(hyperparameters={"n_layers": 2, "hidden": 3, "gate_hidden": 3, "out_std": 0.01,
                           "random_state": 0, "dim": 2, "colour": "red"}),
     "invalid model description"),
    (dict(hyperparameters={"n_layers": 3, "hidden": 3, "gate_hidden": 3, "out_std": 0.01,
                           "random_state": 0, "dim": 2}), "do not match the architecture"),
    (dict(model="GAN"), "unknown model class"),
    (dict(_arrays={"param/0.cond.b1": np.array([np.nan, 0.0, 0.0])}),
     "parameter 0.cond.b1 has non-finite values"),
    (dict(_arrays={"param/0.cond.b1": None}), "checkpoint is incomplete"),
])
def test_forged_checkpoints_are_refused(saved_model, change, message):
    # Files whose checksum matches (so not damaged) but whose content is not
    # what save() writes: still a CheckpointError (a ValueError), never a
    # KeyError or a half-built model.
    _rewrite(saved_model, **change)
    with pytest.raises(CheckpointError, match=message):
        load_model(saved_model)


def test_non_finite_parameters_are_never_saved(tmp_path, fitted):
    model = fit(RadFlow(n_layers=2, hidden=4, random_state=0), _moons(100), steps=1,
                                                              batch_size=50)
    model.parameters()["1.gate.W2"][0, 0] = np.nan
    with pytest.raises(ValueError, match="parameter 1.gate.W2 has non-finite values"):
        model.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


# ======================================================================
# 4. NonFiniteError: step, layer, training point
# ======================================================================

def _layer1_saturated_flow():
    """A 2-layer Rad flow whose layer 1 has P2 = e^-1000: a point whose u in
    layer 1 exceeds 1 leaves float64 there (layer 0 is ordinary)."""
    config = FlowConfig("rad", 2, 2, 4, 4)
    params = flow_init(config, out_std=0.1, random_state=0)
    nested = _saturated_layer(*SATURATED["P2=e^-1000"], [0.0, 0.0, 0.0])
    for net, values in nested.items():
        for key, value in values.items():
            params[f"1.{net}.{key}"] = value
    return config, params


def test_non_finite_loss_names_the_layer_and_the_training_point():
    config, params = _layer1_saturated_flow()
    rng = np.random.default_rng(0)
    X = rng.uniform(-0.9, 0.9, (40, 2))  # layer 1 transforms column 0 = u
    z0 = rad.forward(X, layer_params(params, 0), 0)[0]
    assert np.all(np.abs(z0[:, 0]) < 1)
    X[23, 0] = 4.0  # u = 4 > 1 in layer 1: v = 1 + e^999 * 3
    reference = {k: v.copy() for k, v in params.items()}
    with pytest.raises(NonFiniteError) as info:
        train(params, config, X, steps=20, batch_size=10, adam=AdamConfig(lr=1e-3),
              random_state=0)
    err = info.value
    assert (err.where, err.layer, err.row) == ("loss", 1, 23)
    assert f"training step {err.step} in the loss (first in layer 1" in str(err)
    assert "training point 23" in str(err)
    train(reference, config, X, steps=err.step - 1, batch_size=10, adam=AdamConfig(lr=1e-3),
          random_state=0)
    for name in params:
        assert params[name].tobytes() == reference[name].tobytes(), name


def test_floating_point_error_in_a_layer_stops_training():
    # lr = 1e300: the first Adam step throws the weights to ~1e300; the next
    # forward pass overflows in layer 0's conditioner.
    X = _moons(100)
    model = RadFlow(n_layers=2, hidden=4, random_state=0)
    with pytest.raises(NonFiniteError) as info:
        fit(model, X, steps=5, batch_size=50, lr=1e300)
    err = info.value
    assert err.where == "loss" and err.layer == 0 and err.step == 2
    assert "first in layer 0: overflow" in str(err)
    assert model.n_steps_ == 1
    for value in model.parameters().values():
        assert np.all(np.isfinite(value))


def test_adam_overflow_names_the_parameter():
    # Data at 1e100 are in range, but their gradients (~1e200) square to
    # beyond float64 in Adam's second moment: stop, naming the parameter.
    X = _moons(100)
    X[7] = [1e100, -1e100]
    model = RealNVPFlow(n_layers=2, hidden=4, random_state=0)
    with pytest.raises(NonFiniteError, match="Adam's update overflows") as info:
        fit(model, X, steps=10, batch_size=100)
    err = info.value
    assert err.where in model.parameters() and err.layer == int(err.where.split(".")[0])
    assert f"in layer {err.layer} (parameter {err.where}" in str(err)
    for value in model.parameters().values():
        assert np.all(np.isfinite(value))


def test_locate_non_finite_on_a_clean_batch():
    config = FlowConfig("rad", 2, 3, 4, 4)
    params = flow_init(config, out_std=0.3, random_state=0)
    assert locate_non_finite(_moons(50), params, config) == (None, None, None, "")
    where, layer, row, detail = locate_non_finite(np.array([[0.0, 0.0], [np.inf, 0.0]]),
                                                  params, config)
    assert (where, layer, row) == ("loss", None, 1) and "row 1 lies beyond" in detail


@pytest.mark.parametrize("cls", CLASSES)
def test_evaluation_refuses_non_finite_parameters(cls):
    model = fit(cls(n_layers=2, hidden=3, random_state=0), _moons(50), steps=1, batch_size=50)
    model.parameters()["1.cond.b1"][0] = np.nan  # through the live parameters
    for call in (lambda: model.score_samples(X2), lambda: model.transform(X2),
                 lambda: model.inverse_transform(X2, K_OK), lambda: model.sample(3),
                 lambda: model.loglik_and_grad(X2)):
        with pytest.raises(ValueError, match="parameter 1.cond.b1 has non-finite values"):
            call()


def test_parameters_that_overflow_give_floating_point_error_not_nan():
    # Weights of 1e200 (far beyond what training produces): the gating net's
    # logits overflow for |x| ~ 1e110; evaluation raises instead of returning
    # NaN with RuntimeWarnings.
    model = fit(RadFlow(n_layers=2, hidden=3, random_state=0), _moons(50), steps=1,
                                                              batch_size=50)
    for name, value in model.parameters().items():
        if ".gate.W" in name:
            value *= 1e200
    X = np.array([[1e110, -1e110]])
    for call in (lambda: model.score_samples(X), lambda: model.loglik_and_grad(X)):
        with pytest.raises(FloatingPointError, match="overflow"):
            call()


def test_held_out_score_of_minus_inf_is_checkpointed(tmp_path):
    # A held-out point out of range makes the held-out mean -inf: the history
    # holding it is stored (JSON's Infinity), and training resumes from it.
    X = _moons(100)
    path = tmp_path / "ck.npz"
    kwargs = dict(steps=4, batch_size=50, X_val=[[1e130, 0.0]], eval_every=1, checkpoint=path,
                  checkpoint_every=2)
    model = fit(RadFlow(n_layers=1, hidden=2, random_state=0), X, **dict(kwargs, steps=2))
    assert model.history_["val_loglik"] == [-np.inf, -np.inf]
    assert load_model(path).history_["val_loglik"] == [-np.inf, -np.inf]
    resumed = fit(RadFlow(n_layers=1, hidden=2, random_state=0), X, **kwargs)
    assert resumed.history_["val_step"] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="holds NaN"):
        save_checkpoint(tmp_path / "nan.npz", "RadFlow", {}, {}, extra={"x": [1.0, np.nan]})
    assert not (tmp_path / "nan.npz").exists()


def test_adam_overflow_in_the_parameter_update_leaves_all_parameters_finite():
    # Found by test_fuzz: at lr = 1.14e308 the second Adam step's p - step
    # overflowed while the in-place update was writing: some parameters were
    # already inf when NonFiniteError was raised.  Now nothing is written.
    model = RealNVPFlow(n_layers=1, hidden=1, out_std=0.0, random_state=0)
    with pytest.raises(NonFiniteError, match="Adam's update overflows"):
        fit(model, np.zeros((1, 2)), steps=2, batch_size=1, lr=1.139691793744536e308,
                  beta1=0.5, beta2=0.5)
    assert model.n_steps_ == 1
    for value in model.parameters().values():
        assert np.all(np.isfinite(value))


def test_held_out_evaluation_that_overflows_is_minus_inf_not_nan():
    # One step at lr = 1e300 leaves weights of ~1e300: the held-out score after
    # it overflows.  It is recorded as -inf (was NaN with RuntimeWarnings).
    X = _moons(50)
    model = fit(RadFlow(n_layers=2, hidden=3, random_state=0), X, steps=1, batch_size=50,
                                                              lr=1e300, X_val=X)
    assert model.history_["val_loglik"] == [-np.inf]


@pytest.mark.parametrize("layer", [0, 1])
def test_overflow_in_the_backward_pass_names_the_layer(layer, monkeypatch):
    # The backward pass of one layer overflowing (simulated: the real cases need
    # parameters far beyond training's) is reported as "in the gradient", in that
    # layer: the top one (reached first by the reverse sweep) or the one below.
    real = rad.backward
    transformed = slice((layer + 1) % 2, None, 2)  # of a 2-d flow: layer 0 column 1, ...

    def overflows_in_layer(dz, dterm, cache):
        if cache.cols.transformed == transformed:
            np.multiply(np.array([1e308]), np.array([10.0]))
        return real(dz, dterm, cache)

    # the flow and the diagnostics reach a layer only through its kind's module
    monkeypatch.setattr(rad, "backward", overflows_in_layer)
    config = FlowConfig("rad", 2, 2, 3, 3)
    params = flow_init(config, out_std=0.1, random_state=0)
    with pytest.raises(NonFiniteError) as info:
        train(params, config, _moons(20), steps=3, batch_size=10, random_state=0)
    err = info.value
    assert (err.step, err.where, err.layer) == (1, "gradient", layer)
    assert f"in the gradient (first in layer {layer}: overflow encountered in multiply in " \
           "its backward pass)" in str(err)
