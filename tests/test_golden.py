"""The golden reference vectors (validation/golden/) and the port checker.

- The committed vectors are what radref computes now: every case is
  recomputed from its *stored* inputs and must agree to 1e-12 (relative,
  outputs and gradients alike; integers exactly), so that any change in the
  numerics is a conscious, versioned decision (regenerate with
  ``radref golden --out validation/golden`` and say so in the CHANGELOG).
- The checksum holds; the JSON and the .npz hold the same arrays bit for bit.
- ``radref check-port`` passes the golden file itself, fails a port with one
  flipped gradient sign (naming the block and field), passes a float32-rounded
  port at float32 tolerance, and rejects malformed files with exit status 2.
"""
import copy
import json
import pathlib
import zipfile

import numpy as np
import pytest

from radref.reference import golden
from radref.user.cli import main

GOLDEN_DIR = pathlib.Path(__file__).resolve().parents[1] / "validation" / "golden"
GOLDEN_JSON = GOLDEN_DIR / golden.JSON_NAME
GOLDEN_NPZ = GOLDEN_DIR / golden.NPZ_NAME

#: Agreement required between the committed vectors and radref now.
REGEN_TOL = 1e-12


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


def _compare_arrays(new, old, label, tol=REGEN_TOL):
    assert set(new) == set(old), f"{label}: fields {sorted(new)} vs {sorted(old)}"
    worst = 0.0
    for name in old:
        a, b = np.asarray(new[name]), np.asarray(old[name])
        assert a.shape == b.shape, f"{label}.{name}: shape {a.shape} vs {b.shape}"
        if b.dtype.kind in "iu":
            np.testing.assert_array_equal(a, b, err_msg=f"{label}.{name}")
            continue
        _, rel = golden.error_relative_to_golden_max(a, b)
        assert rel <= tol, f"{label}.{name}: relative error {rel:.3e} > {tol:.0e}"
        worst = max(worst, rel)
    return worst


# ------------------------------------------------------------ the vectors

def test_checksum_and_header(committed_json):
    assert committed_json["schema"] == golden.SCHEMA
    assert committed_json["schema_version"] == golden.SCHEMA_VERSION
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
            _compare_arrays(new["outputs"], old["outputs"], label + " outputs")
            _compare_arrays(new["grads"], old["grads"], label + " grads")


def test_regenerated_document_agrees(committed, regenerated):
    """Generation from the seeds gives the same cases; on the NumPy build that wrote
    the files (same major.minor) also bit-identical inputs."""
    same_numpy = (np.__version__.split(".")[:2] ==
                  str(committed["numpy_version"]).split(".")[:2])
    assert list(regenerated["blocks"]) == list(committed["blocks"])
    for name, block in committed["blocks"].items():
        new_cases = regenerated["blocks"][name]["cases"]
        assert [c["id"] for c in new_cases] == [c["id"] for c in block["cases"]]
        for old, new in zip(block["cases"], new_cases):
            label = f"{name}/{old['id']}"
            for key in ("comment", "flags", "config"):
                assert new[key] == old[key], f"{label}: {key} changed"
            if not same_numpy:
                continue
            for section in ("inputs", "params", "loss_weights"):
                assert set(new[section]) == set(old[section]), label
                for k in old[section]:
                    np.testing.assert_array_equal(new[section][k], old[section][k],
                                                  err_msg=f"{label} {section}.{k}")
            _compare_arrays(new["outputs"], old["outputs"], label + " outputs")
            _compare_arrays(new["grads"], old["grads"], label + " grads")


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
    """docs/golden.md: a breakpoint belongs to the piece on its right inside [-1, 1];
    rows are [p - 1e-9, p - 1 ulp, p, p + 1 ulp, p + 1e-9]."""
    cases = {c["id"]: c for c in committed["blocks"]["surjection"]["cases"]}
    expected_k = {"breakpoint_minus_one": [0, 0, 0, 0, 0], "breakpoint_a": [0, 0, 1, 1, 1],
                  "breakpoint_b": [1, 1, 2, 2, 2], "breakpoint_plus_one": [2, 2, 2, 2, 2]}
    slope_field = {"breakpoint_minus_one": ["log_alpha_minus"] * 2 + ["log_alpha_1"] * 3,
                   "breakpoint_plus_one": ["log_alpha_3"] * 3 + ["log_alpha_plus"] * 2}
    for cid, k in expected_k.items():
        case = cases[cid]
        np.testing.assert_array_equal(case["outputs"]["k"], k)
        for row, field in enumerate(slope_field.get(cid, [])):
            assert case["outputs"]["log_slope"][row] == case["inputs"][field][row], (cid, row)
        v, u = case["outputs"]["v"], case["inputs"]["u"]
        # |u| <= 1 exactly when |v| <= 1 (the clip rule)
        np.testing.assert_array_equal(np.abs(u) <= 1.0, np.abs(v) <= 1.0)


def _loss(block, case, inputs=None, params=None):
    outputs, _ = golden.compute(block, inputs or case["inputs"], params or case["params"],
                                case["config"], {})
    return sum(float(np.sum(w * outputs[o])) for o, w in case["loss_weights"].items())


@pytest.mark.parametrize("block,cid", [
    ("log_softmax", "generic"), ("slopes", "generic"), ("surjection", "generic"),
    ("log_gating", "generic"), ("mlp", "generic_tanh"), ("rad_coupling", "d5_layer1"),
    ("affine_coupling", "d5_layer0"), ("rad_flow", "d2_generic"), ("realnvp_flow", "d5_generic"),
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
    assert golden.default_golden_dir() is not None
    code, out, _ = _run(["check-port", str(GOLDEN_JSON)], capsys)
    assert code == 0 and "PASS" in out


def test_check_port_fails_a_flipped_gradient_sign(committed_json, tmp_path, capsys):
    port = copy.deepcopy(committed_json)
    case = next(c for c in port["blocks"]["rad_flow"]["cases"] if c["id"] == "d2_generic")
    field = case["grads"]["3.gate.W2"]
    values = [float.fromhex(h) for h in field["hex"]]
    i = int(np.argmax(np.abs(values)))
    field["hex"][i] = float.hex(-values[i])
    code, out, _ = _run(["check-port", _write(tmp_path, "port.json", port),
                         "--golden", str(GOLDEN_DIR)], capsys)
    assert code == 1
    bad = [line for line in out.splitlines() if line.rstrip().endswith("FAIL")]
    assert len(bad) == 1 and bad[0].split()[:2] == ["rad_flow", "grads.3.gate.W2"], out
    assert "d2_generic" in bad[0]
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


def test_check_port_missing_and_partial(committed_json, tmp_path, capsys):
    port = copy.deepcopy(committed_json)
    del port["blocks"]["adam"]
    del port["blocks"]["mlp"]["cases"][0]["grads"]["W1"]
    path = _write(tmp_path, "port.json", port)
    code, out, _ = _run(["check-port", path], capsys)
    assert code == 1
    assert "block adam not provided" in out and "mlp/generic_tanh: grads.W1 not provided" in out
    code, out, _ = _run(["check-port", path, "--partial"], capsys)
    assert code == 0, out
    assert "not provided (partial check): block adam not provided" in out


def test_check_port_shape_mismatch(committed_json, tmp_path, capsys):
    port = copy.deepcopy(committed_json)
    arr = port["blocks"]["slopes"]["cases"][0]["outputs"]["a"]
    arr["shape"], arr["hex"] = [len(arr["hex"]) - 1], arr["hex"][:-1]
    code, out, _ = _run(["check-port", _write(tmp_path, "port.json", port)], capsys)
    assert code == 1 and "slopes/generic: outputs.a has shape" in out


def test_check_port_non_finite_must_match(committed_json, tmp_path, capsys):
    port = copy.deepcopy(committed_json)
    case = next(c for c in port["blocks"]["log_gating"]["cases"] if c["id"] == "impossible_branch")
    assert case["outputs"]["log_gate"]["hex"][0] == "-inf"
    case["outputs"]["log_gate"]["hex"][0] = float.hex(-1e300)
    code, out, _ = _run(["check-port", _write(tmp_path, "port.json", port)], capsys)
    assert code == 1 and "outputs.log_gate" in out


@pytest.mark.parametrize("content,message", [
    ("{ not json", "not valid JSON"),
    ('{"schema": "something-else", "schema_version": 1, "blocks": {}}', "'schema' must be"),
    ('{"schema": "radref-golden", "schema_version": 99, "blocks": {}}', "schema_version"),
    ('{"schema": "radref-golden", "schema_version": 1, "blocks": []}', "'blocks' must be"),
    ('{"schema": "radref-golden", "schema_version": 1, "blocks": {"slopes": {"cases": '
     '[{"id": "generic", "outputs": {"a": {"shape": [2], "dtype": "float64", '
     '"hex": ["0x1p+0", "zz"]}}}]}}}', "hex entry 1"),
    ('{"schema": "radref-golden", "schema_version": 1, "blocks": {"slopes": {"cases": '
     '[{"id": "generic", "outputs": {"a": {"shape": [3], "dtype": "float64", '
     '"hex": ["0x1p+0"]}}}]}}}', "1 values for shape"),
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
