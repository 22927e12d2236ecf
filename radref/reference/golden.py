"""Golden reference vectors for ports of radref, and the port checker.

A port of Rad to another language or framework proves itself against these
vectors: for every building block (log-softmax, slopes, surjection, gating,
conditioner MLP, coupling layers, whole flows, one Adam step) the file holds
stored inputs and parameters, every output, and the gradients of a stated
scalar loss with respect to every input and parameter.  The layout, the
conventions and the tolerances are documented in ``docs/golden.md``.

Format (Wycheproof style, readable from any language)::

    {"schema": "radref-golden", "schema_version": 1, "radref_version": ...,
     "numpy_version": ..., "flags": {flag: description}, "tolerances": {...},
     "checksum": sha256 of the canonical JSON of everything else,
     "blocks": {name: {"comment": ..., "function": ..., "cases": [
         {"id", "comment", "flags", "config", "inputs", "params",
          "loss_weights", "outputs", "grads"}, ...]}}}

Every float array is ``{"shape": [...], "dtype": "float64", "hex": [...]}``
with ``float.hex`` strings (exact round trip; C reads them with ``strtod``,
Java with ``Double.parseDouble``); integer arrays are ``{"shape": [...],
"dtype": "int64", "data": [...]}``.  Arrays are row-major.  The loss of a case
is ``L = sum_o sum(loss_weights[o] * outputs[o])`` and ``grads[name]`` is
``dL / d name`` for ``name`` an input or a parameter.

The inputs are generated from fixed seeds (per case, from its id) but are
*stored*: NumPy promises identical random streams only on the same build, so
a port, and :func:`recompute_document`, read the stored arrays.

Entry points: :func:`generate` (the document, in memory), :func:`write_golden`
(``radref golden --out DIR``), :func:`load_document`, :func:`recompute_document`,
:func:`check_port` and :func:`format_report` (``radref check-port``).
"""
import hashlib
import io
import json
import math
import os
import zipfile
from typing import Callable, NamedTuple, Optional

import numpy as np

from radref.core.coupling import (affine_coupling_backward, affine_coupling_forward,
                             affine_coupling_inverse, rad_coupling_backward,
                             rad_coupling_forward, rad_coupling_inverse,
                             rad_coupling_sample, split)
from radref.core.flow import (FlowConfig, flow_backward, flow_forward, flow_init,
                         flow_inverse, flow_sample_from_noise, layer_params)
from radref.core.gating import (gating_probabilities, log_gating_backward,
                           log_gating_forward, sample_branch)
from radref.core.mlp import mlp_backward, mlp_forward
from radref.training.optim import AdamConfig, adam_update
from radref.core.slopes import Slopes, slopes_backward, slopes_forward
from radref.core.softmax import log_softmax_backward, log_softmax_forward
from radref.core.surjection import surjection_backward, surjection_forward, surjection_inverse

SCHEMA = "radref-golden"
SCHEMA_VERSION = 1
JSON_NAME = "radref-golden.json"
NPZ_NAME = "radref-golden.npz"

#: Documented tolerances (docs/golden.md): relative error, see :func:`relative_error`.
TOLERANCES = {
    "float64": {"outputs": 1e-12, "grads": 1e-9},
    "float32": {"outputs": 1e-4, "grads": 1e-3},
}

#: Floor of the denominator of :func:`relative_error` (as radref.reference.gradcheck).
REL_FLOOR = 1e-8

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


def _canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def checksum(doc):
    """sha256 (hex) of the canonical JSON of ``doc`` without its ``"checksum"`` key.

    Canonical JSON: keys sorted, separators ``","`` and ``":"``, ASCII only.
    """
    rest = {k: v for k, v in doc.items() if k != "checksum"}
    return hashlib.sha256(_canonical(rest).encode("ascii")).hexdigest()


# --------------------------------------------------------------------- blocks

class Block(NamedTuple):
    """One function under test.

    ``forward(inputs, params, config) -> (outputs, ctx)``;
    ``backward(ctx, loss_weights) -> grads`` (``None``: no gradients);
    ``differentiable``: the outputs that enter the loss.
    """

    function: str
    comment: str
    forward: Callable
    backward: Optional[Callable]
    differentiable: tuple


SLOPE_FIELDS = ("log_alpha_minus", "log_alpha_1", "log_alpha_2", "log_alpha_3",
                "log_alpha_plus", "a", "b")


def _nest(flat):
    """``{"cond.W1": ...}`` -> ``{"cond": {"W1": ...}}``."""
    nested = {}
    for key, value in flat.items():
        net, name = key.split(".")
        nested.setdefault(net, {})[name] = value
    return nested


def _flatten_nested(nested):
    return {f"{net}.{name}": value for net, g in nested.items() for name, value in g.items()}


def _slopes_from_inputs(inputs):
    shape = np.shape(inputs["a"])
    return Slopes(**{f: inputs[f] for f in SLOPE_FIELDS},
                  log_p=np.zeros(shape + (3,)), log_q=np.zeros(shape + (3,)))


def _fw_log_softmax(inp, par, cfg):
    log_prob, prob = log_softmax_forward(inp["logits"])
    return {"log_prob": log_prob, "prob": prob}, prob


def _bw_log_softmax(prob, w):
    # L = sum(w_lp * log_prob) + sum(w_p * prob); d prob = prob * d log_prob.
    return {"logits": log_softmax_backward(w["log_prob"] + w["prob"] * prob, prob)}


def _fw_slopes(inp, par, cfg):
    slopes, cache = slopes_forward(inp["p_logits"], inp["q_logits"])
    return dict(slopes._asdict()), cache


def _bw_slopes(cache, w):
    dp, dq = slopes_backward(Slopes(**{f: w[f] for f in Slopes._fields}), cache)
    return {"p_logits": dp, "q_logits": dq}


def _fw_surjection(inp, par, cfg):
    v, k, log_slope, cache = surjection_forward(inp["u"], _slopes_from_inputs(inp))
    return {"v": v, "k": k, "log_slope": log_slope}, cache


def _bw_surjection(cache, w):
    du, dslopes = surjection_backward(w["v"], w["log_slope"], cache)
    grads = {"u": du}
    grads.update({f: getattr(dslopes, f) for f in SLOPE_FIELDS})
    return grads


def _fw_surjection_inverse(inp, par, cfg):
    return {"u": surjection_inverse(inp["v"], inp["k"], _slopes_from_inputs(inp))}, None


def _fw_log_gating(inp, par, cfg):
    log_gate, cache = log_gating_forward(inp["v"], inp["k"], inp["s"], inp["log_p"], inp["log_q"])
    return {"log_gate": log_gate}, cache


def _bw_log_gating(cache, w):
    dv, ds, dlog_p, dlog_q = log_gating_backward(w["log_gate"], cache)
    return {"v": dv, "s": ds, "log_p": dlog_p, "log_q": dlog_q}


def _fw_gating_probabilities(inp, par, cfg):
    return {"prob": gating_probabilities(inp["v"], inp["s"], inp["log_p"], inp["log_q"])}, None


def _fw_sample_branch(inp, par, cfg):
    return {"k": sample_branch(inp["prob"], inp["uniforms"])}, None


def _fw_mlp(inp, par, cfg):
    out, cache = mlp_forward(inp["x"], par)
    return {"out": out}, cache


def _bw_mlp(cache, w):
    dx, grads = mlp_backward(w["out"], cache)
    return dict({"x": dx}, **grads)


def _fw_rad_coupling(inp, par, cfg):
    layer, nested = cfg["layer"], _nest(par)
    z, k, term, cache = rad_coupling_forward(inp["x"], nested, layer)
    inverse_x = rad_coupling_inverse(z, k, nested, layer)
    sample_x, sample_k = rad_coupling_sample(inp["sample_z"], inp["sample_uniforms"], nested, layer)
    return {"z": z, "k": k, "term": term, "inverse_x": inverse_x,
            "sample_x": sample_x, "sample_k": sample_k}, cache


def _bw_rad_coupling(cache, w):
    dx, grads = rad_coupling_backward(w["z"], w["term"], cache)
    return dict({"x": dx}, **_flatten_nested(grads))


def _fw_affine_coupling(inp, par, cfg):
    layer, nested = cfg["layer"], _nest(par)
    z, term, cache = affine_coupling_forward(inp["x"], nested, layer)
    return {"z": z, "term": term, "inverse_x": affine_coupling_inverse(z, nested, layer)}, cache


def _bw_affine_coupling(cache, w):
    dx, grads = affine_coupling_backward(w["z"], w["term"], cache)
    return dict({"x": dx}, **_flatten_nested(grads))


def _flow_config(cfg):
    return FlowConfig(cfg["kind"], cfg["dim"], cfg["n_layers"], cfg["hidden"], cfg["gate_hidden"])


def _layer_by_layer(x, params, config):
    """Output ``z`` and log-determinant term of every layer (debugging aid for ports)."""
    zs, terms, z = [], [], x
    for layer in range(config.n_layers):
        nested = layer_params(params, layer)
        if config.kind == "rad":
            z, _, term, _ = rad_coupling_forward(z, nested, layer)
        else:
            z, term, _ = affine_coupling_forward(z, nested, layer)
        zs.append(z)
        terms.append(term)
    return np.stack(zs), np.stack(terms)


def _fw_flow(inp, par, cfg):
    config = _flow_config(cfg)
    log_px, z, k, cache = flow_forward(inp["x"], par, config)
    layer_z, layer_term = _layer_by_layer(inp["x"], par, config)
    assert np.array_equal(layer_z[-1], z)
    inverse_x = flow_inverse(z, k, par, config)
    sample_x, sample_k = flow_sample_from_noise(inp["sample_normals"], inp["sample_uniforms"],
                                                par, config)
    return {"log_px": log_px, "z": z, "k": k, "layer_z": layer_z, "layer_term": layer_term,
            "inverse_x": inverse_x, "sample_x": sample_x, "sample_k": sample_k}, cache


def _bw_flow(cache, w):
    dx, grads = flow_backward(w["log_px"], cache)
    return dict({"x": dx}, **grads)


def _fw_adam(inp, par, cfg):
    names = [key[len("params."):] for key in inp if key.startswith("params.")]
    params = {n: inp["params." + n] for n in names}
    grads = {n: inp["grads." + n] for n in names}
    state = {"t": int(inp["t"]), "m": {n: inp["m." + n] for n in names},
             "v": {n: inp["v." + n] for n in names}}
    config = AdamConfig(float(inp["lr"]), float(inp["beta1"]), float(inp["beta2"]),
                        float(inp["eps"]))
    new_params, new_state = adam_update(params, grads, state, config)
    out = {}
    for n in names:
        out["params." + n] = new_params[n]
        out["m." + n] = new_state["m"][n]
        out["v." + n] = new_state["v"][n]
    out["t"] = np.array(new_state["t"], dtype=np.int64)
    return out, None


BLOCKS = {
    "log_softmax": Block(
        "radref.core.softmax.log_softmax_forward",
        "log_prob = logits - logsumexp(logits) over the last axis, prob = exp(log_prob)",
        _fw_log_softmax, _bw_log_softmax, ("log_prob", "prob")),
    "slopes": Block(
        "radref.core.slopes.slopes_forward",
        "log-slopes, breakpoints and log P, log Q from the boundary logits (log space)",
        _fw_slopes, _bw_slopes, Slopes._fields),
    "surjection": Block(
        "radref.core.surjection.surjection_forward",
        "five-piece surjection u -> (v, k, log|f'(u)|) for given slopes and breakpoints",
        _fw_surjection, _bw_surjection, ("v", "log_slope")),
    "surjection_inverse": Block(
        "radref.core.surjection.surjection_inverse",
        "inverse of the five-piece surjection on branch k (no gradients)",
        _fw_surjection_inverse, None, ()),
    "log_gating": Block(
        "radref.core.gating.log_gating_forward",
        "log p(k | z) from v, the gating logits s and log P, log Q",
        _fw_log_gating, _bw_log_gating, ("log_gate",)),
    "gating_probabilities": Block(
        "radref.core.gating.gating_probabilities",
        "p(. | z), one-hot outside [-1, 1] (no gradients)",
        _fw_gating_probabilities, None, ()),
    "sample_branch": Block(
        "radref.core.gating.sample_branch",
        "k by inverse CDF: the smallest k with uniform < P(K <= k) (no gradients)",
        _fw_sample_branch, None, ()),
    "mlp": Block(
        "radref.core.mlp.mlp_forward",
        "conditioner network: ReLU hidden layer, tanh head (scale * tanh) or linear head",
        _fw_mlp, _bw_mlp, ("out",)),
    "rad_coupling": Block(
        "radref.core.coupling.rad_coupling_forward",
        "Rad coupling layer (z, k, term); inverse_x = rad_coupling_inverse(z, k); "
        "(sample_x, sample_k) = rad_coupling_sample(sample_z, sample_uniforms)",
        _fw_rad_coupling, _bw_rad_coupling, ("z", "term")),
    "affine_coupling": Block(
        "radref.core.coupling.affine_coupling_forward",
        "affine (Real NVP) coupling layer (z, term); inverse_x = affine_coupling_inverse(z)",
        _fw_affine_coupling, _bw_affine_coupling, ("z", "term")),
    "rad_flow": Block(
        "radref.core.flow.flow_forward",
        "whole Rad flow: log p(x), inference (z, k), layer_z and layer_term (output and "
        "log-determinant term of each layer), inverse_x = flow_inverse(z, k), "
        "(sample_x, sample_k) = flow_sample_from_noise(sample_normals, sample_uniforms)",
        _fw_flow, _bw_flow, ("log_px",)),
    "realnvp_flow": Block(
        "radref.core.flow.flow_forward",
        "whole Real NVP flow: log p(x), inference z (k is all -1), layer_z and layer_term, "
        "inverse_x = flow_inverse(z, k), (sample_x, sample_k) = "
        "flow_sample_from_noise(sample_normals, sample_uniforms)",
        _fw_flow, _bw_flow, ("log_px",)),
    "adam": Block(
        "radref.training.optim.adam_update",
        "one Adam step; inputs params.*, grads.*, m.*, v.*, t, lr, beta1, beta2, eps; "
        "outputs params.*, m.*, v.*, t (no gradients)",
        _fw_adam, None, ()),
}


# ---------------------------------------------------------------- generation

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


def compute(block_name, inputs, params, config, loss_weights):
    """Outputs and gradients of one case with radref (``loss_weights`` empty: no gradients)."""
    block = BLOCKS[block_name]
    outputs, ctx = block.forward(inputs, params, config)
    grads = block.backward(ctx, loss_weights) if loss_weights else {}
    outputs = {k: np.asarray(v) for k, v in outputs.items()}
    order = [k for k in list(inputs) + list(params) if k in grads]
    assert set(order) == set(grads), (block_name, sorted(grads))
    grads = {k: np.asarray(grads[k]) for k in order}
    return outputs, grads


def _generate_cases(block_name):
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


def generate():
    """The golden document in memory: ``{"blocks": {name: {"comment", "function",
    "cases": [case, ...]}}, ...header}`` with NumPy arrays (see :func:`to_json`)."""
    from radref._version import __version__
    blocks = {}
    for name, block in BLOCKS.items():
        blocks[name] = {"function": block.function, "comment": block.comment,
                        "cases": _generate_cases(name)}
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


def _skeleton(jdoc):
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
    arrays["__skeleton__"] = np.array(_canonical(_skeleton(jdoc)))
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
    return hashlib.sha256(_canonical(parts).encode("ascii")).hexdigest()


def default_golden_dir():
    """``validation/golden`` of the source tree radref was imported from (or None)."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidate = os.path.join(os.path.dirname(os.path.dirname(here)), "validation", "golden")
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


# --------------------------------------------------------------- comparison

def relative_error(port, gold):
    """Normwise relative error of one field of one case.

    ``max_i |port_i - gold_i| / max(REL_FLOOR, max_i |gold_i|)`` over the
    entries where ``gold`` is finite (the denominator uses the golden values
    only).  Non-finite golden entries must be matched exactly (``inf`` by
    ``inf`` of the same sign, ``nan`` by ``nan``), else the error is ``inf``;
    so is any non-finite port value where the golden one is finite.
    Returns ``(max_abs_error, relative_error)``.
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
                        abs_err, rel_err = relative_error(port, gold)
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
