"""A run's files, verified before they are trusted (``radref reproduce``).

A finished run is reused or tabulated only after :func:`verify_finished_run`:
the SHA-256 of ``result.json`` and ``test_points.npz`` that its worker
recorded in ``run.json`` (:func:`record_digests`), every key of the result,
and its held-out score recomputed from ``test_points.npz`` (whose ``.npy``
headers are checked before their data is read).  A run that fails raises
:class:`DamagedRun` naming the file and why.
"""
import hashlib
import math
import os
import zipfile

import numpy as np

from radref.training.checkpoint import load_checkpoint
from radref.training.files import atomic_write
from radref.user.protocol import POINTS_FILE, RESULT_FILE, RUN_FILE
from radref.user.sweep import RunFileError, read_json, write_json_atomic


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


def find_results(path):
    """The directory of runs that ``path`` names, for the scripts that read a
    reproduction's runs (``validation/paper_figures.py``): ``path`` itself
    when it holds ``runs/`` (a protocol directory, or the committed
    ``validation/results``), else its one ``protocol-*/`` subdirectory that
    holds runs (the ``--out`` of ``radref reproduce``).

    Raises
    ------
    ReproduceError
        No runs there, or several protocol directories (the message lists
        them with their protocols, to choose one).
    """
    from radref.user.protocol import ReproduceError, describe_protocol
    if not os.path.isdir(path):
        raise ReproduceError(f"{path}: no such directory; run 'radref reproduce' first (its "
                             f"--out, default radref-results)")
    if os.path.isdir(os.path.join(path, "runs")):
        return path
    found = sorted(os.path.join(path, name) for name in os.listdir(path)
                   if name.startswith("protocol-")
                   and os.path.isdir(os.path.join(path, name, "runs")))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ReproduceError(f"{path}: holds no runs (neither runs/ nor protocol-*/runs/); "
                             f"run 'radref reproduce --out {path}' first")
    lines = []
    for directory in found:
        try:
            protocol = read_json(os.path.join(directory, "protocol.json"))
            what = describe_protocol(protocol)
        except (RunFileError, KeyError, TypeError):
            what = "protocol.json unreadable"
        lines.append(f"  {directory}: {what}")
    raise ReproduceError(f"{path} holds runs of {len(found)} protocols; name one of them:\n"
                         + "\n".join(lines))
