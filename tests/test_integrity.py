"""Nothing lost, nothing trusted blindly (issue 23): outputs never written over
inputs, atomic writes and their temporary files, advisory locks, hostile
checkpoints, signals, diverging training.

Each test of a numbered finding of the issue says so (``finding N``); the
others are attacks tried beyond the issue's list."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import radref
from helpers import checkpoint_arrays
from radref import RadFlow, load_model
from radref.training import checkpoint
from radref.training.checkpoint import CheckpointError, load_checkpoint
from radref.user.cli import main

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(radref.__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
TINY = ["--steps", "20", "-n", "600", "--batch-size", "100", "--quiet"]


def _run(capsys, argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _one_line_error(status, err, *fragments):
    assert status == 2, err
    assert err.startswith("radref: error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("integrity") / "m.npz"
    assert main(["train", "--layers", "2", "--out", str(path)] + TINY) == 0
    return path


# ======================================================================
# Finding 1: no command writes over one of its inputs
# ======================================================================

def _points_file(path, n=50):
    X = np.random.default_rng(0).normal(size=(n, 2))
    np.savetxt(path, X, delimiter=",", fmt="%.17g")
    return path.read_bytes()


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "hardlink"])
def test_score_never_writes_over_its_data(capsys, tmp_path, model_path, spelling):
    # finding 1: `radref score --data inout.csv --out inout.csv` replaced the
    # points by their scores (rc 0), also for another spelling of the path
    data = tmp_path / "inout.csv"
    before = _points_file(data)
    (tmp_path / "sub").mkdir()
    out = {"same": str(data), "dotdot": str(tmp_path / "sub" / ".." / "inout.csv"),
           "symlink": str(tmp_path / "link.csv"), "hardlink": str(tmp_path / "hard.csv")}[spelling]
    if spelling == "symlink":
        os.symlink(data, out)
    elif spelling == "hardlink":
        os.link(data, out)
    status, _, err = _run(capsys, ["score", "--model", model_path, "--data", data, "--out", out])
    _one_line_error(status, err, "--out", "--data", "an input of this command")
    assert data.read_bytes() == before
    # the model is an input too
    status, _, err = _run(capsys, ["score", "--model", model_path, "--data", data,
                                   "--out", model_path])
    assert status == 2 and load_model(model_path).n_features_in_ == 2


def test_sample_never_writes_over_its_model(capsys, tmp_path, model_path):
    # finding 1: `radref sample --model model.csv --out model.csv` overwrote the
    # model (a model file with a data extension still loads)
    disguised = tmp_path / "model.csv"
    disguised.write_bytes(model_path.read_bytes())
    status, _, err = _run(capsys, ["sample", "--model", disguised, "--out", disguised])
    _one_line_error(status, err, "--out", "--model", "an input of this command")
    assert disguised.read_bytes() == model_path.read_bytes()


def test_train_never_writes_over_its_data_or_checkpoint(capsys, tmp_path):
    # beyond the list: --out or --checkpoint as a symlink to --data / --val,
    # and --checkpoint as another spelling of --out
    data = tmp_path / "d.csv"
    before = _points_file(data, 200)
    os.symlink(data, tmp_path / "out.npz")
    status, _, err = _run(capsys, ["train", "--data", data, "--out", tmp_path / "out.npz"]
                          + TINY[:2])
    _one_line_error(status, err, "--out", "--data")
    status, _, err = _run(capsys, ["train", "--data", data, "--val", tmp_path / "out.npz",
                                   "--out", tmp_path / "m.npz", "--checkpoint",
                                   tmp_path / "out.npz"] + TINY[:2])
    _one_line_error(status, err, "--checkpoint")
    status, _, err = _run(capsys, ["train", "--data", data, "--out", tmp_path / "m.npz",
                                   "--checkpoint", f"{tmp_path}/./m.npz"] + TINY[:2])
    _one_line_error(status, err, f"--checkpoint {tmp_path}/./m.npz: is --out {tmp_path / 'm.npz'}",
                    "must be different files")
    assert data.read_bytes() == before
    assert not (tmp_path / "m.npz").exists()


# ======================================================================
# Atomic writes (findings 8 and 9: fsync, temporary files)
# ======================================================================

def test_write_json_atomic_fsyncs_the_file_and_the_directory(tmp_path, monkeypatch):
    # finding 8: write_json_atomic never fsynced
    from radref.user.sweep import write_json_atomic
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert str(tmp_path) in synced  # the directory, after the rename
    assert any(p.startswith(str(tmp_path) + "/.radref-") for p in synced)  # the file
    assert os.listdir(tmp_path) == ["r.json"]


def _dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_writers_temporary_files_are_removed_by_the_next_write(tmp_path):
    from radref.training import files
    # finding 9 (SIGKILL): `.radref-*.tmp` files piled up; the next write into
    # the directory removes those of this host whose process is gone, and
    # leaves a live writer's alone
    tag = files._host_tag()
    dead = tmp_path / f".radref-{_dead_pid()}-{tag}-abc.tmp"
    alive = tmp_path / f".radref-{os.getppid()}-{tag}-abc.tmp"
    other_host = tmp_path / f".radref-{_dead_pid()}-00000000-abc.tmp"
    for path in (dead, alive, other_host):
        path.write_bytes(b"partial")
    files.write_json_atomic(tmp_path / "x.json", [1])
    assert sorted(os.listdir(tmp_path)) == sorted([alive.name, other_host.name, "x.json"])


def test_atomic_write_removes_its_temporary_file_on_any_exception(tmp_path):
    from radref.training import files
    target = tmp_path / "t.bin"
    target.write_bytes(b"old")
    for exc in (OSError("disk full"), KeyboardInterrupt(), SystemExit(143)):
        with pytest.raises(type(exc)):
            with files.atomic_write(target) as f:
                f.write(b"new, half")
                raise exc
        assert target.read_bytes() == b"old"
        assert os.listdir(tmp_path) == ["t.bin"]


# ======================================================================
# Findings 5 and 7: hostile checkpoints
# ======================================================================

def _forge(path, source, edit_meta=None, arrays=None, raw_meta=None, compress=False):
    """Rewrite checkpoint ``source`` at ``path``: ``edit_meta(meta)`` edits the
    metadata, ``arrays`` replaces members (name -> bytes of a .npy member or an
    array), and the checksum is recomputed (anyone can: it is not keyed)."""
    members = checkpoint_arrays(source)
    meta = json.loads(members.pop("meta").tobytes().decode())
    del meta["checksum"]
    if edit_meta is not None:
        edit_meta(meta)
    try:
        meta["checksum"] = checkpoint._digest(meta, members)
    except (TypeError, ValueError):
        meta["checksum"] = "0" * 64
    text = raw_meta if raw_meta is not None else json.dumps(meta).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) \
            as archive:
        for name, value in dict(members, **(arrays or {})).items():
            if isinstance(value, np.ndarray):
                with archive.open(name + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, value)
            else:
                archive.writestr(name + ".npy", value)
        with archive.open("meta.npy", "w") as f:
            np.lib.format.write_array(f, np.frombuffer(text, dtype=np.uint8))
    return path


def _load_in_limited_process(path, extra_mib=700):
    """Load ``path`` with load_model in a child whose address space is capped at
    its size after imports + ``extra_mib``: ``(outcome, seconds)``."""
    code = f"""
import resource, time
from radref import load_model
from radref.training.checkpoint import CheckpointError
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
limit = size + {extra_mib} * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
start = time.perf_counter()
try:
    load_model({str(path)!r})
    outcome = "loaded"
except CheckpointError as exc:
    outcome = "CheckpointError: " + str(exc)
except BaseException as exc:
    outcome = type(exc).__name__ + ": " + str(exc)[:200]
print(outcome)
print(time.perf_counter() - start)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=ENV, timeout=600)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2, result.stderr[-2000:]
    return lines[0], float(lines[1])


def test_a_checkpoint_declaring_a_huge_dimension_costs_nothing(tmp_path, model_path):
    # finding 5: a small file declaring dim = 2000000 (checksum recomputed) took
    # 48 s and 6.5 GB before "parameters do not match the architecture" (a bare
    # MemoryError under a memory limit)
    bad = _forge(tmp_path / "dim.npz", model_path,
                 lambda meta: meta["hyperparameters"].update(dim=2_000_000))
    assert bad.stat().st_size < 100_000
    outcome, _ = _load_in_limited_process(bad)
    assert outcome.startswith("CheckpointError"), outcome
    assert "dim must be an integer from 2 to 10000" in outcome


def test_a_member_declaring_a_huge_array_is_refused_before_its_data_is_read(tmp_path,
                                                                             model_path):
    # finding 5: a 1.6 MB deflated member declaring 200M float64 took 3.2 GB:
    # every member was read before anything was checked.  Here the member's
    # header declares 200M float64 followed by 1 MB of deflated zeros.
    import io
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (200_000_000,)})
    member.write(bytes(2 ** 20))
    bad = _forge(tmp_path / "big.npz", model_path,
                 arrays={"param/0.cond.W1": member.getvalue()}, compress=True)
    assert bad.stat().st_size < 100_000
    outcome, _ = _load_in_limited_process(bad)
    assert outcome.startswith("CheckpointError"), outcome
    assert "declares shape (200000000,)" in outcome


@pytest.mark.parametrize("attack", ["many_members", "wrong_dtype", "nested_budget", "big_meta",
                                    "huge_layers", "object_member"])
def test_other_hostile_checkpoints_are_refused_cheaply(tmp_path, model_path, attack):
    # beyond the list: the other ways a re-signed file could cost memory or time
    arrays, edit, raw = {}, None, None
    if attack == "many_members":  # many unknown parameter-sized arrays
        arrays = {f"junk/{i}": np.zeros(8) for i in range(2000)}
        message = "larger than a checkpoint of this architecture"
    elif attack == "wrong_dtype":
        arrays = {"param/0.cond.W1": np.zeros((1, 8), dtype=np.int64)}
        message = "holds int64, not float64"
    elif attack == "nested_budget":  # a member larger than any parameter
        arrays = {"param/0.cond.W1": np.zeros(10_000)}
        message = "larger than any parameter"
    elif attack == "big_meta":
        raw = b"[" + b"0," * (checkpoint.MAX_META_BYTES // 2) + b"0]"
        message = "checkpoint metadata is corrupted"
    elif attack == "huge_layers":  # every width within its ceiling, the total beyond
        edit = lambda meta: meta["hyperparameters"].update(n_layers=1000, hidden=100_000)  # noqa: E731
        message = "beyond the 16777216 a checkpoint may declare"
    else:
        arrays = {"param/0.cond.W1": np.array([{}], dtype=object)}
        message = "holds object, not float64"
    bad = _forge(tmp_path / f"{attack}.npz", model_path, edit, arrays=arrays, raw_meta=raw)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(bad)


@pytest.mark.parametrize("damage,message", [
    ("deep", "checkpoint metadata is corrupted"),
    ("no_model", "checkpoint is incomplete"),
    ("model_list", "model must be a class name"),
    ("names_dict", "names must be a list"),
    ("step_huge_int", "checkpoint metadata is corrupted"),
    ("hyper_list", "hyperparameters must be a JSON object"),
    ("extra_string", "extra must be a JSON object"),
    ("gate_float", "gate_hidden must be an integer"),
])
def test_a_damaged_meta_is_a_checkpoint_error(capsys, tmp_path, model_path, damage, message):
    # finding 7: '[' x 100000 gave a RecursionError traceback, no 'model' a
    # KeyError, 'model' as a list "unhashable type: 'list'"
    raw = None
    if damage == "deep":
        raw, edit_meta = b"[" * 100_000, None
    elif damage == "step_huge_int":
        raw = json.dumps({"format": "radref-checkpoint", "version": 1}).encode()[:-1] \
            + b', "step": ' + b"9" * 5000 + b"}"
        edit_meta = None
    else:
        def edit_meta(meta):
            if damage == "no_model":
                del meta["model"]
            elif damage == "model_list":
                meta["model"] = ["RadFlow"]
            elif damage == "names_dict":
                meta["names"] = {"a": 1}
            elif damage == "hyper_list":
                meta["hyperparameters"] = [1, 2]
            elif damage == "extra_string":
                meta["extra"] = "x"
            else:
                meta["hyperparameters"]["gate_hidden"] = 8.0
    bad = _forge(tmp_path / "bad.npz", model_path, edit_meta, raw_meta=raw)
    with pytest.raises(CheckpointError, match=message):
        load_model(bad)
    status, _, err = _run(capsys, ["sample", "--model", bad, "--out", tmp_path / "s.csv"])
    _one_line_error(status, err, f"--model {bad}")
    assert not (tmp_path / "s.csv").exists()


def test_legitimate_checkpoints_still_load(tmp_path):
    # the checks refuse nothing radref writes: radref 0.1's files, a model with
    # a recipe (ema/ and best/ groups), a compressed archive of a good file
    data = os.path.join(os.path.dirname(__file__), "data", "v0_1")
    for name in ("RadFlow-checkpoint.npz", "RadFlow-saved.npz", "RealNVPFlow-saved.npz"):
        load_model(os.path.join(data, name))
    X = np.random.default_rng(0).normal(size=(200, 3))
    model = RadFlow(n_layers=2, hidden=4, steps=4, batch_size=50, eval_every=2, ema_decay=0.9,
                    early_stopping=True, random_state=0, progress=False).fit(X)
    model.save(tmp_path / "recipe.npz")
    loaded = load_model(tmp_path / "recipe.npz")
    assert np.array_equal(loaded.score_samples(X), model.score_samples(X))
    with zipfile.ZipFile(tmp_path / "recipe.npz") as src, \
            zipfile.ZipFile(tmp_path / "deflated.npz", "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    assert np.array_equal(load_model(tmp_path / "deflated.npz").score_samples(X),
                          model.score_samples(X))


# ======================================================================
# Finding 6: two writers of one file
# ======================================================================

def _wait_for(predicate, timeout=120.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_second_train_on_the_same_out_is_refused_naming_the_holder(tmp_path):
    # finding 6: two `radref train` with the same --out and --checkpoint both
    # said "saved"; one model was silently gone
    out, ck = tmp_path / "m.npz", tmp_path / "ck.npz"
    first = subprocess.Popen([sys.executable, "-m", "radref", "train", "--layers", "2",
                              "--steps", "200000", "-n", "600", "--batch-size", "100",
                              "--quiet", "--seed", "1", "--out", str(out), "--checkpoint",
                              str(ck)], env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        # (radref before its locks wrote no lock file: then wait for its checkpoint)
        _wait_for(lambda: ((tmp_path / ".m.npz.radref-lock").exists()
                           and (tmp_path / ".m.npz.radref-lock").stat().st_size > 0)
                  or ck.exists(), what="the lock")
        second = subprocess.run([sys.executable, "-m", "radref", "train", "--layers", "2",
                                 "--seed", "2", "--out", str(out), "--checkpoint",
                                 str(tmp_path / "other.npz")] + TINY, env=ENV,
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert f"--out {out} is being written by process {first.pid} on host " \
               f"{socket.gethostname()}" in second.stderr
        assert "radref train" in second.stderr or "__main__" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        third = subprocess.run([sys.executable, "-m", "radref", "train", "--layers", "2",
                                "--out", str(tmp_path / "m3.npz"), "--checkpoint", str(ck)]
                               + TINY, env=ENV, capture_output=True, text=True, timeout=300)
        assert third.returncode == 2 and f"--checkpoint {ck} is being written" in third.stderr
        assert not (tmp_path / "m3.npz").exists()
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=300)
    # the holder is gone: its lock file too, and the path is free again
    assert not (tmp_path / ".m.npz.radref-lock").exists()
    assert main(["train", "--layers", "2", "--out", str(out)] + TINY) == 0


def test_a_lock_held_by_a_killed_process_is_free(tmp_path):
    from radref.training import files
    # beyond the list: the kernel drops a flock when its holder dies (SIGKILL),
    # and the lock file it leaves behind does not block the next writer
    target = tmp_path / "x.npz"
    holder = subprocess.Popen([sys.executable, "-c", f"""
import time
from radref.training.files import exclusive
with exclusive({str(target)!r}):
    print("held", flush=True)
    time.sleep(600)
"""], env=ENV, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(files.LockedError, match=f"process {holder.pid} on host"):
        with files.exclusive(target):
            pass
    holder.kill()
    holder.wait()
    holder.stdout.close()
    with files.exclusive(target, "x") as lock:
        assert os.path.exists(lock)
    assert os.listdir(tmp_path) == []


# ======================================================================
# Findings 2, 3, 8: the sweep's run files are verified before reuse
# ======================================================================

SWEEP = ["reproduce", "--quick", "--n-train", "100", "--n-test", "100", "--batch-size", "50",
         "--seeds", "0", "--problems", "ring", "--models", "rad", "--workers", "1"]


@pytest.fixture
def finished_sweep(tmp_path, capsys):
    """A sweep of one finished run: (out, run directory, its true result)."""
    out = tmp_path / "results"
    assert main(SWEEP + ["--out", str(out)]) == 0
    capsys.readouterr()
    (protocol,) = [p for p in out.iterdir() if p.name.startswith("protocol-")]
    run = protocol / "runs" / "ring-rad-s0"
    return out, run, json.loads((run / "result.json").read_text())


def _rerun(capsys, out, *extra):
    status = main(SWEEP + ["--out", str(out)] + list(extra))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _table_row(run):
    return json.loads((run.parent.parent / "results.json").read_text())


def _edit_json(path, edit):
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize("legacy", [False, True])
def test_an_edited_result_is_named_and_retrained_never_tabulated(capsys, finished_sweep, legacy):
    # finding 2: test_loglik set to +5.0 in result.json was reused ("reused 6
    # finished run(s)") and tabulated as +5.000.  legacy=True: a run written
    # before run.json recorded digests (the committed ones) is verified by
    # recomputing the score from test_points.npz.
    out, run, true = finished_sweep
    if legacy:
        _edit_json(run / "run.json", lambda r: r.pop("files", None))
    _edit_json(run / "result.json", lambda r: r.update(test_loglik=5.0))
    status, text, err = _rerun(capsys, out, "--no-retrain")
    assert status == 2
    assert f"{run / 'result.json'}" in err and "--no-retrain" in err
    status, text, _ = _rerun(capsys, out)
    assert status == 0
    assert f"damaged, trained again: {run / 'result.json'}" in text
    assert "+5.000" not in text and "0 reused" in text
    assert json.loads((run / "result.json").read_text())["test_loglik"] == true["test_loglik"]
    assert _table_row(run)[0]["test_loglik"] == true["test_loglik"]
    assert (run / "result.json.damaged").exists()  # kept for inspection
    status, text, _ = _rerun(capsys, out)
    assert "1 reused" in text  # the retrained run verifies


def test_a_consistently_forged_result_and_points_fail_their_digests(capsys, finished_sweep):
    # beyond the list: result.json and test_points.npz edited to agree (the
    # score recomputes), but run.json's digests were not updated
    out, run, _ = finished_sweep
    points = dict(np.load(run / "test_points.npz"))
    points["model"] = points["model"] + 1.0
    np.savez(run / "test_points.npz", **points)
    _edit_json(run / "result.json", lambda r: r.update(test_loglik=float(np.mean(points["model"]))))
    status, text, _ = _rerun(capsys, out)
    assert status == 0
    assert "SHA-256 is not the one recorded" in text and "0 reused" in text


def test_a_result_holding_nan_is_retrained_and_the_tables_stay_whole(capsys, finished_sweep):
    # finding 3: result.json holding NaN made the rerun fail with "Out of range
    # float values are not JSON compliant", leaving results.json truncated,
    # results.csv holding nan, summary.json and table.md stale
    out, run, true = finished_sweep
    text = (run / "result.json").read_text()
    (run / "result.json").write_text(text.replace(repr(true["test_loglik"]), "NaN"))
    status, text, err = _rerun(capsys, out)
    assert status == 0, err
    assert f"damaged, trained again: {run / 'result.json'}" in text
    tables = run.parent.parent
    assert json.loads((tables / "results.json").read_text())[0]["test_loglik"] == \
        true["test_loglik"]
    assert "nan" not in (tables / "results.csv").read_text().lower()
    json.loads((tables / "summary.json").read_text())


def test_tables_are_written_atomically_and_non_finite_scores_are_null(tmp_path):
    # finding 3: the tables; and a legitimate non-finite score (a held-out point
    # of density 0 gives a mean of -inf) is null in JSON, -inf in the table
    from radref.user import reproduce
    row = {"problem": "ring", "model": "rad", "seed": 0, "n_parameters": 10, "steps": 5,
           "lr": 0.001, "train_loglik": -1.5, "test_loglik": -1.25}
    reproduce.write_tables([row], str(tmp_path))
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    with pytest.raises(TypeError):  # a value that is not JSON: nothing is written
        reproduce.write_tables([dict(row, test_loglik=-1.0), dict(row, seed=1, lr=object())],
                               str(tmp_path))
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before
    reproduce.write_tables([dict(row, test_loglik=-np.inf), dict(row, seed=1)], str(tmp_path))
    assert json.loads((tmp_path / "results.json").read_text())[0]["test_loglik"] is None
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary[0]["test_mean"] is None and summary[0]["test_std"] is None
    assert "| ring | +3.57 | +1.85 | -inf (2 seeds) |" in (tmp_path / "table.md").read_text()
    assert sorted(os.listdir(tmp_path)) == sorted(before)


@pytest.mark.parametrize("damage", ["empty_result", "truncated_run", "missing_key",
                                    "points_missing", "result_list"])
def test_unreadable_run_files_are_named(capsys, finished_sweep, damage):
    # finding 8: an empty result.json gave "Expecting value: line 1 column 1
    # (char 0)", a truncated run.json "Unterminated string...", a missing key a
    # KeyError traceback; the sweep stopped and nothing said which file
    out, run, true = finished_sweep
    if damage == "empty_result":
        (run / "result.json").write_text("")
        named = run / "result.json"
    elif damage == "truncated_run":
        text = (run / "run.json").read_text()
        (run / "run.json").write_text(text[:len(text) // 2])
        named = run / "run.json"
    elif damage == "missing_key":
        _edit_json(run / "result.json", lambda r: r.pop("test_loglik"))
        named = run / "result.json"
    elif damage == "points_missing":
        (run / "test_points.npz").unlink()
        named = run / "test_points.npz"
    else:
        (run / "result.json").write_text("[1, 2]")
        named = run / "result.json"
    status, text, err = _rerun(capsys, out, "--no-retrain")
    assert status == 2 and str(named) in err and "Traceback" not in err
    status, text, err = _rerun(capsys, out)
    assert status == 0, err
    assert f"damaged, trained again: {named}" in text
    assert json.loads((run / "result.json").read_text())["test_loglik"] == true["test_loglik"]
    assert json.loads((run / "run.json").read_text())["seed"] == 0


def test_a_damaged_checkpoint_of_an_unfinished_run_is_named_and_restarted(capsys, tmp_path):
    # beyond the list: a run interrupted before result.json whose checkpoint
    # is damaged stopped the whole sweep with a CheckpointError
    out = tmp_path / "results"
    assert main(SWEEP + ["--out", str(out)]) == 0
    capsys.readouterr()
    (run,) = out.glob("protocol-*/runs/ring-rad-s0")
    true = json.loads((run / "result.json").read_text())
    (run / "result.json").unlink()
    (run / "checkpoint.npz").write_bytes(b"PK\x03\x04 garbage")
    status, text, err = _rerun(capsys, out)
    assert status == 0, err
    assert f"damaged, trained again: {run / 'checkpoint.npz'}: not a readable" in text
    assert json.loads((run / "result.json").read_text())["test_loglik"] == true["test_loglik"]


def test_the_committed_runs_verify_and_are_reused():
    # the committed runs (validation/results/study) were written before run.json
    # recorded digests: each verifies by its test_points.npz, and plans as reused
    from radref.user import reproduce
    study = os.path.join(REPO_ROOT, "validation", "results", "study")
    n = 0
    for protocol in sorted(os.listdir(study)):
        runs = os.path.join(study, protocol, "runs")
        if not os.path.isdir(runs):
            continue
        for name in sorted(os.listdir(runs)):
            directory = os.path.join(runs, name)
            with open(os.path.join(directory, "run.json")) as f:
                spec = reproduce.run_settings(json.load(f))
            assert reproduce.verify_finished_run(directory, spec) is not None, directory
            plan = reproduce.plan_run(os.path.join(study), spec)
            assert plan.status == "reused" and plan.damaged is None, directory
            n += 1
    assert n >= 100


# ======================================================================
# Finding 4: SIGTERM or SIGKILL of `radref reproduce` leaves no worker behind
# ======================================================================

def _children(pid):
    """The pids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _running(pid):
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_sweep_leaves_no_worker_behind(tmp_path, sig):
    # finding 4: `kill -TERM` (or -KILL) of a running `radref reproduce` left
    # its pool workers alive; they finished their runs after the client was
    # gone, beside a restarted sweep
    out = tmp_path / "results"
    # one segment of 200,000 steps: no periodic checkpoint comes before the signal
    client = subprocess.Popen([sys.executable, "-m", "radref", "reproduce", "--quick",
                               "--steps", "200000", "--eval-every", "200000", "--n-train", "200",
                               "--n-test", "100", "--batch-size", "50", "--seeds", "0",
                               "--problems", "ring", "spiral", "--models", "rad", "--workers",
                               "2", "--out", str(out)],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    workers = []
    try:
        _wait_for(lambda: len(list(out.glob("protocol-*/runs/*/progress.json"))) == 2,
                  what="both runs to start")
        time.sleep(2.0)  # training
        workers = [pid for pid in _children(client.pid) if _running(pid)]
        workers += [grandchild for pid in workers for grandchild in _children(pid)]
        assert len(workers) >= 2
        client.send_signal(sig)
        _, err = client.communicate(timeout=120)
        if sig == signal.SIGTERM:
            assert client.returncode == 143 and "radref: terminated" in err
        _wait_for(lambda: not any(_running(pid) for pid in workers), timeout=60,
                  what="the workers to exit")
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
        for pid in workers:  # (when the test fails: leave nothing running)
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
    # no temporary file left, no run directory locked; after SIGTERM each run
    # saved the step under way (nothing lost), as Ctrl-C does
    runs = list(out.glob("protocol-*/runs/*"))
    assert len(runs) == 2
    for run in runs:
        assert not [n for n in os.listdir(run) if n.endswith(".tmp")]
        from radref.training.files import is_locked
        assert is_locked(str(run)) is None
        if sig == signal.SIGTERM:
            assert load_checkpoint(run / "checkpoint.npz")[0]["step"] > 0


# ======================================================================
# Finding 9: SIGTERM saves what Ctrl-C saves; no temporary file is left
# ======================================================================

def _start_train(tmp_path, *extra):
    return subprocess.Popen([sys.executable, "-m", "radref", "train", "--layers", "2",
                             "--steps", "1000000", "-n", "600", "--batch-size", "100", "--quiet",
                             "--out", str(tmp_path / "m.npz")] + list(extra), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _radref_leftovers(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith(".radref-")
                  or n.endswith(".tmp"))


@pytest.mark.parametrize("with_checkpoint", [True, False])
def test_sigterm_during_train_saves_a_checkpoint_and_exits_143(tmp_path, with_checkpoint):
    # finding 9: SIGTERM saved nothing (Ctrl-C does)
    ck = tmp_path / ("ck.npz" if with_checkpoint else "m.checkpoint.npz")
    extra = ["--checkpoint", str(ck), "--checkpoint-every", "1"] if with_checkpoint else []
    child = _start_train(tmp_path, *extra)
    try:
        _wait_for(lambda: (tmp_path / ".m.npz.radref-lock").exists()
                  and (not with_checkpoint or ck.exists()), what="training to start")
        time.sleep(0.5)
    finally:
        err = _terminated(child, signal.SIGTERM)
    assert child.returncode == 143, err
    step = int(err.split("terminated (SIGTERM) after step ")[1].split()[0])
    assert f"the training state is saved in {ck}" in err and "resume with:" in err
    assert load_checkpoint(ck)[0]["step"] == step > 0
    assert f"--checkpoint {ck}" in err.split("resume with:")[1]
    assert _radref_leftovers(tmp_path) == []


def _terminated(child, *signals):
    """Send ``signals`` to a running ``radref`` child and collect its stderr; a
    child that outlives 120 s is killed (the test then fails on its status)."""
    try:
        for signum in signals:
            if child.poll() is None:
                child.send_signal(signum)
        return child.communicate(timeout=120)[1]
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()


def test_a_second_sigterm_stops_at_once_and_leaves_no_temporary_file(tmp_path):
    # finding 9: `.radref-*.tmp` files piled up after SIGTERM; here a checkpoint
    # is written after every step and two SIGTERMs come in quick succession
    ck = tmp_path / "ck.npz"
    for attempt in range(3):
        child = _start_train(tmp_path, "--checkpoint", str(ck), "--checkpoint-every", "1",
                             "--seed", "0")
        try:
            _wait_for(lambda: _lock_holder(tmp_path / ".m.npz.radref-lock") == child.pid,
                      what="training to start")
            time.sleep(0.3 + 0.2 * attempt)
        finally:
            err = _terminated(child, signal.SIGTERM, signal.SIGTERM)
        assert child.returncode == 143, err
        assert "Traceback" not in err
        assert _radref_leftovers(tmp_path) == [], attempt
        load_checkpoint(ck)  # whole: the old one or the new one


def test_sigkill_leftovers_are_removed_by_the_next_run(tmp_path):
    # finding 9 (SIGKILL): nothing can clean up at once, but a temporary file
    # of the killed process is removed by the next write into its directory
    ck = tmp_path / "ck.npz"
    child = _start_train(tmp_path, "--checkpoint", str(ck), "--checkpoint-every", "1")
    _wait_for(ck.exists, what="the first checkpoint")
    child.kill()
    child.communicate()
    # a kill between mkstemp and the rename leaves a file like this one
    leftover = tmp_path / f".radref-{child.pid}-{_host_tag()}-abcdefgh.tmp"
    leftover.write_bytes(b"PK\x03\x04 half")
    resumed = subprocess.run([sys.executable, "-m", "radref", "train", "--layers", "2",
                              "--steps", str(load_checkpoint(ck)[0]["step"] + 3), "-n", "600",
                              "--batch-size", "100", "--quiet", "--out", str(tmp_path / "m.npz"),
                              "--checkpoint", str(ck), "--checkpoint-every", "1"],
                             env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert _radref_leftovers(tmp_path) == []


def _lock_holder(lock):
    try:
        return json.loads(lock.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def _host_tag():
    import hashlib
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


# ======================================================================
# Finding 10: diverging training is recognised; blame only a real culprit
# ======================================================================

def _radref(*argv, timeout=600):
    return subprocess.run([sys.executable, "-m", "radref"] + [str(a) for a in argv], env=ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def moons_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("moons") / "moons.csv"
    assert _radref("data", "two_moons", "-n", "3000", "--out", path).returncode == 0
    return path


def test_diverging_training_warns_with_the_step_the_figure_and_the_remedy(tmp_path, moons_csv):
    # finding 10 (first part): `radref train --lr 10 --steps 300` exited 0 with a
    # mean log-likelihood of -2507 nats and no warning; RadFlow(lr=10).fit(X) too
    result = _radref("train", "--data", moons_csv, "--lr", "10", "--steps", "300", "--quiet",
                     "--out", tmp_path / "m.npz")
    assert result.returncode == 0, result.stderr  # warned, not stopped: the model is saved
    (line,) = [w for w in result.stderr.splitlines() if w.startswith("radref: warning:")]
    assert "training is diverging at step 100: the smoothed log-likelihood is -" in line
    assert "try a smaller --lr" in line and "now 10" in line
    # the summary after training says so too (a new user missed the warning among the lines)
    assert "this training run diverged (from step 100" in result.stdout
    assert "nats on the training points" in result.stdout and "e+" not in result.stdout
    X = np.loadtxt(moons_csv, delimiter=",")
    from radref.training.diagnostics import DivergenceWarning
    with pytest.warns(DivergenceWarning, match=r"diverging at step \d+: .* nats per point, "
                                               r"far below its -2\.\d+ at the start"):
        RadFlow(lr=10, steps=300, progress=False, random_state=0).fit(X)
    # a run that works never warns (the suite turns any warning into an error)
    assert RadFlow(steps=300, progress=False, random_state=0).fit(X).history_["divergence"] == []
    # the history keeps it, across a fit resumed from its checkpoint; inside
    # naming_the_run the warning names the run (radref reproduce's logs)
    from radref.training.diagnostics import naming_the_run
    checkpoint = str(tmp_path / "diverging.npz")
    with pytest.warns(DivergenceWarning, match=r"^run ring s7: training is diverging at step"):
        with naming_the_run("ring s7"):
            RadFlow(lr=10, steps=200, progress=False, random_state=0).fit(
                X, checkpoint=checkpoint, checkpoint_every=100)
    resumed = RadFlow(lr=10, steps=300, progress=False, random_state=0).fit(
        X, checkpoint=checkpoint, checkpoint_every=100)
    (entry,) = resumed.history_["divergence"]
    assert entry["step"] == 100 and entry["message"].startswith("training is diverging at step")
    assert resumed.history_["step"] == list(range(1, 301))
    # to stop instead of warning: a filter turns the warning into an error
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)
        with pytest.raises(DivergenceWarning):
            RadFlow(lr=10, steps=300, progress=False, random_state=0).fit(X)


def test_an_ordinary_point_is_not_blamed_for_diverged_parameters(tmp_path, moons_csv):
    # finding 10 (second part): at --lr 100 training stopped with "non-finite
    # value ... for training point 2367 ... row 2368 of moons.csv", blaming an
    # ordinary point, and the hint about a smaller --lr never appeared
    result = _radref("train", "--data", moons_csv, "--lr", "100", "--steps", "300", "--quiet",
                     "--out", tmp_path / "m.npz")
    assert result.returncode == 2
    assert "training stopped: non-finite value at training step" in result.stderr
    assert "no single training point is at fault" in result.stderr
    assert "a smaller --lr (now 100) may help" in result.stderr
    assert "row " not in result.stderr.split("training stopped:")[1].replace("rows", "")
    assert not (tmp_path / "m.npz").exists()
    # a real outlier is still named, with its row of the file
    X = np.loadtxt(moons_csv, delimiter=",")[:600]
    X[41] = [1e200, 0.0]
    far = tmp_path / "far.csv"
    np.savetxt(far, X, delimiter=",", fmt="%.17g")
    result = _radref("train", "--data", far, "--steps", "5", "--quiet", "--out",
                     tmp_path / "m.npz")
    assert result.returncode == 2 and f"that is row 42 of --data {far}" in result.stderr


def test_sampling_a_diverged_model_warns(tmp_path, moons_csv):
    # finding 10 (third part): sampling a diverged model printed inf rows
    # without a warning.  The model: --lr 10 for 100 steps on two moons.
    result = _radref("train", "--data", moons_csv, "--lr", "10", "--steps", "100", "--quiet",
                     "--out", tmp_path / "diverged.npz")
    assert result.returncode == 0
    result = _radref("sample", "--model", tmp_path / "diverged.npz", "-n", "500",
                     "--out", tmp_path / "s.csv")
    assert result.returncode == 0
    assert "radref: warning: " in result.stderr and "samples are not finite" in result.stderr
    assert "inf" in (tmp_path / "s.csv").read_text()
    from radref.user.inference import NonFiniteSampleWarning
    model = load_model(tmp_path / "diverged.npz")
    with pytest.warns(NonFiniteSampleWarning, match=r"\d+ of 500 samples are not finite"):
        samples = model.sample(500, random_state=0)
    assert not np.all(np.isfinite(samples))
    X = np.loadtxt(moons_csv, delimiter=",")
    ok = RadFlow(n_layers=2, hidden=4, steps=20, progress=False, random_state=0).fit(X)
    assert np.all(np.isfinite(ok.sample(500, random_state=0)))  # and no warning


def test_figures_and_golden_files_are_written_atomically(tmp_path, model_path, monkeypatch):
    # beyond the list: `radref plot`/`demo` figures and `radref golden` wrote
    # their files in place; a failure midway left half a file
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    from radref.user.plots import plot_model
    figure = tmp_path / "m.png"
    figure.write_bytes(b"the old figure")

    def savefig_fails(self, fname, **kwargs):
        if isinstance(fname, str):
            with open(fname, "wb") as f:
                f.write(b"\x89PNG half")
        else:
            fname.write(b"\x89PNG half")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(Figure, "savefig", savefig_fails)
    with pytest.raises(OSError, match="disk full"):
        plot_model(str(figure), load_model(model_path), n_samples=50)
    monkeypatch.undo()
    assert figure.read_bytes() == b"the old figure"
    assert os.listdir(tmp_path) == ["m.png"]
    from radref.reference.golden import document
    (tmp_path / "g").mkdir()
    old = tmp_path / "g" / document.JSON_NAME
    old.write_text("old")
    monkeypatch.setattr(document, "dumps", lambda jdoc: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        document.write_golden(str(tmp_path / "g"))
    assert old.read_text() == "old" and os.listdir(tmp_path / "g") == [document.JSON_NAME]


def test_a_zip_directory_declaring_a_huge_size_is_refused_before_it_is_read(tmp_path,
                                                                            model_path):
    # beyond the list: zipfile reads the whole central directory into Python
    # objects; its declared size is checked first
    data = bytearray(model_path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end + 12:end + 16] = (2 ** 30).to_bytes(4, "little")
    bad = tmp_path / "dir.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="its zip directory declares 1073741824 bytes"):
        load_checkpoint(bad)


def test_a_sweep_refuses_a_run_another_process_is_writing(capsys, finished_sweep):
    # beyond the list: a second sweep (or an orphaned worker) on the same run
    # directory; the run's lock names the holder
    from radref.training.files import exclusive
    out, run, _ = finished_sweep
    (run / "result.json").unlink()  # unfinished: the sweep would train it
    with exclusive(str(run)):
        status, _, err = _rerun(capsys, out)
    assert status == 2
    assert f"{run} is being written by process {os.getpid()} on host" in err


def test_damaged_protocol_and_progress_files_are_named_or_ignored(capsys, finished_sweep,
                                                                  tmp_path):
    # beyond the list: a truncated protocol.json stopped the sweep with a bare
    # JSON error; a damaged progress.json (advisory) must not stop a sweep
    from radref.user import sweep
    out, run, _ = finished_sweep
    progress = run / "progress.json"
    progress.write_text('{"session": ')
    job = sweep.Job("ring rad s0", {}, "k", str(progress), 60, 0, "r")
    assert "runs done 0/1" in sweep.status_line([job], "s", [], 1, 0, 1, 1.0)
    protocol = run.parent.parent / "protocol.json"
    protocol.write_text(protocol.read_text()[:20])
    status, _, err = _rerun(capsys, out)
    assert status == 2 and f"{protocol}: unreadable" in err and "Traceback" not in err


def test_a_crafted_test_points_file_is_refused_from_its_header(capsys, finished_sweep):
    # beyond the list: test_points.npz is read to verify a run; a member
    # declaring 200 million values is refused from its .npy header, before
    # its data is read (as a checkpoint's members are)
    import io
    out, run, true = finished_sweep
    _edit_json(run / "run.json", lambda r: r.pop("files"))  # as a run without digests
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (200_000_000,)})
    member.write(bytes(2 ** 16))
    with zipfile.ZipFile(run / "test_points.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.npy", member.getvalue())
    status, text, err = _rerun(capsys, out)
    assert status == 0, err
    assert "model declares float64 of shape (200000000,)" in text
    assert json.loads((run / "result.json").read_text())["test_loglik"] == true["test_loglik"]


@pytest.mark.parametrize("hard_links", [True, False])
def test_atomic_write_without_replace_never_replaces(tmp_path, monkeypatch, hard_links):
    from radref.training import files
    if not hard_links:  # a file system without hard links: the fallback check
        def no_link(src, dst):
            raise PermissionError(1, "Operation not permitted")
        monkeypatch.setattr(files.os, "link", no_link)
    new = tmp_path / "new.bin"
    with files.atomic_write(new, replace=False) as f:
        f.write(b"first")
    assert new.read_bytes() == b"first"
    with pytest.raises(FileExistsError):
        with files.atomic_write(new, replace=False) as f:
            f.write(b"second")
    assert new.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.bin"]
    with files.atomic_write(new) as f:  # replace=True (the default) replaces
        f.write(b"third")
    assert new.read_bytes() == b"third"


def test_local_pool_finds_its_workers_and_only_them():
    # stop_workers signals the pool's workers, found through multiprocessing's
    # public active_children: a child started before the pool is not one of them
    import multiprocessing
    from radref.user.sweep import LocalPool
    bystander = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,))
    bystander.start()
    try:
        with LocalPool(2) as pool:
            for future in [pool.submit(time.sleep, 0.2, key=i) for i in range(4)]:
                future.result(timeout=120)
            workers = {p.pid for p in pool._workers()}
            children = {pid for pid in _children(os.getpid()) if _running(pid)}
            assert bystander.pid in children and bystander.pid not in workers
            assert 1 <= len(workers) <= 2 and workers <= children
        assert bystander.is_alive()
    finally:
        bystander.kill()
        bystander.join()
