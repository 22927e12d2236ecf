"""The port checker: a port's outputs and gradients against the golden ones
(``radref check-port``; docs/golden.md §5-6).

The error measure is per entry (docs/golden.md §5): entry ``i`` of a field
passes when

    |port_i - golden_i| <= rtol * (max(|golden_i|, M_i) + S)

with ``rtol`` the tolerance of the field's section (outputs or gradients),
``S`` the field's stated scale (:func:`field_scale`, stored per block in the
golden file) and ``M_i`` the entry's stored magnitude
(:mod:`~radref.reference.golden.magnitudes`: the size of the terms it is
computed from, where that exceeds the entry itself): a relative error for
entries of the field's usual size and above, an absolute error ``rtol * S``
for entries far below it, where the golden values themselves carry rounding
errors of about ``eps * S``, and ``rtol * M_i`` for entries that are sums of
much larger terms (gradients summed over rows, log-densities of far points).
An error in a small entry cannot hide behind a huge entry elsewhere in the
array.
"""
from typing import NamedTuple

import numpy as np

#: ``rtol`` per precision and section (docs/golden.md §5).
TOLERANCES = {
    "float64": {"outputs": 1e-12, "grads": 1e-9},
    "float32": {"outputs": 1e-4, "grads": 1e-3},
}

#: The flag of the cases a float32 port does not reproduce (skipped at float32).
FLOAT64_ONLY = "Float64Only"


def field_scale(arrays):
    """The stated scale ``S`` of one field: the median of ``|x|`` over the
    nonzero finite entries of ``arrays`` (0 if there are none).

    :func:`radref.reference.golden.document.generate` applies it, per block and
    field, to the block's ``Generic`` cases (all its cases if none of them has
    the field).
    """
    values = [np.abs(np.asarray(a, dtype=np.float64)).ravel() for a in arrays]
    values = np.concatenate(values) if values else np.zeros(0)
    values = values[np.isfinite(values) & (values != 0)]
    return float(np.median(values)) if values.size else 0.0


def entry_errors(port, gold, scale, magnitude=None):
    """Per-entry error ``|port - gold| / (max(|gold|, M) + scale)`` (shape of ``gold``).

    ``magnitude`` is the case's stored magnitude ``M`` of the field (same shape
    as ``gold``; docs/golden.md §5), or None where the case stores none (then
    the bound is ``|gold| + scale``).

    Non-finite golden entries must be matched exactly (``inf`` by ``inf`` of
    the same sign, ``nan`` by ``nan``): error 0 if they are, ``inf`` if not; a
    non-finite port entry where the golden one is finite has error ``inf``.
    Where ``|gold| + scale`` is 0 only an exact 0 passes (error 0, else inf).
    """
    port = np.asarray(port, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    finite = np.isfinite(gold)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(np.where(finite, port, 0.0) - np.where(finite, gold, 0.0))
        size = np.abs(np.where(finite, gold, 0.0))
        if magnitude is not None:
            size = np.maximum(size, np.where(finite, np.asarray(magnitude, np.float64), 0.0))
        bound = size + scale
        err = np.where(bound > 0, diff / np.where(bound > 0, bound, 1.0),
                       np.where(diff == 0, 0.0, np.inf))
    err = np.where(finite & ~np.isfinite(port), np.inf, err)
    special_ok = (port == gold) | (np.isnan(port) & np.isnan(gold))
    return np.where(finite, err, np.where(special_ok, 0.0, np.inf))


class FieldResult(NamedTuple):
    block: str
    field: str  # "outputs.<name>" or "grads.<name>"
    max_abs: float  # largest |port - golden| over the finite golden entries of all cases
    max_error: float  # largest entry error (entry_errors) over the cases;
    #                   for int fields: the number of differing entries
    worst_case: str  # the case (and entry, "id[i, j]") of max_error
    tolerance: float  # rtol (0 for exact int fields)
    scale: float  # the field's stated scale S
    passed: bool
    note: str = ""


class Report(NamedTuple):
    fields: list  # FieldResult, one per block and field
    problems: list  # shape mismatches; missing blocks, cases or fields (unless partial)
    missing: list  # missing blocks, cases or fields in a partial check (do not fail)
    skipped: list  # (block, case id) skipped (Float64Only at float32 tolerance)
    tolerance: str
    #: how many of ``problems`` are of each kind: "block", "case", "field" (missing)
    #: and "shape" (a shape mismatch)
    problem_counts: dict = {}

    @property
    def passed(self):
        return not self.problems and all(f.passed for f in self.fields)


def _entry_label(cid, shape, flat_index):
    if not shape or 0 in shape:
        return cid
    index = np.unravel_index(flat_index, shape)
    return f"{cid}[{', '.join(str(int(i)) for i in index)}]"


def _compare(port, gold, scale, rtol, magnitude=None):
    """``(max_abs, max_error, flat index of the worst entry, passed)`` of one field."""
    if gold.dtype.kind in "iu":  # exact: the number of differing entries
        diff = port.astype(np.float64) != gold
        worst = int(np.argmax(diff)) if diff.size else 0
        n_diff = float(np.sum(diff))
        max_abs = float(np.max(np.abs(port.astype(np.float64) - gold), initial=0.0))
        return max_abs, n_diff, worst, n_diff == 0
    err = entry_errors(port, gold, scale, magnitude)
    finite = np.isfinite(gold) & np.isfinite(port)
    max_abs = float(np.max(np.abs(port[finite] - gold[finite]), initial=0.0))
    if err.size == 0:
        return max_abs, 0.0, 0, True
    worst = int(np.argmax(err))
    max_error = float(err.flat[worst])
    return max_abs, max_error, worst, max_error <= rtol


def block_scales(block):
    """``{"outputs.<name>" | "grads.<name>": S}`` of one in-memory golden block
    (its stored ``"scales"``, or :func:`field_scale` applied as documented)."""
    if block.get("scales"):
        return block["scales"]
    generic = [c for c in block["cases"] if "Generic" in c["flags"]]
    scales = {}
    for case in block["cases"]:
        for section in ("outputs", "grads"):
            for name, value in case[section].items():
                field = f"{section}.{name}"
                if field in scales or np.asarray(value).dtype.kind != "f":
                    continue
                pool = [c for c in generic if name in c[section]] or \
                    [c for c in block["cases"] if name in c[section]]
                scales[field] = field_scale([c[section][name] for c in pool])
    return scales


def check_port(port_doc, golden_doc, tolerance="float64", partial=False):
    """Compare a port's outputs and gradients with the golden ones, entry by entry.

    Parameters
    ----------
    port_doc, golden_doc : dict
        In-memory documents (:func:`from_json`).  Only ``outputs`` and
        ``grads`` of the port are read; its cases are matched by ``id``.
    tolerance : {"float64", "float32"}
        The ``rtol`` of :data:`TOLERANCES`; ``"float32"`` skips the cases
        flagged ``Float64Only``.
    partial : bool
        If true, golden blocks, cases and fields the port does not provide are
        listed but do not fail the check (for a port in progress).

    Returns
    -------
    Report
        One :class:`FieldResult` per block and field.  Integer fields (``k``)
        must match exactly; for them ``max_error`` holds the number of
        differing entries.
    """
    for label, doc in (("port_doc", port_doc), ("golden_doc", golden_doc)):
        if not isinstance(doc, dict) or not isinstance(doc.get("blocks"), dict):
            raise TypeError(f"{label} must be a document read by from_json() or "
                            f"load_document(), got {type(doc).__name__}")
    if not isinstance(tolerance, str) or tolerance not in TOLERANCES:
        raise ValueError(f"tolerance must be one of {sorted(TOLERANCES)}, got {tolerance!r}")
    tol = TOLERANCES[tolerance]
    problems, missing, skipped = [], [], []
    missing_kinds = []  # "block", "case" or "field", one per entry of missing
    acc = {}  # (block, field) -> dict
    for bname, gblock in golden_doc["blocks"].items():
        pblock = port_doc["blocks"].get(bname)
        if pblock is None:
            missing.append(f"block {bname} not provided")
            missing_kinds.append("block")
            continue
        scales = block_scales(gblock)
        pcases = {c["id"]: c for c in pblock["cases"]}
        for gcase in gblock["cases"]:
            cid = gcase["id"]
            if tolerance == "float32" and FLOAT64_ONLY in gcase["flags"]:
                skipped.append((bname, cid))
                continue
            pcase = pcases.get(cid)
            if pcase is None:
                missing.append(f"{bname}/{cid}: case not provided")
                missing_kinds.append("case")
                continue
            for section in ("outputs", "grads"):
                for fname, gold in gcase[section].items():
                    field = f"{section}.{fname}"
                    port = pcase[section].get(fname)
                    if port is None:
                        missing.append(f"{bname}/{cid}: {field} not provided")
                        missing_kinds.append("field")
                        continue
                    if port.shape != gold.shape:
                        problems.append(f"{bname}/{cid}: {field} has shape {list(port.shape)}, "
                                        f"expected {list(gold.shape)}")
                        continue
                    exact = gold.dtype.kind in "iu"
                    rtol = 0.0 if exact else tol[section]
                    scale = 0.0 if exact else float(scales.get(field, 0.0))
                    magnitude = gcase.get("magnitudes", {}).get(field)
                    max_abs, max_error, worst, ok = _compare(port, gold, scale, rtol, magnitude)
                    e = acc.setdefault((bname, field), {"abs": 0.0, "err": -1.0, "worst": "",
                                                        "rtol": rtol, "scale": scale,
                                                        "ok": True, "exact": exact})
                    if max_error > e["err"]:
                        e["err"], e["worst"] = max_error, _entry_label(cid, gold.shape, worst)
                    e["abs"] = max(e["abs"], max_abs)
                    e["ok"] = e["ok"] and ok
    fields = [FieldResult(b, f, e["abs"], e["err"], e["worst"], e["rtol"], e["scale"], e["ok"],
                          "exact" if e["exact"] else "")
              for (b, f), e in acc.items()]
    kinds = ["shape"] * len(problems)
    if not partial:
        problems, missing, kinds = missing + problems, [], missing_kinds + kinds
    counts = {kind: kinds.count(kind) for kind in ("block", "case", "field", "shape")
              if kind in kinds}
    return Report(fields, problems, missing, skipped, tolerance, counts)


def _counted(n, singular, plural):
    return f"{n} {singular if n == 1 else plural}"


def _problem_summary(counts):
    """``"1 case missing; 2 shape mismatches"`` from :attr:`Report.problem_counts`."""
    parts = [_counted(counts[kind], kind, kind + "s") + " missing"
             for kind in ("block", "case", "field") if counts.get(kind)]
    if counts.get("shape"):
        parts.append(_counted(counts["shape"], "shape mismatch", "shape mismatches"))
    return "; ".join(parts)


def format_report(report, title=""):
    """Human-readable table: one line per block and field, then a verdict."""
    lines = []
    if title:
        lines.append(title)
    header = (f"{'block':<21s} {'field':<28s} {'max abs err':>11s} {'max error':>11s} "
              f"{'rtol':>7s} {'scale S':>9s}  {'worst case[entry]':<36s} result")
    lines.append(header)
    lines.append("-" * len(header))
    for f in report.fields:
        if f.note == "exact":
            err, rtol, scale = (f"{int(f.max_error)} differ" if f.max_error else "equal",
                                "exact", "")
        else:
            err, rtol, scale = f"{f.max_error:.3e}", f"{f.tolerance:.0e}", f"{f.scale:.2e}"
        lines.append(f"{f.block:<21s} {f.field:<28s} {f.max_abs:11.3e} {err:>11s} {rtol:>7s} "
                     f"{scale:>9s}  {f.worst_case:<36s} {'pass' if f.passed else 'FAIL'}")
    for block, cid in report.skipped:
        lines.append(f"skipped {block}/{cid} ({FLOAT64_ONLY}, not checked at float32 tolerance)")
    for message in report.missing:
        lines.append(f"not provided (partial check): {message}")
    for message in report.problems:
        lines.append(f"FAIL: {message}")
    failed = [f for f in report.fields if not f.passed]
    n = len(report.fields)
    if report.passed:
        lines.append(f"PASS: {n} fields within the {report.tolerance} tolerances "
                     f"(|port - golden| <= rtol (max(|golden|, M) + S) for every entry)")
    else:
        names = ", ".join(f"{f.block} {f.field} (case {f.worst_case})" for f in failed[:10])
        more = "" if len(failed) <= 10 else f" and {len(failed) - 10} more"
        detail = f": {names}{more}" if failed else ""
        problems = _problem_summary(report.problem_counts)
        lines.append(f"FAIL: {problems + '; ' if problems else ''}"
                     f"{len(failed)} of {n} fields out of tolerance{detail}")
    return "\n".join(lines)

