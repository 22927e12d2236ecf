"""The golden document: generation, JSON and npz I/O, where the vectors live.

Format (Wycheproof style, readable from any language)::

    {"schema": "radref-golden", "schema_version": ..., "radref_version": ...,
     "numpy_version": ..., "flags": {flag: description}, "tolerances": {...},
     "checksum": sha256 of the canonical JSON of everything else,
     "blocks": {name: {"comment": ..., "function": ..., "cases": [
         {"id", "comment", "flags", "config", "inputs", "params",
          "loss_weights", "outputs", "grads"}, ...]}}}
"""
import hashlib
import importlib.resources
import io
import json
import math
import os
import zipfile

import numpy as np

from radref.reference.golden.blocks import BLOCKS, compute
from radref.reference.golden.cases import FLAGS, generate_cases
from radref.reference.golden.codec import (GoldenFormatError, canonical_json, checksum,
                                           decode_array, encode_array)
from radref.reference.golden.port_check import TOLERANCES, block_scales
from radref.training.files import atomic_write

SCHEMA = "radref-golden"
#: 2: per-entry error measure with per-block field scales, float64_only reasons,
#: the vectors shipped as package data; 3: per-entry magnitudes M (the
#: ``magnitudes`` section of a case), tie cases that equivalent arithmetic cannot
#: flip, the 1e120 tie observable (docs/golden.md §9)
SCHEMA_VERSION = 3
JSON_NAME = "radref-golden.json"
NPZ_NAME = "radref-golden.npz"
#: The directory, inside this package, that holds the shipped vectors.
VECTORS_DIR = "vectors"
#: The non-array keys of a case; ``float64_only`` only on cases flagged Float64Only.
CASE_KEYS = ("id", "comment", "flags", "float64_only", "config")

ERROR_MEASURE = ("entry i of a float field passes when |port_i - golden_i| <= "
                 "rtol * (max(|golden_i|, M_i) + S), rtol = tolerances[precision][section], "
                 "S = blocks[block].scales[field], M = the case's magnitudes[field] (|golden| "
                 "where the case stores none); integer fields must be equal; non-finite "
                 "golden entries must be matched exactly")


def generate():
    """The golden document in memory: ``{"blocks": {name: {"comment", "function",
    "cases": [case, ...]}}, ...header}`` with NumPy arrays (see :func:`to_json`)."""
    from radref._version import __version__
    blocks = {}
    for name, block in BLOCKS.items():
        blocks[name] = {"function": block.function, "comment": block.comment,
                        "cases": generate_cases(name)}
        blocks[name]["scales"] = block_scales(blocks[name])
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "radref_version": __version__,
            "numpy_version": np.__version__, "generated_by": "radref golden --out DIR",
            "loss": "L = sum over o in loss_weights of sum(loss_weights[o] * outputs[o]); "
                    "grads[name] = dL/d name for every input and parameter name",
            "error_measure": ERROR_MEASURE, "flags": dict(FLAGS), "tolerances": TOLERANCES,
            "blocks": blocks}


#: ``magnitudes``: ``{"outputs.<o>" | "grads.<name>": M}``, the per-entry
#: magnitudes of the error measure (schema version 3; docs/golden.md §5).
ARRAY_SECTIONS = ("inputs", "params", "loss_weights", "outputs", "grads", "magnitudes")


def to_json(doc):
    """In-memory document -> JSON-ready dict (arrays encoded, checksum added)."""
    out = {k: v for k, v in doc.items() if k != "blocks"}
    out["blocks"] = {}
    for name, block in doc["blocks"].items():
        cases = []
        for case in block["cases"]:
            c = {k: case[k] for k in CASE_KEYS if k in case}
            for section in ARRAY_SECTIONS:
                c[section] = {k: encode_array(v) for k, v in case[section].items()}
            cases.append(c)
        out["blocks"][name] = {"function": block["function"], "comment": block["comment"],
                               "scales": dict(block["scales"]), "cases": cases}
    out["checksum"] = checksum(out)
    return out


def from_json(jdoc, where="golden"):
    """JSON dict -> in-memory document (arrays decoded); validates the structure."""
    if not isinstance(jdoc, dict):
        raise GoldenFormatError(f"{where}: the top level must be a JSON object")
    if jdoc.get("schema") != SCHEMA:
        raise GoldenFormatError(f"{where}: 'schema' must be {SCHEMA!r}, got {jdoc.get('schema')!r}")
    if jdoc.get("schema_version") != SCHEMA_VERSION:
        raise GoldenFormatError(
            f"{where}: schema_version is {jdoc.get('schema_version')!r}, but this radref reads "
            f"schema_version {SCHEMA_VERSION} only: write the file against the current golden "
            f"vectors (radref golden --where) with \"schema_version\": {SCHEMA_VERSION} "
            f"(docs/golden.md §8 lists what changed)")
    blocks = jdoc.get("blocks")
    if not isinstance(blocks, dict):
        raise GoldenFormatError(f"{where}: 'blocks' must be an object")
    doc = {k: v for k, v in jdoc.items() if k != "blocks"}
    doc["blocks"] = {}
    for name, block in blocks.items():
        bwhere = f"{where}: blocks.{name}"
        if not isinstance(block, dict) or not isinstance(block.get("cases"), list):
            raise GoldenFormatError(f"{bwhere}: expected an object with a 'cases' list")
        cases = []
        for i, case in enumerate(block["cases"]):
            cwhere = f"{bwhere}.cases[{i}]"
            if not isinstance(case, dict) or not isinstance(case.get("id"), str):
                raise GoldenFormatError(f"{cwhere}: expected an object with a string 'id'")
            c = {k: case[k] for k in CASE_KEYS if k in case}
            c["flags"] = c.get("flags") or []
            c["config"] = c.get("config") or {}
            for section in ARRAY_SECTIONS:
                arrays = case.get(section, {})
                if not isinstance(arrays, dict):
                    raise GoldenFormatError(f"{cwhere}.{section}: expected an object")
                c[section] = {k: decode_array(v, f"{cwhere}.{section}.{k}")
                              for k, v in arrays.items()}
            cases.append(c)
        scales = block.get("scales", {})
        if not isinstance(scales, dict) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                and x >= 0 for x in scales.values()):
            raise GoldenFormatError(f"{bwhere}.scales: expected an object of finite numbers >= 0")
        doc["blocks"][name] = dict({k: v for k, v in block.items() if k != "cases"}, cases=cases)
    return doc


def dumps(jdoc):
    """The JSON text written to disk (deterministic; one value per line)."""
    return json.dumps(jdoc, indent=1, sort_keys=False, allow_nan=False, ensure_ascii=True) + "\n"


def npz_arrays(doc):
    """Flat ``{"<block>/<case id>/<section>/<name>": array}`` of an in-memory document."""
    arrays = {}
    for name, block in doc["blocks"].items():
        for case in block["cases"]:
            for section in ARRAY_SECTIONS:
                for key, value in case[section].items():
                    arr = np.asarray(value)
                    arr = arr.astype(np.float64) if arr.dtype.kind == "f" else arr.astype(np.int64)
                    arrays[f"{name}/{case['id']}/{section}/{key}"] = arr
    return arrays


def skeleton(jdoc):
    """The JSON document without its arrays (stored in the npz as ``__skeleton__``)."""
    out = {k: v for k, v in jdoc.items() if k != "blocks"}
    out["blocks"] = {
        name: dict({k: v for k, v in block.items() if k != "cases"},
                   cases=[{k: case[k] for k in CASE_KEYS if k in case}
                          | {s: sorted(case[s]) for s in ARRAY_SECTIONS}
                          for case in block["cases"]])
        for name, block in jdoc["blocks"].items()}
    return out


def write_npz(path, doc, jdoc):
    """Byte-deterministic .npz (fixed zip timestamps) of the arrays and the skeleton."""
    arrays = npz_arrays(doc)
    arrays["__skeleton__"] = np.array(canonical_json(skeleton(jdoc)))
    with atomic_write(path) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) \
            as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, value, allow_pickle=False)
            zf.writestr(info, buffer.getvalue())


def write_golden(out_dir):
    """Write ``radref-golden.json`` and ``radref-golden.npz`` into ``out_dir``;
    returns the two paths."""
    os.makedirs(out_dir, exist_ok=True)
    doc = generate()
    jdoc = to_json(doc)
    json_path = os.path.join(out_dir, JSON_NAME)
    npz_path = os.path.join(out_dir, NPZ_NAME)
    with atomic_write(json_path, "w") as f:  # (dumps writes ASCII only)
        f.write(dumps(jdoc))
    write_npz(npz_path, doc, jdoc)
    return json_path, npz_path


def read_json(path):
    """Parse a JSON file; malformed JSON raises :class:`GoldenFormatError`."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise GoldenFormatError(f"{path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise GoldenFormatError(f"{path}: not a UTF-8 text file ({exc})") from None


def load_document(path, verify_checksum=True):
    """Read a golden JSON file (checksum verified) -> in-memory document."""
    jdoc = read_json(path)
    doc = from_json(jdoc, where=str(path))
    if verify_checksum:
        if jdoc.get("checksum") != checksum(jdoc):
            raise GoldenFormatError(f"{path}: checksum mismatch (the file was edited or "
                                    f"truncated; regenerate it with 'radref golden')")
    return doc


def inputs_digest(doc, blocks):
    """sha256 of the canonical JSON of the config, inputs and parameters of every
    case of ``blocks`` (what results derived from the golden inputs, e.g. the
    high-precision certificate, depend on)."""
    parts = {}
    for block in blocks:
        for case in doc["blocks"][block]["cases"]:
            parts[f"{block}/{case['id']}"] = {
                "config": case["config"],
                **{s: {k: encode_array(v) for k, v in case[s].items()}
                   for s in ("inputs", "params")}}
    return hashlib.sha256(canonical_json(parts).encode("ascii")).hexdigest()


def default_golden_dir():
    """The directory of the golden vectors shipped with radref, as package data
    (``radref/reference/golden/vectors`` of the installed package, found with
    ``importlib.resources``: no source tree needed); None if it is missing."""
    vectors = importlib.resources.files(__package__).joinpath(VECTORS_DIR)
    return os.fspath(vectors) if vectors.joinpath(JSON_NAME).is_file() else None


def recompute_document(doc):
    """Recompute every case's outputs and gradients from its *stored* inputs,
    parameters and loss weights; returns a new document."""
    new = {k: v for k, v in doc.items() if k != "blocks"}
    new["blocks"] = {}
    for name, block in doc["blocks"].items():
        cases = []
        for case in block["cases"]:
            outputs, grads = compute(name, case["inputs"], case["params"], case["config"],
                                     case["loss_weights"])
            cases.append(dict(case, outputs=outputs, grads=grads))
        new["blocks"][name] = dict(block, cases=cases)
    return new
