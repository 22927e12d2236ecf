"""Tests of the command line (radref.user.cli): every command on every file format,
help texts and defaults, user errors reported as one "radref: error: <flag>
<file>: ..." line, and, through the real entry point on a pseudo-terminal, the
progress display and Ctrl-C."""
import argparse
import io
import os
import pty
import re
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest

import radref
from radref import RadFlow, RealNVPFlow, datasets, load_model
from radref.user.cli import build_parser, main

TINY = ["--steps", "20", "-n", "600", "--batch-size", "100", "--quiet"]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(radref.__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
# words of library internals that no user-facing message should contain
INTERNALS = ("Traceback", "allow_pickle", "context manager", "n_layers", "numpy", "ndarray",
             "np.", "Error:", "zipfile", "errno")


def _run(capsys, argv):
    """``main(argv)`` in-process: (status, stdout, stderr)."""
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def _assert_user_error(status, err, *fragments):
    assert status == 2
    assert err.startswith("radref: error: "), err
    assert len(err.strip().splitlines()) == 1, err
    for word in INTERNALS:
        assert word not in err, (word, err)
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def _save(path, X):
    """Write points in the format the extension names (the CLI's own formats)."""
    path = str(path)
    if path.endswith(".npy"):
        np.save(path, X)
    else:
        delimiter = {".csv": ",", ".tsv": "\t"}.get(os.path.splitext(path)[1], " ")
        np.savetxt(path, X, delimiter=delimiter, fmt="%.17g")  # exact for float64


def _load(path):
    path = str(path)
    if path.endswith(".npy"):
        return np.load(path)
    delimiter = {".csv": ",", ".tsv": "\t"}.get(os.path.splitext(path)[1])
    return np.loadtxt(path, delimiter=delimiter)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Models written by ``radref train`` for both classes (trained once)."""
    directory = tmp_path_factory.mktemp("cli")
    paths = {}
    for model in ("rad", "realnvp"):
        path = directory / f"{model}.npz"
        assert main(["train", "--model", model, "--out", str(path)] + TINY) == 0
        paths[model] = path
    return paths


# ---------------------------------------------------------------- train

def test_train_writes_the_model_the_api_would_fit(trained):
    # The CLI is a thin wrapper: same data (two_moons, n, seed), same model and
    # Adam settings -> bit-identical parameters to the Python API, whose
    # defaults (lr, layers) are the CLI's.
    X = datasets.sample("two_moons", 600, random_state=0)
    for model, cls, hidden in (("rad", RadFlow, 8), ("realnvp", RealNVPFlow, 56)):
        loaded = load_model(trained[model])
        assert type(loaded) is cls and loaded.n_steps_ == 20
        assert loaded.n_layers == 6 and loaded.hidden == hidden
        api = cls(steps=20, batch_size=100, random_state=0).fit(X)
        for name, value in api.parameters().items():
            assert loaded.parameters()[name].tobytes() == value.tobytes(), (model, name)


def test_train_reports(tmp_path, capsys):
    path = tmp_path / "m.npz"
    status, out, err = _run(capsys, ["train", "--out", str(path), "--layers", "2",
                                     "--hidden", "4", "--gate-hidden", "3"] + TINY)
    assert status == 0 and err == ""
    assert "trained RadFlow on 600 points for 20 steps" in out and str(path) in out
    model = load_model(path)
    assert (model.n_layers, model.hidden, model.gate_hidden) == (2, 4, 3)
    X = datasets.sample("two_moons", 600, random_state=0)
    assert f"mean log-likelihood {model.score(X):+.4f} nats" in out


TEXT_FORMATS = [
    ("csv", lambda X: "\n".join(",".join(f"{v:.17g}" for v in row) for row in X)),
    ("csv", lambda X: "x,y\n" + "\n".join(",".join(f"{v:.17g}" for v in row) for row in X)),
    ("tsv", lambda X: "x\ty\n" + "\n".join("\t".join(f"{v:.17g}" for v in row) for row in X)),
    ("txt", lambda X: "# ring\n" + "\n".join(" ".join(f"{v:.17g}" for v in row) for row in X)),
    ("txt", lambda X: "a, b\n" + "\n".join(", ".join(f"{v:.17g}" for v in row) for row in X)),
]


@pytest.mark.parametrize("ext,write", TEXT_FORMATS + [("npy", None)])
def test_train_from_a_data_file(tmp_path, capsys, ext, write):
    X = datasets.sample("ring", 300, random_state=1)
    data = tmp_path / f"data.{ext}"
    if write is None:
        np.save(data, X)
    else:
        data.write_text(write(X) + "\n")
    path = tmp_path / "m.npz"
    status, out, _ = _run(capsys, ["train", "--data", str(data), "--model", "realnvp",
                                   "--layers", "2", "--hidden", "6", "--steps", "5",
                                   "--batch-size", "1000", "--seed", "4", "--quiet",
                                   "--out", str(path)])
    assert status == 0 and "on 300 points" in out
    api = RealNVPFlow(n_layers=2, hidden=6, steps=5, batch_size=300, random_state=4).fit(X)
    loaded = load_model(path)
    for name, value in api.parameters().items():
        assert loaded.parameters()[name].tobytes() == value.tobytes(), name


def test_train_with_held_out_data(tmp_path, capsys):
    X_val = datasets.sample("two_moons", 200, random_state=7)
    val = tmp_path / "val.csv"
    _save(val, X_val)
    path = tmp_path / "m.npz"
    status, out, _ = _run(capsys, ["train", "--out", str(path), "--val", str(val),
                                   "--eval-every", "5"] + TINY)
    assert status == 0
    model = load_model(path)
    assert model.history_["val_step"] == [5, 10, 15, 20]
    np.testing.assert_allclose(model.history_["val_loglik"][-1], model.score(X_val), rtol=1e-12)
    assert f"held-out {model.score(X_val):+.4f} nats (200 points)" in out


def test_train_checkpoint_and_resume(tmp_path, capsys):
    common = ["--layers", "2", "--hidden", "4", "-n", "500", "--batch-size", "100", "--quiet"]
    checkpoint = tmp_path / "state.npz"
    assert main(["train", "--steps", "12", "--checkpoint", str(checkpoint),
                 "--checkpoint-every", "5", "--out", str(tmp_path / "a.npz")] + common) == 0
    assert load_model(checkpoint).n_steps_ == 12
    capsys.readouterr()
    status, out, _ = _run(capsys, ["train", "--steps", "30", "--checkpoint", str(checkpoint),
                                   "--out", str(tmp_path / "resumed.npz")] + common)
    # a finished run's checkpoint is continued in a copy: the file stays as it was
    assert status == 0 and (f"for 30 steps (continued from the finished run in {checkpoint}, "
                            f"step 12; {checkpoint} is not changed)") in out
    assert load_model(checkpoint).n_steps_ == 12
    assert main(["train", "--steps", "30", "--out", str(tmp_path / "whole.npz")] + common) == 0
    resumed, whole = load_model(tmp_path / "resumed.npz"), load_model(tmp_path / "whole.npz")
    assert resumed.history_["step"] == list(range(1, 31))
    for name, value in whole.parameters().items():
        assert resumed.parameters()[name].tobytes() == value.tobytes(), name
    # a checkpoint of another run is refused, naming the flag and the file
    status, _, err = _run(capsys, ["train", "--steps", "30", "--lr", "0.01", "--checkpoint",
                                   str(checkpoint), "--out", str(tmp_path / "b.npz")] + common)
    _assert_user_error(status, err.splitlines()[-1] + "\n",
                       f"--checkpoint {checkpoint}: written by another run")
    assert not (tmp_path / "b.checkpoint.npz").exists()  # the copy of a refused run is gone


def test_n_with_data_is_an_error(tmp_path, capsys):
    data = tmp_path / "x.csv"
    _save(data, datasets.sample("ring", 100, random_state=0))
    status, _, err = _run(capsys, ["train", "--data", str(data), "-n", "50",
                                   "--out", str(tmp_path / "m.npz"), "--quiet"])
    _assert_user_error(status, err, "-n applies to --problem", str(data))


# ------------------------------------------------- data, score, sample

@pytest.mark.parametrize("ext", ["npy", "csv", "tsv", "txt"])
def test_data_exports_a_problem(tmp_path, capsys, ext):
    path = tmp_path / f"spiral.{ext}"
    status, out, _ = _run(capsys, ["data", "spiral", "-n", "70", "--seed", "3", "--out", str(path)])
    assert status == 0 and f"wrote 70 points of spiral (seed 3) to {path}" in out
    np.testing.assert_array_equal(_load(path), datasets.sample("spiral", 70, random_state=3))


def test_data_to_stdout(capsys):
    status, out, err = _run(capsys, ["data", "grid", "-n", "5", "--out", "-"])
    assert status == 0 and "wrote 5 points" in err
    X = np.loadtxt(io.StringIO(out), delimiter=",")
    np.testing.assert_array_equal(X, datasets.sample("grid", 5, random_state=0))


@pytest.mark.parametrize("model", ["rad", "realnvp"])
@pytest.mark.parametrize("ext_in", ["npy", "csv", "tsv", "txt"])
@pytest.mark.parametrize("ext_out", ["npy", "csv", "txt"])
def test_score(trained, tmp_path, capsys, model, ext_in, ext_out):
    X = datasets.sample("two_moons", 50, random_state=9)
    data = tmp_path / f"x.{ext_in}"
    _save(data, X)
    out_path = tmp_path / f"scores.{ext_out}"
    status, out, err = _run(capsys, ["score", "--model", str(trained[model]),
                                     "--data", str(data), "--out", str(out_path)])
    assert status == 0 and err == ""
    expected = load_model(trained[model]).score_samples(X)
    np.testing.assert_array_equal(_load(out_path), expected)
    assert f"mean log-likelihood {np.mean(expected):+.6f} nats over 50 points" in out


def test_score_stdin_to_stdout(trained, monkeypatch, capsys):
    X = datasets.sample("two_moons", 20, random_state=2)
    text = "x,y\n" + "\n".join(f"{a:.17g},{b:.17g}" for a, b in X) + "\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    status, out, err = _run(capsys, ["score", "--model", str(trained["rad"]), "--data", "-",
                                     "--out", "-"])
    assert status == 0
    np.testing.assert_array_equal(np.loadtxt(io.StringIO(out)),
                                  load_model(trained["rad"]).score_samples(X))
    assert "over 20 points" in err  # the summary stays off the data stream


def test_score_npy_from_stdin(trained, monkeypatch, capsys):
    X = datasets.sample("two_moons", 10, random_state=2)
    buffer = io.BytesIO()
    np.save(buffer, X)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(buffer.getvalue())))
    status, out, _ = _run(capsys, ["score", "--model", str(trained["rad"]), "--data", "-"])
    assert status == 0 and "over 10 points" in out


def test_score_without_out(trained, tmp_path, capsys):
    data = tmp_path / "x.npy"
    np.save(data, datasets.sample("two_moons", 10, random_state=2))
    status, out, _ = _run(capsys, ["score", "--model", str(trained["rad"]), "--data", str(data)])
    assert status == 0 and "over 10 points" in out
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


@pytest.mark.parametrize("model", ["rad", "realnvp"])
@pytest.mark.parametrize("ext", ["npy", "csv", "tsv"])
def test_sample(trained, tmp_path, capsys, model, ext):
    out_path = tmp_path / f"samples.{ext}"
    status, out, _ = _run(capsys, ["sample", "--model", str(trained[model]), "-n", "40",
                                   "--seed", "3", "--out", str(out_path)])
    assert status == 0 and f"wrote 40 samples to {out_path}" in out
    np.testing.assert_array_equal(_load(out_path),
                                  load_model(trained[model]).sample(40, random_state=3))


def test_sample_to_stdout(trained, capsys):
    status, out, err = _run(capsys, ["sample", "--model", str(trained["rad"]), "-n", "7",
                                     "--out", "-"])
    assert status == 0 and "wrote 7 samples to standard output" in err
    np.testing.assert_array_equal(np.loadtxt(io.StringIO(out), delimiter=","),
                                  load_model(trained["rad"]).sample(7, random_state=0))


# ------------------------------------------------------------ demo, plot

def test_demo_without_figure(capsys):
    # --figure '' must work without matplotlib (the 'plot' extra)
    status, out, err = _run(capsys, ["demo", "--rad-steps", "30", "--realnvp-steps", "30",
                                     "--n-train", "1000", "--n-test", "500", "--figure", "",
                                     "--quiet"])
    assert status == 0, err
    assert "Rad" in out and "Real NVP" in out and "held-out mean log-likelihood" in out
    assert "best achievable" in out and "figure written" not in out


def test_demo_progress_names_the_model_it_trains(capsys):
    status, _, err = _run(capsys, ["demo", "--rad-steps", "20", "--realnvp-steps", "30",
                                   "--n-train", "300", "--n-test", "100", "--figure", ""])
    assert status == 0, err
    rad, nvp = err.index("training Rad (20 steps)"), err.index("training Real NVP (30 steps)")
    # each header comes before its model's progress lines (capsys is not a
    # terminal: plain lines, the last one at the last step)
    assert rad < err.index("step 20/20") < nvp < err.index("step 30/30")


def test_demo_with_fewer_points_than_a_batch(capsys):
    # Regression: a batch larger than the data is the whole data
    status, out, err = _run(capsys, ["demo", "--rad-steps", "2", "--realnvp-steps", "2",
                                     "--n-train", "200", "--n-test", "100", "--figure", "",
                                     "--quiet"])
    assert status == 0, err
    assert "held-out mean log-likelihood" in out


def test_figures_need_matplotlib_checked_before_training(tmp_path, capsys, monkeypatch,
                                                         trained):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setattr(RadFlow, "fit", lambda *a, **k: pytest.fail("training started"))
    figure = tmp_path / "d.png"
    status, out, err = _run(capsys, ["demo", "--figure", str(figure), "--quiet"])
    _assert_user_error(status, err, "--figure needs matplotlib", "pip install matplotlib")
    assert out == "" and not figure.exists()
    status, _, err = _run(capsys, ["plot", str(trained["rad"]), "--out", str(figure)])
    _assert_user_error(status, err, "needs matplotlib")


def test_demo_with_figure(tmp_path, capsys):
    figure = tmp_path / "d.png"
    status, out, err = _run(capsys, ["demo", "--rad-steps", "30", "--realnvp-steps", "30",
                                     "--n-train", "1000", "--n-test", "500",
                                     "--figure", str(figure), "--quiet"])
    assert status == 0, err
    assert f"figure written to {figure}" in out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("model", ["rad", "realnvp"])
def test_plot(trained, tmp_path, capsys, model):
    figure = tmp_path / "m.png"
    status, out, err = _run(capsys, ["plot", str(trained[model]), "--out", str(figure),
                                     "-n", "500"])
    assert status == 0, err
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = tmp_path / "x.csv"
    _save(data, datasets.sample("two_moons", 300, random_state=1))
    before = figure.read_bytes()
    status, _, err = _run(capsys, ["plot", str(trained[model]), "--data", str(data),
                                   "--out", str(figure)])
    assert status == 2 and "exists" in err and "--overwrite" in err
    assert figure.read_bytes() == before
    status, _, err = _run(capsys, ["plot", str(trained[model]), "--data", str(data),
                                   "--out", str(figure), "--overwrite"])
    assert status == 0, err
    assert figure.read_bytes() != before  # the data are drawn now, not the samples


def test_plot_default_output_and_refusals(trained, tmp_path, capsys):
    model = tmp_path / "copy.npz"
    model.write_bytes(trained["rad"].read_bytes())
    status, out, _ = _run(capsys, ["plot", str(model), "-n", "200"])
    assert status == 0 and (tmp_path / "copy.png").exists()
    wide = tmp_path / "wide.npz"
    RadFlow(n_layers=2, hidden=3, steps=1, random_state=0).fit(np.eye(3)).save(wide)
    status, _, err = _run(capsys, ["plot", str(wide)])
    _assert_user_error(status, err, f"MODEL {wide}: a 3-dimensional model")


# ----------------------------------------------------------------- help

def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def test_top_level_help_lists_every_subcommand_and_the_defaults(capsys):
    _, commands = _subcommands()
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert {"demo", "data", "train", "score", "sample", "plot"} <= set(commands)
    for name in commands:
        assert name in out
    defaults = RadFlow().get_params()
    expected = f"{defaults['steps']} Adam steps, batch {defaults['batch_size']}, lr 0.005"
    assert expected in " ".join(out.split())  # argparse re-wraps the text


@pytest.mark.parametrize("command", sorted(_subcommands()[1]))
def test_subcommand_help_mentions_every_option(capsys, command):
    _, commands = _subcommands()
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: radref {command}")
    for action in commands[command]._actions:
        names = action.option_strings or [action.metavar or action.dest]
        for name in names:
            assert name in out, (command, name)
        if action.help and action.help is not argparse.SUPPRESS and action.dest != "help":
            # every help text is shown (compared without whitespace: argparse
            # re-wraps lines and may break them at hyphens)
            assert "".join(action.help.split()) in "".join(out.split()), (command, name)


def test_train_defaults_are_the_estimators(capsys):
    args = build_parser().parse_args(["train", "--out", "m.npz"])
    for name in ("steps", "batch_size", "lr", "beta1", "beta2", "eps", "eval_every"):
        assert getattr(args, name) == RadFlow().get_params()[name], name
        assert getattr(args, name) == RealNVPFlow().get_params()[name], name
    # the architecture options default to the model's own defaults (not given)
    for name in ("n_layers", "hidden", "gate_hidden", "out_std"):
        assert getattr(args, name) is None, name


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"radref {radref.__version__}"


def test_help_and_version_via_subprocess():
    result = subprocess.run([sys.executable, "-m", "radref", "--help"], capture_output=True,
                            text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: radref")
    result = subprocess.run([sys.executable, "-m", "radref", "--version"], capture_output=True,
                            text=True, env=ENV, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"radref {radref.__version__}"


def test_error_via_subprocess(tmp_path):
    result = subprocess.run([sys.executable, "-m", "radref", "score", "--model",
                             str(tmp_path / "missing.npz"), "--data", str(tmp_path / "x.npy")],
                            capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 2
    assert result.stderr == f"radref: error: --model {tmp_path / 'missing.npz'}: no such file\n"
    assert result.stdout == ""


# ---------------------------------------------------------------- errors

def test_missing_files_are_worded_one_way(trained, tmp_path, capsys):
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((3, 2)))
    missing = tmp_path / "missing.npz"
    nope = tmp_path / "nope.csv"
    for argv, flag, path in (
            (["score", "--model", str(missing), "--data", str(data)], "--model", missing),
            (["sample", "--model", str(missing), "--out", str(tmp_path / "s.npy")], "--model",
             missing),
            (["score", "--model", str(trained["rad"]), "--data", str(nope)], "--data", nope),
            (["train", "--data", str(nope), "--out", str(tmp_path / "m.npz")], "--data", nope),
            (["train", "--val", str(nope), "--out", str(tmp_path / "m.npz")] + TINY, "--val",
             nope),
            (["plot", str(missing)], "MODEL", missing)):
        status, _, err = _run(capsys, argv)
        _assert_user_error(status, err)
        assert err == f"radref: error: {flag} {path}: no such file\n"
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


def test_a_data_file_given_as_the_model(tmp_path, capsys):
    X = np.zeros((3, 2))
    data = tmp_path / "x.npy"
    np.save(data, X)
    for name, fragment in (("pts.csv", "not a radref model"), ("pts.npy", "a NumPy array (.npy), "
                                                               "not a radref model")):
        path = tmp_path / name
        _save(path, X)
        for argv in (["score", "--model", str(path), "--data", str(data)],
                     ["sample", "--model", str(path), "--out", str(tmp_path / "s.npy")]):
            status, _, err = _run(capsys, argv)
            _assert_user_error(status, err, f"--model {path}: {fragment}")


BAD_TEXT = [
    ("ragged.csv", b"1,2\n3\n", "line 2 has 1 values, line 1 has 2"),
    ("words.csv", b"x,y\none,two\n", "line 2: 'one' is not a number"),
    ("mixed.csv", b"1,2\n3,x\n", "line 2: 'x' is not a number"),
    ("hole.csv", b"1,2\n3,\n", "line 2: an empty field"),
    ("empty.csv", b"", "holds no data"),
    ("comments.txt", b"# nothing\n\n", "holds no data"),
    ("header.tsv", b"x\ty\n", "holds a header line but no data"),
    ("nan.csv", b"1,2\n3,nan\n", "line 2 (point 2) holds NaN or an infinite value"),
    # the line of the file, not the point, after a header and a comment
    ("header-inf.csv", b"x,y\n# a comment\n1,2\n3,4\n-inf,0\n",
     "line 5 (point 3) holds NaN or an infinite value"),
    ("binary.csv", b"\xff\xfe\x00\x01", "not a text file"),
    ("semicolons.csv", b"x;y\n1.5;2\n", "line 2: '1.5;2' is not a number; fields separated "
                                       "by ';' are not read: radref reads commas, tabs or "
                                       "spaces; with decimal points in the numbers, replace "
                                       "each ';' by ','"),
]


@pytest.mark.parametrize("name,content,fragment", BAD_TEXT)
def test_bad_text_files(trained, tmp_path, capsys, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    status, _, err = _run(capsys, ["score", "--model", str(trained["rad"]), "--data", str(path)])
    _assert_user_error(status, err, f"--data {path}: {fragment}")


BAD_NPY = [
    ("obj.npy", np.array([{"a": 1}], dtype=object), "holds Python objects, not numbers"),
    ("flat.npy", np.ones(5), "holds an array of shape (5,)"),
    ("cube.npy", np.ones((2, 2, 2)), "holds an array of shape (2, 2, 2)"),
    ("complex.npy", np.ones((2, 2), dtype=complex), "holds complex128 values, not real numbers"),
    ("bool.npy", np.ones((2, 2), dtype=bool), "holds bool values, not real numbers"),
    ("inf.npy", np.array([[0.0, 1.0], [np.inf, 0.0]]), "point 2 (row 2) holds NaN"),
    ("named.npy", np.zeros(3, dtype=[("x", float), ("y", float)]), "holds a structured array"),
    ("empty.npy", np.zeros((0, 2)), "holds no points"),
]


@pytest.mark.parametrize("name,array,fragment", BAD_NPY)
def test_bad_npy_files(trained, tmp_path, capsys, name, array, fragment):
    path = tmp_path / name
    np.save(path, array, allow_pickle=True)
    status, _, err = _run(capsys, ["score", "--model", str(trained["rad"]), "--data", str(path)])
    _assert_user_error(status, err, f"--data {path}: {fragment}")


def test_bad_extensions_and_outputs(trained, tmp_path, capsys):
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((3, 2)))
    json = tmp_path / "x.json"
    json.write_text("[[1, 2]]")
    fake = tmp_path / "fake.npy"
    fake.write_text("1,2\n")
    for argv, fragment in (
            (["score", "--model", str(trained["rad"]), "--data", str(json)],
             f"--data {json}: unknown kind of file"),
            (["score", "--model", str(trained["rad"]), "--data", str(fake)],
             f"--data {fake}: not a .npy array file"),
            (["score", "--model", str(trained["rad"]), "--data", str(trained["realnvp"])],
             "a zip archive (a radref model?)"),
            (["score", "--model", str(trained["rad"]), "--data", str(data),
              "--out", str(tmp_path / "s.json")], "must end in .npy, .csv, .tsv or .txt"),
            (["sample", "--model", str(trained["rad"]), "--out", str(tmp_path / "no" / "s.npy")],
             "does not exist"),
            (["train", "--out", str(tmp_path / "m.csv")] + TINY, "--out"),
            (["train", "--out", str(tmp_path / "m.npz"), "--checkpoint", "-"] + TINY,
             "--checkpoint -"),
            (["demo", "--figure", str(tmp_path / "d.pdf")], "--figure"),
            (["data", "ring", "--out", str(tmp_path)], "is a directory")):
        status, _, err = _run(capsys, argv)
        _assert_user_error(status, err, fragment)
    assert sorted(os.listdir(tmp_path)) == ["fake.npy", "x.json", "x.npy"]


def test_wrong_number_of_columns(trained, tmp_path, capsys):
    three = tmp_path / "three.csv"
    _save(three, np.ones((5, 3)))
    for model in ("rad", "realnvp"):
        status, _, err = _run(capsys, ["score", "--model", str(trained[model]),
                                       "--data", str(three)])
        _assert_user_error(status, err, f"--data {three} has 3 columns, but the model in "
                                        f"--model {trained[model]} was trained on 2-column data")
    one = tmp_path / "one.csv"
    _save(one, np.arange(10.0)[:, None])
    status, _, err = _run(capsys, ["train", "--data", str(one), "--out", str(tmp_path / "m.npz"),
                                   "--steps", "1", "--quiet"])
    _assert_user_error(status, err, f"--data {one} has 1 column")
    val = tmp_path / "val.csv"
    _save(val, np.ones((5, 3)))
    status, _, err = _run(capsys, ["train", "--val", str(val), "--out", str(tmp_path / "m.npz")]
                          + TINY)
    _assert_user_error(status, err, f"--val {val} has 3 columns, --problem two_moons has 2")


def test_damaged_models(trained, tmp_path, capsys):
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((3, 2)))
    raw = trained["rad"].read_bytes()
    flipped = bytearray(raw)
    # a byte of the first array's numbers (not the middle of the file: a flip in
    # a zip64 extra field of a local header, which readers ignore, damages nothing)
    flipped[raw.find(b"\x93NUMPY") + 150] ^= 0xFF
    for name, damaged in (("flipped.npz", bytes(flipped)), ("truncated.npz", raw[:len(raw) // 2])):
        path = tmp_path / name
        path.write_bytes(damaged)
        status, _, err = _run(capsys, ["score", "--model", str(path), "--data", str(data)])
        _assert_user_error(status, err, f"--model {path}: ")
        status, _, err = _run(capsys, ["sample", "--model", str(path),
                                       "--out", str(tmp_path / "s.npy")])
        _assert_user_error(status, err, f"--model {path}: ")
    assert not (tmp_path / "s.npy").exists()


@pytest.mark.parametrize("argv,fragment", [
    (["sample", "-n", "0"], "-n must be >= 1, got 0"),
    (["train", "--steps", "0"], "--steps must be >= 1, got 0"),
    (["train", "--layers", "0"], "--layers must be >= 1, got 0"),
    (["train", "--hidden", "-2"], "--hidden must be >= 1, got -2"),
    (["train", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["train", "--eval-every", "0"], "--eval-every must be >= 1, got 0"),
    (["train", "--checkpoint-every", "0"], "--checkpoint-every must be >= 1, got 0"),
    (["train", "-n", "0"], "-n must be >= 1, got 0"),
    (["train", "--lr", "-1"], "--lr must be a finite number > 0"),
    (["train", "--lr", "inf"], "--lr must be a finite number > 0"),
    (["train", "--model", "realnvp", "--gate-hidden", "3"],
     "--gate-hidden applies to --model rad only"),
    (["train", "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["data", "ring", "-n", "0"], "-n must be >= 1, got 0"),
    (["demo", "--n-train", "0"], "--n-train must be >= 1, got 0"),
    (["demo", "--rad-steps", "0"], "--rad-steps must be >= 1, got 0"),
    (["plot", "-n", "0"], "-n must be >= 1, got 0"),
])
def test_bad_numbers_name_the_flag(trained, tmp_path, capsys, monkeypatch, argv, fragment):
    monkeypatch.setattr(RadFlow, "fit", lambda *a, **k: pytest.fail("training started"))
    monkeypatch.setattr(RealNVPFlow, "fit", lambda *a, **k: pytest.fail("training started"))
    command, rest = argv[0], argv[1:]
    extra = {"sample": ["--model", str(trained["rad"]), "--out", str(tmp_path / "s.npy")],
             "train": ["--out", str(tmp_path / "m.npz"), "--quiet"],
             "data": ["--out", str(tmp_path / "d.csv")],
             "demo": ["--figure", "", "--quiet"],
             "plot": [str(trained["rad"]), "--out", str(tmp_path / "p.png")]}[command]
    status, _, err = _run(capsys, [command] + rest + extra)
    _assert_user_error(status, err, fragment)
    assert os.listdir(tmp_path) == []


def test_training_that_diverges_names_the_row(tmp_path, capsys):
    data = tmp_path / "far.csv"
    _save(data, np.array([[1e200, 0.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]))
    status, _, err = _run(capsys, ["train", "--data", str(data), "--out", str(tmp_path / "m.npz"),
                                   "--steps", "2", "--batch-size", "4", "--quiet"])
    assert status == 2 and "training stopped: non-finite value at training step 1" in err
    assert f"that is row 1 of --data {data}" in err
    assert not (tmp_path / "m.npz").exists()


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["train"], ["score", "--model", "m.npz"], ["train", "--model", "gan",
                                                                "--out", "m.npz"],
                 ["sample", "--model", "m.npz", "--out", "s.npy", "-n", "many"], ["frobnicate"],
                 ["data", "moons", "--out", "x.csv"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err


# ------------------------------------ the real entry point on a terminal



def _spawn_on_a_terminal(argv, columns=100):
    """Start ``python -m radref ARGV`` with a pseudo-terminal as its controlling
    terminal (stdin, stdout and stderr); returns (pid, master fd)."""
    import fcntl
    import struct
    import termios
    pid, fd = pty.fork()
    if pid == 0:  # the child
        try:
            # a shell starts a background job (pytest ... &) with SIGINT ignored,
            # and the child would inherit that: a user's terminal delivers it
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execve(sys.executable, [sys.executable, "-m", "radref"] + argv, ENV)
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    return pid, fd


def _read_until(fd, pattern, timeout=120.0):
    """Bytes read from ``fd`` up to and including the first match of ``pattern``
    (or to the end of the output when ``pattern`` is None)."""
    import select
    import time
    data, deadline = b"", time.monotonic() + timeout
    while pattern is None or not re.search(pattern, data):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {pattern!r}; got {data!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            assert pattern is None, f"output ended before {pattern!r}: {data!r}"
            break
        data += chunk
    return data


def _exit_status(pid):
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _screen(output):
    """The lines a terminal shows for ``output``: carriage return, erase to
    end of line (ESC [ K) and newline interpreted; anything else is text."""
    lines, line, column = [], [], 0
    for token in re.findall(r"\x1b\[K|\r\n|\r|\n|[^\r\n\x1b]+|\x1b", output):
        if token == "\x1b[K":
            del line[column:]
        elif token == "\r":
            column = 0
        elif token in ("\n", "\r\n"):  # the terminal turns \n into \r\n
            lines.append("".join(line))
            line, column = [], 0
        else:
            line[column:column + len(token)] = token
            column += len(token)
    if line:
        lines.append("".join(line))
    return lines


PROGRESS_LINE = (r"(?:Rad|Real NVP)  step (\d+)/(\d+)  loglik [+-]\d+\.\d{4} \(smoothed\)"
                 r"(  held-out [+-]\d+\.\d{4})?(  \d+(\.\d+)? steps/s  ETA \d+[hms0-9]*)?")


def _train_on_a_terminal(tmp_path, columns):
    val = tmp_path / "val.csv"
    _save(val, datasets.sample("two_moons", 300, random_state=5))
    pid, fd = _spawn_on_a_terminal(["train", "--layers", "2", "--hidden", "4", "-n", "1000",
                                    "--batch-size", "100", "--steps", "1500", "--val", str(val),
                                    "--eval-every", "100", "--out", str(tmp_path / "m.npz")],
                                   columns=columns)
    output = _read_until(fd, None).decode()
    assert _exit_status(pid) == 0, output
    return output


def test_progress_redraws_one_clean_line_on_a_terminal(tmp_path):
    output = _train_on_a_terminal(tmp_path, columns=100)
    assert output.count("\x1b[K") >= 2, output  # redrawn in place, each time cleared to the end
    screen = _screen(output)
    progress = [line for line in screen if line.startswith("Rad  step")]
    assert len(progress) == 1, screen  # one line, redrawn: no scroll of progress lines
    assert re.fullmatch(PROGRESS_LINE, progress[0]), progress[0]  # no stray characters
    assert progress[0].startswith("Rad  step 1500/1500") and "held-out" in progress[0]
    assert len(progress[0]) < 100  # never as wide as the terminal: it would wrap
    assert screen[-1].startswith("trained RadFlow on 1000 points for 1500 steps")
    # every state the line went through was a whole progress line too
    for text in re.split(r"\r|\x1b\[K", output.split("trained")[0]):
        if text.strip("\n"):
            assert re.fullmatch(PROGRESS_LINE, text.strip("\n")), text


def test_progress_is_cut_to_the_width_of_a_narrow_terminal(tmp_path):
    # a line as wide as the terminal wraps, and "\r" then redraws only its
    # second half: every state of the line must fit
    output = _train_on_a_terminal(tmp_path, columns=40)
    states = [text for text in re.split(r"\r|\x1b\[K", output.split("trained")[0])
              if text.strip("\n")]
    assert len(states) >= 2
    for text in states:
        assert len(text) <= 39 and text.startswith("Rad  step "), text
    assert len([line for line in _screen(output) if line.startswith("Rad  step")]) == 1


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(tmp_path):
    result = subprocess.run([sys.executable, "-m", "radref", "train", "--layers", "2",
                             "--hidden", "4", "-n", "500", "--batch-size", "100", "--steps",
                             "200", "--out", str(tmp_path / "m.npz")],
                            capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    steps = [int(re.fullmatch(PROGRESS_LINE, line).group(1))
             for line in result.stderr.splitlines()]
    # one line at every tenth of the run, and one a second in if the machine
    # is so slow that the first tenth takes longer
    tenths = [20 * i for i in range(1, 11)]
    assert steps == tenths or (steps[1:] == tenths and steps[0] < 20), steps
    assert result.stdout.startswith("trained RadFlow")


CTRL_C_STEPS = 2500
CTRL_C_RUN = ["train", "--layers", "2", "--hidden", "4", "-n", "1000", "--batch-size", "100",
              "--steps", str(CTRL_C_STEPS), "--seed", "3"]


@pytest.fixture(scope="module")
def uninterrupted():
    """The model of CTRL_C_RUN trained without interruption (by the Python API,
    which the CLI must match bit for bit)."""
    return RadFlow(n_layers=2, hidden=4, steps=CTRL_C_STEPS, batch_size=100, random_state=3).fit(
        datasets.sample("two_moons", 1000, random_state=3))


@pytest.mark.parametrize("own_checkpoint", [False, True])
def test_ctrl_c_saves_prints_the_resume_command_and_exits_130(tmp_path, own_checkpoint,
                                                              uninterrupted):
    out = tmp_path / "m.npz"
    argv = CTRL_C_RUN + ["--out", str(out)]
    if own_checkpoint:
        argv += ["--checkpoint", str(tmp_path / "mine.npz"), "--checkpoint-every", "1000000"]
    pid, fd = _spawn_on_a_terminal(argv)
    before = _read_until(fd, rb"step \d+/%d" % CTRL_C_STEPS)
    os.write(fd, b"\x03")  # Ctrl-C, typed on the terminal: SIGINT to the foreground process
    output = (before + _read_until(fd, None)).decode()
    assert _exit_status(pid) == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    checkpoint = tmp_path / ("mine.npz" if own_checkpoint else "m.checkpoint.npz")
    step = int(re.search(rf"interrupted after step (\d+) of {CTRL_C_STEPS}", output).group(1))
    assert 1 <= step < CTRL_C_STEPS
    assert f"the training state is saved in {checkpoint}" in output
    assert load_model(checkpoint).n_steps_ == step and not out.exists()
    # the printed command resumes, and the result is the uninterrupted run's
    command = output.split("resume with:")[1].strip().splitlines()[0]
    words = shlex.split(command)
    assert words[0] == "radref" and words[-2:] == ["--checkpoint", str(checkpoint)]
    resumed = subprocess.run([sys.executable, "-m", "radref"] + words[1:] + ["--quiet"],
                             capture_output=True, text=True, env=ENV, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"(resumed from {checkpoint} at step {step})" in resumed.stdout
    final = load_model(out)
    assert final.n_steps_ == CTRL_C_STEPS
    for name, value in uninterrupted.parameters().items():
        assert final.parameters()[name].tobytes() == value.tobytes(), name


def test_demo_figure_one_scale_one_data_panel_scores_in_titles():
    import matplotlib.pyplot as plt
    from matplotlib.collections import QuadMesh

    from radref.user.plots import demo_figure
    X_train, X_test = datasets.train_test_split_samples("two_moons", 500, 300, random_state=0)
    models = {"Rad": RadFlow(n_layers=2, hidden=4, steps=30, random_state=0).fit(X_train),
              "Real NVP": RealNVPFlow(n_layers=2, hidden=4, steps=30, random_state=0).fit(X_train)}
    scores = {name: model.score(X_test) for name, model in models.items()}
    fig = demo_figure(X_test, models, scores, best=-1.0,
                      log_density=lambda X: datasets.log_density("two_moons", X), n_samples=300)
    try:
        colorbars = [child for ax in fig.axes for child in [ax, *ax.child_axes]
                     if hasattr(child, "_colorbar")]
        assert len(colorbars) == 1
        meshes = [c for ax in fig.axes if ax not in colorbars for c in ax.collections
                  if isinstance(c, QuadMesh)]
        assert len(meshes) == 3  # true density and both models'
        assert len({(m.norm.vmin, m.norm.vmax) for m in meshes}) == 1 and meshes[0].norm.vmin == 0
        titles = [ax.get_title() for ax in fig.axes]
        assert sum(title.startswith("data") for title in titles) == 1
        for name, score in scores.items():
            assert f"{name} density: held-out {score:+.3f} nats" in titles
        assert "true density: best possible -1.000 nats" in titles
    finally:
        plt.close(fig)


def test_a_file_that_cannot_be_written_names_the_flag(tmp_path, capsys, monkeypatch):
    # (the tests run as root, for whom permissions do not apply: the OS error
    # is raised by hand where the file is written)
    def refuse(self, path):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(RadFlow, "save", refuse)
    out = tmp_path / "m.npz"
    status, _, err = _run(capsys, ["train", "--out", str(out)] + TINY)
    _assert_user_error(status, err, f"--out {out}: cannot write (Permission denied)")


def test_progress_smoothing_rate_and_eta_computed_by_hand():
    from radref.training.progress import TrainingProgress, format_duration
    now = [0.0]
    stream = io.StringIO()
    display = TrainingProgress(1000, start=0, mode="lines", stream=stream, clock=lambda: now[0])
    for step in range(1, 1001):
        now[0] = 0.01 * step  # 100 steps per second
        display.update(step, 0.5 + 2.0 * (-1) ** step)  # a minibatch value jumping by 4 nats
        assert display.smoothed == pytest.approx(_smoothed_by_formula(step), abs=1e-12)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10  # the first tenth takes exactly the first second: no extra line
    assert lines[0] == f"step 100/1000  loglik {_smoothed_by_formula(100):+.4f} (smoothed)  100 steps/s  ETA 9s"
    assert lines[-1].startswith("step 1000/1000") and lines[-1].endswith("ETA 0s")
    assert (format_duration(42.4), format_duration(65), format_duration(7260)) == (
        "42s", "1m05s", "2h01m")


def test_progress_lines_start_within_a_second_and_name_the_model():
    # a slow run (3 steps a second): the first tenth would take 100 s; the
    # log says a second in that training has started, then every tenth
    from radref.training.progress import TrainingProgress
    now = [0.0]
    stream = io.StringIO()
    display = TrainingProgress(3000, start=0, mode="lines", stream=stream,
                               clock=lambda: now[0], label="Real NVP")
    for step in range(1, 3001):
        now[0] = step / 3.0
        display.update(step, -1.0)
    steps = [int(re.fullmatch(PROGRESS_LINE, line).group(1))
             for line in stream.getvalue().splitlines()]
    assert steps == [3] + [300 * i for i in range(1, 11)]


def test_progress_in_a_jupyter_kernel_is_one_output_updated_in_place():
    # A real kernel runs a cell that fits a model with the default progress:
    # the executed notebook holds one display output (the last state), with
    # an HTML progress bar, and nothing on stderr.
    import nbclient  # the test extra has them (through the docs extra)
    import nbformat
    code = ("import numpy as np, radref\n"
            "X = np.random.default_rng(0).normal(size=(300, 2))\n"
            "m = radref.RealNVPFlow(n_layers=2, hidden=4, steps=400, batch_size=100, "
            "random_state=0).fit(X, X_val=X[:50])\n"
            "print('done')")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    outputs = notebook.cells[0].outputs
    displays = [o for o in outputs if o.output_type == "display_data"]
    assert len(displays) == 1, outputs  # updated in place: not a scroll of outputs
    html, text = displays[0].data["text/html"], displays[0].data["text/plain"]
    assert '<progress value="400" max="400"' in html
    assert re.fullmatch(PROGRESS_LINE, text) and text.startswith("Real NVP  step 400/400"), text
    assert [o.text for o in outputs if o.output_type == "stream"] == ["done\n"]


def _smoothed_by_formula(step):
    """The mean of 0.5 + 2 (-1)^i over the last 100 steps i <= step (fewer at
    first): 0.5 for an even count, 0.5 - 2/m for an odd count m ending at an odd
    step, 0.5 + 2/m ending at an even one."""
    m = min(step, 100)
    if m % 2 == 0:
        return 0.5
    return 0.5 + 2.0 / m * (1 if step % 2 == 0 else -1)


def test_progress_forgets_the_first_steps_after_its_window():
    # data far from the base's scale: the first minibatches score -1e8 nats;
    # 100 steps later the display shows the current values only
    from radref.training.progress import TrainingProgress
    display = TrainingProgress(1000, mode=None, stream=io.StringIO())
    for step in range(1, 301):
        display.update(step, -1e8 if step <= 10 else -7.25)
        if step == 50:
            assert display.smoothed == pytest.approx((10 * -1e8 + 40 * -7.25) / 50)
    assert display.smoothed == -7.25


def test_check_port_given_a_directory_asks_for_the_result_file(capsys, tmp_path):
    # `radref golden --where` prints a directory; passing it as PORT is a natural slip
    status, _, err = _run(capsys, ["check-port", str(tmp_path)])
    _assert_user_error(status, err)
    assert err == (f"radref: error: PORT {tmp_path}: is a directory; pass your port's result "
                   f"file (JSON in the golden schema, docs/golden.md)\n")


# ------------------------------------------------------- the training recipe

def test_train_recipe_options_give_the_api_model(tmp_path, capsys):
    # Each option is the constructor parameter of the same name: the CLI's
    # model is the API's, bit for bit, and the summary reports early stopping.
    path = tmp_path / "m.npz"
    status, out, _ = _run(capsys, [
        "train", "--out", str(path), "--lr-schedule", "cosine", "--lr-final-fraction", "0.1",
        "--ema-decay", "0.9", "--early-stopping", "--validation-fraction", "0.2",
        "--n-iter-no-change", "2", "--eval-every", "5"] + TINY)
    assert status == 0
    api = RadFlow(steps=20, batch_size=100, random_state=0, eval_every=5,
                  lr_schedule="cosine", lr_final_fraction=0.1, ema_decay=0.9,
                  early_stopping=True, validation_fraction=0.2, n_iter_no_change=2).fit(
        datasets.sample("two_moons", 600, random_state=0))
    loaded = load_model(path)
    for name, value in api.params_.items():
        assert loaded.params_[name].tobytes() == value.tobytes(), name
    assert f"kept the parameters of step {api.best_step_} " in out
    assert f"{api.best_validation_score_:+.4f} nats" in out


def test_train_cosine_resumed_with_its_decay_horizon_is_one_fit(tmp_path, capsys):
    # Training in two runs with --lr-decay-steps set to the final --steps
    # equals one run of that many steps (the decay spans the whole).
    common = ["--layers", "2", "--hidden", "4", "-n", "500", "--batch-size", "100", "--quiet",
              "--lr-schedule", "cosine", "--ema-decay", "0.8"]
    checkpoint = tmp_path / "state.npz"
    assert main(["train", "--steps", "12", "--lr-decay-steps", "30", "--checkpoint",
                 str(checkpoint), "--out", str(tmp_path / "a.npz")] + common) == 0
    assert main(["train", "--steps", "30", "--lr-decay-steps", "30", "--checkpoint",
                 str(checkpoint), "--out", str(tmp_path / "resumed.npz")] + common) == 0
    assert main(["train", "--steps", "30", "--out", str(tmp_path / "whole.npz")] + common) == 0
    resumed, whole = load_model(tmp_path / "resumed.npz"), load_model(tmp_path / "whole.npz")
    for name, value in whole.params_.items():
        assert resumed.params_[name].tobytes() == value.tobytes(), name
    capsys.readouterr()


@pytest.mark.parametrize("argv, fragment", [
    (["--lr-final-fraction", "0.1"], "--lr-final-fraction applies to --lr-schedule cosine only"),
    (["--lr-schedule", "cosine", "--lr-step-size", "5"],
     "--lr-step-size applies to --lr-schedule step only"),
    (["--lr-decay-steps", "5"], "--lr-decay-steps applies to --lr-schedule cosine only"),
    (["--validation-fraction", "0.2"], "--validation-fraction applies with --early-stopping"),
    (["--ema-decay", "0"], "--ema-decay must be in (0, 1), got 0"),
    (["--lr-schedule", "step", "--lr-gamma", "2"], "--lr-gamma"),
    (["--lr-schedule", "cosine", "--lr-final-fraction", "-1"], "--lr-final-fraction"),
    (["--early-stopping", "--n-iter-no-change", "0"], "--n-iter-no-change"),
])
def test_train_recipe_option_errors(tmp_path, capsys, argv, fragment):
    status, _, err = _run(capsys, ["train", "--out", str(tmp_path / "m.npz")] + TINY + argv)
    _assert_user_error(status, err, fragment)
    assert not os.path.exists(tmp_path / "m.npz")


def test_train_checkpoint_errors_name_what_differs(tmp_path, capsys):
    common = ["--layers", "2", "--hidden", "4", "-n", "300", "--batch-size", "100", "--quiet"]
    checkpoint = str(tmp_path / "c.npz")
    out = ["--out", str(tmp_path / "m.npz")]
    assert main(["train", "--steps", "10", "--lr-schedule", "cosine", "--checkpoint",
                 checkpoint] + out + common) == 0
    capsys.readouterr()
    out.append("--overwrite")  # the trained model of the first run may be replaced
    # more steps without --lr-decay-steps: another decay
    status, _, err = _run(capsys, ["train", "--steps", "30", "--lr-schedule", "cosine",
                                   "--checkpoint", checkpoint] + out + common)
    _assert_user_error(status, err, "--lr-decay-steps 10 there, 30 now",
                       "needs the same --lr-decay-steps")
    status, _, err = _run(capsys, ["train", "--steps", "20", "--lr", "0.01", "--lr-schedule",
                                   "cosine", "--lr-decay-steps", "10", "--checkpoint", checkpoint]
                          + out + common)
    assert err.startswith("radref: warning: --lr-decay-steps 10 < --steps 20")
    _assert_user_error(status, err.split("\n", 1)[1],
                       f"--checkpoint {checkpoint}: written by another run",
                       "(other settings: --lr 0.005 there, 0.01 now)")
    assert not (tmp_path / "m.checkpoint.npz").exists()  # nor a copy of it left behind
    # the same steps: the finished run has nothing to train
    status, _, err = _run(capsys, ["train", "--steps", "10", "--lr-schedule", "cosine",
                                   "--checkpoint", checkpoint] + out + common)
    _assert_user_error(status, err, "a finished run of 10 steps, nothing to train")
    # fewer steps than the checkpoint holds
    status, _, err = _run(capsys, ["train", "--steps", "5", "--lr-schedule", "cosine",
                                   "--checkpoint", checkpoint] + out + common)
    _assert_user_error(status, err, "holds 10 steps, more than --steps 5")


def test_train_early_stopping_summary_and_errors(tmp_path, capsys):
    status, out, _ = _run(capsys, ["train", "--out", str(tmp_path / "m.npz"), "--early-stopping",
                                   "--eval-every", "5"] + TINY)
    assert status == 0
    assert "trained RadFlow on 540 of the 600 points (60 set aside for early stopping)" in out
    status, _, err = _run(capsys, ["train", "--out", str(tmp_path / "m1.npz"), "-n", "1",
                                   "--early-stopping"])
    _assert_user_error(status, err, "--early-stopping needs at least 2 training points",
                       "-n 1")


@pytest.mark.parametrize("argv, warning", [
    (["--lr-schedule", "cosine", "--lr-decay-steps", "15"],
     "--lr-decay-steps 15 < --steps 20: the last 5 steps run at the final rate"),
    (["--lr-schedule", "step"], "--lr-step-size 1000 >= --steps 20: the rate never decays"),
    (["--early-stopping", "--eval-every", "20"],
     "--eval-every 20 >= --steps 20: early stopping scores its split only at the end"),
])
def test_train_warns_about_recipe_options_that_do_nothing(tmp_path, capsys, argv, warning):
    status, _, err = _run(capsys, ["train", "--out", str(tmp_path / "m.npz")] + TINY + argv)
    assert status == 0 and f"radref: warning: {warning}" in err


def test_train_recipe_without_idle_options_has_no_warning(tmp_path, capsys):
    status, _, err = _run(capsys, ["train", "--out", str(tmp_path / "m.npz"), "--lr-schedule",
                                   "step", "--lr-step-size", "5", "--early-stopping",
                                   "--eval-every", "5"] + TINY)
    assert status == 0 and err == ""


def test_help_never_offers_python_spellings(capsys):
    """A new user read "(None: fresh entropy)" and typed --seed None: the command
    line says "omitted" for what Python spells None; check-port's help states the
    measure it applies (with the magnitude M, docs/golden.md §5)."""
    for command in ("train", "reproduce"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        # (an option whose help states its default says it once: "(default: --hidden)")
        assert "None:" not in out and not re.search(r"\bNone\b", out), command
    with pytest.raises(SystemExit):
        main(["check-port", "--help"])
    assert "max(|golden|, M) + S" in " ".join(capsys.readouterr().out.split())


# ------------------------------------------------- existing outputs are kept

def _commands_writing(trained, tmp_path, out):
    """Each command that writes a file the user names, writing ``out``."""
    data = tmp_path / "points.csv"
    if not data.exists():
        _save(data, datasets.sample("two_moons", 50, random_state=3))
    png = out.with_suffix(".png")
    return {
        "data": (["data", "ring", "-n", "20", "--out", str(out)], out),
        "sample": (["sample", "--model", str(trained["rad"]), "-n", "20", "--out", str(out)],
                   out),
        "score": (["score", "--model", str(trained["rad"]), "--data", str(data), "--out",
                   str(out)], out),
        "train": (["train", "--out", str(out.with_suffix(".npz"))] + TINY,
                  out.with_suffix(".npz")),
        "plot": (["plot", str(trained["rad"]), "-n", "100", "--out", str(png)], png),
        "demo": (["demo", "--rad-steps", "5", "--realnvp-steps", "5", "--n-train", "200",
                  "--n-test", "100", "--quiet", "--figure", str(png)], png),
    }


@pytest.mark.parametrize("command", ["data", "sample", "score", "train", "plot", "demo"])
def test_an_existing_output_is_kept_unless_overwrite(trained, tmp_path, capsys, command):
    argv, target = _commands_writing(trained, tmp_path, tmp_path / "out.csv")[command]
    target.write_bytes(b"the user's own file\n")
    status, out, err = _run(capsys, argv)
    _assert_user_error(status, err, f"{target}: exists", "--overwrite")
    assert out == ""  # refused before any work (the demo trains nothing)
    assert target.read_bytes() == b"the user's own file\n"
    status, _, err = _run(capsys, argv + ["--overwrite"])
    assert status == 0, err
    assert target.read_bytes() != b"the user's own file\n"


def test_demo_replaces_its_own_default_figure(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["demo", "--rad-steps", "5", "--realnvp-steps", "5", "--n-train", "200",
            "--n-test", "100", "--quiet"]
    status, out, err = _run(capsys, argv)
    assert status == 0, err
    assert "figure written to radref-demo.png\n" in out
    first = (tmp_path / "radref-demo.png").read_bytes()
    status, out, err = _run(capsys, argv + ["--seed", "1"])
    assert status == 0, err
    assert "figure written to radref-demo.png (replacing the previous one)" in out
    second = (tmp_path / "radref-demo.png").read_bytes()
    assert second[:8] == b"\x89PNG\r\n\x1a\n" and second != first
    # a file of that name that the demo did not write is the user's: kept
    for other in (b"my notes\n", first.replace(b"radref demo", b"someone else")):
        (tmp_path / "radref-demo.png").write_bytes(other)
        status, out, err = _run(capsys, argv)
        _assert_user_error(status, err, "--figure radref-demo.png: exists", "--overwrite")
        assert (tmp_path / "radref-demo.png").read_bytes() == other
    status, out, err = _run(capsys, argv + ["--overwrite"])
    assert status == 0 and (tmp_path / "radref-demo.png").read_bytes()[:4] == b"\x89PNG"


def test_an_output_created_while_radref_works_is_kept(trained, tmp_path, capsys, monkeypatch):
    # another process creates --out after the check and before the write:
    # the write must not replace it (a hard link refuses an existing name)
    from radref.user import datafiles
    target = tmp_path / "late.csv"
    real = datafiles.atomic_write

    def appearing(path, *args, **kwargs):
        target.write_bytes(b"written meanwhile")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(datafiles, "atomic_write", appearing)
    status, _, err = _run(capsys, ["data", "ring", "-n", "20", "--out", str(target)])
    _assert_user_error(status, err, "exists", "appeared while radref worked; it is unchanged")
    assert target.read_bytes() == b"written meanwhile"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.csv"]  # no temporary left


def test_train_warns_when_val_is_the_training_data(tmp_path, capsys):
    data = tmp_path / "x.csv"
    _save(data, datasets.sample("ring", 600, random_state=0))
    copy = tmp_path / "copy.csv"
    copy.write_bytes(data.read_bytes())
    for val in (data, copy):  # the same file, or a copy of it
        status, _, err = _run(capsys, ["train", "--data", str(data), "--val", str(val),
                                       "--out", str(tmp_path / f"m-{val.stem}.npz"),
                                       "--steps", "5", "--batch-size", "100", "--quiet"])
        assert status == 0
        assert f"radref: warning: --val {val} holds the training points themselves" in err
    other = tmp_path / "other.csv"
    _save(other, datasets.sample("ring", 600, random_state=1))
    status, _, err = _run(capsys, ["train", "--data", str(data), "--val", str(other), "--out",
                                   str(tmp_path / "m.npz"), "--steps", "5", "--batch-size",
                                   "100", "--quiet"])
    assert status == 0 and "warning" not in err


def test_train_warns_when_the_data_are_fewer_numbers_than_parameters(tmp_path, capsys):
    data = tmp_path / "two.csv"
    _save(data, np.array([[0.0, 1.0], [1.0, 0.5]]))
    status, _, err = _run(capsys, ["train", "--data", str(data), "--out", str(tmp_path / "a.npz"),
                                   "--steps", "3", "--quiet"])
    params = load_model(tmp_path / "a.npz").n_parameters()
    assert status == 0 and params > 4
    assert (f"radref: warning: 2 training points of 2 coordinates are fewer numbers than the "
            f"model's {params} parameters") in err
    # enough points for the model's size: no warning
    status, out, err = _run(capsys, ["train", "--out", str(tmp_path / "b.npz"), "--layers", "2",
                                     "--hidden", "2", "--gate-hidden", "2"] + TINY)
    assert status == 0 and "warning" not in out + err


def test_an_interrupted_runs_state_is_never_replaced_by_another(tmp_path, capsys):
    from radref.user.cli_train import unused_checkpoint_name
    out = tmp_path / "m.npz"
    assert unused_checkpoint_name(str(out)) == str(tmp_path / "m.checkpoint.npz")
    (tmp_path / "m.checkpoint.npz").write_bytes(b"state of an interrupted run")
    assert unused_checkpoint_name(str(out)) == str(tmp_path / "m.checkpoint-2.npz")
    (tmp_path / "m.checkpoint-2.npz").write_bytes(b"and of another")
    assert unused_checkpoint_name(str(out)) == str(tmp_path / "m.checkpoint-3.npz")
    # a run that starts afresh says that an earlier state is there, and keeps it
    status, _, err = _run(capsys, ["train", "--out", str(out)] + TINY)
    assert status == 0
    assert (f"radref: warning: {tmp_path / 'm.checkpoint.npz'} holds the state of an "
            f"interrupted run; this run starts afresh and keeps it (to resume that run "
            f"instead, add --checkpoint {tmp_path / 'm.checkpoint.npz'})") in err
    assert (tmp_path / "m.checkpoint.npz").read_bytes() == b"state of an interrupted run"


def test_checkpoint_equal_to_out_names_both(tmp_path, capsys):
    out = tmp_path / "m.npz"
    status, _, err = _run(capsys, ["train", "--out", str(out), "--checkpoint",
                                   str(tmp_path / "." / "m.npz")] + TINY)
    _assert_user_error(status, err, f"--checkpoint {tmp_path / '.' / 'm.npz'}: is --out {out}")


def test_a_reader_closing_the_pipe_ends_the_command_with_141(trained):
    process = subprocess.Popen([sys.executable, "-m", "radref", "sample", "--model",
                                str(trained["rad"]), "-n", "200000", "--out", "-"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    assert process.stdout.readline().count(b",") == 1  # one point read, as head -1 does
    process.stdout.close()
    _, err = process.communicate(timeout=300)
    assert process.returncode == 141 and err == b""


def test_score_prints_a_huge_mean_in_exponent_form(trained, tmp_path, capsys):
    far = tmp_path / "far.csv"
    _save(far, np.full((4, 2), 1e12))
    status, out, err = _run(capsys, ["score", "--model", str(trained["realnvp"]), "--data",
                                     str(far)])
    assert status == 0, err
    assert re.fullmatch(r"mean log-likelihood -\d\.\d{6}e\+\d\d nats over 4 points\n", out), out


def test_a_pandas_index_column_is_named_in_a_warning(trained, tmp_path, capsys):
    indexed = tmp_path / "indexed.csv"
    indexed.write_text(",x,y\n0,0.5,1.5\n1,0.25,-1\n2,1,0\n")
    status, out, err = _run(capsys, ["score", "--model", str(trained["rad"]), "--data",
                                     str(indexed)])
    # three columns for a 2-D model: the error, after the warning that explains it
    assert status == 2 and "has 3 columns" in err
    assert err.startswith(f"radref: warning: --data {indexed}: the header names every column "
                          f"but the first, as in a file pandas wrote with its index")
    named = tmp_path / "named.csv"
    named.write_text("x,y\n0.5,1.5\n0.25,-1\n")
    status, _, err = _run(capsys, ["score", "--model", str(trained["rad"]), "--data", str(named)])
    assert status == 0 and "warning" not in err


def test_a_finished_model_trains_further_as_a_checkpoint(tmp_path, capsys):
    # api.md, "Training a finished model further"
    first, further = tmp_path / "model.npz", tmp_path / "model-40.npz"
    assert main(["train", "--out", str(first)] + TINY) == 0
    steps = TINY[TINY.index("--steps") + 1]
    argv = ["train", "--checkpoint", str(first), "--out", str(further)] + TINY
    argv[argv.index("--steps") + 1] = str(2 * int(steps))
    status, out, err = _run(capsys, argv)
    assert status == 0, err
    assert f"(continued from the finished run in {first}, step {steps}; {first} is not " \
           f"changed)" in out
    assert load_model(further).n_steps_ == 2 * int(steps)
    assert load_model(first).n_steps_ == int(steps)  # the finished model is read, not changed


@pytest.mark.parametrize("start, summary", [
    (-100.0, "note: training diverged at step 50 (see the warning above) and recovered: the "
             "saved model scores"),
    (50.0, "warning: this training run diverged (from step 50, see the warning above): the "
           "saved model is not a usable fit")])
def test_train_summary_tells_a_divergence_that_recovered_from_one_that_did_not(
        tmp_path, capsys, monkeypatch, start, summary):
    # a spike at a high rate can recover (seen at lr 3e-3 on the ring): the
    # summary compares the final training score with the start of the fit
    import warnings
    from radref.training.diagnostics import DivergenceWarning
    fit = RadFlow.fit

    def spiking_fit(self, *args, **kwargs):
        result = fit(self, *args, **kwargs)
        warning = DivergenceWarning("training is diverging at step 50: ...")
        warning.step, warning.start = 50, start
        warnings.warn(warning)
        return result

    monkeypatch.setattr(RadFlow, "fit", spiking_fit)
    status, out, err = _run(capsys, ["train", "--out", str(tmp_path / "m.npz")] + TINY)
    assert status == 0 and "radref: warning: training is diverging at step 50" in err
    assert summary in out


# ------------------------------------------- the checkpoint of a finished run

def test_a_finished_run_removes_the_checkpoint_radref_named(tmp_path, capsys):
    # the resume command's --checkpoint is radref's own name for --out's state:
    # once the run is finished the model file holds that state, so the file
    # goes, and the model file resumes in its place, bit for bit
    out, state = tmp_path / "m.npz", tmp_path / "m.checkpoint.npz"
    status, printed, err = _run(capsys, ["train", "--out", str(out), "--checkpoint", str(state),
                                         "--checkpoint-every", "5", "--seed", "4"] + TINY)
    assert status == 0, err
    assert not state.exists() and out.exists()
    assert f"removed the training state {state}: the run is finished and {out} holds it" in printed
    further, kept = tmp_path / "m2.npz", out.read_bytes()
    status, printed, err = _run(capsys, ["train", "--out", str(further), "--checkpoint", str(out),
                                         "--seed", "4"] + TINY[2:] + ["--steps", "30"])
    assert status == 0, err
    # the finished model is read, never written: training went on in a copy
    assert out.read_bytes() == kept
    copy = tmp_path / "m2.checkpoint.npz"
    assert (f"(continued from the finished run in {out}, step 20; {out} is not changed)"
            in printed) and not copy.exists()
    X = datasets.sample("two_moons", 600, random_state=4)
    direct = RadFlow(steps=30, batch_size=100, random_state=4, progress=False).fit(X)
    assert np.array_equal(RadFlow.load(str(further)).score_samples(X), direct.score_samples(X))


def test_a_finished_run_keeps_a_checkpoint_the_user_named(tmp_path, capsys):
    out, state = tmp_path / "m.npz", tmp_path / "state.npz"
    status, printed, err = _run(capsys, ["train", "--out", str(out), "--checkpoint", str(state)]
                                + TINY)
    assert status == 0, err
    assert state.exists()
    assert f"the training state stays in {state} (the run is finished" in printed


def test_own_checkpoint_names():
    from radref.user.cli_train import _is_own_checkpoint
    assert _is_own_checkpoint("d/m.checkpoint.npz", "d/m.npz")
    assert _is_own_checkpoint("d/m.checkpoint-12.npz", "d/m.npz")
    for other in ("d/m.checkpoint-x.npz", "d/m.checkpointer.npz", "e/m.checkpoint.npz",
                  "d/n.checkpoint.npz", "d/m.npz", "d/m.checkpoint-.npz"):
        assert not _is_own_checkpoint(other, "d/m.npz"), other


# ------------------------------------------------------------------- the help

def _subcommands():
    parser = build_parser()
    choices = next(a for a in parser._actions
                   if isinstance(a, argparse._SubParsersAction)).choices
    return parser, choices


@pytest.mark.parametrize("command", ["demo", "data", "train", "score", "sample", "plot",
                                     "reproduce", "golden", "check-port"])
def test_every_command_has_a_description_an_example_and_every_default(command):
    _, choices = _subcommands()
    sub = choices[command]
    assert sub.description and len(sub.description) > 40, command
    text = sub.format_help()
    examples = text.split("examples:\n", 1)
    assert len(examples) == 2, text
    lines = [line.strip() for line in examples[1].splitlines() if line.strip()]
    assert any(line.startswith(f"radref {command}") for line in lines), lines
    for action in sub._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue  # positional arguments have no default
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction,
                               argparse._StoreTrueAction)):
            continue  # a flag's default is "off"
        described = action.help.lower()
        assert ("default" in described or action.required or "required" in described), (
            command, action.option_strings, action.help)


def test_the_examples_in_the_help_parse(tmp_path):
    # every example line of every command is a command line argparse accepts
    _, choices = _subcommands()
    parser = build_parser()
    for command, sub in choices.items():
        examples = sub.format_help().split("examples:\n", 1)[1]
        commands = [line.strip() for line in examples.splitlines()
                    if line.strip().startswith("radref ")]
        assert commands, command
        for line in commands:
            parser.parse_args(shlex.split(line)[1:])  # exits (SystemExit) on a bad example


def test_top_level_help_names_both_sets_of_defaults(capsys):
    parser, _ = _subcommands()
    text = parser.format_help()
    assert "lr 0.005" in text and "reproduce" in text and "lr 0.001" in text, text


@pytest.mark.parametrize("argv,hint", [
    (["train", "{data}", "--out", "q.npz"], "as in: radref train --data {data} --out q.npz"),
    (["score", "{model}", "{data}"], "as in: radref score --model {model} --data {data}"),
    (["sample", "--out", "-", "{model}"], "as in: radref sample --out - --model {model}"),
    (["plot", "{model}", "{data}"], "as in: radref plot {model} --data {data}"),
])
def test_a_positional_file_gets_the_option_it_needs(tmp_path, capsys, argv, hint):
    data, model = tmp_path / "moons.csv", tmp_path / "m.npz"
    data.write_text("1,2\n3,4\n")
    model.write_bytes(b"")
    argv = [word.format(data=data, model=model) for word in argv]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: radref {argv[0]}"), err  # the command's usage, not radref's
    assert hint.format(data=data, model=model) in err, err


def test_the_readmes_command_lines_parse():
    # each radref line of README.md is a command line the parser accepts
    with open(os.path.join(REPO_ROOT, "README.md")) as f:
        readme = f.read()
    lines = [line.split("  #")[0].strip() for block in
             re.findall(r"^```bash\n(.*?)^```", readme, re.S | re.M)
             for line in block.splitlines()]
    commands = [line for line in lines if line.startswith("radref ")]
    assert len(commands) >= 5, commands
    parser = build_parser()
    for command in commands:
        parser.parse_args(shlex.split(command)[1:])


def test_a_finished_run_with_nothing_to_train_is_refused(tmp_path, capsys):
    out = tmp_path / "m.npz"
    assert main(["train", "--out", str(out)] + TINY) == 0
    kept = out.read_bytes()
    status, _, err = _run(capsys, ["train", "--checkpoint", str(out), "--out",
                                   str(tmp_path / "again.npz")] + TINY)
    _assert_user_error(status, err, f"--checkpoint {out}: a finished run of 20 steps, nothing "
                                    f"to train at --steps 20; to train it further, give a "
                                    f"larger --steps (the total to reach, e.g. --steps 40)")
    assert out.read_bytes() == kept and not (tmp_path / "again.npz").exists()


def test_the_resume_command_run_again_after_the_run_finished(tmp_path, capsys):
    # the run finished and removed its checkpoint: the same command again is
    # told that, not only that --out exists
    out, state = tmp_path / "m.npz", tmp_path / "m.checkpoint.npz"
    argv = ["train", "--out", str(out), "--checkpoint", str(state)] + TINY
    assert main(argv) == 0 and not state.exists()
    capsys.readouterr()
    status, _, err = _run(capsys, argv)
    _assert_user_error(status, err, f"--out {out}: exists, and {state} does not: this run has "
                                    f"finished")
