"""The exercise notebooks: the student version is the one written from the
instructor version, it holds no solution, and its check cells accept a right
answer and stop at a wrong one. (test_site.py runs every notebook in full, as
part of the site build.)
"""
import importlib.util
from pathlib import Path

import jupytext
import nbclient
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "docs" / "notebooks"


@pytest.fixture(scope="module")
def maker():
    spec = importlib.util.spec_from_file_location("make_student_version",
                                                  NOTEBOOKS / "make_student_version.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_student_version_is_the_generated_one(maker):
    assert (NOTEBOOKS / "exercises.md").read_text(encoding="utf-8") == maker.student_text(), \
        "docs/notebooks/exercises.md is stale: run python docs/notebooks/make_student_version.py"
    assert maker.main(["--check"]) == 0


def test_solutions_become_empty_answers_and_instructor_cells_go(maker):
    instructor = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# for the instructor", metadata={"tags": ["instructor-only"]}),
        nbformat.v4.new_markdown_cell("## Exercise 1\nCompute x and f."),
        nbformat.v4.new_markdown_cell("**Solution.** x = 2", metadata={"tags": ["solution"]}),
        nbformat.v4.new_code_cell("# x, then a function f\n# of y\nx = 1 + 1\n\n\ndef f(y):\n"
                                  "    return y\n", metadata={"tags": ["solution"]}),
        nbformat.v4.new_code_cell("check(1, x, 2)"),
        nbformat.v4.new_code_cell("run_the_tests()", metadata={"tags": ["instructor-only"]}),
    ])
    student = maker.student_notebook(instructor)
    sources = [cell.source for cell in student.cells]
    assert sources == [maker.STUDENT_INTRO, "## Exercise 1\nCompute x and f.",
                       "# x, then a function f\n# of y\nx = ...  # your answer\n"
                       "f = ...  # your answer",
                       "check(1, x, 2)"]
    with pytest.raises(ValueError, match="defines no name"):
        maker.answer_cell("print('no answer here')")


def test_the_student_version_holds_no_solution(maker):
    instructor = jupytext.read(NOTEBOOKS / "exercises-instructor.md")
    student = jupytext.read(NOTEBOOKS / "exercises.md")
    solutions = [cell for cell in instructor.cells if "solution" in cell.metadata.get("tags", [])]
    assert len([c for c in solutions if c.cell_type == "code"]) == 10  # one per exercise
    student_text = "\n".join(cell.source for cell in student.cells)
    for cell in solutions:
        body = [line for line in cell.source.splitlines()
                if line.strip() and not line.startswith("#")]
        assert not any(line in student_text for line in body if len(line) > 12), cell.source
    assert student_text.count("= ...  # your answer") == sum(
        len(maker.defined_names(c.source)) for c in solutions if c.cell_type == "code")


def test_a_right_answer_passes_and_a_wrong_one_stops_the_student_notebook():
    notebook = jupytext.read(NOTEBOOKS / "exercises.md")
    answers = [cell for cell in notebook.cells if "# your answer" in cell.source]
    # exercise 1 answered right, exercise 2 wrong (a and b swapped)
    answers[0].source = "alphas = [13 / 5, 13 / 3, 26 / 15, 26 / 5, 39 / 25]"
    answers[1].source = "a = 8 / 13\nb = -7 / 13"
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    with pytest.raises(nbclient.exceptions.CellExecutionError,
                       match="exercise 2: not what radref computes"):
        client.execute()
    printed = "".join(output.get("text", "") for cell in notebook.cells
                      if cell.cell_type == "code" for output in cell.get("outputs", []))
    assert "exercise 1: correct" in printed
