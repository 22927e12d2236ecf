"""Follow README.md as a newcomer would, on a fresh clone in a fresh venv, and
check every documented command's exit status and output.

    python validation/newcomer.py [--repo .] [--keep] [--with-tests] [--python python3]

What it does, in a temporary directory:

1. clones ``--repo`` (its committed ``HEAD``: what a newcomer gets, not the
   working tree);
2. runs the README's first quickstart command as written (a new venv,
   ``pip install ".[plot]"``, ``radref demo``), and checks that the demo
   printed both models' scores and the best achievable value, and wrote its
   figure;
3. runs the README's Python example ("Using it") as a script;
4. runs each line of the README's command-line block, in order, and checks
   that each exits with status 0 and writes the file it names;
5. runs the commands of the "What else is here" table that need no extra
   download beyond the ``plot`` extra and finish in about a minute
   (``radref reproduce --quick``, then ``python validation/paper_figures.py``,
   ``radref golden --where``), each only if the README shows it verbatim;
6. with ``--with-tests``, the second quickstart command (``pip install
   ".[test]"`` and the test suite: ten minutes and more) and the notebooks'
   documented headless run.

Every command is taken from README.md itself, so a README that drifts from
the code fails here.  It prints one line per command (status, seconds, what
was checked) and exits with 1 if any failed.  Needs network access for pip.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

#: what a newcomer's shell has: no venv of ours, no PYTHONPATH
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
#: the table's commands cheap enough to run here, in the order they chain
TABLE_COMMANDS = ("radref reproduce --quick", "python validation/paper_figures.py",
                  "radref golden --where")


def code_blocks(text, language):
    """The bodies of the fenced ``language`` blocks of a Markdown text."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def section(text, heading):
    """The text of a ``## heading`` section, up to the next ``## ``."""
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def command_lines(block):
    """The commands of a bash block: one per line, comments dropped."""
    lines = []
    for line in block.splitlines():
        command = line.split("  #")[0].strip()
        if command and not command.startswith("#"):
            lines.append(command)
    return lines


class Newcomer:
    """Runs commands in the clone with the venv's ``bin`` first on PATH."""

    def __init__(self, clone, venv):
        self.clone, self.venv, self.failures = clone, venv, []
        self.env = dict(CLEAN_ENV, VIRTUAL_ENV=venv,
                        PATH=os.path.join(venv, "bin") + os.pathsep + CLEAN_ENV["PATH"],
                        MPLBACKEND="Agg")

    def run(self, command, checks=(), timeout=1800, stdin=None):
        """Run ``command`` (a shell line) in the clone; ``checks``: ``(what,
        predicate(stdout, stderr))`` pairs.  Records and prints the verdict."""
        began = time.monotonic()
        result = subprocess.run(["bash", "-c", command], cwd=self.clone, env=self.env,
                                capture_output=True, text=True, timeout=timeout, input=stdin)
        seconds = time.monotonic() - began
        problems = [] if result.returncode == 0 else [f"exit status {result.returncode}"]
        for what, predicate in checks:
            if not predicate(result.stdout, result.stderr):
                problems.append(f"not: {what}")
        verdict = "ok  " if not problems else "FAIL"
        print(f"{verdict} {seconds:6.1f} s  {command}")
        if problems:
            tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
            print("       " + "; ".join(problems))
            print("\n".join("       | " + line for line in tail))
            self.failures.append(command)
        return result

    def exists(self, path):
        return os.path.exists(os.path.join(self.clone, path))


def follow(readme, newcomer, with_tests, notebooks_page):
    quickstart = command_lines("\n".join(code_blocks(section(readme, "Quickstart"), "bash")))
    install_demo, install_tests = quickstart[0], quickstart[1]
    # the README's first command creates .venv in the clone: our venv is that one
    newcomer.run(install_demo, [
        ("both models' held-out scores printed",
         lambda out, err: out.count("held-out mean log-likelihood") == 2),
        ("the best achievable value printed", lambda out, err: "best achievable" in out),
        ("the progress lines name the model",
         lambda out, err: "Rad  step" in err and "Real NVP  step" in err),
        ("radref-demo.png written", lambda out, err: newcomer.exists("radref-demo.png"))])

    using = section(readme, "Using it")
    (example,) = code_blocks(using, "python")[:1]
    newcomer.run("python -", [("the example runs", lambda out, err: True)], stdin=example)

    (cli_block,) = code_blocks(using, "bash")[:1]
    for command in command_lines(cli_block):
        outputs = re.findall(r"--out (\S+)", command)
        checks = [(f"{path} written", lambda out, err, p=path: newcomer.exists(p))
                  for path in outputs if path != "-"]
        if "--out -" in command:
            checks.append(("CSV on standard output",
                           lambda out, err: re.match(r"^[-+0-9.e]+,[-+0-9.e]+\n", out)))
        if command.startswith("radref plot "):
            model = command.split()[2]
            checks.append(("the figure written",
                           lambda out, err, m=model: newcomer.exists(m[:-4] + ".png")))
        newcomer.run(command, checks)

    table = section(readme, "What else is here")
    for command in TABLE_COMMANDS:
        if f"`{command}" not in table:
            print(f"FAIL    0.0 s  {command}: no longer in README.md's table; update "
                  f"validation/newcomer.py")
            newcomer.failures.append(command)
            continue
        checks = []
        if command == "radref reproduce --quick":
            checks.append(("the table says it is a smoke test", lambda out, err: "SMOKE TEST" in out))
        if command.startswith("python validation/paper_figures.py"):
            checks.append(("figures written beside the runs",
                           lambda out, err: "figures written to radref-results" in out))
        if command == "radref golden --where":
            checks.append(("a directory printed", lambda out, err: os.path.isdir(out.strip())))
        newcomer.run(command, checks)

    if with_tests:
        headless = re.search(r"`(jupytext [^`]*--execute[^`]*)`", notebooks_page)
        newcomer.run(install_tests, [("the tests passed",
                                      lambda out, err: re.search(r"^\d+ passed", out, re.M))],
                     timeout=5400)
        if headless:
            newcomer.run(headless.group(1), [("the notebook ran", lambda out, err: True)])
        else:
            print("FAIL    0.0 s  the notebooks' headless command: not found in "
                  "docs/notebooks/index.md")
            newcomer.failures.append("notebooks")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", default=".", help="repository to clone (default .)")
    parser.add_argument("--python", default="python3",
                        help="the newcomer's Python (default python3; the README says 3.11)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone")
    parser.add_argument("--with-tests", action="store_true",
                        help="also the test suite and the notebooks (ten minutes and more)")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="radref-newcomer-")
    clone = os.path.join(work, "radref")
    subprocess.run(["git", "clone", "-q", os.path.abspath(args.repo), clone], check=True)
    with open(os.path.join(clone, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(clone, "docs", "notebooks", "index.md")) as f:
        notebooks_page = f.read()
    version = subprocess.run([args.python, "--version"], capture_output=True, text=True)
    print(f"a fresh clone of {os.path.abspath(args.repo)} in {clone}, "
          f"{version.stdout.strip()}")
    # The README's commands say python3 and create .venv: the same venv is
    # on PATH for every later command, as in the newcomer's shell after it.
    newcomer = Newcomer(clone, os.path.join(clone, ".venv"))
    venv_bin, rest = newcomer.env["PATH"].split(os.pathsep, 1)
    newcomer.env["PATH"] = os.pathsep.join([venv_bin, os.path.dirname(shutil.which(args.python)),
                                            rest])
    try:
        follow(readme, newcomer, args.with_tests, notebooks_page)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {clone}")
    print(f"{len(newcomer.failures)} command(s) failed" if newcomer.failures
          else "every command worked")
    return 1 if newcomer.failures else 0


if __name__ == "__main__":
    sys.exit(main())
