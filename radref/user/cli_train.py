"""``radref train``: fit a model to a data file or a built-in problem, save it,
resume from a checkpoint, stop cleanly on Ctrl-C or SIGTERM.

Its hyperparameter options come from the one table
(:mod:`radref.training.hyperparameters`, via :mod:`radref.user.options`);
every option and path is checked before any training.
"""
import contextlib
import os
import shlex
import shutil
import signal
import warnings

import numpy as np

from radref import datasets
from radref.training.checkpoint import CheckpointError, load_checkpoint
from radref.training.diagnostics import DivergenceWarning, DivergenceWatch
from radref.training.files import LockedError, exclusive, same_file
from radref.training.hyperparameters import HYPERPARAMETER, HYPERPARAMETERS
from radref.training.progress import format_nats
from radref.training.signals import EXIT_TERMINATED
from radref.training.train import NonFiniteError
from radref.user.cli_common import (DEFAULT_POINTS, EXIT_INTERRUPTED, POINT_FILES, CLIError,
                                    add_command, add_overwrite_argument, cannot_write, check_hyperparameter,
                                    check_positive,
                                    checkpoint_problem, read_points_of, say, writing)
from radref.user.datafiles import STDIO, check_output, read_points
from radref.user.estimators import MODELS, CheckpointMismatchError, TrainingInterrupted
from radref.user.options import (OptionError, add_options, add_recipe_arguments,
                                 recipe_from_args)
from radref.user.options import flag as option_of


#: the hyperparameters ``radref train`` takes as options, from the table (the
#: recipe's are added by add_recipe_arguments; random_state is --seed, progress
#: --quiet, and warm_start has none)
ARCHITECTURE_OPTIONS = tuple(e.name for e in HYPERPARAMETERS if e.group == "architecture")
TRAINING_OPTIONS = ARCHITECTURE_OPTIONS + tuple(
    e.name for e in HYPERPARAMETERS if e.group == "training" and e.option == "")


def _add_training_options(parser):
    """The architecture options (default: the model's) and the paper's training options."""
    defaults = {name: cls.default_architecture() for name, cls in MODELS.items()}
    shown = {}
    for name in ARCHITECTURE_OPTIONS:
        values = {m: a[name] for m, a in defaults.items() if name in a}
        shown[name] = (f"default {next(iter(values.values()))}" if len(set(values.values())) == 1
                       else "default: " + ", ".join(f"{v} for {m}" for m, v in values.items()))
    shown["gate_hidden"] = ", ".join(
        m for m, a in defaults.items() if "gate_hidden" in a) + " only"
    add_options(parser, ARCHITECTURE_OPTIONS, defaults=False, default_text=shown)
    add_options(parser, TRAINING_OPTIONS[len(ARCHITECTURE_OPTIONS):])


def add_train_command(sub):
    """The ``train`` subcommand of the parser's subparsers ``sub``."""
    train = add_command(
        sub, "train", "fit a model and save it",
        "Fit a model to a data file or to a built-in problem and save it. Progress "
        "(smoothed log-likelihood, steps/s, time left) goes to stderr. Ctrl-C stops after the "
        "current step, saves a checkpoint and prints the command that resumes.", [
            ("radref train --data moons.csv --out rad.npz", "Rad, the default settings"),
            ("radref train --data moons.csv --val test.csv --model realnvp --out nvp.npz",
             "Real NVP, with a held-out score during training (test.csv: radref data "
             "two_moons --seed 1 --out test.csv)"),
            ("radref train --problem ring --steps 20000 --lr-schedule cosine --out ring.npz",
             "a built-in problem, a longer run with cosine decay"),
            ("radref train --data moons.csv --steps 6000 --checkpoint rad.npz --out rad6k.npz",
             "continue a finished model to 6000 steps")])
    source = train.add_mutually_exclusive_group()
    source.add_argument("--data", help=f"training points (default: --problem's): {POINT_FILES}")
    source.add_argument("--problem", default="two_moons", choices=datasets.PROBLEMS,
                        help="built-in problem used when --data is not given (default two_moons)")
    train.add_argument("-n", type=int, default=None,
                       help=f"points drawn from --problem (default {DEFAULT_POINTS}; not "
                            f"with --data, whose points are all used)")
    train.add_argument("--val", help=f"held-out points, scored during training (default: "
                                     f"none): {POINT_FILES}")
    train.add_argument("--model", choices=sorted(MODELS), default="rad", help="model (default rad)")
    _add_training_options(train)
    train.add_argument("--seed", dest="random_state", type=int, default=0, metavar="SEED",
                       help="seed of the --problem draw and of the model: initialisation, "
                            "minibatch order and the early-stopping split (default 0; the "
                            "same seed gives the same model, bit for bit)")
    train.add_argument("--out", required=True, help="model file to write (.npz; required)")
    add_overwrite_argument(train)
    train.add_argument("--checkpoint", default=None, metavar="FILE",
                       help="training-state file (.npz), saved every --checkpoint-every steps "
                            "and at the end; if it exists, training resumes from it (a model "
                            "file written by train is one too) (default: none; Ctrl-C saves "
                            "OUT.checkpoint.npz)")
    train.add_argument("--checkpoint-every", type=int, default=1000, metavar="N",
                       help="steps between two checkpoints (default 1000)")
    train.add_argument("--quiet", action="store_true",
                       help="no progress display (the estimators' progress=False)")
    add_recipe_arguments(train, decay_steps=True)
    train.set_defaults(func=run_train)


def run_train(args, argv):
    X, X_val, model = _train_setup(args)
    _continue_finished(args)
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
    if resume_from is not None and resume_from == args.steps and _finished(args.checkpoint):
        raise CLIError(f"--checkpoint {args.checkpoint}: a finished run of {resume_from} "
                       f"steps, nothing to train at --steps {args.steps}; to train it "
                       f"further, give a larger --steps (the total to reach, e.g. --steps "
                       f"{2 * resume_from})")
    if resume_from is not None and resume_from > args.steps:
        raise CLIError(f"--checkpoint {args.checkpoint} holds {resume_from} steps, more than "
                       f"--steps {args.steps} (the total to reach): give --steps "
                       f">= {resume_from}")
    try:
        with _noting_divergence() as diverged:
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
        _drop_copy(args)
        raise CLIError(f"--checkpoint {args.checkpoint}: written by another run "
                       f"(other settings: {_described_differences(exc)}); delete it, or choose "
                       f"another path "
                       f"to start afresh") from None
    except CheckpointError as exc:
        _drop_copy(args)
        raise CLIError(f"--checkpoint {args.checkpoint}: "
                       f"{checkpoint_problem(exc, args.checkpoint)}") from None
    except OSError as exc:  # the periodic checkpoint could not be written
        if args.checkpoint is None:
            raise
        raise cannot_write("--checkpoint", args.checkpoint, exc) from None
    with writing("--out", args.out):
        model.save(args.out)
    held_out = ("" if X_val is None else
                f"; held-out {model.score(X_val):+.4f} nats ({X_val.shape[0]} points)")
    original = getattr(args, "continued_from", None)
    resumed = ("" if resume_from is None else f" (resumed from {args.checkpoint} at step "
                                                f"{resume_from})" if original is None else
               f" (continued from the finished run in {original}, step {resume_from}; "
               f"{original} is not changed)")
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
    training_score = model.score(X)
    print(f"trained {type(model).__name__} on {points} for {model.n_steps_} steps"
          f"{resumed}: mean log-likelihood {format_nats(training_score)} nats on the training "
          f"points"
          f"{held_out}; saved to "
          f"{args.out}")
    _finished_checkpoint(args)
    if model.n_training_rows_ * X.shape[1] < model.n_parameters():
        say(f"radref: warning: {model.n_training_rows_} training points of {X.shape[1]} "
            f"coordinates are fewer numbers than the model's {model.n_parameters()} "
            f"parameters: it can fit these points closely and generalise poorly; judge it "
            f"by a held-out score (--val)", to_stderr=True)
    if diverged:
        step, start = diverged[0]
        if start is None or DivergenceWatch.far_below(start, training_score):
            print(f"warning: this training run diverged (from step {step}, see the warning "
                  f"above): the saved model is not a usable fit; try a smaller --lr (now "
                  f"{args.lr:g})")
        else:  # a spike at a high rate that training climbed out of
            print(f"note: training diverged at step {step} (see the warning above) and "
                  f"recovered: the saved model scores {format_nats(training_score)} nats on "
                  f"the training points, against {format_nats(start)} at the start; a smaller "
                  f"--lr (now {args.lr:g}) may train more smoothly")
    return 0


@contextlib.contextmanager
def _noting_divergence():
    """Show warnings as usual, and note the step of a :class:`DivergenceWarning`
    (for the summary line after training)."""
    steps, show = [], warnings.showwarning

    def showwarning(message, category, *rest, **kwargs):
        if issubclass(category, DivergenceWarning):
            steps.append((getattr(message, "step", None), getattr(message, "start", None)))
        return show(message, category, *rest, **kwargs)
    warnings.showwarning = showwarning
    try:
        yield steps
    finally:
        warnings.showwarning = show


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
    return "; ".join(parts) + hint


def _train_setup(args):
    """Check every option and path, read the data: before any training."""
    cls = MODELS[args.model]
    params = {name: check_hyperparameter(name, getattr(args, name))
              for name in TRAINING_OPTIONS + ("random_state",)}
    for name in ARCHITECTURE_OPTIONS:
        if params[name] is not None and name not in cls.parameter_names():
            takers = [m for m, c in MODELS.items() if name in c.parameter_names()]
            raise CLIError(f"{option_of(name)} applies to --model {' or '.join(takers)} only")
    check_positive(args.checkpoint_every, "--checkpoint-every")
    if args.data is not None and args.n is not None:
        raise CLIError(f"-n applies to --problem (the number of points drawn from it); with "
                       f"--data, every point of {args.data} is used")
    check_positive(args.n, "-n")
    inputs = [("--data", args.data), ("--val", args.val)]
    if (args.checkpoint is not None and not args.overwrite and os.path.exists(args.out)
            and not os.path.lexists(args.checkpoint)
            and _is_own_checkpoint(args.checkpoint, args.out)):
        # the printed resume command, run again after the run finished
        raise CLIError(f"--out {args.out}: exists, and {args.checkpoint} does not: this run "
                       f"has finished (radref removes its checkpoint then); to train it "
                       f"further, give --checkpoint {args.out} with a larger --steps and "
                       f"another --out")
    check_output("--out", args.out, extensions=(".npz",), allow_stdout=False, inputs=inputs,
                 overwrite=args.overwrite)
    if args.checkpoint is not None:
        # an existing checkpoint is resumed from, not replaced by another run
        check_output("--checkpoint", args.checkpoint, extensions=(".npz",), allow_stdout=False,
                     inputs=inputs, overwrite=True)
        if same_file(args.checkpoint, args.out):
            raise CLIError(f"--checkpoint {args.checkpoint}: is --out {args.out}; the "
                           f"training state and the model must be different files")
    earlier = default_checkpoint(args.out)
    if args.checkpoint is None and os.path.lexists(earlier):
        say(f"radref: warning: {earlier} holds the state of an interrupted run; this run "
            f"starts afresh and keeps it (to resume that run instead, add --checkpoint "
            f"{earlier})", to_stderr=True)
    if args.data is not None:
        X = read_points_of("--data", args.data)
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
        if X_val.shape == X.shape and np.array_equal(X_val, X):
            say(f"radref: warning: --val {args.val} holds the training points themselves: "
                f"its score is a training score, not a held-out one", to_stderr=True)
    params = {name: value for name, value in params.items() if value is not None}
    params["progress"] = not args.quiet
    try:
        params.update(recipe_from_args(args))
    except OptionError as exc:
        raise CLIError(str(exc)) from None
    for problem in _idle_recipe_options(args):
        say(f"radref: warning: {problem}", to_stderr=True)
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


def _continue_finished(args):
    """A finished run given as ``--checkpoint`` (a model file ``train`` wrote,
    or a checkpoint kept at the end of its run) is read, never written: its
    state is copied to a checkpoint of ``--out``'s (:func:`unused_checkpoint_name`),
    which training continues and updates, so the user's file stays as it was."""
    if args.checkpoint is None or not os.path.exists(args.checkpoint):
        return
    meta = _checkpoint_meta(args)
    planned = meta.get("extra", {}).get("estimator_params", {}).get("steps")
    if planned is None or meta["step"] < planned or meta["step"] >= args.steps:
        return  # an interrupted run (resumed in place), or nothing to continue
    copy = unused_checkpoint_name(args.out)
    with writing("--out", copy):
        shutil.copyfile(args.checkpoint, copy)
    args.continued_from, args.checkpoint = args.checkpoint, copy


def _drop_copy(args):
    """A run refused before its first step: remove the copy that
    :func:`_continue_finished` made, and name the user's file again."""
    original = getattr(args, "continued_from", None)
    if original is not None:
        with contextlib.suppress(OSError):
            os.remove(args.checkpoint)
        args.checkpoint = original


def _finished(path):
    """Whether the checkpoint ``path`` holds a run that reached its planned
    steps (a model ``train --out`` wrote, or a finished run's checkpoint)."""
    meta, _, _ = load_checkpoint(path)
    planned = meta.get("extra", {}).get("estimator_params", {}).get("steps")
    return planned is not None and meta["step"] >= planned


def _checkpoint_meta(args):
    """The metadata of the existing ``--checkpoint``, or the user error that
    says why it cannot be read."""
    try:
        meta, _, _ = load_checkpoint(args.checkpoint)
    except (CheckpointError, OSError) as exc:
        problem = (checkpoint_problem(exc, args.checkpoint) if isinstance(exc, CheckpointError)
                   else exc.strerror)
        raise CLIError(f"--checkpoint {args.checkpoint}: {problem}") from None
    return meta


def _resume_step(args):
    """The step of an existing ``--checkpoint`` (``None`` if there is none)."""
    if args.checkpoint is None or not os.path.exists(args.checkpoint):
        return None
    return _checkpoint_meta(args)["step"]


def default_checkpoint(out):
    """Where ``train`` saves an interrupted run without ``--checkpoint``:
    ``model.npz`` -> ``model.checkpoint.npz``."""
    return os.path.splitext(out)[0] + ".checkpoint.npz"


def unused_checkpoint_name(out):
    """:func:`default_checkpoint`, or, when that file holds the state of an
    earlier interrupted run, the first free ``model.checkpoint-2.npz``,
    ``-3``, ...: an interrupted run never replaces another's state."""
    path, number = default_checkpoint(out), 1
    while os.path.lexists(path):
        number += 1
        path = f"{os.path.splitext(out)[0]}.checkpoint-{number}.npz"
    return path


def _is_own_checkpoint(path, out):
    """Whether ``path`` is a name radref gives the training state of ``--out``
    (:func:`unused_checkpoint_name`): ``model.checkpoint.npz`` or
    ``model.checkpoint-N.npz`` beside ``model.npz``."""
    own = os.path.abspath(os.path.splitext(out)[0] + ".checkpoint")
    stem = os.path.splitext(os.path.abspath(path))[0]
    suffix = stem[len(own):]
    return stem.startswith(own) and (suffix == "" or (suffix[:1] == "-" and suffix[1:].isdigit()))


def _finished_checkpoint(args):
    """After a finished run is saved: the model file holds everything its
    checkpoint held (it resumes as ``--checkpoint`` too), so a checkpoint
    radref named is removed, and one the user named is kept and reported."""
    path = args.checkpoint
    if path is None or not os.path.exists(path):
        return
    further = (f"to train further, give --checkpoint {args.out} with a larger --steps and "
               f"another --out: {args.out} is read, not changed")
    if _is_own_checkpoint(path, args.out):
        try:
            os.remove(path)
        except OSError as exc:
            say(f"radref: warning: could not remove the training state {path} "
                f"({exc.strerror}); {args.out} holds it, delete it by hand", to_stderr=True)
            return
        print(f"removed the training state {path}: the run is finished and {args.out} holds "
              f"it ({further})")
    else:
        print(f"the training state stays in {path} (the run is finished; {args.out} holds "
              f"the same state: delete {path} when you no longer need it; {further})")


def _interrupted(args, argv, model, stop):
    """Ctrl-C or SIGTERM during training: make sure a checkpoint holds the
    state, say how to resume, exit 130 (143 after SIGTERM)."""
    path = stop.checkpoint
    if path is None:
        path = unused_checkpoint_name(args.out)
        with writing("--out", path):
            model.save(path)
    command = _without_option(argv, "--checkpoint") + ["--checkpoint", os.fspath(path)]
    again = ("\n(with the same points on standard input again)"
             if args.data == STDIO or args.val == STDIO else "")
    # after a progress line the display has ended the line; else start a new
    # one (the terminal echoed ^C where the cursor was)
    new_line = "\n" if args.quiet else ""
    terminated = stop.signum == signal.SIGTERM
    say(f"{new_line}{'terminated (SIGTERM)' if terminated else 'interrupted'} after step "
         f"{stop.step} of {args.steps}; the training state is saved in {path}\nresume "
         f"with:\n  radref {shlex.join(command)}{again}", to_stderr=True)
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
