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
import io
import json
import os
import zipfile

import numpy as np

from radref.reference.golden.blocks import BLOCKS, compute
from radref.reference.golden.cases import FLAGS, generate_cases
from radref.reference.golden.codec import (GoldenFormatError, canonical_json, checksum,
                                           decode_array, encode_array)
from radref.reference.golden.port_check import TOLERANCES

SCHEMA = "radref-golden"
SCHEMA_VERSION = 1
JSON_NAME = "radref-golden.json"
NPZ_NAME = "radref-golden.npz"


def generate():
    """The golden document in memory: ``{"blocks": {name: {"comment", "function",
    "cases": [case, ...]}}, ...header}`` with NumPy arrays (see :func:`to_json`)."""
    from radref._version import __version__
    blocks = {}
    for name, block in BLOCKS.items():
        blocks[name] = {"function": block.function, "comment": block.comment,
                        "cases": generate_cases(name)}
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "radref_version": __version__,
            "numpy_version": np.__version__, "generated_by": "radref golden --out DIR",
            "loss": "L = sum over o in loss_weights of sum(loss_weights[o] * outputs[o]); "
                    "grads[name] = dL/d name for every input and parameter name",
            "flags": dict(FLAGS), "tolerances": TOLERANCES, "blocks": blocks}


ARRAY_SECTIONS = ("inputs", "params", "loss_weights", "outputs", "grads")


def to_json(doc):
    """In-memory document -> JSON-ready dict (arrays encoded, checksum added)."""
    out = {k: v for k, v in doc.items() if k != "blocks"}
    out["blocks"] = {}
    for name, block in doc["blocks"].items():
        cases = []
        for case in block["cases"]:
            c = {k: case[k] for k in ("id", "comment", "flags", "config")}
            for section in ARRAY_SECTIONS:
                c[section] = {k: encode_array(v) for k, v in case[section].items()}
            cases.append(c)
        out["blocks"][name] = {"function": block["function"], "comment": block["comment"],
                               "cases": cases}
    out["checksum"] = checksum(out)
    return out


def from_json(jdoc, where="golden"):
    """JSON dict -> in-memory document (arrays decoded); validates the structure."""
    if not isinstance(jdoc, dict):
        raise GoldenFormatError(f"{where}: the top level must be a JSON object")
    if jdoc.get("schema") != SCHEMA:
        raise GoldenFormatError(f"{where}: 'schema' must be {SCHEMA!r}, got {jdoc.get('schema')!r}")
    if jdoc.get("schema_version") != SCHEMA_VERSION:
        raise GoldenFormatError(f"{where}: unsupported schema_version "
                                f"{jdoc.get('schema_version')!r} "
                                f"(this radref reads {SCHEMA_VERSION})")
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
            c = {k: case.get(k) for k in ("id", "comment", "flags", "config")}
            c["flags"] = c["flags"] or []
            c["config"] = c["config"] or {}
            for section in ARRAY_SECTIONS:
                arrays = case.get(section, {})
                if not isinstance(arrays, dict):
                    raise GoldenFormatError(f"{cwhere}.{section}: expected an object")
                c[section] = {k: decode_array(v, f"{cwhere}.{section}.{k}")
                              for k, v in arrays.items()}
            cases.append(c)
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
                   cases=[{k: case[k] for k in ("id", "comment", "flags", "config")}
                          | {s: sorted(case[s]) for s in ARRAY_SECTIONS}
                          for case in block["cases"]])
        for name, block in jdoc["blocks"].items()}
    return out


def write_npz(path, doc, jdoc):
    """Byte-deterministic .npz (fixed zip timestamps) of the arrays and the skeleton."""
    arrays = npz_arrays(doc)
    arrays["__skeleton__"] = np.array(canonical_json(skeleton(jdoc)))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
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
    with open(json_path, "w", encoding="ascii", newline="\n") as f:
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
    """``validation/golden`` of the source tree radref was imported from (or None)."""
    package = os.path.dirname(os.path.abspath(__file__))  # radref/reference/golden
    root = os.path.dirname(os.path.dirname(os.path.dirname(package)))
    candidate = os.path.join(root, "validation", "golden")
    return candidate if os.path.exists(os.path.join(candidate, JSON_NAME)) else None


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
