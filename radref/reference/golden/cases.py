"""Case generators: the inputs, parameters and flags of every golden case.

Every case's inputs are drawn from a generator seeded by its ``block/id``
(stable, independent of the order of the cases) but are *stored*: NumPy
promises identical random streams only on the same build, so a port, and
:func:`radref.reference.golden.document.recompute_document`, read the stored
arrays.
"""
import hashlib

import numpy as np

from radref.core.coupling import split
from radref.core.flow import FlowConfig, flow_init
from radref.core.slopes import slopes_forward
from radref.core.softmax import log_softmax_forward
from radref.reference.golden.blocks import BLOCKS, SLOPE_FIELDS, compute

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
    "SaturatedGating": "gating or boundary logits of size 30 or 300: probabilities far below "
                       "1e-300 must be handled in log space",
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
    "Float64Only": "meaningful only in float64 (differences of 1e-9 or one ulp, exact ties, "
                   "values beyond the float32 range, gradients below float32 resolution): "
                   "a float32 port skips it "
                   "(check-port --tolerance float32 does)",
}


def _rng(case_key):
    """Generator seeded from the case's ``block/id`` (stable, order independent)."""
    seed = int.from_bytes(hashlib.sha256(case_key.encode()).digest()[:8], "little")
    return np.random.default_rng(seed)


def _case(cid, comment, flags, inputs, params=None, config=None, loss=True):
    return {"id": cid, "comment": comment, "flags": list(flags), "config": config or {},
            "inputs": inputs, "params": params or {}, "loss": loss}


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
                         ["NearBreakpoint", "UlpFromBreakpoint", "AtBreakpoint", "Float64Only"],
                         inp)
        yield at_breakpoint

    def saturated(r):
        slopes, _ = slopes_forward(_saturated(r, 8, 30.0), _saturated(r, 8, 30.0))
        inp = {f: getattr(slopes, f) for f in SLOPE_FIELDS}
        inp["u"] = np.concatenate([r.uniform(-1.0, 1.0, 6), [-1.5, 1.5]])
        return _case("saturated_30", "slopes from logits +-30 (slopes up to ~e^120, a and b "
                     "next to -1 and 1; v beyond the float32 range for |u| > 1)",
                     ["SaturatedGating", "Outside", "Float64Only"], inp)
    yield saturated


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
        return _case("boundary", "v = -1 and 1 on every branch; just outside (forced k); "
                     "just inside", ["NearBreakpoint", "UlpFromBreakpoint", "AtBreakpoint",
                                     "Float64Only"], inp)
    yield boundary

    def outside(r):
        inp = _moderate_slopes(r, 4)
        inp["v"] = np.array([-20.0, -1.5, 1.5, 20.0])
        inp["k"] = np.array([0, 0, 2, 2])
        return _case("outside", "|v| > 1 with the only branch", ["Outside"], inp)
    yield outside


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
                     ["NearBreakpoint", "UlpFromBreakpoint", "AtBreakpoint", "Outside",
                      "Float64Only"],
                     {"v": v, "k": k, "s": _logits(r, n, 2.0),
                      "log_p": _log_pq(_logits(r, n, 1.5)), "log_q": _log_pq(_logits(r, n, 1.5))})
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
                     ["NearBreakpoint", "UlpFromBreakpoint", "AtBreakpoint", "Outside",
                      "Float64Only"],
                     {"v": v, "s": _logits(r, n, 2.0), "log_p": _log_pq(_logits(r, n, 1.5)),
                      "log_q": _log_pq(_logits(r, n, 1.5))})
    yield boundary

    def saturated(r):
        n = 6
        return _case("saturated_300", "s, P and Q logits +-300", ["SaturatedGating"], {
            "v": r.uniform(-1.0, 1.0, n), "s": _saturated(r, n, 300.0),
            "log_p": _log_pq(_saturated(r, n, 300.0)), "log_q": _log_pq(_saturated(r, n, 300.0))})
    yield saturated


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
                     ["AtCdfBoundary", "Float64Only"], {"prob": prob, "uniforms": u})
    yield boundaries

    def degenerate(r):
        prob = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0],
                         [0.5, 0.0, 0.5], [0.5, 0.0, 0.5], [0.0, 1.0, 0.0]])
        u = np.array([0.0, np.nextafter(1.0, 0.0), 0.0, np.nextafter(1.0, 0.0), 0.5,
                      np.nextafter(0.5, 0.0), 0.0])
        return _case("zero_probabilities", "one-hot and zero-probability branches are never "
                     "drawn for uniforms in [0, 1)", ["AtCdfBoundary", "Float64Only"],
                     {"prob": prob, "uniforms": u})
    yield degenerate


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
            config = FlowConfig(kind, dim, n_layers, hidden, hidden if kind == "rad" else 0)
            params = _random_flow_params(r, config)
            # Farther points saturate the tanh heads: gradients through 1 - tanh^2 of
            # ~1e-8 then carry relative errors ~1e-8 in any float64 implementation.
            x = r.normal(0.0, spread, (n, dim))
            return _case(cid, comment + f", hidden {hidden}", flags,
                         {"x": x, "sample_normals": r.normal(0.0, 1.0, (n, dim)),
                          "sample_uniforms": r.random((n, n_layers, dim))},
                         params, dict(config._asdict()))
        yield flow_case


def _cases_adam():
    shapes = {"W": (2, 3), "b": (3,)}

    def adam_case(cid, comment, flags, r, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                  grad_scale=1.0, zero_state=False, zero_grads=False):
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
        if case.pop("loss") and block.backward is not None:
            loss_weights = {o: rng.normal(0.0, 1.0, np.shape(outputs[o]))
                            for o in block.differentiable}
        case["loss_weights"] = loss_weights
        case["outputs"], case["grads"] = compute(block_name, case["inputs"], case["params"],
                                                 case["config"], loss_weights)
        case["inputs"] = {k: np.asarray(v) for k, v in case["inputs"].items()}
        cases.append(case)
    return cases
