"""Baselines a user would pick instead of a flow for low-dimensional density
estimation, on the splits of the reproduce protocol (issues 15 and 24):

- ``GaussianMixture`` (full covariances, ``n_init`` EM starts): the number of
  components is the one of highest **validation log-likelihood** on a
  validation split carved from the training points (``validation_fraction``
  of them, rows drawn with :func:`radref.training.schedules.validation_split`
  seeded by the seed); each candidate is fitted on the other training rows.
  The held-out likelihood needs no complexity penalty (issue 24: the BIC
  penalty of the first version penalised twice).  The candidates are
  :data:`COMPONENT_GRID` up to ``max_components``; while the best is the
  largest candidate tried, the grid is extended by its next value (up to
  ``component_cap``), so the choice never sits at the grid's edge unless the
  cap is reached (recorded as ``gmm_at_cap``).  The chosen number is then
  refitted on all the training points.
- ``KernelDensity`` (Gaussian kernel): the bandwidth is chosen by k-fold
  cross-validation (held-out log-likelihood) **on the training points**, over
  a grid of multiples of Scott's rule, then refitted on all the training points.
- **The better baseline of a seed** is chosen on validation data: both
  baselines (the mixture of the chosen size, the KDE of the chosen bandwidth)
  fitted on the same fit rows and scored on the same validation rows; the one
  with the higher validation mean log-likelihood is that seed's ``best``.

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
mean over seeds.  Each record holds its own CPU and wall time (``cpu_seconds``,
``wall_seconds``).  ``--json`` is rewritten after every problem and seed, so an
interrupted run keeps what it finished.  Needs scikit-learn
(``pip install "radref[baselines]"``).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

from radref import datasets
from radref.training.schedules import validation_split

#: candidate numbers of mixture components: dense where the true mixtures
#: live (grid 25, ring 8), then coarser; extended past ``max_components``
#: while the best is the largest candidate tried
COMPONENT_GRID = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 22, 25, 28, 32, 36, 40,
                  48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512)
FULL = dict(n_train=10_000, n_test=10_000, seeds=(0, 1, 2, 3, 4), max_components=40,
            component_cap=512, n_init=3,
            bandwidth_factors=tuple(np.round(np.geomspace(0.05, 1.5, 16), 4)), folds=5,
            validation_fraction=0.2)
QUICK = dict(n_train=400, n_test=300, seeds=(0,), max_components=3, component_cap=4, n_init=2,
             bandwidth_factors=(0.3, 1.0), folds=2, validation_fraction=0.25)


def gmm_parameter_count(k, d):
    """Free parameters of a full-covariance mixture of ``k`` Gaussians in ``d``
    dimensions: ``k - 1`` weights, ``k d`` means, ``k d (d + 1) / 2`` covariances."""
    return (k - 1) + k * d + k * d * (d + 1) // 2


def candidate_components(max_components, cap):
    """The first candidates (``COMPONENT_GRID`` up to ``max_components``) and
    the extensions tried in order while the best sits at the edge (up to ``cap``)."""
    if not 1 <= max_components <= cap:
        raise ValueError(f"need 1 <= max_components <= component_cap, got {max_components}, {cap}")
    first = [k for k in COMPONENT_GRID if k <= max_components]
    return first, [k for k in COMPONENT_GRID if max_components < k <= cap]


def fit_gaussian_mixture(X_train, seed, max_components, validation_fraction, n_init=3,
                         component_cap=None):
    """The mixture with the number of components of highest validation mean
    log-likelihood, refitted on all of ``X_train``.

    Returns
    -------
    model : GaussianMixture, fitted on all of ``X_train``
    k : int, the chosen number of components
    loglik_by_k : dict k -> validation mean log-likelihood (nats per point)
    """
    from sklearn.mixture import GaussianMixture
    cap = max_components if component_cap is None else component_cap
    first, extensions = candidate_components(max_components, cap)
    fit_rows, val_rows = validation_split(len(X_train), validation_fraction,
                                          np.random.SeedSequence(seed))
    X_fit, X_val = X_train[fit_rows], X_train[val_rows]

    def score(k):
        model = GaussianMixture(k, covariance_type="full", random_state=seed, n_init=n_init)
        return float(np.mean(model.fit(X_fit).score_samples(X_val)))

    loglik = {k: score(k) for k in first if k <= len(X_fit)}
    for k in extensions:  # extend the grid while the choice sits at its edge
        if max(loglik, key=loglik.get) != max(loglik) or k > len(X_fit):
            break
        loglik[k] = score(k)
    best = max(loglik, key=loglik.get)
    model = GaussianMixture(best, covariance_type="full", random_state=seed, n_init=n_init)
    return model.fit(X_train), best, loglik


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


def validation_choice(X_train, seed, validation_fraction, k, bandwidth, n_init):
    """Which baseline a seed reports, chosen on validation data: the mixture
    of ``k`` components and the KDE of ``bandwidth``, both fitted on the same
    fit rows and scored on the same validation rows of ``X_train``.

    Returns
    -------
    best : str, ``"gmm"`` or ``"kde"``
    val : dict name -> validation mean log-likelihood
    """
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import KernelDensity
    fit_rows, val_rows = validation_split(len(X_train), validation_fraction,
                                          np.random.SeedSequence(seed))
    X_fit, X_val = X_train[fit_rows], X_train[val_rows]
    gmm = GaussianMixture(k, covariance_type="full", random_state=seed, n_init=n_init)
    val = {"gmm": float(np.mean(gmm.fit(X_fit).score_samples(X_val))),
           "kde": float(np.mean(KernelDensity(bandwidth=bandwidth).fit(X_fit)
                                .score_samples(X_val)))}
    return max(val, key=val.get), val


def run_one(problem, seed, settings):
    """Both baselines on one problem and seed; returns a JSON-ready record and
    the per-point held-out log-likelihoods ``{"gmm": ..., "kde": ...}``."""
    cpu, wall = time.process_time(), time.perf_counter()
    X_train, X_test = split(problem, settings["n_train"], settings["n_test"], seed)
    gmm, k, loglik_by_k = fit_gaussian_mixture(
        X_train, seed, settings["max_components"], settings["validation_fraction"],
        settings["n_init"], settings["component_cap"])
    kde, bandwidth, _ = fit_kernel_density(X_train, seed, settings["bandwidth_factors"],
                                           settings["folds"])
    best, val = validation_choice(X_train, seed, settings["validation_fraction"], k, bandwidth,
                                  settings["n_init"])
    points = {"gmm": gmm.score_samples(X_test), "kde": kde.score_samples(X_test)}
    record = {"problem": problem, "seed": seed, "n_train": settings["n_train"],
              "n_test": settings["n_test"], "gmm_components": int(k),
              "gmm_at_cap": bool(k == max(loglik_by_k) and k >= settings["component_cap"]),
              "gmm_val_loglik_by_k": {str(c): v for c, v in loglik_by_k.items()},
              "gmm_test_loglik": float(np.mean(points["gmm"])),
              "kde_bandwidth": float(bandwidth),
              "kde_test_loglik": float(np.mean(points["kde"])),
              "val_loglik": val, "best": best,
              "cpu_seconds": time.process_time() - cpu,
              "wall_seconds": time.perf_counter() - wall}
    return record, points


def split(problem, n_train, n_test, seed):
    """The reproduce protocol's training and test points of ``problem``
    (a 2-D problem of :mod:`radref.datasets` or a higher-dimensional one of
    :mod:`radref.datasets_nd`)."""
    if problem in datasets.PROBLEMS:
        return datasets.train_test_split_samples(problem, n_train, n_test, random_state=seed)
    from radref import datasets_nd
    return datasets_nd.train_test_split_samples(problem, n_train, n_test, random_state=seed)


def summary_table(records):
    """Markdown table: mean (sd) over seeds of the held-out log-likelihoods."""
    lines = ["| problem | seeds | GMM (validation) | KDE (CV) |", "|---|---|---|---|"]
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
                        help="2-D problems (radref.datasets) or higher-dimensional ones "
                             "(radref.datasets_nd); default: the six 2-D problems")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0-4 (--quick: 0)")
    parser.add_argument("--n-train", type=int, help="default 10000 (--quick: 400)")
    parser.add_argument("--n-test", type=int, help="default 10000 (--quick: 300)")
    parser.add_argument("--json", help="write every record to this JSON file")
    parser.add_argument("--resume", action="store_true",
                        help="keep the records of --json and skip their problems and seeds "
                             "(the settings must be the same)")
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
    if args.json and os.path.exists(args.json) and args.resume:
        with open(args.json) as f:
            previous = json.load(f)
        same = {k: v for k, v in previous["settings"].items() if k != "seeds"}
        now = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()
               if k != "seeds"}
        if same != now:
            raise SystemExit(f"--resume: {args.json} was written with other settings: "
                             f"{same} (now {now})")
        records = previous["records"]
    done = {(r["problem"], r["seed"]) for r in records}
    print("problem        seed  GMM k  GMM loglik   KDE bandwidth  KDE loglik")
    for problem in args.problems:
        for seed in settings["seeds"]:
            if (problem, seed) in done:
                continue
            record, points = run_one(problem, seed, settings)
            records.append(record)
            print(f"{problem:<14} {seed:>4}  {record['gmm_components']:>5}  "
                  f"{record['gmm_test_loglik']:>10.4f}   {record['kde_bandwidth']:>13.5f}  "
                  f"{record['kde_test_loglik']:>10.4f}  best (validation): {record['best']}  "
                  f"{record['cpu_seconds']:.0f} CPU s", flush=True)
            if args.per_point:
                np.savez(os.path.join(args.per_point, f"{problem}-seed{seed}.npz"), **points)
            if args.json:
                write_json(args.json, settings, records)
    print()
    print(summary_table(records))
    return 0


def write_json(path, settings, records):
    """Settings and records so far, written to a temporary file then renamed
    (an interruption never leaves half a file)."""
    with open(path + ".tmp", "w") as f:
        json.dump({"settings": {k: list(v) if isinstance(v, tuple) else v
                                for k, v in settings.items()},
                   "records": records}, f, indent=1)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main())
