"""docs/tutorial.md shows what ``python validation/tutorial.py`` prints.

The page holds the script's output between markers, written by
``python validation/tutorial.py --update-docs``; these tests run the script
and compare, with a stated comparison for every number (issue 21):

- Steps 1 and 2 compute closed-form quantities to near float64 accuracy and
  print them rounded to a few digits.  A float64 result moves by a few ulps
  from one CPU to another (exp, log and matrix products round differently), so
  the printed value moves by at most **one unit in its last printed digit**
  (when the true value lies next to a rounding boundary of the display).
  Numbers printed in scientific notation below 1e-12 are rounding residuals
  (e.g. ``max |p_Z(f(x)) ... - p_X(x)|``, ``max |x - f^-1(f(x))|``): any value
  below 1e-12 is the same verdict, "zero to working precision". Integers
  (counts) must be equal.
- Step 3 trains a network, and training amplifies rounding without a useful
  bound: on the configuration the page names (NumPy version and SIMD targets,
  BLAS and kernel, step 3's second line) every character must match; on
  another, the numbers before training as in steps 1-2, and after it every
  line with its numbers masked.
"""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "validation" / "tutorial.py"
PAGE = ROOT / "docs" / "tutorial.md"
NUMBER = re.compile(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?")
REGENERATE = "run `python validation/tutorial.py --update-docs` and commit docs/tutorial.md"


def _tutorial_module():
    spec = importlib.util.spec_from_file_location("radref_tutorial_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tutorial():
    return _tutorial_module()


@pytest.fixture(scope="module")
def printed_steps():
    """What the script prints on stdout, one string per step."""
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    steps = [s.rstrip("\n") for s in re.split(r"(?m)^(?=== Step )", result.stdout) if s.strip()]
    assert [s.split(":", 1)[0] for s in steps] == ["== Step 1", "== Step 2", "== Step 3"], \
        result.stdout
    return steps


#: Below this, a number printed in scientific notation is a rounding residual.
RESIDUAL = 1e-12


def _mask_numbers(line):
    return NUMBER.sub("#", line)


def _last_digit_unit(text):
    """One unit in the last printed digit of ``text`` (``"0.1907"`` -> 1e-4)."""
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 10.0 ** (int(exponent or 0) - decimals)


def _numbers_agree(page_text, printed_text):
    """The same verdict for one printed number (module docstring); integers
    (counts: points, folds, steps, parameters) exactly."""
    if not any(c in page_text.lower() for c in ".e"):
        return page_text == printed_text
    page, printed = float(page_text), float(printed_text)
    if "e" in page_text.lower() and abs(page) < RESIDUAL:
        return abs(printed) < RESIDUAL
    return abs(page - printed) <= _last_digit_unit(page_text) * (1 + 1e-9)


def _lines_agree(page_line, printed_line):
    if _mask_numbers(page_line) != _mask_numbers(printed_line):
        return False
    pairs = zip([m.group() for m in NUMBER.finditer(page_line)],
                [m.group() for m in NUMBER.finditer(printed_line)])
    return all(_numbers_agree(a, b) for a, b in pairs)


def test_the_number_comparison_is_one_unit_in_the_last_digit():
    assert _numbers_agree("0.1907", "0.1908") and not _numbers_agree("0.1907", "0.1909")
    assert _numbers_agree("1.000000000000000", "0.999999999999999")
    assert not _numbers_agree("1.000000000000000", "0.999999999999998")
    assert _numbers_agree("8.88e-16", "9.99e-16") and not _numbers_agree("8.88e-16", "2.0e-12")
    assert _numbers_agree("5.16e-07", "5.17e-07") and not _numbers_agree("5.16e-07", "5.18e-07")
    assert _numbers_agree("2001", "2001") and not _numbers_agree("2001", "2002")
    assert not _lines_agree("N = 5 folds", "N = 6 folds")
    assert not _lines_agree("mass of p_X 1.0", "mass of p_Z 1.0")


def test_steps_1_and_2_on_the_page_are_what_the_script_prints(tutorial, printed_steps):
    page = tutorial.page_outputs(PAGE.read_text(encoding="utf-8"))
    assert len(printed_steps) == len(page) == 3
    for n in (0, 1):
        page_lines, printed_lines = page[n].split("\n"), printed_steps[n].split("\n")
        assert len(page_lines) == len(printed_lines), \
            f"step {n + 1} of docs/tutorial.md is stale: {REGENERATE}"
        for a, b in zip(page_lines, printed_lines):
            assert _lines_agree(a, b), (f"step {n + 1} of docs/tutorial.md is stale ({a!r} "
                                        f"printed as {b!r}): {REGENERATE}")


def test_step_3_on_the_page_is_what_the_script_prints(tutorial, printed_steps):
    page = tutorial.page_outputs(PAGE.read_text(encoding="utf-8"))[2].split("\n")
    printed = printed_steps[2].split("\n")
    assert printed[1].startswith("computed with NumPy ")
    assert len(page) == len(printed), f"step 3 of docs/tutorial.md is stale: {REGENERATE}"
    trained = next(i for i, line in enumerate(printed) if "Adam steps" in line)
    # before training: the data, the best achievable value, the model's size
    for i in [0] + list(range(2, trained + 1)):
        assert _lines_agree(page[i], printed[i]), f"step 3, line {i + 1} is stale: {REGENERATE}"
    if page[1] == printed[1]:
        # the configuration the page was computed with: all of it
        assert page == printed, f"step 3 of docs/tutorial.md is stale: {REGENERATE}"
    else:
        # another NumPy or BLAS rounds differently during training: the same
        # lines, with other numbers after training
        assert [_mask_numbers(line) for line in page[trained + 1:]] \
            == [_mask_numbers(line) for line in printed[trained + 1:]], \
            f"step 3 of docs/tutorial.md is stale: {REGENERATE}"


def test_update_docs_writes_between_the_markers_and_nowhere_else(tutorial, tmp_path):
    page = tmp_path / "tutorial.md"
    original = PAGE.read_text(encoding="utf-8")
    page.write_text(original, encoding="utf-8")
    outputs = ["== Step 1\nfirst", "== Step 2\nsecond\nlines", "== Step 3\nthird"]
    tutorial.update_page(outputs, page)
    updated = page.read_text(encoding="utf-8")
    assert tutorial.page_outputs(updated) == outputs
    # writing the page's own blocks back gives the page unchanged
    tutorial.update_page(tutorial.page_outputs(original), page)
    assert page.read_text(encoding="utf-8") == original


def test_a_page_without_markers_is_refused_with_the_markers_named(tutorial, tmp_path):
    page = tmp_path / "tutorial.md"
    page.write_text("# Tutorial\n\n```text\nno markers\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no output block of step 1") as info:
        tutorial.update_page(["a", "b", "c"], page)
    assert tutorial.BEGIN.format(n=1) in str(info.value)
    assert page.read_text(encoding="utf-8") == "# Tutorial\n\n```text\nno markers\n```\n"
