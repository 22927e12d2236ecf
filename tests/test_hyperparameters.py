"""The one table of hyperparameters (radref.training.hyperparameters) and the
user layer built on it: every entry is checked by fit, is an option of the
command line, and round-trips through a checkpoint; checkpoints store the
settings by name; the layer contract carries what the user layer asks of a
kind; what radref 0.2 deprecates says when it goes."""
import ast
import importlib
import json
import pathlib
import sys

import numpy as np
import pytest

import radref
from radref import RadFlow, RealNVPFlow, datasets, load_model
from radref.core.chunks import CHUNK_ROWS
from radref.core.layers import LAYER_KINDS, MODEL_KINDS, affine, layer_kind
from radref.training.checkpoint import load_checkpoint, save_checkpoint
from radref.training.hyperparameters import HYPERPARAMETER, HYPERPARAMETERS, RESUME_SETTINGS
from radref.training.run import CheckpointMismatchError
from radref.user.cli import build_parser
from radref.user.estimators import MODELS
from radref.user.options import cli_help

CLASSES = (RadFlow, RealNVPFlow)
ROOT = pathlib.Path(__file__).parent.parent

#: A valid value other than the default for every entry (a new entry must be
#: added here: the test below checks that every entry has one).
NON_DEFAULT = dict(n_layers=2, hidden=3, gate_hidden=2, out_std=0.02, steps=6, batch_size=40,
                   lr=0.01, beta1=0.8, beta2=0.99, eps=1e-7, eval_every=3, warm_start=True,
                   progress=False, random_state=7, lr_schedule="cosine", lr_decay_steps=9,
                   lr_final_fraction=0.1, lr_step_size=4, lr_gamma=0.7, ema_decay=0.9,
                   early_stopping=True, validation_fraction=0.2, n_iter_no_change=5, n_jobs=2)


def _data(n=200, seed=0):
    return datasets.sample("two_moons", n, random_state=seed)


def _bad_values(entry):
    """(value, exception) pairs that the entry's check must refuse: values
    of the wrong kind, and values out of its range (below ``low``, above
    ``high``, NaN)."""
    if entry.type == "bool":
        return [(1, TypeError), ("yes", TypeError)]
    if entry.type == "choice":
        return [("no-such-" + entry.name, ValueError), (3, ValueError)]
    if entry.type == "n_jobs":  # scikit-learn's: a nonzero integer or None
        return [("1", TypeError), (True, TypeError), (1.5, TypeError), (0, ValueError)]
    wrong_kind = [("1", TypeError), (True, TypeError)]
    if entry.type == "int":
        return wrong_kind + [(entry.low - 1, ValueError), (1.5, TypeError)]
    above = [] if entry.high is None else [(entry.high + 1.0, ValueError)]
    return wrong_kind + above + [(entry.low - 1.0, ValueError), (float("nan"), ValueError)]


def _takers(name):
    return [cls for cls in CLASSES if name in cls.parameter_names()]


def test_every_entry_has_a_model_and_a_non_default_test_value():
    assert set(NON_DEFAULT) == set(HYPERPARAMETER)
    for entry in HYPERPARAMETERS:
        assert _takers(entry.name), entry.name
        assert NON_DEFAULT[entry.name] != entry.default, entry.name
        for cls in _takers(entry.name):
            assert cls.parameter_names() == list(cls().get_params())


@pytest.mark.parametrize("entry", HYPERPARAMETERS, ids=lambda e: e.name)
def test_every_entry_is_checked_by_fit_with_a_clear_error(entry):
    X = _data(50)
    for value, exc in _bad_values(entry):
        for cls in _takers(entry.name):
            model = cls(**{entry.name: value, "steps": 1, "n_layers": 1, "hidden": 2})
            if entry.name in ("steps", "n_layers", "hidden"):
                model.set_params(**{entry.name: value})
            with pytest.raises(exc, match=entry.name) as info:
                model.fit(X)
            message = str(info.value)
            assert message.startswith(entry.name) or entry.type == "choice", message
            assert repr(value)[:3] in message or str(value) in message, message
            assert not hasattr(model, "params_")  # nothing was trained


@pytest.mark.parametrize("entry", HYPERPARAMETERS, ids=lambda e: e.name)
def test_every_entry_is_an_option_of_radref_train_or_says_why_not(entry, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    if entry.option is None:
        assert entry.cli_note, entry.name  # why there is no option
        return
    assert entry.flag in help_text.split(), entry.name
    # the option's help is the table's (with "omitted" for what Python spells None)
    assert " ".join(cli_help(entry.name).split()) in help_text or entry.cli_note, entry.name


def test_reproduce_takes_the_protocol_options_from_the_table(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reproduce", "--help"])
    words = capsys.readouterr().out.split()
    for entry in HYPERPARAMETERS:
        if entry.group == "recipe" and entry.name != "lr_decay_steps":
            assert entry.flag in words, entry.name  # reproduce decays over its steps
    for name in ("steps", "lr", "batch_size", "hidden"):
        assert HYPERPARAMETER[name].flag in words, name


def test_command_line_values_are_checked_by_the_table_in_the_options_words(tmp_path, capsys):
    from radref.user.cli import main
    for argv, fragment in ((["--beta1", "1"], "--beta1 must be in [0, 1), got 1.0"),
                           (["--eps", "0"], "--eps must be a finite number > 0, got 0.0"),
                           (["--out-std", "-1"], "--out-std must be a finite number >= 0"),
                           (["--model", "realnvp", "--gate-hidden", "3"],
                            "--gate-hidden applies to --model rad only")):
        status = main(["train", "--out", str(tmp_path / "m.npz"), "-n", "20", "--steps", "1"]
                      + argv)
        err = capsys.readouterr().err
        assert status == 2 and fragment in err, (argv, err)


@pytest.mark.parametrize("cls", CLASSES)
def test_every_entry_round_trips_through_a_checkpoint(cls, tmp_path):
    X = _data(200)
    params = {name: NON_DEFAULT[name] for name in cls.parameter_names()}
    path = tmp_path / "ckpt.npz"
    model = cls(**params).fit(X, checkpoint=path)
    assert load_model(path).get_params() == params
    model.save(tmp_path / "saved.npz")
    assert load_model(tmp_path / "saved.npz").get_params() == params
    # the settings are stored by name, each resume setting once
    extra = load_checkpoint(path)[0]["extra"]
    assert set(extra["settings"]) == set(RESUME_SETTINGS)
    assert "adam" not in extra and "recipe" not in extra


def _resumable(cls, tmp_path, X):
    params = {name: NON_DEFAULT[name] for name in cls.parameter_names()}
    params.update(warm_start=False, steps=4, lr_decay_steps=12)
    path = tmp_path / "ckpt.npz"
    cls(**params).fit(X, checkpoint=path)
    return params, path


@pytest.mark.parametrize("name", RESUME_SETTINGS)
def test_a_checkpoint_is_resumed_only_with_its_settings_where_they_apply(name, tmp_path):
    X = _data(200)
    params, path = _resumable(RadFlow, tmp_path, X)
    entry = HYPERPARAMETER[name]
    changed = {"int": lambda v: (v or 12) + 1, "real": lambda v: v * 0.5,
               "bool": lambda v: not v, "choice": lambda v: "step"}[entry.type](params[name])
    model = RadFlow(**dict(params, steps=8, **{name: changed}))
    other, wanted = entry.applies or (None, None)
    if other is not None and params[other] != wanted:  # e.g. lr_gamma of a cosine schedule
        model.fit(X, checkpoint=path)  # does not apply: resumed
        assert model.n_steps_ == 8
        return
    with pytest.raises(CheckpointMismatchError) as info:
        model.fit(X, checkpoint=path)
    assert name in info.value.differing
    assert info.value.theirs[name] == params[name] and info.value.mine[name] == changed


def test_a_checkpoint_without_a_setting_added_later_resumes(tmp_path):
    # A setting a checkpoint does not record (one added after it was written)
    # reads as its default: the file resumes and equals an uninterrupted fit.
    X = _data(200)
    common = dict(n_layers=2, hidden=3, batch_size=40, random_state=1, progress=False)
    path = tmp_path / "ckpt.npz"
    RadFlow(steps=4, **common).fit(X, checkpoint=path)
    meta, params, state, groups = load_checkpoint(path, extra_arrays=True)
    extra = json.loads(json.dumps(meta["extra"]))
    del extra["settings"]["eps"], extra["settings"]["n_iter_no_change"]
    save_checkpoint(path, meta["model"], meta["hyperparameters"], params, state, meta["step"],
                    extra=extra, extra_arrays=groups or None)
    resumed = RadFlow(steps=9, **common).fit(X, checkpoint=path)
    whole = RadFlow(steps=9, **common).fit(X)
    for key, value in whole.params_.items():
        assert resumed.params_[key].tobytes() == value.tobytes(), key


def test_a_committed_radref_0_2_checkpoint_resumes(tmp_path):
    # validation/results/runs/*/checkpoint.npz: radref 0.2's layout (Adam's
    # settings as a list, no settings by name); it resumes on its run's data
    run = ROOT / "validation" / "results" / "runs" / "grid-rad-s0"
    meta = load_checkpoint(run / "checkpoint.npz")[0]
    assert isinstance(meta["extra"]["adam"], list) and "settings" not in meta["extra"]
    result = json.loads((run / "result.json").read_text())
    X, _ = datasets.train_test_split_samples("grid", result["n_train"], result["n_test"],
                                             random_state=0)
    path = tmp_path / "ckpt.npz"
    path.write_bytes((run / "checkpoint.npz").read_bytes())
    hyper = {k: v for k, v in meta["hyperparameters"].items() if k != "dim"}
    lr, beta1, beta2, eps = meta["extra"]["adam"]
    model = RadFlow(**hyper, steps=meta["step"] + 2, batch_size=meta["extra"]["batch_size"],
                    lr=lr, beta1=beta1, beta2=beta2, eps=eps, progress=False)
    model.fit(X, checkpoint=path)
    assert model.n_steps_ == meta["step"] + 2
    assert model.history_["step"][-2:] == [meta["step"] + 1, meta["step"] + 2]
    # with another learning rate it is refused, naming it
    with pytest.raises(CheckpointMismatchError) as info:
        RadFlow(**hyper, steps=meta["step"] + 4, lr=lr * 2, progress=False).fit(
            X, checkpoint=tmp_path / "ckpt.npz")
    assert info.value.differing == ["lr"]


# ---------------------------------------------------------- the layer contract
CONTRACT = ("NAME", "MODEL_NAME", "DISPLAY_NAME", "MODEL_CLASS", "THREAD_CHUNK_ROWS",
            "HAS_DISCRETE_LATENTS", "N_BRANCHES", "DEFAULT_ARCHITECTURE", "N_FEATURES", "OUTPUT_LOG_SCALE",
            "init", "forward", "backward", "inverse", "sample", "folded")


@pytest.mark.parametrize("name", sorted(LAYER_KINDS))
def test_every_kind_carries_what_the_user_layer_asks(name):
    kind = LAYER_KINDS[name]
    for attribute in CONTRACT:
        assert hasattr(kind, attribute), (name, attribute)
    assert kind.NAME == name and layer_kind(kind.MODEL_NAME) is kind
    assert set(kind.DEFAULT_ARCHITECTURE) <= {e.name for e in HYPERPARAMETERS
                                              if e.group == "architecture"}
    assert kind.HAS_DISCRETE_LATENTS == (kind.N_BRANCHES > 1)
    # threads' chunks are whole blocks of the products (radref.core.chunks)
    assert kind.THREAD_CHUNK_ROWS > 0 and kind.THREAD_CHUNK_ROWS % CHUNK_ROWS == 0
    model = MODELS[kind.MODEL_NAME]
    assert model.__name__ == kind.MODEL_CLASS and model.display_name() == kind.DISPLAY_NAME
    defaults = model().get_params()
    for key, value in kind.DEFAULT_ARCHITECTURE.items():
        assert defaults[key] == value


def test_one_model_one_name():
    assert layer_kind("realnvp") is layer_kind("affine") is affine
    assert list(MODELS) == list(MODEL_KINDS) == ["rad", "realnvp"]


def _kind_name_comparisons(path, names):
    """``x == "rad"``-like comparisons (and ``!=``, ``in``) with a kind's or model's name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Compare):
            for operand in [node.left] + node.comparators:
                if isinstance(operand, ast.Constant) and operand.value in names:
                    found.append(f"{path.name}:{node.lineno}")
    return found


def test_no_code_outside_core_layers_compares_a_kind_name():
    names = set(LAYER_KINDS) | set(MODEL_KINDS)
    package = pathlib.Path(radref.__file__).parent
    layers = package / "core" / "layers"
    found = [hit for path in package.rglob("*.py") if layers not in path.parents
             for hit in _kind_name_comparisons(path, names)]
    assert found == []


def test_the_check_finds_a_kind_comparison(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("if config.kind == 'rad':\n    pass\n")
    assert _kind_name_comparisons(bad, {"rad"}) == ["bad.py:1"]


# ------------------------------------------------------------- deprecations
def test_radref_0_1_module_paths_warn_naming_the_release_that_removes_them():
    sys.modules.pop("radref.slopes", None)
    with pytest.warns(DeprecationWarning, match=r"radref\.slopes .* removed in radref 0\.4"):
        module = importlib.import_module("radref.slopes")
    assert module is importlib.import_module("radref.core.slopes")
    with pytest.warns(DeprecationWarning, match="removed in radref 0.4: import radref.core.flow"):
        assert radref.flow is importlib.import_module("radref.core.flow")


def test_fit_keywords_of_radref_0_1_warn_naming_the_release_that_removes_them():
    with pytest.warns(DeprecationWarning, match=r"removed in radref 0\.4"):
        model = RadFlow(n_layers=1, hidden=2, random_state=0).fit(_data(50), steps=2)
    assert model.steps == 2 and model.n_steps_ == 2
