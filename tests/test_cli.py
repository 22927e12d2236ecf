"""Tests of the command line (radref.user.cli): train -> checkpoint -> score -> sample,
help texts, and user errors reported as one "radref: error:" line."""
import argparse
import os
import subprocess
import sys

import numpy as np
import pytest

import radref
from radref import RadFlow, RealNVPFlow, datasets, load_model
from radref.user.cli import build_parser, main

TINY = ["--steps", "20", "-n", "600", "--batch-size", "100", "--quiet"]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(radref.__file__)))


def _run(capsys, argv):
    """``main(argv)`` in-process: (status, stdout, stderr)."""
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def _assert_user_error(status, err, *fragments):
    assert status == 2
    assert err.startswith("radref: error: "), err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Checkpoints written by ``radref train`` for both models (trained once)."""
    directory = tmp_path_factory.mktemp("cli")
    paths = {}
    for model in ("rad", "realnvp"):
        path = directory / f"{model}.npz"
        status = main(["train", "--model", model, "--out", str(path)] + TINY)
        assert status == 0
        paths[model] = path
    return paths


# ------------------------------------------------------------ happy path

def test_train_writes_the_model_the_api_would_fit(trained, capsys):
    # The CLI is a thin wrapper: same data (two_moons, n, seed), same model and
    # Adam settings -> bit-identical parameters to the Python API.
    X = datasets.sample("two_moons", 600, random_state=0)
    for model, cls, hidden in (("rad", RadFlow, 8), ("realnvp", RealNVPFlow, 56)):
        loaded = load_model(trained[model])
        assert type(loaded) is cls and loaded.n_steps_ == 20
        assert loaded.n_layers == 6 and loaded.hidden == hidden
        api = cls(n_layers=6, random_state=0).fit(X, steps=20, batch_size=100, lr=5e-3)
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


@pytest.mark.parametrize("ext", ["npy", "csv"])
def test_train_from_data_file(tmp_path, capsys, ext):
    X = datasets.sample("ring", 300, random_state=1)
    data = tmp_path / f"data.{ext}"
    if ext == "npy":
        np.save(data, X)
    else:
        np.savetxt(data, X, delimiter=",", fmt="%.17g")
    path = tmp_path / "m.npz"
    status, out, _ = _run(capsys, ["train", "--data", str(data), "--model", "realnvp",
                                   "--layers", "2", "--hidden", "6", "--steps", "5",
                                   "--batch-size", "1000", "--seed", "4", "--quiet",
                                   "--out", str(path)])
    assert status == 0 and "on 300 points" in out
    api = RealNVPFlow(n_layers=2, hidden=6, random_state=4).fit(X, steps=5, batch_size=300,
                                                                 lr=5e-3)
    loaded = load_model(path)
    for name, value in api.parameters().items():
        assert loaded.parameters()[name].tobytes() == value.tobytes(), name


@pytest.mark.parametrize("model", ["rad", "realnvp"])
@pytest.mark.parametrize("ext_in", ["npy", "csv"])
@pytest.mark.parametrize("ext_out", ["npy", "csv"])
def test_score(trained, tmp_path, capsys, model, ext_in, ext_out):
    X = datasets.sample("two_moons", 50, random_state=9)
    data = tmp_path / f"x.{ext_in}"
    if ext_in == "npy":
        np.save(data, X)
    else:
        np.savetxt(data, X, delimiter=",", fmt="%.17g")  # exact for float64
    out_path = tmp_path / f"scores.{ext_out}"
    status, out, err = _run(capsys, ["score", "--model", str(trained[model]),
                                     "--data", str(data), "--out", str(out_path)])
    assert status == 0 and err == ""
    expected = load_model(trained[model]).score_samples(X)
    if ext_out == "npy":
        scores = np.load(out_path)
    else:
        scores = np.loadtxt(out_path, delimiter=",")
    np.testing.assert_array_equal(scores, expected)
    assert f"mean log-likelihood {np.mean(expected):+.6f} nats over 50 points" in out


def test_score_without_out(trained, tmp_path, capsys):
    data = tmp_path / "x.npy"
    np.save(data, datasets.sample("two_moons", 10, random_state=2))
    status, out, _ = _run(capsys, ["score", "--model", str(trained["rad"]), "--data", str(data)])
    assert status == 0 and "over 10 points" in out
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


@pytest.mark.parametrize("model", ["rad", "realnvp"])
@pytest.mark.parametrize("ext", ["npy", "csv"])
def test_sample(trained, tmp_path, capsys, model, ext):
    out_path = tmp_path / f"samples.{ext}"
    status, out, _ = _run(capsys, ["sample", "--model", str(trained[model]), "-n", "40",
                                   "--seed", "3", "--out", str(out_path)])
    assert status == 0 and f"wrote 40 samples to {out_path}" in out
    samples = np.load(out_path) if ext == "npy" else np.loadtxt(out_path, delimiter=",")
    assert samples.shape == (40, 2)
    np.testing.assert_array_equal(samples, load_model(trained[model]).sample(40, random_state=3))


def test_demo_without_figure(capsys):
    # --figure '' must work without matplotlib (the 'plot' extra)
    status, out, err = _run(capsys, ["demo", "--rad-steps", "30", "--realnvp-steps", "30",
                                     "--n-train", "1000", "--n-test", "500", "--figure", "",
                                     "--quiet"])
    assert status == 0, err
    assert "Rad" in out and "Real NVP" in out and "held-out mean log-likelihood" in out
    assert "best achievable" in out and "figure written" not in out


def test_demo_with_fewer_points_than_a_batch(capsys):
    # Regression: demo used fit's default batch_size=500, so --n-train below
    # 500 failed with an error about a batch size the demo has no option for.
    status, out, err = _run(capsys, ["demo", "--rad-steps", "2", "--realnvp-steps", "2",
                                     "--n-train", "200", "--n-test", "100", "--figure", "",
                                     "--quiet"])
    assert status == 0, err
    assert "held-out mean log-likelihood" in out


def test_demo_figure_needs_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    figure = tmp_path / "d.png"
    status, _, err = _run(capsys, ["demo", "--rad-steps", "1", "--realnvp-steps", "1",
                                   "--n-train", "200", "--n-test", "100",
                                   "--figure", str(figure), "--quiet"])
    _assert_user_error(status, err, "matplotlib")
    assert not figure.exists()


def test_demo_with_figure(tmp_path, capsys):
    import matplotlib  # noqa: F401  (a test dependency: the figure code is tested)
    figure = tmp_path / "d.png"
    status, out, err = _run(capsys, ["demo", "--rad-steps", "30", "--realnvp-steps", "30",
                                     "--n-train", "1000", "--n-test", "500",
                                     "--figure", str(figure), "--quiet"])
    assert status == 0, err
    assert f"figure written to {figure}" in out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------- help

def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def test_top_level_help_lists_every_subcommand(capsys):
    _, commands = _subcommands()
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert {"demo", "train", "score", "sample"} <= set(commands)
    for name in commands:
        assert name in out


@pytest.mark.parametrize("command", sorted(_subcommands()[1]))
def test_subcommand_help_mentions_every_option(capsys, command):
    _, commands = _subcommands()
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: radref {command}")
    for action in commands[command]._actions:
        names = action.option_strings or [action.dest]
        for name in names:
            assert name in out, (command, name)
        if action.help and action.help is not argparse.SUPPRESS and action.dest != "help":
            # every help text is shown (compared without whitespace: argparse
            # re-wraps lines and may break them at hyphens)
            assert "".join(action.help.split()) in "".join(out.split()), (command, name)


def test_help_via_subprocess():
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "radref", "--help"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: radref")
    for name in ("demo", "train", "score", "sample"):
        assert name in result.stdout


def test_error_via_subprocess(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "radref", "score", "--model",
                             str(tmp_path / "missing.npz"), "--data", str(tmp_path / "x.npy")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("radref: error: ") and "Traceback" not in result.stderr
    assert result.stdout == ""


# ---------------------------------------------------------------- errors

def test_missing_files(trained, tmp_path, capsys):
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((3, 2)))
    missing = tmp_path / "missing.npz"
    _assert_user_error(*_run(capsys, ["score", "--model", str(missing), "--data", str(data)])[::2],
                       "missing.npz")
    _assert_user_error(*_run(capsys, ["sample", "--model", str(missing),
                                      "--out", str(tmp_path / "s.npy")])[::2], "missing.npz")
    _assert_user_error(*_run(capsys, ["score", "--model", str(trained["rad"]),
                                      "--data", str(tmp_path / "nope.csv")])[::2],
                       "no such file", "nope.csv")
    _assert_user_error(*_run(capsys, ["train", "--data", str(tmp_path / "nope.npy"),
                                      "--out", str(tmp_path / "m.npz")] + TINY[:2])[::2],
                       "no such file")
    assert not (tmp_path / "m.npz").exists() and not (tmp_path / "s.npy").exists()


def test_bad_csv(trained, tmp_path, capsys):
    for name, text in (("header.csv", "x,y\n1,2\n3,4\n"), ("ragged.csv", "1,2\n3\n"),
                       ("words.csv", "one,two\nthree,four\n")):
        path = tmp_path / name
        path.write_text(text)
        status, _, err = _run(capsys, ["score", "--model", str(trained["rad"]),
                                       "--data", str(path)])
        _assert_user_error(status, err, name, "not a numeric CSV file")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    status, _, err = _run(capsys, ["score", "--model", str(trained["rad"]), "--data", str(empty)])
    _assert_user_error(status, err, "empty.csv", "holds no data")


def test_bad_npy_and_extension(trained, tmp_path, capsys):
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _assert_user_error(*_run(capsys, ["score", "--model", str(trained["rad"]),
                                      "--data", str(obj)])[::2], "obj.npy")
    txt = tmp_path / "x.txt"
    txt.write_text("1,2\n")
    _assert_user_error(*_run(capsys, ["score", "--model", str(trained["rad"]),
                                      "--data", str(txt)])[::2], "expected a .npy or .csv file")
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((3, 2)))
    _assert_user_error(*_run(capsys, ["score", "--model", str(trained["rad"]), "--data",
                                      str(data), "--out", str(tmp_path / "s.txt")])[::2],
                       "output must end in .npy or .csv")
    _assert_user_error(*_run(capsys, ["sample", "--model", str(trained["rad"]),
                                      "--out", str(tmp_path / "s.json")])[::2],
                       "output must end in .npy or .csv")


def test_wrong_dimension_and_bad_values(trained, tmp_path, capsys):
    for name, X, fragment in (("three.csv", np.ones((5, 3)), "X must have 2 columns"),
                              ("flat.npy", np.ones(5), "X must be 2-dimensional"),
                              ("nan.npy", np.array([[0.0, np.nan]]), "NaN"),
                              ("complex.npy", np.ones((2, 2), dtype=complex), "real numeric")):
        path = tmp_path / name
        if name.endswith(".csv"):
            np.savetxt(path, X, delimiter=",")
        else:
            np.save(path, X)
        for model in ("rad", "realnvp"):
            status, _, err = _run(capsys, ["score", "--model", str(trained[model]),
                                           "--data", str(path)])
            _assert_user_error(status, err, fragment)
    one_column = tmp_path / "one.csv"
    np.savetxt(one_column, np.arange(10.0)[:, None], delimiter=",")
    status, _, err = _run(capsys, ["train", "--data", str(one_column), "--out",
                                   str(tmp_path / "m.npz"), "--steps", "1", "--quiet"])
    _assert_user_error(status, err, "at least 2 columns")


def test_corrupted_checkpoint(trained, tmp_path, capsys):
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((3, 2)))
    raw = trained["rad"].read_bytes()
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF
    for name, damaged in (("flipped.npz", bytes(flipped)), ("truncated.npz", raw[:len(raw) // 2])):
        path = tmp_path / name
        path.write_bytes(damaged)
        status, _, err = _run(capsys, ["score", "--model", str(path), "--data", str(data)])
        _assert_user_error(status, err, name)
        status, _, err = _run(capsys, ["sample", "--model", str(path),
                                       "--out", str(tmp_path / "s.npy")])
        _assert_user_error(status, err, name)
    assert not (tmp_path / "s.npy").exists()


def test_bad_numbers(trained, tmp_path, capsys):
    status, _, err = _run(capsys, ["sample", "--model", str(trained["rad"]), "-n", "0",
                                   "--out", str(tmp_path / "s.npy")])
    _assert_user_error(status, err, "n must be >= 1")
    status, _, err = _run(capsys, ["train", "--out", str(tmp_path / "m.npz"), "--steps", "0",
                                   "-n", "50", "--quiet"])
    _assert_user_error(status, err, "steps must be >= 1")
    status, _, err = _run(capsys, ["train", "--out", str(tmp_path / "m.npz"), "--lr", "-1",
                                   "-n", "50", "--steps", "1", "--quiet"])
    _assert_user_error(status, err, "lr must be")
    status, _, err = _run(capsys, ["train", "--model", "realnvp", "--gate-hidden", "3",
                                   "--out", str(tmp_path / "m.npz"), "-n", "50", "--quiet"])
    _assert_user_error(status, err, "--gate-hidden applies to --model rad only")
    assert not (tmp_path / "m.npz").exists()


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["train"], ["score", "--model", "m.npz"], ["train", "--model", "gan",
                                                                "--out", "m.npz"],
                 ["sample", "--model", "m.npz", "--out", "s.npy", "-n", "many"], ["frobnicate"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err
