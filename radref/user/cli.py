"""The ``radref`` command: ``demo | data | train | score | sample | plot | reproduce |
golden | check-port``.

User errors print one line, ``radref: error: <flag> <file>: <what is wrong>``
(:mod:`radref.user.cli_common`), and exit with status 2; Ctrl-C exits with
status 130 (``train`` first saves a checkpoint and prints the command that
resumes: :mod:`radref.user.cli_train`).  Every option is checked, and every
output path, before any work starts.
"""
import argparse
import contextlib
import os
import sys
import time
import warnings

import numpy as np

from radref import datasets
from radref._version import __version__
from radref.training.checkpoint import CheckpointError
from radref.training.diagnostics import DivergenceWarning
from radref.training.hyperparameters import HYPERPARAMETER
from radref.training.signals import EXIT_TERMINATED, Terminated, sigterm_raises
from radref.user.inference import NonFiniteSampleWarning
from radref.training.train import NonFiniteError
from radref.user.cli_common import (DEFAULT_POINTS, EXIT_INTERRUPTED, OUTPUT_FILES, POINT_FILES,
                                    CLIError, add_command, add_jobs_argument,
                                    add_overwrite_argument, check_hyperparameter, CommandParser,
                                    check_jobs, check_positive, check_seed,
                                    need_matplotlib, output_name, read_model, read_points_of,
                                    say, writing)
from radref.user.cli_train import add_train_command, run_train
from radref.user.datafiles import (STDIO, DataFileError, DataFileWarning, check_output,
                                   write_array)
from radref.user.estimators import MODELS
from radref.user.protocol import FULL

#: status of a command whose standard output was closed early (128 + SIGPIPE)
EXIT_BROKEN_PIPE = 141
#: the demo's figure when --figure is not given (an earlier demo's figure
#: there is replaced; any other file is kept unless --overwrite)
DEMO_FIGURE = "radref-demo.png"

# ----------------------------------------------------------------- commands

def _cmd_data(args):
    check_positive(args.n, "-n")
    check_seed(args.seed)
    check_output("--out", args.out, overwrite=args.overwrite)
    X = datasets.sample(args.problem, args.n, random_state=args.seed)
    write_array("--out", args.out, X, overwrite=args.overwrite)
    say(f"wrote {args.n} points of {args.problem} (seed {args.seed}) to {output_name(args.out)}",
         to_stderr=args.out == STDIO)


def _cmd_demo(args):
    check_seed(args.seed)
    for option in ("n_train", "n_test", "rad_steps", "realnvp_steps"):
        check_positive(getattr(args, option), "--" + option.replace("_", "-"))
    check_hyperparameter("lr", args.lr)
    figure = DEMO_FIGURE if args.figure is None else args.figure
    replacing = bool(figure) and os.path.lexists(figure)
    replace = args.overwrite
    if figure:
        need_matplotlib("--figure")
        from radref.user.plots import written_by_demo
        # an earlier demo's figure at the default name is the demo's own: replaced
        replace = replace or (args.figure is None and written_by_demo(figure))
        check_output("--figure", figure, extensions=(".png",), allow_stdout=False,
                     overwrite=replace)
    start = time.perf_counter()
    X_train, X_test = datasets.train_test_split_samples(
        "two_moons", args.n_train, args.n_test, random_state=args.seed)
    models, scores = {}, {}
    for cls, steps in ((MODELS["rad"], args.rad_steps), (MODELS["realnvp"], args.realnvp_steps)):
        title = cls.display_name()
        t0 = time.perf_counter()
        model = cls(steps=steps, lr=args.lr, progress=not args.quiet, random_state=args.seed)
        if not args.quiet:  # the progress lines that follow do not name the model
            say(f"training {title} ({steps} steps) ...", to_stderr=True)
        model.fit(X_train)
        models[title], scores[title] = model, model.score(X_test)
        print(f"{title:9s} ({model.n_parameters():5d} parameters, {steps} steps): "
              f"held-out mean log-likelihood {scores[title]:+.4f} nats "
              f"({time.perf_counter() - t0:.1f} s)")
    best, _ = datasets.negative_entropy("two_moons", n=100_000, random_state=args.seed)
    print(f"best achievable (negative entropy of the data): {best:+.4f} nats")
    if figure:
        from radref.user.plots import plot_demo
        with writing("--figure", figure):
            plot_demo(figure, X_test, models, scores, best=best,
                      log_density=lambda X: datasets.log_density("two_moons", X),
                      random_state=args.seed, overwrite=replace)
        print(f"figure written to {figure}" + (" (replacing the previous one)" if replacing
                                                else ""))
    print(f"total time {time.perf_counter() - start:.1f} s")


def _cmd_score(args):
    check_jobs(args.jobs)
    if args.out:
        check_output("--out", args.out, inputs=[("--model", args.model), ("--data", args.data)],
                     overwrite=args.overwrite)
    model = read_model("--model", args.model)
    X = read_points_of("--data", args.data, model.n_features_in_, "--model", args.model)
    scores = model.set_params(n_jobs=args.jobs).score_samples(X)
    if args.out:
        write_array("--out", args.out, scores, overwrite=args.overwrite)
    mean = np.mean(scores)
    shown = f"{mean:+.6f}" if abs(mean) < 1e6 else f"{mean:+.6e}"  # -1.349e+33, not 34 digits
    say(f"mean log-likelihood {shown} nats over {scores.size} points",
        to_stderr=args.out == STDIO)


def _cmd_sample(args):
    check_seed(args.seed)
    check_positive(args.n, "-n")
    check_jobs(args.jobs)
    check_output("--out", args.out, inputs=[("--model", args.model)], overwrite=args.overwrite)
    model = read_model("--model", args.model).set_params(n_jobs=args.jobs)
    samples = model.sample(args.n, random_state=args.seed)
    write_array("--out", args.out, samples, overwrite=args.overwrite)
    say(f"wrote {args.n} samples to {output_name(args.out)}", to_stderr=args.out == STDIO)


def _cmd_plot(args):
    check_seed(args.seed)
    check_positive(args.n, "-n")
    out = args.out or os.path.splitext(args.model)[0] + ".png"
    check_output("--out", out, extensions=(".png",), allow_stdout=False,
                 inputs=[("MODEL", args.model), ("--data", args.data)], overwrite=args.overwrite)
    need_matplotlib("radref plot")
    model = read_model("MODEL", args.model)
    if model.n_features_in_ != 2:
        raise CLIError(f"MODEL {args.model}: a {model.n_features_in_}-dimensional model; "
                       f"radref plot draws 2-dimensional ones")
    X = None
    if args.data is not None:
        X = read_points_of("--data", args.data, 2, "MODEL", args.model)
    from radref.user.plots import plot_model
    with writing("--out", out):
        plot_model(out, model, data=X, n_samples=args.n, random_state=args.seed,
                   title=os.path.basename(args.model), overwrite=args.overwrite)
    print(f"figure written to {out}")


def _cmd_reproduce(args):
    from radref.user import cli_reproduce
    cli_reproduce.run_from_args(args)


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

D = {name: entry.default for name, entry in HYPERPARAMETER.items()}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="radref", description="Rad (Real and Discrete) normalizing flows in NumPy.",
        epilog=f"Training defaults of demo, train and the Python estimators: {D['steps']} "
               f"Adam steps, batch {D['batch_size']}, lr {D['lr']:g}; reproduce follows the "
               f"paper instead: {FULL['steps']} steps, batch {FULL['batch_size']}, lr "
               f"{FULL['lr']:g}.  'radref COMMAND --help' explains each command, with "
               f"examples.")
    parser.add_argument("--version", action="version", version=f"radref {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=CommandParser)
    _add_demo(sub)
    _add_data(sub)
    add_train_command(sub)
    _add_score(sub)
    _add_sample(sub)
    _add_plot(sub)
    rep = add_command(
        sub, "reproduce", "the paper's experiment (§4.3 table) or your sweep",
        "Train Rad and Real NVP on the six problems over several seeds (and any sweep of "
        "settings), on local worker processes or a Dask cluster; every run is keyed by its "
        "full protocol, reused only on an exact match, resumable (run the same command "
        "again after an interruption).", [
            ("radref reproduce --quick", "a smoke test of the whole pipeline (about a minute)"),
            ("radref reproduce", "the paper's protocol: 6 problems x 2 models x seeds 0 1 2"),
            ("radref reproduce --problems ring --seeds 0 1 2 3 4 --lr 1e-3 3e-3",
             "a sweep: 20 runs, then a table per setting"),
            ("python validation/paper_figures.py --results radref-results",
             "then: the paper's figures from your runs (in a clone of radref)")])
    from radref.user import cli_reproduce
    cli_reproduce.add_arguments(rep)
    rep.set_defaults(func=_cmd_reproduce)
    _add_golden(sub)
    _add_check_port(sub)
    return parser


def _add_demo(sub):
    demo = add_command(
        sub, "demo", "train Rad and Real NVP on two moons, report and plot",
        "Train Rad (8 hidden units) and Real NVP (56 hidden units), 6 coupling layers each, "
        "on the two-moons problem; print their held-out log-likelihoods next to the best "
        "achievable value; write a figure of the data, the samples and the densities.", [
            ("radref demo", f"about 20 s; writes {DEMO_FIGURE}"),
            ("radref demo --rad-steps 10000 --figure moons.png", "a longer Rad run")])
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--n-train", type=int, metavar="N", default=10_000, help="training points (default 10000)")
    demo.add_argument("--n-test", type=int, metavar="N", default=10_000, help="held-out points (default 10000)")
    demo.add_argument("--rad-steps", type=int, metavar="N", default=D["steps"],
                      help=f"Adam steps for Rad (default {D['steps']})")
    demo.add_argument("--realnvp-steps", type=int, metavar="N", default=D["steps"],
                      help=f"Adam steps for Real NVP (default {D['steps']})")
    demo.add_argument("--lr", type=float, default=D["lr"], metavar="X",
                      help=f"Adam learning rate (default {D['lr']:g})")
    demo.add_argument("--figure", default=None,
                      help=f"PNG to write (default {DEMO_FIGURE}, where an earlier demo's "
                           f"figure is replaced; empty string: none)")
    demo.add_argument("--overwrite", action="store_true",
                      help=f"replace --figure if it exists (by default another file is kept "
                           f"and the demo stops before any work; an earlier demo's "
                           f"{DEMO_FIGURE} is always replaced)")
    demo.add_argument("--quiet", action="store_true", help="no progress display")
    demo.set_defaults(func=_cmd_demo)


def _add_data(sub):
    data = add_command(
        sub, "data", "export points of a built-in problem",
        "Draw points from one of the paper's six problems (docs/datasets.md) and write them "
        "to a file, to train on with 'radref train --data'.", [
            ("radref data two_moons -n 10000 --out moons.csv", "10,000 points as CSV"),
            ("radref data spiral --seed 1 --out spiral.npy", "another draw, as a NumPy file"),
            ("radref data ring -n 5 --out -", "print 5 points")])
    data.add_argument("problem", choices=datasets.PROBLEMS, metavar="PROBLEM",
                      help=f"one of {', '.join(datasets.PROBLEMS)}")
    data.add_argument("-n", type=int, default=DEFAULT_POINTS,
                      help=f"number of points (default {DEFAULT_POINTS})")
    data.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    data.add_argument("--out", required=True, help=f"output (required): {OUTPUT_FILES}")
    add_overwrite_argument(data)
    data.set_defaults(func=_cmd_data)


def _add_score(sub):
    score = add_command(
        sub, "score", "log-density of points under a saved model",
        "Compute log p(x), in nats, of each point under a model saved by 'radref train': "
        "prints the mean (the held-out log-likelihood of the paper's tables) and, with "
        "--out, writes one value per point, in the points' order.", [
            ("radref data two_moons --seed 1 --out test.csv",
             "held-out points: another draw of the problem"),
            ("radref score --model rad.npz --data test.csv", "the mean log-likelihood"),
            ("radref score --model rad.npz --data test.csv --out scores.csv",
             "and the log-density of each point")])
    score.add_argument("--model", required=True,
                       help="model file written by 'radref train' (required)")
    score.add_argument("--data", required=True, help=f"points (required): {POINT_FILES}")
    score.add_argument("--out", help=f"write per-point log-densities here (default: none, only "
                                     f"the mean is printed): {OUTPUT_FILES}")
    add_jobs_argument(score, "computing the log-densities")
    add_overwrite_argument(score)
    score.set_defaults(func=_cmd_score)


def _add_sample(sub):
    sample = add_command(
        sub, "sample", "draw samples from a saved model",
        "Draw points from a model saved by 'radref train' (exact sampling: a Gaussian draw "
        "pushed through the inverse of every layer) and write them to a file.", [
            ("radref sample --model rad.npz -n 1000 --out samples.csv", "1000 points as CSV"),
            ("radref sample --model rad.npz -n 5 --seed 1 --out -", "print 5 points")])
    sample.add_argument("--model", required=True,
                        help="model file written by 'radref train' (required)")
    sample.add_argument("-n", type=int, default=1000, help="number of samples (default 1000)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--out", required=True, help=f"output (required): {OUTPUT_FILES}")
    add_jobs_argument(sample, "drawing the samples (the same samples for any --jobs)")
    add_overwrite_argument(sample)
    sample.set_defaults(func=_cmd_sample)


def _add_plot(sub):
    plot = add_command(
        sub, "plot", "draw a trained 2-D model: density, samples, folding",
        "Draw a trained 2-D model: its density, its samples, and what each coupling layer "
        "does to the points (for Rad, the folding: the branch k of each point).", [
            ("radref plot rad.npz", "writes rad.png"),
            ("radref plot rad.npz --data moons.csv --out rad-moons.png",
             "the training points pushed through the layers")])
    plot.add_argument("model", metavar="MODEL", help="model file written by 'radref train'")
    plot.add_argument("--data", help=f"points to draw and push through the layers (default: "
                                     f"the model's samples): {POINT_FILES}")
    plot.add_argument("-n", type=int, default=4000,
                      help="samples drawn from the model (default 4000)")
    plot.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    plot.add_argument("--out", help="PNG to write (default: MODEL with .png)")
    add_overwrite_argument(plot)
    plot.set_defaults(func=_cmd_plot)


def _add_golden(sub):
    gold = add_command(
        sub, "golden", "write the golden reference vectors for ports",
        "Write radref-golden.json and radref-golden.npz (inputs, parameters, outputs and "
        "gradients of every building block; see docs/golden.md), or say where the copy "
        "shipped with radref is.", [
            ("radref golden --where", "the directory of the shipped vectors"),
            ("radref golden --out vectors", "write them afresh into ./vectors")])
    where = gold.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="output directory (this or --where is required)")
    where.add_argument("--where", action="store_true",
                       help="print the directory of the vectors shipped with radref")
    gold.set_defaults(func=_cmd_golden)


def _add_check_port(sub):
    check = add_command(
        sub, "check-port", "compare a port's outputs with the golden vectors",
        "Compare the outputs and gradients in a port's JSON file (golden schema, cases "
        "matched by id) with the golden vectors; exit status 1 if a field is out of "
        "tolerance, 2 if a file is malformed.", [
            ("radref check-port my-port.json", "every block, float64 tolerances"),
            ("radref check-port my-port.json --tolerance float32 --partial",
             "a float32 port that implements some blocks so far")])
    check.add_argument("port", help="the port's results, JSON in the golden schema")
    check.add_argument("--golden", help="directory holding radref-golden.json "
                                        "(default: the vectors shipped with radref, "
                                        "see 'radref golden --where')")
    check.add_argument("--tolerance", choices=("float64", "float32"), default="float64",
                       help="rtol per entry, |port - golden| <= rtol (max(|golden|, M) + S): "
                            "float64: 1e-12 outputs, 1e-9 gradients; float32: 1e-4, 1e-3, "
                            "cases flagged Float64Only skipped (default float64)")
    check.add_argument("--partial", action="store_true",
                       help="blocks, cases or fields the port does not provide do not fail")
    check.set_defaults(func=_cmd_check_port)


def main(argv=None):
    """Run the command; returns the exit status (0, 1 for a failed check-port,
    2 for a user error, 130 after Ctrl-C, 141 when the reader of standard
    output closed it early, 143 after SIGTERM)."""
    argv = sys.argv[1:] if argv is None else [os.fspath(a) for a in argv]
    parser = build_parser()
    args, unrecognized = parser.parse_known_args(argv)
    if unrecognized:  # said by the command's parser: its usage, and a hint
        _subparsers(parser)[args.command].unrecognized(unrecognized)
    try:
        with sigterm_raises(), _warnings_as_lines():  # SIGTERM: like Ctrl-C, files cleaned up
            status = args.func(args, argv) if args.func is run_train else args.func(args)
    except (CLIError, DataFileError, CheckpointError) as exc:
        return _error(exc)
    except BrokenPipeError:
        # stdout closed early (radref sample --out - | head): not an error of
        # radref's; silence the flush at exit, as Python's docs advise, and
        # exit as a shell reports a process that SIGPIPE ended
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
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


def _subparsers(parser):
    """The parsers of the subcommands, by name."""
    return next(action for action in parser._actions
                if isinstance(action, argparse._SubParsersAction)).choices


def _error(message):
    print(f"radref: error: {message}", file=sys.stderr)
    return 2


@contextlib.contextmanager
def _warnings_as_lines():
    """radref's warnings about the results (a diverging training, samples that
    are not finite) as one line each on stderr, ``radref: warning: ...``."""
    ours = (DivergenceWarning, NonFiniteSampleWarning, DataFileWarning)
    with warnings.catch_warnings():
        for category in ours:  # shown as lines whatever the interpreter's filters say
            warnings.simplefilter("always", category)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, ours):
                print(f"radref: warning: {message}", file=sys.stderr, flush=True)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


if __name__ == "__main__":
    sys.exit(main())
