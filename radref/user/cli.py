"""Command-line interface: ``radref demo | train | score | sample``."""
import argparse
import os
import sys
import time
import warnings

import numpy as np

from radref import datasets
from radref.training.checkpoint import CheckpointError
from radref.user.estimators import RadFlow, RealNVPFlow, load_model
from radref.training.train import NonFiniteError

MODELS = {"rad": RadFlow, "realnvp": RealNVPFlow}


class CLIError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def _read_array(path):
    if not os.path.exists(path):
        raise CLIError(f"no such file: {path}")
    if path.endswith(".npy"):
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise CLIError(f"{path}: not a readable .npy array ({exc})") from None
    if path.endswith(".csv"):
        with warnings.catch_warnings():
            # np.loadtxt only warns on a file without data rows: make it an error.
            warnings.simplefilter("error", UserWarning)
            try:
                return np.loadtxt(path, delimiter=",", ndmin=2)
            except UserWarning:
                raise CLIError(f"{path}: the CSV file holds no data") from None
            except ValueError as exc:
                raise CLIError(f"{path}: not a numeric CSV file ({exc})") from None
    raise CLIError(f"{path}: expected a .npy or .csv file")


def _check_seed(seed, option="--seed"):
    if seed < 0:
        raise CLIError(f"{option} must be >= 0, got {seed}")
    return seed


def _check_output(path, extensions=(".npy", ".csv")):
    """Fail before any work if ``path`` cannot be written: wrong extension or
    missing directory."""
    if extensions and not path.endswith(extensions):
        raise CLIError(f"{path}: output must end in {' or '.join(extensions)}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CLIError(f"{path}: directory {directory} does not exist")


def _write_array(path, array):
    if path.endswith(".npy"):
        np.save(path, array)
    elif path.endswith(".csv"):
        np.savetxt(path, array, delimiter=",", fmt="%.17g")
    else:
        raise CLIError(f"{path}: output must end in .npy or .csv")


def _cmd_demo(args):
    _check_seed(args.seed)
    if args.figure:
        _check_output(args.figure, extensions=())
    start = time.perf_counter()
    X_train, X_test = datasets.train_test_split_samples(
        "two_moons", args.n_train, args.n_test, random_state=args.seed)
    models = {}
    for title, cls, steps in (("Rad", RadFlow, args.rad_steps),
                              ("Real NVP", RealNVPFlow, args.realnvp_steps)):
        t0 = time.perf_counter()
        model = cls(random_state=args.seed).fit(X_train, steps=steps, lr=args.lr,
                                                batch_size=min(500, len(X_train)),
                                                progress=False if args.quiet else None)
        models[title] = model
        print(f"{title:9s} ({model.n_parameters():5d} parameters, {steps} steps): "
              f"held-out mean log-likelihood {model.score(X_test):+.4f} nats "
              f"({time.perf_counter() - t0:.1f} s)")
    best, _ = datasets.negative_entropy("two_moons", n=100_000, random_state=args.seed)
    print(f"best achievable (negative entropy of the data): {best:+.4f} nats")
    if args.figure:
        from radref.user.plots import plot_data_samples_density
        plot_data_samples_density(args.figure, X_test, models, random_state=args.seed)
        print(f"figure written to {args.figure}")
    print(f"total time {time.perf_counter() - start:.1f} s")


def _cmd_train(args):
    _check_seed(args.seed)
    _check_output(args.out, extensions=())
    if args.data:
        X = _read_array(args.data)
    else:
        X = datasets.sample(args.problem, args.n, random_state=args.seed)
    cls = MODELS[args.model]
    kwargs = dict(n_layers=args.layers, random_state=args.seed)
    if args.hidden is not None:
        kwargs["hidden"] = args.hidden
    if args.gate_hidden is not None:
        if args.model != "rad":
            raise CLIError("--gate-hidden applies to --model rad only")
        kwargs["gate_hidden"] = args.gate_hidden
    model = cls(**kwargs).fit(X, steps=args.steps, batch_size=min(args.batch_size, len(X)),
                              lr=args.lr, progress=False if args.quiet else None)
    model.save(args.out)
    print(f"trained {cls.__name__} on {X.shape[0]} points for {args.steps} steps: "
          f"mean log-likelihood {model.score(X):+.4f} nats; saved to {args.out}")


def _cmd_score(args):
    if args.out:
        _check_output(args.out)
    model = load_model(args.model)
    scores = model.score_samples(_read_array(args.data))
    if args.out:
        _write_array(args.out, scores)
    print(f"mean log-likelihood {np.mean(scores):+.6f} nats over {scores.size} points")


def _cmd_sample(args):
    _check_seed(args.seed)
    _check_output(args.out)
    model = load_model(args.model)
    samples = model.sample(args.n, random_state=args.seed)
    _write_array(args.out, samples)
    print(f"wrote {args.n} samples to {args.out}")


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
        raise CLIError(f"no such file: {args.port}")
    golden_dir = args.golden or golden.default_golden_dir()
    if golden_dir is None:
        raise CLIError("this radref installation ships no golden vectors: pass --golden DIR "
                       "(a directory written by 'radref golden --out DIR')")
    golden_path = os.path.join(golden_dir, golden.JSON_NAME)
    if not os.path.exists(golden_path):
        raise CLIError(f"no {golden.JSON_NAME} in {golden_dir}")
    gold = golden.load_document(golden_path)
    port = golden.from_json(golden.read_json(args.port), where=args.port)
    report = golden.check_port(port, gold, tolerance=args.tolerance, partial=args.partial)
    print(golden.format_report(report, title=f"{args.port} against {golden_path} "
                                             f"({args.tolerance} tolerances)"))
    if not report.passed:
        sys.exit(1)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="radref", description="Rad (Real and Discrete) normalizing flows in NumPy.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train Rad and Real NVP on two moons, report and plot",
                          description="Train Rad (8 hidden units) and Real NVP (56 hidden "
                                      "units), 6 coupling layers each, on the two-moons "
                                      "problem; print held-out log-likelihoods; write a figure.")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--n-train", type=int, default=10_000, help="training points (default 10000)")
    demo.add_argument("--n-test", type=int, default=10_000, help="held-out points (default 10000)")
    demo.add_argument("--rad-steps", type=int, default=3000, help="Adam steps for Rad (default 3000)")
    demo.add_argument("--realnvp-steps", type=int, default=3000,
                      help="Adam steps for Real NVP (default 3000)")
    demo.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (default 5e-3)")
    demo.add_argument("--figure", default="radref-demo.png",
                      help="PNG to write (default radref-demo.png; empty string: none)")
    demo.add_argument("--quiet", action="store_true", help="no progress display")
    demo.set_defaults(func=_cmd_demo)

    train = sub.add_parser("train", help="fit a model and save it",
                           description="Fit a model to a data file or to a built-in problem.")
    source = train.add_mutually_exclusive_group()
    source.add_argument("--data", help="training data, .npy or .csv, shape (n, d)")
    source.add_argument("--problem", default="two_moons", choices=datasets.PROBLEMS,
                        help="built-in problem used when --data is not given (default two_moons)")
    train.add_argument("-n", type=int, default=10_000, help="points drawn from --problem")
    train.add_argument("--model", choices=sorted(MODELS), default="rad", help="model (default rad)")
    train.add_argument("--layers", type=int, default=6, help="coupling layers (default 6)")
    train.add_argument("--hidden", type=int, default=None,
                       help="hidden units (default: 8 for rad, 56 for realnvp)")
    train.add_argument("--gate-hidden", type=int, default=None,
                       help="hidden units of the Rad gating network (default: --hidden)")
    train.add_argument("--steps", type=int, default=5000, help="Adam steps (default 5000)")
    train.add_argument("--batch-size", type=int, default=500, help="minibatch size (default 500)")
    train.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (default 5e-3)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--out", required=True, help="checkpoint file to write (.npz)")
    train.add_argument("--quiet", action="store_true", help="no progress display")
    train.set_defaults(func=_cmd_train)

    score = sub.add_parser("score", help="log-density of points under a saved model")
    score.add_argument("--model", required=True, help="checkpoint written by 'radref train'")
    score.add_argument("--data", required=True, help="points, .npy or .csv")
    score.add_argument("--out", help="write per-point log-densities here (.npy or .csv)")
    score.set_defaults(func=_cmd_score)

    sample = sub.add_parser("sample", help="draw samples from a saved model")
    sample.add_argument("--model", required=True, help="checkpoint written by 'radref train'")
    sample.add_argument("-n", type=int, default=1000, help="number of samples (default 1000)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--out", required=True, help="output file, .npy or .csv")
    sample.set_defaults(func=_cmd_sample)

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
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CLIError, CheckpointError, ValueError, TypeError, OSError, ImportError,
            NonFiniteError) as exc:
        print(f"radref: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:  # e.g. sample -n 10**14
        print(f"radref: error: out of memory ({exc})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
