"""The ``radref`` command: ``demo | data | train | score | sample | plot | reproduce |
golden | check-port``.

User errors print one line, ``radref: error: <flag> <file>: <what is wrong>``,
and exit with status 2; Ctrl-C exits with status 130 (``train`` first saves
a checkpoint and prints the command that resumes).  Every option is checked,
and every output path, before any work starts.
"""
import argparse
import contextlib
import os
import shlex
import signal
import sys
import time

import numpy as np

from radref import datasets
from radref._version import __version__
from radref.training.checkpoint import CheckpointError, load_checkpoint
from radref.training.files import LockedError, exclusive, same_file
from radref.training.signals import EXIT_TERMINATED, Terminated, sigterm_raises
from radref.training.hyperparameters import HYPERPARAMETER
from radref.training.train import NonFiniteError
from radref.user.datafiles import (STDIO, DataFileError, check_output, read_bytes, read_points,
                                   write_array)
from radref.user.estimators import (MODELS, CheckpointMismatchError, TrainingInterrupted,
                                    load_model)
from radref.user.options import (OptionError, add_options, add_recipe_arguments, check_option,
                                 recipe_from_args)
from radref.user.options import flag as option_of

#: points drawn from a built-in problem when -n is not given
DEFAULT_POINTS = 10_000
#: status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it)
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A user error: printed without a traceback, exit status 2."""


# ------------------------------------------------------------ checking options

def _check_seed(seed, option="--seed"):
    if seed < 0:
        raise CLIError(f"{option} must be >= 0, got {seed}")
    return seed


def _check_positive(value, option):
    if value is not None and value < 1:
        raise CLIError(f"{option} must be >= 1, got {value}")
    return value


def _check_hyperparameter(name, value):
    """An option of the table of hyperparameters, checked by the table."""
    try:
        return check_option(name, value)
    except OptionError as exc:
        raise CLIError(str(exc)) from None


def _need_matplotlib(option):
    """Fail before any training if a figure is asked for and matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CLIError(f"{option} needs matplotlib, which is not installed: pip install "
                       f"matplotlib (in radref's source tree: pip install \".[plot]\")") from None


def _say(message, to_stderr=False):
    """Progress and summaries: on stderr when stdout carries data (``--out -``)."""
    print(message, file=sys.stderr if to_stderr else sys.stdout)


# ------------------------------------------------------------------- models

def _load_model(flag, path):
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
        raise CLIError(f"{flag} {path}: {_checkpoint_problem(exc, path)}") from None


def _checkpoint_problem(exc, path):
    """A CheckpointError's message, without the path and without the internals
    of the library that failed to read the file."""
    message = str(exc)
    if message.startswith(f"{path}: "):
        message = message[len(f"{path}: "):]
    if message.startswith("not a readable radref checkpoint"):
        return ("an .npz archive radref cannot read: damaged, or not a model that "
                "'radref train' wrote")
    if message.startswith(("checkpoint is incomplete", "invalid model description",
                           "parameters do not match")):
        return "a damaged radref model (its content is incomplete or inconsistent)"
    return message


def _points(flag, path, dim=None, model_flag=None, model_path=None):
    """Points from ``path`` with, if ``dim`` is given, the model's number of columns."""
    X = read_points(flag, path)
    if dim is not None and X.shape[1] != dim:
        raise CLIError(f"{flag} {path} has {X.shape[1]} columns, but the model in "
                       f"{model_flag} {model_path} was trained on {dim}-column data")
    return X


# ----------------------------------------------------------------- commands

def _cmd_data(args):
    _check_positive(args.n, "-n")
    _check_seed(args.seed)
    check_output("--out", args.out)
    X = datasets.sample(args.problem, args.n, random_state=args.seed)
    write_array("--out", args.out, X)
    _say(f"wrote {args.n} points of {args.problem} (seed {args.seed}) to {_name(args.out)}",
         to_stderr=args.out == STDIO)


def _name(path):
    return "standard output" if path == STDIO else path


def _cmd_demo(args):
    _check_seed(args.seed)
    for option in ("n_train", "n_test", "rad_steps", "realnvp_steps"):
        _check_positive(getattr(args, option), "--" + option.replace("_", "-"))
    _check_hyperparameter("lr", args.lr)
    if args.figure:
        check_output("--figure", args.figure, extensions=(".png",), allow_stdout=False)
        _need_matplotlib("--figure")
    start = time.perf_counter()
    X_train, X_test = datasets.train_test_split_samples(
        "two_moons", args.n_train, args.n_test, random_state=args.seed)
    models, scores = {}, {}
    for cls, steps in ((MODELS["rad"], args.rad_steps), (MODELS["realnvp"], args.realnvp_steps)):
        title = cls.display_name()
        t0 = time.perf_counter()
        model = cls(steps=steps, lr=args.lr, progress=not args.quiet, random_state=args.seed)
        model.fit(X_train)
        models[title], scores[title] = model, model.score(X_test)
        print(f"{title:9s} ({model.n_parameters():5d} parameters, {steps} steps): "
              f"held-out mean log-likelihood {scores[title]:+.4f} nats "
              f"({time.perf_counter() - t0:.1f} s)")
    best, _ = datasets.negative_entropy("two_moons", n=100_000, random_state=args.seed)
    print(f"best achievable (negative entropy of the data): {best:+.4f} nats")
    if args.figure:
        from radref.user.plots import plot_demo
        with _writing("--figure", args.figure):
            plot_demo(args.figure, X_test, models, scores, best=best,
                      log_density=lambda X: datasets.log_density("two_moons", X),
                      random_state=args.seed)
        print(f"figure written to {args.figure}")
    print(f"total time {time.perf_counter() - start:.1f} s")


def _cmd_train(args, argv):
    X, X_val, model = _train_setup(args)
    with _locked_outputs(("--out", args.out), ("--checkpoint", args.checkpoint)):
        return _train_and_save(args, argv, X, X_val, model)


@contextlib.contextmanager
def _locked_outputs(*outputs):
    """Hold the advisory lock of every ``(flag, path)`` output (``path`` may be
    None) while the block runs: a second radref writing one of them is refused,
    with a message naming this process (radref.training.files.exclusive)."""
    with contextlib.ExitStack() as stack:
        for flag, path in outputs:
            if path is not None and path != STDIO:
                try:
                    stack.enter_context(exclusive(path, f"{flag} {path}"))
                except LockedError as exc:
                    raise CLIError(str(exc)) from None
        yield


def _train_and_save(args, argv, X, X_val, model):
    resume_from = _resume_step(args)
    if resume_from is not None and resume_from > args.steps:
        raise CLIError(f"--checkpoint {args.checkpoint} holds {resume_from} steps, more than "
                       f"--steps {args.steps} (the total to reach): give --steps "
                       f">= {resume_from}")
    try:
        model.fit(X, X_val=X_val, checkpoint=args.checkpoint,
                  checkpoint_every=args.checkpoint_every)
    except TrainingInterrupted as stop:
        return _interrupted(args, argv, model, stop)
    except NonFiniteError as exc:
        hint = (f"that is row {exc.row + 1} of --data {args.data}"
                if exc.row is not None and args.data is not None
                else f"a smaller --lr (now {args.lr:g}) may help")
        raise CLIError(f"training stopped: {exc}; {hint}") from None
    except CheckpointMismatchError as exc:
        raise CLIError(f"--checkpoint {args.checkpoint}: written by another run "
                       f"({_described_differences(exc)}); delete it, or choose another path "
                       f"to start afresh") from None
    except CheckpointError as exc:
        raise CLIError(f"--checkpoint {args.checkpoint}: "
                       f"{_checkpoint_problem(exc, args.checkpoint)}") from None
    except OSError as exc:  # the periodic checkpoint could not be written
        if args.checkpoint is None:
            raise
        raise _cannot_write("--checkpoint", args.checkpoint, exc) from None
    with _writing("--out", args.out):
        model.save(args.out)
    held_out = ("" if X_val is None else
                f"; held-out {model.score(X_val):+.4f} nats ({X_val.shape[0]} points)")
    resumed = ("" if resume_from is None else
               f" (resumed from {args.checkpoint} at step {resume_from})")
    if model.best_step_ is not None:
        stopped = ("" if model.stopped_at_ is None else
                   f"early stopping stopped at step {model.stopped_at_}; ")
        print(f"{stopped}kept the parameters of step {model.best_step_} (validation split "
              f"of the training points: {model.best_validation_score_:+.4f} nats)")
    points = f"{X.shape[0]} points"
    n_set_aside = X.shape[0] - model.n_training_rows_
    if n_set_aside:
        points = (f"{model.n_training_rows_} of the {X.shape[0]} points ({n_set_aside} set "
                  f"aside for early stopping)")
    print(f"trained {type(model).__name__} on {points} for {model.n_steps_} steps"
          f"{resumed}: mean log-likelihood {model.score(X):+.4f} nats on the training points"
          f"{held_out}; saved to "
          f"{args.out}")
    return 0


def _described_differences(exc):
    """The settings in which ``--checkpoint`` differs, as options with both values."""
    parts = []
    for name in exc.differing:
        if name in HYPERPARAMETER:
            before, now = (("not set" if v is None else v) for v in (exc.theirs.get(name),
                                                                      exc.mine.get(name)))
            parts.append(f"{option_of(name)} {before} there, {now} now")
        elif name == "data_sha256":
            parts.append("the training points (--data, or --problem, -n, --seed)")
        else:
            parts.append(name)
    horizon_only = ("lr_decay_steps" in exc.differing and "lr_schedule" not in exc.differing)
    hint = ("; a cosine decay trained in several runs needs the same --lr-decay-steps (the "
            "final --steps) in each" if horizon_only else "")
    return "other " + "; ".join(parts) + hint


def _cannot_write(flag, path, exc):
    return CLIError(f"{flag} {path}: cannot write ({exc.strerror or exc})")


class _writing:
    """Turn an OSError while writing ``path`` into a CLIError naming ``flag``."""

    def __init__(self, flag, path):
        self.flag, self.path = flag, path

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback):
        if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
            raise _cannot_write(self.flag, self.path, exc) from None
        return False


def _train_setup(args):
    """Check every option and path, read the data: before any training."""
    cls = MODELS[args.model]
    params = {name: _check_hyperparameter(name, getattr(args, name))
              for name in TRAINING_OPTIONS + ("random_state",)}
    for name in ARCHITECTURE_OPTIONS:
        if params[name] is not None and name not in cls.parameter_names():
            takers = [m for m, c in MODELS.items() if name in c.parameter_names()]
            raise CLIError(f"{option_of(name)} applies to --model {' or '.join(takers)} only")
    _check_positive(args.checkpoint_every, "--checkpoint-every")
    if args.data is not None and args.n is not None:
        raise CLIError(f"-n applies to --problem (the number of points drawn from it); with "
                       f"--data, every point of {args.data} is used")
    _check_positive(args.n, "-n")
    inputs = [("--data", args.data), ("--val", args.val)]
    check_output("--out", args.out, extensions=(".npz",), allow_stdout=False, inputs=inputs)
    if args.checkpoint is not None:
        check_output("--checkpoint", args.checkpoint, extensions=(".npz",), allow_stdout=False,
                     inputs=inputs)
        if same_file(args.checkpoint, args.out):
            raise CLIError("--checkpoint and --out must be different files")
    if args.data is not None:
        X = _points("--data", args.data)
        if X.shape[1] < 2:
            raise CLIError(f"--data {args.data} has 1 column; a flow needs at least 2 (each "
                           f"coupling layer transforms some columns given the others)")
    else:
        X = datasets.sample(args.problem, args.n or DEFAULT_POINTS,
                            random_state=args.random_state)
    if args.early_stopping and X.shape[0] < 2:
        source = f"--data {args.data}" if args.data else f"-n {X.shape[0]}"
        raise CLIError(f"--early-stopping needs at least 2 training points ({source} gives "
                       f"{X.shape[0]})")
    X_val = None
    if args.val is not None:
        X_val = read_points("--val", args.val)
        if X_val.shape[1] != X.shape[1]:
            source = f"--data {args.data}" if args.data else f"--problem {args.problem}"
            raise CLIError(f"--val {args.val} has {X_val.shape[1]} columns, {source} has "
                           f"{X.shape[1]}")
    params = {name: value for name, value in params.items() if value is not None}
    params["progress"] = not args.quiet
    try:
        params.update(recipe_from_args(args))
    except OptionError as exc:
        raise CLIError(str(exc)) from None
    for problem in _idle_recipe_options(args):
        _say(f"radref: warning: {problem}", to_stderr=True)
    return X, X_val, cls(**params)


def _idle_recipe_options(args):
    """Recipe options that are valid but do nothing (or not what their name
    says) over --steps: one sentence each."""
    problems = []
    horizon = args.lr_decay_steps or args.steps
    if args.lr_schedule == "cosine" and horizon < args.steps:
        problems.append(f"--lr-decay-steps {horizon} < --steps {args.steps}: the last "
                        f"{args.steps - horizon} steps run at the final rate")
    step_size = args.lr_step_size or HYPERPARAMETER["lr_step_size"].default
    if args.lr_schedule == "step" and step_size >= args.steps:
        problems.append(f"--lr-step-size {step_size} >= --steps {args.steps}: the rate never "
                        f"decays")
    if args.early_stopping and args.eval_every >= args.steps:
        problems.append(f"--eval-every {args.eval_every} >= --steps {args.steps}: early "
                        f"stopping scores its split only at the end and never stops")
    return problems


def _resume_step(args):
    """The step of an existing ``--checkpoint`` (``None`` if there is none)."""
    if args.checkpoint is None or not os.path.exists(args.checkpoint):
        return None
    try:
        meta, _, _ = load_checkpoint(args.checkpoint)
    except (CheckpointError, OSError) as exc:
        problem = (_checkpoint_problem(exc, args.checkpoint) if isinstance(exc, CheckpointError)
                   else exc.strerror)
        raise CLIError(f"--checkpoint {args.checkpoint}: {problem}") from None
    return meta["step"]


def default_checkpoint(out):
    """Where ``train`` saves an interrupted run without ``--checkpoint``:
    ``model.npz`` -> ``model.checkpoint.npz``."""
    return os.path.splitext(out)[0] + ".checkpoint.npz"


def _interrupted(args, argv, model, stop):
    """Ctrl-C or SIGTERM during training: make sure a checkpoint holds the
    state, say how to resume, exit 130 (143 after SIGTERM)."""
    path = stop.checkpoint
    if path is None:
        path = default_checkpoint(args.out)
        with _writing("--out", path):
            model.save(path)
    command = _without_option(argv, "--checkpoint") + ["--checkpoint", os.fspath(path)]
    # after a progress line the display has ended the line; else start a new
    # one (the terminal echoed ^C where the cursor was)
    new_line = "\n" if args.quiet else ""
    terminated = stop.signum == signal.SIGTERM
    _say(f"{new_line}{'terminated (SIGTERM)' if terminated else 'interrupted'} after step "
         f"{stop.step} of {args.steps}; the training state is saved in {path}\nresume "
         f"with:\n  radref {shlex.join(command)}", to_stderr=True)
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def _without_option(argv, option):
    """``argv`` without ``option VALUE`` / ``option=VALUE``."""
    kept, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == option:
            skip = True
        elif not word.startswith(option + "="):
            kept.append(word)
    return kept


def _cmd_score(args):
    if args.out:
        check_output("--out", args.out, inputs=[("--model", args.model), ("--data", args.data)])
    model = _load_model("--model", args.model)
    X = _points("--data", args.data, model.n_features_in_, "--model", args.model)
    scores = model.score_samples(X)
    if args.out:
        write_array("--out", args.out, scores)
    _say(f"mean log-likelihood {np.mean(scores):+.6f} nats over {scores.size} points",
         to_stderr=args.out == STDIO)


def _cmd_sample(args):
    _check_seed(args.seed)
    _check_positive(args.n, "-n")
    check_output("--out", args.out, inputs=[("--model", args.model)])
    model = _load_model("--model", args.model)
    samples = model.sample(args.n, random_state=args.seed)
    write_array("--out", args.out, samples)
    _say(f"wrote {args.n} samples to {_name(args.out)}", to_stderr=args.out == STDIO)


def _cmd_plot(args):
    _check_seed(args.seed)
    _check_positive(args.n, "-n")
    out = args.out or os.path.splitext(args.model)[0] + ".png"
    check_output("--out", out, extensions=(".png",), allow_stdout=False,
                 inputs=[("MODEL", args.model), ("--data", args.data)])
    _need_matplotlib("radref plot")
    model = _load_model("MODEL", args.model)
    if model.n_features_in_ != 2:
        raise CLIError(f"MODEL {args.model}: a {model.n_features_in_}-dimensional model; "
                       f"radref plot draws 2-dimensional ones")
    X = None
    if args.data is not None:
        X = _points("--data", args.data, 2, "MODEL", args.model)
    from radref.user.plots import plot_model
    with _writing("--out", out):
        plot_model(out, model, data=X, n_samples=args.n, random_state=args.seed,
                   title=os.path.basename(args.model))
    print(f"figure written to {out}")


def _cmd_reproduce(args):
    from radref.user import reproduce
    reproduce.run_from_args(args)


def _cmd_golden(args):
    from radref.reference import golden
    if args.where:
        where = golden.default_golden_dir()
        if where is None:
            raise CLIError("this radref installation ships no golden vectors")
        print(where)
        return
    json_path, npz_path = golden.write_golden(args.out)
    print(f"wrote {json_path} and {npz_path}")


def _cmd_check_port(args):
    from radref.reference import golden
    if not os.path.exists(args.port):
        raise CLIError(f"PORT {args.port}: no such file")
    if os.path.isdir(args.port):
        raise CLIError(f"PORT {args.port}: is a directory; pass your port's result file "
                       f"(JSON in the golden schema, docs/golden.md)")
    golden_dir = args.golden or golden.default_golden_dir()
    if golden_dir is None:
        raise CLIError("this radref installation ships no golden vectors: pass --golden DIR "
                       "(a directory written by 'radref golden --out DIR')")
    golden_path = os.path.join(golden_dir, golden.JSON_NAME)
    if not os.path.exists(golden_path):
        raise CLIError(f"--golden {golden_dir}: no {golden.JSON_NAME} in it")
    gold = golden.load_document(golden_path)
    port = golden.from_json(golden.read_json(args.port), where=args.port)
    report = golden.check_port(port, gold, tolerance=args.tolerance, partial=args.partial)
    print(golden.format_report(report, title=f"{args.port} against {golden_path} "
                                             f"({args.tolerance} tolerances)"))
    if not report.passed:
        sys.exit(1)


# ------------------------------------------------------------------- parser

POINT_FILES = ".npy, .csv, .tsv or .txt (header line optional), or - for standard input"
OUTPUT_FILES = ".npy, .csv, .tsv or .txt, or - for standard output (CSV)"
D = {name: entry.default for name, entry in HYPERPARAMETER.items()}
#: the hyperparameters ``radref train`` takes as options (the recipe's are added
#: by add_recipe_arguments; random_state is --seed, progress --quiet)
ARCHITECTURE_OPTIONS = ("n_layers", "hidden", "gate_hidden", "out_std")
TRAINING_OPTIONS = ARCHITECTURE_OPTIONS + ("steps", "batch_size", "lr", "beta1", "beta2", "eps",
                                           "eval_every")


def _add_training_options(parser):
    """The architecture options (default: the model's) and the paper's training options."""
    defaults = {name: cls.default_architecture() for name, cls in MODELS.items()}
    shown = {name: "default: " + ", ".join(f"{a[name]} for {m}" for m, a in defaults.items()
                                          if name in a) for name in ARCHITECTURE_OPTIONS}
    shown["gate_hidden"] = "default: --hidden; " + ", ".join(
        m for m, a in defaults.items() if "gate_hidden" in a) + " only"
    add_options(parser, ARCHITECTURE_OPTIONS, defaults=False, default_text=shown)
    add_options(parser, TRAINING_OPTIONS[len(ARCHITECTURE_OPTIONS):])


def build_parser():
    parser = argparse.ArgumentParser(
        prog="radref", description="Rad (Real and Discrete) normalizing flows in NumPy.",
        epilog=f"Training defaults, the same as the Python estimators': {D['steps']} Adam "
               f"steps, batch {D['batch_size']}, lr {D['lr']:g}.  'radref COMMAND --help' "
               f"explains each command.")
    parser.add_argument("--version", action="version", version=f"radref {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="train Rad and Real NVP on two moons, report and plot",
                          description="Train Rad (8 hidden units) and Real NVP (56 hidden "
                                      "units), 6 coupling layers each, on the two-moons "
                                      "problem; print held-out log-likelihoods; write a figure.")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--n-train", type=int, default=10_000, help="training points (default 10000)")
    demo.add_argument("--n-test", type=int, default=10_000, help="held-out points (default 10000)")
    demo.add_argument("--rad-steps", type=int, default=D["steps"],
                      help=f"Adam steps for Rad (default {D['steps']})")
    demo.add_argument("--realnvp-steps", type=int, default=D["steps"],
                      help=f"Adam steps for Real NVP (default {D['steps']})")
    demo.add_argument("--lr", type=float, default=D["lr"],
                      help=f"Adam learning rate (default {D['lr']:g})")
    demo.add_argument("--figure", default="radref-demo.png",
                      help="PNG to write (default radref-demo.png; empty string: none)")
    demo.add_argument("--quiet", action="store_true", help="no progress display")
    demo.set_defaults(func=_cmd_demo)

    data = sub.add_parser("data", help="export points of a built-in problem",
                          description="Draw points from one of the paper's six problems "
                                      "(docs/datasets.md) and write them to a file.")
    data.add_argument("problem", choices=datasets.PROBLEMS, metavar="PROBLEM",
                      help=f"one of {', '.join(datasets.PROBLEMS)}")
    data.add_argument("-n", type=int, default=DEFAULT_POINTS,
                      help=f"number of points (default {DEFAULT_POINTS})")
    data.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    data.add_argument("--out", required=True, help=f"output: {OUTPUT_FILES}")
    data.set_defaults(func=_cmd_data)

    train = sub.add_parser(
        "train", help="fit a model and save it",
        description="Fit a model to a data file or to a built-in problem and save it. Progress "
                    "(smoothed log-likelihood, steps/s, time left) goes to stderr. Ctrl-C "
                    "stops after the current step, saves a checkpoint and prints the command "
                    "that resumes.")
    source = train.add_mutually_exclusive_group()
    source.add_argument("--data", help=f"training points: {POINT_FILES}")
    source.add_argument("--problem", default="two_moons", choices=datasets.PROBLEMS,
                        help="built-in problem used when --data is not given (default two_moons)")
    train.add_argument("-n", type=int, default=None,
                       help=f"points drawn from --problem (default {DEFAULT_POINTS}; not "
                            f"with --data, whose points are all used)")
    train.add_argument("--val", help=f"held-out points, scored during training: {POINT_FILES}")
    train.add_argument("--model", choices=sorted(MODELS), default="rad", help="model (default rad)")
    _add_training_options(train)
    train.add_argument("--seed", dest="random_state", type=int, default=0, metavar="SEED",
                       help=f"seed of the --problem draw and of the model: "
                            f"{HYPERPARAMETER['random_state'].help} (default 0)")
    train.add_argument("--out", required=True, help="model file to write (.npz)")
    train.add_argument("--checkpoint", default=None,
                       help="training-state file (.npz), saved every --checkpoint-every steps "
                            "and at the end; if it exists, training resumes from it")
    train.add_argument("--checkpoint-every", type=int, default=1000,
                       help="steps between two checkpoints (default 1000)")
    train.add_argument("--quiet", action="store_true",
                       help="no progress display (the estimators' progress=False)")
    add_recipe_arguments(train, decay_steps=True)
    train.set_defaults(func=_cmd_train)

    score = sub.add_parser("score", help="log-density of points under a saved model")
    score.add_argument("--model", required=True, help="model file written by 'radref train'")
    score.add_argument("--data", required=True, help=f"points: {POINT_FILES}")
    score.add_argument("--out", help=f"write per-point log-densities here: {OUTPUT_FILES}")
    score.set_defaults(func=_cmd_score)

    sample = sub.add_parser("sample", help="draw samples from a saved model")
    sample.add_argument("--model", required=True, help="model file written by 'radref train'")
    sample.add_argument("-n", type=int, default=1000, help="number of samples (default 1000)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--out", required=True, help=f"output: {OUTPUT_FILES}")
    sample.set_defaults(func=_cmd_sample)

    plot = sub.add_parser("plot", help="draw a trained 2-D model: density, samples, folding",
                          description="Draw a trained 2-D model: its density, its samples, "
                                      "and what each coupling layer does to the points (for "
                                      "Rad, the folding: the branch k of each point).")
    plot.add_argument("model", metavar="MODEL", help="model file written by 'radref train'")
    plot.add_argument("--data", help=f"points to draw and push through the layers (default: "
                                     f"the model's samples): {POINT_FILES}")
    plot.add_argument("-n", type=int, default=4000,
                      help="samples drawn from the model (default 4000)")
    plot.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    plot.add_argument("--out", help="PNG to write (default: MODEL with .png)")
    plot.set_defaults(func=_cmd_plot)

    rep = sub.add_parser("reproduce", help="the paper's experiment (§4.3 table) or your sweep",
                         description="Train Rad and Real NVP on the six problems over several "
                                     "seeds (and any sweep of settings), on local worker "
                                     "processes or a Dask cluster; every run is keyed by its "
                                     "full protocol, reused only on an exact match, resumable.")
    from radref.user import reproduce
    reproduce.add_arguments(rep)
    rep.set_defaults(func=_cmd_reproduce)

    gold = sub.add_parser("golden", help="write the golden reference vectors for ports",
                          description="Write radref-golden.json and radref-golden.npz "
                                      "(inputs, parameters, outputs and gradients of every "
                                      "building block; see docs/golden.md).")
    where = gold.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="output directory")
    where.add_argument("--where", action="store_true",
                       help="print the directory of the vectors shipped with radref")
    gold.set_defaults(func=_cmd_golden)

    check = sub.add_parser("check-port", help="compare a port's outputs with the golden vectors",
                           description="Compare the outputs and gradients in a port's JSON file "
                                       "(golden schema, cases matched by id) with the golden "
                                       "vectors; exit status 1 if a field is out of tolerance, "
                                       "2 if a file is malformed.")
    check.add_argument("port", help="the port's results, JSON in the golden schema")
    check.add_argument("--golden", help="directory holding radref-golden.json "
                                        "(default: the vectors shipped with radref, "
                                        "see 'radref golden --where')")
    check.add_argument("--tolerance", choices=("float64", "float32"), default="float64",
                       help="rtol per entry, |port - golden| <= rtol (|golden| + S): "
                            "float64: 1e-12 outputs, 1e-9 gradients; float32: 1e-4, 1e-3, "
                            "cases flagged Float64Only skipped (default float64)")
    check.add_argument("--partial", action="store_true",
                       help="blocks, cases or fields the port does not provide do not fail")
    check.set_defaults(func=_cmd_check_port)
    return parser


def main(argv=None):
    """Run the command; returns the exit status (0, 1 for a failed check-port,
    2 for a user error, 130 after Ctrl-C, 143 after SIGTERM)."""
    argv = sys.argv[1:] if argv is None else [os.fspath(a) for a in argv]
    args = build_parser().parse_args(argv)
    try:
        with sigterm_raises():  # SIGTERM: like Ctrl-C, every file cleaned up, status 143
            status = args.func(args, argv) if args.func is _cmd_train else args.func(args)
    except (CLIError, DataFileError, CheckpointError) as exc:
        return _error(exc)
    except BrokenPipeError:
        # stdout closed early (radref sample --out - | head): not an error of
        # radref's; silence the flush at exit, as Python's docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, TypeError, OSError, ImportError, NonFiniteError) as exc:
        return _error(exc)
    except MemoryError as exc:  # e.g. sample -n 10**14
        return _error(f"out of memory ({exc})")
    except Terminated:
        print("\nradref: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("\nradref: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return status or 0


def _error(message):
    print(f"radref: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
