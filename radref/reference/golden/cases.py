"""Case generators: the inputs, parameters and flags of every golden case.

Every case's inputs are drawn from a generator seeded by its ``block/id``
(stable, independent of the order of the cases) but are *stored*: NumPy
promises identical random streams only on the same build, so a port, and
:func:`radref.reference.golden.document.recompute_document`, read the stored
arrays.
"""
import hashlib

import numpy as np

from radref.core.flow import FlowConfig, flow_forward, flow_init, layer_params, nest_params
from radref.core.gating import gating_probabilities, sample_branch
from radref.core.layers import layer_kind
from radref.core.layers.masks import split
from radref.core.mlp import mlp_forward
from radref.core.numerics import RANGE
from radref.core.slopes import slopes_forward
from radref.core.softmax import log_softmax_forward
from radref.reference.golden.blocks import BLOCKS, SLOPE_FIELDS, compute
from radref.reference.golden.magnitudes import case_magnitudes

FLAGS = {
    "Generic": "random inputs and parameters of moderate size",
    "BatchOfOne": "a batch of a single row",
    "OddDimension": "d = 5: the conditioning and transformed halves have unequal sizes "
                    "(3 and 2 in even layers, 2 and 3 in odd layers)",
    "NearBreakpoint": "inputs 1e-9 from a breakpoint of the surjection (or from v = +-1)",
    "UlpFromBreakpoint": "inputs one ulp from a breakpoint (or from v = +-1); the surjection "
                         "clips v so that it never crosses +-1 against u",
    "AtBreakpoint": "inputs exactly at a breakpoint: the tie-break rule decides the piece",
    "Outside": "|u| > 1 or |v| > 1: only one branch exists (k = 2 above, k = 0 below)",
    "SaturatedGating": "gating or boundary logits of size 30 to 3e3 (in flows: at several "
                       "layers): probabilities far below 1e-300 must be handled in log space",
    "LargeLogits": "logits of size 1e2 to 3e3 (and mixed scales): log-softmax must subtract the "
                   "row maximum before exp, which overflows (or underflows to log 0) otherwise",
    "ClipChangesV": "rows where the clip of v changes it (by an ulp or two): without the clip "
                    "v crosses +-1 against u and the gating sees the wrong side",
    "OverflowSafeProduct": "|log alpha| > 700: exp(L) (u - u0) must be formed without overflow "
                           "(finite where exp(L) alone overflows, exactly 0 at a zero offset, "
                           "+-inf only where the value exceeds float64)",
    "CoincidingBreakpoints": "a rounds to exactly -1 (or b to 1): piece 1 (or 3) is empty and "
                             "u = -1 lies on the middle piece",
    "OutOfRange": "rows with an entry beyond +-1e120 or not finite (at the input or after a "
                  "layer): flows give log p = -inf, z = inf, k = -1 and zero gradient; a Rad "
                  "layer evaluates its gating network at z = 0 for the rows of z out of range",
    "SaturatedTanh": "tanh head with |pre-activation| > 20: tanh = +-1 and 1 - tanh^2 = 0 "
                     "in float64",
    "ReluAtZero": "hidden pre-activations exactly 0: the ReLU derivative there is 0",
    "AtCdfBoundary": "uniforms exactly at (or one ulp below) a cumulative probability of "
                     "the inverse-CDF rule, or zero-probability branches",
    "Tail": "points far from the data (x ~ N(0, 5^2) for a flow fitted to nothing)",
    "NonFinite": "an expected output is -inf (a branch with no preimage); the case has no "
                 "loss and no gradients",
    "FirstStep": "Adam step with t = 0 and zero moments (bias correction at t = 1)",
    "LargeEps": "Adam eps comparable to sqrt(v_hat): eps must actually be used",
    "ZeroGradient": "all gradients zero",
    "Float64Only": "meaningful only in float64 (rows 1e-9 or one float64 ulp from a "
                   "breakpoint, ties that float32 rounding breaks, values beyond the float32 "
                   "range, cancellations whose float32 rounding error can reach the float32 "
                   "tolerance); the case's float64_only says which: a float32 port skips it "
                   "(check-port --tolerance float32 does)",
    "Float32Inputs": "every float input, parameter and loss weight is a float32 number: a "
                     "float32 port reads exactly the stored values (its exact ties stay ties)",
}


#: Why the cases with rows 1e-9 and one ulp from a breakpoint (or from +-1) are Float64Only.
ULP_ROWS = ("rows one float64 ulp and 1e-9 from a breakpoint or from +-1, and exactly at it: "
            "rounded to float32 they land on the breakpoint or across it (another piece, "
            "another k)")


def _rng(case_key):
    """Generator seeded from the case's ``block/id`` (stable, order independent)."""
    seed = int.from_bytes(hashlib.sha256(case_key.encode()).digest()[:8], "little")
    return np.random.default_rng(seed)


def _case(cid, comment, flags, inputs, params=None, config=None, loss=True,
          float64_only=None, loss_rows=None, float32_inputs=False, zero_weight_rows=None):
    """One case.

    ``float64_only``: why a float32 port cannot reproduce it (the case is then
    flagged ``Float64Only``).  ``loss_rows="in_range"``: only the rows whose
    output ``z`` lies within +-RANGE enter the loss (the others get loss weight
    0), default all rows.  ``zero_weight_rows``: ``{output: row indices}`` whose
    loss weight is 0 (e.g. where a gradient would lie beyond the float32 range).
    ``float32_inputs``: every float input and parameter is rounded to float32
    (and, in :func:`generate_cases`, the loss weights): flag ``Float32Inputs``,
    a float32 port reads exactly the stored numbers.
    """
    params = params or {}
    if float32_inputs:
        inputs = {k: _f32(v) if np.asarray(v).dtype.kind == "f" else v for k, v in inputs.items()}
        params = {k: _f32(v) for k, v in params.items()}
        flags = list(flags) + ["Float32Inputs"]
    case = {"id": cid, "comment": comment, "flags": list(flags), "config": config or {},
            "inputs": inputs, "params": params, "loss": loss, "loss_rows": loss_rows,
            "zero_weight_rows": zero_weight_rows or {}}
    if float64_only:
        case["flags"].append("Float64Only")
        case["float64_only"] = float64_only
    return case


def _f32(x):
    """``x`` rounded to the nearest float32 number, as float64 (+-inf, NaN kept)."""
    with np.errstate(over="ignore"):  # beyond float32: +-inf
        return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)


def _logits(rng, n, size):
    return rng.normal(0.0, size, (n, 3))


def _saturated(rng, n, size):
    """Logits of entries +-size (random signs), plus a small jitter."""
    return size * rng.choice([-1.0, 1.0], (n, 3)) + rng.normal(0.0, 0.5, (n, 3))


def _cases_log_softmax():
    yield lambda r: _case("generic", "random logits, N(0, 2^2)", ["Generic"],
                          {"logits": _logits(r, 8, 2.0)})
    yield lambda r: _case("batch_of_one", "one row", ["BatchOfOne"],
                          {"logits": _logits(r, 1, 2.0)})
    yield lambda r: _case("saturated_30", "logits +-30: probabilities down to e^-60",
                          ["SaturatedGating"], {"logits": _saturated(r, 6, 30.0)})
    yield lambda r: _case("saturated_300", "logits +-300: probabilities underflow to 0, "
                          "log-probabilities stay exact", ["SaturatedGating"],
                          {"logits": _saturated(r, 6, 300.0)})
    yield lambda r: _case("ties", "equal logits (uniform), and two equal maxima",
                          [], {"logits": np.array([[0.0, 0.0, 0.0], [1.5, 1.5, -2.0],
                                                   [-7.0, 3.0, 3.0]])})
    yield lambda r: _case("width_5", "a last axis of size 5 (the function is general)",
                          ["Generic"], {"logits": r.normal(0.0, 2.0, (4, 5))})
    yield lambda r: _case("logits_1e3", "logits of size 1e3: exp overflows (and underflows to "
                          "log 0) unless the row maximum is subtracted first", ["LargeLogits"],
                          {"logits": np.array([[1e3, 0.0, -1e3], [-1e3, -1e3, -1000.5],
                                               [1e3, 999.0, 998.0], [-1e3, 1e3, 0.0]])})
    yield lambda r: _case("mixed_scales", "large and tiny logits in one row; probabilities "
                          "that underflow to 0 next to 1", ["LargeLogits"],
                          {"logits": np.array([[1e3, 1e-3, 0.0], [1e-12, -1e-12, 0.0],
                                               [-700.0, 0.0, 700.0], [709.0, 710.0, -3.0],
                                               [1e-300, 0.0, -1e-300], [2.5, -1e3, 1e3]])})


def _cases_slopes():
    yield lambda r: _case("generic", "random logits, N(0, 1.5^2)", ["Generic"],
                          {"p_logits": _logits(r, 10, 1.5), "q_logits": _logits(r, 10, 1.5)})
    yield lambda r: _case("batch_of_one", "one row", ["BatchOfOne"],
                          {"p_logits": _logits(r, 1, 1.5), "q_logits": _logits(r, 1, 1.5)})
    yield lambda r: _case("uniform_boundary", "P = Q = uniform: all slopes 3 except "
                          "alpha_- = alpha_+ = 1, a = -1/3, b = 1/3", [],
                          {"p_logits": np.zeros((1, 3)), "q_logits": np.zeros((1, 3))})
    yield lambda r: _case("saturated_30", "logits +-30", ["SaturatedGating"],
                          {"p_logits": _saturated(r, 8, 30.0), "q_logits": _saturated(r, 8, 30.0)})
    yield lambda r: _case("saturated_300", "logits +-300: slopes up to e^1200, exact in log "
                          "space; a, b may round to -1, 1", ["SaturatedGating"],
                          {"p_logits": _saturated(r, 8, 300.0),
                           "q_logits": _saturated(r, 8, 300.0)})
    yield lambda r: _case("logits_1e3", "logits +-1e3: the log-softmaxes need the max shift; "
                          "slopes up to e^4000, exact in log space; a, b round to -1, 1",
                          ["LargeLogits", "SaturatedGating"],
                          {"p_logits": _saturated(r, 6, 1e3), "q_logits": _saturated(r, 6, 1e3)},
                          float64_only="log_alpha_minus = log_alpha_1 + log Q_0 (and "
                                       "log_alpha_plus) cancel terms of size 2e3, whose float32 "
                                       "spacing is 1.2e-4, into results of size 1: a correct "
                                       "float32 port's error is up to about 1e-4, the float32 "
                                       "tolerance, depending on its order of operations "
                                       "(measured: 0.34 of it in two ports)")


def _moderate_slopes(rng, n):
    slopes, _ = slopes_forward(_logits(rng, n, 1.0), _logits(rng, n, 1.0))
    return {f: getattr(slopes, f) for f in SLOPE_FIELDS}


def _one_slopes_repeated(rng, n):
    s = _moderate_slopes(rng, 1)
    return {f: np.repeat(s[f], n) for f in SLOPE_FIELDS}


def _around(point):
    """[p - 1e-9, p - 1 ulp, p, p + 1 ulp, p + 1e-9]."""
    return np.array([point - 1e-9, np.nextafter(point, -np.inf), point,
                     np.nextafter(point, np.inf), point + 1e-9])


def _slopes_of(logit_pairs):
    """Slope fields of one row per ``(p_logits, q_logits)`` pair (lists of 3)."""
    p = np.array([pq[0] for pq in logit_pairs], dtype=np.float64)
    q = np.array([pq[1] for pq in logit_pairs], dtype=np.float64)
    slopes, _ = slopes_forward(p, q)
    return {f: getattr(slopes, f) for f in SLOPE_FIELDS}


def _gate_hidden(kind, hidden):
    """A flow's gating width: ``hidden`` for a kind with a gating network, else 0."""
    return hidden if "gate_hidden" in layer_kind(kind).DEFAULT_ARCHITECTURE else 0


#: ``surjection/clip``'s inputs (hex doubles, one row each): the slopes of the
#: logit pairs (0, 0, 0), (0, 0, 0) [u = 1/3]; three rows found by search, u within
#: 3 ulps of a or b on pieces 1, 2, 3 with an unclipped v beyond +-1; and
#: ((0, 0, 0), (-40, 0, 0)), ((0, 0, -40), (0, 0, 0)) [u = -1.5, 1.5].
_SURJECTION_CLIP_ROWS = {
    "log_alpha_minus": ["0x0.0p+0", "-0x1.c2f168fb603b0p-3", "0x1.67f3ded527380p-1",
                        "-0x1.07f7a188cbf0ap-1", "-0x1.3cc19b82680d0p+5", "0x0.0p+0"],
    "log_alpha_1": ["0x1.193ea7aad030bp+0", "0x1.bb126c1c944bap-1", "0x1.2e4b46e0d499dp+1",
                    "0x1.d1c608b974fd8p-2", "0x1.193ea7aad030bp+0", "0x1.193ea7aad030bp+0"],
    "log_alpha_2": ["0x1.193ea7aad030bp+0", "0x1.3712e84abc7a4p+0", "0x1.2c218ab4e8d26p+1",
                    "0x1.7f3aac57717d2p+0", "0x1.193ea7aad030bp+0", "0x1.193ea7aad030bp+0"],
    "log_alpha_3": ["0x1.193ea7aad030bp+0", "0x1.43a97efe8c60ap+0", "0x1.afe38aa9d1a20p-3",
                    "0x1.f44f76c880b5cp+0", "0x1.193ea7aad030bp+0", "0x1.193ea7aad030bp+0"],
    "log_alpha_plus": ["0x0.0p+0", "-0x1.a259fb9242450p-3", "-0x1.67cd53f6f9848p+0",
                       "0x1.7ec0dd9255140p+0", "0x0.0p+0", "-0x1.3cc19b82680d0p+5"],
    "a": ["-0x1.5555555555556p-2", "-0x1.4404f29c36cc0p-3", "-0x1.9f79a97109bd0p-1",
          "0x1.1389067d7f19cp-2", "-0x1.5555555555556p-2", "-0x1.5555555555556p-2"],
    "b": ["0x1.5555555555556p-2", "0x1.bd9274311bd1cp-2", "-0x1.3d4e3445c7c98p-1",
          "0x1.6ef121078a58cp-1", "0x1.5555555555556p-2", "0x1.5555555555556p-2"],
    "u": ["0x1.5555555555555p-2", "-0x1.4404f29c36cc1p-3", "-0x1.3d4e3445c7c99p-1",
          "0x1.6ef121078a58cp-1", "-0x1.8000000000000p+0", "0x1.8000000000000p+0"],
}


def _cases_surjection():
    def generic(r):
        inp = _moderate_slopes(r, 12)
        inp["u"] = r.normal(0.0, 1.0, 12)
        return _case("generic", "u ~ N(0, 1), per-row slopes from random logits", ["Generic"], inp)
    yield generic

    def batch_of_one(r):
        inp = _moderate_slopes(r, 1)
        inp["u"] = r.uniform(-1.0, 1.0, 1)
        return _case("batch_of_one", "one row", ["BatchOfOne"], inp)
    yield batch_of_one

    def outside(r):
        inp = _moderate_slopes(r, 6)
        inp["u"] = np.array([-30.0, -2.5, -1.25, 1.25, 2.5, 30.0])
        return _case("outside", "|u| > 1: the outer pieces (alpha_-, alpha_+)", ["Outside"], inp)
    yield outside

    for name in ("minus_one", "a", "b", "plus_one"):
        def at_breakpoint(r, name=name):
            inp = _one_slopes_repeated(r, 5)
            point = {"minus_one": -1.0, "plus_one": 1.0}.get(name)
            if point is None:
                point = float(inp[name][0])
            inp["u"] = _around(point)
            label = {"minus_one": "-1", "plus_one": "1"}.get(name, name)
            return _case(f"breakpoint_{name}",
                         f"u = {label} - 1e-9, - 1 ulp, exactly {label}, + 1 ulp, + 1e-9 "
                         f"(tie-break: a breakpoint belongs to the piece on its right inside "
                         f"[-1, 1]; u = 1 is piece 3)",
                         ["NearBreakpoint", "UlpFromBreakpoint", "AtBreakpoint"], inp,
                         float64_only=ULP_ROWS)
        yield at_breakpoint

    def saturated(r):
        slopes, _ = slopes_forward(_saturated(r, 8, 30.0), _saturated(r, 8, 30.0))
        inp = {f: getattr(slopes, f) for f in SLOPE_FIELDS}
        inp["u"] = np.concatenate([r.uniform(-1.0, 1.0, 6), [-1.5, 1.5]])
        return _case("saturated_30", "slopes from logits +-30 (slopes up to ~e^120, a and b "
                     "next to -1 and 1; v beyond the float32 range for |u| > 1)",
                     ["SaturatedGating", "Outside"], inp,
                     float64_only="slopes up to e^120 put v beyond the float32 range (3.4e38) "
                                  "for |u| > 1")
    yield saturated


    def clip(r):
        # golden.md's example (u = 1/3, uniform P = Q: unclipped v = -1 - 4e-16), rows on
        # pieces 1, 2, 3 within 3 ulps of a or b whose unclipped v crosses +-1 (found once by
        # search over slopes of N(0, 1) logits), and outer pieces of slope ~e^-40 whose v
        # rounds to -+1 and is clipped one ulp outside.  The slopes are stored constants, not
        # recomputed: recomputed on another CPU they could move by an ulp, and the rows with
        # them (docs/golden.md §5, "Bit-identical or toleranced").
        inp = {name: np.array([float.fromhex(h) for h in values])
               for name, values in _SURJECTION_CLIP_ROWS.items()}
        return _case("clip", "rows whose unclipped v crosses +-1 against u (u = 1/3 with "
                     "P = Q uniform; u within 3 ulps of a or b on pieces 1, 2, 3; outer pieces "
                     "of slope ~e^-40 whose v rounds to -1, 1): v is clipped to its piece's "
                     "range, and its derivative is that of the unclipped line",
                     ["ClipChangesV", "UlpFromBreakpoint", "Outside"], inp,
                     float64_only=ULP_ROWS)
    yield clip

    def overflow_safe_product(r):
        # alpha_plus = e^730, alpha_3 = e^800 (a = 0, b = 1); alpha_minus = e^730 (a = -1)
        pairs = [[[0.0, 0.0, -70.0], [0.0, 0.0, -800.0]]] * 4 + \
            [[[-730.4, 0.0, 0.0], [0.0, 0.0, 0.0]]] * 3
        inp = _slopes_of(pairs)
        one_up, one_down = np.nextafter(1.0, 2.0), np.nextafter(-1.0, -2.0)
        inp["u"] = np.array([one_up, 1.5, 1.0, 0.5, one_down, -1.5, 0.0])
        return _case("overflow_safe_product", "log alpha of 730 and 800 with offsets u - u0 of "
                     "one ulp (v = 1 + e^730 2^-52: finite, where exp(730) alone overflows), "
                     "0.5 (v = +-inf) and exactly 0 (u = 1 on a slope e^800: v = 1, not "
                     "inf * 0); gradients finite, infinite and 0 likewise",
                     ["OverflowSafeProduct", "Outside", "SaturatedGating"], inp,
                     float64_only="slopes e^730 and e^800: v and the gradients lie beyond the "
                                  "float32 range")
    yield overflow_safe_product

    def coinciding_breakpoints(r):
        # p0 - p1 = -40: a = 2 e^-40.7 - 1 rounds to -1; q2 - q1 = -40: b rounds to 1
        minus, plus, both = ([-40.0, 0.0, 0.0], [0.0] * 3), ([0.0] * 3, [0.0, 0.0, -40.0]), \
            ([-40.0, 0.0, 0.0], [0.0, 0.0, -40.0])
        inp = _slopes_of([minus] * 4 + [plus] * 3 + [both] * 3)
        inp["u"] = np.array([np.nextafter(-1.0, -2.0), -1.0, np.nextafter(-1.0, 0.0), -1.0 + 1e-9,
                             np.nextafter(1.0, 0.0), 1.0, np.nextafter(1.0, 2.0), -1.0, 0.0, 1.0])
        return _case("coinciding_breakpoints", "a = -1 or b = 1 exactly (rounded): piece 1 or 3 "
                     "is empty and u = -1 lies on the middle piece (k = 1, v = 1 when a = -1); "
                     "u = 1 stays on piece 3", ["CoincidingBreakpoints", "AtBreakpoint",
                                                "UlpFromBreakpoint"], inp,
                     float64_only=ULP_ROWS)
    yield coinciding_breakpoints

    def breakpoint_ties(r):
        # float32 numbers throughout: u = a rounded to float32 is still a, so the ties
        # hold in a float32 port too (the 1e-9 and one-ulp rows are breakpoint_* above)
        inp = {f: _f32(x) for f, x in _one_slopes_repeated(r, 9).items()}
        a, b = float(inp["a"][0]), float(inp["b"][0])
        inp["u"] = _f32([-1.0, a, b, 1.0, 0.5 * (a - 1.0), 0.5 * (a + b), 0.5 * (b + 1.0),
                         -1.5, 1.5])
        return _case("breakpoint_ties", "u exactly -1, a, b and 1 (expected k 0, 1, 2, 2; at "
                     "-1 the slope log_alpha_1, at 1 log_alpha_3), then a point inside each "
                     "piece; float32 inputs, so the ties hold in float32 too (the slopes, rounded "
                     "to float32 one by one, no longer meet exactly: at u = b the unclipped v is "
                     "1e-7 below -1, and the clip keeps it at -1)",
                     ["AtBreakpoint", "ClipChangesV"], inp, float32_inputs=True)
    yield breakpoint_ties

    def coinciding_breakpoint_ties(r):
        # a = -1 exactly (p0 - p1 = -40), b = 1 exactly (q2 - q1 = -40), or both
        minus, plus, both = ([-40.0, 0.0, 0.0], [0.0] * 3), ([0.0] * 3, [0.0, 0.0, -40.0]), \
            ([-40.0, 0.0, 0.0], [0.0, 0.0, -40.0])
        inp = {f: _f32(x) for f, x in _slopes_of([minus] * 4 + [plus] * 4 + [both] * 4).items()}
        inp["u"] = np.array([-1.0, -1.5, -0.5, 0.5, 1.0, 1.5, -1.0, 0.5, -1.0, 1.0, 0.0, 0.5])
        return _case("coinciding_breakpoint_ties", "a = -1 exactly (rows 0-3), b = 1 exactly "
                     "(rows 4-7), both (rows 8-11); u = -1 with a = -1 lies on the middle piece "
                     "(k = 1, v = 1), u = 1 with b = 1 on piece 3 (k = 2); float32 inputs, so the "
                     "ties hold in float32 too", ["CoincidingBreakpoints", "AtBreakpoint",
                                                  "Outside"], inp, float32_inputs=True)
    yield coinciding_breakpoint_ties

    def overflow_safe_product_float32(r):
        # q = (0, 0, -800): b = 1, log_alpha_3 = 800.7, log_alpha_plus = 799.6;
        # q = (0, 0, -95): b = 1, log_alpha_3 = 95.7 (exp overflows float32, not float64);
        # p = (-800, 0, 0) and (-95, 0, 0): a = -1, log_alpha_minus = 799.6 and 94.6
        s800q, s95q = ([0.0] * 3, [0.0, 0.0, -800.0]), ([0.0] * 3, [0.0, 0.0, -95.0])
        s800p, s95p = ([-800.0, 0.0, 0.0], [0.0] * 3), ([-95.0, 0.0, 0.0], [0.0] * 3)
        inp = {f: _f32(x) for f, x in
               _slopes_of([s800q] * 3 + [s95q] * 2 + [s800p] + [s95p] * 2).items()}
        ulp32 = 2.0 ** -23  # the float32 spacing above 1
        inp["u"] = np.array([1.0, 1.5, 0.5, 1.0, 1.0 + ulp32, -1.5, -1.0 - ulp32, -1.0])
        return _case("overflow_safe_product_float32", "float32 numbers: u = 1 on slopes e^800.7 "
                     "(row 0) and e^95.7 (row 3): zero offset, v = 1 exactly (exp(L) alone is "
                     "inf in float64, resp. float32: inf * 0 = NaN); u one float32 ulp beyond "
                     "+-1 on outer slopes e^94.6 (rows 4, 6): v = +-1.4e34, finite in float32 "
                     "where exp(94.6) overflows; v = +-inf on slopes e^799.6 (rows 1, 5).  Rows "
                     "3, 4, 6 have loss weight 0 on v (dv/du = e^95 is beyond float32)",
                     ["OverflowSafeProduct", "Outside", "SaturatedGating",
                      "CoincidingBreakpoints"], inp, float32_inputs=True,
                     zero_weight_rows={"v": [3, 4, 6]})
    yield overflow_safe_product_float32


def _cases_surjection_inverse():
    def generic(r):
        inp = _moderate_slopes(r, 12)
        inp["v"] = r.uniform(-1.0, 1.0, 12)
        inp["k"] = r.integers(0, 3, 12)
        return _case("generic", "v ~ U(-1, 1), random branch", ["Generic"], inp)
    yield generic

    def boundary(r):
        inp = _one_slopes_repeated(r, 12)
        inp["v"] = np.array([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, -1.0 - 1e-9, 1.0 + 1e-9,
                             np.nextafter(-1.0, -np.inf), np.nextafter(1.0, np.inf),
                             -1.0 + 1e-9, 1.0 - 1e-9])
        inp["k"] = np.array([0, 1, 2, 0, 1, 2, 0, 2, 0, 2, 1, 1])
        # Not Float64Only: a row that float32 rounding moves onto +-1 changes piece (0 -> 1,
        # 4 -> 3) but not u, since the pieces share their anchors (u = +-1 at v = +-1).
        return _case("boundary", "v = -1 and 1 on every branch; just outside (forced k); "
                     "just inside", ["NearBreakpoint", "UlpFromBreakpoint", "AtBreakpoint"], inp)
    yield boundary

    def outside(r):
        inp = _moderate_slopes(r, 4)
        inp["v"] = np.array([-20.0, -1.5, 1.5, 20.0])
        inp["k"] = np.array([0, 0, 2, 2])
        return _case("outside", "|v| > 1 with the only branch", ["Outside"], inp)
    yield outside


    def overflow_safe_product(r):
        # alpha_minus = alpha_plus = e^-720.6: the inverse slope e^720.6 overflows alone
        pairs = [[[0.0] * 3, [-721.0, 0.0, 0.0]]] * 4 + [[[0.0, 0.0, -721.0], [0.0] * 3]] * 3
        inp = _slopes_of(pairs)
        inp["v"] = np.array([np.nextafter(-1.0, -2.0), -1.5, -1.0, 0.3,
                             np.nextafter(1.0, 2.0), 1.5, 1.0])
        inp["k"] = np.array([0, 0, 0, 1, 2, 2, 2])
        return _case("overflow_safe_product", "outer slopes e^-720.6: u - u0 = e^720.6 (v - v0) "
                     "is finite for v one ulp beyond +-1 (where exp(720.6) alone overflows) and "
                     "+-inf for v = +-1.5", ["OverflowSafeProduct", "Outside"], inp,
                     float64_only="inverse slopes e^720 and u beyond the float32 range")
    yield overflow_safe_product

    def overflow_safe_product_float32(r):
        # q = (-95, 0, 0): log_alpha_minus = -94.6; p = (0, 0, -95): log_alpha_plus = -94.6;
        # -800 instead of -95: -799.6
        q95, p95 = ([0.0] * 3, [-95.0, 0.0, 0.0]), ([0.0, 0.0, -95.0], [0.0] * 3)
        q800, p800 = ([0.0] * 3, [-800.0, 0.0, 0.0]), ([0.0, 0.0, -800.0], [0.0] * 3)
        inp = {f: _f32(x) for f, x in
               _slopes_of([q95] * 3 + [p95] * 2 + [q800, p800]).items()}
        ulp32 = 2.0 ** -23
        inp["v"] = np.array([-1.0 - ulp32, -1.0 - 2.0 ** -12, -1.0, 1.0 + ulp32, 0.25,
                             -1.0 - ulp32, 1.0 + ulp32])
        inp["k"] = np.array([0, 0, 0, 2, 1, 0, 2])
        return _case("overflow_safe_product_float32", "float32 numbers: outer slopes e^-94.6, "
                     "v one float32 ulp (and 2^-12) beyond +-1: u = -1 - e^94.6 (v + 1) = "
                     "-1.4e34 (and -2.9e37), finite in float32 where exp(94.6) overflows; "
                     "slopes e^-799.6: u = +-inf", ["OverflowSafeProduct", "Outside"], inp,
                     float32_inputs=True)
    yield overflow_safe_product_float32


def _log_pq(logits):
    return log_softmax_forward(logits)[0]


def _cases_log_gating():
    def generic(r):
        n = 10
        return _case("generic", "v ~ U(-1, 1), random k, s ~ N(0, 2^2)", ["Generic"], {
            "v": r.uniform(-1.0, 1.0, n), "k": r.integers(0, 3, n), "s": _logits(r, n, 2.0),
            "log_p": _log_pq(_logits(r, n, 1.5)), "log_q": _log_pq(_logits(r, n, 1.5))})
    yield generic

    def batch_of_one(r):
        return _case("batch_of_one", "one row", ["BatchOfOne"], {
            "v": r.uniform(-1.0, 1.0, 1), "k": r.integers(0, 3, 1), "s": _logits(r, 1, 2.0),
            "log_p": _log_pq(_logits(r, 1, 1.5)), "log_q": _log_pq(_logits(r, 1, 1.5))})
    yield batch_of_one

    def boundary(r):
        v = np.concatenate([_around(-1.0), _around(1.0)])
        k = r.integers(0, 3, 10)
        k[v < -1.0] = 0
        k[v > 1.0] = 2
        n = len(v)
        return _case("boundary", "v around -1 and 1 (1e-9, 1 ulp, exact): gating = Q at v = -1, "
                     "P at v = 1, forced branch outside",
                     ["NearBreakpoint", "UlpFromBreakpoint", "AtBreakpoint", "Outside"],
                     {"v": v, "k": k, "s": _logits(r, n, 2.0),
                      "log_p": _log_pq(_logits(r, n, 1.5)), "log_q": _log_pq(_logits(r, n, 1.5))},
                     float64_only=ULP_ROWS)
    yield boundary

    def outside(r):
        v = np.array([-5.0, -1.5, 1.5, 5.0])
        return _case("outside", "|v| > 1 with the only branch: log p = 0, zero gradients",
                     ["Outside"], {"v": v, "k": np.array([0, 0, 2, 2]), "s": _logits(r, 4, 2.0),
                                   "log_p": _log_pq(_logits(r, 4, 1.5)),
                                   "log_q": _log_pq(_logits(r, 4, 1.5))})
    yield outside

    for size in (30, 300):
        def saturated(r, size=size):
            n = 9
            v = np.concatenate([r.uniform(-1.0, 1.0, n - 3), [-1.0, 0.0, 1.0]])
            return _case(f"saturated_{size}", f"s, P and Q logits +-{size}", ["SaturatedGating"],
                         {"v": v, "k": r.integers(0, 3, n), "s": _saturated(r, n, float(size)),
                          "log_p": _log_pq(_saturated(r, n, float(size))),
                          "log_q": _log_pq(_saturated(r, n, float(size)))})
        yield saturated

    def impossible(r):
        return _case("impossible_branch", "|v| > 1 with a branch that has no preimage: "
                     "log p = -inf (no loss, no gradients)", ["Outside", "NonFinite"],
                     {"v": np.array([-1.5, -1.5, 1.5, 1.5]), "k": np.array([1, 2, 0, 1]),
                      "s": _logits(r, 4, 2.0), "log_p": _log_pq(_logits(r, 4, 1.5)),
                      "log_q": _log_pq(_logits(r, 4, 1.5))}, loss=False)
    yield impossible


    def logits_1e3(r):
        n = 8
        return _case("logits_1e3", "s, P and Q logits +-1e3: log-softmax needs the max shift, "
                     "and log p(k | z) reaches -4e3 (p = 0 in any floating point)",
                     ["LargeLogits", "SaturatedGating"],
                     {"v": r.uniform(-1.0, 1.0, n), "k": r.integers(0, 3, n),
                      "s": _saturated(r, n, 1e3), "log_p": _log_pq(_saturated(r, n, 1e3)),
                      "log_q": _log_pq(_saturated(r, n, 1e3))})
    yield logits_1e3

    def boundary_ties(r):
        v = np.array([-1.0, -1.0, 1.0, 1.0, -1.5, 1.5, -0.5, 0.5])
        k = r.integers(0, 3, 8)
        k[4], k[5] = 0, 2
        n = len(v)
        return _case("boundary_ties", "v = -1 and 1 exactly (inside: the gating is Q at -1, P "
                     "at 1, and the derivative of the clip of v is 1), outside and inside; "
                     "float32 inputs", ["AtBreakpoint", "Outside"],
                     {"v": v, "k": k, "s": _logits(r, n, 2.0),
                      "log_p": _log_pq(_logits(r, n, 1.5)), "log_q": _log_pq(_logits(r, n, 1.5))},
                     float32_inputs=True)
    yield boundary_ties


def _cases_gating_probabilities():
    def generic(r):
        n = 8
        return _case("generic", "v ~ U(-1, 1)", ["Generic"], {
            "v": r.uniform(-1.0, 1.0, n), "s": _logits(r, n, 2.0),
            "log_p": _log_pq(_logits(r, n, 1.5)), "log_q": _log_pq(_logits(r, n, 1.5))})
    yield generic

    def boundary(r):
        v = np.concatenate([_around(-1.0), _around(1.0)])
        n = len(v)
        return _case("boundary", "v around -1 and 1: = Q at -1, = P at 1, one-hot outside",
                     ["NearBreakpoint", "UlpFromBreakpoint", "AtBreakpoint", "Outside"],
                     {"v": v, "s": _logits(r, n, 2.0), "log_p": _log_pq(_logits(r, n, 1.5)),
                      "log_q": _log_pq(_logits(r, n, 1.5))}, float64_only=ULP_ROWS)
    yield boundary

    def saturated(r):
        n = 6
        return _case("saturated_300", "s, P and Q logits +-300", ["SaturatedGating"], {
            "v": r.uniform(-1.0, 1.0, n), "s": _saturated(r, n, 300.0),
            "log_p": _log_pq(_saturated(r, n, 300.0)), "log_q": _log_pq(_saturated(r, n, 300.0))})
    yield saturated


    def logits_1e3(r):
        n = 6
        return _case("logits_1e3", "s, P and Q logits +-1e3", ["LargeLogits", "SaturatedGating"], {
            "v": r.uniform(-1.0, 1.0, n), "s": _saturated(r, n, 1e3),
            "log_p": _log_pq(_saturated(r, n, 1e3)), "log_q": _log_pq(_saturated(r, n, 1e3))})
    yield logits_1e3

    def boundary_ties(r):
        v = np.array([-1.0, -1.0, 1.0, 1.0, -1.5, 1.5, -0.5, 0.5])
        n = len(v)
        return _case("boundary_ties", "v = -1 and 1 exactly (inside: = Q at -1, = P at 1), "
                     "outside (one-hot) and inside; float32 inputs", ["AtBreakpoint", "Outside"],
                     {"v": v, "s": _logits(r, n, 2.0), "log_p": _log_pq(_logits(r, n, 1.5)),
                      "log_q": _log_pq(_logits(r, n, 1.5))}, float32_inputs=True)
    yield boundary_ties


def _cases_sample_branch():
    def generic(r):
        prob = log_softmax_forward(_logits(r, 12, 1.5))[1]
        return _case("generic", "random probabilities and uniforms", ["Generic"],
                     {"prob": prob, "uniforms": r.random(12)})
    yield generic

    def boundaries(r):
        prob = np.repeat(log_softmax_forward(_logits(r, 1, 1.0))[1], 6, axis=0)
        c0 = prob[0, 0]
        c1 = prob[0, 0] + prob[0, 1]  # the cumulative sum, left to right
        u = np.array([0.0, np.nextafter(c0, 0.0), c0, np.nextafter(c1, 0.0), c1,
                      np.nextafter(1.0, 0.0)])
        return _case("cdf_boundaries", "uniforms 0, just below and exactly at P0 and P0 + P1, "
                     "and the largest double below 1: k increases at equality",
                     ["AtCdfBoundary"], {"prob": prob, "uniforms": u},
                     float64_only="uniforms exactly at and one ulp below a cumulative "
                                  "probability: float32 cumulative sums differ in the last bits")
    yield boundaries

    def degenerate(r):
        prob = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0],
                         [0.5, 0.0, 0.5], [0.5, 0.0, 0.5], [0.0, 1.0, 0.0]])
        u = np.array([0.0, np.nextafter(1.0, 0.0), 0.0, np.nextafter(1.0, 0.0), 0.5,
                      np.nextafter(0.5, 0.0), 0.0])
        return _case("zero_probabilities", "one-hot and zero-probability branches are never "
                     "drawn for uniforms in [0, 1)", ["AtCdfBoundary"],
                     {"prob": prob, "uniforms": u},
                     float64_only="the largest double below 1 rounds to 1.0 in float32, "
                                  "outside [0, 1)")
    yield degenerate

    def cdf_ties(r):
        # dyadic probabilities: the cumulative sums are exact in float32 and float64
        below_one = 1.0 - 2.0 ** -24  # the largest float32 below 1
        rows = [([0.25, 0.5, 0.25], [0.0, 0.25, 0.75, below_one]),
                ([0.375, 0.125, 0.5], [0.375, 0.5]),
                ([0.5, 0.0, 0.5], [0.5]), ([0.5, 0.5, 0.0], [0.5, below_one]),
                ([0.0, 1.0, 0.0], [0.0]), ([0.0, 0.0, 1.0], [0.0]),
                ([1.0, 0.0, 0.0], [below_one])]
        prob = np.array([p for p, us in rows for _ in us])
        u = np.array([x for _, us in rows for x in us])
        return _case("cdf_ties", "probabilities that are sums of powers of 2 and uniforms exactly "
                     "at a cumulative probability (k moves to the next branch: u = 0.25 with "
                     "P = (0.25, 0.5, 0.25) gives k = 1), zero-probability branches never drawn, "
                     "and the largest float32 below 1; exact in float32", ["AtCdfBoundary"],
                     {"prob": prob, "uniforms": u}, float32_inputs=True)
    yield cdf_ties


def _random_mlp(rng, n_in, hidden, n_out, head, w2_std=0.5):
    params = {"W1": rng.normal(0.0, np.sqrt(2.0 / n_in), (n_in, hidden)),
              "b1": rng.normal(0.0, 0.3, hidden),
              "W2": rng.normal(0.0, w2_std, (hidden, n_out)),
              "b2": rng.normal(0.0, 0.3, n_out)}
    if head == "tanh":
        params["scale"] = rng.uniform(0.5, 1.5, n_out)
    return params


def _cases_mlp():
    for head in ("tanh", "linear"):
        def generic(r, head=head):
            params = _random_mlp(r, 3, 5, 4, head)
            if head == "tanh":
                params["scale"][1] = -params["scale"][1]  # a negative scale is allowed
            return _case(f"generic_{head}", f"{head} head, n_in 3, hidden 5, n_out 4",
                         ["Generic"], {"x": r.normal(0.0, 1.0, (6, 3))}, params, {"head": head})
        yield generic

    def batch_of_one(r):
        return _case("batch_of_one", "tanh head, one row", ["BatchOfOne"],
                     {"x": r.normal(0.0, 1.0, (1, 2))}, _random_mlp(r, 2, 4, 3, "tanh"),
                     {"head": "tanh"})
    yield batch_of_one

    def relu_at_zero(r):
        params = _random_mlp(r, 3, 5, 4, "linear")
        params["b1"][[1, 3]] = 0.0
        x = r.normal(0.0, 1.0, (4, 3))
        x[0] = 0.0
        return _case("relu_at_zero", "row 0 is x = 0 and b1 has zeros: pre-activations exactly 0 "
                     "(ReLU derivative 0 there)", ["ReluAtZero"], {"x": x}, params,
                     {"head": "linear"})
    yield relu_at_zero

    def saturated(r):
        params = _random_mlp(r, 3, 5, 4, "tanh", w2_std=20.0)
        return _case("saturated_tanh", "tanh head with large W2: |pre-activation| > 20 for most "
                     "outputs", ["SaturatedTanh"], {"x": r.normal(0.0, 1.0, (5, 3))}, params,
                     {"head": "tanh"})
    yield saturated


def _rad_layer_params(rng, dim, layer, hidden=6, gate_hidden=5):
    cols_a, cols_b = split(dim, layer)
    cond = _random_mlp(rng, len(cols_a), hidden, 10 * len(cols_b), "tanh")
    gate = _random_mlp(rng, dim, gate_hidden, 3 * len(cols_b), "linear", w2_std=1.0)
    return dict({f"cond.{k}": v for k, v in cond.items()},
                **{f"gate.{k}": v for k, v in gate.items()})


def _cases_rad_coupling():
    for dim, layer, n in ((2, 0, 12), (2, 1, 12), (5, 0, 6), (5, 1, 6), (2, 0, 1)):
        def layer_case(r, dim=dim, layer=layer, n=n):
            params = _rad_layer_params(r, dim, layer)
            n_b = len(split(dim, layer)[1])
            flags = ["Generic"] + (["OddDimension"] if dim == 5 else []) + \
                (["BatchOfOne"] if n == 1 else [])
            cid = f"d{dim}_layer{layer}" + ("_batch_of_one" if n == 1 else "")
            return _case(cid, f"d = {dim}, layer {layer} (transforms columns "
                         f"{split(dim, layer)[1].tolist()}), {n} rows", flags,
                         {"x": r.normal(0.0, 1.5, (n, dim)),
                          "sample_z": r.normal(0.0, 1.0, (n, dim)),
                          "sample_uniforms": r.random((n, n_b))}, params, {"layer": layer})
        yield layer_case

    def saturated(r):
        params = _rad_layer_params(r, 2, 0)
        # p and q logit columns (2..7) of the conditioner scaled to 30; gate logits +-30.
        params["cond.scale"][2:8] = 30.0
        params["cond.b2"][2:8] = r.choice([-3.0, 3.0], 6)
        params["gate.b2"] = 30.0 * r.choice([-1.0, 1.0], 3)
        return _case("d2_saturated", "conditioner P, Q logits up to +-30 and gating logits "
                     "+-30", ["SaturatedGating"],
                     {"x": r.normal(0.0, 1.5, (8, 2)), "sample_z": r.normal(0.0, 1.0, (8, 2)),
                      "sample_uniforms": r.random((8, 1))}, params, {"layer": 0})
    yield saturated


    def clip(r):
        # A constant conditioner (W2 = 0; every output scale * tanh(b2) with tanh(0) = 0 and
        # tanh(-30) = -1 exactly): u = x_B, P uniform, Q = softmax(-40, 0, -40).  So
        # log_alpha_3 = log_alpha_2 + 40 > 37.4 and b = 1 exactly in any formulation, a is
        # ~0 and alpha_minus ~e^-40.  Row 0 (x_B = 1 - 2^-53) lies on the middle piece
        # because u < b = 1 holds exactly (k = 1; its v lies within ulps of -1, and is
        # clipped where rounding puts it below); row 1 (x_B = 1 = b) on piece 3 by the
        # tie-break (k = 2, v = 1 exactly); row 2 (x_B = -1.5) on piece 0, where
        # v = -1 - 2e-18 rounds to -1 and is clipped to the double below -1.  Each k is
        # decided by a convention, never by the last bit of a computed breakpoint.
        params = _rad_layer_params(r, 2, 0)
        params["cond.W2"][:] = 0.0
        params["cond.b2"][:] = 0.0
        for column in (5, 7):  # q_logits[0], q_logits[2] = 40 tanh(-30) = -40
            params["cond.b2"][column], params["cond.scale"][column] = -30.0, 40.0
        below_one = np.nextafter(1.0, 0.0)
        x = np.column_stack([r.normal(0.0, 1.0, 6), [below_one, 1.0, -1.5, 0.2, -0.7, 0.5]])
        return _case("clip", "constant conditioner with b = 1 exactly, u = x_B: row 0 "
                     "(x_B = 1 - 2^-53) on the middle piece, k = 1, v within ulps of -1; row 1 "
                     "(x_B = b = 1) on piece 3 by the tie-break, k = 2, v = 1; row 2 (x_B = "
                     "-1.5) on piece 0, where v rounds to -1 and is clipped to the double "
                     "below it (without the clip the gating sees v inside [-1, 1] and gives "
                     "log Q_0 = -40.7 instead of 0)",
                     ["ClipChangesV", "UlpFromBreakpoint", "AtBreakpoint", "Outside"],
                     {"x": x, "sample_z": r.normal(0.0, 1.0, (6, 2)),
                      "sample_uniforms": r.random((6, 1))}, params, {"layer": 0},
                     float64_only="x_B = 1 - 2^-53 is not a float32 number: rounded to float32 "
                                  "it is 1 = b, on piece 3 (k = 2)")
    yield clip

    def output_out_of_range(r):
        # log_scale_out = 300 tanh(50 relu(x_A)): 0 for x_A <= 0, 300 for x_A > 0.1,
        # so z_B = v e^300 leaves +-1e120 on the rows with x_A > 0.
        params = _rad_layer_params(r, 2, 0)
        params["cond.W1"][0, 0], params["cond.b1"][0] = 5.0, 0.0
        params["cond.W2"][:, 8] = 0.0
        params["cond.W2"][0, 8] = 10.0
        params["cond.b2"][8], params["cond.scale"][8] = 0.0, 300.0
        x = np.column_stack([[-1.2, 0.8, -0.3, 1.5, -2.0, 0.6, -0.9, 1.1], r.normal(0.0, 1.0, 8)])
        return _case("output_out_of_range", "log_scale_out = 300 on the rows with x_A > 0: "
                     "their z_B = v e^300 lies beyond +-1e120 and the gating network is "
                     "evaluated at z = 0 for them; those rows have loss weight 0",
                     ["OutOfRange"],
                     {"x": x, "sample_z": r.normal(0.0, 1.0, (8, 2)),
                      "sample_uniforms": r.random((8, 1))}, params, {"layer": 0},
                     loss_rows="in_range",
                     float64_only="z = v e^300 lies beyond the float32 range")
    yield output_out_of_range

    def clip_outer(r):
        # A constant conditioner (W2 = 0): log_scale_in = 40 tanh(-30) = -40 exactly, so
        # u = x_B e^40; P = softmax(0, 0, -40), Q = softmax(-40, 0, 0): a = -1/3, b = 1/3,
        # alpha_minus = alpha_plus = e^-39.6.  u = -+1.5 gives v = -+1 -+ 3e-18, which rounds
        # to -+1 in float64 and in float32 and is clipped one ulp outside (the port's own
        # ulp); dv/du = e^-39.6 and du/dx_B = e^40 make the clip's derivative visible in
        # grads.x.  The inverse of a clipped row is the preimage of the clipped v, about
        # -1 - 2^-52 e^39.6 (float64) or -1 - 2^-23 e^39.6 (float32), times e^-40: below
        # 1e-7, where the error measure is absolute (rtol * S).
        params = _rad_layer_params(r, 2, 0)
        params["cond.W2"][:] = 0.0
        params["cond.b2"][:] = 0.0
        for column in (0, 4, 5):  # log_scale_in, p_logits[2], q_logits[0]: 40 tanh(-30)
            params["cond.b2"][column], params["cond.scale"][column] = -30.0, 40.0
        u = np.array([-1.5, 1.5, 0.2, -0.7, 0.9, -0.2])
        x = np.column_stack([r.normal(0.0, 1.0, 6), _f32(u * np.exp(-40.0))])
        return _case("clip_outer", "outer pieces of slope e^-39.6 with u = x_B e^40: rows 0 "
                     "and 1 (u = -1.5, 1.5) give v = -+1 after rounding, clipped to -1-, 1+ "
                     "(without the clip the gating sees v inside [-1, 1] and term has log Q_0 "
                     "or log P_2 = -40.7 instead of 0; with a zero derivative of the clip, "
                     "grads.x of those rows is 0 instead of about 1.5 times the weight of z); "
                     "float32 inputs: the same in float32",
                     ["ClipChangesV", "Outside"],
                     {"x": x, "sample_z": r.normal(0.0, 1.0, (6, 2)),
                      "sample_uniforms": r.random((6, 1))}, params, {"layer": 0},
                     float32_inputs=True)
    yield clip_outer

    def gate_at_zero(r):
        # Rows 0 and 1 have x_A = +inf, -inf: z_A = x_A is out of range, so the gating
        # network is evaluated at z = 0 for them.  The conditioner (2 hidden units, W1 =
        # (1, -1)) maps x_A = +-inf to one hidden unit at +inf and the other at 0, and
        # through nonzero W2 to tanh = +-1: finite outputs, no inf - inf.
        w2 = r.normal(0.0, 0.5, (2, 10))
        cond = {"W1": np.array([[1.0, -1.0]]), "b1": r.normal(0.0, 0.3, 2),
                "W2": np.sign(w2) * np.maximum(np.abs(w2), 0.2), "b2": r.normal(0.0, 0.3, 10),
                "scale": r.uniform(0.5, 1.5, 10)}
        gate = _random_mlp(r, 2, 5, 3, "linear", w2_std=1.0)
        params = {f"{net}.{k}": _f32(v) for net, p in (("cond", cond), ("gate", gate))
                  for k, v in p.items()}
        # x_B of rows 0, 1 such that u = 0.3, -0.4 (inside [-1, 1], where the gating matters)
        with np.errstate(invalid="ignore"):  # see blocks._fw_rad_coupling
            c, _ = mlp_forward(np.array([[np.inf], [-np.inf]]), nest_params(params)["cond"])
        x_b = c[:, 1] + np.array([0.3, -0.4]) * np.exp(c[:, 0])
        x = np.column_stack([np.concatenate([[np.inf, -np.inf], r.normal(0.0, 1.5, 4)]),
                             np.concatenate([x_b, r.normal(0.0, 1.5, 4)])])
        return _case("gate_at_zero", "rows 0, 1: x_A = +inf, -inf (z_A = x_A out of range; "
                     "u = 0.3, -0.4): their gating network is evaluated at z = 0, so term is "
                     "finite; inverse_x = (+-inf, x_B) (the layer's inverse does not screen "
                     "rows).  No loss: a gradient with respect to W1 would be inf * 0.  Float32 "
                     "inputs: a float32 port must find inf out of range (1e120 is not a float32)",
                     ["OutOfRange"],
                     {"x": x, "sample_z": r.normal(0.0, 1.0, (6, 2)),
                      "sample_uniforms": r.random((6, 1))}, params, {"layer": 0}, loss=False,
                     float32_inputs=True)
    yield gate_at_zero

    def range_limit(r):
        # Rows 0, 1: x_A = +1e120, -1e120 exactly, so z_A = x_A is *in* range (|z| <= 1e120)
        # and the gating network reads it (logits of size ~1e120: p(k | z) one-hot, log p
        # of size 1e120, finite); rows 2, 3: x_A one double beyond +-1e120, out of range:
        # gating at z = 0.  A port with |z| < 1e120 treats rows 0, 1 as out of range too and
        # gives another term.  Their loss weight is 0 (the gradients of rows at 1e120 are not
        # what this case checks).
        params = _rad_layer_params(r, 2, 0)
        x_a = np.array([RANGE, -RANGE, np.nextafter(RANGE, np.inf), np.nextafter(-RANGE, -np.inf)])
        # x_B such that u = 0.3, -0.4, 0.5, -0.6: inside [-1, 1], where the gating matters
        c, _ = mlp_forward(x_a[:, None], nest_params(params)["cond"])
        x_b = c[:, 1] + np.array([0.3, -0.4, 0.5, -0.6]) * np.exp(c[:, 0])
        x = np.column_stack([np.concatenate([x_a, r.normal(0.0, 1.5, 4)]),
                             np.concatenate([x_b, r.normal(0.0, 1.0, 4)])])
        return _case("range_limit", "rows 0, 1: x_A = +-1e120 exactly (u = 0.3, -0.4; z_A = "
                     "x_A in range: the "
                     "gating network reads it, p(k | z) saturates); rows 2, 3: x_A one double "
                     "beyond +-1e120 (out of range: gating at z = 0); those four rows have loss "
                     "weight 0",
                     ["OutOfRange"],
                     {"x": x, "sample_z": r.normal(0.0, 1.0, (8, 2)),
                      "sample_uniforms": r.random((8, 1))}, params, {"layer": 0},
                     zero_weight_rows={"z": [0, 1, 2, 3], "term": [0, 1, 2, 3]},
                     float64_only="1e120 is not a float32 number (rounded to float32 it is "
                                  "inf); in float32 the range test is 'finite'")
    yield range_limit

    def sample_out_of_range(r):
        # Sampling rows 0, 1 with z_A = +-1e130 (out of range): the sampling step's gating
        # network reads z as it is (no stand-in z = 0): its logits are of size 1e130 and p(k | z)
        # is one-hot.  The uniforms are chosen where the stand-in z = 0 would draw another k.
        params = _rad_layer_params(r, 2, 0)
        nested = nest_params(params)
        z_a = np.array([[1e130], [-1e130]])
        c, _ = mlp_forward(z_a, nested["cond"])
        v = np.array([0.3, -0.5])
        z = np.column_stack([z_a[:, 0], c[:, 9] + v * np.exp(c[:, 8])])
        slopes, _ = slopes_forward(c[:, 2:5], c[:, 5:8])
        uniforms = []
        for i in range(2):
            as_is = gating_probabilities(v[i:i + 1], mlp_forward(z[i:i + 1], nested["gate"])[0],
                                         slopes.log_p[i:i + 1], slopes.log_q[i:i + 1])
            stand_in = gating_probabilities(v[i:i + 1], mlp_forward(0.0 * z[i:i + 1],
                                                                    nested["gate"])[0],
                                            slopes.log_p[i:i + 1], slopes.log_q[i:i + 1])
            cdf = np.concatenate([[0.0], np.cumsum(stand_in[0])])
            candidates = 0.5 * (cdf[:-1] + cdf[1:])  # the middle of each branch's interval
            differ = [u for u in candidates
                      if sample_branch(as_is, np.array([u]))[0]
                      != sample_branch(stand_in, np.array([u]))[0]]
            uniforms.append(differ[0])
        n = 6
        sample_z = np.concatenate([z, r.normal(0.0, 1.0, (n - 2, 2))])
        sample_uniforms = np.concatenate([np.array(uniforms)[:, None], r.random((n - 2, 1))])
        return _case("sample_out_of_range", "sample_z rows 0, 1 with z_A = +-1e130 (out of range, "
                     "v = 0.3, -0.5): the sampling step's gating network reads z as it is "
                     "(no stand-in z = 0; the flow screens such rows before sampling a layer): "
                     "p(k | z) is one-hot, and the uniforms lie where z = 0 would draw another k",
                     ["OutOfRange"],
                     {"x": r.normal(0.0, 1.5, (n, 2)), "sample_z": sample_z,
                      "sample_uniforms": sample_uniforms}, params, {"layer": 0},
                     float64_only="sample_z of 1e130 lies beyond the float32 range")
    yield sample_out_of_range


def _cases_affine_coupling():
    for dim, layer, n in ((2, 0, 8), (2, 1, 8), (5, 0, 6), (5, 1, 6), (2, 1, 1)):
        def layer_case(r, dim=dim, layer=layer, n=n):
            cols_a, cols_b = split(dim, layer)
            cond = _random_mlp(r, len(cols_a), 6, 2 * len(cols_b), "tanh")
            flags = ["Generic"] + (["OddDimension"] if dim == 5 else []) + \
                (["BatchOfOne"] if n == 1 else [])
            cid = f"d{dim}_layer{layer}" + ("_batch_of_one" if n == 1 else "")
            return _case(cid, f"d = {dim}, layer {layer} (transforms columns {cols_b.tolist()}), "
                         f"{n} rows", flags, {"x": r.normal(0.0, 1.5, (n, dim))},
                         {f"cond.{k}": v for k, v in cond.items()}, {"layer": layer})
        yield layer_case


def _random_flow_params(rng, config):
    # Moderate sizes: the outer slopes compound over layers, so larger random
    # weights give log-densities of -1e6 for ordinary points.
    params = flow_init(config, out_std=0.2, random_state=rng)
    for key in params:
        name = key.split(".")[-1]
        if name in ("b1", "b2"):
            params[key] = rng.normal(0.0, 0.3, params[key].shape)
        elif name == "scale":
            params[key] = rng.uniform(0.2, 0.8, params[key].shape)
    return params


def _flow_cases(kind, hidden):
    variants = (("d2_generic", 2, 6, 10, 1.5, ["Generic"], "d = 2, 6 layers, 10 points"),
                ("d2_batch_of_one", 2, 6, 1, 1.5, ["BatchOfOne"], "d = 2, 6 layers, one point"),
                ("d2_tail", 2, 6, 6, 5.0, ["Tail"],
                 "d = 2, 6 layers, points far out, x ~ N(0, 5^2)"),
                ("d5_generic", 5, 4, 6, 1.5, ["Generic", "OddDimension"],
                 "d = 5, 4 layers, 6 points"))
    for cid, dim, n_layers, n, spread, flags, comment in variants:
        def flow_case(r, cid=cid, dim=dim, n_layers=n_layers, n=n, spread=spread, flags=flags,
                      comment=comment):
            config = FlowConfig(kind, dim, n_layers, hidden, _gate_hidden(kind, hidden))
            params = _random_flow_params(r, config)
            # Farther points saturate the tanh heads: gradients through 1 - tanh^2 of
            # ~1e-8 then carry relative errors ~1e-8 in any float64 implementation.
            x = r.normal(0.0, spread, (n, dim))
            return _case(cid, comment + f", hidden {hidden}", flags,
                         {"x": x, "sample_normals": r.normal(0.0, 1.0, (n, dim)),
                          "sample_uniforms": r.random((n, n_layers, dim))},
                         params, dict(config._asdict()))
        yield flow_case


    def out_of_range(r):
        config = FlowConfig(kind, 2, 6, hidden, _gate_hidden(kind, hidden))
        params = _random_flow_params(r, config)
        # Rows in range at the input that leave it at some layer: from candidates of
        # size 1e119 - 9e119, those this flow puts out of range (the others would give
        # log p(x) ~ -1e239, ill-conditioned and not what the case is about).
        candidates = np.array([[0.2, 9e119], [9e119, -0.4], [-5e119, 0.1], [0.1, -5e119],
                               [3e119, 3e119], [-9e119, 9e119], [1e119, 0.5], [0.5, 1e119]])
        leaves = ~np.isfinite(flow_forward(candidates, params, config)[0])
        x = np.concatenate([[[1e130, 0.3], [0.5, np.inf]], candidates[leaves][:3],
                            r.normal(0.0, 1.5, (4, 2))])
        n = len(x)
        normals = r.normal(0.0, 1.0, (n, 2))
        normals[:2] = [[0.3, 1e130], [-np.inf, 0.5]]  # sampling from out-of-range noise
        # Not Float64Only: a float32 port reads 1e119 - 1e130 as inf, so those rows are out
        # of range at the input instead of after a layer, with the same outputs.
        return _case("out_of_range", "rows beyond +-1e120 at the input (1e130, inf) or after "
                     "a layer (inputs of size 1e119 - 9e119): log_px = -inf, z = inf, k = -1, zero "
                     "gradient, inverse_x = inf; the other rows as if alone (no layer_z, "
                     "layer_term); sample_normals of 1e130 and -inf: sample_x = inf, "
                     "sample_k = -1 (in float32, 1e119 - 1e130 read as inf: the same outputs)",
                     ["OutOfRange"],
                     {"x": x, "sample_normals": normals,
                      "sample_uniforms": r.random((n, 6, 2))}, params, dict(config._asdict()))
    yield out_of_range

    def out_of_range_last_layer(r):
        # Two layers; the last one (layer 1, conditioning on column 1) has the scale of its
        # output 300 tanh(50 relu(z_1)): 0 for z_1 <= 0, exactly 300 for z_1 >= 0.4 (tanh(20)
        # rounds to 1 in float64 and float32).  Rows with z_1 >= 0.5 after layer 0 leave the
        # range in the last layer: e^300 ~ 2e130 in float64, inf in float32.  Rows with
        # z_1 <= -0.05 stay in range.  Then no later layer can turn a row that a port fails
        # to screen into NaN (and so screen it after all).
        config = FlowConfig(kind, 2, 2, hidden, _gate_hidden(kind, hidden))
        params = {key: _f32(value) for key, value in _random_flow_params(r, config).items()}
        column = layer_kind(kind).OUTPUT_LOG_SCALE  # log_scale_out (Rad), log_scale (affine)
        params["1.cond.W1"][0, 0], params["1.cond.b1"][0] = 5.0, 0.0
        params["1.cond.W2"][:, column] = 0.0
        params["1.cond.W2"][0, column], params["1.cond.b2"][column] = 10.0, 0.0
        params["1.cond.scale"][column] = 300.0
        candidates = _f32(r.normal(0.0, 1.5, (60, 2)))
        nested = layer_params(params, 0)
        first = layer_kind(kind).forward(candidates, nested, 0)[0]
        leave = candidates[first[:, 1] >= 0.5][:3]
        stay = candidates[first[:, 1] <= -0.05][:4]
        assert len(leave) == 3 and len(stay) == 4
        x = np.concatenate([[[np.inf, 0.5], [-0.25, -np.inf], [np.nan, 0.75]], leave, stay])
        n = len(x)
        normals = r.normal(0.0, 1.0, (n, 2))
        normals[:3] = [[np.inf, 0.5], [0.25, -np.inf], [np.nan, 1.0]]
        return _case("out_of_range_last_layer", "two layers; inputs +inf, -inf and NaN (rows "
                     "0-2), and rows 3-5, which leave the range in the last layer (e^300: 2e130 "
                     "in float64, inf in float32); rows 6-9 in range.  sample_normals +inf, "
                     "-inf, NaN in rows 0-2.  Float32 inputs: a float32 port must find inf and "
                     "NaN out of range (1e120 is not a float32)", ["OutOfRange"],
                     {"x": x, "sample_normals": normals,
                      "sample_uniforms": r.random((n, 2, 2))}, params, dict(config._asdict()),
                     float32_inputs=True)
    yield out_of_range_last_layer
    if not _gate_hidden(kind, hidden):  # saturated gating: kinds with a gating network
        return

    for size in (100, 3000):
        def saturated_layers(r, size=size):
            config = FlowConfig(kind, 2, 6, hidden, hidden)
            params = _random_flow_params(r, config)
            for layer in (0, 2, 5):  # saturated gating at the first, a middle and the last layer
                params[f"{layer}.gate.b2"] = size * r.permutation([-1.0, 0.0, 1.0])
            # Not Float64Only (measured in float32: 0.12 of the tolerance): the rounding
            # error of log p(k | z), ~3e3 * 6e-8 absolute, is relative to log_px ~ -6e3.
            return _case(f"saturated_gating_layers_{size}",
                         f"gating logits s of +-{size} in layers 0, 2 and 5: p(k | z) down to "
                         f"e^-{2 * size} (0 in any floating point; only its log is finite, and "
                         f"only with the max shift)", ["SaturatedGating", "LargeLogits"],
                         {"x": r.normal(0.0, 1.5, (8, 2)),
                          "sample_normals": r.normal(0.0, 1.0, (8, 2)),
                          "sample_uniforms": r.random((8, 6, 2))}, params,
                         dict(config._asdict()))
        yield saturated_layers


def _cases_adam():
    def adam_case(cid, comment, flags, r, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                  grad_scale=1.0, zero_state=False, zero_grads=False,
                  shapes=(("W", (2, 3)), ("b", (3,)))):
        shapes = dict(shapes)
        inp = {}
        for name, shape in shapes.items():
            inp["params." + name] = r.normal(0.0, 1.0, shape)
            inp["grads." + name] = (np.zeros(shape) if zero_grads
                                    else r.normal(0.0, grad_scale, shape))
            inp["m." + name] = (np.zeros(shape) if zero_state
                                else r.normal(0.0, 0.1 * grad_scale, shape))
            inp["v." + name] = np.zeros(shape) if zero_state else \
                r.uniform(0.0, 0.1, shape) * grad_scale ** 2
        inp.update(t=np.array(t, dtype=np.int64), lr=np.array(lr), beta1=np.array(beta1),
                   beta2=np.array(beta2), eps=np.array(eps))
        return _case(cid, comment, flags, inp, loss=False)

    yield lambda r: adam_case("first_step", "t = 0, zero moments, default hyperparameters: "
                              "the step is lr * g / (|g| + eps)", ["FirstStep"], r, 0,
                              zero_state=True)
    yield lambda r: adam_case("generic", "t = 7, random moments, lr 0.01", ["Generic"], r, 7,
                              lr=0.01)
    yield lambda r: adam_case("large_eps", "eps = 1e-2 with gradients ~1e-3: eps dominates "
                              "sqrt(v_hat)", ["LargeEps"], r, 3, lr=0.05, eps=1e-2,
                              grad_scale=1e-3)
    yield lambda r: adam_case("other_betas", "beta1 = 0.5, beta2 = 0.9, t = 2", [], r, 2,
                              lr=0.1, beta1=0.5, beta2=0.9)
    yield lambda r: adam_case("zero_gradient", "zero gradients and moments at t = 0: the update "
                              "is exactly 0 (0 / eps)", ["ZeroGradient", "FirstStep"], r, 0,
                              zero_state=True, zero_grads=True)
    yield lambda r: adam_case("several_arrays", "five parameters of shapes (2, 2), (4,), (), (0,) "
                              "and (3, 1): 12 numbers, a scalar and an empty array", ["Generic"],
                              r, 4, lr=0.02, shapes=(("W", (2, 2)), ("b", (4,)), ("s", ()),
                                                     ("e", (0,)), ("V", (3, 1))))


CASE_GENERATORS = {
    "log_softmax": _cases_log_softmax,
    "slopes": _cases_slopes,
    "surjection": _cases_surjection,
    "surjection_inverse": _cases_surjection_inverse,
    "log_gating": _cases_log_gating,
    "gating_probabilities": _cases_gating_probabilities,
    "sample_branch": _cases_sample_branch,
    "mlp": _cases_mlp,
    "rad_coupling": _cases_rad_coupling,
    "affine_coupling": _cases_affine_coupling,
    "rad_flow": lambda: _flow_cases("rad", 8),
    "realnvp_flow": lambda: _flow_cases("affine", 16),
    "adam": _cases_adam,
}


def generate_cases(block_name):
    """Every case of one block, with its loss weights, outputs and gradients."""
    cases, seen = [], set()
    for make in CASE_GENERATORS[block_name]():
        # Two draws: the first only to learn the id, then a generator seeded by it.
        cid = make(np.random.default_rng(0))["id"]
        assert cid not in seen, (block_name, cid)
        seen.add(cid)
        rng = _rng(f"{block_name}/{cid}")
        case = make(rng)
        block = BLOCKS[block_name]
        outputs, _ = block.forward(case["inputs"], case["params"], case["config"])
        loss_weights = {}
        loss_rows = case.pop("loss_rows")
        zero_weight_rows = case.pop("zero_weight_rows")
        if case.pop("loss") and block.backward is not None:
            loss_weights = {o: rng.normal(0.0, 1.0, np.shape(outputs[o]))
                            for o in block.differentiable}
            if loss_rows == "in_range":  # rows of z beyond +-RANGE: weight 0
                in_range = np.all(np.abs(outputs["z"]) <= RANGE, axis=1)
                for w in loss_weights.values():
                    w[~in_range] = 0.0
            for name, rows in zero_weight_rows.items():
                loss_weights[name][rows] = 0.0
            if "Float32Inputs" in case["flags"]:
                loss_weights = {o: _f32(w) for o, w in loss_weights.items()}
        case["loss_weights"] = loss_weights
        case["outputs"], case["grads"] = compute(block_name, case["inputs"], case["params"],
                                                 case["config"], loss_weights)
        case["magnitudes"] = case_magnitudes(block, case["inputs"], case["params"],
                                             case["config"], loss_weights)
        case["inputs"] = {k: np.asarray(v) for k, v in case["inputs"].items()}
        cases.append(case)
    return cases
