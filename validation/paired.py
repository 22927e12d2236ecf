"""Paired comparison of two density models on the same held-out points
(issue 15): which differences between, say, Rad and Real NVP are real.

Input: for every seed ``s``, the per-point held-out log-likelihoods
``a_s[i]`` and ``b_s[i]`` of models A and B on the *same* test points
``i = 1 .. n_s`` (seed ``s`` draws the data and seeds both models, as
``radref reproduce`` does).  With ``d_s[i] = a_s[i] - b_s[i]`` and the
per-seed mean difference ``D_s = mean_i d_s[i]``:

- **across seeds** (the models' training is the random part): the mean
  ``D = mean_s D_s`` with the Student t interval
  ``D +- t_{0.975, S-1} * sd(D_s) / sqrt(S)`` (``sd`` with ``ddof=1``; needs
  ``S >= 2`` seeds);
- **within each seed** (the test points are the random part, the trained
  models fixed): a paired bootstrap: resample the ``n_s`` indices with
  replacement ``n_boot`` times, the 2.5 and 97.5 percentiles of the
  resampled ``mean(d_s)``; and the same for the mean over seeds, resampling
  every seed's points independently.

Usage (per-point files: ``.npy`` arrays, or ``.npz`` with ``file.npz:key``;
``{seed}`` in a path is replaced by the seed)::

    python validation/paired.py --a "rad-{seed}.npy" --b "gmm/two_moons-seed{seed}.npz:gmm" \\
        --seeds 0 1 2 3 4

The per-point values of a flow trained by ``radref reproduce`` come from its
checkpoint (:func:`checkpoint_points`); Rad against Real NVP straight from a
results directory (``runs/<problem>-<model>-s<seed>/{checkpoint,result}.npz/json``)::

    python validation/paired.py --results validation/results --problems two_moons ring
"""
import argparse
import sys

import numpy as np

BOOTSTRAP_SEED = 20261130


def t_quantile(q, df):
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (scipy)."""
    from scipy.stats import t
    return float(t.ppf(q, df))


def across_seeds(per_seed_means, level=0.95):
    """Mean of the per-seed mean differences with its Student t interval.

    Returns
    -------
    dict
        ``mean``, ``sd`` (ddof=1), ``n_seeds``, ``low``, ``high``.
    """
    values = np.asarray(per_seed_means, dtype=np.float64)
    if values.ndim != 1 or len(values) < 2:
        raise ValueError(f"the t interval needs at least 2 seeds, got {values.shape}")
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    half = t_quantile(0.5 + level / 2, len(values) - 1) * sd / np.sqrt(len(values))
    return {"mean": mean, "sd": sd, "n_seeds": len(values), "low": mean - half,
            "high": mean + half}


def bootstrap_means(differences, n_boot, rng, chunk=200):
    """``n_boot`` means of ``differences`` resampled with replacement, shape
    ``(n_boot,)``.  Drawn ``chunk`` resamples at a time to bound memory; the
    draws are the same as in one call (the generator fills row after row)."""
    differences = np.asarray(differences, dtype=np.float64)
    means = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        indices = rng.integers(0, len(differences), size=(stop - start, len(differences)))
        means[start:stop] = differences[indices].mean(axis=1)
    return means


def within_seeds(a, b, n_boot=2000, level=0.95, random_state=BOOTSTRAP_SEED):
    """Paired bootstrap over the test points, per seed and for the mean over seeds.

    Parameters
    ----------
    a, b : dict seed -> ndarray, shape (n_s,)
        Per-point held-out log-likelihoods of the two models, same points.

    Returns
    -------
    dict
        ``"per_seed"``: seed -> ``{"mean", "low", "high"}``; ``"pooled"``:
        the same for the mean over seeds.
    """
    if set(a) != set(b):
        raise ValueError(f"the two models have other seeds: {sorted(a)} and {sorted(b)}")
    rng = np.random.default_rng(random_state)
    tail = 100 * (1 - level) / 2
    per_seed, resampled = {}, []
    for seed in sorted(a):
        d = _paired(a[seed], b[seed], seed)
        means = bootstrap_means(d, n_boot, rng)
        resampled.append(means)
        low, high = np.percentile(means, [tail, 100 - tail])
        per_seed[seed] = {"mean": float(d.mean()), "low": float(low), "high": float(high)}
    pooled_means = np.mean(resampled, axis=0)
    low, high = np.percentile(pooled_means, [tail, 100 - tail])
    pooled = {"mean": float(np.mean([v["mean"] for v in per_seed.values()])),
              "low": float(low), "high": float(high)}
    return {"per_seed": per_seed, "pooled": pooled}


def _paired(a, b, seed):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"seed {seed}: the per-point values must be two 1-d arrays of the "
                         f"same length (the same test points), got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError(f"seed {seed}: non-finite log-likelihoods")
    return a - b


def compare(a, b, n_boot=2000, level=0.95, random_state=BOOTSTRAP_SEED):
    """Both analyses of model A minus model B (see the module docstring)."""
    result = within_seeds(a, b, n_boot, level, random_state)
    if len(a) >= 2:
        result["across_seeds"] = across_seeds(
            [result["per_seed"][s]["mean"] for s in sorted(a)], level)
    return result


def verdict(result):
    """One line: which model is ahead, with the across-seeds interval."""
    ci = result.get("across_seeds")
    if ci is None:
        return "fewer than 2 seeds: no interval across seeds"
    where = ("A ahead" if ci["low"] > 0 else "B ahead" if ci["high"] < 0
             else "no difference shown")
    return (f"A - B = {ci['mean']:+.4f} nats, 95 % CI [{ci['low']:+.4f}, {ci['high']:+.4f}] "
            f"over {ci['n_seeds']} seeds: {where}")


def checkpoint_points(checkpoint, problem, seed, n_train, n_test):
    """Per-point held-out log-likelihoods of a flow saved by ``radref
    reproduce`` (its run's ``checkpoint.npz``), on that run's test points."""
    from radref import datasets, load_model
    _, X_test = datasets.train_test_split_samples(problem, n_train, n_test, random_state=seed)
    return load_model(checkpoint).score_samples(X_test)


def reproduce_points(results, problem, model):
    """Per-point held-out log-likelihoods of every finished run of ``model``
    on ``problem`` in a ``radref reproduce`` results directory: seed -> array
    (the test split regenerated from the run's ``result.json``)."""
    import glob
    import json
    import os
    points = {}
    for directory in sorted(glob.glob(os.path.join(results, "runs", f"{problem}-{model}-s*"))):
        result_file = os.path.join(directory, "result.json")
        if not os.path.exists(result_file):
            continue  # an unfinished run
        with open(result_file) as f:
            result = json.load(f)
        points[result["seed"]] = checkpoint_points(
            os.path.join(directory, "checkpoint.npz"), problem, result["seed"],
            result["n_train"], result["n_test"])
    return points


def _load(pattern, seed):
    path, _, key = pattern.replace("{seed}", str(seed)).partition(":")
    if path.endswith(".npz"):
        with np.load(path) as archive:
            return archive[key]
    return np.load(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", help="per-point file of model A ({seed} expands)")
    parser.add_argument("--b", help="per-point file of model B ({seed} expands)")
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--results", help="a radref reproduce results directory: compare "
                                          "Rad (A) with Real NVP (B) on --problems")
    parser.add_argument("--problems", nargs="+", default=[])
    parser.add_argument("--n-boot", type=int, default=2000)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.results:
        for problem in args.problems:
            print(f"== {problem}: Rad (A) - Real NVP (B)")
            _report(compare(reproduce_points(args.results, problem, "rad"),
                            reproduce_points(args.results, problem, "realnvp"), args.n_boot))
        return 0
    if not (args.a and args.b and args.seeds):
        parser.error("give --a, --b and --seeds, or --results and --problems")
    a = {s: _load(args.a, s) for s in args.seeds}
    b = {s: _load(args.b, s) for s in args.seeds}
    _report(compare(a, b, args.n_boot))
    return 0


def _report(result):
    """Print the per-seed bootstrap intervals, the pooled one and the verdict."""
    for seed, r in result["per_seed"].items():
        print(f"seed {seed}: A - B = {r['mean']:+.4f}, bootstrap 95 % [{r['low']:+.4f}, "
              f"{r['high']:+.4f}]")
    p = result["pooled"]
    print(f"mean over seeds, bootstrap over test points: {p['mean']:+.4f} "
          f"[{p['low']:+.4f}, {p['high']:+.4f}]")
    print(verdict(result))


if __name__ == "__main__":
    sys.exit(main())
