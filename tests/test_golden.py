"""The golden reference vectors (shipped in radref/reference/golden/vectors/) and
the port checker.

- The committed vectors are what radref computes now: every case is
  recomputed from its *stored* inputs and must agree to 1e-12 (relative to the
  field's largest entry, outputs and gradients alike; integers exactly), and,
  entry by entry, within check-port's float64 tolerance, so that any change in
  the numerics is a conscious, versioned decision (regenerate with
  ``radref golden --out radref/reference/golden/vectors`` and say so in the
  CHANGELOG).  The cases of schema version 1 keep their inputs bit for bit.
- The checksum holds; the JSON and the .npz hold the same arrays bit for bit.
- The error measure is per entry: an error in a small entry next to a huge one
  fails; perturbing the smallest or the largest entry of any field by twice its
  tolerance fails, by half of it passes.
- An independent port (tests/golden_port.py, written from docs/golden.md)
  passes every case in float64, and in float32 every case not flagged
  Float64Only; each deliberately wrong variant of it fails the cases built to
  catch it, computing in float64 and in float32 (cases flagged Float32Inputs:
  their inputs are float32 numbers, so a float32 port sees the same ties).
- ``radref check-port`` passes the golden file itself, fails a port with one
  flipped gradient sign (naming the block and field), counts missing blocks,
  cases and fields in its verdict, refuses another schema version, and rejects
  malformed files with exit status 2.
"""
import copy
import hashlib
import importlib.resources
import json
import os
import pathlib
import subprocess
import sys
import tomllib
import zipfile

import numpy as np
import pytest

import golden_port
from radref.core.flow import FlowConfig, flow_forward
from radref.core.slopes import slopes_forward
from radref.reference import golden
from radref.user.cli import main

GOLDEN_DIR = pathlib.Path(golden.default_golden_dir())
GOLDEN_JSON = GOLDEN_DIR / golden.JSON_NAME
GOLDEN_NPZ = GOLDEN_DIR / golden.NPZ_NAME
ROOT = pathlib.Path(__file__).resolve().parents[1]

#: Inputs that radref derives through exp and log (slopes from logits, for example)
#: move by a few ulps from one CPU to another (docs/golden.md §5): regenerated
#: inputs agree with the committed ones to this relative error, 100 ulps, far
#: below any change of a case's construction.
INPUT_RTOL = 100 * np.finfo(np.float64).eps

#: The cases of schema version 1 (radref 0.1.0) and the sha256 of the canonical
#: JSON of their config, inputs, params and loss_weights in that file: version 2
#: keeps them bit for bit, so numbers checked against version 1 stay reproducible.
V1_CASES = {
    "log_softmax": ["generic", "batch_of_one", "saturated_30", "saturated_300", "ties",
                    "width_5"],
    "slopes": ["generic", "batch_of_one", "uniform_boundary", "saturated_30", "saturated_300"],
    "surjection": ["generic", "batch_of_one", "outside", "breakpoint_minus_one", "breakpoint_a",
                   "breakpoint_b", "breakpoint_plus_one", "saturated_30"],
    "surjection_inverse": ["generic", "boundary", "outside"],
    "log_gating": ["generic", "batch_of_one", "boundary", "outside", "saturated_30",
                   "saturated_300", "impossible_branch"],
    "gating_probabilities": ["generic", "boundary", "saturated_300"],
    "sample_branch": ["generic", "cdf_boundaries", "zero_probabilities"],
    "mlp": ["generic_tanh", "generic_linear", "batch_of_one", "relu_at_zero", "saturated_tanh"],
    "rad_coupling": ["d2_layer0", "d2_layer1", "d5_layer0", "d5_layer1",
                     "d2_layer0_batch_of_one", "d2_saturated"],
    "affine_coupling": ["d2_layer0", "d2_layer1", "d5_layer0", "d5_layer1",
                        "d2_layer1_batch_of_one"],
    "rad_flow": ["d2_generic", "d2_batch_of_one", "d2_tail", "d5_generic"],
    "realnvp_flow": ["d2_generic", "d2_batch_of_one", "d2_tail", "d5_generic"],
    "adam": ["first_step", "generic", "large_eps", "other_betas", "zero_gradient"],
}
V1_INPUTS_SHA256 = "67177d6929d0adca9391f655ff3093b49f32ff0d7087818711761689d869117c"


@pytest.fixture(scope="module")
def committed_json():
    with open(GOLDEN_JSON, encoding="ascii") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def committed(committed_json):
    return golden.from_json(committed_json, where=str(GOLDEN_JSON))


@pytest.fixture(scope="module")
def regenerated():
    return golden.generate()


def _normwise(new, old):
    """max |new - old| / max(1e-8, max |old|) over the finite entries of old: the
    normwise measure of schema version 1, to show what it let through."""
    finite = np.isfinite(old)
    return float(np.max(np.abs(new[finite] - old[finite]))) / \
        max(1e-8, float(np.max(np.abs(old[finite]))))


def _compare_arrays(new, old, label, scales, section, magnitudes):
    """``new`` agrees with ``old`` entry by entry within check-port's float64
    tolerance, ``rtol (max(|old|, M) + S)`` (docs/golden.md §5: radref on another
    CPU is one more float64 port); integer fields exactly."""
    assert set(new) == set(old), f"{label}: fields {sorted(new)} vs {sorted(old)}"
    for name in old:
        a, b = np.asarray(new[name]), np.asarray(old[name])
        assert a.shape == b.shape, f"{label}.{name}: shape {a.shape} vs {b.shape}"
        if b.dtype.kind in "iu":
            np.testing.assert_array_equal(a, b, err_msg=f"{label}.{name}")
            continue
        field = f"{section}.{name}"
        entry = float(np.max(golden.entry_errors(a, b, scales[field], magnitudes.get(field)),
                             initial=0.0))
        assert entry <= golden.TOLERANCES["float64"][section], (label, name, entry)


# ------------------------------------------------------------ the vectors

def test_checksum_and_header(committed_json):
    assert committed_json["schema"] == golden.SCHEMA
    assert committed_json["schema_version"] == golden.SCHEMA_VERSION == 3
    assert committed_json["checksum"] == golden.checksum(committed_json)
    assert committed_json["tolerances"] == golden.TOLERANCES
    golden.load_document(GOLDEN_JSON)  # verifies the checksum too


def test_checksum_detects_an_edit(committed_json, tmp_path):
    edited = copy.deepcopy(committed_json)
    edited["blocks"]["slopes"]["cases"][0]["outputs"]["a"]["hex"][0] = float.hex(0.5)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(edited))
    with pytest.raises(golden.GoldenFormatError, match="checksum"):
        golden.load_document(path)


def test_recomputed_from_stored_inputs_agree(committed):
    """The contract: radref applied to the stored inputs gives the stored outputs."""
    recomputed = golden.recompute_document(committed)
    for name, block in committed["blocks"].items():
        for old, new in zip(block["cases"], recomputed["blocks"][name]["cases"]):
            label = f"{name}/{old['id']}"
            for section in ("outputs", "grads"):
                _compare_arrays(new[section], old[section], f"{label} {section}",
                                block["scales"], section, old["magnitudes"])


def _inputs_agree(new, old, label):
    """Stored inputs regenerated on this CPU: integers and non-finite entries
    exactly, floats within ``INPUT_RTOL`` (relative; exact zeros stay zeros)."""
    assert set(new) == set(old), label
    for k in old:
        a, b = np.asarray(new[k]), np.asarray(old[k])
        assert a.shape == b.shape and a.dtype.kind == b.dtype.kind, f"{label}.{k}"
        if b.dtype.kind != "f":
            np.testing.assert_array_equal(a, b, err_msg=f"{label}.{k}")
            continue
        finite = np.isfinite(b)
        np.testing.assert_array_equal(a[~finite], b[~finite], err_msg=f"{label}.{k}")
        np.testing.assert_allclose(a[finite], b[finite], rtol=INPUT_RTOL, atol=0,
                                   err_msg=f"{label}.{k}")


def test_regenerated_document_agrees(committed, regenerated):
    """Generation from the seeds gives the same cases and scales, inputs within a
    few ulps (those derived through exp and log move by ulps on another CPU), and
    outputs and gradients within check-port's float64 tolerance: the committed
    vectors are reproduced on any CPU, not only on the one that wrote them."""
    same_numpy = (np.__version__.split(".")[:2] ==
                  str(committed["numpy_version"]).split(".")[:2])
    assert list(regenerated["blocks"]) == list(committed["blocks"])
    for name, block in committed["blocks"].items():
        new_block = regenerated["blocks"][name]
        assert [c["id"] for c in new_block["cases"]] == [c["id"] for c in block["cases"]]
        assert set(new_block["scales"]) == set(block["scales"])
        for field, scale in block["scales"].items():
            assert new_block["scales"][field] == pytest.approx(scale, rel=1e-9), (name, field)
        for old, new in zip(block["cases"], new_block["cases"]):
            label = f"{name}/{old['id']}"
            for key in ("comment", "flags", "config"):
                assert new[key] == old[key], f"{label}: {key} changed"
            assert new.get("float64_only") == old.get("float64_only"), label
            if not same_numpy:  # another generator stream: other random inputs
                continue
            for section in ("inputs", "params", "loss_weights"):
                _inputs_agree(new[section], old[section], f"{label} {section}")
            for section in ("outputs", "grads"):
                _compare_arrays(new[section], old[section], f"{label} {section}",
                                block["scales"], section, old["magnitudes"])
            # magnitudes set an allowance: stored rounded up to 2 digits, they agree to 2 %
            assert set(new["magnitudes"]) == set(old["magnitudes"]), label
            for field, m in old["magnitudes"].items():
                np.testing.assert_allclose(new["magnitudes"][field], m, rtol=0.02,
                                           err_msg=f"{label} magnitudes.{field}")


def test_golden_out_is_accepted_by_check_port_against_the_shipped_vectors(tmp_path, capsys):
    """``radref golden --out DIR`` on this CPU writes a document that ``radref
    check-port`` accepts, at the float64 tolerance, against the shipped one (the
    CI runs this under every NumPy SIMD level of the machine)."""
    assert _run(["golden", "--out", str(tmp_path)], capsys)[0] == 0
    code, out, err = _run(["check-port", str(tmp_path / golden.JSON_NAME)], capsys)
    assert code == 0, out + err
    assert "PASS" in out.splitlines()[-1]


def test_version_1_cases_are_kept_bit_for_bit(committed_json):
    """Every case of schema version 1 is still there, with the same config, inputs,
    parameters and loss weights, bit for bit (their outputs: the recomputation test)."""
    parts = {}
    for name, ids in V1_CASES.items():
        cases = {c["id"]: c for c in committed_json["blocks"][name]["cases"]}
        for cid in ids:
            parts[f"{name}/{cid}"] = {k: cases[cid][k]
                                      for k in ("config", "inputs", "params", "loss_weights")}
    digest = hashlib.sha256(golden.canonical_json(parts).encode("ascii")).hexdigest()
    assert digest == V1_INPUTS_SHA256


def test_stored_scales_follow_the_documented_rule(committed):
    """S = median of |x| over the nonzero finite entries of the field in the block's
    Generic cases (docs/golden.md §5), recomputed here independently."""
    for name, block in committed["blocks"].items():
        assert "scales" in block and block["scales"] == golden.block_scales(block)
        generic = [c for c in block["cases"] if "Generic" in c["flags"]]
        assert generic, name
        for field, scale in block["scales"].items():
            section, fname = field.split(".", 1)
            pool = [c for c in generic if fname in c[section]] or \
                [c for c in block["cases"] if fname in c[section]]
            values = np.concatenate([np.abs(c[section][fname]).ravel() for c in pool])
            values = np.sort(values[np.isfinite(values) & (values > 0)])
            expected = 0.0 if values.size == 0 else (
                values[values.size // 2] if values.size % 2 else
                0.5 * (values[values.size // 2 - 1] + values[values.size // 2]))
            assert scale == pytest.approx(expected, rel=1e-15), (name, field)


def test_json_and_npz_agree_exactly(committed, committed_json):
    from_json = golden.npz_arrays(committed)
    with np.load(GOLDEN_NPZ, allow_pickle=False) as npz:
        keys = set(npz.files)
        assert keys == set(from_json) | {"__skeleton__"}
        for key, value in from_json.items():
            stored = npz[key]
            assert stored.dtype == value.dtype and stored.shape == value.shape, key
            # bit for bit (covers -0.0, inf and nan)
            assert stored.tobytes() == value.tobytes(), key
        skeleton = json.loads(str(npz["__skeleton__"]))
    assert skeleton == golden.skeleton(committed_json)


def test_npz_is_byte_deterministic(tmp_path, committed, committed_json):
    path = tmp_path / "again.npz"
    golden.write_npz(path, committed, committed_json)
    with zipfile.ZipFile(path) as a, zipfile.ZipFile(GOLDEN_NPZ) as b:
        assert [i.date_time for i in a.infolist()] == [(1980, 1, 1, 0, 0, 0)] * len(a.infolist())
        assert a.namelist() == b.namelist()
        for name in a.namelist():
            assert a.read(name) == b.read(name), name


def test_every_flag_is_defined_and_every_block_is_covered(committed):
    assert set(committed["blocks"]) == set(golden.BLOCKS)
    for name, block in committed["blocks"].items():
        assert block["cases"], name
        for case in block["cases"]:
            assert set(case["flags"]) <= set(golden.FLAGS), (name, case["id"])
            grads, known = set(case["grads"]), set(case["inputs"]) | set(case["params"])
            assert grads <= known, (name, case["id"])
            if case["loss_weights"]:
                # gradients with respect to every float input and every parameter
                # (the noise of the sampling outputs is not differentiated)
                floats = {k for k, v in case["inputs"].items()
                          if v.dtype.kind == "f" and not k.startswith("sample_")}
                assert grads == floats | set(case["params"]), (name, case["id"])


def test_every_float64_only_case_says_why(committed):
    """A case is flagged Float64Only exactly when it carries a reason."""
    for name, block in committed["blocks"].items():
        for case in block["cases"]:
            flagged = "Float64Only" in case["flags"]
            reason = case.get("float64_only")
            assert flagged == (reason is not None), (name, case["id"])
            if flagged:
                assert isinstance(reason, str) and len(reason) > 20, (name, case["id"])


def test_each_new_convention_has_a_flagged_case(committed):
    flags = {f for block in committed["blocks"].values() for c in block["cases"]
             for f in c["flags"]}
    assert {"ClipChangesV", "OverflowSafeProduct", "LargeLogits", "CoincidingBreakpoints",
            "OutOfRange"} <= flags


def test_encoding_round_trips_exactly():
    values = np.array([0.0, -0.0, 1.0, -2.5, 5e-324, 2.2250738585072014e-308,
                       1.7976931348623157e308, np.inf, -np.inf, np.nan, 0.1])
    decoded = golden.decode_array(json.loads(json.dumps(golden.encode_array(values),
                                                        allow_nan=False)))
    assert decoded.tobytes() == values.tobytes()
    ints = np.array([[-1, 0], [2, 7]])
    decoded = golden.decode_array(golden.encode_array(ints))
    assert decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded, ints)


def test_tie_break_rule_as_documented(committed):
    """docs/golden.md §4: piece 0 if u < -1, 4 if u > 1, else 1 if u < a, 2 if u < b,
    else 3; rows are [p - 1e-9, p - 1 ulp, p, p + 1 ulp, p + 1e-9]."""
    cases = {c["id"]: c for c in committed["blocks"]["surjection"]["cases"]}
    expected_k = {"breakpoint_minus_one": [0, 0, 0, 0, 0], "breakpoint_a": [0, 0, 1, 1, 1],
                  "breakpoint_b": [1, 1, 2, 2, 2], "breakpoint_plus_one": [2, 2, 2, 2, 2],
                  # a = -1: u = -1 is on the middle piece; b = 1: u = 1 stays on piece 3
                  "coinciding_breakpoints": [0, 1, 1, 1, 1, 2, 2, 1, 1, 2],
                  # u = -1, a, b, 1, then inside pieces 1, 2, 3, then outside
                  "breakpoint_ties": [0, 1, 2, 2, 0, 1, 2, 0, 2],
                  "coinciding_breakpoint_ties": [1, 0, 1, 2, 2, 2, 0, 1, 1, 2, 1, 1]}
    slope_field = {"breakpoint_minus_one": ["log_alpha_minus"] * 2 + ["log_alpha_1"] * 3,
                   "breakpoint_plus_one": ["log_alpha_3"] * 3 + ["log_alpha_plus"] * 2,
                   "breakpoint_ties": ["log_alpha_1", "log_alpha_2", "log_alpha_3",
                                       "log_alpha_3"]}
    for cid, k in expected_k.items():
        case = cases[cid]
        np.testing.assert_array_equal(case["outputs"]["k"], k)
        for row, field in enumerate(slope_field.get(cid, [])):
            assert case["outputs"]["log_slope"][row] == case["inputs"][field][row], (cid, row)
        v, u = case["outputs"]["v"], case["inputs"]["u"]
        # |u| <= 1 exactly when |v| <= 1 (the clip rule)
        np.testing.assert_array_equal(np.abs(u) <= 1.0, np.abs(v) <= 1.0)
    coinciding = cases["coinciding_breakpoints"]["inputs"]
    assert np.all(coinciding["a"][[0, 1, 2, 3, 7, 8, 9]] == -1.0)
    assert np.all(coinciding["b"][4:] == 1.0)
    ties = cases["breakpoint_ties"]["inputs"]
    np.testing.assert_array_equal(ties["u"][:4], [-1.0, ties["a"][1], ties["b"][2], 1.0])
    coinciding = cases["coinciding_breakpoint_ties"]["inputs"]
    assert np.all(coinciding["a"][[0, 1, 2, 3, 8, 9, 10, 11]] == -1.0)
    assert np.all(coinciding["a"][4:8] > -0.5) and np.all(coinciding["b"][:4] < 0.5)
    assert np.all(coinciding["b"][4:] == 1.0)


def test_float32_inputs_are_float32_numbers(committed):
    """Cases flagged Float32Inputs: every float input, parameter and loss weight is
    a float32 number (so a float32 port computes on the same numbers; ties stay ties)."""
    flagged = 0
    for name, block in committed["blocks"].items():
        for case in block["cases"]:
            if "Float32Inputs" not in case["flags"]:
                continue
            flagged += 1
            assert "Float64Only" not in case["flags"], (name, case["id"])
            for section in ("inputs", "params", "loss_weights"):
                for key, value in case[section].items():
                    if value.dtype.kind != "f":
                        continue
                    rounded = value.astype(np.float32).astype(np.float64)
                    same = (rounded == value) | (np.isnan(rounded) & np.isnan(value))
                    assert np.all(same), (name, case["id"], section, key)
    assert flagged >= 11


def test_no_golden_output_or_gradient_is_nan(committed):
    """docs/golden.md §1: "nan" may appear in inputs (a NaN row is out of range), never
    in a golden output or gradient."""
    for name, block in committed["blocks"].items():
        for case in block["cases"]:
            for section in ("outputs", "grads"):
                for key, value in case[section].items():
                    assert not np.any(np.isnan(value)), (name, case["id"], section, key)


def test_overflow_safe_product_float32_rows(committed):
    """exp(L) alone overflows (float64 in rows 0, 1, 5; float32 in rows 3, 4, 6) while
    v is 1 exactly at a zero offset, finite within float32 in rows 4 and 6, and +-inf
    only where the true value exceeds float64."""
    case = next(c for c in committed["blocks"]["surjection"]["cases"]
                if c["id"] == "overflow_safe_product_float32")
    v, log_slope = case["outputs"]["v"], case["outputs"]["log_slope"]
    with np.errstate(over="ignore"):
        assert np.all(np.isinf(np.exp(log_slope[[0, 1, 5]])))
        assert np.all(np.isinf(np.exp(log_slope[[3, 4, 6]].astype(np.float32))))
        assert np.all(np.isfinite(np.exp(log_slope[[3, 4, 6]])))
    np.testing.assert_array_equal(v[[0, 3, 7]], 1.0)
    np.testing.assert_array_equal(v[[1, 5]], [np.inf, -np.inf])
    assert np.all(np.abs(v[[4, 6]]) < np.finfo(np.float32).max) and np.all(np.abs(v[[4, 6]]) > 1e33)
    for name in ("v", "log_slope"):
        weights = case["loss_weights"][name]
        assert np.all((weights[[3, 4, 6]] == 0.0) == (name == "v")), name
    inverse = next(c for c in committed["blocks"]["surjection_inverse"]["cases"]
                   if c["id"] == "overflow_safe_product_float32")["outputs"]["u"]
    assert np.all(np.isfinite(inverse[:4])) and np.all(np.abs(inverse[[0, 1, 3]]) > 1e33)
    assert np.all(np.abs(inverse[[0, 1, 3]]) < np.finfo(np.float32).max)
    np.testing.assert_array_equal(inverse[5:], [-np.inf, np.inf])


def test_cdf_ties_are_exact_in_float32_and_float64(committed):
    """sample_branch/cdf_ties: the cumulative sums, formed left to right, are the same
    numbers in float32 and float64, and each uniform lies exactly on one of them, at 0,
    or is the largest float32 below 1; k moves to the next branch at equality."""
    case = next(c for c in committed["blocks"]["sample_branch"]["cases"] if c["id"] == "cdf_ties")
    prob, u = case["inputs"]["prob"], case["inputs"]["uniforms"]
    for dtype in (np.float32, np.float64):
        p = prob.astype(dtype)
        c0, c1 = p[:, 0], p[:, 0] + p[:, 1]
        np.testing.assert_array_equal(c0, prob[:, 0])
        np.testing.assert_array_equal(c1, prob[:, 0] + prob[:, 1])
    c0, c1 = prob[:, 0], prob[:, 0] + prob[:, 1]
    below_one = np.float64(np.nextafter(np.float32(1.0), np.float32(0.0)))
    assert np.all((u == c0) | (u == c1) | (u == 0.0) | (u == below_one))
    np.testing.assert_array_equal(case["outputs"]["k"], [0, 1, 2, 2, 1, 2, 2, 1, 1, 1, 2, 0])
    drawn = np.take_along_axis(prob, case["outputs"]["k"][:, None], axis=1)
    assert np.all(drawn > 0)  # zero-probability branches are never drawn


def test_clip_outer_rows_are_clipped_in_float64_and_float32(committed):
    """rad_coupling/clip_outer: for u = -+1.5 on outer slopes e^-39.6 the unclipped v
    rounds to -+1 in float64 and in float32, so the clip moves it one ulp outside
    (stored z_B = v: log_scale_out = shift_out = 0), and the gating gives log p = 0."""
    case = next(c for c in committed["blocks"]["rad_coupling"]["cases"] if c["id"] == "clip_outer")
    slopes, _ = slopes_forward(np.array([[0.0, 0.0, -40.0]]), np.array([[-40.0, 0.0, 0.0]]))
    u = case["inputs"]["x"][:2, 1] * np.exp(40.0)
    for dtype in (np.float64, np.float32):
        one = dtype(1.0)
        alpha = np.exp(np.array([slopes.log_alpha_minus[0], slopes.log_alpha_plus[0]], dtype=dtype))
        raw = np.array([-one + alpha[0] * (dtype(u[0]) + one),
                        one + alpha[1] * (dtype(u[1]) - one)])
        np.testing.assert_array_equal(raw, [-1.0, 1.0])
    np.testing.assert_array_equal(case["outputs"]["z"][:2, 1],
                                  [np.nextafter(-1.0, -2.0), np.nextafter(1.0, 2.0)])
    np.testing.assert_array_equal(case["outputs"]["k"][:2, 0], [0, 2])
    # term = log p (= 0 outside) + log|f'| - log_scale_in + log_scale_out
    np.testing.assert_allclose(case["outputs"]["term"][:2],
                               [slopes.log_alpha_minus[0] + 40.0, slopes.log_alpha_plus[0] + 40.0],
                               rtol=1e-14)
    assert np.all(np.abs(case["grads"]["x"][:2, 1]) > 0.1)  # dv/du e^-39.6 times du/dx e^40


def test_out_of_range_rows_as_documented(committed):
    """gate_at_zero: z_A = +-inf rows keep a finite term (gating at z = 0) and the layer's
    inverse gives (+-inf, finite x_B): no screening inside a layer.  out_of_range_last_layer:
    rows 0-2 (inf, -inf, NaN) and rows 3-5 (in range after layer 0, out of range after the
    last layer, in float64 and in float32) give -inf, inf, k = -1, zero gradient."""
    gate = next(c for c in committed["blocks"]["rad_coupling"]["cases"] if c["id"] == "gate_at_zero")
    np.testing.assert_array_equal(gate["outputs"]["z"][:2, 0], [np.inf, -np.inf])
    assert np.all(np.isfinite(gate["outputs"]["term"]))
    np.testing.assert_array_equal(gate["outputs"]["inverse_x"][:2, 0], [np.inf, -np.inf])
    np.testing.assert_allclose(gate["outputs"]["inverse_x"][:2, 1], gate["inputs"]["x"][:2, 1],
                               rtol=1e-12)
    for block in ("rad_flow", "realnvp_flow"):
        case = next(c for c in committed["blocks"][block]["cases"]
                    if c["id"] == "out_of_range_last_layer")
        x, out, config = case["inputs"]["x"], case["outputs"], case["config"]
        assert config["n_layers"] == 2 and not np.all(np.isfinite(x[:3]), axis=1).any()
        flow_config = FlowConfig(**config)
        first, _, _, _ = flow_forward(x[3:], {k: v for k, v in case["params"].items()
                                           if k.startswith("0.")},
                                   flow_config._replace(n_layers=1))
        assert np.all(np.isfinite(first))  # rows 3-9 are in range after layer 0
        np.testing.assert_array_equal(out["log_px"][:6], -np.inf)
        assert np.all(np.isfinite(out["log_px"][6:]))
        assert np.all(out["z"][:6] == np.inf) and np.all(out["k"][:6] == -1)
        assert np.all(out["inverse_x"][:6] == np.inf) and np.all(np.isfinite(out["inverse_x"][6:]))
        assert np.all(case["grads"]["x"][:6] == 0.0)
        assert np.all(out["sample_x"][:3] == np.inf) and np.all(out["sample_k"][:3] == -1)
        with np.errstate(over="ignore"):
            assert np.float32(np.exp(np.float32(300.0))) == np.inf  # the scale of the last layer
        np.testing.assert_array_equal(case["params"]["1.cond.scale"][8 if block == "rad_flow"
                                                                     else 0], 300.0)


def test_a_layer_gradient_for_out_of_range_rows_is_no_golden_gradient(committed):
    """docs/golden.md §4: radref's Rad layer backward passes the gating network's input
    gradient, taken at the stand-in z = 0, on to z for rows whose z is out of range.  The
    stand-in does not depend on z, so that is not dL/dx: a golden gradient must not
    depend on it, and the rows get loss weight 0 (rad_coupling/output_out_of_range).
    If radref zeroes that gradient one day, update golden.md and weight the rows."""
    case = next(c for c in committed["blocks"]["rad_coupling"]["cases"]
                if c["id"] == "output_out_of_range")
    far = ~np.all(np.abs(case["outputs"]["z"]) <= 1e120, axis=1)
    assert far.any() and np.all(case["loss_weights"]["z"][far] == 0.0)
    assert np.all(case["loss_weights"]["term"][far] == 0.0)
    inside = far & (np.abs(case["outputs"]["z"][:, 1] * np.exp(-300.0)) < 1.0)  # |v| < 1
    row = int(np.flatnonzero(inside)[0])  # (outside [-1, 1] the gating has no gradient)
    weights = {"z": np.zeros_like(case["outputs"]["z"]), "term": np.zeros(len(far))}
    weights["term"][row] = 1.0
    _, grads = golden.compute("rad_coupling", case["inputs"], case["params"], case["config"],
                              weights)
    # dL/dx_A of that row by central differences: moderate; radref's value: ~1e95
    h = 1e-6
    values = []
    for sign in (1.0, -1.0):
        x = case["inputs"]["x"].copy()
        x[row, 0] += sign * h
        outputs, _ = golden.compute("rad_coupling", dict(case["inputs"], x=x), case["params"],
                                    case["config"], {})
        values.append(outputs["term"][row])
    numeric = (values[0] - values[1]) / (2.0 * h)
    assert abs(numeric) < 1e3 and abs(grads["x"][row, 0]) > 1e6 * max(1.0, abs(numeric))


def test_clip_case_rows_are_changed_by_the_clip(committed):
    """In surjection/clip every row's unclipped v (eq. 23 written out here) lies
    beyond +-1 against u, and the stored v is the clipped one."""
    case = next(c for c in committed["blocks"]["surjection"]["cases"] if c["id"] == "clip")
    inp, out = case["inputs"], case["outputs"]
    u, a, b = inp["u"], inp["a"], inp["b"]
    piece = np.where(u < -1, 0, np.where(u > 1, 4, np.where(u < a, 1, np.where(u < b, 2, 3))))
    L = np.choose(piece, [inp["log_alpha_minus"], inp["log_alpha_1"], inp["log_alpha_2"],
                          inp["log_alpha_3"], inp["log_alpha_plus"]])
    anchor = np.choose(piece, [-1.0, -1.0, a, 1.0, 1.0])
    raw = np.array([-1.0, -1.0, 1.0, 1.0, 1.0])[piece] + \
        np.array([1.0, 1.0, -1.0, 1.0, 1.0])[piece] * np.exp(L) * (u - anchor)
    lo = np.where(piece == 0, -np.inf, np.where(piece == 4, np.nextafter(1.0, 2.0), -1.0))
    hi = np.where(piece == 4, np.inf, np.where(piece == 0, np.nextafter(-1.0, -2.0), 1.0))
    assert np.all(raw != out["v"]), raw - out["v"]
    np.testing.assert_array_equal(out["v"], np.clip(raw, lo, hi))
    assert float.hex(float(raw[0])) == "-0x1.0000000000002p+0"  # golden.md's example


def _loss(block, case, inputs=None, params=None):
    outputs, _ = golden.compute(block, inputs or case["inputs"], params or case["params"],
                                case["config"], {})
    return sum(float(np.sum(w * outputs[o])) for o, w in case["loss_weights"].items())


@pytest.mark.parametrize("block,cid", [
    ("log_softmax", "generic"), ("slopes", "generic"), ("surjection", "generic"),
    ("log_gating", "generic"), ("mlp", "generic_tanh"), ("rad_coupling", "d5_layer1"),
    ("affine_coupling", "d5_layer0"), ("rad_flow", "d2_generic"), ("realnvp_flow", "d5_generic"),
    ("log_softmax", "mixed_scales"), ("rad_coupling", "output_out_of_range"),
    ("rad_flow", "saturated_gating_layers_100"),
])
def test_stored_gradients_are_those_of_the_stated_loss(committed, block, cid):
    """Spot-check: the stored grads are dL/d(input or parameter) of
    L = sum_o sum(loss_weights[o] * outputs[o]) (central differences, a few entries)."""
    case = next(c for c in committed["blocks"][block]["cases"] if c["id"] == cid)
    rng = np.random.default_rng(0)
    names = list(case["grads"])
    for name in rng.choice(names, size=min(4, len(names)), replace=False):
        section = "inputs" if name in case["inputs"] else "params"
        array = case[section][name]
        index = tuple(int(rng.integers(0, s)) for s in array.shape)
        h = 1e-6 * max(1.0, abs(float(array[index])))
        values = []
        for sign in (1.0, -1.0):
            moved = {k: v.copy() for k, v in case[section].items()}
            moved[name][index] += sign * h
            kwargs = {section: moved}
            values.append(_loss(block, case, **kwargs))
        numeric = (values[0] - values[1]) / (2.0 * h)
        analytic = float(case["grads"][name][index])
        scale = max(1.0, float(np.max(np.abs(case["grads"][name]))))
        assert abs(numeric - analytic) <= 1e-5 * scale, (block, cid, name, index, numeric, analytic)


# ------------------------------------------------------------ the error measure

def test_entry_errors():
    gold = np.array([1e25, 1.0, -2.0, 0.0, np.inf, -np.inf, np.nan])
    port = np.array([1e25 * (1 + 1e-13), 1.0 + 1e-12, -2.0, 1e-13, np.inf, -np.inf, np.nan])
    err = golden.entry_errors(port, gold, scale=0.5)
    np.testing.assert_allclose(err[:4], [1e-13 * 1e25 / (1e25 + 0.5), 1e-12 / 1.5, 0.0,
                                         1e-13 / 0.5], rtol=1e-2)  # rounding of port
    assert np.all(err[4:] == 0.0)
    # non-finite mismatches and a non-finite port value where golden is finite
    err = golden.entry_errors(np.array([np.inf, -np.inf, 1.0, np.nan]),
                              np.array([-np.inf, 3.0, np.nan, 2.0]), scale=1.0)
    assert np.all(np.isinf(err))
    # scale 0 and golden 0: only an exact 0 passes
    err = golden.entry_errors(np.array([0.0, -0.0, 1e-300]), np.zeros(3), scale=0.0)
    np.testing.assert_array_equal(err, [0.0, 0.0, np.inf])


def _single_field_port(committed, block, cid, section, field, change):
    """A port document holding one case of one block, equal to golden except for
    ``change(array)`` applied to one field (a copy)."""
    gcase = next(c for c in committed["blocks"][block]["cases"] if c["id"] == cid)
    pcase = {"id": cid, "outputs": dict(gcase["outputs"]), "grads": dict(gcase["grads"])}
    pcase[section] = dict(pcase[section])
    pcase[section][field] = change(gcase[section][field].copy())
    golden_doc = {"blocks": {block: dict(committed["blocks"][block], cases=[gcase])}}
    return {"blocks": {block: {"cases": [pcase]}}}, golden_doc


@pytest.mark.parametrize("block,cid,field", [
    ("rad_coupling", "d2_saturated", "z"),  # largest entry 1.2e25
    ("surjection", "saturated_30", "v"),  # largest entry 5.6e50
])
def test_an_order_one_error_next_to_a_huge_entry_fails(committed, block, cid, field):
    """The cases where the normwise measure of schema version 1 let +1.0 through."""
    gold = next(c for c in committed["blocks"][block]["cases"] if c["id"] == cid)["outputs"][field]
    assert np.max(np.abs(gold)) > 1e24
    small = int(np.argmin(np.abs(gold)))

    def plus_one(a):
        a.flat[small] += 1.0
        return a
    port, golden_doc = _single_field_port(committed, block, cid, "outputs", field, plus_one)
    assert not golden.check_port(port, golden_doc, partial=True).passed
    # the normwise measure would have passed it
    moved = plus_one(gold.copy())
    assert _normwise(moved, gold) <= golden.TOLERANCES["float64"]["outputs"]


def _moved(case, section, which, factor, scales, rtol):
    """The case's ``section`` with the smallest or largest finite entry of every float
    field moved by ``factor`` times that entry's tolerance ``rtol (max(|g|, M) + S)``."""
    moved = {}
    for field, gold in case[section].items():
        a = gold.copy()
        finite = np.flatnonzero(np.isfinite(gold))
        if gold.dtype.kind == "f" and finite.size:
            magnitude = np.abs(gold.ravel()[finite])
            index = finite[np.argmin(magnitude) if which == "smallest" else np.argmax(magnitude)]
            g = a.flat[index]
            m = case["magnitudes"].get(f"{section}.{field}")
            size = abs(g) if m is None else max(abs(g), float(m.flat[index]))
            step = factor * rtol * (size + scales[f"{section}.{field}"])
            if step == 0.0 and factor > 1:  # S = 0 and g = 0: the smallest change
                step = 5e-324
            a.flat[index] = g + step
        moved[field] = a
    return moved


@pytest.mark.parametrize("which", ["smallest", "largest"])
def test_perturbing_the_smallest_and_largest_entry_of_every_field(committed, which):
    """For every field of every case: its smallest (largest) finite entry moved by
    twice the tolerance of that entry, rtol (max(|g|, M) + S), fails the check; moved by half
    of it, passes (all fields of a case at once; the report is per field)."""
    count = 0
    for block, gblock in committed["blocks"].items():
        for case in gblock["cases"]:
            for section in ("outputs", "grads"):
                rtol = golden.TOLERANCES["float64"][section]
                floats = {f for f, g in case[section].items()
                          if g.dtype.kind == "f" and np.isfinite(g).any()}
                for factor, should_pass in ((2.0, False), (0.5, True)):
                    pcase = {"id": case["id"], "outputs": case["outputs"],
                             "grads": case["grads"]}
                    pcase[section] = _moved(case, section, which, factor, gblock["scales"],
                                            rtol)
                    report = golden.check_port(
                        {"blocks": {block: {"cases": [pcase]}}},
                        {"blocks": {block: dict(gblock, cases=[case])}}, partial=True)
                    for f in report.fields:
                        name = f.field.split(".", 1)[1]
                        if f.field.startswith(section) and name in floats:
                            assert f.passed == should_pass, (block, case["id"], f.field, factor)
                            count += not should_pass
                        else:
                            assert f.passed, (block, case["id"], f.field)
    assert count > 700


# -------------------------------------------------- an independent port, and its mistakes

@pytest.fixture(scope="module")
def port64(committed):
    return golden_port.run_port(committed, np.float64)


def test_independent_float64_port_passes(committed, port64):
    report = golden.check_port(port64, committed, tolerance="float64")
    assert report.passed, golden.format_report(report)
    assert not report.skipped and not report.missing


def test_independent_float32_port_passes_every_case_not_flagged_float64_only(committed):
    """A port computing entirely in float32 (inputs rounded once, every operation in
    float32) passes at the float32 tolerances; the Float64Only cases are skipped."""
    port = golden_port.run_port(committed, np.float32)
    report = golden.check_port(port, committed, tolerance="float32")
    assert report.passed, golden.format_report(report)
    flagged = {(b, c["id"]) for b, block in committed["blocks"].items()
               for c in block["cases"] if "Float64Only" in c["flags"]}
    assert set(report.skipped) == flagged
    # with a margin of 3 on every field (issue 21; docs/golden.md §5 lists the measured margins)
    worst = max(f.max_error / f.tolerance for f in report.fields if f.note != "exact")
    assert worst < 1 / 3, worst


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("variant", golden_port.EQUIVALENT_VARIANTS)
def test_equivalent_formulations_pass_with_a_margin_of_three(committed, variant, precision):
    """A port that computes the same mathematics in another, equally valid way
    (logaddexp, sums in the other order, expm1 forms, cos^2, 1 - p formed directly)
    passes every case, each field below a third of its tolerance: no case depends on
    the last bit of radref's own arithmetic."""
    dtype = np.float64 if precision == "float64" else np.float32
    report = golden.check_port(golden_port.run_port(committed, dtype, [variant]), committed,
                               tolerance=precision)
    assert report.passed, golden.format_report(report)
    worst = max(f.max_error / f.tolerance for f in report.fields if f.note != "exact")
    assert worst < 1 / 3, (variant, worst)


#: Each deliberately wrong variant of the port and the cases built to catch it, per
#: precision (float32: a port computing in float32, checked at the float32 tolerance,
#: where the Float64Only cases are skipped).  The float32 sets name cases flagged
#: Float32Inputs: a float32 port reads exactly the numbers a float64 port reads.
NAIVE_VARIANTS = {
    "no_clip": {"float64": {("rad_coupling", "clip"), ("rad_coupling", "clip_outer")},
                "float32": {("rad_coupling", "clip_outer")}},
    # (rad_coupling/clip's middle-piece row is clipped or not by the port's own last bit,
    # so it cannot be a catcher; its outer row's derivative e^-40 is below the tolerance)
    "clip_grad_zero": {"float64": {("surjection", "clip"), ("rad_coupling", "clip_outer")},
                       "float32": {("rad_coupling", "clip_outer")}},
    "direct_product": {"float64": {("surjection", "overflow_safe_product"),
                                   ("surjection_inverse", "overflow_safe_product"),
                                   ("surjection", "overflow_safe_product_float32")},
                       "float32": {("surjection", "overflow_safe_product_float32"),
                                   ("surjection_inverse", "overflow_safe_product_float32")}},
    "tie_nonstrict": {"float64": {("surjection", "breakpoint_a"), ("surjection", "breakpoint_b"),
                                  ("rad_coupling", "clip"),
                                  ("surjection", "breakpoint_ties"),
                                  ("surjection", "coinciding_breakpoint_ties")},
                      "float32": {("surjection", "breakpoint_ties"),
                                  ("surjection", "coinciding_breakpoint_ties")}},
    "minus_one_left": {"float64": {("surjection", "coinciding_breakpoints"),
                                   ("surjection", "coinciding_breakpoint_ties")},
                       "float32": {("surjection", "coinciding_breakpoint_ties")}},
    "strict_cdf": {"float64": {("sample_branch", "cdf_boundaries"),
                               ("sample_branch", "zero_probabilities"),
                               ("sample_branch", "cdf_ties")},
                   "float32": {("sample_branch", "cdf_ties")}},
    "no_range_screen": {"float64": {("rad_flow", "out_of_range"), ("realnvp_flow", "out_of_range"),
                                    ("rad_flow", "out_of_range_last_layer"),
                                    ("realnvp_flow", "out_of_range_last_layer")},
                        "float32": {("rad_flow", "out_of_range_last_layer"),
                                    ("realnvp_flow", "out_of_range_last_layer")}},
    "no_gate_zero": {"float64": {("rad_coupling", "output_out_of_range"),
                                 ("rad_coupling", "gate_at_zero")},
                     "float32": {("rad_coupling", "gate_at_zero")}},
    "no_max_shift": {"float64": {("log_softmax", "logits_1e3"), ("log_softmax", "mixed_scales"),
                                 ("slopes", "logits_1e3"), ("log_gating", "logits_1e3"),
                                 ("gating_probabilities", "logits_1e3"),
                                 ("rad_flow", "saturated_gating_layers_3000")},
                     "float32": {("log_softmax", "saturated_300"),
                                 ("slopes", "saturated_300"),
                                 ("rad_flow", "saturated_gating_layers_100")}},
    "log_of_softmax": {"float64": {("log_softmax", "logits_1e3"), ("log_gating", "logits_1e3"),
                                   ("rad_flow", "saturated_gating_layers_3000")},
                       "float32": {("log_softmax", "saturated_300"),
                                   ("rad_flow", "saturated_gating_layers_100")}},
    "eps_in_sqrt": {"float64": {("adam", "large_eps")}, "float32": {("adam", "large_eps")}},
    # float32 only: in float64 these variants compute exactly what the correct port does
    "range_in_working_precision": {"float64": set(),
                                   "float32": {("rad_coupling", "gate_at_zero"),
                                               ("rad_flow", "out_of_range_last_layer"),
                                               ("realnvp_flow", "out_of_range_last_layer")}},
    "float64_thresholds": {"float64": set(),
                           "float32": {("surjection", "overflow_safe_product_float32"),
                                       ("surjection_inverse", "overflow_safe_product_float32")}},
    # float64 only: 1e120 is not a float32 number (in float32 the range test is "finite")
    "strict_range": {"float64": {("rad_coupling", "range_limit")}, "float32": set()},
    # float64 only: the case's sample_z of 1e130 lies beyond the float32 range
    "sample_gate_at_zero": {"float64": {("rad_coupling", "sample_out_of_range")},
                            "float32": set()},
}

#: The conventions every float32 port is checked on (a float32 run must fail each).
CHECKED_IN_FLOAT32 = ("no_clip", "clip_grad_zero", "direct_product", "tie_nonstrict",
                      "minus_one_left", "strict_cdf", "no_range_screen", "no_gate_zero")


@pytest.fixture(scope="module")
def port32(committed):
    return golden_port.run_port(committed, np.float32)


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("variant", sorted(NAIVE_VARIANTS))
def test_each_naive_port_fails_the_cases_built_to_catch_it(committed, port64, port32, variant,
                                                          precision):
    """Each wrong variant of the independent port, computing in ``precision``, fails
    the cases built to catch it (and the correct port, in that precision, none)."""
    dtype = np.float64 if precision == "float64" else np.float32
    correct = port64 if precision == "float64" else port32
    assert not golden_port.failing_cases(correct, committed, precision)
    expected = NAIVE_VARIANTS[variant][precision]
    blocks = {block for block, _ in expected}
    port = golden_port.run_port(committed, dtype, [variant], blocks=blocks)
    failing = golden_port.failing_cases(port, committed, precision)
    assert expected <= failing, sorted(failing)


def test_the_float32_cases_of_each_convention_are_float32_inputs(committed):
    """Every convention listed fails a float32 run (above) on cases that are not
    Float64Only and whose inputs are float32 numbers, and a float64 run on at least
    one of those same cases."""
    cases = {(b, c["id"]): c for b, block in committed["blocks"].items() for c in block["cases"]}
    assert set(CHECKED_IN_FLOAT32) <= set(NAIVE_VARIANTS)
    for variant in CHECKED_IN_FLOAT32:
        float32 = NAIVE_VARIANTS[variant]["float32"]
        assert float32 & NAIVE_VARIANTS[variant]["float64"], variant
        for key in float32:
            assert "Float32Inputs" in cases[key]["flags"], (variant, key)
            assert "Float64Only" not in cases[key]["flags"], (variant, key)


# -------------------------------------------------------------- check-port

def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(json.dumps(doc, allow_nan=False))
    return str(path)


def test_check_port_passes_the_golden_file(capsys):
    code, out, err = _run(["check-port", str(GOLDEN_JSON), "--golden", str(GOLDEN_DIR)], capsys)
    assert code == 0, out + err
    assert "PASS" in out and "FAIL" not in out
    assert "rad_flow" in out and "grads.0.cond.W1" in out


def test_check_port_default_golden_dir(capsys):
    code, out, _ = _run(["check-port", str(GOLDEN_JSON)], capsys)
    assert code == 0 and "PASS" in out


def test_check_port_fails_a_flipped_gradient_sign(committed_json, tmp_path, capsys):
    port = copy.deepcopy(committed_json)
    case = next(c for c in port["blocks"]["rad_flow"]["cases"] if c["id"] == "d2_generic")
    field = case["grads"]["3.gate.W2"]
    values = [float.fromhex(h) for h in field["hex"]]
    i = int(np.argmax(np.abs(values)))
    field["hex"][i] = float.hex(-values[i])
    code, out, _ = _run(["check-port", _write(tmp_path, "port.json", port)], capsys)
    assert code == 1
    bad = [line for line in out.splitlines() if line.rstrip().endswith("FAIL")]
    assert len(bad) == 1 and bad[0].split()[:2] == ["rad_flow", "grads.3.gate.W2"], out
    assert "d2_generic[" in bad[0]
    assert "FAIL: 1 of" in out and "rad_flow grads.3.gate.W2" in out


def test_check_port_flags_a_wrong_branch(committed_json, tmp_path, capsys):
    port = copy.deepcopy(committed_json)
    case = next(c for c in port["blocks"]["surjection"]["cases"] if c["id"] == "breakpoint_a")
    case["outputs"]["k"]["data"][2] = 0  # u = a exactly taken as the left piece
    code, out, _ = _run(["check-port", _write(tmp_path, "port.json", port)], capsys)
    assert code == 1
    assert any(line.startswith("surjection") and "outputs.k" in line and "1 differ" in line
               and line.endswith("FAIL") for line in out.splitlines()), out


def _rounded_to_float32(jdoc):
    port = copy.deepcopy(jdoc)
    for block in port["blocks"].values():
        for case in block["cases"]:
            for section in ("outputs", "grads"):
                for arr in case[section].values():
                    if arr["dtype"] == "float64":
                        values = np.array([float.fromhex(h) for h in arr["hex"]])
                        with np.errstate(over="ignore"):
                            rounded = values.astype(np.float32).astype(np.float64)
                        arr["dtype"] = "float32"
                        arr["hex"] = [float.hex(float(x)) for x in rounded]
    return port


def test_check_port_float32_rounded_port(committed_json, tmp_path, capsys):
    path = _write(tmp_path, "port32.json", _rounded_to_float32(committed_json))
    code, out, _ = _run(["check-port", path, "--tolerance", "float32"], capsys)
    assert code == 0, out
    assert "PASS" in out and "skipped surjection/breakpoint_a (Float64Only" in out
    code, out, _ = _run(["check-port", path], capsys)  # not at float64 tolerance
    assert code == 1


def _summary(out):
    return out.strip().splitlines()[-1]


def test_check_port_missing_and_partial(committed_json, tmp_path, capsys):
    port = copy.deepcopy(committed_json)
    del port["blocks"]["adam"]
    del port["blocks"]["mlp"]["cases"][0]["grads"]["W1"]
    path = _write(tmp_path, "port.json", port)
    code, out, _ = _run(["check-port", path], capsys)
    assert code == 1
    assert "block adam not provided" in out and "mlp/generic_tanh: grads.W1 not provided" in out
    n_fields = sum(1 for line in out.splitlines() if line.rstrip().endswith(("pass", "FAIL"))
                   and not line.startswith("FAIL"))
    assert _summary(out) == (f"FAIL: 1 block missing; 1 field missing; 0 of {n_fields} fields "
                             f"out of tolerance")
    code, out, _ = _run(["check-port", path, "--partial"], capsys)
    assert code == 0, out
    assert "not provided (partial check): block adam not provided" in out


def test_check_port_shape_mismatch(committed_json, tmp_path, capsys):
    port = copy.deepcopy(committed_json)
    arr = port["blocks"]["slopes"]["cases"][0]["outputs"]["a"]
    arr["shape"], arr["hex"] = [len(arr["hex"]) - 1], arr["hex"][:-1]
    code, out, _ = _run(["check-port", _write(tmp_path, "port.json", port)], capsys)
    assert code == 1 and "slopes/generic: outputs.a has shape" in out
    assert _summary(out).startswith("FAIL: 1 shape mismatch; 0 of ")


def test_check_port_summary_names_a_missing_case(committed_json, tmp_path, capsys):
    """A complete port but for one case: the verdict says so first (not "0 of N
    fields out of tolerance, 1 problems"); with a failing field as well, both."""
    port = copy.deepcopy(committed_json)
    del port["blocks"]["sample_branch"]["cases"][0]
    code, out, _ = _run(["check-port", _write(tmp_path, "port.json", port)], capsys)
    n_fields = sum(len(b["scales"]) + sum(1 for f in b["cases"][0]["outputs"].values()
                                          if f["dtype"] == "int64")
                   for b in committed_json["blocks"].values())
    assert code == 1
    assert "FAIL: sample_branch/generic: case not provided" in out
    assert _summary(out) == f"FAIL: 1 case missing; 0 of {n_fields} fields out of tolerance"
    del port["blocks"]["log_softmax"]["cases"][0]
    port["blocks"]["slopes"]["cases"][0]["outputs"]["a"]["hex"][0] = float.hex(0.5)
    code, out, _ = _run(["check-port", _write(tmp_path, "port2.json", port)], capsys)
    assert _summary(out).startswith(f"FAIL: 2 cases missing; 1 of {n_fields} fields out of "
                                    f"tolerance: slopes outputs.a (case generic[0])")


def test_check_port_non_finite_must_match(committed_json, tmp_path, capsys):
    port = copy.deepcopy(committed_json)
    case = next(c for c in port["blocks"]["log_gating"]["cases"] if c["id"] == "impossible_branch")
    assert case["outputs"]["log_gate"]["hex"][0] == "-inf"
    case["outputs"]["log_gate"]["hex"][0] = float.hex(-1e300)
    code, out, _ = _run(["check-port", _write(tmp_path, "port.json", port)], capsys)
    assert code == 1 and "outputs.log_gate" in out


def test_minimal_result_file_of_golden_md_is_valid(tmp_path, capsys):
    """docs/golden.md §6's minimal example: a partial port of one case, read as is."""
    text = (ROOT / "docs" / "golden.md").read_text(encoding="utf-8")
    start = text.index("<!-- minimal result file -->")
    opening = text.index("```json", start) + len("```json")
    example = text[opening:text.index("```", opening)]
    doc = json.loads(example)
    assert set(doc) == {"schema", "schema_version", "blocks"}
    code, out, err = _run(["check-port", _write(tmp_path, "minimal.json", doc), "--partial"],
                          capsys)
    assert code == 0, out + err
    assert "log_softmax           outputs.log_prob" in out


def test_check_port_refuses_another_schema_version(committed_json, tmp_path, capsys):
    port = copy.deepcopy(committed_json)
    port["schema_version"] = 1
    code, _, err = _run(["check-port", _write(tmp_path, "v1.json", port)], capsys)
    assert code == 2
    assert "schema_version is 1, but this radref reads schema_version 3" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("content,message", [
    ("{ not json", "not valid JSON"),
    ('{"schema": "something-else", "schema_version": 3, "blocks": {}}', "'schema' must be"),
    ('{"schema": "radref-golden", "schema_version": 99, "blocks": {}}', "schema_version is 99"),
    ('{"schema": "radref-golden", "schema_version": 3, "blocks": []}', "'blocks' must be"),
    ('{"schema": "radref-golden", "schema_version": 3, "blocks": {"slopes": {"cases": '
     '[{"id": "generic", "outputs": {"a": {"shape": [2], "dtype": "float64", '
     '"hex": ["0x1p+0", "zz"]}}}]}}}', "hex entry 1"),
    ('{"schema": "radref-golden", "schema_version": 3, "blocks": {"slopes": {"cases": '
     '[{"id": "generic", "outputs": {"a": {"shape": [3], "dtype": "float64", '
     '"hex": ["0x1p+0"]}}}]}}}', "1 values for shape"),
    ('{"schema": "radref-golden", "schema_version": 3, "blocks": {"slopes": {"scales": '
     '{"outputs.a": -1}, "cases": []}}}', "scales"),
    ('[1, 2, 3]', "top level"),
])
def test_check_port_malformed_input(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, out, err = _run(["check-port", str(path)], capsys)
    assert code == 2
    assert message in err and "Traceback" not in err + out


def test_check_port_missing_file(tmp_path, capsys):
    code, _, err = _run(["check-port", str(tmp_path / "nope.json")], capsys)
    assert code == 2 and "no such file" in err
    code, _, err = _run(["check-port", str(GOLDEN_JSON), "--golden", str(tmp_path)], capsys)
    assert code == 2 and "radref-golden.json" in err


def test_cli_golden_writes_files_that_match(tmp_path, capsys):
    out_dir = tmp_path / "golden"
    code, out, _ = _run(["golden", "--out", str(out_dir)], capsys)
    assert code == 0 and "wrote" in out
    # the fresh files against the committed ones, at the float64 tolerances
    code, out, _ = _run(["check-port", str(out_dir / golden.JSON_NAME),
                         "--golden", str(GOLDEN_DIR)], capsys)
    assert code == 0, out
    golden.load_document(out_dir / golden.JSON_NAME)
    with np.load(out_dir / golden.NPZ_NAME, allow_pickle=False) as npz:
        assert "__skeleton__" in npz.files


def test_cli_golden_where(capsys):
    code, out, _ = _run(["golden", "--where"], capsys)
    assert code == 0 and out.strip() == str(GOLDEN_DIR)
    assert (pathlib.Path(out.strip()) / golden.JSON_NAME).is_file()
    with pytest.raises(SystemExit):  # --out and --where exclude each other; one is required
        main(["golden"])
    capsys.readouterr()


# --------------------------------------------------------- vectors as package data

def test_vectors_are_package_data_found_without_the_source_tree():
    """The lookup goes through importlib.resources (the installed package's own
    directory), and pyproject.toml ships exactly the files it finds there."""
    resource = importlib.resources.files("radref.reference.golden").joinpath(golden.VECTORS_DIR)
    assert golden.default_golden_dir() == os.fspath(resource)
    package_dir = pathlib.Path(golden.__file__).resolve().parent
    assert pathlib.Path(golden.default_golden_dir()).resolve() == package_dir / "vectors"
    with open(ROOT / "pyproject.toml", "rb") as f:
        package_data = tomllib.load(f)["tool"]["setuptools"]["package-data"]
    shipped = package_data["radref.reference.golden"]
    assert sorted(shipped) == sorted(f"{golden.VECTORS_DIR}/{name}"
                                     for name in (golden.JSON_NAME, golden.NPZ_NAME))
    for name in shipped:
        assert (package_dir / name).is_file(), name


def test_check_port_after_a_non_editable_install(tmp_path):
    """``pip install .`` (not editable; about 5 s) into a directory, then ``radref
    golden --where`` and ``radref check-port`` from an unrelated working directory."""
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    # numpy comes from this environment (--no-deps); the build runs in pip's isolated
    # build environment, as for a user (this environment's setuptools may be older
    # than pyproject.toml's build requirement)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(ROOT)],
                   check=True, cwd=elsewhere, capture_output=True)
    env = dict(os.environ, PYTHONPATH=str(target))
    where = subprocess.run([sys.executable, "-m", "radref", "golden", "--where"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert pathlib.Path(where).resolve().is_relative_to(target.resolve())
    port = pathlib.Path(where) / golden.JSON_NAME
    result = subprocess.run([sys.executable, "-m", "radref", "check-port", str(port)],
                            cwd=elsewhere, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout and str(target) in result.stdout


# ------------------------------------------------------------ the magnitudes M

def test_gradient_magnitudes_bound_every_gradient(committed):
    """M of a gradient entry is a sum of absolute values of the terms the entry adds
    up, so it is at least the entry's absolute value (the triangle inequality), and
    every case with a loss stores one for every gradient."""
    count = 0
    for name, block in committed["blocks"].items():
        for case in block["cases"]:
            assert set(case["magnitudes"]) == (
                {f"grads.{g}" for g in case["grads"]} |
                {f"outputs.{o}" for o in case["loss_weights"]}), (name, case["id"])
            for g, value in case["grads"].items():
                m = case["magnitudes"][f"grads.{g}"]
                finite = np.isfinite(value)
                assert np.all(m[finite] >= np.abs(value[finite])), (name, case["id"], g)
                count += value.size
    assert count > 1000


def test_gradient_magnitudes_are_sums_over_rows(committed):
    """rad_flow/d2_tail, grads.0.cond.scale (the field a float32 port on an AVX2 CPU
    failed before schema version 3): recomputed here with the flow's own backward
    pass, one row at a time, M is the sum over rows of |row's gradient|, and it is
    much larger than the gradient itself (rows of both signs cancel)."""
    from radref.core.flow import flow_backward
    case = next(c for c in committed["blocks"]["rad_flow"]["cases"] if c["id"] == "d2_tail")
    cfg = case["config"]
    config = FlowConfig(cfg["kind"], cfg["dim"], cfg["n_layers"], cfg["hidden"],
                        cfg["gate_hidden"])
    x, w = case["inputs"]["x"], case["loss_weights"]["log_px"]
    total = 0.0
    for r in range(x.shape[0]):
        _, _, _, cache = flow_forward(x[r:r + 1], case["params"], config)
        _, grads = flow_backward(w[r:r + 1], cache)
        total = total + np.abs(grads["0.cond.scale"])
    stored = case["magnitudes"]["grads.0.cond.scale"]
    np.testing.assert_allclose(stored, total, rtol=0.1)  # stored: rounded up to 2 digits
    assert np.all(stored >= total * (1 - 1e-12))
    assert np.max(stored / np.abs(case["grads"]["0.cond.scale"])) > 5


@pytest.mark.parametrize("block_name,case_id", [("mlp", "generic_tanh"),
                                                ("rad_coupling", "d2_layer0"),
                                                ("rad_flow", "d2_tail")])
def test_output_magnitudes_are_the_componentwise_condition(committed, block_name, case_id):
    """M of an output entry is sum_j |dy/dx_j| |x_j| over every float input and
    parameter: here by central differences in relative perturbations of each input
    (y(x_j (1 + h)) - y(x_j (1 - h))) / 2h, independently of the backward passes."""
    from radref.reference.golden.blocks import BLOCKS
    block = BLOCKS[block_name]
    case = next(c for c in committed["blocks"][block_name]["cases"] if c["id"] == case_id)
    h = 1e-6
    values = dict(case["inputs"], **case["params"])
    names = [k for k in case["grads"]]
    estimate = {o: np.zeros(np.shape(w)) for o, w in case["loss_weights"].items()}
    for name in names:
        for index in np.ndindex(np.shape(values[name])):
            outs = []
            for sign in (1.0, -1.0):
                moved = {k: np.array(v, dtype=np.float64) for k, v in values.items()
                         if k == name}
                moved[name][index] *= 1.0 + sign * h
                inputs = {k: moved.get(k, v) for k, v in case["inputs"].items()}
                params = {k: moved.get(k, v) for k, v in case["params"].items()}
                outs.append(block.forward(inputs, params, case["config"])[0])
            for o in estimate:
                estimate[o] += np.abs((outs[0][o] - outs[1][o]) / (2 * h))
    for o, value in estimate.items():
        stored = case["magnitudes"][f"outputs.{o}"]
        np.testing.assert_allclose(stored, value, rtol=0.11, err_msg=o)
        assert np.all(stored >= value * (1 - 1e-5)), o
