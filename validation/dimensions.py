"""Beyond two dimensions (issue 24): Rad, Real NVP, a Gaussian mixture and a
kernel density estimate on the rotated products of :mod:`radref.datasets_nd`
(4, 6 and 8 dimensions), with the paper protocol's training and the
baselines' selection of validation/baselines.py.

Each run is what ``radref reproduce`` would do for a 2-D problem: seed ``s``
draws ``datasets_nd.train_test_split_samples(problem, 10000, 10000,
random_state=s)`` and seeds the model; the paper's architectures (6 coupling
layers; Rad 8 hidden units, Real NVP 56; not widened for the higher
dimension), Adam at 1e-3, 50,000 steps at batch 500, held-out score every
2,500 steps.  A run writes ``flows/<problem>-<model>-s<seed>/`` with
``result.json`` (scores, learning curve, CPU and wall time) and
``test_points.npz`` (key ``model``: the per-point held-out
log-likelihoods); its ``checkpoint.npz`` lets an interrupted run resume
(rerun the same command; finished runs are skipped).  The baselines go to
``baselines/`` through validation/baselines.py.

Usage::

    python validation/dimensions.py --out DIR --seeds 0              # flows and baselines
    python validation/dimensions.py --out DIR --seeds 0 --models rad realnvp
    python validation/dimensions.py --out DIR --quick                # smoke test (seconds)
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import baselines  # noqa: E402  (validation/baselines.py)

FULL = dict(steps=50_000, n_train=10_000, n_test=10_000, batch_size=500, lr=1e-3,
            eval_every=2_500)
QUICK = dict(steps=40, n_train=600, n_test=300, batch_size=200, lr=1e-3, eval_every=20)


def estimator(model):
    from radref import RadFlow, RealNVPFlow
    return {"rad": RadFlow, "realnvp": RealNVPFlow}[model]


def paper_architecture(model):
    """The paper's architecture of ``model`` as ``radref reproduce`` runs it
    (its ``ARCHITECTURES``, without the estimator's name)."""
    try:
        from radref.user.protocol import ARCHITECTURES
    except ImportError:  # radref before the protocol module
        from radref.user.reproduce import ARCHITECTURES
    return {k: v for k, v in ARCHITECTURES[model].items() if k != "estimator"}


def run_flow(problem, model, seed, settings, directory):
    """Train one flow (resuming from its checkpoint) and write its result;
    returns the result dict (read back when the run had finished before)."""
    from radref import datasets_nd
    result_file = os.path.join(directory, "result.json")
    if os.path.exists(result_file):
        with open(result_file) as f:
            return json.load(f)
    os.makedirs(directory, exist_ok=True)
    cpu, wall = time.process_time(), time.perf_counter()
    X_train, X_test = datasets_nd.train_test_split_samples(
        problem, settings["n_train"], settings["n_test"], random_state=seed)
    cls = estimator(model)
    architecture = paper_architecture(model)
    flow = cls(**architecture, random_state=seed, steps=settings["steps"],
               batch_size=settings["batch_size"], lr=settings["lr"],
               eval_every=settings["eval_every"], progress=False)
    flow.fit(X_train, X_val=X_test, checkpoint=os.path.join(directory, "checkpoint.npz"),
             checkpoint_every=settings["eval_every"])
    points = flow.score_samples(X_test)
    np.savez(os.path.join(directory, "test_points.npz"), model=points)
    result = {"problem": problem, "model": model, "seed": seed, **settings,
              "dimension": datasets_nd.dimension(problem), "architecture": architecture,
              "n_parameters": int(flow.n_parameters()),
              "train_loglik": float(np.mean(flow.score_samples(X_train))),
              "test_loglik": float(np.mean(points)),
              "cpu_seconds_this_session": time.process_time() - cpu,
              "wall_seconds_this_session": time.perf_counter() - wall}
    with open(result_file + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(result_file + ".tmp", result_file)
    return result


def main(argv=None):
    from radref import datasets_nd
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory (runs/, baselines/)")
    parser.add_argument("--problems", nargs="+", default=list(datasets_nd.PROBLEMS),
                        choices=datasets_nd.PROBLEMS)
    parser.add_argument("--models", nargs="+", default=["rad", "realnvp", "baselines"],
                        choices=["rad", "realnvp", "baselines"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    for problem in args.problems:  # one problem at a time: flows, then its baselines
        for seed in args.seeds:
            for model in args.models:
                if model == "baselines":
                    continue
                r = run_flow(problem, model, seed, settings,
                             os.path.join(args.out, "flows", f"{problem}-{model}-s{seed}"))
                print(f"{problem} {model} seed {seed}: held-out {r['test_loglik']:+.4f}",
                      flush=True)
        if "baselines" in args.models:
            out = os.path.join(args.out, "baselines")
            os.makedirs(out, exist_ok=True)
            baselines.main((["--quick"] if args.quick else []) +
                           ["--problems", problem, "--seeds", *map(str, args.seeds),
                            "--n-train", str(settings["n_train"]), "--n-test",
                            str(settings["n_test"]), "--json",
                            os.path.join(out, "baselines.json"),
                            "--per-point", os.path.join(out, "points"), "--resume"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
