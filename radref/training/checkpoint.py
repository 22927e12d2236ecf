"""Checkpoint files: a versioned, checksummed ``.npz`` written atomically.

Layout of the archive (loaded with ``allow_pickle=False``):

- ``meta``: UTF-8 JSON (a uint8 array; ``Infinity`` allowed, NaN refused) with ``format`` (``"radref-checkpoint"``),
  ``version``, ``model`` (class name), ``hyperparameters``, ``step``,
  ``adam_t``, ``names`` (parameter names in order), ``extra`` (training
  settings and history) and ``checksum``.
- ``param/<name>``, ``adam_m/<name>``, ``adam_v/<name>``: float64 arrays.
- optionally, further groups ``<group>/<name>`` of float64 arrays (for
  example ``ema/<name>``, the parameter average of the training recipe);
  a reader that does not know a group ignores it, and a file without them is
  read as before (radref 0.1's checkpoints have none).

``checksum`` is the SHA-256 of the JSON of the other ``meta`` fields (keys
sorted) followed by, for every array in sorted key order, the key's name and
the array's float64 bytes.  A file is written to a temporary
file in the same directory and renamed over the target, so a crash never leaves
a half-written checkpoint and an existing file is replaced only by a complete one.
"""
import hashlib
import json
import os
import tempfile

import numpy as np

FORMAT = "radref-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupted, or of the wrong kind."""


def _digest(meta, arrays):
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(arrays[key], dtype=np.float64).tobytes())
    return h.hexdigest()


def _refuse_nan(obj, where="meta"):
    """NaN is not storable; +-inf is (as JSON's ``Infinity`` extension, which
    Python's json reads back): a held-out log-likelihood can be -inf."""
    if isinstance(obj, float) and obj != obj:
        raise ValueError(f"checkpoint {where} holds NaN, which cannot be stored")
    if isinstance(obj, dict):
        for key, value in obj.items():
            _refuse_nan(value, f"{where}.{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _refuse_nan(value, f"{where}[{i}]")


#: array groups that every checkpoint may hold; others are ``extra_arrays``
_CORE_GROUPS = ("param", "adam_m", "adam_v")


def save_checkpoint(path, model, hyperparameters, params, adam_state=None, step=0, extra=None,
                    extra_arrays=None):
    """Write a checkpoint atomically.

    ``adam_state`` may be ``None``; ``extra`` is any JSON-serialisable dict kept
    in ``meta["extra"]`` (training settings, history); ``extra_arrays`` maps a
    group name (not ``param``, ``adam_m``, ``adam_v``, without ``/``) to a dict
    of float64 arrays, stored as ``<group>/<name>``.
    """
    names = list(params)
    arrays = {f"param/{n}": np.asarray(params[n], dtype=np.float64) for n in names}
    for group, group_arrays in (extra_arrays or {}).items():
        if group in _CORE_GROUPS or "/" in group or group == "meta":
            raise ValueError(f"extra_arrays group {group!r} is reserved or invalid")
        for n, value in group_arrays.items():
            arrays[f"{group}/{n}"] = np.asarray(value, dtype=np.float64)
    if adam_state is not None:
        for n in names:
            arrays[f"adam_m/{n}"] = np.asarray(adam_state["m"][n], dtype=np.float64)
            arrays[f"adam_v/{n}"] = np.asarray(adam_state["v"][n], dtype=np.float64)
    meta = {"format": FORMAT, "version": VERSION, "model": model,
            "hyperparameters": hyperparameters, "step": int(step), "names": names,
            "adam_t": None if adam_state is None else int(adam_state["t"]),
            "extra": extra if extra is not None else {}}
    _refuse_nan(meta)
    meta["checksum"] = _digest(meta, arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".radref-", suffix=".tmp", dir=directory)
    try:
        # mkstemp makes the file private (0600); give the checkpoint the mode of
        # the file it replaces, or the usual mode of a new file (0666 & ~umask).
        os.chmod(tmp, _target_mode(path))
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _target_mode(path):
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def load_checkpoint(path, expected_model=None, extra_arrays=False):
    """Read and verify a checkpoint.

    Returns
    -------
    meta : dict
    params : dict of ndarray
    adam_state : dict or None
    extra_arrays : dict of dict of ndarray
        Only when ``extra_arrays=True``: the groups other than ``param``,
        ``adam_m`` and ``adam_v``, group -> name -> array (empty for a file
        without any, such as radref 0.1's).

    Raises
    ------
    CheckpointError
        Truncated, corrupted, wrong format or version, checksum mismatch, or a
        model class other than ``expected_model``.
    """
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a file path (str or os.PathLike), "
                        f"got {type(path).__name__} {path!r}")
    try:
        # Open the file here: np.load leaks its own handle when the zip directory
        # is unreadable.  A damaged archive makes zipfile / numpy raise many types
        # (BadZipFile, NotImplementedError for a flipped compression or version
        # field, RuntimeError for a flipped encryption flag, TypeError for a .npy
        # file, ...): every one means "not a readable checkpoint".
        with open(os.fspath(path), "rb") as f, np.load(f, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable radref checkpoint ({exc})") from None
    if "meta" not in arrays:  # a NumPy archive, but not one radref wrote
        raise CheckpointError(f"{path}: not a radref checkpoint (an .npz archive without "
                              f"radref's 'meta' entry)")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode())
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a radref checkpoint")
        if meta.get("version") != VERSION:
            raise CheckpointError(f"{path}: checkpoint version {meta.get('version')} "
                                  f"is not supported (this radref reads version {VERSION})")
        checksum = meta.pop("checksum")
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise CheckpointError(f"{path}: checkpoint metadata is corrupted") from None
    try:
        digest = _digest(meta, arrays)
    except (TypeError, ValueError):  # an array that is not numeric
        raise CheckpointError(f"{path}: checkpoint arrays are corrupted") from None
    if digest != checksum:
        raise CheckpointError(f"{path}: checksum mismatch, the file is corrupted")
    # A file whose checksum matches was written by save_checkpoint, unless it was
    # forged: a missing field or array is still a CheckpointError, never a KeyError.
    try:
        if expected_model is not None and meta["model"] != expected_model:
            raise CheckpointError(f"{path}: holds a {meta['model']}, not a {expected_model}")
        params = {n: arrays[f"param/{n}"] for n in meta["names"]}
        adam_state = None
        if meta["adam_t"] is not None:
            adam_state = {"t": int(meta["adam_t"]),
                          "m": {n: arrays[f"adam_m/{n}"] for n in meta["names"]},
                          "v": {n: arrays[f"adam_v/{n}"] for n in meta["names"]}}
        missing = [key for key in ("hyperparameters", "step", "extra") if key not in meta]
        if missing:
            raise KeyError(", ".join(missing))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: checkpoint is incomplete "
                              f"({type(exc).__name__}: {exc})") from None
    if not extra_arrays:
        return meta, params, adam_state
    groups = {}
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        if group not in _CORE_GROUPS:
            groups.setdefault(group, {})[name] = value
    return meta, params, adam_state, groups
