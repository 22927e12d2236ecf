"""Block adapters: every function under test as ``forward(inputs, params,
config) -> (outputs, ctx)`` and ``backward(ctx, loss_weights) -> grads``
(docs/golden.md §3).

The loss of a case is ``L = sum_o sum(loss_weights[o] * outputs[o])``, so the
upstream gradient of output ``o`` is ``loss_weights[o]`` and ``backward``
returns ``dL / d name`` for every float input and parameter ``name``.
"""
from contextlib import nullcontext
from typing import Callable, NamedTuple, Optional

import numpy as np

from radref.core.layers import affine, rad
from radref.core.flow import (FlowConfig, flatten_params, flow_backward, flow_forward,
                              flow_inverse, flow_layers, flow_sample_from_noise, nest_params)
from radref.core.gating import (gating_probabilities, log_gating_backward,
                                log_gating_forward, sample_branch)
from radref.core.mlp import mlp_backward, mlp_forward
from radref.core.slopes import Slopes, slopes_backward, slopes_forward
from radref.core.softmax import log_softmax_backward, log_softmax_forward
from radref.core.surjection import surjection_backward, surjection_forward, surjection_inverse
from radref.training.optim import AdamConfig, PackedAdam


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
    layer, nested = cfg["layer"], nest_params(par)
    # rad_coupling/gate_at_zero feeds x_A = +-inf to the conditioner, built so that its
    # outputs are finite (tanh of +-inf); a BLAS matrix product may still raise the
    # floating-point "invalid" flag in lanes it discards (the results are exact, and no
    # golden output is NaN: tests/test_golden.py checks it).
    quiet = np.errstate(invalid="ignore") if not np.all(np.isfinite(inp["x"])) else nullcontext()
    with quiet:
        z, k, term, cache = rad.forward(inp["x"], nested, layer)
        inverse_x = rad.inverse(z, k, nested, layer)
    sample_x, sample_k = rad.sample(inp["sample_z"], inp["sample_uniforms"], nested, layer)
    return {"z": z, "k": k, "term": term, "inverse_x": inverse_x,
            "sample_x": sample_x, "sample_k": sample_k}, cache


def _bw_rad_coupling(cache, w):
    dx, grads = rad.backward(w["z"], w["term"], cache)
    return dict({"x": dx}, **flatten_params(grads))


def _fw_affine_coupling(inp, par, cfg):
    layer, nested = cfg["layer"], nest_params(par)
    z, _, term, cache = affine.forward(inp["x"], nested, layer)
    return {"z": z, "term": term, "inverse_x": affine.inverse(z, None, nested, layer)}, cache


def _bw_affine_coupling(cache, w):
    dx, grads = affine.backward(w["z"], w["term"], cache)
    return dict({"x": dx}, **flatten_params(grads))


def _flow_config(cfg):
    return FlowConfig(cfg["kind"], cfg["dim"], cfg["n_layers"], cfg["hidden"], cfg["gate_hidden"])


def _layer_by_layer(x, params, config):
    """Output ``z`` and log-determinant term of every layer (debugging aid for
    ports), from the flow's own layer loop."""
    records = list(flow_layers(x, params, config))
    return np.stack([r.z for r in records]), np.stack([r.term for r in records])


def _fw_flow(inp, par, cfg):
    config = _flow_config(cfg)
    log_px, z, k, cache = flow_forward(inp["x"], par, config)
    outputs = {"log_px": log_px, "z": z, "k": k}
    if np.all(np.isfinite(log_px)):
        # Per-layer values are part of the contract only for cases without
        # out-of-range rows (those have no layer_z, layer_term).
        outputs["layer_z"], outputs["layer_term"] = _layer_by_layer(inp["x"], par, config)
        assert np.array_equal(outputs["layer_z"][-1], z)
    outputs["inverse_x"] = flow_inverse(z, k, par, config)
    outputs["sample_x"], outputs["sample_k"] = flow_sample_from_noise(
        inp["sample_normals"], inp["sample_uniforms"], par, config)
    return outputs, cache


def _bw_flow(cache, w):
    dx, grads = flow_backward(w["log_px"], cache)
    return dict({"x": dx}, **grads)


def _fw_adam(inp, par, cfg):
    # The update training runs: PackedAdam.update on copies of the stored arrays.
    names = [key[len("params."):] for key in inp if key.startswith("params.")]
    params = {n: np.array(inp["params." + n], dtype=np.float64) for n in names}
    grads = {n: inp["grads." + n] for n in names}
    state = {"t": int(inp["t"]),
             "m": {n: np.array(inp["m." + n], dtype=np.float64) for n in names},
             "v": {n: np.array(inp["v." + n], dtype=np.float64) for n in names}}
    config = AdamConfig(float(inp["lr"]), float(inp["beta1"]), float(inp["beta2"]),
                        float(inp["eps"]))
    with PackedAdam(params, state, config) as adam:
        adam.update(adam.flatten(grads))
    out = {}
    for n in names:
        out["params." + n] = params[n]
        out["m." + n] = state["m"][n]
        out["v." + n] = state["v"][n]
    out["t"] = np.array(state["t"], dtype=np.int64)
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
        "radref.core.layers.rad.forward",
        "Rad coupling layer (z, k, term); inverse_x = rad.inverse(z, k); "
        "(sample_x, sample_k) = rad.sample(sample_z, sample_uniforms)",
        _fw_rad_coupling, _bw_rad_coupling, ("z", "term")),
    "affine_coupling": Block(
        "radref.core.layers.affine.forward",
        "affine (Real NVP) coupling layer (z, term); inverse_x = affine.inverse(z)",
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
        "radref.training.optim.PackedAdam.update",
        "one Adam step; inputs params.*, grads.*, m.*, v.*, t, lr, beta1, beta2, eps; "
        "outputs params.*, m.*, v.*, t (no gradients)",
        _fw_adam, None, ()),
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
