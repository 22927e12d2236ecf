"""radref's float64 forward errors stay within the high-precision certificate.

validation/certificate.py (mpmath, 50 digits) stored reference values of the
forward outputs of the golden cases as decimal strings in
validation/certificate.json, with a bound per block on the error in mixed
ulps, |x - e| / ulp(max(|e|, 1)).  This test recomputes radref's outputs for
the same cases and checks them against the stored references with exact
decimal arithmetic: no mpmath needed.
"""
import decimal
import json
import math
import pathlib

import numpy as np
import pytest

from radref.reference import golden

ROOT = pathlib.Path(__file__).resolve().parents[1]
CERTIFICATE = ROOT / "validation" / "certificate.json"
GOLDEN_JSON = pathlib.Path(golden.default_golden_dir()) / golden.JSON_NAME


@pytest.fixture(scope="module")
def certificate():
    with open(CERTIFICATE, encoding="ascii") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def golden_doc():
    return golden.load_document(GOLDEN_JSON)


def mixed_ulps(x, reference):
    """|x - e| / ulp(max(|e|, 1)) with e the decimal string, computed exactly."""
    if reference in ("inf", "-inf"):
        return 0.0 if x == float(reference) else math.inf
    with decimal.localcontext() as ctx:
        ctx.prec = 80
        e = decimal.Decimal(reference)
        diff = abs(decimal.Decimal(float(x)) - e)  # Decimal(float) is exact
    return float(diff) / float(np.spacing(max(abs(float(e)), 1.0)))


def test_certificate_is_for_the_committed_golden_inputs(certificate, golden_doc):
    digest = golden.inputs_digest(golden_doc, list(certificate["blocks"]))
    assert digest == certificate["golden_inputs_sha256"], (
        "the golden inputs changed: rerun python validation/certificate.py")
    assert certificate["working_digits"] >= 30 and certificate["stored_digits"] >= 30


def test_no_branch_mismatch_with_the_exact_computation(certificate):
    for name, block in certificate["blocks"].items():
        assert block["k_mismatches"] == 0, name


@pytest.mark.parametrize("block", ["log_softmax", "slopes", "surjection", "log_gating",
                                   "gating_probabilities", "rad_flow", "realnvp_flow"])
def test_float64_errors_within_the_stated_bound(certificate, golden_doc, block):
    entry = certificate["blocks"][block]
    bound = entry["bound_mixed_ulps"]
    cases = {c["id"]: c for c in golden_doc["blocks"][block]["cases"]}
    assert [c["id"] for c in entry["cases"]] == list(cases), "rerun validation/certificate.py"
    for c_entry in entry["cases"]:
        case = cases[c_entry["id"]]
        outputs, _ = golden.compute(block, case["inputs"], case["params"], case["config"], {})
        for field, f in c_entry["fields"].items():
            x = np.asarray(outputs[field], dtype=np.float64)
            assert list(x.shape) == f["shape"], (block, c_entry["id"], field)
            errs = [mixed_ulps(xi, ref) for xi, ref in zip(x.ravel(), f["reference"])]
            err = max(errs)
            assert err <= bound, (f"{block}/{c_entry['id']}/{field}: {err:.2f} mixed ulps "
                                  f"> bound {bound}")


def test_reference_values_have_enough_digits(certificate):
    f = certificate["blocks"]["rad_flow"]["cases"][0]["fields"]["log_px"]
    digits = f["reference"][0].lstrip("-").replace(".", "").split("e")[0].lstrip("0")
    assert len(digits) >= 30


def test_mixed_ulps_measure():
    assert mixed_ulps(1.0, "1") == 0.0
    assert mixed_ulps(1.0, "1.0000000000000002220446049250313080847263336181640625") == 1.0
    assert mixed_ulps(0.0, "1e-26") == pytest.approx(1e-26 / 2.0**-52)  # absolute below 1
    assert mixed_ulps(1024.0, "1024.5") == pytest.approx(0.5 / 2.0**-42)  # relative above 1
    assert mixed_ulps(-math.inf, "-inf") == 0.0 and mixed_ulps(0.0, "-inf") == math.inf
