"""What the commands of ``radref`` share: the user error (:class:`CLIError`),
the checks of options that are not hyperparameters (``-n``, seeds of data
draws), reading a model or points named by an option, and writing outputs
with errors that name the option.

User errors print one line, ``radref: error: <flag> <file>: <what is wrong>``.
"""
import argparse
import contextlib
import io
import os
import sys

from radref.checks import effective_n_jobs
from radref.training.checkpoint import (CheckpointError, DamagedCheckpointError,
                                        UnreadableCheckpointError)
from radref.user.datafiles import STDIO, exists_message, read_bytes, read_points
from radref.user.estimators import load_model
from radref.user.options import OptionError, check_option

POINT_FILES = ".npy, .csv, .tsv or .txt (header line optional), or - for standard input"
OUTPUT_FILES = ".npy, .csv, .tsv or .txt, or - for standard output (CSV)"
#: points drawn from a built-in problem when -n is not given
DEFAULT_POINTS = 10_000
#: status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it)
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A user error: printed without a traceback, exit status 2."""


# ---------------------------------------------------------------- the help

class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that an ``examples:`` block (the epilog
    of :func:`examples`) keeps its lines: a command line must not be rewrapped."""

    def _fill_text(self, text, width, indent):
        if text.startswith("examples:\n"):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def examples(*pairs):
    """The epilog of a command's help: ``(command line, what it does)``
    pairs, each command on its own line with its comment under it."""
    lines = ["examples:"]
    for command, comment in pairs:
        lines += [f"  {command}", f"      {comment}"]
    return "\n".join(lines)


def add_command(sub, name, help, description, example_pairs):
    """A subcommand's parser, with its description, its examples and the
    formatter that keeps them."""
    return sub.add_parser(name, help=help, description=description,
                          epilog=examples(*example_pairs), formatter_class=HelpFormatter)


class CommandParser(argparse.ArgumentParser):
    """The parser of one subcommand (``parser_class`` of ``add_subparsers``):
    argparse's, except that a file given without its option (``radref train
    moons.csv``) is answered with the command line that works, also when a
    required option is missing because of it."""

    def parse_known_args(self, args=None, namespace=None):
        self._words = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message):
        words = getattr(self, "_words", None)
        if words is not None and message.startswith("the following arguments are required"):
            stray = self._stray_words(words)
            hint = stray and file_hint(self, stray, words)
            if hint:
                message = f"{message}; {hint}"
        super().error(message)

    def unrecognized(self, stray):
        """Exit with argparse's message about the ``stray`` words, and a hint."""
        hint = file_hint(self, stray, self._words)
        self.error(f"unrecognized arguments: {' '.join(stray)}" + (f"; {hint}" if hint else ""))

    def _stray_words(self, words):
        """The words a parse with no option required leaves unrecognised."""
        required = [a for a in self._actions if a.required]
        groups = [g for g in self._mutually_exclusive_groups if g.required]
        for item in required + groups:
            item.required = False
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                _, stray = argparse.ArgumentParser.parse_known_args(self, words)
        except SystemExit:  # another error: argparse's own message stands
            stray = []
        finally:
            for item in required + groups:
                item.required = True
        return stray


def file_hint(parser, stray, words):
    """For the files among the ``stray`` words of a command's ``words`` (the
    command's arguments), the options to give them with, and the corrected
    command line; ``None`` when no stray word looks like a file."""
    options = {s for action in parser._actions for s in action.option_strings}
    fixed, given = list(words), []
    for word in stray:
        if word.startswith("-") or not (os.path.exists(word) or "." in word):
            continue
        if word.endswith(".npz") and "--model" in options and "--model" not in fixed:
            option = "--model"
        elif ("--data" in options and "--data" not in fixed
              and not word.endswith((".npz", ".png"))):
            option = "--data"
        else:
            continue
        at = fixed.index(word)
        fixed[at:at + 1] = [option, word]
        given.append(f"{option} {word}")
    if not given:
        return None
    return (f"a file is given as the value of its option ({', '.join(given)}), as in: "
            f"{' '.join([parser.prog] + fixed)}")


# ------------------------------------------------------------ checking options

def check_seed(seed, option="--seed"):
    if seed < 0:
        raise CLIError(f"{option} must be >= 0, got {seed}")
    return seed


def check_positive(value, option):
    if value is not None and value < 1:
        raise CLIError(f"{option} must be >= 1, got {value}")
    return value


def check_jobs(value, option="--jobs"):
    """``--jobs``: scikit-learn's ``n_jobs``, checked against this machine's CPUs."""
    try:
        effective_n_jobs(option, value)
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    return value


def add_jobs_argument(parser, what):
    """``--jobs N``: threads for ``what`` (the model's ``n_jobs``)."""
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help=f"threads {what}: chunks of points in parallel, the results bit "
                             f"for bit those of one thread (-1: every CPU; -2: all but one) "
                             f"(default 1)")


def check_hyperparameter(name, value):
    """An option of the table of hyperparameters, checked by the table."""
    try:
        return check_option(name, value)
    except OptionError as exc:
        raise CLIError(str(exc)) from None


def need_matplotlib(option):
    """Fail before any training if a figure is asked for and matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CLIError(f"{option} needs matplotlib, which is not installed: pip install "
                       f"matplotlib (in radref's source tree: pip install \".[plot]\")") from None


def add_overwrite_argument(parser, flag="--out"):
    """``--overwrite``: the one way to let a command replace an existing file."""
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace {flag} if it exists (by default an existing file is "
                             f"kept and the command stops before any work)")


def say(message, to_stderr=False):
    """Progress and summaries: on stderr when stdout carries data (``--out -``)."""
    print(message, file=sys.stderr if to_stderr else sys.stdout)


# ------------------------------------------------------------------- models

def read_model(flag, path):
    """A radref model from ``path``, or a CLIError naming ``flag`` and ``path``."""
    raw = read_bytes(flag, path)[:8]
    if raw.startswith(b"\x93NUMPY"):
        raise CLIError(f"{flag} {path}: a NumPy array (.npy), not a radref model; models are "
                       f"the .npz files that 'radref train --out' writes")
    if not raw.startswith(b"PK\x03\x04"):
        raise CLIError(f"{flag} {path}: not a radref model (models are the .npz files that "
                       f"'radref train --out' writes)")
    try:
        return load_model(path)
    except CheckpointError as exc:
        raise CLIError(f"{flag} {path}: {checkpoint_problem(exc, path)}") from None


def checkpoint_problem(exc, path):
    """A CheckpointError's message, without the path and without the internals
    of the library that failed to read the file."""
    if isinstance(exc, UnreadableCheckpointError):
        return ("an .npz archive radref cannot read: damaged, or not a model that "
                "'radref train' wrote")
    if isinstance(exc, DamagedCheckpointError):
        return "a damaged radref model (its content is incomplete or inconsistent)"
    message = str(exc)  # the message names the file first: the option names it already
    return message[len(f"{path}: "):] if message.startswith(f"{path}: ") else message


def read_points_of(flag, path, dim=None, model_flag=None, model_path=None):
    """Points from ``path`` with, if ``dim`` is given, the model's number of columns."""
    X = read_points(flag, path)
    if dim is not None and X.shape[1] != dim:
        raise CLIError(f"{flag} {path} has {X.shape[1]} columns, but the model in "
                       f"{model_flag} {model_path} was trained on {dim}-column data")
    return X


def output_name(path):
    return "standard output" if path == STDIO else path


def cannot_write(flag, path, exc):
    return CLIError(f"{flag} {path}: cannot write ({exc.strerror or exc})")


class writing:
    """Turn an OSError while writing ``path`` into a CLIError naming ``flag``."""

    def __init__(self, flag, path):
        self.flag, self.path = flag, path

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback):
        if isinstance(exc, FileExistsError):
            raise CLIError(exists_message(self.flag, self.path) + " (it appeared while "
                           "radref worked; it is unchanged)") from None
        if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
            raise cannot_write(self.flag, self.path, exc) from None
        return False
