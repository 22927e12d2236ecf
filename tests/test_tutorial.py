"""docs/tutorial.md shows what ``python validation/tutorial.py`` prints.

The page holds the script's output between markers, written by
``python validation/tutorial.py --update-docs``; these tests run the script
and compare. Step 3 trains a network, and training amplifies rounding: with
another BLAS kernel or NumPy (named on step 3's second line) the numbers
printed after the training line differ. On the configuration the page names,
every character must match; on another, every line must match with those
numbers masked, and every other line exactly.
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


def _mask_numbers(line):
    return NUMBER.sub("#", line)


def test_steps_1_and_2_on_the_page_are_what_the_script_prints(tutorial, printed_steps):
    page = tutorial.page_outputs(PAGE.read_text(encoding="utf-8"))
    assert len(printed_steps) == len(page) == 3
    for n in (0, 1):
        assert page[n] == printed_steps[n], f"step {n + 1} of docs/tutorial.md is stale: {REGENERATE}"


def test_step_3_on_the_page_is_what_the_script_prints(tutorial, printed_steps):
    page = tutorial.page_outputs(PAGE.read_text(encoding="utf-8"))[2].split("\n")
    printed = printed_steps[2].split("\n")
    assert printed[1].startswith("computed with NumPy ")
    assert len(page) == len(printed), f"step 3 of docs/tutorial.md is stale: {REGENERATE}"
    trained = next(i for i, line in enumerate(printed) if "Adam steps" in line)
    # before training: the data, the best achievable value, the model's size
    for i in [0] + list(range(2, trained + 1)):
        assert page[i] == printed[i], f"step 3, line {i + 1} is stale: {REGENERATE}"
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
