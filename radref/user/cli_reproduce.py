"""``radref reproduce``: its options (:func:`add_arguments`) and the command
(:func:`run_from_args`): plan the runs of a sweep, train them on a local pool
or a Dask cluster (:mod:`radref.user.sweep`), write the tables.
"""
import itertools
import math
import os
import subprocess
import time
import uuid

from radref import datasets
from radref.user import sweep
from radref.user.options import (OptionError, add_options, add_recipe_arguments, check_option,
                                 describe_recipe, recipe_from_args)
from radref.user.protocol import (ARCHITECTURES, DEFAULT_OUT, FULL, MODELS, PROGRESS_FILE, QUICK,
                                  ReproduceError, describe_differences, describe_protocol,
                                  make_protocol, protocol_dir, protocol_hash, run_label,
                                  run_spec)
from radref.user.reproduce import (nearest_stored_protocol, plan_runs, run_task,
                                   unique_protocols, write_plan)
from radref.user.tables import (finished_results, markdown_table, negative_entropies,
                                summarize, write_tables)


def add_arguments(parser):
    """The options of ``radref reproduce``."""
    sizes = "one value or several (a sweep: every combination is a run)"
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke-test protocol: {QUICK['steps']} steps, {QUICK['n_train']} "
                             f"points, seed 0 (overrides below still apply)")
    parser.add_argument("--problems", nargs="+", default=list(datasets.PROBLEMS),
                        choices=datasets.PROBLEMS, metavar="PROBLEM",
                        help=f"problems among {', '.join(datasets.PROBLEMS)} (default: all)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS,
                        metavar="MODEL", help="models: rad, realnvp (default: both)")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                        help="seeds (default 0 1 2; --quick: 0)")
    add_options(parser, ("steps", "lr", "batch_size"), defaults=False, nargs="+",
                suffix=f", {sizes}", default_text={
                    name: f"default {FULL[name]:g}; --quick: {QUICK[name]:g}"
                    for name in ("steps", "lr", "batch_size")})
    for option, what in (("--n-train", "training points"), ("--n-test", "held-out points")):
        key = option[2:].replace("-", "_")
        parser.add_argument(option, type=int, nargs="+", metavar="N",
                            help=f"{what}, {sizes} (default {FULL[key]}; --quick: {QUICK[key]})")
    add_options(parser, ("hidden",), defaults=False, nargs="+",
                suffix=f" of both models (Rad's gating network too), {sizes}",
                default_text={"hidden": "default: the paper's, " + ", ".join(
                    f"{a['hidden']} for {m}" for m, a in ARCHITECTURES.items())})
    add_recipe_arguments(parser)
    parser.add_argument("--eval-every", type=int, metavar="N",
                        help="steps between held-out scores, checkpoints and progress reports "
                             f"(default {FULL['eval_every']}; --quick: {QUICK['eval_every']})")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"output directory (default ./{DEFAULT_OUT}); one subdirectory "
                             f"per protocol")
    parser.add_argument("--write-committed", action="store_true",
                        help="allow --out to be a directory holding files under version "
                             "control (e.g. validation/results); refused otherwise")
    backend = parser.add_mutually_exclusive_group()
    backend.add_argument("--workers", type=int, metavar="N",
                         help="local worker processes (default: all cores)")
    backend.add_argument("--scheduler", metavar="ADDRESS",
                         help="run on the dask.distributed cluster of this scheduler "
                              "(e.g. tcp://host:8786); --out must be a path every worker "
                              "sees (pip install 'radref[dask]'); default: none, local "
                              "workers")
    parser.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                        help="seconds between progress lines (default 30)")
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: print and write the tables of the finished runs")
    parser.add_argument("--no-retrain", action="store_true",
                        help="refuse, rather than train again, a finished run whose files fail "
                             "verification (edited, damaged or unreadable)")


def _positive(option, values, minimum=1):
    for value in values:
        if value < minimum:
            raise ReproduceError(f"{option} must be >= {minimum}, got {value}")
    return values


def sweep_settings(args):
    """Protocol lists from the options, checked before anything is written."""
    base = QUICK if args.quick else FULL
    settings = {
        "steps": args.steps or [base["steps"]],
        "n_train": _positive("--n-train", args.n_train or [base["n_train"]]),
        "n_test": _positive("--n-test", args.n_test or [base["n_test"]]),
        "batch_size": args.batch_size or [base["batch_size"]],
        "lr": args.lr or [base["lr"]],
        "eval_every": [args.eval_every or base["eval_every"]],
        "hidden": args.hidden or [None],
    }
    try:
        for name in ("steps", "batch_size", "lr", "eval_every", "hidden"):
            for value in settings[name]:
                check_option(name, value)  # the table's check, worded with the option
        settings["recipe"] = recipe_from_args(args)
    except OptionError as exc:
        raise ReproduceError(str(exc)) from None
    if max(settings["batch_size"]) > min(settings["n_train"]):
        raise ReproduceError(f"--batch-size {max(settings['batch_size'])} is larger than "
                             f"--n-train {min(settings['n_train'])}")
    seeds = _positive("--seeds", args.seeds or list(base["seeds"]), minimum=0)
    if args.workers is not None:
        _positive("--workers", [args.workers])
    if not args.progress_every > 0:
        raise ReproduceError(f"--progress-every must be > 0, got {args.progress_every}")
    return settings, seeds


def sweep_specs(settings, seeds, problems, models):
    """Every run of the sweep, seed by seed (an interrupted sweep has complete
    tables for its first seeds), Rad first (its runs are the slow ones)."""
    protocols = [make_protocol(steps, n_train, n_test, batch, lr, eval_every, hidden,
                               settings.get("recipe"))
                 for steps, n_train, n_test, batch, lr, eval_every, hidden in itertools.product(
                     settings["steps"], settings["n_train"], settings["n_test"],
                     settings["batch_size"], settings["lr"], settings["eval_every"],
                     settings["hidden"])]
    specs = {}
    for seed in dict.fromkeys(seeds):
        for protocol in protocols:
            for model in dict.fromkeys(models):
                for problem in dict.fromkeys(problems):
                    spec = run_spec(problem, model, seed, protocol)
                    specs[(problem, model, seed, spec["protocol_hash"])] = spec
    return list(specs.values())


def tracked_files(path):
    """Files under ``path`` that git tracks (none when git or a repository is absent)."""
    path = os.path.abspath(path)
    existing = path
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    try:
        listing = subprocess.run(["git", "-C", existing, "ls-files", "-z", "--", path],
                                 capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if listing.returncode != 0:  # not in a repository
        return []
    return [name for name in listing.stdout.split(b"\0") if name]


def output_directory(args, log):
    """The absolute output directory, after refusing one of committed results
    unless ``--write-committed``."""
    out = os.path.abspath(args.out)
    tracked = tracked_files(out)
    if tracked and not args.write_committed:
        raise ReproduceError(f"{args.out} holds {len(tracked)} file(s) under version control "
                             f"(committed results): radref reproduce writes there only with "
                             f"--write-committed; choose another --out (default ./{DEFAULT_OUT})")
    state = (f"holds {len(tracked)} committed file(s); --write-committed given" if tracked
             else "not under version control")
    log(f"output directory: {out} ({state})")
    return out


def _backend(args, n_jobs):
    if args.scheduler:
        return sweep.DaskCluster(args.scheduler)
    return sweep.LocalPool(max(1, min(args.workers or os.cpu_count() or 1, n_jobs)))


def report_plan(out, planned, log):
    """How many runs are reused, from where, resumed and new."""
    protocols = unique_protocols([p.spec for p in planned])
    for protocol in protocols:
        directory = protocol_dir(out, protocol)
        mine = [p for p in planned if p.spec["protocol_hash"] == protocol_hash(protocol)]
        reused = sum(p.status == "reused" for p in mine)
        log(f"{os.path.basename(directory)}: {describe_protocol(protocol)}")
        if reused:
            log(f"  reused {reused} finished run(s) of this exact protocol from "
                f"{os.path.join(directory, 'runs')}")
        elif not os.path.exists(os.path.join(directory, "protocol.json")):
            nearest = nearest_stored_protocol(out, protocol)
            note = ("" if nearest is None else f"; nearest stored protocol {nearest[0]} "
                    f"differs in {describe_differences(nearest[1], 'there', 'here')}")
            log(f"  new protocol (hash {protocol_hash(protocol)[:12]}){note}")
        for p in mine:
            if p.damaged:
                log(f"  damaged, trained again: {p.damaged} (moved aside: "
                    f"{', '.join(name + '.damaged' for name in p.damaged_files) or 'nothing'})")
        resumed = [p for p in mine if p.status == "resume"]
        for p in resumed:
            log(f"  resuming {run_label(p.spec)} from its checkpoint at step {p.start_step}")
    n_reused = sum(p.status == "reused" for p in planned)
    log(f"{len(planned)} run(s): {n_reused} reused, "
        f"{sum(p.status == 'resume' for p in planned)} resumed, "
        f"{sum(p.status == 'new' for p in planned)} new")


def make_jobs(planned):
    """One :class:`~radref.user.sweep.Job` per run to train."""
    session = uuid.uuid4().hex
    several = len(unique_protocols([p.spec for p in planned])) > 1
    return [sweep.Job(label=run_label(p.spec, several),
                      payload={"run": p.spec, "run_dir": p.directory, "session": session},
                      key=f"radref-{p.spec['problem']}-{p.spec['model']}-s{p.spec['seed']}-"
                          f"{p.spec['protocol_hash'][:12]}",
                      progress_path=os.path.join(p.directory, PROGRESS_FILE),
                      steps=p.spec["protocol"]["steps"], start_step=p.start_step,
                      rate_key=f"{p.spec['protocol_hash']}-{p.spec['model']}")
            for p in planned if p.status != "reused"]


def execute(out, planned, backend, progress_every, log):
    """Train every run that is not reused on the entered ``backend``; returns
    the results of the whole sweep (reused ones included)."""
    jobs = make_jobs(planned)
    results = [p.result for p in planned if p.status == "reused"]
    session = jobs[0].payload["session"]

    def finished(job, result, n_done, n_total):
        resumed = (f", resumed from step {result['resumed_from_step']}"
                   if result["resumed_from_step"] else "")
        test, train = (-math.inf if result[k] is None else result[k]  # null: -inf
                       for k in ("test_loglik", "train_loglik"))
        steps = [w["step"] for w in result.get("divergence_warnings", [])]
        diverged = (f"; diverging for a while (warned at step{'s' * (len(steps) > 1)} "
                    f"{', '.join(map(str, steps))})" if steps else "")
        log(f"[{n_done}/{n_total}] {job.label}: test {test:+.3f}  train "
            f"{train:+.3f}  ({result['seconds_this_session']:.1f} s{resumed}{diverged})")

    log(f"running {len(jobs)} run(s) on a {backend.description}")
    start = time.monotonic()
    new, failures = sweep.run_jobs(jobs, run_task, backend, session, finished, log=log,
                                   progress_every=progress_every, already_done=len(results))
    log(f"trained {len(new)} run(s) in {time.monotonic() - start:.1f} s of wall time; the "
        f"runs' own time: {sum(r['seconds_this_session'] for r in new):.1f} s over "
        f"{backend.slots()} worker slot(s)")
    if failures:
        write_protocol_tables(out, planned, log=log)
        listed = "; ".join(f"{job.label}: {type(exc).__name__}: {exc}" for job, exc in failures)
        raise ReproduceError(f"{len(failures)} of {len(planned)} run(s) failed ({listed}); "
                             f"finished runs are kept: the same command retries the others")
    return results + new


def write_protocol_tables(out, planned, entropies=None, entropy_points=200_000, log=None):
    """Tables of every finished run in each protocol directory of the sweep
    (also of runs that earlier invocations finished there; runs that fail
    verification are left out and named to ``log``).  ``entropies``
    (problem -> best achievable value) is completed for the problems found."""
    for protocol in unique_protocols([p.spec for p in planned]):
        directory = protocol_dir(out, protocol)
        results = finished_results(directory, log)
        if results and entropies is not None:
            missing = sorted({r["problem"] for r in results} - set(entropies))
            entropies.update(negative_entropies(missing, n=entropy_points))
        if results:
            write_tables(results, directory, entropies, protocol.get("recipe"), protocol)


def run_from_args(args, log=None):
    """``radref reproduce``: plan, run, and print one §4.3 table per protocol."""
    log = log or (lambda line: print(line, flush=True))
    settings, seeds = sweep_settings(args)
    out = output_directory(args, log)
    specs = sweep_specs(settings, seeds, args.problems, args.models)
    planned = plan_runs(out, specs, retrain=not args.no_retrain)
    if args.table_only:
        for p in planned:
            if p.damaged:
                log(f"left out of the tables, damaged: {p.damaged}")
        planned = [p for p in planned if p.status == "reused"]
        if not planned:
            legacy = (" (its runs/ folder is of the layout before protocol-keyed runs, which "
                      "records no protocol)" if os.path.isdir(os.path.join(out, "runs")) else "")
            raise ReproduceError(f"no finished runs of the requested protocol(s) under "
                                 f"{out}{legacy}")
    log(f"{len(specs)} run(s): {len(set(args.problems))} problem(s) x "
        f"{len(set(args.models))} model(s) x "
        f"{len(set(seeds))} seed(s) x {len(unique_protocols(specs))} protocol(s)")
    report_plan(out, planned, log)
    if all(p.status == "reused" for p in planned):
        results = [p.result for p in planned]
    else:
        # Reach the workers before writing anything: a wrong address leaves no trace.
        with _backend(args, sum(p.status != "reused" for p in planned)) as backend:
            write_plan(out, planned)
            results = execute(out, planned, backend, args.progress_every, log)
    entropy_points = 20_000 if args.quick else 200_000
    entropies = negative_entropies(dict.fromkeys(args.problems), n=entropy_points)
    write_protocol_tables(out, planned, entropies, entropy_points, log)
    for protocol in unique_protocols([p.spec for p in planned]):
        mine = [r for r in results if r["protocol_hash"] == protocol_hash(protocol)]
        log(f"\n{os.path.basename(protocol_dir(out, protocol))} "
            f"({len(mine)} run(s) of this sweep; tables of all its finished runs in "
            f"{protocol_dir(out, protocol)}):")
        if protocol.get("recipe"):
            log(f"training recipe: {describe_recipe(protocol['recipe'])} (the paper's columns: "
                f"the paper's training)")
        log(markdown_table(summarize(mine), entropies, protocol))
    return results
