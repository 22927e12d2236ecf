"""The golden file's array codec and checksum (docs/golden.md §1).

Every float array is ``{"shape": [...], "dtype": "float64", "hex": [...]}``
with ``float.hex`` strings (exact round trip; C reads them with ``strtod``,
Java with ``Double.parseDouble``); integer arrays are ``{"shape": [...],
"dtype": "int64", "data": [...]}``.  Arrays are row-major.  The checksum is
the SHA-256 of the canonical JSON of the document without its checksum.
"""
import hashlib
import json
import math

import numpy as np


class GoldenFormatError(ValueError):
    """A golden or port file that does not follow the schema (message says where)."""


# --------------------------------------------------------------------- arrays

def encode_array(a):
    """ndarray -> JSON object (float64 as ``float.hex`` strings, ints as int64)."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        flat = a.astype(np.float64).ravel()
        return {"shape": list(a.shape), "dtype": "float64",
                "hex": [float.hex(float(x)) for x in flat]}
    if a.dtype.kind in "iub":
        return {"shape": list(a.shape), "dtype": "int64", "data": [int(x) for x in a.ravel()]}
    raise TypeError(f"cannot encode an array of dtype {a.dtype}")


def decode_array(obj, where="array"):
    """JSON object -> ndarray (float64 or int64).

    Accepts what :func:`encode_array` writes and, for ports, float arrays as
    ``"data"`` (JSON numbers) instead of ``"hex"`` and dtype ``"float32"``
    (read as float64).  Raises :class:`GoldenFormatError` naming ``where``.
    """
    if not isinstance(obj, dict) or "shape" not in obj or "dtype" not in obj:
        raise GoldenFormatError(f"{where}: expected an array object with 'shape' and 'dtype'")
    shape = obj["shape"]
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool)
                                              and s >= 0 for s in shape):
        raise GoldenFormatError(f"{where}: 'shape' must be a list of non-negative integers")
    size = math.prod(shape)
    dtype = obj["dtype"]
    if dtype in ("float64", "float32"):
        if "hex" in obj:
            values = obj["hex"]
            if not isinstance(values, list):
                raise GoldenFormatError(f"{where}: 'hex' must be a list of strings")
            out = np.empty(len(values))
            for i, h in enumerate(values):
                try:
                    out[i] = float.fromhex(h)
                except (TypeError, ValueError):
                    raise GoldenFormatError(
                        f"{where}: hex entry {i} is not a float.hex string: {h!r}") from None
        elif "data" in obj:
            values = obj["data"]
            if not isinstance(values, list) or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in values):
                raise GoldenFormatError(f"{where}: 'data' must be a list of numbers")
            out = np.array(values, dtype=np.float64).reshape(-1)
        else:
            raise GoldenFormatError(f"{where}: a float array needs 'hex' (or 'data')")
    elif dtype == "int64":
        values = obj.get("data")
        if not isinstance(values, list) or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in values):
            raise GoldenFormatError(f"{where}: an int64 array needs 'data', a list of integers")
        out = np.array(values, dtype=np.int64).reshape(-1)
    else:
        raise GoldenFormatError(f"{where}: unknown dtype {dtype!r} (float64, float32 or int64)")
    if out.size != size:
        raise GoldenFormatError(f"{where}: {out.size} values for shape {shape}")
    return out.reshape(shape)


def canonical_json(obj):
    """Keys sorted, separators ``,`` and ``:``, ASCII only, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def checksum(doc):
    """sha256 (hex) of the canonical JSON of ``doc`` without its ``"checksum"`` key.

    Canonical JSON: keys sorted, separators ``","`` and ``":"``, ASCII only.
    """
    rest = {k: v for k, v in doc.items() if k != "checksum"}
    return hashlib.sha256(canonical_json(rest).encode("ascii")).hexdigest()
