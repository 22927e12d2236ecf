"""The paper's experiment (§4; notes §7): six 2-D problems x {Rad, Real NVP} x seeds.

Each run trains one model on 10,000 points for 50,000 Adam steps at batch 500
and scores a held-out set of 10,000 fresh points.  Runs are independent jobs
spread over a process pool; each one checkpoints as it trains, so an
interrupted reproduction resumes where it stopped (finished runs are skipped).

Files under ``out``:
``runs/<problem>-<model>-s<seed>/checkpoint.npz`` and ``result.json`` per run,
``results.csv`` and ``results.json`` (all runs), ``summary.json`` (per cell).
"""
import csv
import json
import multiprocessing
import os
import time

import numpy as np

from radref import datasets

#: Mean log-likelihoods reported in the paper's §4.3 table (nats): (Rad, Real NVP).
PAPER = {"grid": (-1.20, -2.26), "ring": (3.57, 1.85), "two_moons": (-1.21, -1.48),
         "two_circles": (-1.81, -2.17), "spiral": (0.29, -0.36), "many_moons": (-0.83, -1.50)}
MODELS = ("rad", "realnvp")
FULL = dict(steps=50_000, n_train=10_000, n_test=10_000, batch_size=500, lr=1e-3,
            seeds=(0, 1, 2), checkpoint_every=2_000, eval_every=2_500)
QUICK = dict(steps=60, n_train=1_000, n_test=1_000, batch_size=500, lr=1e-3,
             seeds=(0,), checkpoint_every=30, eval_every=30)


def make_model(model, seed):
    """The paper's architectures: 6 coupling layers; Rad 8 hidden units (gating
    net too), Real NVP 56."""
    from radref.user.estimators import RadFlow, RealNVPFlow
    if model == "rad":
        return RadFlow(n_layers=6, hidden=8, random_state=seed)
    return RealNVPFlow(n_layers=6, hidden=56, random_state=seed)


def run_one(job):
    """Train and score one (problem, model, seed); returns the result dict."""
    problem, model_name, seed, protocol, run_dir = job
    result_path = os.path.join(run_dir, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    os.makedirs(run_dir, exist_ok=True)
    # Data depend on (problem, seed) only, so Rad and Real NVP see the same points.
    X_train, X_test = datasets.train_test_split_samples(
        problem, protocol["n_train"], protocol["n_test"], random_state=seed)
    model = make_model(model_name, seed)
    start = time.perf_counter()
    model.fit(X_train, steps=protocol["steps"], batch_size=protocol["batch_size"],
              lr=protocol["lr"], X_val=X_test, eval_every=protocol["eval_every"],
              progress=False, checkpoint=os.path.join(run_dir, "checkpoint.npz"),
              checkpoint_every=protocol["checkpoint_every"])
    result = {
        "problem": problem, "model": model_name, "seed": seed,
        "steps": protocol["steps"], "lr": protocol["lr"], "batch_size": protocol["batch_size"],
        "n_train": protocol["n_train"], "n_test": protocol["n_test"],
        "n_parameters": model.n_parameters(),
        "train_loglik": model.score(X_train), "test_loglik": model.score(X_test),
        "seconds_this_session": time.perf_counter() - start,
        "val_step": model.history_["val_step"], "val_loglik": model.history_["val_loglik"],
        "train_curve": _smooth(model.history_["loglik"], 250),
    }
    tmp = result_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, allow_nan=False)
    os.replace(tmp, result_path)
    return result


def _smooth(values, window):
    """Means over consecutive windows (a learning curve small enough to store)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values) // window
    return values[:n * window].reshape(n, window).mean(axis=1).tolist() if n else []


def jobs(protocol, out, problems=datasets.PROBLEMS, models=MODELS):
    """All (problem, model, seed) jobs, seed by seed (so that an interrupted
    reproduction has complete tables for its first seeds), slow Rad runs first."""
    return [(p, m, s, protocol, os.path.join(out, "runs", f"{p}-{m}-s{s}"))
            for s in protocol["seeds"] for m in models for p in problems]


def run_all(protocol, out, workers=None, problems=datasets.PROBLEMS, models=MODELS, log=print):
    """Run every job over ``workers`` processes (default: all cores); write the tables."""
    workers = workers or os.cpu_count() or 1
    todo = jobs(protocol, out, problems, models)
    os.makedirs(out, exist_ok=True)
    # One BLAS thread per process: the pool provides the parallelism.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    start = time.perf_counter()
    results = []
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for result in pool.imap_unordered(run_one, todo):
            results.append(result)
            log(f"[{len(results)}/{len(todo)} {time.perf_counter() - start:7.0f}s] "
                f"{result['problem']:11s} {result['model']:7s} seed {result['seed']}: "
                f"test {result['test_loglik']:+.3f}  train {result['train_loglik']:+.3f}")
    write_tables(results, out)
    return results


def finished_results(out):
    """The results of every finished run under ``out`` (also of an interrupted
    reproduction); writes the tables for them."""
    results = []
    runs = os.path.join(out, "runs")
    for name in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
        path = os.path.join(runs, name, "result.json")
        if os.path.exists(path):
            with open(path) as f:
                results.append(json.load(f))
    if results:
        write_tables(results, out)
    return results


def negative_entropies(problems=datasets.PROBLEMS, n=200_000):
    """Best achievable mean log-likelihood of each problem (Monte Carlo, seed 0)."""
    return {p: datasets.negative_entropy(p, n=n, random_state=0)[0] for p in problems}


def summarize(results):
    """Per (problem, model): mean and standard deviation over seeds."""
    cells = {}
    for r in results:
        cells.setdefault((r["problem"], r["model"]), []).append(r)
    summary = []
    for (problem, model), rs in sorted(cells.items()):
        test = np.array([r["test_loglik"] for r in rs])
        train = np.array([r["train_loglik"] for r in rs])
        summary.append({
            "problem": problem, "model": model, "n_seeds": len(rs),
            "test_mean": float(test.mean()), "test_std": float(test.std(ddof=1)) if len(rs) > 1 else 0.0,
            "train_mean": float(train.mean()),
            "train_std": float(train.std(ddof=1)) if len(rs) > 1 else 0.0,
            "n_parameters": rs[0]["n_parameters"],
            "paper": PAPER[problem][MODELS.index(model)],
        })
    return summary


def write_tables(results, out):
    keys = ("problem", "model", "seed", "n_parameters", "steps", "lr", "train_loglik", "test_loglik")
    results = sorted(results, key=lambda r: (r["problem"], r["model"], r["seed"]))
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(keys)
        for r in results:
            writer.writerow([r[k] for k in keys])
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump([{k: r[k] for k in keys} for r in results], f, indent=1, allow_nan=False)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summarize(results), f, indent=1, allow_nan=False)


def markdown_table(summary, negative_entropy=None):
    """The §4.3 table: paper vs radref (held-out mean ± std over seeds, with the
    number of seeds) vs the best achievable value."""
    by_cell = {(s["problem"], s["model"]): s for s in summary}
    lines = ["| problem | paper Rad | paper Real NVP | radref Rad | radref Real NVP | "
             "best achievable |", "|---|---|---|---|---|---|"]
    for problem in datasets.PROBLEMS:
        row = [problem, f"{PAPER[problem][0]:+.2f}", f"{PAPER[problem][1]:+.2f}"]
        for model in MODELS:
            s = by_cell.get((problem, model))
            if s is None:
                row.append("—")
            elif s["n_seeds"] == 1:
                row.append(f"{s['test_mean']:+.3f} (1 seed)")
            else:
                row.append(f"{s['test_mean']:+.3f} ± {s['test_std']:.3f} ({s['n_seeds']} seeds)")
        best = (negative_entropy or {}).get(problem)
        row.append("—" if best is None else f"{best:+.3f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
