"""The flows' training chosen the way the baselines' settings are (issue 24):
on a validation split of the training points, never on the test points.

Stage ``select`` trains every candidate of :data:`GRID` (learning rate x
schedule, at each width of ``--hidden``) on the training points of a seed
minus a validation split (``validation_fraction`` of them, rows of
:func:`radref.training.schedules.validation_split` seeded by the seed, the
split the baselines use), for the protocol's 50,000 steps, and records the
mean log-likelihood of the validation rows at the end.  A candidate's
directory ``select/<problem>-<model>-h<hidden>-lr<lr>-<schedule>-s<seed>/``
holds ``result.json`` (and, while it trains, a checkpoint: rerun the same
command to resume).

Stage ``choose`` picks, per problem, model, width and seed, the candidate of
highest validation score, writes ``choices.json`` and prints the ``radref
reproduce`` commands that refit each chosen candidate **on all the training
points** (as the baselines are refitted once chosen), so that its held-out
scores can be paired with every other run of the seed (validation/study.py
reads the refits from their protocol directories: a variant named by its
rate, schedule and width).

Usage::

    python validation/select_flows.py select --out DIR --problems two_moons --seeds 0 1 2
    python validation/select_flows.py select --out DIR --models rad --hidden 32 64
    python validation/select_flows.py choose --out DIR
    python validation/select_flows.py choose --out DIR --apply-to 0 1 2 3 4   # chosen on one seed
    python validation/select_flows.py select --out DIR --quick     # smoke test (seconds)

A candidate whose training diverges (a non-finite loss) is recorded with
``val_loglik`` null and the error under ``diverged``, and never chosen.

Cost: one candidate costs one paper-protocol run (Rad about 3.3 CPU-minutes
in 2-D, Real NVP about 0.8), so the grid of ten candidates, two models, six
problems and five seeds is about 1,230 CPU-minutes before the refits; the
candidates of one rate alone, for one seed, about 50.
"""
import argparse
import itertools
import json
import os
import sys
import time

import numpy as np

#: candidate learning rates and schedules (cosine decays to 0 at the last step);
#: 1e-2 extends the grid past the rate most choices of the first grid sat at
#: (3e-3, its edge), as the mixture's component grid was extended, and 3e-2
#: past 1e-2, where half the choices sat next
GRID = {"lr": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2), "lr_schedule": ("constant", "cosine")}
PAPER_HIDDEN = {"rad": 8, "realnvp": 56}
FULL = dict(steps=50_000, n_train=10_000, batch_size=500, eval_every=2_500,
            validation_fraction=0.2)
QUICK = dict(steps=30, n_train=400, batch_size=100, eval_every=15, validation_fraction=0.25)


def paper_architecture(model):
    """The paper's architecture of ``model`` as ``radref reproduce`` runs it
    (its ``ARCHITECTURES``, without the estimator's name)."""
    try:
        from radref.user.protocol import ARCHITECTURES
    except ImportError:  # radref before the protocol module
        from radref.user.reproduce import ARCHITECTURES
    return {k: v for k, v in ARCHITECTURES[model].items() if k != "estimator"}


def candidate_name(problem, model, hidden, lr, schedule, seed):
    return f"{problem}-{model}-h{hidden}-lr{lr:g}-{schedule}-s{seed}"


def fit_rows(problem, seed, settings):
    """``(X_fit, X_val)``: the seed's training points (as ``radref reproduce``
    draws them) split into the rows a candidate trains on and the rows it is
    scored on."""
    from radref import datasets
    from radref.training.schedules import validation_split
    X_train, _ = datasets.train_test_split_samples(problem, settings["n_train"], 10,
                                                   random_state=seed)
    fit, val = validation_split(len(X_train), settings["validation_fraction"],
                                np.random.SeedSequence(seed))
    return X_train[fit], X_train[val]


def run_candidate(problem, model, hidden, lr, schedule, seed, settings, directory):
    """Train one candidate on the fit rows and score the validation rows
    (skipped when its ``result.json`` exists); returns the result."""
    from radref import RadFlow, RealNVPFlow
    result_file = os.path.join(directory, "result.json")
    if os.path.exists(result_file):
        with open(result_file) as f:
            return json.load(f)
    os.makedirs(directory, exist_ok=True)
    cpu = time.process_time()
    X_fit, X_val = fit_rows(problem, seed, settings)
    cls = {"rad": RadFlow, "realnvp": RealNVPFlow}[model]
    architecture = paper_architecture(model)
    architecture["hidden"] = hidden
    if "gate_hidden" in architecture:
        architecture["gate_hidden"] = hidden  # as radref reproduce --hidden does
    recipe = {"lr_schedule": schedule}
    if schedule == "cosine":
        recipe["lr_decay_steps"] = settings["steps"]
    flow = cls(**architecture, random_state=seed, steps=settings["steps"],
               batch_size=settings["batch_size"], lr=lr, eval_every=settings["eval_every"],
               progress=False, **recipe)
    from radref.training.train import NonFiniteError
    result = {"problem": problem, "model": model, "hidden": hidden, "lr": lr,
              "lr_schedule": schedule, "seed": seed, **settings}
    try:
        flow.fit(X_fit, X_val=X_val, checkpoint=os.path.join(directory, "checkpoint.npz"),
                 checkpoint_every=settings["eval_every"])
    except NonFiniteError as exc:
        # a rate too large for this problem: a candidate that is never chosen
        result.update(val_loglik=None, fit_loglik=None, diverged=str(exc))
    else:
        result.update(val_loglik=float(np.mean(flow.score_samples(X_val))),
                      fit_loglik=float(np.mean(flow.score_samples(X_fit))))
    result["cpu_seconds_this_session"] = time.process_time() - cpu
    with open(result_file + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(result_file + ".tmp", result_file)
    return result


def choose(results):
    """Per (problem, model, hidden, seed) the candidate of highest validation
    score: ``{key: result}`` with ``key = "problem model hidden seed"``; ties
    go to the first candidate of the grid's order (lr, then schedule)."""
    order = {(lr, s): i for i, (lr, s) in enumerate(itertools.product(*GRID.values()))}
    best = {}
    for r in sorted(results, key=lambda r: order[(r["lr"], r["lr_schedule"])]):
        if r["val_loglik"] is None:
            continue  # diverged
        key = f"{r['problem']} {r['model']} {r['hidden']} {r['seed']}"
        if key not in best or r["val_loglik"] > best[key]["val_loglik"]:
            best[key] = r
    return best


def apply_to(choices, seeds):
    """Each choice made on one seed, applied to every seed of ``seeds``.

    A choice per seed costs the whole grid per seed (about 150 CPU-minutes
    for the six 2-D problems); choosing once, on one seed's validation split,
    and refitting that setting at every seed costs the grid once.  The
    returned choices carry ``chosen_on_seed`` (the seed whose validation
    split chose them) and keep that seed's validation score.  A problem,
    model and width chosen on several seeds is refused: which to apply would
    be ambiguous.
    """
    by_cell = {}
    for r in choices.values():
        cell = (r["problem"], r["model"], r["hidden"])
        if cell in by_cell:
            raise ValueError(f"{' '.join(map(str, cell))} was chosen on seeds "
                             f"{by_cell[cell]['seed']} and {r['seed']}: --apply-to needs "
                             f"one selection seed per problem, model and width")
        by_cell[cell] = r
    applied = {}
    for (problem, model, hidden), r in sorted(by_cell.items()):
        for seed in seeds:
            applied[f"{problem} {model} {hidden} {seed}"] = dict(
                r, seed=seed, chosen_on_seed=r.get("chosen_on_seed", r["seed"]))
    return applied


def refit_commands(choices):
    """One ``radref reproduce`` command per chosen (rate, schedule, width,
    model, problem), listing its seeds."""
    groups = {}
    for r in choices.values():
        key = (r["lr"], r["lr_schedule"], r["model"], r["hidden"], r["problem"])
        groups.setdefault(key, []).append(r["seed"])
    lines = []
    for (lr, schedule, model, hidden, problem), seeds in sorted(groups.items()):
        width = "" if hidden == PAPER_HIDDEN[model] else f" --hidden {hidden}"
        lines.append(f"radref reproduce --problems {problem} --models {model} --seeds "
                     f"{' '.join(map(str, sorted(seeds)))} --lr {lr:g} --lr-schedule "
                     f"{schedule}{width}")
    return lines


def main(argv=None):
    from radref import datasets
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=["select", "choose"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--problems", nargs="+", default=list(datasets.PROBLEMS),
                        choices=datasets.PROBLEMS)
    parser.add_argument("--models", nargs="+", default=["rad", "realnvp"],
                        choices=["rad", "realnvp"])
    parser.add_argument("--hidden", nargs="+", type=int,
                        help="widths (default: each model's paper width)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--apply-to", nargs="+", type=int, metavar="SEED",
                        help="choose: apply each choice (made on one seed) to these seeds")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    directory = os.path.join(args.out, "select")
    if args.stage == "select":
        for problem, model, seed in itertools.product(args.problems, args.models, args.seeds):
            for hidden in args.hidden or [PAPER_HIDDEN[model]]:
                for lr, schedule in itertools.product(*GRID.values()):
                    r = run_candidate(problem, model, hidden, lr, schedule, seed, settings,
                                      os.path.join(directory, candidate_name(
                                          problem, model, hidden, lr, schedule, seed)))
                    score = ("diverged" if r["val_loglik"] is None
                             else f"validation {r['val_loglik']:+.4f}")
                    print(f"{candidate_name(problem, model, hidden, lr, schedule, seed)}: "
                          f"{score}", flush=True)
        return 0
    results = []
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        path = os.path.join(directory, name, "result.json")
        if os.path.exists(path):
            with open(path) as f:
                results.append(json.load(f))
    choices = choose(results)
    if args.apply_to:
        choices = apply_to(choices, args.apply_to)
    with open(os.path.join(args.out, "choices.json"), "w") as f:
        json.dump(choices, f, indent=1)
    for key, r in sorted(choices.items()):
        on = f", chosen on seed {r['chosen_on_seed']}" if "chosen_on_seed" in r else ""
        print(f"{key}: lr {r['lr']:g}, {r['lr_schedule']} (validation "
              f"{r['val_loglik']:+.4f}{on})")
    print("\n".join(["", "# refit each choice on all the training points:",
                     *refit_commands(choices)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
