"""The paper's experiment (§4; notes §7) and users' own sweeps, as protocol-keyed runs.

A *run* trains one model on one problem with one seed under one *protocol*
(:mod:`radref.user.protocol`: what a protocol holds, and the directory
``OUT/protocol-<hash>/runs/<problem>-<model>-s<seed>/`` of each run).

A run is reused only when its ``run.json`` equals the requested run in every
setting, and a checkpoint is resumed only under the same condition; anything
else is an error naming the settings that differ.  A finished run is also
verified before it is reused or tabulated (:func:`verify_finished_run`): the
SHA-256 of ``result.json`` and ``test_points.npz`` that its worker recorded
in ``run.json`` (``"files"``), and its held-out score recomputed from
``test_points.npz``; a run that fails is named, moved aside
(``*.damaged``) and trained again, or refused with ``--no-retrain``.  A
worker holds its run directory's lock (:func:`radref.training.files.exclusive`)
while it trains.  Runs of another protocol go
to another directory, so sweeps over hyperparameters share one ``OUT``.

Runs are independent tasks (:func:`run_task`) for a local process pool or a
Dask cluster (:mod:`radref.user.sweep`).  The protocols and directories are
:mod:`radref.user.protocol`, the verification of a run's files
:mod:`radref.user.runfiles`, the tables :mod:`radref.user.tables`, the command
line :mod:`radref.user.cli_reproduce` (``radref reproduce``).
"""
import os
import socket
from dataclasses import dataclass

import numpy as np

from radref import datasets
from radref._version import __version__
from radref.core.flow import flow_log_density
from radref.training.checkpoint import CheckpointError
from radref.training.diagnostics import naming_the_run
from radref.training.files import LockedError, exclusive, is_locked
from radref.user import sweep
from radref.user.estimators import MODELS as ESTIMATORS
from radref.user.protocol import (  # noqa: F401  (re-exported: the names of radref 0.2)
    ADAM, ARCHITECTURES, CHECKPOINT_FILE, DEFAULT_OUT, FULL, MODELS, PAPER, POINTS_FILE,
    PROGRESS_FILE, QUICK, RESULT_FILE, RUN_FILE, SCHEME, ReproduceError, describe_differences,
    describe_protocol, differences, make_protocol, protocol_dir, protocol_hash, run_dir,
    run_label, run_spec)
from radref.user.runfiles import (  # noqa: F401  (re-exported)
    RESULT_KEYS, DamagedRun, checkpoint_step, file_digest, json_ready, record_digests,
    run_settings, verify_finished_run, write_test_points, _run_files)
from radref.user.sweep import RunFileError, read_json, write_json_atomic
from radref.user.tables import (  # noqa: F401  (re-exported)
    TABLE_KEYS, finished_results, markdown_table, negative_entropies, summarize, write_tables)


# ------------------------------------------------------------------- planning
@dataclass
class PlannedRun:
    """A run of the sweep and what its directory holds: ``status`` is
    ``"reused"`` (finished, same protocol: ``result`` holds its scores),
    ``"resume"`` (a checkpoint at ``start_step``) or ``"new"``."""
    spec: dict
    directory: str
    status: str
    start_step: int = 0
    result: dict = None
    #: why the run's files cannot be trusted (they are moved aside and the run
    #: trained again), and which files those are
    damaged: str = None
    damaged_files: tuple = ()


def plan_run(out, spec):
    """What to do with ``spec``: a :class:`PlannedRun`, or an error message."""
    directory = run_dir(out, spec)
    if not os.path.isdir(directory) or not _run_files(directory):
        return PlannedRun(spec, directory, "new")
    holder = is_locked(directory)
    if holder is not None:
        return f"{directory} is being written by {holder}: wait for it to finish, or stop it"
    run_path = os.path.join(directory, RUN_FILE)
    try:
        stored = read_json(run_path)
    except RunFileError as exc:
        stored, damaged = None, DamagedRun(str(exc))
    else:
        damaged = None
        if stored is not None and not isinstance(stored, dict):
            stored, damaged = None, DamagedRun(f"{run_path}: not a JSON object")
    if stored is None and damaged is None:
        return (f"{directory} holds files but no {RUN_FILE}, so nothing says which protocol "
                f"made them: not reused, not resumed (move it away or choose another --out)")
    if damaged is None:
        found = differences(run_settings(stored), spec)
        if found:
            return f"{directory} holds a run of other settings: {describe_differences(found)}"
        try:
            result = verify_finished_run(directory, spec)
        except DamagedRun as exc:
            damaged = exc
        else:
            if result is not None:
                return PlannedRun(spec, directory, "reused", spec["protocol"]["steps"], result)
    moved = (RESULT_FILE, POINTS_FILE) + ((RUN_FILE,) if stored is None else ())
    checkpoint = os.path.join(directory, CHECKPOINT_FILE)
    try:
        step = checkpoint_step(checkpoint)
    except (CheckpointError, OSError) as exc:
        step = 0
        problem = str(exc) if str(exc).startswith(checkpoint) else f"{checkpoint}: {exc}"
        damaged = DamagedRun(f"{damaged}; {problem}" if damaged else problem)
        moved += (CHECKPOINT_FILE,)
    plan = PlannedRun(spec, directory, "resume" if step else "new", step)
    if damaged is not None:
        plan.damaged = str(damaged)
        plan.damaged_files = tuple(name for name in moved
                                   if os.path.exists(os.path.join(directory, name)))
    return plan


def check_protocol_dirs(out, protocols):
    """Errors for protocol directories whose ``protocol.json`` is not the
    protocol their name stands for (a copied or edited directory)."""
    errors = []
    for protocol in protocols:
        try:
            stored = read_json(os.path.join(protocol_dir(out, protocol), "protocol.json"))
        except RunFileError as exc:
            errors.append(f"{exc} (it says which protocol the directory holds: restore it, "
                          f"or move the directory away)")
            continue
        if stored is not None and stored != protocol:
            errors.append(f"{protocol_dir(out, protocol)}/protocol.json is another protocol: "
                          f"{describe_differences(differences(stored, protocol))}")
    return errors


def plan_runs(out, specs, retrain=True):
    """Plan every run; one :class:`ReproduceError` lists every conflict (and,
    with ``retrain=False``, every damaged run)."""
    errors = check_protocol_dirs(out, unique_protocols(specs))
    planned = []
    for spec in specs:
        plan = plan_run(out, spec)
        if isinstance(plan, str):
            errors.append(plan)
        else:
            planned.append(plan)
            if plan.damaged and not retrain:
                errors.append(f"damaged, not retrained (--no-retrain): {plan.damaged}")
    if errors:
        shown = "\n  ".join(errors[:10])
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise ReproduceError(f"{len(errors)} stored run(s) cannot be reused under the "
                             f"requested settings:\n  {shown}{more}")
    return planned


def write_plan(out, planned):
    """Create the protocol and run directories with their ``protocol.json``
    and ``run.json`` (before any task starts: a worker checks its run against them)."""
    for plan in planned:
        if plan.status == "reused":
            continue
        os.makedirs(plan.directory, exist_ok=True)
        for name in plan.damaged_files:  # kept for inspection, never reused
            path = os.path.join(plan.directory, name)
            os.replace(path, path + ".damaged")
        protocol_file = os.path.join(protocol_dir(out, plan.spec["protocol"]), "protocol.json")
        if not os.path.exists(protocol_file):
            write_json_atomic(protocol_file, plan.spec["protocol"])
        if not os.path.exists(os.path.join(plan.directory, RUN_FILE)):
            write_json_atomic(os.path.join(plan.directory, RUN_FILE), plan.spec)


def nearest_stored_protocol(out, protocol):
    """The stored protocol of ``out`` closest to ``protocol`` (fewest differing
    settings) and those differences, or ``None``."""
    best = None
    for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
        path = os.path.join(out, name, "protocol.json")
        try:
            stored = read_json(path) if name.startswith("protocol-") and os.path.isfile(path) \
                else None
        except RunFileError:
            continue
        if stored is None or stored == protocol:
            continue
        found = differences(stored, protocol)
        if best is None or len(found) < len(best[1]):
            best = (name, found)
    return best


def unique_protocols(specs):
    return list({spec["protocol_hash"]: spec["protocol"] for spec in specs}.values())


# ------------------------------------------------------------------ one run
def train_one_model(spec, X_train, X_val, checkpoint, until_step):
    """Create the model of run ``spec`` and train it up to step ``until_step``,
    resuming from ``checkpoint`` when it exists (bit-identical to one
    uninterrupted fit) and checkpointing every ``eval_every`` steps.

    The one place that knows the estimators' training API.
    """
    protocol = spec["protocol"]
    architecture = dict(protocol["architectures"][spec["model"]])
    estimator = ESTIMATORS[spec["model"]]
    if architecture.pop("estimator") != estimator.__name__:
        raise ReproduceError(f"run {run_label(spec)}: its protocol names the estimator of "
                             f"another model")
    adam = protocol["adam"]
    model = estimator(**architecture, random_state=spec["seed"], steps=until_step,
                      batch_size=protocol["batch_size"], lr=adam["lr"], beta1=adam["beta1"],
                      beta2=adam["beta2"], eps=adam["eps"], eval_every=protocol["eval_every"],
                      progress=False, **recipe_parameters(protocol))
    return model.fit(X_train, X_val=X_val, checkpoint=checkpoint,
                     checkpoint_every=protocol["eval_every"])


def recipe_parameters(protocol):
    """The estimators' recipe parameters of a protocol.  A cosine decay spans
    the protocol's steps (``lr_decay_steps``), not the segment being fitted."""
    recipe = dict(protocol.get("recipe", {}))
    if recipe.get("lr_schedule") == "cosine":
        recipe["lr_decay_steps"] = protocol["steps"]
    return recipe


def segment_ends(done, steps, every):
    """Steps at which training pauses to report progress: the multiples of
    ``every`` after ``done``, and ``steps``.  Pausing exactly where the held-out
    set is scored anyway keeps the history equal to one uninterrupted fit's."""
    return [s for s in range(every, steps, every) if s > done] + ([steps] if done < steps else [])


def _check_worker(spec, directory):
    """This worker runs the code the protocol names and sees the shared directory."""
    protocol, host = spec["protocol"], socket.gethostname()
    mine = {"scheme": SCHEME, "radref_version": __version__,
            "data_generator_version": datasets.GENERATOR_VERSION}
    for key, value in mine.items():
        if protocol[key] != value:
            raise ReproduceError(f"worker {host} has {key} {value!r}, the run's protocol "
                                 f"needs {protocol[key]!r}: install the same radref on every "
                                 f"worker")
    stored = read_json(os.path.join(directory, RUN_FILE))
    if stored is None:
        raise ReproduceError(f"worker {host} does not see {os.path.join(directory, RUN_FILE)}: "
                             f"--out must be a path shared by the client and every worker")
    found = differences(run_settings(stored), spec)
    if found:
        raise ReproduceError(f"{directory} holds a run of other settings: "
                             f"{describe_differences(found)}")


def run_task(job):
    """Train and score one run (a task for a worker process); returns its result.

    ``job``: ``{"run": spec, "run_dir": absolute path, "session": id}``.
    Resumes from the run's checkpoint when there is one, so a task restarted
    after its worker died continues where the last checkpoint left off.
    """
    spec, directory = job["run"], job["run_dir"]
    _check_worker(spec, directory)
    try:
        with exclusive(directory, f"run directory {directory}"):
            return _run_locked(job, spec, directory)
    except LockedError as exc:
        raise ReproduceError(str(exc)) from None


def _run_locked(job, spec, directory):
    """:func:`run_task` once the run directory is locked."""
    protocol = spec["protocol"]
    X_train, X_test = datasets.train_test_split_samples(
        spec["problem"], protocol["n_train"], protocol["n_test"], random_state=spec["seed"])
    checkpoint = os.path.join(directory, CHECKPOINT_FILE)
    start_step = checkpoint_step(checkpoint)
    reporter = sweep.ProgressReporter(os.path.join(directory, PROGRESS_FILE), job["session"],
                                      protocol["steps"], start_step)
    reporter.report(start_step)
    model = None
    with naming_the_run(run_label(spec, with_protocol=True)):  # several runs share one log
        for until in segment_ends(start_step, protocol["steps"], protocol["eval_every"]):
            model = train_one_model(spec, X_train, X_test, checkpoint, until)
            reporter.report(until)
    if model is None:  # the checkpoint holds every step: load it
        model = train_one_model(spec, X_train, X_test, checkpoint, protocol["steps"])
    result, points = make_result(spec, model, X_train, X_test)
    result.update(resumed_from_step=start_step, host=socket.gethostname(),
                  seconds_this_session=reporter.record["seconds"])
    result = json_ready(result)
    write_test_points(os.path.join(directory, POINTS_FILE), points)
    write_json_atomic(os.path.join(directory, RESULT_FILE), result)
    record_digests(directory)
    return result


def make_result(spec, model, X_train, X_test):
    """Scores and learning curves of a trained run, and its per-point held-out
    log-likelihoods: ``"model"`` (what the recipe makes the model: the
    best parameters of early stopping, else the average, else the last
    iterate) and, with a recipe, ``"last_iterate"`` too.

    The result's ``test_loglik`` is the mean of ``"model"``;
    ``divergence_warnings`` lists the divergences of the training (the
    history's ``"divergence"``); with a recipe
    it also records ``test_loglik_last_iterate``, ``steps_done`` (fewer than
    the protocol's when early stopping stopped), ``best_step`` and
    ``best_validation_score`` (early stopping).
    """
    protocol = spec["protocol"]
    points = {"model": model.score_samples(X_test)}
    recipe = protocol.get("recipe", {})
    extra = {}
    if recipe:
        points["last_iterate"] = flow_log_density(X_test, model.training_params_, model.config_)
        extra = {"recipe": recipe, "steps_done": int(model.n_steps_),
                 "test_loglik_last_iterate": float(points["last_iterate"].mean()),
                 "best_step": model.best_step_,
                 "best_validation_score": model.best_validation_score_}
    return {
        "problem": spec["problem"], "model": spec["model"], "seed": spec["seed"],
        "protocol_hash": spec["protocol_hash"],
        "steps": protocol["steps"], "lr": protocol["adam"]["lr"],
        "batch_size": protocol["batch_size"], "n_train": protocol["n_train"],
        "n_test": protocol["n_test"],
        "hidden": protocol["architectures"][spec["model"]]["hidden"],
        "n_parameters": model.n_parameters(),
        "train_loglik": model.score(X_train), "test_loglik": float(np.mean(points["model"])),
        "val_step": model.history_["val_step"], "val_loglik": model.history_["val_loglik"],
        "train_curve": _smooth(model.history_["loglik"], 250),
        # every session's (the history is the checkpoint's, resumed or not)
        "divergence_warnings": model.history_.get("divergence", []),
        **extra,
    }, points


def _smooth(values, window):
    """Means over consecutive windows (a learning curve small enough to store)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values) // window
    return values[:n * window].reshape(n, window).mean(axis=1).tolist() if n else []
