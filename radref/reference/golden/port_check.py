"""The port checker: a port's outputs and gradients against the golden ones
(``radref check-port``; docs/golden.md §5-6)."""
import math
from typing import NamedTuple

import numpy as np

#: Documented tolerances (docs/golden.md §5): see :func:`error_relative_to_golden_max`.
TOLERANCES = {
    "float64": {"outputs": 1e-12, "grads": 1e-9},
    "float32": {"outputs": 1e-4, "grads": 1e-3},
}

#: Floor of the denominator of :func:`error_relative_to_golden_max`.
REL_FLOOR = 1e-8


def error_relative_to_golden_max(port, gold):
    """Normwise error of one field of one case, relative to the golden array's
    largest entry.

    ``max_i |port_i - gold_i| / max(REL_FLOOR, max_i |gold_i|)`` over the
    entries where ``gold`` is finite (the denominator uses the golden values
    only).  Non-finite golden entries must be matched exactly (``inf`` by
    ``inf`` of the same sign, ``nan`` by ``nan``), else the error is ``inf``;
    so is any non-finite port value where the golden one is finite.
    Returns ``(max_abs_error, error relative to the golden maximum)``.
    """
    port = np.asarray(port, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    finite = np.isfinite(gold)
    special_ok = np.all((port[~finite] == gold[~finite]) |
                        (np.isnan(port[~finite]) & np.isnan(gold[~finite])))
    if not special_ok or not np.all(np.isfinite(port[finite])):
        return math.inf, math.inf
    if not np.any(finite):
        return 0.0, 0.0
    abs_err = float(np.max(np.abs(port[finite] - gold[finite])))
    return abs_err, abs_err / max(REL_FLOOR, float(np.max(np.abs(gold[finite]))))


class FieldResult(NamedTuple):
    block: str
    field: str  # "outputs.<name>" or "grads.<name>"
    max_abs: float  # over the cases (for int fields: the largest |difference|)
    max_rel: float  # over the cases (for int fields: the number of mismatches)
    worst_case: str
    tolerance: float  # 0 for exact (int) fields
    passed: bool
    note: str = ""


class Report(NamedTuple):
    fields: list  # FieldResult, one per block and field
    problems: list  # shape mismatches; missing blocks, cases or fields (unless partial)
    missing: list  # missing blocks, cases or fields in a partial check (do not fail)
    skipped: list  # (block, case id) skipped (Float64Only at float32 tolerance)
    tolerance: str

    @property
    def passed(self):
        return not self.problems and all(f.passed for f in self.fields)


def check_port(port_doc, golden_doc, tolerance="float64", partial=False):
    """Compare a port's outputs and gradients with the golden ones.

    Parameters
    ----------
    port_doc, golden_doc : dict
        In-memory documents (:func:`from_json`).  Only ``outputs`` and
        ``grads`` of the port are read; its cases are matched by ``id``.
    tolerance : {"float64", "float32"}
        Tolerances of :data:`TOLERANCES`; ``"float32"`` skips the cases
        flagged ``Float64Only``.
    partial : bool
        If true, golden blocks, cases and fields the port does not provide are
        listed but do not fail the check (for a port in progress).

    Returns
    -------
    Report
        Integer fields (``k``) must match exactly; for them ``max_rel`` holds
        the number of differing entries.
    """
    for label, doc in (("port_doc", port_doc), ("golden_doc", golden_doc)):
        if not isinstance(doc, dict) or not isinstance(doc.get("blocks"), dict):
            raise TypeError(f"{label} must be a document read by from_json() or "
                            f"load_document(), got {type(doc).__name__}")
    if not isinstance(tolerance, str) or tolerance not in TOLERANCES:
        raise ValueError(f"tolerance must be one of {sorted(TOLERANCES)}, got {tolerance!r}")
    tol = TOLERANCES[tolerance]
    problems, missing, skipped = [], [], []
    acc = {}  # (block, field) -> dict
    for bname, gblock in golden_doc["blocks"].items():
        pblock = port_doc["blocks"].get(bname)
        if pblock is None:
            missing.append(f"block {bname} not provided")
            continue
        pcases = {c["id"]: c for c in pblock["cases"]}
        for gcase in gblock["cases"]:
            cid = gcase["id"]
            if tolerance == "float32" and "Float64Only" in gcase["flags"]:
                skipped.append((bname, cid))
                continue
            pcase = pcases.get(cid)
            if pcase is None:
                missing.append(f"{bname}/{cid}: case not provided")
                continue
            for section in ("outputs", "grads"):
                for fname, gold in gcase[section].items():
                    field = f"{section}.{fname}"
                    port = pcase[section].get(fname)
                    if port is None:
                        missing.append(f"{bname}/{cid}: {field} not provided")
                        continue
                    if port.shape != gold.shape:
                        problems.append(f"{bname}/{cid}: {field} has shape {list(port.shape)}, "
                                        f"expected {list(gold.shape)}")
                        continue
                    exact = gold.dtype.kind in "iu"
                    if exact:
                        diff = np.abs(port.astype(np.float64) - gold)
                        abs_err = float(np.max(diff, initial=0.0))
                        rel_err = float(np.sum(diff != 0))
                        limit = 0.0
                    else:
                        abs_err, rel_err = error_relative_to_golden_max(port, gold)
                        limit = tol[section]
                    e = acc.setdefault((bname, field), {"abs": 0.0, "rel": -1.0, "worst": "",
                                                        "limit": limit, "ok": True, "exact": exact})
                    if rel_err > e["rel"]:
                        e["rel"], e["worst"] = rel_err, cid
                    e["abs"] = max(e["abs"], abs_err)
                    e["ok"] = e["ok"] and rel_err <= limit
    fields = [FieldResult(b, f, e["abs"], e["rel"], e["worst"], e["limit"], e["ok"],
                          "exact" if e["exact"] else "")
              for (b, f), e in acc.items()]
    if not partial:
        problems, missing = missing + problems, []
    return Report(fields, problems, missing, skipped, tolerance)


def format_report(report, title=""):
    """Human-readable table: one line per block and field, then a verdict."""
    lines = []
    if title:
        lines.append(title)
    header = f"{'block':<21s} {'field':<28s} {'max abs err':>11s} {'max rel err':>11s} " \
             f"{'tolerance':>9s}  {'worst case':<24s} result"
    lines.append(header)
    lines.append("-" * len(header))
    for f in report.fields:
        if f.note == "exact":
            rel = f"{int(f.max_rel)} differ" if f.max_rel else "equal"
            tol = "exact"
        else:
            rel = f"{f.max_rel:.3e}"
            tol = f"{f.tolerance:.0e}"
        lines.append(f"{f.block:<21s} {f.field:<28s} {f.max_abs:11.3e} {rel:>11s} {tol:>9s}  "
                     f"{f.worst_case:<24s} {'pass' if f.passed else 'FAIL'}")
    for block, cid in report.skipped:
        lines.append(f"skipped {block}/{cid} (Float64Only, not checked at float32 tolerance)")
    for message in report.missing:
        lines.append(f"not provided (partial check): {message}")
    for message in report.problems:
        lines.append(f"FAIL: {message}")
    failed = [f for f in report.fields if not f.passed]
    n = len(report.fields)
    if report.passed:
        lines.append(f"PASS: {n} fields within the {report.tolerance} tolerances")
    else:
        names = ", ".join(f"{f.block} {f.field} (case {f.worst_case})" for f in failed[:10])
        more = "" if len(failed) <= 10 else f" and {len(failed) - 10} more"
        detail = f": {names}{more}" if failed else ""
        lines.append(f"FAIL: {len(failed)} of {n} fields out of tolerance"
                     f"{', ' + str(len(report.problems)) + ' problems' if report.problems else ''}"
                     f"{detail}")
    return "\n".join(lines)
