"""``radref reproduce``: protocol-keyed runs (reuse only on an exact match, a
clear error otherwise), no overwrite of committed results, progress with an
ETA, users' sweeps, and the Dask backend with a worker killed mid-run; plus the
intermediate representations used by the paper's figures."""
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import sys

import numpy as np
import pytest

from radref import __version__, datasets
from radref.core.flow import FlowConfig, flow_forward, flow_init, flow_trajectory
from radref.training.checkpoint import load_checkpoint
from radref.user import cli_reproduce, reproduce, sweep
from radref.user.cli import main
from radref.user.estimators import RadFlow, load_model
from radref.user.protocol import ReproduceError
from radref.user.reproduce import FULL, PAPER, QUICK, markdown_table, summarize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: A tiny protocol: runs of a fraction of a second to a few seconds (--quick also
#: makes the "best achievable" column cheap: 20,000 Monte Carlo points).
TINY = ["--quick", "--n-train", "100", "--n-test", "100", "--batch-size", "50", "--seeds", "0"]


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _protocol_dirs(out):
    return sorted(os.path.join(out, name) for name in os.listdir(out)
                  if name.startswith("protocol-"))


def _only_protocol_dir(out):
    (directory,) = _protocol_dirs(out)
    return directory


def _tree_digest(path):
    """SHA-256 of every file under ``path`` (names and contents)."""
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            digest.update(os.path.relpath(full, path).encode())
            with open(full, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def _table_lines(text):
    return [line for line in text.splitlines() if line.startswith("|")]


# ------------------------------------------------------------- the pipeline
def test_quick_reproduction_end_to_end_then_reuses_every_run(tmp_path, capsys):
    out = str(tmp_path / "results")
    assert main(["reproduce", "--quick", "--workers", "1", "--out", out]) == 0
    first = capsys.readouterr().out
    directory = _only_protocol_dir(out)
    rows = _read_json(os.path.join(directory, "results.json"))
    assert len(rows) == 2 * len(datasets.PROBLEMS)
    assert all(np.isfinite(r["test_loglik"]) and np.isfinite(r["train_loglik"]) for r in rows)
    for problem in datasets.PROBLEMS:
        assert f"| {problem} |" in first
    assert os.path.exists(os.path.join(directory, "table.md"))
    assert "12 run(s): 0 reused, 0 resumed, 12 new" in first
    # the smoke test's numbers are labelled as such, on screen and in the file
    with open(os.path.join(directory, "table.md")) as f:
        written = f.read()
    for text in (first, written):
        assert "SMOKE TEST (--quick: 60 steps, 1000 training points)" in text
        assert "| radref Rad (smoke test) | radref Real NVP (smoke test) |" in text
    # The protocol it ran is the quick one, recorded in full.
    protocol = _read_json(os.path.join(directory, "protocol.json"))
    assert (protocol["steps"], protocol["n_train"], protocol["adam"]["lr"]) == (60, 1000, 1e-3)
    assert os.path.basename(directory) == "protocol-" + reproduce.protocol_hash(protocol)[:12]

    # A second call finds every run finished under the same protocol: it says
    # so, from where, and trains nothing.
    results = [os.path.join(directory, "runs", name, "result.json")
               for name in os.listdir(os.path.join(directory, "runs"))]
    stamps = {path: os.stat(path).st_mtime_ns for path in results}
    assert main(["reproduce", "--quick", "--workers", "1", "--out", out]) == 0
    second = capsys.readouterr().out
    assert f"reused 12 finished run(s) of this exact protocol from " \
           f"{os.path.join(directory, 'runs')}" in second
    assert "12 run(s): 12 reused, 0 resumed, 0 new" in second
    assert "running" not in second
    assert {path: os.stat(path).st_mtime_ns for path in results} == stamps
    assert _table_lines(second) == _table_lines(first)

    # --table-only tabulates the finished runs without training anything.
    os.remove(os.path.join(directory, "table.md"))
    assert main(["reproduce", "--quick", "--table-only", "--out", out]) == 0
    with open(os.path.join(directory, "table.md")) as f:
        assert "| two_moons |" in f.read()


def test_changed_setting_is_another_protocol_never_a_reuse(tmp_path, capsys):
    # The issue's report: after a --quick run, --quick --lr 0.01 printed the
    # lr = 1e-3 result.  Now it trains under its own protocol, says how it
    # differs from the stored one, and gets what a fresh directory gets.
    out, fresh = str(tmp_path / "results"), str(tmp_path / "fresh")
    base = ["reproduce", "--quick", "--problems", "ring", "--models", "rad", "--workers", "1"]
    assert main(base + ["--out", out]) == 0
    default_lr = _read_json(os.path.join(_only_protocol_dir(out), "results.json"))[0]
    capsys.readouterr()
    for option, value in (("--lr", "0.01"), ("--steps", "30")):
        assert main(base + [option, value, "--out", out]) == 0
        text = capsys.readouterr().out
        key = {"--lr": "adam.lr", "--steps": "steps"}[option]
        assert re.search(rf"new protocol .*differs in {re.escape(key)}: ", text)
        assert "0 reused" in text and "reused 1" not in text
        assert main(base + [option, value, "--out", fresh]) == 0
        capsys.readouterr()
    # Three protocols side by side, each with its own result.
    assert len(_protocol_dirs(out)) == 3
    by_dir = {os.path.basename(d): _read_json(os.path.join(d, "results.json"))[0]
              for d in _protocol_dirs(out)}
    for name, row in by_dir.items():
        if (row["lr"], row["steps"]) != (1e-3, 60):
            fresh_row = _read_json(os.path.join(fresh, name, "results.json"))[0]
            assert row["test_loglik"] == fresh_row["test_loglik"]
            assert row["test_loglik"] != default_lr["test_loglik"]


def test_a_run_is_trained_with_exactly_its_protocol(tmp_path, capsys):
    # Independent check of the settings a run uses: the same model fitted
    # directly with the estimator gives bit-identical scores, and the
    # parameter count for 4 hidden units follows docs/results.md's formula
    # (per layer: conditioner 1*h + h + h*10 + 10 + 10, gating 2*h + h + h*3 + 3).
    out = str(tmp_path / "results")
    assert main(["reproduce", "--problems", "two_moons", "--models", "rad", "--steps", "25",
                 "--lr", "0.004", "--hidden", "4", "--eval-every", "10", "--workers", "1",
                 "--out", out] + TINY) == 0
    (row,) = _read_json(os.path.join(_only_protocol_dir(out), "results.json"))
    h = 4
    assert row["n_parameters"] == 6 * ((h + h + 10 * h + 10 + 10) + (2 * h + h + 3 * h + 3))
    X_train, X_test = datasets.train_test_split_samples("two_moons", 100, 100, random_state=0)
    model = RadFlow(n_layers=6, hidden=4, gate_hidden=4, random_state=0, steps=25, batch_size=50,
                    lr=0.004, progress=False).fit(X_train)
    assert (row["train_loglik"], row["test_loglik"]) == (model.score(X_train),
                                                        model.score(X_test))


def test_training_in_segments_equals_one_uninterrupted_fit(tmp_path):
    # run_task pauses at every multiple of eval_every to report progress
    # (resuming from the checkpoint each time); parameters and history must be
    # those of a single fit.
    protocol = reproduce.make_protocol(steps=50, n_train=120, n_test=80, batch_size=40,
                                       lr=0.01, eval_every=20)
    spec = reproduce.run_spec("two_moons", "rad", 3, protocol)
    directory = reproduce.run_dir(str(tmp_path), spec)
    planned = reproduce.plan_runs(str(tmp_path), [spec])
    reproduce.write_plan(str(tmp_path), planned)
    result = reproduce.run_task({"run": spec, "run_dir": directory, "session": "s"})
    X_train, X_test = datasets.train_test_split_samples("two_moons", 120, 80, random_state=3)
    direct = RadFlow(n_layers=6, hidden=8, gate_hidden=8, random_state=3, steps=50, batch_size=40,
                     lr=0.01, eval_every=20, progress=False).fit(X_train, X_val=X_test)
    segmented = load_model(os.path.join(directory, "checkpoint.npz"))
    for name, value in direct.params_.items():
        np.testing.assert_array_equal(segmented.params_[name], value)
    assert segmented.history_ == direct.history_
    assert result["val_step"] == [20, 40, 50]
    assert result["val_loglik"] == direct.history_["val_loglik"]
    assert result["test_loglik"] == direct.score(X_test)


def test_a_diverging_run_is_named_in_its_warning_and_recorded_in_its_result(tmp_path):
    # Several runs share one log: the warning of a diverging training must say
    # whose it is, and the result must keep it (the study attributes them).
    # lr 10 diverges at step 100 (tests/test_integrity.py's finding 10).
    protocol = reproduce.make_protocol(steps=300, n_train=1000, n_test=100, batch_size=500,
                                       lr=10.0, eval_every=100)
    spec = reproduce.run_spec("two_moons", "rad", 0, protocol)
    directory = reproduce.run_dir(str(tmp_path), spec)
    reproduce.write_plan(str(tmp_path), reproduce.plan_runs(str(tmp_path), [spec]))
    label = f"two_moons rad s0 @{spec['protocol_hash'][:6]}"
    from radref.training.diagnostics import DivergenceWarning
    with pytest.warns(DivergenceWarning) as caught:
        result = reproduce.run_task({"run": spec, "run_dir": directory, "session": "s"})
    (warning,) = caught
    assert str(warning.message).startswith(f"run {label}: training is diverging at step 100: ")
    (recorded,) = result["divergence_warnings"]
    assert recorded["step"] == warning.message.step == 100
    assert f"far below its {recorded['start_loglik']:.4g} at the start" in recorded["message"]
    assert "try a smaller --lr" in recorded["message"]
    assert _read_json(os.path.join(directory, "result.json"))["divergence_warnings"] == [recorded]
    # the run was trained in three segments, each resumed from the checkpoint
    # (as after a restart): the divergence of the first is still there; and
    # the record's message is the warning's without the run's name
    assert recorded["message"] == str(warning.message)[len(f"run {label}: "):]
    # a run that trains well records none
    calm = reproduce.run_spec("two_moons", "rad", 0, reproduce.make_protocol(
        steps=300, n_train=1000, n_test=100, batch_size=500, lr=1e-3, eval_every=100))
    directory = reproduce.run_dir(str(tmp_path), calm)
    reproduce.write_plan(str(tmp_path), reproduce.plan_runs(str(tmp_path), [calm]))
    assert reproduce.run_task({"run": calm, "run_dir": directory,
                               "session": "s"})["divergence_warnings"] == []


def test_the_log_line_of_a_finished_run_says_it_diverged(tmp_path, capsys):
    out = str(tmp_path / "results")
    assert main(["reproduce", "--quick", "--problems", "two_moons", "--models", "rad",
                 "--steps", "300", "--lr", "10", "--eval-every", "100", "--workers", "1",
                 "--out", out]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith("[1/1] two_moons rad s0:")]
    assert line.endswith("; diverging for a while (warned at step 100))")


# ------------------------------------------------- mismatches are errors
def test_directory_holding_other_settings_is_an_error_naming_them(tmp_path, capsys):
    out = str(tmp_path / "results")
    base = ["reproduce", "--problems", "ring", "--models", "rad", "--steps", "20",
            "--workers", "1", "--out", out] + TINY
    assert main(base + ["--lr", "0.001"]) == 0
    (stored,) = _protocol_dirs(out)
    # A copied (or edited) directory stands under the name of another protocol.
    target = reproduce.protocol_dir(out, reproduce.make_protocol(20, 100, 100, 50, 0.01,
                                                                 QUICK["eval_every"]))
    os.rename(stored, target)
    before = _tree_digest(out)
    capsys.readouterr()
    assert main(base + ["--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "cannot be reused under the requested settings" in err
    assert "adam.lr: 0.001 stored, 0.01 requested" in err
    assert "protocol.adam.lr: 0.001 stored, 0.01 requested" in err  # run.json too
    assert _tree_digest(out) == before  # nothing trained, nothing written


def test_files_without_a_recorded_protocol_are_not_reused(tmp_path, capsys):
    out = str(tmp_path / "results")
    argv = ["reproduce", "--problems", "ring", "--models", "rad", "--steps", "20",
            "--workers", "1", "--out", out] + TINY
    assert main(argv) == 0
    (run,) = os.listdir(os.path.join(_only_protocol_dir(out), "runs"))
    os.remove(os.path.join(_only_protocol_dir(out), "runs", run, "run.json"))
    capsys.readouterr()
    assert main(argv) == 2
    assert "holds files but no run.json" in capsys.readouterr().err


def test_checkpoint_of_other_settings_is_never_resumed(tmp_path, capsys):
    out = str(tmp_path / "results")
    base = ["reproduce", "--problems", "ring", "--models", "rad", "--steps", "20",
            "--workers", "1", "--out", out] + TINY
    assert main(base + ["--lr", "0.001"]) == 0
    assert main(base + ["--lr", "0.01"]) == 0
    runs = {_read_json(os.path.join(d, "protocol.json"))["adam"]["lr"]:
            os.path.join(d, "runs", "ring-rad-s0") for d in _protocol_dirs(out)}
    # The lr = 1e-3 run loses its result and gets the lr = 0.01 checkpoint.
    os.remove(os.path.join(runs[0.001], "result.json"))
    os.replace(os.path.join(runs[0.01], "checkpoint.npz"),
               os.path.join(runs[0.001], "checkpoint.npz"))
    capsys.readouterr()
    assert main(base + ["--lr", "0.001"]) == 2
    err = capsys.readouterr().err
    assert "1 of 1 run(s) failed" in err and "other data or training settings" in err
    assert not os.path.exists(os.path.join(runs[0.001], "result.json"))


# ------------------------------------------------- committed results
def test_default_output_directory_is_outside_version_control(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "--problems", "grid", "--models", "realnvp", "--steps", "5",
                 "--workers", "1"] + TINY) == 0
    text = capsys.readouterr().out
    assert f"output directory: {tmp_path / 'radref-results'} (not under version control)" in text
    assert _protocol_dirs(str(tmp_path / "radref-results"))
    # ... and git ignores that directory in this repository.
    ignored = subprocess.run(["git", "-C", REPO, "check-ignore", "-q", "radref-results"])
    assert ignored.returncode == 0


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_committed_results_need_an_explicit_flag(tmp_path, capsys):
    repo = tmp_path / "repo"
    results = repo / "results"
    results.mkdir(parents=True)
    (results / "results.csv").write_text("problem,model\nring,rad\n")
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "results")
    argv = ["reproduce", "--problems", "ring", "--models", "rad", "--steps", "5",
            "--workers", "1", "--out", str(results)] + TINY
    before = _tree_digest(results)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "1 file(s) under version control" in err and "--write-committed" in err
    assert _tree_digest(results) == before
    assert main(argv + ["--write-committed"]) == 0
    assert "holds 1 committed file(s); --write-committed given" in capsys.readouterr().out
    assert (results / "results.csv").read_text() == "problem,model\nring,rad\n"


def test_the_issue_command_leaves_the_committed_results_alone(capsys):
    # The issue: this rewrote validation/results down to one row.
    committed = os.path.join(REPO, "validation", "results")
    before = _tree_digest(committed)
    assert main(["reproduce", "--problems", "ring", "--models", "rad", "--seeds", "0",
                 "--out", committed]) == 2
    assert "--write-committed" in capsys.readouterr().err
    assert _tree_digest(committed) == before


# ---------------------------------------------------------------- progress
def test_eta_from_measured_rates_by_hand():
    # Rad measured at 10 steps/s (pooled: 30 steps in 3 s), Real NVP at 40.
    rates = sweep.pooled_rates([("rad", 10, 2.0), ("rad", 20, 1.0), ("nvp", 40, 1.0),
                                ("nvp", 0, 0.0)])
    assert rates == {"rad": 10.0, "nvp": 40.0, None: 70 / 4.0}
    # Work left: 100/10 + 300/10 + 400/40 = 50 s over 2 workers = 25 s, but the
    # 300-step Rad run alone needs 30 s.
    assert sweep.eta_seconds([("rad", 100), ("rad", 300), ("nvp", 400)], rates, 2) == 30.0
    # Over 1 worker the sum dominates; a key without a rate uses the pooled one.
    assert sweep.eta_seconds([("rad", 100), ("other", 35)], rates, 1) == 10.0 + 35 / 17.5
    assert sweep.eta_seconds([("rad", 100)], {}, 2) is None
    assert sweep.eta_seconds([], {}, 2) == 0.0


def test_status_line_from_progress_files(tmp_path):
    def job(name, steps, start_step=0):
        return sweep.Job(label=name, payload={}, key=name, steps=steps, start_step=start_step,
                         progress_path=str(tmp_path / f"{name}.json"), rate_key="k")
    a, b, c = job("a", 100), job("b", 100), job("c", 100, start_step=30)
    sweep.write_json_atomic(a.progress_path, {"session": "now", "step": 30, "start_step": 10,
                                              "seconds": 4.0, "steps": 100})
    # b's file is from an earlier session: b is queued, not in flight.
    sweep.write_json_atomic(b.progress_path, {"session": "old", "step": 90, "start_step": 0,
                                              "seconds": 1.0, "steps": 100})
    line = sweep.status_line([a, b, c], "now", [("k", 30, 1.0)], slots=2, n_done=3,
                             n_total=6, elapsed=3725.0)
    # Rate (20 + 30) / (4 + 1) = 10 steps/s; steps left 70 + 100 + 70 = 240, that is
    # 24 s of work over 2 workers: 12 s (more than any one run's 10 s).
    assert line == "runs done 3/6 · in flight 1: a 30/100 · elapsed 1:02:05 · ETA 0:00:12"


def test_progress_lines_during_a_sweep(tmp_path, capsys):
    out = str(tmp_path / "results")
    assert main(["reproduce", "--problems", "ring", "two_moons", "--models", "rad",
                 "--steps", "300", "--eval-every", "20", "--workers", "1",
                 "--progress-every", "0.05", "--out", out] + TINY) == 0
    lines = capsys.readouterr().out.splitlines()
    status = re.compile(r"runs done ([01])/2 · in flight 1: (ring|two_moons) rad s0 (\d+)/300 "
                        r"· elapsed \d+:\d\d:\d\d · ETA (\d+:\d\d:\d\d|unknown)")
    matches = [status.fullmatch(line) for line in lines]
    matches = [m for m in matches if m]
    assert {m.group(1) for m in matches} == {"0", "1"}  # before and after the first run
    assert any(m.group(4) != "unknown" and int(m.group(3)) > 0 for m in matches)
    assert any(re.fullmatch(r"\[1/2\] (ring|two_moons) rad s0: test .*", line) for line in lines)
    assert any(re.fullmatch(r"runs done 2/2 · elapsed \d+:\d\d:\d\d", line) for line in lines)
    assert sum(line.startswith("| ring |") for line in lines) == 1


# -------------------------------------------------------------- user sweeps
def test_sweep_of_settings_is_one_protocol_per_combination(tmp_path, capsys):
    out = str(tmp_path / "results")
    assert main(["reproduce", "--problems", "ring", "--models", "rad", "--steps", "10", "20",
                 "--lr", "0.001", "0.01", "--workers", "2", "--out", out] + TINY) == 0
    capsys.readouterr()
    protocols = [_read_json(os.path.join(d, "protocol.json")) for d in _protocol_dirs(out)]
    assert sorted((p["steps"], p["adam"]["lr"]) for p in protocols) == [
        (10, 0.001), (10, 0.01), (20, 0.001), (20, 0.01)]
    for directory in _protocol_dirs(out):
        run = _read_json(os.path.join(directory, "runs", "ring-rad-s0", "run.json"))
        assert run["protocol"] == _read_json(os.path.join(directory, "protocol.json"))
        assert run["protocol_hash"] == reproduce.protocol_hash(run["protocol"])
    # One combination of the sweep again: exactly that run is reused.
    assert main(["reproduce", "--problems", "ring", "--models", "rad", "--steps", "20",
                 "--lr", "0.01", "--workers", "1", "--out", out] + TINY) == 0
    assert "1 run(s): 1 reused, 0 resumed, 0 new" in capsys.readouterr().out


def test_task_refuses_other_code_or_an_unshared_directory(tmp_path):
    protocol = reproduce.make_protocol(5, 100, 100, 50, 1e-3, 5)
    spec = reproduce.run_spec("ring", "rad", 0, protocol)
    job = {"run": spec, "run_dir": reproduce.run_dir(str(tmp_path), spec), "session": "s"}
    with pytest.raises(reproduce.ReproduceError, match="--out must be a path shared by"):
        reproduce.run_task(job)
    other = dict(protocol, radref_version="0.0.1")
    spec = reproduce.run_spec("ring", "rad", 0, other)
    with pytest.raises(reproduce.ReproduceError,
                       match=f"radref_version '{re.escape(__version__)}', the run's protocol needs '0.0.1'"):
        reproduce.run_task(dict(job, run=spec))


# ------------------------------------------------------------------- Dask
def _kill_first_checkpointed_worker(out, killed, deadline=120.0):
    """Kill (SIGKILL) the worker process of the first run that writes a
    checkpoint, recording the run and the process."""
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        for progress in sorted(_glob_runs(out, "checkpoint.npz")):
            record = _read_json(os.path.join(os.path.dirname(progress), "progress.json"))
            os.kill(record["pid"], signal.SIGKILL)
            killed.update(run=os.path.basename(os.path.dirname(progress)), pid=record["pid"],
                          step=record["step"])
            return
        time.sleep(0.005)


def _glob_runs(out, name):
    found = []
    for directory in _protocol_dirs(out) if os.path.isdir(out) else []:
        runs = os.path.join(directory, "runs")
        for run in os.listdir(runs) if os.path.isdir(runs) else []:
            if os.path.exists(os.path.join(runs, run, name)):
                found.append(os.path.join(runs, run, name))
    return found


def test_dask_cluster_with_a_killed_worker_gives_the_local_table(tmp_path, capsys, monkeypatch):
    from dask.distributed import LocalCluster
    argv = ["reproduce", "--problems", "ring", "two_moons", "--models", "rad", "--seeds", "0",
            "--steps", "600", "--eval-every", "20", "--n-train", "200", "--n-test", "200",
            "--batch-size", "100", "--progress-every", "1"]
    local, dask = str(tmp_path / "local"), str(tmp_path / "dask")
    assert main(argv + ["--workers", "2", "--out", local]) == 0
    local_text = capsys.readouterr().out
    for var in sweep.BLAS_THREAD_VARIABLES:
        monkeypatch.setenv(var, "1")
    killed = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        killer = threading.Thread(target=_kill_first_checkpointed_worker, args=(dask, killed))
        killer.start()
        status = main(argv + ["--scheduler", cluster.scheduler_address, "--out", dask])
        killer.join()
    dask_text = capsys.readouterr().out
    assert status == 0
    assert f"on a Dask cluster at {cluster.scheduler_address}" in dask_text
    # The killed run was resumed from a checkpoint by another process.
    victim = os.path.join(_only_protocol_dir(dask), "runs", killed["run"])
    result = _read_json(os.path.join(victim, "result.json"))
    assert 0 < result["resumed_from_step"] < 600
    assert _read_json(os.path.join(victim, "progress.json"))["pid"] != killed["pid"]
    assert f"resumed from step {result['resumed_from_step']}" in dask_text
    # Same tables, byte for byte, and bit-identical trained models.
    assert _table_lines(dask_text) == _table_lines(local_text)
    for name in ("results.csv", "table.md", "summary.json"):
        with open(os.path.join(_only_protocol_dir(local), name), "rb") as f, \
                open(os.path.join(_only_protocol_dir(dask), name), "rb") as g:
            assert f.read() == g.read(), name
    for run in ("ring-rad-s0", "two_moons-rad-s0"):
        _, mine, _ = load_checkpoint(os.path.join(_only_protocol_dir(local), "runs", run,
                                                  "checkpoint.npz"))
        _, theirs, _ = load_checkpoint(os.path.join(_only_protocol_dir(dask), "runs", run,
                                                    "checkpoint.npz"))
        for name, value in mine.items():
            np.testing.assert_array_equal(theirs[name], value)


def test_dask_backend_errors_are_one_line(tmp_path, capsys, monkeypatch):
    with pytest.raises(sweep.SweepError, match="cannot reach the Dask scheduler at "
                                                "tcp://127.0.0.1:1"):
        with sweep.DaskCluster("tcp://127.0.0.1:1", timeout=0.5):
            pass
    # Without dask installed: the local pool still works, --scheduler says what to install.
    monkeypatch.setitem(__import__("sys").modules, "dask.distributed", None)
    assert main(["reproduce", "--problems", "ring", "--models", "realnvp", "--steps", "3",
                 "--scheduler", "tcp://127.0.0.1:1", "--out", str(tmp_path)] + TINY) == 2
    assert "pip install 'radref[dask]'" in capsys.readouterr().err


# ---------------------------------------------------- tables and the paper
def test_summary_mean_and_std_over_seeds():
    rows = [{"problem": "spiral", "model": "rad", "seed": s, "test_loglik": v,
             "train_loglik": v + 1, "n_parameters": 10} for s, v in enumerate([1.0, 2.0, 4.0])]
    (cell,) = summarize(rows)
    assert cell["test_mean"] == 7.0 / 3.0
    assert np.isclose(cell["test_std"], np.std([1.0, 2.0, 4.0], ddof=1))
    assert cell["paper"] == PAPER["spiral"][0]
    assert "+2.333 ± 1.528 (3 seeds)" in markdown_table([cell])


def test_a_table_says_where_its_protocol_is_not_the_papers():
    from radref.user.tables import protocol_note
    rows = [{"problem": "spiral", "model": "rad", "seed": 0, "test_loglik": 0.1,
             "train_loglik": 0.2, "n_parameters": 10}]
    paper = reproduce.make_protocol(**{k: FULL[k] for k in ("steps", "n_train", "n_test",
                                                            "batch_size", "lr", "eval_every")})
    assert protocol_note(paper) == (None, None)
    assert markdown_table(summarize(rows), protocol=paper).startswith("| problem | paper Rad")
    faster = dict(paper, adam=dict(paper["adam"], lr=3e-3), steps=20_000)
    table = markdown_table(summarize(rows), protocol=faster)
    assert table.startswith("This protocol differs from the paper's in steps 20000 (paper "
                            "50000), lr 0.003 (paper 0.001)")
    assert "| radref Rad (this protocol) |" in table


def test_full_protocol_is_the_papers():
    # Paper §4.2-4.3 / notes §7: batch 500, 50,000 steps, 10,000 points, >= 3 seeds;
    # Rad 8 hidden units (gating too), Real NVP 56, 6 coupling layers.
    assert (FULL["batch_size"], FULL["steps"], FULL["n_train"]) == (500, 50_000, 10_000)
    assert len(FULL["seeds"]) >= 3
    protocol = reproduce.make_protocol(FULL["steps"], FULL["n_train"], FULL["n_test"],
                                       FULL["batch_size"], FULL["lr"], FULL["eval_every"])
    rad, nvp = protocol["architectures"]["rad"], protocol["architectures"]["realnvp"]
    assert (rad["n_layers"], rad["hidden"], rad["gate_hidden"]) == (6, 8, 8)
    assert (nvp["n_layers"], nvp["hidden"]) == (6, 56)


def test_trajectory_matches_forward():
    for kind in ("rad", "affine"):
        config = FlowConfig(kind, 3, 4, 5, 5)
        params = flow_init(config, out_std=0.4, random_state=1)
        x = np.random.default_rng(2).normal(size=(50, 3))
        _, z, k, _ = flow_forward(x, params, config)
        zs, folded, k_traj = flow_trajectory(x, params, config)
        assert len(zs) == config.n_layers + 1 and zs[0] is x
        np.testing.assert_array_equal(zs[-1], z)
        np.testing.assert_array_equal(k_traj, k)
        if kind == "rad":
            # Outside the folded interval only one branch exists: k = 0 below, 2 above.
            for layer, mask in enumerate(folded):
                transformed = k[:, layer, :] >= 0
                assert not np.any(mask & ~transformed)
                assert np.any(mask) and np.any(transformed & ~mask)
        else:
            assert all(m is None for m in folded)


# ------------------------------------------------------- the training recipe
RECIPES = [
    {"lr_schedule": "cosine", "lr_final_fraction": 0.0, "ema_decay": 0.9},
    {"lr_schedule": "step", "lr_step_size": 15, "lr_gamma": 0.5},
    {"early_stopping": True, "validation_fraction": 0.25, "n_iter_no_change": 1},
]


@pytest.mark.parametrize("recipe", RECIPES, ids=["cosine+ema", "step", "early-stopping"])
def test_recipe_in_segments_equals_one_uninterrupted_fit(tmp_path, recipe):
    # A cosine decay must span the protocol's 50 steps although run_task fits
    # 20, 40 then 50 steps; the average and early stopping's state must
    # survive the pauses.  The direct fit spells the horizon out.
    protocol = reproduce.make_protocol(steps=50, n_train=120, n_test=80, batch_size=40,
                                       lr=0.02, eval_every=20, recipe=recipe)
    spec = reproduce.run_spec("two_moons", "rad", 3, protocol)
    directory = reproduce.run_dir(str(tmp_path), spec)
    reproduce.write_plan(str(tmp_path), reproduce.plan_runs(str(tmp_path), [spec]))
    result = reproduce.run_task({"run": spec, "run_dir": directory, "session": "s"})
    X_train, X_test = datasets.train_test_split_samples("two_moons", 120, 80, random_state=3)
    extra = {"lr_decay_steps": 50} if recipe.get("lr_schedule") == "cosine" else {}
    direct = RadFlow(n_layers=6, hidden=8, gate_hidden=8, random_state=3, steps=50,
                     batch_size=40, lr=0.02, eval_every=20, progress=False, **recipe,
                     **extra).fit(X_train, X_val=X_test)
    for name, value in direct.params_.items():
        np.testing.assert_array_equal(load_model(os.path.join(directory, "checkpoint.npz"))
                                      .params_[name], value)
    assert result["test_loglik"] == direct.score(X_test)
    assert result["recipe"] == recipe and result["steps_done"] == direct.n_steps_
    assert result["best_step"] == direct.best_step_
    with np.load(os.path.join(directory, reproduce.POINTS_FILE)) as points:
        np.testing.assert_array_equal(points["model"], direct.score_samples(X_test))
        last = RadFlow(n_layers=6, hidden=8, gate_hidden=8, random_state=3, steps=50,
                       batch_size=40, lr=0.02, eval_every=20, progress=False,
                       **{k: v for k, v in recipe.items() if k != "ema_decay"}, **extra)
        if "ema_decay" in recipe:  # the last iterate is the fit without averaging
            last.fit(X_train, X_val=X_test)
            np.testing.assert_array_equal(points["last_iterate"], last.score_samples(X_test))
        assert result["test_loglik_last_iterate"] == float(points["last_iterate"].mean())


def test_cosine_recipe_changes_training_and_decays_over_the_whole_protocol(tmp_path):
    # Against a fit whose cosine spans only the first segment (20 steps, then
    # constant at lr * 0): the run's parameters differ, so the horizon is the
    # protocol's, not the segment's.
    recipe = {"lr_schedule": "cosine", "lr_final_fraction": 0.0}
    protocol = reproduce.make_protocol(50, 120, 80, 40, 0.02, 20, recipe=recipe)
    spec = reproduce.run_spec("two_moons", "rad", 0, protocol)
    directory = reproduce.run_dir(str(tmp_path), spec)
    reproduce.write_plan(str(tmp_path), reproduce.plan_runs(str(tmp_path), [spec]))
    reproduce.run_task({"run": spec, "run_dir": directory, "session": "s"})
    X_train, _ = datasets.train_test_split_samples("two_moons", 120, 80, random_state=0)
    short = RadFlow(random_state=0, steps=50, batch_size=40, lr=0.02, progress=False,
                    lr_schedule="cosine", lr_decay_steps=20).fit(X_train)
    model = load_model(os.path.join(directory, "checkpoint.npz"))
    full = RadFlow(random_state=0, steps=50, batch_size=40, lr=0.02, progress=False,
                   lr_schedule="cosine", lr_decay_steps=50).fit(X_train)
    np.testing.assert_array_equal(model.params_["5.cond.W2"], full.params_["5.cond.W2"])
    assert not np.array_equal(model.params_["5.cond.W2"], short.params_["5.cond.W2"])


def test_paper_protocol_hash_does_not_depend_on_the_recipe_options():
    # The paper's training is the empty recipe: the same protocol (and hash,
    # so committed paper-protocol runs stay reusable) as before the options existed.
    plain = reproduce.make_protocol(50, 120, 80, 40, 0.02, 20)
    assert reproduce.make_protocol(50, 120, 80, 40, 0.02, 20, recipe={}) == plain
    assert "recipe" not in plain
    with_recipe = reproduce.make_protocol(50, 120, 80, 40, 0.02, 20,
                                          recipe={"ema_decay": 0.99})
    assert reproduce.protocol_hash(with_recipe) != reproduce.protocol_hash(plain)


def test_recipe_options_of_reproduce(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["reproduce", "--problems", "two_moons", "--models", "rad", "--workers", "1",
                 "--out", out, "--lr-schedule", "cosine", "--ema-decay", "0.9"] + TINY) == 0
    (directory,) = _protocol_dirs(out)
    protocol = _read_json(os.path.join(directory, "protocol.json"))
    assert protocol["recipe"] == {"lr_schedule": "cosine", "lr_final_fraction": 0.0,
                                  "ema_decay": 0.9}
    assert "cosine rate (lr_final_fraction 0), EMA 0.9" in capsys.readouterr().out
    for argv, message in (
            (["--lr-gamma", "0.5"], "--lr-gamma applies to --lr-schedule step only"),
            (["--n-iter-no-change", "3"], "--n-iter-no-change applies with --early-stopping"),
            (["--ema-decay", "1.5"], "--ema-decay must be in (0, 1)"),
            (["--early-stopping", "--validation-fraction", "0"],
             "--validation-fraction must be in (0, 1)")):
        assert main(["reproduce", "--out", str(tmp_path / "x")] + TINY + argv) == 2
        assert message in capsys.readouterr().err
        assert not os.path.exists(tmp_path / "x")


def test_documented_recipe_commands_give_the_committed_recipes():
    # docs/results.md's commands, parsed as the CLI does, give the recipes
    # the committed study runs record (the paper protocol has none).
    import argparse
    from radref.user.options import recipe_from_args
    committed = []
    for path in sorted(os.listdir(os.path.join(REPO, "validation", "results", "study"))):
        if path.startswith("protocol-"):
            committed.append(_read_json(os.path.join(REPO, "validation", "results", "study",
                                                     path, "protocol.json")).get("recipe", {}))
    parser = argparse.ArgumentParser()
    cli_reproduce.add_arguments(parser)
    documented = [recipe_from_args(parser.parse_args(argv)) for argv in (
        [], ["--lr-schedule", "cosine", "--ema-decay", "0.999"],
        ["--early-stopping", "--n-iter-no-change", "4"],
        # the refits of the flows' selection (validation/select_flows.py prints them)
        ["--lr-schedule", "cosine"])]
    def canonical(recipe):
        return json.dumps(recipe, sort_keys=True)
    assert sorted(map(canonical, documented)) == sorted(set(map(canonical, committed)))


# --------------------------------------------- commands that chain: the figures

def _protocol_with_runs(out, steps):
    protocol = reproduce.make_protocol(steps, 100, 100, 50, 1e-3, 10)
    directory = os.path.join(out, "protocol-" + reproduce.protocol_hash(protocol)[:12])
    os.makedirs(os.path.join(directory, "runs"))
    with open(os.path.join(directory, "protocol.json"), "w") as f:
        json.dump(protocol, f)
    return directory


def test_find_results_takes_reproduces_out_and_refuses_when_ambiguous(tmp_path):
    from radref.user.runfiles import find_results
    out = str(tmp_path / "radref-results")
    first = _protocol_with_runs(out, 60)
    assert find_results(out) == first  # the --out of radref reproduce
    assert find_results(first) == first  # a protocol directory itself
    second = _protocol_with_runs(out, 70)
    with pytest.raises(ReproduceError) as error:
        find_results(out)
    message = str(error.value)
    assert message.startswith(f"{out} holds runs of 2 protocols; name one of them:")
    assert f"{first}: 60 steps at batch 50" in message and f"{second}: 70 steps" in message
    with pytest.raises(ReproduceError, match="no such directory; run 'radref reproduce' first"):
        find_results(str(tmp_path / "nothing"))
    with pytest.raises(ReproduceError, match=r"holds no runs \(neither runs/ nor"):
        find_results(str(tmp_path))


def test_paper_figures_names_what_is_missing(tmp_path):
    out = str(tmp_path / "radref-results")
    _protocol_with_runs(out, 60)
    result = subprocess.run([sys.executable, os.path.join(REPO, "validation", "paper_figures.py"),
                             "--results", out], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("paper_figures.py: error: ")
    assert "has no finished run of rad on grid with seed 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_study_refuses_runs_it_cannot_pair_with_one_line(tmp_path):
    out = str(tmp_path / "radref-results")
    _protocol_with_runs(out, 60)  # 100 held-out points: not the paper's 10,000
    result = subprocess.run([sys.executable, os.path.join(REPO, "validation", "study.py"),
                             "--study", out, "--legacy", "", "--figure", ""],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("study.py: error: ") and "Traceback" not in result.stderr
    assert "100 held-out points; the study pairs runs on the paper's" in result.stderr


def test_figures_of_a_smoke_test_say_so(tmp_path):
    from helpers import validation_module
    figures = validation_module("paper_figures")
    quick = _protocol_with_runs(str(tmp_path / "q"), QUICK["steps"])
    protocol = reproduce.make_protocol(QUICK["steps"], QUICK["n_train"], QUICK["n_test"],
                                       QUICK["batch_size"], QUICK["lr"], QUICK["eval_every"])
    with open(os.path.join(quick, "protocol.json"), "w") as f:
        json.dump(protocol, f)
    assert figures.stamp(quick) == ("SMOKE TEST (--quick: 60 steps, 1000 training points): "
                                    "not the paper's protocol, not its figures")
    paper = _protocol_with_runs(str(tmp_path / "p"), FULL["steps"])
    with open(os.path.join(paper, "protocol.json"), "w") as f:
        json.dump(reproduce.make_protocol(**{k: FULL[k] for k in (
            "steps", "n_train", "n_test", "batch_size", "lr", "eval_every")}), f)
    assert figures.stamp(paper) is None
    assert figures.stamp(os.path.join(REPO, "validation", "results")) is None  # committed
