"""Baselines a user would pick instead of a flow for low-dimensional density
estimation, on the splits of the reproduce protocol (issue 15):

- ``GaussianMixture`` (full covariances): the number of components is chosen
  by BIC computed on a **validation split carved from the training points**
  (``validation_fraction`` of them, rows drawn with
  :func:`radref.training.schedules.validation_split` seeded by the seed):
  each candidate is fitted on the other training rows, and its BIC is
  ``-2 * (total validation log-likelihood) + n_parameters * log(n_validation)``;
  the chosen number is then refitted on all the training points.  (BIC, not
  a parameter count matched to the flows'.)
- ``KernelDensity`` (Gaussian kernel): the bandwidth is chosen by k-fold
  cross-validation (held-out log-likelihood) **on the training points**, over
  a grid of multiples of Scott's rule, then refitted on all the training points.

The test points are never used to choose anything.  Each seed ``s`` draws its
data with ``radref.datasets.train_test_split_samples(problem, n_train, n_test,
random_state=s)``, exactly as ``radref reproduce`` does (radref/user/reproduce.py,
``run_task``), so the held-out log-likelihoods are on the very test points the
flows are scored on and can be paired with them (validation/paired.py).

Usage::

    python validation/baselines.py                 # paper sizes, 6 problems, seeds 0-4
    python validation/baselines.py --quick         # a smoke test (seconds)
    python validation/baselines.py --json out.json --per-point out-dir/

Prints the held-out mean log-likelihood (nats) per problem and seed, and the
mean over seeds.  Needs scikit-learn (``pip install "radref[baselines]"``).
"""
import argparse
import json
import math
import os
import sys

import numpy as np

from radref import datasets
from radref.training.schedules import validation_split

FULL = dict(n_train=10_000, n_test=10_000, seeds=(0, 1, 2, 3, 4), max_components=30,
            bandwidth_factors=tuple(np.round(np.geomspace(0.05, 1.5, 16), 4)), folds=5,
            validation_fraction=0.2)
QUICK = dict(n_train=400, n_test=300, seeds=(0,), max_components=3,
             bandwidth_factors=(0.3, 1.0), folds=2, validation_fraction=0.25)


def gmm_parameter_count(k, d):
    """Free parameters of a full-covariance mixture of ``k`` Gaussians in ``d``
    dimensions: ``k - 1`` weights, ``k d`` means, ``k d (d + 1) / 2`` covariances."""
    return (k - 1) + k * d + k * d * (d + 1) // 2


def fit_gaussian_mixture(X_train, seed, max_components, validation_fraction):
    """The mixture with the number of components of least validation BIC,
    refitted on all of ``X_train``; returns ``(model, k, bic_by_k)``."""
    from sklearn.mixture import GaussianMixture
    fit_rows, val_rows = validation_split(len(X_train), validation_fraction,
                                          np.random.SeedSequence(seed))
    X_fit, X_val = X_train[fit_rows], X_train[val_rows]
    bic = {}
    for k in range(1, max_components + 1):
        if k > len(X_fit):
            break
        model = GaussianMixture(k, covariance_type="full", random_state=seed, n_init=1)
        model.fit(X_fit)
        total = float(np.sum(model.score_samples(X_val)))
        bic[k] = -2.0 * total + gmm_parameter_count(k, X_train.shape[1]) * math.log(len(X_val))
    best = min(bic, key=bic.get)
    model = GaussianMixture(best, covariance_type="full", random_state=seed, n_init=1)
    return model.fit(X_train), best, bic


def scott_bandwidth(X):
    """Scott's rule for an isotropic Gaussian kernel: mean sd times ``n^(-1/(d+4))``."""
    n, d = X.shape
    return float(np.mean(np.std(X, axis=0, ddof=1))) * n ** (-1.0 / (d + 4))


def fit_kernel_density(X_train, seed, factors, folds):
    """The kernel density whose bandwidth (a multiple of Scott's rule) has the
    best k-fold cross-validated log-likelihood on ``X_train``, refitted on all
    of it; returns ``(model, bandwidth, cv_by_bandwidth)``."""
    from sklearn.model_selection import KFold
    from sklearn.neighbors import KernelDensity
    base = scott_bandwidth(X_train)
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    cv = {}
    for factor in factors:
        bandwidth = float(factor) * base
        total = 0.0
        for fit_rows, val_rows in splitter.split(X_train):
            model = KernelDensity(bandwidth=bandwidth).fit(X_train[fit_rows])
            total += float(np.sum(model.score_samples(X_train[val_rows])))
        cv[bandwidth] = total / len(X_train)
    best = max(cv, key=cv.get)
    return KernelDensity(bandwidth=best).fit(X_train), best, cv


def run_one(problem, seed, settings):
    """Both baselines on one problem and seed; returns a JSON-ready record and
    the per-point held-out log-likelihoods ``{"gmm": ..., "kde": ...}``."""
    X_train, X_test = datasets.train_test_split_samples(
        problem, settings["n_train"], settings["n_test"], random_state=seed)
    gmm, k, _ = fit_gaussian_mixture(X_train, seed, settings["max_components"],
                                     settings["validation_fraction"])
    kde, bandwidth, _ = fit_kernel_density(X_train, seed, settings["bandwidth_factors"],
                                           settings["folds"])
    points = {"gmm": gmm.score_samples(X_test), "kde": kde.score_samples(X_test)}
    record = {"problem": problem, "seed": seed, "n_train": settings["n_train"],
              "n_test": settings["n_test"], "gmm_components": int(k),
              "gmm_test_loglik": float(np.mean(points["gmm"])),
              "kde_bandwidth": float(bandwidth),
              "kde_test_loglik": float(np.mean(points["kde"]))}
    return record, points


def summary_table(records):
    """Markdown table: mean (sd) over seeds of the held-out log-likelihoods."""
    lines = ["| problem | seeds | GMM (BIC) | KDE (CV) |", "|---|---|---|---|"]
    for problem in dict.fromkeys(r["problem"] for r in records):
        mine = [r for r in records if r["problem"] == problem]
        cells = []
        for key in ("gmm_test_loglik", "kde_test_loglik"):
            values = np.array([r[key] for r in mine])
            sd = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
            cells.append(f"{values.mean():.4f} ({sd:.4f})")
        lines.append(f"| {problem} | {len(mine)} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, seed 0 (smoke test)")
    parser.add_argument("--problems", nargs="+", default=list(datasets.PROBLEMS),
                        choices=datasets.PROBLEMS)
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0-4 (--quick: 0)")
    parser.add_argument("--n-train", type=int, help="default 10000 (--quick: 400)")
    parser.add_argument("--n-test", type=int, help="default 10000 (--quick: 300)")
    parser.add_argument("--json", help="write every record to this JSON file")
    parser.add_argument("--per-point", help="directory for <problem>-seed<s>.npz files of "
                                            "per-point held-out log-likelihoods (gmm, kde)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    settings = dict(QUICK if args.quick else FULL)
    for key in ("seeds", "n_train", "n_test"):
        if getattr(args, key) is not None:
            settings[key] = tuple(args.seeds) if key == "seeds" else getattr(args, key)
    if args.per_point:
        os.makedirs(args.per_point, exist_ok=True)
    records = []
    print("problem        seed  GMM k  GMM loglik   KDE bandwidth  KDE loglik")
    for problem in args.problems:
        for seed in settings["seeds"]:
            record, points = run_one(problem, seed, settings)
            records.append(record)
            print(f"{problem:<14} {seed:>4}  {record['gmm_components']:>5}  "
                  f"{record['gmm_test_loglik']:>10.4f}   {record['kde_bandwidth']:>13.5f}  "
                  f"{record['kde_test_loglik']:>10.4f}", flush=True)
            if args.per_point:
                np.savez(os.path.join(args.per_point, f"{problem}-seed{seed}.npz"), **points)
    print()
    print(summary_table(records))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": {k: list(v) if isinstance(v, tuple) else v
                                    for k, v in settings.items()},
                       "records": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
