"""The paper's claim measured like science (issue 15): tables and a figure of
paired differences with 95 % confidence intervals, from committed runs.

Sources (all on the same splits: seed ``s`` draws
``train_test_split_samples(problem, n_train, 10000, random_state=s)``):

- ``validation/results/runs/``: the paper protocol, seeds 0-2 (runs of the
  layout before protocol-keyed runs; per-point scores from their checkpoints);
- ``validation/results/study/protocol-*/``: runs of ``radref reproduce``
  (paper protocol seeds 3-4, the recipes, the data sizes), each with its
  ``protocol.json`` and per-run ``test_points.npz``;
- ``validation/results/study/baselines/``: ``validation/baselines.py``'s
  per-point files (GaussianMixture by BIC, KernelDensity by CV).

A run's *variant* is named by its protocol's recipe: ``paper`` (none),
``cosine``, ``EMA``, ``early stopping``, joined with ``+``.  A run with a
parameter average also yields its last iterate (``test_points.npz`` key
``last_iterate``): the variant without ``EMA``, on the same trajectory.

Comparisons use :func:`paired.compare`: the Student t interval across seeds of
the per-seed mean differences (the headline), and the paired bootstrap over
the 10,000 test points pooled over seeds.

Usage::

    python validation/study.py --update-docs        # print, write study.json/.md, the
                                                    # figure, and docs/results.md's tables
    python validation/study.py --write-points DIR   # add test_points.npz to DIR's runs
"""
import argparse
import glob
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import paired  # noqa: E402  (validation/paired.py)

RESULTS = os.path.join(HERE, "results")
STUDY = os.path.join(RESULTS, "study")
FIGURE = os.path.join(os.path.dirname(HERE), "docs", "figures", "paired_differences.png")
DOCS = os.path.join(os.path.dirname(HERE), "docs", "results.md")
PROBLEMS = ("grid", "ring", "two_moons", "two_circles", "spiral", "many_moons")
#: the paper protocol's settings other than the recipe (reproduce.FULL)
PAPER = dict(steps=50_000, n_test=10_000, batch_size=500, lr=1e-3)


# ------------------------------------------------------------------ loading
def variant_names(recipe):
    """(name of the model's scores, name of the last iterate's or None)."""
    parts = []
    if recipe.get("lr_schedule"):
        parts.append(recipe["lr_schedule"])
    if recipe.get("early_stopping"):
        parts.append("early stopping")
    last = " + ".join(parts) or "paper"
    if "ema_decay" in recipe:
        parts.append("EMA")
    name = " + ".join(parts) or "paper"
    return name, (last if name != last and not recipe.get("early_stopping") else None)


def load_runs(study=STUDY, legacy=os.path.join(RESULTS, "runs")):
    """``{(variant, n_train, problem, model): {seed: per-point test log-likelihoods}}``."""
    runs = {}

    def add(variant, n_train, problem, model, seed, points):
        cell = runs.setdefault((variant, n_train, problem, model), {})
        if seed in cell:
            raise ValueError(f"two runs of {variant} n={n_train} {problem} {model} s{seed}")
        cell[seed] = points

    for directory in sorted(glob.glob(os.path.join(legacy, "*")) if legacy else []):
        result = _json(os.path.join(directory, "result.json"))
        if any(result[k] != v for k, v in PAPER.items()):
            raise ValueError(f"{directory} is not of the paper protocol")
        add("paper", result["n_train"], result["problem"], result["model"], result["seed"],
            paired.checkpoint_points(os.path.join(directory, "checkpoint.npz"),
                                     result["problem"], result["seed"], result["n_train"],
                                     result["n_test"]))
    for protocol_file in sorted(glob.glob(os.path.join(study, "protocol-*", "protocol.json"))):
        protocol = _json(protocol_file)
        if (protocol["steps"], protocol["n_test"], protocol["batch_size"],
                protocol["adam"]["lr"]) != tuple(PAPER.values()):
            raise ValueError(f"{protocol_file}: not the paper's steps, sizes and rate")
        name, last = variant_names(protocol.get("recipe", {}))
        for run in sorted(glob.glob(os.path.join(os.path.dirname(protocol_file), "runs", "*"))):
            result = _json(os.path.join(run, "result.json"))
            with np.load(os.path.join(run, "test_points.npz")) as points:
                add(name, protocol["n_train"], result["problem"], result["model"],
                    result["seed"], points["model"])
                if last is not None:
                    add(last + " (from the EMA runs)" if last == "paper" else last,
                        protocol["n_train"], result["problem"], result["model"],
                        result["seed"], points["last_iterate"])
    return runs


def load_baselines(study=STUDY):
    """``{(name, problem): {seed: points}}`` for ``gmm`` and ``kde``."""
    found = {}
    for path in sorted(glob.glob(os.path.join(study, "baselines", "points", "*.npz"))):
        problem, _, seed = os.path.basename(path)[:-4].rpartition("-seed")
        with np.load(path) as archive:
            for name in ("gmm", "kde"):
                found.setdefault((name, problem), {})[int(seed)] = archive[name]
    return found


def _json(path):
    with open(path) as f:
        return json.load(f)


def write_points(directory):
    """Add ``test_points.npz`` (key ``model``) to every finished run under
    ``directory`` that has a checkpoint but no such file (runs of radref 0.2.0)."""
    for run in sorted(glob.glob(os.path.join(directory, "protocol-*", "runs", "*"))):
        target = os.path.join(run, "test_points.npz")
        if os.path.exists(target) or not os.path.exists(os.path.join(run, "result.json")):
            continue
        result = _json(os.path.join(run, "result.json"))
        points = paired.checkpoint_points(os.path.join(run, "checkpoint.npz"), result["problem"],
                                          result["seed"], result["n_train"], result["n_test"])
        if float(np.mean(points)) != result["test_loglik"]:
            raise ValueError(f"{run}: rescoring gives {np.mean(points)}, the run recorded "
                             f"{result['test_loglik']}")
        np.savez(target, model=points)


# --------------------------------------------------------------- statistics
def common(a, b):
    seeds = sorted(set(a) & set(b))
    return {s: a[s] for s in seeds}, {s: b[s] for s in seeds}


def difference(a, b, n_boot):
    """A - B on the seeds both have: the numbers of a table cell."""
    a, b = common(a, b)
    result = paired.compare(a, b, n_boot)
    ci, pooled = result["across_seeds"], result["pooled"]
    return {"seeds": sorted(a), "mean": ci["mean"], "t_low": ci["low"], "t_high": ci["high"],
            "boot_low": pooled["low"], "boot_high": pooled["high"],
            "per_seed": {str(s): r for s, r in result["per_seed"].items()}}


def means(cell):
    values = np.array([np.mean(cell[s]) for s in sorted(cell)])
    return {"seeds": sorted(cell), "mean": float(values.mean()),
            "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def verdict(d, a="Rad", b="Real NVP"):
    if d["t_low"] > 0:
        return f"{a} ahead"
    if d["t_high"] < 0:
        return f"{b} ahead"
    return "no difference shown"


def analyse(runs, baselines, best_values, n_boot):
    """Every number of the study (a JSON-ready dict)."""
    out = {"best_achievable": best_values, "paper": {}, "recipes": {}, "data_size": {}}
    for p in PROBLEMS:
        rad, nvp = runs[("paper", 10_000, p, "rad")], runs[("paper", 10_000, p, "realnvp")]
        row = {"rad": means(rad), "realnvp": means(nvp), "rad_minus_realnvp":
               difference(rad, nvp, n_boot)}
        for name in ("gmm", "kde"):
            if (name, p) in baselines:
                row[name] = means(baselines[(name, p)])
                row[f"rad_minus_{name}"] = difference(rad, baselines[(name, p)], n_boot)
        out["paper"][p] = row
    variants = sorted({v for v, n, _, _ in runs if n == 10_000 and v != "paper"})
    for v in variants:
        for model in ("rad", "realnvp"):
            if not all((v, 10_000, p, model) in runs for p in PROBLEMS):
                continue
            out["recipes"].setdefault(v, {})[model] = {
                p: {"scores": means(runs[(v, 10_000, p, model)]),
                    "minus_paper": difference(runs[(v, 10_000, p, model)],
                                              runs[("paper", 10_000, p, model)], n_boot)}
                for p in PROBLEMS}
    both = [v for v in out["recipes"] if set(out["recipes"][v]) == {"rad", "realnvp"}]
    if both:
        best = max(both, key=lambda v: np.mean(
            [out["recipes"][v]["rad"][p]["minus_paper"]["mean"] for p in PROBLEMS]))
        out["beyond"] = {"variant": best, "problems": {
            p: difference(runs[(best, 10_000, p, "rad")], runs[(best, 10_000, p, "realnvp")],
                          n_boot) for p in PROBLEMS}}
        out["own_best"] = own_best(out, runs, n_boot)
    out["data_size"] = data_sizes(runs, n_boot)
    return out


def own_best(out, runs, n_boot):
    """Each model with the recipe (or the paper's training) of its best mean
    change over the six problems, Rad − Real NVP on seeds 0-2."""
    def best(model):
        gains = {v: np.mean([cells[p]["minus_paper"]["mean"] for p in PROBLEMS])
                 for v, by_model in out["recipes"].items()
                 for m, cells in by_model.items() if m == model}
        gains["paper"] = 0.0
        return max(gains, key=gains.get)
    rad, nvp = best("rad"), best("realnvp")
    seeds = [0, 1, 2]
    cells = {}
    for p in PROBLEMS:
        a = {s: runs[(rad, 10_000, p, "rad")][s] for s in seeds}
        b = {s: runs[(nvp, 10_000, p, "realnvp")][s] for s in seeds}
        cells[p] = {"rad": means(a), "realnvp": means(b), "rad_minus_realnvp":
                    difference(a, b, n_boot)}
    return {"rad_variant": rad, "realnvp_variant": nvp, "problems": cells}


def data_sizes(runs, n_boot):
    """Rad against Real NVP, paper protocol, at each training-set size of the
    problems run at more than one size: ``{problem: {n_train: cell}}``."""
    found = {}
    for problem in PROBLEMS:
        sizes = sorted({n for v, n, p, _ in runs if v == "paper" and p == problem})
        if len(sizes) < 2:
            continue
        for n in sizes:
            rad, nvp = runs.get(("paper", n, problem, "rad")), runs.get(
                ("paper", n, problem, "realnvp"))
            if not (rad and nvp):
                continue
            rad, nvp = common(rad, nvp)
            seeds = sorted(rad)[:3]  # every size is compared on the same seeds 0-2
            rad, nvp = {s: rad[s] for s in seeds}, {s: nvp[s] for s in seeds}
            found.setdefault(problem, {})[str(n)] = {
                "rad": means(rad), "realnvp": means(nvp),
                "rad_minus_realnvp": difference(rad, nvp, n_boot)}
    return found


# ------------------------------------------------------------------- tables
def _ci(d):
    return f"{d['mean']:+.4f} [{d['t_low']:+.4f}, {d['t_high']:+.4f}]"


def _boot(d):
    return f"[{d['boot_low']:+.4f}, {d['boot_high']:+.4f}]"


def _ms(m):
    return f"{m['mean']:+.3f} ± {m['sd']:.3f}"


COMPARISON = ("Rad − Real NVP, 95 % CI across seeds | bootstrap over test points | verdict",
              "---|---|---|")


def _comparison(label, a, b, d, extra=""):
    """One row: scores of A and B, A − B with both intervals, the verdict."""
    return (f"| {label} | {_ms(a)} | {_ms(b)} | {_ci(d)} | {_boot(d)} | {verdict(d)} "
            f"(n = {len(d['seeds'])}) |{extra}")


def section43_table(study):
    """The §4.3 table: the paper's numbers next to ours (five seeds)."""
    from radref.user.reproduce import PAPER as PAPER_TABLE
    rows = ["| problem | paper Rad | paper Real NVP | radref Rad | radref Real NVP | "
            "best achievable |", "|---|---|---|---|---|---|"]
    for p, row in study["paper"].items():
        rows.append(f"| {p} | {PAPER_TABLE[p][0]:+.2f} | {PAPER_TABLE[p][1]:+.2f} | "
                    f"{_ms(row['rad'])} ({len(row['rad']['seeds'])} seeds) | "
                    f"{_ms(row['realnvp'])} ({len(row['realnvp']['seeds'])} seeds) | "
                    f"{study['best_achievable'][p]:+.3f} |")
    return rows


def paper_table(study):
    rows = [f"| problem | Rad | Real NVP | {COMPARISON[0]} |", f"|---|---|---|{COMPARISON[1]}"]
    for p, row in study["paper"].items():
        rows.append(_comparison(p, row["rad"], row["realnvp"], row["rad_minus_realnvp"]))
    return rows


def baselines_table(study):
    rows = ["| problem | Rad | Real NVP | GMM (BIC) | KDE (CV) | best achievable | "
            "Rad − best baseline, 95 % CI |", "|---|---|---|---|---|---|---|"]
    for p, row in study["paper"].items():
        if "gmm" in row and "kde" in row:
            top = _better_baseline(row)
            rows.append(f"| {p} | {_ms(row['rad'])} | {_ms(row['realnvp'])} | "
                        f"{_ms(row['gmm'])} | {_ms(row['kde'])} | "
                        f"{study['best_achievable'][p]:+.3f} | "
                        f"{top.upper()}: {_ci(row['rad_minus_' + top])} |")
    return rows


def _better_baseline(row):
    """``"gmm"`` or ``"kde"``: the baseline with the higher mean held-out score."""
    return max(("gmm", "kde"), key=lambda k: row[k]["mean"])


def recipes_table(study):
    rows = ["| recipe | model | " + " | ".join(PROBLEMS) + " | mean |",
            "|---|---|" + "---|" * (len(PROBLEMS) + 1)]
    for v, by_model in study["recipes"].items():
        for model, cells in by_model.items():
            shown = [_ci(cells[p]["minus_paper"]) for p in PROBLEMS]
            average = np.mean([cells[p]["minus_paper"]["mean"] for p in PROBLEMS])
            rows.append(f"| {v} | {model} | " + " | ".join(shown) + f" | {average:+.4f} |")
    return rows


def beyond_table(study):
    v = study["beyond"]["variant"]
    rows = [f"| problem | Rad ({v}) | Real NVP ({v}) | {COMPARISON[0]} | Rad's gap to best "
            f"achievable |", f"|---|---|---|{COMPARISON[1]}---|"]
    for p, d in study["beyond"]["problems"].items():
        rad = study["recipes"][v]["rad"][p]["scores"]
        rows.append(_comparison(p, rad, study["recipes"][v]["realnvp"][p]["scores"], d,
                                f" {study['best_achievable'][p] - rad['mean']:.3f} |"))
    return rows


def own_best_table(study):
    own = study["own_best"]
    rad, nvp = own["rad_variant"], own["realnvp_variant"]
    rows = [f"| problem | Rad ({rad}) | Real NVP ({nvp}) | Rad − Real NVP, 95 % CI across "
            f"seeds | verdict | Rad's gap to best achievable |", "|---|---|---|---|---|---|"]
    for p, row in own["problems"].items():
        d = row["rad_minus_realnvp"]
        rows.append(f"| {p} | {_ms(row['rad'])} | {_ms(row['realnvp'])} | {_ci(d)} | "
                    f"{verdict(d)} (n = {len(d['seeds'])}) | "
                    f"{study['best_achievable'][p] - row['rad']['mean']:.3f} |")
    return rows


def data_size_table(study):
    rows = [f"| problem, training points | Rad | Real NVP | {COMPARISON[0]} | Rad's gap to "
            f"best achievable |", f"|---|---|---|{COMPARISON[1]}---|"]
    for problem, by_size in study["data_size"].items():
        best = study["best_achievable"][problem]
        for n, row in by_size.items():
            rows.append(_comparison(f"{problem}, {int(n):,}", row["rad"], row["realnvp"],
                                    row["rad_minus_realnvp"],
                                    f" {best - row['rad']['mean']:.3f} |"))
    return rows


def tables(study):
    """Markdown of every table (a dict: name -> text)."""
    makers = {"section43": section43_table, "paper": paper_table,
              "baselines": baselines_table, "recipes": recipes_table,
              "beyond": beyond_table, "own_best": own_best_table,
              "data_size": data_size_table}
    return {name: "\n".join(make(study)) for name, make in makers.items()
            if name not in ("beyond", "own_best") or name in study}


# ------------------------------------------------------------------- figure
def figure(study, path):
    """Forest plot: each comparison's mean with its t interval (thick) and
    bootstrap interval (thin; not for the recipes, see results.md), one
    panel per question."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [("Paper protocol: Rad − Real NVP",
               [(p, study["paper"][p]["rad_minus_realnvp"]) for p in PROBLEMS], True)]
    with_baselines = [p for p in PROBLEMS if "kde" in study["paper"][p]]
    if with_baselines:
        panels.append(("Paper protocol: Rad − the better baseline (GMM or KDE)",
                       [(f"{p} ({_better_baseline(study['paper'][p]).upper()})",
                         study["paper"][p]["rad_minus_" + _better_baseline(study["paper"][p])])
                        for p in with_baselines], True))
    if "beyond" in study:
        panels.append((f"{study['beyond']['variant']}: Rad − Real NVP",
                       [(p, study["beyond"]["problems"][p]) for p in PROBLEMS], True))
    if "own_best" in study:
        own = study["own_best"]
        panels.append((f"Each model's best training: Rad ({own['rad_variant']}) − Real NVP "
                       f"({own['realnvp_variant']}), t interval only",
                       [(p, own["problems"][p]["rad_minus_realnvp"]) for p in PROBLEMS], False))
    for v, by_model in study["recipes"].items():
        if "rad" in by_model:
            # paired with runs of older code: only the t interval holds (results.md)
            panels.append((f"Rad: {v} − paper (t interval only)",
                           [(p, by_model["rad"][p]["minus_paper"]) for p in PROBLEMS], False))
    panels.append(("By training points: Rad − Real NVP",
                   [(f"{problem}, {int(n):,}", r["rad_minus_realnvp"])
                    for problem, by_size in study["data_size"].items()
                    for n, r in by_size.items()], True))
    panels = [panel for panel in panels if panel[1]]
    lows = [min(d["t_low"], d["boot_low"]) for _, rows, _ in panels for _, d in rows]
    highs = [max(d["t_high"], d["boot_high"]) for _, rows, _ in panels for _, d in rows]
    limits = (1.4 * min(min(lows), -0.1), 1.4 * max(max(highs), 0.1))
    ticks = [t for t in (-3, -1, -0.3, -0.1, -0.03, 0, 0.03, 0.1, 0.3, 1, 3)
             if limits[0] <= t <= limits[1]]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, 1.0 + 1.45 * len(panels)),
                             sharex=True)
    axes = np.atleast_1d(axes)
    for ax, (title, rows, with_bootstrap) in zip(axes, panels):
        for i, (label, d) in enumerate(rows):
            colour = "tab:green" if d["t_low"] > 0 else "tab:red" if d["t_high"] < 0 else "0.4"
            ax.plot([d["t_low"], d["t_high"]], [i, i], color=colour, lw=5, alpha=0.45,
                    solid_capstyle="butt", label="95 % t interval across seeds" if i == 0 else None)
            if with_bootstrap:
                ax.plot([d["boot_low"], d["boot_high"]], [i, i], color="k", lw=1.2,
                        label="95 % paired bootstrap over test points" if i == 0 else None)
            ax.plot(d["mean"], i, "o", color=colour, ms=5)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xscale("symlog", linthresh=0.03, linscale=0.6)
        ax.set_xlim(*limits)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_yticks(range(len(rows)), [label for label, _ in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.grid(axis="x", color="0.9")
        ax.set_title(title, fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=8, frameon=False)
    axes[-1].set_xlabel("A − B in held-out mean log-likelihood, nats (> 0: A better; green: t "
                        "interval above 0, red: below)\nsymlog axis: linear within ±0.03",
                        fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--write-points", metavar="DIR")
    parser.add_argument("--figure", default=FIGURE)
    parser.add_argument("--update-docs", action="store_true",
                        help="also put the tables into docs/results.md (between its "
                             "<!-- study:NAME:start/end --> markers)")
    parser.add_argument("--study", default=STUDY,
                        help="directory of the runs (protocol-*/, as radref reproduce --out "
                             "writes) and of baselines/points/ (default: the committed one)")
    parser.add_argument("--legacy", default=os.path.join(RESULTS, "runs"),
                        help="runs of the paper protocol in the layout before protocol-keyed "
                             "runs (default: the committed seeds 0-2; '' for none, when "
                             "--study holds your own paper-protocol runs)")
    args = parser.parse_args(argv)
    if args.write_points:
        write_points(args.write_points)
        return 0
    from radref.user.reproduce import negative_entropies
    study = analyse(load_runs(args.study, args.legacy), load_baselines(args.study),
                    negative_entropies(PROBLEMS), args.n_boot)
    text = tables(study)
    with open(os.path.join(args.study, "study.json"), "w") as f:
        json.dump(study, f, indent=1, allow_nan=False)
    with open(os.path.join(args.study, "study.md"), "w") as f:
        for name, table in text.items():
            f.write(f"<!-- {name} -->\n{table}\n\n")
    for name, table in text.items():
        print(f"== {name}\n{table}\n")
    if args.figure:
        figure(study, args.figure)
    if args.update_docs:
        update_docs(text, DOCS)
    return 0


def update_docs(text, path):
    """Replace each ``<!-- study:NAME:start -->`` ... ``end`` block of
    ``path`` by table NAME; every marker must be there."""
    import re
    with open(path) as f:
        page = f.read()
    for name, table in text.items():
        pattern = re.compile(rf"(<!-- study:{name}:start -->\n).*?(<!-- study:{name}:end -->)",
                             re.S)
        if not pattern.search(page):
            raise ValueError(f"{path} has no study:{name} markers")
        page = pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), page)
    with open(path, "w") as f:
        f.write(page)


if __name__ == "__main__":
    sys.exit(main())
