"""Write the student version of the exercises notebook from the instructor version.

    python docs/notebooks/make_student_version.py          # write docs/notebooks/exercises.md
    python docs/notebooks/make_student_version.py --check  # exit 1 if it is out of date

The instructor version, exercises-instructor.md, is the one source. In the
student version

- a code cell tagged ``solution`` keeps its leading comment lines (what the
  answer is) and becomes ``name = ...`` for every name it defines;
- a Markdown cell tagged ``solution`` (the worked solution) and any cell tagged
  ``instructor-only`` are left out;
- the instructor's introduction gives way to the student one below.

The check cells are the same in both versions; they report an answer left
as ``...`` as not answered yet. tests/test_notebooks.py runs ``--check``'s
comparison.
"""
import argparse
import ast
import sys
from pathlib import Path

import jupytext
import nbformat

HERE = Path(__file__).resolve().parent
INSTRUCTOR = HERE / "exercises-instructor.md"
STUDENT = HERE / "exercises.md"
FORMAT = "md:myst"

STUDENT_INTRO = """\
# Exercises

The ten [classroom exercises](../exercises.md) on the Rad surjection,
its gating and Theorem 1, as a notebook. Each exercise has a cell for your
answer, holding `...` until you replace it, and a cell that checks the
answer against radref: run it after answering. An answer still `...` is
reported as not answered yet; a wrong one stops with the difference.

This notebook is written from the instructor version, which holds the
solutions, by `python docs/notebooks/make_student_version.py`."""


def defined_names(source):
    """Names a cell defines at its top level, in order (assignments, functions, classes)."""
    names = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            targets = [ast.Name(node.name)]
        elif isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name) and name.id not in names:
                    names.append(name.id)
    if not names:
        raise ValueError(f"a solution cell that defines no name:\n{source}")
    return names


def answer_cell(source):
    """The student's empty answer cell for a solution cell."""
    comments = []
    for line in source.splitlines():
        if not line.startswith("#"):
            break
        comments.append(line)
    placeholders = [f"{name} = ...  # your answer" for name in defined_names(source)]
    return "\n".join(comments + placeholders)


def student_notebook(instructor):
    """The student version of the notebook ``instructor`` (a new notebook)."""
    cells = [nbformat.v4.new_markdown_cell(STUDENT_INTRO)]
    for cell in instructor.cells:
        tags = cell.metadata.get("tags", [])
        if "instructor-only" in tags:
            continue
        if "solution" in tags:
            if cell.cell_type == "code":
                cells.append(nbformat.v4.new_code_cell(answer_cell(cell.source)))
            continue
        new_cell = (nbformat.v4.new_code_cell if cell.cell_type == "code"
                    else nbformat.v4.new_markdown_cell)
        cells.append(new_cell(cell.source, metadata=dict(cell.metadata)))
    return nbformat.v4.new_notebook(cells=cells, metadata=instructor.metadata)


def student_text():
    """The text of the student version, as written to exercises.md (without the
    version stamp jupytext adds, so that a new jupytext does not change it)."""
    text = jupytext.writes(student_notebook(jupytext.read(INSTRUCTOR)), fmt=FORMAT)
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.lstrip().startswith("jupytext_version:"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if exercises.md is not the generated version")
    args = parser.parse_args(argv)
    text = student_text()
    if args.check:
        if STUDENT.read_text(encoding="utf-8") != text:
            print(f"{STUDENT} is out of date: run python docs/notebooks/make_student_version.py",
                  file=sys.stderr)
            return 1
        return 0
    STUDENT.write_text(text, encoding="utf-8")
    print(f"wrote {STUDENT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
