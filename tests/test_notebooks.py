"""The notebooks: the two ways docs/notebooks/index.md gives to run them
(JupyterLab, and jupytext headless) work as written there; the student
version of the exercises is the one written from the instructor version, it
holds no solution, and its check cells accept a right answer and stop at a
wrong one. (test_site.py runs every notebook in full too, as part of the site
build.)
"""
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import jupytext
import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "docs" / "notebooks"
NAMES = ("tutorial", "theorem1", "exercises", "exercises-instructor", "port")


def _documented(program):
    """The command of docs/notebooks/index.md that starts with ``program``, as
    words: the tests run what the page says."""
    page = (NOTEBOOKS / "index.md").read_text(encoding="utf-8")
    lines = [line.strip() for line in page.splitlines() if line.strip().startswith(program + " ")]
    assert len(lines) == 1, f"docs/notebooks/index.md: one {program} command expected: {lines}"
    return shlex.split(lines[0])


def _environment(tmp_path):
    """The environment of a documented command: this interpreter's scripts
    first on the PATH (as in an activated virtual environment), Jupyter's
    per-user files in ``tmp_path``, not in the home folder."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for variable, folder in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                             ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("IPYTHONDIR", "ipython")):
        env[variable] = str(tmp_path / folder)
    return env


def test_the_documented_headless_command_runs_every_notebook(tmp_path):
    command = _documented("jupytext")
    assert command == ["jupytext", "--to", "ipynb", "--execute", "docs/notebooks/tutorial.md"]
    # A copy of docs/notebooks/ in a folder laid out as the repository (tests/
    # and pyproject.toml linked, for the instructor notebook's run of the
    # exercise tests): the command writes its .ipynb files there, and never
    # over a notebook someone converted in the working tree.
    tree = tmp_path / "repository"
    (tree / "docs" / "notebooks").mkdir(parents=True)
    for name in NAMES:
        (tree / "docs" / "notebooks" / f"{name}.md").write_bytes(
            (NOTEBOOKS / f"{name}.md").read_bytes())
    for linked in ("tests", "pyproject.toml"):
        (tree / linked).symlink_to(ROOT / linked)
    before = sorted(NOTEBOOKS.iterdir())
    # the page's command, with all five notebooks named ("several notebooks can
    # be named in one command")
    result = subprocess.run(command[:-1] + [f"docs/notebooks/{name}.md" for name in NAMES],
                            cwd=tree, env=_environment(tmp_path), capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-6000:]
    assert sorted(NOTEBOOKS.iterdir()) == before  # nothing written into the working tree
    printed = {}
    for name in NAMES:
        notebook = nbformat.read(tree / "docs" / "notebooks" / f"{name}.ipynb", as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert code and all(cell.execution_count for cell in code), name  # every cell ran
        outputs = [output for cell in code for output in cell.outputs]
        assert outputs, name
        assert not [output for output in outputs if output.output_type == "error"], name
        printed[name] = "".join(output.get("text", "") for output in outputs)
    assert "test mean log-likelihood" in printed["tutorial"]
    assert re.search(r"\b10 passed\b", printed["exercises-instructor"])
    assert "exercise 10: correct" in printed["exercises-instructor"]
    assert "exercise 1: not answered yet" in printed["exercises"]
    assert "PASS: 3 fields" in printed["port"]
    figures = [output for cell in nbformat.read(tree / "docs" / "notebooks" / "theorem1.ipynb",
                                                as_version=4).cells
               if cell.cell_type == "code" for output in cell.outputs
               if "image/png" in output.get("data", {})]
    assert len(figures) >= 2


def _request(base, token, path, method="GET", body=None):
    request = urllib.request.Request(
        base + path, method=method, headers={"Authorization": f"token {token}"},
        data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        text = response.read().decode()
    return text if not text or text[0] not in "[{" else json.loads(text)


def _execute(base, token, kernel_id, code):
    """Run ``code`` in a kernel of the server over its websocket, as JupyterLab
    does; what the cell printed."""
    import websocket  # websocket-client, which jupyter_server itself requires

    url = base.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels?token={token}"
    msg_id = uuid.uuid4().hex
    channel = websocket.create_connection(url, timeout=120)
    try:
        channel.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                       "session": uuid.uuid4().hex, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False}}))
        printed, status = [], None
        while status is None:
            message = json.loads(channel.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                printed.append(message["content"]["text"])
            elif message["msg_type"] == "error":
                raise AssertionError("\n".join(message["content"]["traceback"]))
            elif message["msg_type"] == "execute_reply":
                status = message["content"]["status"]
        assert status == "ok"
        return "".join(printed)
    finally:
        channel.close()


def test_the_documented_jupyterlab_command_opens_the_notebooks(tmp_path):
    command = _documented("jupyter")
    assert command == ["jupyter", "lab", "docs/notebooks"]
    token = uuid.uuid4().hex
    # as documented, plus what a test needs: no browser, a free port, a known
    # token, and (CI runs as root) Jupyter's consent to run as root
    extra = ["--no-browser", "--port=0", f"--IdentityProvider.token={token}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        extra.append("--allow-root")
    log = tmp_path / "jupyter-lab.log"
    with open(log, "w", encoding="utf-8") as stream:
        server = subprocess.Popen(command + extra, cwd=ROOT, env=_environment(tmp_path),
                                  stdout=stream, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (match := re.search(r"http://127\.0\.0\.1:(\d+)/lab", log.read_text())):
            assert server.poll() is None, f"jupyter lab stopped:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"jupyter lab did not start:\n{log.read_text()}"
            time.sleep(0.2)
        base = f"http://127.0.0.1:{match.group(1)}/"
        # the front end, with jupytext's extension (which adds Open With → Notebook
        # for the .md files)
        assert "jupyterlab-jupytext" in _request(base, token, "lab")
        # the server serves the folder, and reads each .md as a notebook
        listing = {item["name"]: item["type"] for item in _request(base, token, "api/contents/")["content"]}
        for name in NAMES:
            assert listing.get(f"{name}.md") == "notebook", listing
            notebook = _request(base, token, f"api/contents/{name}.md?type=notebook&content=1")
            assert notebook["type"] == "notebook"
            assert sum(cell["cell_type"] == "code" for cell in notebook["content"]["cells"]) >= 3
        # and a notebook opened there runs, in its folder, on a kernel with radref
        session = _request(base, token, "api/sessions", "POST", {
            "path": "tutorial.md", "name": "tutorial.md", "type": "notebook",
            "kernel": {"name": "python3"}})
        try:
            printed = _execute(base, token, session["kernel"]["id"],
                               "import os, matplotlib, radref\n"
                               "print(radref.__version__, os.getcwd())")
        finally:
            _request(base, token, f"api/sessions/{session['id']}", "DELETE")
        import radref
        assert printed.split() == [radref.__version__, str(NOTEBOOKS)]
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


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


def test_the_headless_runs_output_is_not_a_second_source_for_the_site():
    # The documented headless run writes docs/notebooks/NAME.ipynb beside
    # NAME.md; a site built afterwards must not see two files for one
    # document (Sphinx: "multiple files found for the document").
    import ast
    from sphinx.util.matching import Matcher
    tree = ast.parse((ROOT / "docs" / "conf.py").read_text(encoding="utf-8"))
    patterns = next(ast.literal_eval(node.value) for node in ast.walk(tree)
                    if isinstance(node, ast.Assign)
                    and any(getattr(t, "id", None) == "exclude_patterns" for t in node.targets))
    excluded = Matcher(patterns)
    for name in ("tutorial", "theorem1", "exercises", "exercises-instructor", "port"):
        assert excluded(f"notebooks/{name}.ipynb"), name
        assert not excluded(f"notebooks/{name}.md"), name
