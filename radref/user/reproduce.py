"""The paper's experiment (§4; notes §7) and users' own sweeps, as protocol-keyed runs.

A *run* trains one model (``rad`` or ``realnvp``) on one problem with one seed
under one *protocol*: everything else that decides its numbers (steps, data
sizes, batch size, Adam's lr, beta1, beta2 and eps, both models'
architectures, how often the held-out set is scored, the radref version, the
data generators' version :data:`radref.datasets.GENERATOR_VERSION`, and the
version :data:`SCHEME` of what a run means, e.g. how a seed draws the data).
The SHA-256 of the protocol's canonical JSON names its directory::

    OUT/protocol-<12 hex digits>/protocol.json       the protocol
        runs/<problem>-<model>-s<seed>/run.json      problem, model, seed, protocol, hash
                                      checkpoint.npz training state (every eval_every steps)
                                      progress.json  steps done, by which process, how fast
                                      result.json    scores and learning curves
        results.csv, results.json, summary.json, table.md   of every finished run there

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
Dask cluster (:mod:`radref.user.sweep`).  The command line is
:func:`add_arguments` / :func:`run_from_args` (``radref reproduce``).
"""
import csv
import hashlib
import io
import itertools
import json
import math
import os
import socket
import subprocess
import time
import uuid
import zipfile
from dataclasses import dataclass

import numpy as np

from radref import datasets
from radref._version import __version__
from radref.core.flow import flow_log_density
from radref.training.checkpoint import CheckpointError, load_checkpoint
from radref.training.files import LockedError, atomic_write, exclusive, is_locked
from radref.user import sweep
from radref.training.hyperparameters import HYPERPARAMETER
from radref.user.estimators import MODELS as ESTIMATORS
from radref.user.options import (OptionError, add_options, add_recipe_arguments, check_option,
                                 describe_recipe, recipe_from_args)
from radref.user.sweep import RunFileError, read_json, write_json_atomic

#: Mean log-likelihoods reported in the paper's §4.3 table (nats): (Rad, Real NVP).
PAPER = {"grid": (-1.20, -2.26), "ring": (3.57, 1.85), "two_moons": (-1.21, -1.48),
         "two_circles": (-1.81, -2.17), "spiral": (0.29, -0.36), "many_moons": (-0.83, -1.50)}
MODELS = tuple(ESTIMATORS)  # ("rad", "realnvp"): the one registry of models
#: What a run means (bump when that changes): seed ``s`` draws the data with
#: ``datasets.train_test_split_samples(problem, n_train, n_test, random_state=s)``
#: and seeds the model (``random_state=s``); the scores are mean log-likelihoods
#: of the training set and of the held-out set.
SCHEME = "radref-reproduce/1"
#: Adam's settings other than the learning rate (Kingma & Ba's defaults, the table's).
ADAM = {name: HYPERPARAMETER[name].default for name in ("beta1", "beta2", "eps")}
#: The paper's architectures (§4.2), the models' defaults: 6 coupling layers;
#: Rad 8 hidden units, gating network too; Real NVP 56.
ARCHITECTURES = {name: {"estimator": cls.__name__, **cls.default_architecture()}
                 for name, cls in ESTIMATORS.items()}
#: The paper's protocol (§4.2-4.3): 10,000 points, 50,000 Adam steps at batch 500.
FULL = dict(steps=50_000, n_train=10_000, n_test=10_000, batch_size=500, lr=1e-3,
            seeds=(0, 1, 2), eval_every=2_500)
#: A smoke test of the whole pipeline.
QUICK = dict(steps=60, n_train=1_000, n_test=1_000, batch_size=500, lr=1e-3,
             seeds=(0,), eval_every=30)
#: Default output directory (relative to the current directory; in .gitignore).
DEFAULT_OUT = "radref-results"
RUN_FILE, CHECKPOINT_FILE, PROGRESS_FILE, RESULT_FILE, POINTS_FILE = (
    "run.json", "checkpoint.npz", "progress.json", "result.json", "test_points.npz")


class ReproduceError(ValueError):
    """A reproduction cannot start or did not finish (a one-line error)."""


# ------------------------------------------------------------------ protocols
def make_protocol(steps, n_train, n_test, batch_size, lr, eval_every, hidden=None,
                  recipe=None):
    """The protocol of a run (a JSON-ready dict).

    ``hidden``, when given, replaces the hidden units of both models (and of
    Rad's gating network); otherwise the paper's :data:`ARCHITECTURES` apply.
    ``recipe`` (:func:`radref.user.options.recipe_from_args`: learning-rate
    schedule, parameter averaging, early stopping) applies to both models;
    it is recorded under ``"recipe"`` only when it is not the paper's
    (empty), so the paper protocol's hash does not depend on it.
    """
    architectures = {model: dict(arch) for model, arch in ARCHITECTURES.items()}
    if hidden is not None:
        for arch in architectures.values():
            arch.update({key: int(hidden) for key in ("hidden", "gate_hidden") if key in arch})
    return {"scheme": SCHEME, "radref_version": __version__,
            "data_generator_version": datasets.GENERATOR_VERSION,
            "n_train": int(n_train), "n_test": int(n_test), "steps": int(steps),
            "batch_size": int(batch_size), "adam": {"lr": float(lr), **ADAM},
            "eval_every": int(eval_every), "architectures": architectures,
            **({"recipe": dict(recipe)} if recipe else {})}


def protocol_hash(protocol):
    """SHA-256 (hex) of the protocol's canonical JSON (sorted keys, exact floats)."""
    text = json.dumps(protocol, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def differences(stored, requested, prefix=""):
    """Settings in which two JSON documents differ, as ``(dotted.key, stored,
    requested)``; a key missing on one side shows as ``None`` there."""
    if isinstance(stored, dict) and isinstance(requested, dict):
        found = []
        for key in sorted(set(stored) | set(requested)):
            found += differences(stored.get(key), requested.get(key), f"{prefix}{key}.")
        return found
    return [] if stored == requested else [(prefix.rstrip("."), stored, requested)]


def describe_differences(found, stored="stored", requested="requested"):
    return "; ".join(f"{key}: {a!r} {stored}, {b!r} {requested}" for key, a, b in found)


def describe_protocol(protocol):
    rad, nvp = protocol["architectures"]["rad"], protocol["architectures"]["realnvp"]
    adam = protocol["adam"]
    return (f"{protocol['steps']} steps at batch {protocol['batch_size']}, "
            f"{protocol['n_train']} training / {protocol['n_test']} held-out points, "
            f"Adam lr {adam['lr']:g} (beta1 {adam['beta1']:g}, beta2 {adam['beta2']:g}, "
            f"eps {adam['eps']:g}), Rad {rad['n_layers']} layers x {rad['hidden']} hidden "
            f"(gate {rad['gate_hidden']}), Real NVP {nvp['n_layers']} x {nvp['hidden']}, "
            f"held-out score every {protocol['eval_every']} steps, training recipe "
            f"{describe_recipe(protocol.get('recipe', {}))}, radref "
            f"{protocol['radref_version']}, data generators v{protocol['data_generator_version']}")


def run_spec(problem, model, seed, protocol):
    """Everything that identifies a run (``run.json``)."""
    return {"problem": problem, "model": model, "seed": int(seed),
            "protocol_hash": protocol_hash(protocol), "protocol": protocol}


def protocol_dir(out, protocol):
    return os.path.join(out, "protocol-" + protocol_hash(protocol)[:12])


def run_dir(out, spec):
    return os.path.join(protocol_dir(out, spec["protocol"]), "runs",
                        f"{spec['problem']}-{spec['model']}-s{spec['seed']}")


def run_label(spec, with_protocol=False):
    label = f"{spec['problem']} {spec['model']} s{spec['seed']}"
    return f"{label} @{spec['protocol_hash'][:6]}" if with_protocol else label


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


def checkpoint_step(path):
    """Steps a run's checkpoint holds (0 when there is none)."""
    if not os.path.exists(path):
        return 0
    return int(load_checkpoint(path)[0]["step"])


class DamagedRun(ValueError):
    """A run's files cannot be trusted; the message names the file and why."""


#: what every result.json holds (a file without one of them is damaged)
RESULT_KEYS = ("problem", "model", "seed", "protocol_hash", "steps", "lr", "batch_size",
               "n_train", "n_test", "n_parameters", "train_loglik", "test_loglik")


def file_digest(path):
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2 ** 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_settings(stored):
    """``run.json`` without what its worker adds when the run finishes (the
    files' digests): what must equal the requested run."""
    return {k: v for k, v in stored.items() if k != "files"} if isinstance(stored, dict) \
        else stored


def _same_score(stored, recomputed):
    """A stored mean log-likelihood (``None``: non-finite) against the mean of
    the stored per-point values, bit for bit (both are one float(np.mean))."""
    if not math.isfinite(recomputed):
        return stored is None
    return isinstance(stored, float) and stored == recomputed


def verify_finished_run(directory, spec=None):
    """The verified result of the run in ``directory``, or ``None`` if it has not
    finished (no ``result.json``).

    Checks, in order: ``result.json`` is a readable JSON object with every
    :data:`RESULT_KEYS` entry, of the run ``spec`` (default: the directory's
    ``run.json``); when ``run.json`` records digests (``"files"``: radref
    0.3 writes them), both files match theirs; ``test_points.npz`` holds the
    per-point held-out log-likelihoods of ``n_test`` points whose mean is the
    stored ``test_loglik`` (and ``test_loglik_last_iterate``), bit for bit.
    Runs written before digests existed are verified by the last check alone.

    Raises
    ------
    DamagedRun
        Naming the file and what is wrong with it.
    """
    run_path = os.path.join(directory, RUN_FILE)
    result_path = os.path.join(directory, RESULT_FILE)
    points_path = os.path.join(directory, POINTS_FILE)
    try:
        stored = read_json(run_path)
        result = read_json(result_path)
    except RunFileError as exc:
        raise DamagedRun(str(exc)) from None
    if result is None:
        return None
    if not isinstance(stored, dict) or not isinstance(stored.get("protocol"), dict):
        raise DamagedRun(f"{run_path}: missing or not a run description")
    spec = run_settings(stored) if spec is None else spec
    if not isinstance(result, dict):
        raise DamagedRun(f"{result_path}: not a JSON object")
    missing = [key for key in RESULT_KEYS if key not in result]
    if missing:
        raise DamagedRun(f"{result_path}: no {', '.join(missing)}")
    found = [key for key in ("problem", "model", "seed", "protocol_hash")
             if result[key] != spec.get(key)]
    if found:
        raise DamagedRun(f"{result_path}: written for another run ({', '.join(found)} differ "
                         f"from {run_path})")
    if not os.path.exists(points_path):
        raise DamagedRun(f"{points_path}: missing (every finished run writes it before "
                         f"{RESULT_FILE})")
    digests = stored.get("files")
    if digests is not None:
        for name, path in ((RESULT_FILE, result_path), (POINTS_FILE, points_path)):
            if not isinstance(digests, dict) or digests.get(name) != file_digest(path):
                raise DamagedRun(f"{path}: its SHA-256 is not the one recorded in {run_path} "
                                 f"(edited or damaged after the run finished)")
    _check_points(points_path, result_path, result, spec)
    return result


def _check_points(points_path, result_path, result, spec):
    """The held-out scores of ``result`` are the means of ``test_points.npz``."""
    n_test = spec["protocol"].get("n_test")
    try:
        points = _read_points(points_path, n_test)
    except DamagedRun:
        raise
    except Exception as exc:  # any damage: zipfile and numpy raise many types
        raise DamagedRun(f"{points_path}: unreadable ({type(exc).__name__}: {exc})") from None
    for key, field in (("model", "test_loglik"), ("last_iterate", "test_loglik_last_iterate")):
        if key == "last_iterate" and field not in result:
            continue
        values = points.get(key)
        if values is None or values.dtype != np.float64 or values.shape != (n_test,) \
                or np.isnan(values).any():
            raise DamagedRun(f"{points_path}: no {n_test} float64 log-likelihoods "
                             f"under {key!r}")
        recomputed = float(np.mean(values)) if np.isfinite(values).all() else -math.inf
        if not _same_score(result[field], recomputed):
            raise DamagedRun(f"{result_path}: {field} {result[field]!r} is not the mean "
                             f"{recomputed!r} of the per-point values in {POINTS_FILE}")


def _read_points(points_path, n_test):
    """The arrays ``model`` and ``last_iterate`` of ``test_points.npz``, each
    checked from its .npy header (``n_test`` float64 values) before its data
    is read: a damaged or crafted file costs no more than a genuine one."""
    points = {}
    with zipfile.ZipFile(points_path) as archive:
        for info in archive.infolist():
            key = info.filename[:-len(".npy")]
            if key not in ("model", "last_iterate") or not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f"{info.filename}: a .npy of version {version}")
                shape, _, dtype = read_header(f)
                if shape != (n_test,) or dtype not in (np.dtype("<f8"), np.dtype(">f8")):
                    raise DamagedRun(f"{points_path}: {key} declares {dtype} of shape {shape}, "
                                     f"not the {n_test} float64 log-likelihoods of the run")
                data = f.read(8 * n_test + 1)
            if len(data) != 8 * n_test:
                raise ValueError(f"{info.filename}: the data is not {n_test} values long")
            points[key] = np.frombuffer(data, dtype=dtype).astype(np.float64)
    return points


def _run_files(directory):
    """The entries of a run directory, without radref's lock and temporary files."""
    return [name for name in os.listdir(directory) if not name.startswith(".radref-")]


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
    errors = check_protocol_dirs(out, _unique_protocols(specs))
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


def _unique_protocols(specs):
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


def record_digests(directory):
    """Record the SHA-256 of the run's ``result.json`` and ``test_points.npz`` in
    its ``run.json`` (what :func:`verify_finished_run` checks before reuse)."""
    run_path = os.path.join(directory, RUN_FILE)
    stored = read_json(run_path)
    stored["files"] = {name: file_digest(os.path.join(directory, name))
                       for name in (RESULT_FILE, POINTS_FILE)}
    write_json_atomic(run_path, stored)


def json_ready(value):
    """``value`` with every non-finite float replaced by ``None`` (JSON's null):
    a mean log-likelihood is -inf when the model gives a point density 0."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def write_test_points(path, points):
    """The per-point held-out log-likelihoods (for paired comparisons), written
    whole or not at all."""
    with atomic_write(path) as f:
        np.savez(f, **points)


def make_result(spec, model, X_train, X_test):
    """Scores and learning curves of a trained run, and its per-point held-out
    log-likelihoods: ``"model"`` (what the recipe makes the model: the
    best parameters of early stopping, else the average, else the last
    iterate) and, with a recipe, ``"last_iterate"`` too.

    The result's ``test_loglik`` is the mean of ``"model"``; with a recipe
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
        **extra,
    }, points


def _smooth(values, window):
    """Means over consecutive windows (a learning curve small enough to store)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values) // window
    return values[:n * window].reshape(n, window).mean(axis=1).tolist() if n else []


# -------------------------------------------------------------------- tables
TABLE_KEYS = ("problem", "model", "seed", "n_parameters", "steps", "lr", "train_loglik",
              "test_loglik")


def finished_results(directory, log=None):
    """Results of every finished run in one protocol directory that passes
    :func:`verify_finished_run`; ``log`` receives a line naming each run
    that does not (it is left out of the tables)."""
    try:
        protocol = read_json(os.path.join(directory, "protocol.json"))
    except RunFileError as exc:
        raise ReproduceError(str(exc)) from None
    runs = os.path.join(directory, "runs")
    results = []
    for name in sorted(os.listdir(runs)) if protocol is not None and os.path.isdir(runs) else []:
        run = os.path.join(runs, name)
        if not os.path.isdir(run):
            continue
        try:
            result = verify_finished_run(run)
        except DamagedRun as exc:
            if log is not None:
                log(f"left out of the tables, damaged: {exc}")
            continue
        if result is not None and result.get("protocol_hash") == protocol_hash(protocol):
            results.append(result)
    return results


def negative_entropies(problems=datasets.PROBLEMS, n=200_000):
    """Best achievable mean log-likelihood of each problem (Monte Carlo, seed 0)."""
    return {p: datasets.negative_entropy(p, n=n, random_state=0)[0] for p in problems}


def summarize(results):
    """Per (problem, model): mean and standard deviation over seeds."""
    cells = {}
    for r in results:
        cells.setdefault((r["problem"], r["model"]), []).append(r)
    summary = []
    for (problem, model), rs in sorted(cells.items()):
        test_mean, test_std = _mean_std([r["test_loglik"] for r in rs])
        train_mean, train_std = _mean_std([r["train_loglik"] for r in rs])
        summary.append({
            "problem": problem, "model": model, "n_seeds": len(rs),
            "test_mean": test_mean, "test_std": test_std,
            "train_mean": train_mean, "train_std": train_std,
            "n_parameters": rs[0]["n_parameters"],
            "paper": PAPER[problem][MODELS.index(model)],
        })
    return summary


def _mean_std(values):
    """Mean and standard deviation over seeds; a non-finite score (``None`` in
    JSON: -inf) makes the mean -inf and the deviation NaN, without a warning."""
    values = [-math.inf if v is None else float(v) for v in values]
    if not all(math.isfinite(v) for v in values):
        return (-math.inf if all(math.isfinite(v) or v == -math.inf for v in values)
                else math.nan), math.nan
    array = np.array(values)
    return float(array.mean()), float(array.std(ddof=1)) if len(values) > 1 else 0.0


def write_tables(results, directory, negative_entropy=None, recipe=None):
    """``results.csv``, ``results.json``, ``summary.json`` and ``table.md`` in
    ``directory``; ``table.md`` opens with the training recipe when there is one.

    Every file is composed first and then written atomically, so a failure
    leaves the previous tables whole; non-finite values are ``null`` in JSON
    and ``-inf`` / ``nan`` in the CSV and the table."""
    results = sorted(results, key=lambda r: (r["problem"], r["model"], r["seed"]))
    csv_text = io.StringIO()
    writer = csv.writer(csv_text)
    writer.writerow(TABLE_KEYS)
    for r in results:
        writer.writerow([-math.inf if r[k] is None and k.endswith("loglik") else r[k]
                         for k in TABLE_KEYS])
    summary = summarize(results)
    table = (f"Training recipe: {describe_recipe(recipe)} (the paper's columns: the paper's "
             f"training).\n\n" if recipe else "")
    table += markdown_table(summary, negative_entropy) + "\n"
    texts = {
        "results.csv": csv_text.getvalue(),
        "results.json": json.dumps(json_ready([{k: r[k] for k in TABLE_KEYS} for r in results]),
                                   indent=1, allow_nan=False),
        "summary.json": json.dumps(json_ready(summary), indent=1, allow_nan=False),
        "table.md": table,
    }
    for name, text in texts.items():
        with atomic_write(os.path.join(directory, name), "w") as f:
            f.write(text)


def markdown_table(summary, negative_entropy=None):
    """The §4.3 table: paper vs radref (held-out mean ± std over seeds, with the
    number of seeds) vs the best achievable value."""
    by_cell = {(s["problem"], s["model"]): s for s in summary}
    lines = ["| problem | paper Rad | paper Real NVP | radref Rad | radref Real NVP | "
             "best achievable |", "|---|---|---|---|---|---|"]
    for problem in datasets.PROBLEMS:
        row = [problem, f"{PAPER[problem][0]:+.2f}", f"{PAPER[problem][1]:+.2f}"]
        for model in MODELS:
            s = by_cell.get((problem, model))
            if s is None:
                row.append("—")
            elif s["n_seeds"] == 1 or s["test_std"] is None or not math.isfinite(s["test_std"]):
                row.append(f"{s['test_mean']:+.3f} ({s['n_seeds']} seed"
                           f"{'s' if s['n_seeds'] > 1 else ''})")
            else:
                row.append(f"{s['test_mean']:+.3f} ± {s['test_std']:.3f} ({s['n_seeds']} seeds)")
        best = (negative_entropy or {}).get(problem)
        row.append("—" if best is None else f"{best:+.3f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------- the command line
def add_arguments(parser):
    """The options of ``radref reproduce``."""
    sizes = "one value or several (a sweep: every combination is a run)"
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke-test protocol: {QUICK['steps']} steps, {QUICK['n_train']} "
                             f"points, seed 0 (overrides below still apply)")
    parser.add_argument("--problems", nargs="+", default=list(datasets.PROBLEMS),
                        choices=datasets.PROBLEMS, metavar="PROBLEM",
                        help=f"problems among {', '.join(datasets.PROBLEMS)} (default: all)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS,
                        metavar="MODEL", help="models: rad, realnvp (default: both)")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                        help="seeds (default 0 1 2; --quick: 0)")
    add_options(parser, ("steps", "lr", "batch_size"), defaults=False, nargs="+",
                suffix=f", {sizes}", default_text={
                    name: f"default {FULL[name]:g}; --quick: {QUICK[name]:g}"
                    for name in ("steps", "lr", "batch_size")})
    for option, what in (("--n-train", "training points"), ("--n-test", "held-out points")):
        parser.add_argument(option, type=int, nargs="+", metavar="X", help=f"{what}, {sizes}")
    add_options(parser, ("hidden",), defaults=False, nargs="+",
                suffix=f" of both models (Rad's gating network too), {sizes}",
                default_text={"hidden": "default: the paper's, " + ", ".join(
                    f"{a['hidden']} for {m}" for m, a in ARCHITECTURES.items())})
    add_recipe_arguments(parser)
    parser.add_argument("--eval-every", type=int, metavar="N",
                        help="steps between held-out scores, checkpoints and progress reports "
                             f"(default {FULL['eval_every']}; --quick: {QUICK['eval_every']})")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"output directory (default ./{DEFAULT_OUT}); one subdirectory "
                             f"per protocol")
    parser.add_argument("--write-committed", action="store_true",
                        help="allow --out to be a directory holding files under version "
                             "control (e.g. validation/results); refused otherwise")
    backend = parser.add_mutually_exclusive_group()
    backend.add_argument("--workers", type=int, metavar="N",
                         help="local worker processes (default: all cores)")
    backend.add_argument("--scheduler", metavar="ADDRESS",
                         help="run on the dask.distributed cluster of this scheduler "
                              "(e.g. tcp://host:8786); --out must be a path every worker "
                              "sees (pip install 'radref[dask]')")
    parser.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                        help="seconds between progress lines (default 30)")
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: print and write the tables of the finished runs")
    parser.add_argument("--no-retrain", action="store_true",
                        help="refuse, rather than train again, a finished run whose files fail "
                             "verification (edited, damaged or unreadable)")


def _positive(option, values, minimum=1):
    for value in values:
        if value < minimum:
            raise ReproduceError(f"{option} must be >= {minimum}, got {value}")
    return values


def sweep_settings(args):
    """Protocol lists from the options, checked before anything is written."""
    base = QUICK if args.quick else FULL
    settings = {
        "steps": args.steps or [base["steps"]],
        "n_train": _positive("--n-train", args.n_train or [base["n_train"]]),
        "n_test": _positive("--n-test", args.n_test or [base["n_test"]]),
        "batch_size": args.batch_size or [base["batch_size"]],
        "lr": args.lr or [base["lr"]],
        "eval_every": [args.eval_every or base["eval_every"]],
        "hidden": args.hidden or [None],
    }
    try:
        for name in ("steps", "batch_size", "lr", "eval_every", "hidden"):
            for value in settings[name]:
                check_option(name, value)  # the table's check, worded with the option
        settings["recipe"] = recipe_from_args(args)
    except OptionError as exc:
        raise ReproduceError(str(exc)) from None
    if max(settings["batch_size"]) > min(settings["n_train"]):
        raise ReproduceError(f"--batch-size {max(settings['batch_size'])} is larger than "
                             f"--n-train {min(settings['n_train'])}")
    seeds = _positive("--seeds", args.seeds or list(base["seeds"]), minimum=0)
    if args.workers is not None:
        _positive("--workers", [args.workers])
    if not args.progress_every > 0:
        raise ReproduceError(f"--progress-every must be > 0, got {args.progress_every}")
    return settings, seeds


def sweep_specs(settings, seeds, problems, models):
    """Every run of the sweep, seed by seed (an interrupted sweep has complete
    tables for its first seeds), Rad first (its runs are the slow ones)."""
    protocols = [make_protocol(steps, n_train, n_test, batch, lr, eval_every, hidden,
                               settings.get("recipe"))
                 for steps, n_train, n_test, batch, lr, eval_every, hidden in itertools.product(
                     settings["steps"], settings["n_train"], settings["n_test"],
                     settings["batch_size"], settings["lr"], settings["eval_every"],
                     settings["hidden"])]
    specs = {}
    for seed in dict.fromkeys(seeds):
        for protocol in protocols:
            for model in dict.fromkeys(models):
                for problem in dict.fromkeys(problems):
                    spec = run_spec(problem, model, seed, protocol)
                    specs[(problem, model, seed, spec["protocol_hash"])] = spec
    return list(specs.values())


def tracked_files(path):
    """Files under ``path`` that git tracks (none when git or a repository is absent)."""
    path = os.path.abspath(path)
    existing = path
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    try:
        listing = subprocess.run(["git", "-C", existing, "ls-files", "-z", "--", path],
                                 capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if listing.returncode != 0:  # not in a repository
        return []
    return [name for name in listing.stdout.split(b"\0") if name]


def output_directory(args, log):
    """The absolute output directory, after refusing one of committed results
    unless ``--write-committed``."""
    out = os.path.abspath(args.out)
    tracked = tracked_files(out)
    if tracked and not args.write_committed:
        raise ReproduceError(f"{args.out} holds {len(tracked)} file(s) under version control "
                             f"(committed results): radref reproduce writes there only with "
                             f"--write-committed; choose another --out (default ./{DEFAULT_OUT})")
    state = (f"holds {len(tracked)} committed file(s); --write-committed given" if tracked
             else "not under version control")
    log(f"output directory: {out} ({state})")
    return out


def _backend(args, n_jobs):
    if args.scheduler:
        return sweep.DaskCluster(args.scheduler)
    return sweep.LocalPool(max(1, min(args.workers or os.cpu_count() or 1, n_jobs)))


def report_plan(out, planned, log):
    """How many runs are reused, from where, resumed and new."""
    protocols = _unique_protocols([p.spec for p in planned])
    for protocol in protocols:
        directory = protocol_dir(out, protocol)
        mine = [p for p in planned if p.spec["protocol_hash"] == protocol_hash(protocol)]
        reused = sum(p.status == "reused" for p in mine)
        log(f"{os.path.basename(directory)}: {describe_protocol(protocol)}")
        if reused:
            log(f"  reused {reused} finished run(s) of this exact protocol from "
                f"{os.path.join(directory, 'runs')}")
        elif not os.path.exists(os.path.join(directory, "protocol.json")):
            nearest = nearest_stored_protocol(out, protocol)
            note = ("" if nearest is None else f"; nearest stored protocol {nearest[0]} "
                    f"differs in {describe_differences(nearest[1], 'there', 'here')}")
            log(f"  new protocol (hash {protocol_hash(protocol)[:12]}){note}")
        for p in mine:
            if p.damaged:
                log(f"  damaged, trained again: {p.damaged} (moved aside: "
                    f"{', '.join(name + '.damaged' for name in p.damaged_files) or 'nothing'})")
        resumed = [p for p in mine if p.status == "resume"]
        for p in resumed:
            log(f"  resuming {run_label(p.spec)} from its checkpoint at step {p.start_step}")
    n_reused = sum(p.status == "reused" for p in planned)
    log(f"{len(planned)} run(s): {n_reused} reused, "
        f"{sum(p.status == 'resume' for p in planned)} resumed, "
        f"{sum(p.status == 'new' for p in planned)} new")


def make_jobs(planned):
    """One :class:`~radref.user.sweep.Job` per run to train."""
    session = uuid.uuid4().hex
    several = len(_unique_protocols([p.spec for p in planned])) > 1
    return [sweep.Job(label=run_label(p.spec, several),
                      payload={"run": p.spec, "run_dir": p.directory, "session": session},
                      key=f"radref-{p.spec['problem']}-{p.spec['model']}-s{p.spec['seed']}-"
                          f"{p.spec['protocol_hash'][:12]}",
                      progress_path=os.path.join(p.directory, PROGRESS_FILE),
                      steps=p.spec["protocol"]["steps"], start_step=p.start_step,
                      rate_key=f"{p.spec['protocol_hash']}-{p.spec['model']}")
            for p in planned if p.status != "reused"]


def execute(out, planned, backend, progress_every, log):
    """Train every run that is not reused on the entered ``backend``; returns
    the results of the whole sweep (reused ones included)."""
    jobs = make_jobs(planned)
    results = [p.result for p in planned if p.status == "reused"]
    session = jobs[0].payload["session"]

    def finished(job, result, n_done, n_total):
        resumed = (f", resumed from step {result['resumed_from_step']}"
                   if result["resumed_from_step"] else "")
        test, train = (-math.inf if result[k] is None else result[k]  # null: -inf
                       for k in ("test_loglik", "train_loglik"))
        log(f"[{n_done}/{n_total}] {job.label}: test {test:+.3f}  train "
            f"{train:+.3f}  ({result['seconds_this_session']:.1f} s{resumed})")

    log(f"running {len(jobs)} run(s) on a {backend.description}")
    start = time.monotonic()
    new, failures = sweep.run_jobs(jobs, run_task, backend, session, finished, log=log,
                                   progress_every=progress_every, already_done=len(results))
    log(f"trained {len(new)} run(s) in {time.monotonic() - start:.1f} s of wall time; the "
        f"runs' own time: {sum(r['seconds_this_session'] for r in new):.1f} s over "
        f"{backend.slots()} worker slot(s)")
    if failures:
        write_protocol_tables(out, planned, log=log)
        listed = "; ".join(f"{job.label}: {type(exc).__name__}: {exc}" for job, exc in failures)
        raise ReproduceError(f"{len(failures)} of {len(planned)} run(s) failed ({listed}); "
                             f"finished runs are kept: the same command retries the others")
    return results + new


def write_protocol_tables(out, planned, entropies=None, entropy_points=200_000, log=None):
    """Tables of every finished run in each protocol directory of the sweep
    (also of runs that earlier invocations finished there; runs that fail
    verification are left out and named to ``log``).  ``entropies``
    (problem -> best achievable value) is completed for the problems found."""
    for protocol in _unique_protocols([p.spec for p in planned]):
        directory = protocol_dir(out, protocol)
        results = finished_results(directory, log)
        if results and entropies is not None:
            missing = sorted({r["problem"] for r in results} - set(entropies))
            entropies.update(negative_entropies(missing, n=entropy_points))
        if results:
            write_tables(results, directory, entropies, protocol.get("recipe"))


def run_from_args(args, log=None):
    """``radref reproduce``: plan, run, and print one §4.3 table per protocol."""
    log = log or (lambda line: print(line, flush=True))
    settings, seeds = sweep_settings(args)
    out = output_directory(args, log)
    specs = sweep_specs(settings, seeds, args.problems, args.models)
    planned = plan_runs(out, specs, retrain=not args.no_retrain)
    if args.table_only:
        for p in planned:
            if p.damaged:
                log(f"left out of the tables, damaged: {p.damaged}")
        planned = [p for p in planned if p.status == "reused"]
        if not planned:
            legacy = (" (its runs/ folder is of the layout before protocol-keyed runs, which "
                      "records no protocol)" if os.path.isdir(os.path.join(out, "runs")) else "")
            raise ReproduceError(f"no finished runs of the requested protocol(s) under "
                                 f"{out}{legacy}")
    log(f"{len(specs)} run(s): {len(set(args.problems))} problem(s) x "
        f"{len(set(args.models))} model(s) x "
        f"{len(set(seeds))} seed(s) x {len(_unique_protocols(specs))} protocol(s)")
    report_plan(out, planned, log)
    if all(p.status == "reused" for p in planned):
        results = [p.result for p in planned]
    else:
        # Reach the workers before writing anything: a wrong address leaves no trace.
        with _backend(args, sum(p.status != "reused" for p in planned)) as backend:
            write_plan(out, planned)
            results = execute(out, planned, backend, args.progress_every, log)
    entropy_points = 20_000 if args.quick else 200_000
    entropies = negative_entropies(dict.fromkeys(args.problems), n=entropy_points)
    write_protocol_tables(out, planned, entropies, entropy_points, log)
    for protocol in _unique_protocols([p.spec for p in planned]):
        mine = [r for r in results if r["protocol_hash"] == protocol_hash(protocol)]
        log(f"\n{os.path.basename(protocol_dir(out, protocol))} "
            f"({len(mine)} run(s) of this sweep; tables of all its finished runs in "
            f"{protocol_dir(out, protocol)}):")
        if protocol.get("recipe"):
            log(f"training recipe: {describe_recipe(protocol['recipe'])} (the paper's columns: "
                f"the paper's training)")
        log(markdown_table(summarize(mine), entropies))
    return results
