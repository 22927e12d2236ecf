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
import struct
import zipfile

import numpy as np

from radref.core.flow import FlowConfig, flow_init
from radref.core.layers import LAYER_KINDS
from radref.training.files import atomic_write

FORMAT = "radref-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupted, or of the wrong kind."""


class UnreadableCheckpointError(CheckpointError):
    """Not a readable archive: damaged, or not a file radref wrote."""


class DamagedCheckpointError(CheckpointError):
    """A radref checkpoint whose content is incomplete or inconsistent."""


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

    with atomic_write(path) as f:
        np.savez(f, **arrays)


# ------------------------------------------------------------------- loading
# Threat model (docs/errors.md, "Untrusted checkpoints"): the checksum is not
# a signature, so anyone can write a file that passes it.  Such a file may be
# refused, but loading it must never execute code (no pickles), and must never
# cost more memory or time than a legitimate checkpoint of the architecture
# it declares, which is itself bounded by the ceilings below.  So the loader
# reads the zip directory (bounded), then ``meta`` (bounded, validated), then
# derives from the declared architecture the shape of every array, and checks
# each member's .npy header against it before reading a byte of its data.

#: Ceilings on a checkpoint's declared architecture.  radref's models are far
#: below them (the paper's: 2 columns, 6 layers, 8 to 56 hidden units,
#: ~10^4 parameters).
MAX_DIM, MAX_LAYERS, MAX_HIDDEN = 10_000, 1_000, 100_000
#: ... and on its number of scalar parameters (an upper bound computed from
#: the architecture's widths, before any array is built): 2^24, 128 MiB per array group
MAX_PARAMETERS = 2 ** 24
#: Array groups a file may hold at most (``param``, ``adam_m``, ``adam_v``,
#: ``ema``, ``best`` today): the arrays' total size is at most this many
#: times the parameters' size.
MAX_GROUPS = 8
#: The ``meta`` entry (JSON; a 50,000-step history is ~2 MB) and its nesting
#: (radref writes 4 levels).
MAX_META_BYTES, MAX_META_DEPTH = 64 * 2 ** 20, 32
#: The zip's central directory (~80 bytes per array).
MAX_DIRECTORY_BYTES = 16 * 2 ** 20
#: Model classes a checkpoint may hold, and the layer kind of their flows.
CLASS_KINDS = {kind.MODEL_CLASS: name for name, kind in LAYER_KINDS.items()}

_FLOAT64 = (np.dtype("<f8"), np.dtype(">f8"))


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
        Truncated, corrupted, wrong format or version, checksum mismatch, a
        model class other than ``expected_model``, an architecture beyond the
        ceilings (:data:`MAX_DIM`, ...), an array whose declared shape or dtype
        is not the architecture's, or any other malformed content.
    FileNotFoundError
        No file at ``path``.
    """
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a file path (str or os.PathLike), "
                        f"got {type(path).__name__} {path!r}")
    try:
        with open(os.fspath(path), "rb") as f:
            _check_zip_directory(f, path)
            # A damaged archive makes zipfile raise many types (BadZipFile,
            # NotImplementedError for a flipped compression field, RuntimeError
            # for a flipped encryption flag, ...): each means "not readable".
            with zipfile.ZipFile(f) as archive:
                meta, checksum = _read_meta(archive, path)
                config = declared_architecture(meta, path, expected_model)
                arrays, mismatched = _read_arrays(archive, config, path)
    except (FileNotFoundError, CheckpointError):
        raise
    except Exception as exc:
        raise UnreadableCheckpointError(
            f"{path}: not a readable radref checkpoint ({exc})") from None
    if _digest(meta, arrays) != checksum:
        raise CheckpointError(f"{path}: checksum mismatch, the file is corrupted")
    # A file whose checksum matches was written by save_checkpoint, unless it was
    # forged: a missing array is still a CheckpointError, never a KeyError.
    if mismatched:
        raise DamagedCheckpointError(f"{path}: parameters do not match the architecture "
                              f"({mismatched[0]})")
    names = meta["names"]
    groups = ("param",) + (() if meta["adam_t"] is None else ("adam_m", "adam_v"))
    missing = [f"{g}/{n}" for g in groups for n in names if f"{g}/{n}" not in arrays]
    if missing:
        raise DamagedCheckpointError(f"{path}: checkpoint is incomplete (KeyError: "
                              f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''})")
    expected = _parameter_shapes(config)
    if sorted(names) != sorted(expected) or len(set(names)) != len(names):
        raise DamagedCheckpointError(f"{path}: parameters do not match the architecture")
    params = {n: arrays[f"param/{n}"] for n in names}
    adam_state = None
    if meta["adam_t"] is not None:
        adam_state = {"t": meta["adam_t"],
                      "m": {n: arrays[f"adam_m/{n}"] for n in names},
                      "v": {n: arrays[f"adam_v/{n}"] for n in names}}
    if not extra_arrays:
        return meta, params, adam_state
    extra = {}
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        if group not in _CORE_GROUPS:
            extra.setdefault(group, {})[name] = value
    return meta, params, adam_state, extra


def _check_zip_directory(f, path):
    """Refuse a zip whose central directory is beyond :data:`MAX_DIRECTORY_BYTES`
    before zipfile reads it (its entries become Python objects)."""
    size = os.fstat(f.fileno()).st_size
    tail_size = min(size, 22 + 65535)  # the end record and the longest comment
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or end + 22 > len(tail):
        return  # not a zip: zipfile says so
    entries, directory_bytes = struct.unpack("<HI", tail[end + 10:end + 16])
    if directory_bytes > MAX_DIRECTORY_BYTES or entries == 0xFFFF:
        raise UnreadableCheckpointError(
            f"{path}: not a readable radref checkpoint (its zip directory declares "
            f"{directory_bytes} bytes and {entries} entries; a checkpoint's is below "
            f"{MAX_DIRECTORY_BYTES} bytes)")


def _open_npy(archive, info, path):
    """The member ``info`` opened, its .npy header read: ``(stream, shape,
    fortran_order, dtype)``.  Only the header is read."""
    stream = archive.open(info)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        stream.close()
        raise CheckpointError(f"{path}: checkpoint arrays are corrupted ({info.filename} is "
                              f"a .npy of version {version})")
    return stream, shape, fortran, dtype


def _read_exactly(stream, shape, fortran, dtype):
    """The array data after the header, checked to end where the header says."""
    array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    view = memoryview(array.reshape(-1, order="A")).cast("B") if array.size else memoryview(b"")
    filled = 0
    while filled < len(view):
        got = stream.readinto(view[filled:])
        if not got:
            raise EOFError("the array data is truncated")
        filled += got
    if stream.read(1):  # (reaching the end also checks the member's CRC)
        raise ValueError("the array data is longer than its header says")
    return np.ascontiguousarray(array, dtype=np.float64)


def _read_meta(archive, path):
    """``meta`` (validated, without its checksum) and the checksum."""
    try:
        info = archive.getinfo("meta.npy")
    except KeyError:  # a NumPy archive, but not one radref wrote
        raise CheckpointError(f"{path}: not a radref checkpoint (an .npz archive without "
                              f"radref's 'meta' entry)") from None
    corrupted = f"{path}: checkpoint metadata is corrupted"
    stream, shape, fortran, dtype = _open_npy(archive, info, path)
    with stream:
        if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_META_BYTES:
            raise CheckpointError(f"{corrupted} (it must be at most {MAX_META_BYTES} bytes of "
                                  f"UTF-8 JSON; it declares {dtype} of shape {shape})")
        raw = stream.read(shape[0] + 1)
    if len(raw) != shape[0]:
        raise CheckpointError(f"{corrupted} (its length is not the declared {shape[0]} bytes)")
    try:
        meta = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: bad JSON,
        # or an integer of more than 4300 digits
        raise CheckpointError(f"{corrupted} ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{corrupted} (not a JSON object)")
    if _depth(meta) > MAX_META_DEPTH:
        raise CheckpointError(f"{corrupted} (nested deeper than {MAX_META_DEPTH} levels)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a radref checkpoint")
    if meta.get("version") != VERSION:
        version = meta.get("version")
        shown = repr(version) if len(repr(version)) < 40 else type(version).__name__
        raise CheckpointError(f"{path}: checkpoint version {shown} is not supported (this "
                              f"radref reads version {VERSION})")
    checksum = meta.pop("checksum", None)
    if not isinstance(checksum, str):
        raise CheckpointError(f"{corrupted} (no checksum)")
    _check_fields(meta, path)
    return meta, checksum


def _depth(document):
    """Nesting depth of a JSON document (iterative: no recursion limit to hit)."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_META_DEPTH:
                children = value.values() if isinstance(value, dict) else value
                stack.extend((child, depth + 1) for child in children
                             if isinstance(child, (dict, list)))
    return deepest


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_fields(meta, path):
    """Every field save_checkpoint writes, present and of its type."""
    missing = [key for key in ("model", "hyperparameters", "step", "names", "adam_t", "extra")
               if key not in meta]
    if missing:
        raise DamagedCheckpointError(f"{path}: checkpoint is incomplete (no {', '.join(missing)} "
                              f"in its metadata)")
    problems = []
    if not isinstance(meta["model"], str):
        problems.append(f"model must be a class name, got {type(meta['model']).__name__}")
    if not isinstance(meta["hyperparameters"], dict):
        problems.append("hyperparameters must be a JSON object")
    if not _is_count(meta["step"]):
        problems.append(f"step must be an integer >= 0, got {_short(meta['step'])}")
    if meta["adam_t"] is not None and not _is_count(meta["adam_t"]):
        problems.append(f"adam_t must be null or an integer >= 0, got {_short(meta['adam_t'])}")
    names = meta["names"]
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        problems.append("names must be a list of parameter names")
    if not isinstance(meta["extra"], dict):
        problems.append("extra must be a JSON object")
    if problems:
        raise DamagedCheckpointError(f"{path}: invalid model description in the checkpoint "
                              f"({'; '.join(problems)})")


def _short(value):
    text = repr(value)
    return text if len(text) <= 40 else f"{type(value).__name__} {text[:37]}..."


def declared_architecture(meta, path, expected_model=None):
    """The :class:`~radref.core.flow.FlowConfig` a checkpoint's ``meta``
    declares, after checking it against the ceilings.

    Raises
    ------
    CheckpointError
        Another class than ``expected_model``, an unknown class, or an
        architecture that is invalid or beyond the ceilings.
    """
    model = meta["model"]
    if expected_model is not None and model != expected_model:
        shown = model if len(model) <= 40 else _short(model)
        raise CheckpointError(f"{path}: holds a {shown}, not a {expected_model}")
    if model not in CLASS_KINDS:
        raise CheckpointError(f"{path}: unknown model class {_short(model)}")
    hyper = meta["hyperparameters"]
    kind = CLASS_KINDS[model]
    ceilings = {"dim": MAX_DIM, "n_layers": MAX_LAYERS, "hidden": MAX_HIDDEN}
    if "gate_hidden" in LAYER_KINDS[kind].DEFAULT_ARCHITECTURE:  # a kind with a gating net
        ceilings["gate_hidden"] = MAX_HIDDEN
    values = {}
    for key, ceiling in ceilings.items():
        value = hyper.get(key)
        lowest = 2 if key == "dim" else 1
        if not (_is_count(value) and lowest <= value <= ceiling):
            raise DamagedCheckpointError(f"{path}: invalid model description in the checkpoint "
                                  f"({key} must be an integer from {lowest} to {ceiling}, got "
                                  f"{_short(value)})")
        values[key] = value
    config = FlowConfig(kind, values["dim"], values["n_layers"], values["hidden"],
                        values.get("gate_hidden", 0))
    bound = _parameter_bound(config)
    if bound > MAX_PARAMETERS:
        raise DamagedCheckpointError(f"{path}: invalid model description in the checkpoint (an "
                              f"architecture of up to {bound} parameters, beyond the "
                              f"{MAX_PARAMETERS} a checkpoint may declare)")
    return config


def _parameter_bound(config):
    """An upper bound on the number of parameters of ``config``, from its widths
    alone: per layer, two networks from at most ``dim`` inputs to at most
    ``10 dim`` outputs through ``hidden`` and ``gate_hidden`` units."""
    width = config.hidden + config.gate_hidden
    return config.n_layers * ((config.dim + 1) * width + (width + 2) * 10 * config.dim)


def _parameter_shapes(config):
    """Name -> shape of every parameter of ``config`` (builds one set of parameters,
    as loading a legitimate file of this architecture does)."""
    return {name: value.shape for name, value in flow_init(config, random_state=0).items()}


def _read_arrays(archive, config, path):
    """Every array of the archive but ``meta``, each checked before its data is
    read: float64, no larger than the largest parameter, all together at most
    :data:`MAX_GROUPS` times the parameters.  Also returns the arrays whose
    shape is not their parameter's (an error once the checksum is known)."""
    shapes = _parameter_shapes(config)
    largest = max(int(np.prod(s)) for s in shapes.values())
    budget = MAX_GROUPS * sum(int(np.prod(s)) for s in shapes.values())
    arrays, mismatched = {}, []
    for info in archive.infolist():
        if info.filename == "meta.npy":
            continue
        key = info.filename[:-len(".npy")] if info.filename.endswith(".npy") else None
        group, _, name = (key or "").partition("/")
        if not (group and name):
            raise CheckpointError(f"{path}: checkpoint arrays are corrupted (an entry "
                                  f"{_short(info.filename)} radref does not write)")
        stream, shape, fortran, dtype = _open_npy(archive, info, path)
        with stream:
            size = int(np.prod(shape))
            wrong = None
            if name in shapes and shape != shapes[name] and not mismatched:
                # read it all the same (it is no larger than the largest
                # parameter): the checksum then says whether the file is damaged
                mismatched.append(f"{_short(key)} declares shape {shape}, the "
                                  f"architecture's is {shapes[name]}")
            if dtype not in _FLOAT64:
                wrong = f"holds {dtype}, not float64"
            elif size > largest:
                wrong = f"declares shape {shape}, larger than any parameter"
            budget -= size
            if wrong is None and budget < 0:
                wrong = "makes the arrays larger than a checkpoint of this architecture"
            if wrong is not None:
                raise DamagedCheckpointError(f"{path}: parameters do not match the architecture "
                                      f"({_short(key)} {wrong})")
            arrays[key] = _read_exactly(stream, shape, fortran, dtype)
    return arrays, mismatched
