"""High-precision certificate of radref's float64 forward numerics.

Evaluates the forward pass of the golden cases (``radref golden --where``) of the
blocks log_softmax, slopes, surjection, log_gating, gating_probabilities,
rad_flow and real NVP flow (log p(x) and z) with mpmath at 50 significant
digits -- an independent implementation of the formulas of the Rad notes, fed
with the exact float64 inputs and parameters -- and measures the error of
radref's float64 results in units in the last place.

Two error measures per element, with ``e`` the high-precision value and ``x``
radref's float64 result:

- ``ulps``       = |x - e| / ulp(e): the strict one, relative to e itself;
- ``mixed ulps`` = |x - e| / ulp(max(|e|, 1)): relative for |e| >= 1 and
  absolute (in units of ulp(1) = 2^-52) below, the measure that fits
  log-densities and log-probabilities near 0, whose absolute error is what
  matters (e.g. log(1 - 1e-26) = -1e-26 is computed as 0 in float64: an
  absolute error of 1e-26, but 2^52 strict ulps).

``ulp(y)`` is the spacing of float64 numbers at |fl(y)| (numpy.spacing).  The
certificate states, per block, a bound on the mixed ulps (twice the measured
maximum, at least 4) that tests/test_certificate.py enforces on radref's
current results, reading the reference values stored here as decimal strings
(36 significant digits) so that the test needs no mpmath.

Run from the repository root (needs mpmath)::

    python validation/certificate.py

writes validation/certificate.json and validation/certificate.md.
"""
import json
import math
import os
import sys
import time

import mpmath as mp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from radref import __version__
from radref.reference import golden  # noqa: E402

DPS = 50  # working precision, decimal digits
DIGITS = 36  # stored significant digits of the reference values
BLOCKS = ("log_softmax", "slopes", "surjection", "log_gating", "gating_probabilities",
          "rad_flow", "realnvp_flow")
FIELDS = {
    "log_softmax": ("log_prob", "prob"),
    "slopes": ("log_alpha_minus", "log_alpha_1", "log_alpha_2", "log_alpha_3",
               "log_alpha_plus", "a", "b", "log_p", "log_q"),
    "surjection": ("v", "log_slope"),
    "log_gating": ("log_gate",),
    "gating_probabilities": ("prob",),
    "rad_flow": ("log_px", "z"),
    "realnvp_flow": ("log_px", "z"),
}
HERE = os.path.dirname(os.path.abspath(__file__))
RANGE = mp.mpf(1e120)  # the range limit of the flows, as the float64 number


def M(x):
    """float64 -> mpf, exactly."""
    return mp.mpf(float(x))


# ------------------------------------------------------- the model in mpmath

def m_log_softmax(logits):
    top = max(logits)
    total = mp.fsum(mp.exp(t - top) for t in logits)
    return [t - top - mp.log(total) for t in logits]


def m_slopes(p_logits, q_logits):
    """Notes §3 (paper indices 1, 2, 3 -> 0, 1, 2)."""
    lP, lQ = m_log_softmax(p_logits), m_log_softmax(q_logits)
    L2 = mp.log(1 + mp.exp(lP[0] - lP[1]) + mp.exp(lQ[2] - lQ[1]))
    L1 = L2 + lP[1] - lP[0]
    L3 = L2 + lQ[1] - lQ[2]
    return {"log_alpha_minus": L1 + lQ[0], "log_alpha_1": L1, "log_alpha_2": L2,
            "log_alpha_3": L3, "log_alpha_plus": L3 + lP[2],
            "a": 2 * mp.exp(-L1) - 1, "b": 1 - 2 * mp.exp(-L3), "log_p": lP, "log_q": lQ}


#: docs/golden.md §4: v is clipped to its piece's range; the outer pieces' bounds are
#: the float64 neighbours of -1 and 1
_ONE_UP, _ONE_DOWN = M(float(np.nextafter(1.0, 2.0))), M(float(np.nextafter(-1.0, -2.0)))


def m_surjection(u, s):
    """Eq. 23 with the tie-break rule and the clip of v to its piece's range (which
    changes v only where the slopes, independent inputs, do not meet exactly at the
    breakpoints, e.g. slopes rounded to float32 one by one); returns (v, k, log|f'|)."""
    if u < -1:
        L = s["log_alpha_minus"]
        return min(mp.exp(L) * (u + 1) - 1, _ONE_DOWN), 0, L
    if u > 1:
        L = s["log_alpha_plus"]
        return max(mp.exp(L) * (u - 1) + 1, _ONE_UP), 2, L
    if u < s["a"]:
        L = s["log_alpha_1"]
        v, k = mp.exp(L) * (u + 1) - 1, 0
    elif u < s["b"]:
        L = s["log_alpha_2"]
        v, k = -mp.exp(L) * (u - s["a"]) + 1, 1
    else:
        L = s["log_alpha_3"]
        v, k = mp.exp(L) * (u - 1) + 1, 2
    return min(max(v, mp.mpf(-1)), mp.mpf(1)), k, L


def m_gating_log_probs(v, s, lP, lQ):
    """log p(. | z) for |v| <= 1 (notes §2)."""
    c = (1 + mp.cos(mp.pi * v)) / 2
    sh = mp.sin(mp.pi * v / 2)
    wp, wq = (1 + sh) / 2, (1 - sh) / 2
    return m_log_softmax([c * s[j] + wp * lP[j] + wq * lQ[j] for j in range(3)])


def m_log_gate(v, k, s, lP, lQ):
    if v > 1:
        return mp.mpf(0) if k == 2 else -mp.inf
    if v < -1:
        return mp.mpf(0) if k == 0 else -mp.inf
    return m_gating_log_probs(v, s, lP, lQ)[k]


class MLP:
    def __init__(self, params, prefix):
        self.W1 = [[M(w) for w in row] for row in params[prefix + "W1"]]
        self.b1 = [M(b) for b in params[prefix + "b1"]]
        self.W2 = [[M(w) for w in row] for row in params[prefix + "W2"]]
        self.b2 = [M(b) for b in params[prefix + "b2"]]
        scale = params.get(prefix + "scale")
        self.scale = None if scale is None else [M(c) for c in scale]

    def __call__(self, x):
        pre = [self.b1[j] + mp.fsum(x[i] * self.W1[i][j] for i in range(len(x)))
               for j in range(len(self.b1))]
        h = [p if p > 0 else mp.mpf(0) for p in pre]
        a = [self.b2[o] + mp.fsum(h[j] * self.W2[j][o] for j in range(len(h)))
             for o in range(len(self.b2))]
        if self.scale is None:
            return a
        return [self.scale[o] * mp.tanh(a[o]) for o in range(len(a))]


def out_of_range(z):
    """docs/golden.md §4: an entry beyond +-1e120 (the float64 number) or not finite."""
    return any(not mp.isfinite(t) or abs(t) > RANGE for t in z)


def m_flow(x_row, params, config):
    """log p(x), z and k of one point (notes §4); out-of-range rows (golden.md §4)
    give log p = -inf, z = inf, k = -1."""
    kind, dim, n_layers = config["kind"], config["dim"], config["n_layers"]
    z = [M(t) for t in x_row]
    total = mp.mpf(0)
    ks = [[-1] * dim for _ in range(n_layers)]
    far = (-mp.inf, [mp.inf] * dim, ks)
    if out_of_range(z):
        return far
    for layer in range(n_layers):
        cols_a = [j for j in range(dim) if (j + layer) % 2 == 0]
        cols_b = [j for j in range(dim) if (j + layer) % 2 == 1]
        c = MLP(params, f"{layer}.cond.")([z[j] for j in cols_a])
        new = list(z)
        if kind == "affine":
            for i, j in enumerate(cols_b):
                new[j] = z[j] * mp.exp(c[2 * i]) + c[2 * i + 1]
                total += c[2 * i]
            z = new
            if out_of_range(z):
                return far
            continue
        pieces = []
        for i, j in enumerate(cols_b):
            f = c[10 * i:10 * i + 10]
            s = m_slopes(f[2:5], f[5:8])
            u = (z[j] - f[1]) * mp.exp(-f[0])
            v, k, L = m_surjection(u, s)
            new[j] = v * mp.exp(f[8]) + f[9]
            pieces.append((v, k, L, f, s))
            ks[layer][j] = k
        g = MLP(params, f"{layer}.gate.")(new)
        for i, (v, k, L, f, s) in enumerate(pieces):
            total += m_log_gate(v, k, g[3 * i:3 * i + 3], s["log_p"], s["log_q"]) + L - f[0] + f[8]
        z = new
        if out_of_range(z):
            return (-mp.inf, [mp.inf] * dim, [[-1] * dim for _ in range(n_layers)])
    log_base = -mp.fsum(t * t for t in z) / 2 - dim * mp.log(2 * mp.pi) / 2
    return total + log_base, z, ks


def reference(block, case):
    """High-precision outputs of one golden case: {field: nested lists of mpf}, plus k."""
    inp = case["inputs"]
    if block == "log_softmax":
        rows = [m_log_softmax([M(t) for t in row]) for row in inp["logits"]]
        return {"log_prob": rows, "prob": [[mp.exp(t) for t in row] for row in rows]}
    if block == "slopes":
        rows = [m_slopes([M(t) for t in p], [M(t) for t in q])
                for p, q in zip(inp["p_logits"], inp["q_logits"])]
        return {f: [r[f] for r in rows] for f in FIELDS["slopes"]}
    if block == "surjection":
        out = {"v": [], "log_slope": [], "k": []}
        for i, u in enumerate(inp["u"]):
            s = {f: M(inp[f][i]) for f in golden.SLOPE_FIELDS}
            v, k, L = m_surjection(M(u), s)
            out["v"].append(v)
            out["k"].append(k)
            out["log_slope"].append(L)
        return out
    if block in ("log_gating", "gating_probabilities"):
        out = []
        for i, v in enumerate(inp["v"]):
            v = M(v)
            s, lP, lQ = ([M(t) for t in inp[name][i]] for name in ("s", "log_p", "log_q"))
            if block == "log_gating":
                out.append(m_log_gate(v, int(inp["k"][i]), s, lP, lQ))
            elif v > 1:
                out.append([mp.mpf(0), mp.mpf(0), mp.mpf(1)])
            elif v < -1:
                out.append([mp.mpf(1), mp.mpf(0), mp.mpf(0)])
            else:
                out.append([mp.exp(t) for t in m_gating_log_probs(v, s, lP, lQ)])
        return {"log_gate" if block == "log_gating" else "prob": out}
    if block in ("rad_flow", "realnvp_flow"):
        results = [m_flow(row, case["params"], case["config"]) for row in inp["x"]]
        return {"log_px": [r[0] for r in results], "z": [r[1] for r in results],
                "k": [r[2] for r in results]}
    raise ValueError(block)


# ----------------------------------------------------------------- measures

def flatten(nested):
    if isinstance(nested, (list, tuple)):
        return [y for x in nested for y in flatten(x)]
    return [nested]


def ulp(y):
    return float(np.spacing(abs(float(y))))


def as_float64_range(e):
    """``e``, or +-inf where its float64 rounding overflows (|e| >= 2^1024 (1 - 2^-54))."""
    overflow = mp.mpf(2) ** 1024 * (1 - mp.mpf(2) ** -54)  # at the working precision
    return mp.inf * mp.sign(e) if mp.isfinite(e) and abs(e) >= overflow else e


def errors(x, e):
    """(ulps, mixed ulps) of float64 x against the high-precision e."""
    e = as_float64_range(e)
    if mp.isinf(e):
        return (0.0, 0.0) if x == float(e) else (math.inf, math.inf)
    diff = float(abs(M(x) - e))
    return diff / ulp(e) if e != 0 else (0.0 if diff == 0 else math.inf), \
        diff / ulp(max(abs(e), 1))


def main():
    start = time.perf_counter()
    mp.mp.dps = DPS
    golden_path = os.path.join(golden.default_golden_dir(), golden.JSON_NAME)
    doc = golden.load_document(golden_path)
    report = {"schema": "radref-certificate", "schema_version": 1, "radref_version": __version__,
              "numpy_version": np.__version__, "mpmath_version": mp.__version__,
              "working_digits": DPS, "stored_digits": DIGITS,
              "golden_inputs_sha256": golden.inputs_digest(doc, BLOCKS),
              "measures": {
                  "ulps": "|x - e| / ulp(e), ulp(y) = numpy.spacing(|float(y)|)",
                  "mixed_ulps": "|x - e| / ulp(max(|e|, 1))",
                  "bound": "per block: bound_mixed_ulps = max(4, ceil(2 * measured max))"},
              "blocks": {}}
    overall = {"max_ulps": 0.0, "max_mixed_ulps": 0.0}
    for block in BLOCKS:
        entry = {"cases": [], "max_ulps": 0.0, "max_mixed_ulps": 0.0, "worst": "",
                 "k_mismatches": 0, "n_values": 0}
        for case in doc["blocks"][block]["cases"]:
            ref = reference(block, case)
            outputs, _ = golden.compute(block, case["inputs"], case["params"], case["config"], {})
            c_entry = {"id": case["id"], "fields": {}}
            if "k" in ref:
                k_radref = outputs["k"]
                k_ref = np.array(ref["k"])
                if block in ("rad_flow", "realnvp_flow"):
                    k_ref = k_ref.reshape(k_radref.shape)
                entry["k_mismatches"] += int(np.sum(k_ref != k_radref))
            for field in FIELDS[block]:
                x = np.asarray(outputs[field], dtype=np.float64)
                e = flatten(ref[field])
                assert len(e) == x.size, (block, case["id"], field)
                errs = [errors(xi, ei) for xi, ei in zip(x.ravel(), e)]
                u_max = max(t[0] for t in errs)
                m_max = max(t[1] for t in errs)
                c_entry["fields"][field] = {
                    "shape": list(x.shape),
                    "reference": [mp.nstr(ei, DIGITS, strip_zeros=False)
                                  if not mp.isinf(ei) else ("-inf" if ei < 0 else "inf")
                                  for ei in map(as_float64_range, e)],
                    "max_ulps": u_max, "max_mixed_ulps": m_max}
                entry["n_values"] += x.size
                if m_max > entry["max_mixed_ulps"]:
                    entry["worst"] = f"{case['id']}/{field}"
                entry["max_ulps"] = max(entry["max_ulps"], u_max)
                entry["max_mixed_ulps"] = max(entry["max_mixed_ulps"], m_max)
            entry["cases"].append(c_entry)
        entry["bound_mixed_ulps"] = max(4, math.ceil(2 * entry["max_mixed_ulps"]))
        report["blocks"][block] = entry
        overall["max_ulps"] = max(overall["max_ulps"], entry["max_ulps"])
        overall["max_mixed_ulps"] = max(overall["max_mixed_ulps"], entry["max_mixed_ulps"])
        print(f"{block:<22s} {entry['n_values']:5d} values  max mixed ulps "
              f"{entry['max_mixed_ulps']:8.2f} (bound {entry['bound_mixed_ulps']})  "
              f"max strict ulps {entry['max_ulps']:.3g}  k mismatches {entry['k_mismatches']}",
              flush=True)
    report["summary"] = overall
    with open(os.path.join(HERE, "certificate.json"), "w", encoding="ascii", newline="\n") as f:
        json.dump(report, f, indent=1, allow_nan=False)
        f.write("\n")
    with open(os.path.join(HERE, "certificate.md"), "w", encoding="utf-8", newline="\n") as f:
        f.write(markdown(report))
    print(f"wrote validation/certificate.json and validation/certificate.md "
          f"({time.perf_counter() - start:.0f} s)")
    ok = all(b["k_mismatches"] == 0 for b in report["blocks"].values())
    return 0 if ok else 1


def markdown(report):
    lines = [
        "# High-precision certificate of radref's float64 forward pass",
        "",
        f"Generated by `python validation/certificate.py` (radref {report['radref_version']}, "
        f"NumPy {report['numpy_version']}, mpmath {report['mpmath_version']}). The forward "
        f"outputs of the golden cases (`radref golden --where`) are recomputed with an independent "
        f"mpmath implementation of the formulas at {report['working_digits']} significant "
        f"digits, from the exact float64 inputs and parameters, and radref's float64 results "
        f"are measured against them.  The formulas include the clip of the surjection's v to "
        f"its piece's range (docs/golden.md §4), which matters beyond rounding only where "
        f"independent slope inputs do not meet exactly (slopes rounded to float32 one by one).",
        "",
        "- **ulps** = |x − e| / ulp(e), relative to the exact value e itself;",
        "- **mixed ulps** = |x − e| / ulp(max(|e|, 1)): relative for |e| ≥ 1, absolute in "
        "units of ulp(1) = 2⁻⁵² below (the measure for log-densities and log-probabilities).",
        "",
        "The bound is what `tests/test_certificate.py` enforces on radref's current results "
        "(reference values stored in certificate.json as "
        f"{report['stored_digits']}-digit decimal strings): twice the measured maximum, "
        "at least 4.",
        "",
        "| block | values | max mixed ulps | bound (mixed ulps) | worst case/field "
        "| max strict ulps | branch (k) mismatches |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for name, b in report["blocks"].items():
        lines.append(f"| {name} | {b['n_values']} | {b['max_mixed_ulps']:.2f} | "
                     f"{b['bound_mixed_ulps']} | {b['worst']} | {b['max_ulps']:.3g} | "
                     f"{b['k_mismatches']} |")
    s = report["summary"]
    lines += ["", f"Overall: max mixed ulps {s['max_mixed_ulps']:.2f}, max strict ulps "
              f"{s['max_ulps']:.3g}.", "",
              "Strict errors of ~1e15 ulps occur only where the exact value is tiny next to "
              "the terms it is computed from: the log-probability of a near-certain branch "
              "(log(1 - 1e-26) = -1e-26, computed as 0), log-slopes such as "
              "log(1 + e^-60) (= 1e-26, computed as 0) or differences of two log-slopes of "
              "size 600 that cancel to 1e-49. Their absolute error is 1e-26 or less, below "
              "ulp(1); the mixed measure counts it as such. The larger mixed errors come from "
              "cancellation between terms as large as the logits (`log_alpha_minus = "
              "log_alpha_1 + lQ0`: 32 ulps of 1 at logits +-30, 512 at logits +-1e3, a quarter "
              "of an ulp of 2e3), from the log-space product exp(L + log|u - u0|) at slopes "
              "e^730 (relative error eps |L|) and from the conditioning of six stacked Rad "
              "layers, whose outer slopes amplify the rounding of early layers.", ""]
    lines += ["## Per case", "", "| block | case | field | max mixed ulps | max strict ulps |",
              "|---|---|---|---:|---:|"]
    for name, b in report["blocks"].items():
        for c in b["cases"]:
            for field, f in c["fields"].items():
                lines.append(f"| {name} | {c['id']} | {field} | {f['max_mixed_ulps']:.2f} | "
                             f"{f['max_ulps']:.3g} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
