"""The paper's claim measured like science (issue 15): tables and a figure of
paired differences with 95 % confidence intervals, from committed runs.

Sources (all on the same splits: seed ``s`` draws
``train_test_split_samples(problem, n_train, 10000, random_state=s)``):

- ``validation/results/runs/``: the paper protocol, seeds 0-2 (runs of the
  layout before protocol-keyed runs; per-point scores from their checkpoints);
- ``validation/results/study/protocol-*/``: runs of ``radref reproduce``
  (paper protocol seeds 3-14, the recipes, the data sizes, the control of
  equal passes), each with its ``protocol.json`` and per-run ``test_points.npz``;
- ``validation/results/study/baselines/``: ``validation/baselines.py``'s
  per-point files and records (GaussianMixture sized on validation data,
  KernelDensity by CV, the better of the two per seed chosen on validation data);
- ``validation/results/study/dimensions/``: ``validation/dimensions.py``'s
  runs and baselines on the problems of ``radref.datasets_nd`` (4-8 dimensions);
- ``validation/results/study/selection/choices.json`` (when present):
  ``validation/select_flows.py``'s choices of training on validation data.

The reference of every "gap" is the exact density: ``log p_true`` of each
test point (:func:`exact_points`), paired by seed with the model's
per-point scores.  The verdicts of each table are read from Holm-corrected
intervals (:func:`holm`) across its rows.

Runs are keyed by their settings (:class:`Training`: the recipe, steps,
rate and width), and each table selects by setting.  A run with a parameter
average also yields its last iterate (``test_points.npz`` key
``last_iterate``): the same training without the average, on the same
trajectory, kept apart as ``from_ema_run``.  ``str(training)`` is the name
the tables show: the recipe (``paper`` for none, ``cosine``, ``EMA``,
``early stopping``, joined with ``+``), then the steps, rate and width that
differ from the paper's (``paper (5,000 steps)``,
``cosine (lr 0.003) (hidden 32)``).

Comparisons use :func:`paired.compare`: the Student t interval across seeds of
the per-seed mean differences (the headline; corrected by :func:`holm`), and
the paired bootstrap over the 10,000 test points pooled over seeds.

Usage::

    python validation/study.py --update-docs        # print, write study.json/.md, the
                                                    # figure, and docs/results.md's tables
    python validation/study.py --write-points DIR   # add test_points.npz to DIR's runs
    python validation/study.py --figure-only        # redraw the figure from study.json
"""
import argparse
import dataclasses
import functools
import glob
import json
import os
import re
import sys
import textwrap

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
#: the paper's hidden units (reproduce.ARCHITECTURES)
PAPER_HIDDEN = {"rad": 8, "realnvp": 56}
#: family-wise error rate of Holm's correction across the problems of a table
ALPHA = 0.05


# ------------------------------------------------------------------ loading
@dataclasses.dataclass(frozen=True)
class Training:
    """How a run was trained, beyond its problem, model, seed and number of
    training points: the key :func:`load_runs` files its scores under.  Each
    table selects runs by these settings; ``str()`` is the name the tables
    show (``paper``, ``cosine + EMA``, ``cosine (lr 0.003) (hidden 32)``).

    ``hidden`` is None at the model's paper width (8 for Rad, 56 for Real
    NVP), so that ``Training()`` is the paper protocol of either model.
    ``from_ema_run`` marks the last iterate of a run with a parameter average
    (``test_points.npz`` key ``last_iterate``): a run of the same training
    without the average, on the same trajectory, but not the same run."""
    lr_schedule: str = "constant"
    ema: bool = False
    early_stopping: bool = False
    steps: int = 50_000
    lr: float = 1e-3
    hidden: int | None = None
    from_ema_run: bool = False
    batch_size: int = 500

    @classmethod
    def of(cls, protocol, model):
        """The training of ``model``'s runs under a ``protocol.json``."""
        recipe = protocol.get("recipe", {})
        hidden = protocol.get("architectures", {}).get(model, {}).get("hidden",
                                                                     PAPER_HIDDEN[model])
        return cls(lr_schedule=recipe.get("lr_schedule") or "constant",
                   ema="ema_decay" in recipe, early_stopping=bool(recipe.get("early_stopping")),
                   steps=protocol["steps"], lr=protocol["adam"]["lr"],
                   hidden=None if hidden == PAPER_HIDDEN[model] else hidden,
                   batch_size=protocol["batch_size"])

    @classmethod
    def chosen(cls, choice):
        """The training of a choice of validation/select_flows.py (its refit)."""
        hidden = choice["hidden"]
        return cls(lr_schedule=choice["lr_schedule"], lr=choice["lr"],
                   hidden=None if hidden == PAPER_HIDDEN[choice["model"]] else hidden)

    @property
    def recipe(self):
        """Only the recipe differs from the paper protocol: its steps, rate, width
        and batch size."""
        return (self.steps, self.lr, self.hidden, self.batch_size) == (
            PAPER["steps"], PAPER["lr"], None, PAPER["batch_size"])

    def last_iterate(self):
        """The training of the last iterate of this run's parameter average,
        or None: without an average there is none, and with early stopping
        the last iterate is of another training set (9,000 of the points)."""
        if not self.ema or self.early_stopping:
            return None
        return dataclasses.replace(self, ema=False, from_ema_run=True)

    def __str__(self):
        parts = [self.lr_schedule] if self.lr_schedule != "constant" else []
        parts += ["early stopping"] * self.early_stopping + ["EMA"] * self.ema
        settings = [f"{self.steps:,} steps"] * (self.steps != PAPER["steps"])
        settings += [f"lr {self.lr:g}"] * (self.lr != PAPER["lr"])
        settings += [f"batch {self.batch_size}"] * (self.batch_size != PAPER["batch_size"])
        return (" + ".join(parts) or "paper") + (
            f" ({', '.join(settings)})" if settings else "") + (
            f" (hidden {self.hidden})" if self.hidden is not None else "") + (
            " (from the EMA runs)" if self.from_ema_run else "")


#: the paper protocol (either model at its paper width)
PAPER_TRAINING = Training()


def load_runs(study=STUDY, legacy=os.path.join(RESULTS, "runs")):
    """``{(Training, n_train, problem, model): {seed: per-point test log-likelihoods}}``."""
    runs = {}

    def add(training, n_train, problem, model, seed, points):
        cell = runs.setdefault((training, n_train, problem, model), {})
        if seed in cell:
            raise ValueError(f"two runs of {training} n={n_train} {problem} {model} s{seed}")
        cell[seed] = points

    for directory in sorted(glob.glob(os.path.join(legacy, "*")) if legacy else []):
        result = _json(os.path.join(directory, "result.json"))
        if any(result[k] != v for k, v in PAPER.items()):
            raise ValueError(f"{directory} is not of the paper protocol")
        add(PAPER_TRAINING, result["n_train"], result["problem"], result["model"],
            result["seed"],
            paired.checkpoint_points(os.path.join(directory, "checkpoint.npz"),
                                     result["problem"], result["seed"], result["n_train"],
                                     result["n_test"]))
    for protocol_file in sorted(glob.glob(os.path.join(study, "protocol-*", "protocol.json"))):
        protocol = _json(protocol_file)
        if protocol["n_test"] != PAPER["n_test"]:
            raise ValueError(f"{protocol_file}: {protocol['n_test']} held-out points; the "
                             f"study pairs runs on the paper's {PAPER['n_test']} held-out "
                             f"points (a --quick smoke test cannot be studied)")
        for run in sorted(glob.glob(os.path.join(os.path.dirname(protocol_file), "runs", "*"))):
            if not os.path.exists(os.path.join(run, "test_points.npz")):
                continue  # an unfinished run
            result = _json(os.path.join(run, "result.json"))
            training = Training.of(protocol, result["model"])
            with np.load(os.path.join(run, "test_points.npz")) as points:
                add(training, protocol["n_train"], result["problem"], result["model"],
                    result["seed"], points["model"])
                if training.last_iterate() is not None:
                    add(training.last_iterate(), protocol["n_train"], result["problem"],
                        result["model"], result["seed"], points["last_iterate"])
    return runs


def refit(runs, training, problem, model, n_train=10_000):
    """``{seed: points}`` of ``training``: its own runs, and for the seeds
    without one the last iterate of a run of it with a parameter average
    (the same trajectory: the average does not change the iterates)."""
    from_ema = runs.get((dataclasses.replace(training, from_ema_run=True), n_train, problem,
                         model), {})
    return {**from_ema, **runs.get((training, n_train, problem, model), {})}


def load_baselines(directory=os.path.join(STUDY, "baselines")):
    """``{(name, problem): {seed: points}}`` for ``gmm``, ``kde`` and ``best``
    (per seed the one of the two chosen on validation data, as recorded in
    ``baselines.json``), with ``{("choice", problem): {seed: "gmm" or "kde"}}``."""
    found = {}
    records = {}
    if os.path.exists(os.path.join(directory, "baselines.json")):
        records = {(r["problem"], r["seed"]): r
                   for r in _json(os.path.join(directory, "baselines.json"))["records"]}
    for path in sorted(glob.glob(os.path.join(directory, "points", "*.npz"))):
        problem, _, seed = os.path.basename(path)[:-4].rpartition("-seed")
        seed = int(seed)
        with np.load(path) as archive:
            for name in ("gmm", "kde"):
                found.setdefault((name, problem), {})[seed] = archive[name]
            record = records.get((problem, seed))
            if record is not None and "best" in record:
                found.setdefault(("best", problem), {})[seed] = archive[record["best"]]
                found.setdefault(("choice", problem), {})[seed] = record["best"]
    return found


@functools.lru_cache(maxsize=None)
def exact_points(problem, seed, n_train, n_test=PAPER["n_test"]):
    """``log p_true`` of the exact density at the test points of a run
    (seed ``seed``, ``n_train`` training points), shape ``(n_test,)``: the
    reference the gaps to the best achievable value are paired with."""
    from radref import datasets
    if problem in datasets.PROBLEMS:
        _, X_test = datasets.train_test_split_samples(problem, n_train, n_test,
                                                      random_state=seed)
        return datasets.log_density(problem, X_test)
    from radref import datasets_nd
    _, X_test = datasets_nd.train_test_split_samples(problem, n_train, n_test,
                                                     random_state=seed)
    return datasets_nd.log_density(problem, X_test)


def exact(problem, cell, n_train):
    """``{seed: log p_true at the test points}`` for the seeds of ``cell`` (a
    dict seed -> per-point scores, whose lengths give the test-set sizes)."""
    return {s: exact_points(problem, s, n_train, len(points)) for s, points in cell.items()}


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
    pooled = result["pooled"]
    ci = result.get("across_seeds", {"mean": pooled["mean"], "sd": None, "low": None,
                                     "high": None})  # one seed: no interval across seeds
    return {"seeds": sorted(a), "mean": ci["mean"], "sd": ci["sd"], "t_low": ci["low"],
            "t_high": ci["high"], "boot_low": pooled["low"], "boot_high": pooled["high"],
            "per_seed": {str(s): r for s, r in result["per_seed"].items()}}


def holm(cells, alpha=ALPHA):
    """Holm's step-down correction across the comparisons of one table.

    ``cells`` is a list of :func:`difference` dicts (one per problem or row,
    each with at least 2 seeds).  Each gets a two-sided t-test p-value of its
    per-seed mean differences (``holm_p``, uncorrected) and the interval of
    the level at which Holm's procedure tests it (``holm_low``,
    ``holm_high``, ``holm_level``): with the p-values in increasing order
    ``p_(1) <= ... <= p_(m)``, the ``i``-th is tested at ``alpha / (m - i +
    1)`` while every earlier one was rejected; from the first that is not
    rejected, ``k``, on, all are tested at ``alpha / (m - k + 1)``.  So a
    comparison's corrected interval excludes zero exactly when Holm's
    procedure rejects "no difference" for it, and the verdicts of a table
    hold together at family-wise error ``alpha``.
    """
    from scipy.stats import t as student
    cells = [c for c in cells if len(c["seeds"]) >= 2]
    m = len(cells)
    for c in cells:
        n = len(c["seeds"])
        c["holm_se"] = c["sd"] / np.sqrt(n)
        if c["sd"] > 0:
            c["holm_p"] = float(2 * student.sf(abs(c["mean"]) / c["holm_se"], n - 1))
        else:
            c["holm_p"] = 0.0 if c["mean"] != 0 else 1.0
    level = None
    for i, c in enumerate(sorted(cells, key=lambda c: c["holm_p"])):
        if level is None and c["holm_p"] > alpha / (m - i):
            level = alpha / (m - i)  # the first not rejected: this level from here on
        tested = alpha / (m - i) if level is None else level
        half = student.ppf(1 - tested / 2, len(c["seeds"]) - 1) * c.pop("holm_se")
        c.update(holm_level=1 - tested, holm_low=c["mean"] - half, holm_high=c["mean"] + half)
    return cells


def means(cell):
    values = np.array([np.mean(cell[s]) for s in sorted(cell)])
    return {"seeds": sorted(cell), "mean": float(values.mean()),
            "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def verdict(d, a="Rad", b="Real NVP"):
    """Read from the Holm-corrected interval when the table has one, else
    from the 95 % t interval."""
    low, high = (d["holm_low"], d["holm_high"]) if "holm_low" in d else (d["t_low"], d["t_high"])
    if low is None:  # one seed: no interval across seeds
        return "no verdict (one seed)"
    if low > 0:
        return f"{a} ahead"
    if high < 0:
        return f"{b} ahead"
    return "no difference shown"


def analyse(runs, baselines, n_boot, dimensions=None, selection=None):
    """Every number of the study (a JSON-ready dict).

    ``dimensions`` is :func:`load_dimensions`'s ``(runs, baselines)`` of the
    problems beyond two dimensions, or None; ``selection`` the choices of
    validation/select_flows.py (``choices.json``), or None."""
    out = {"exact": {}, "paper": {}, "recipes": {}, "data_size": {}}
    for p in PROBLEMS:
        # both models on the seeds both have (a run of one model may have
        # finished before the other's)
        rad, nvp = common(runs[(PAPER_TRAINING, 10_000, p, "rad")],
                          runs[(PAPER_TRAINING, 10_000, p, "realnvp")])
        truth = exact(p, rad, 10_000)
        out["exact"][p] = {str(s): float(np.mean(v)) for s, v in truth.items()}
        row = {"rad": means(rad), "realnvp": means(nvp), "rad_minus_realnvp":
               difference(rad, nvp, n_boot), "gaps": {}}
        for name in ("gmm", "kde", "best"):
            if (name, p) in baselines:
                row[name] = means(baselines[(name, p)])
                row[f"rad_minus_{name}"] = difference(rad, baselines[(name, p)], n_boot)
        if ("choice", p) in baselines:
            row["choice"] = {str(s): c for s, c in sorted(baselines[("choice", p)].items())}
        for name, cell in (("rad", rad), ("realnvp", nvp), *[
                (n, baselines[(n, p)]) for n in ("gmm", "kde", "best") if (n, p) in baselines]):
            # exact - model on the seeds both have: the gap to the best achievable value
            row["gaps"][name] = difference(exact(p, cell, 10_000), cell, n_boot)
        out["paper"][p] = row
    holm([out["paper"][p]["rad_minus_realnvp"] for p in PROBLEMS])
    holm([out["paper"][p]["rad_minus_best"] for p in PROBLEMS if "rad_minus_best" in
          out["paper"][p]])
    # other trainings of the paper's widths (a wider model is table `capacity`'s)
    trainings = sorted({t for t, n, _, _ in runs if n == 10_000 and t != PAPER_TRAINING
                        and t.hidden is None}, key=str)
    for t in trainings:
        for model in ("rad", "realnvp"):
            if not all((t, 10_000, p, model) in runs for p in PROBLEMS):
                continue
            out["recipes"].setdefault(str(t), {})[model] = {
                p: {"scores": means(runs[(t, 10_000, p, model)]),
                    "minus_paper": difference(runs[(t, 10_000, p, model)],
                                              runs[(PAPER_TRAINING, 10_000, p, model)], n_boot)}
                for p in PROBLEMS}
    by_name = {str(t): t for t in trainings}
    for v, by_model in out["recipes"].items():
        for cells in by_model.values():
            holm([cells[p]["minus_paper"] for p in PROBLEMS])
    both = [v for v in out["recipes"] if set(out["recipes"][v]) == {"rad", "realnvp"}]
    if both:
        best = max(both, key=lambda v: np.mean(
            [out["recipes"][v]["rad"][p]["minus_paper"]["mean"] for p in PROBLEMS]))
        t = by_name[best]
        out["beyond"] = {"variant": best, "problems": {
            p: difference(runs[(t, 10_000, p, "rad")], runs[(t, 10_000, p, "realnvp")], n_boot)
            for p in PROBLEMS}}
        holm(list(out["beyond"]["problems"].values()))
        out["own_best"] = own_best(out, runs, n_boot)
    out["data_size"] = data_sizes(runs, n_boot)
    moons = two_moons_settled(runs, n_boot)
    if moons:
        out["two_moons"] = moons
    if dimensions is not None:
        out["dimensions"] = dimension_rows(*dimensions, n_boot)
    if selection:
        out["selected"] = selected_rows(runs, baselines, selection, n_boot)
        out["selection_changes"] = selection_changes(runs, selection)
        widths = capacity_rows(runs, baselines, selection, n_boot)
        if widths:
            out["capacity"] = widths
    matched = matched_time(runs, n_boot)
    if matched:
        out["matched_time"] = matched
    return out


def matched_time(runs, n_boot):
    """Rad under the paper protocol against Real NVP trained for longer (its
    steps raised until its run takes about Rad's wall time: ``radref
    reproduce --models realnvp --steps 200000``), paired by seed, Holm across
    the problems; ``{}`` until every problem has such runs."""
    longer = sorted({t for t, n, _, model in runs if n == 10_000 and model == "realnvp"
                     and t.steps > PAPER["steps"]
                     and t == dataclasses.replace(PAPER_TRAINING, steps=t.steps)
                     and all((t, 10_000, p, "realnvp") in runs for p in PROBLEMS)},
                    key=lambda t: t.steps)
    if not longer:
        return {}
    training = longer[-1]
    rows = {}
    for p in PROBLEMS:
        rad, nvp = common(runs[(PAPER_TRAINING, 10_000, p, "rad")],
                          runs[(training, 10_000, p, "realnvp")])
        rows[p] = {"rad": means(rad), "realnvp": means(nvp),
                   "rad_minus_realnvp": difference(rad, nvp, n_boot)}
    holm([rows[p]["rad_minus_realnvp"] for p in PROBLEMS])
    return {"variant": str(training), "steps": training.steps, "problems": rows}


def selected_rows(runs, baselines, choices, n_boot):
    """Each flow with the training chosen on validation data, per seed
    (validation/select_flows.py's ``choices.json``; only the seeds whose
    refit on all the training points has finished): Rad − Real NVP and each
    against the baseline chosen on validation data, Holm per column."""
    cells = {}
    for choice in choices.values():
        key = (choice["problem"], choice["model"], choice["hidden"])
        run = refit(runs, Training.chosen(choice), choice["problem"], choice["model"])
        if run and choice["seed"] in run:
            cells.setdefault(key, {})[choice["seed"]] = run[choice["seed"]]
    found = {}
    for (problem, model, hidden), cell in sorted(cells.items()):
        label = model if hidden == PAPER_HIDDEN[model] else f"{model} (hidden {hidden})"
        row = found.setdefault(problem, {})
        row[label] = {"scores": means(cell), "choices": {
            str(c["seed"]): f"lr {c['lr']:g}, {c['lr_schedule']}" + (
                f" (seed {c['chosen_on_seed']}'s split)" if "chosen_on_seed" in c else "")
            for c in choices.values()
            if (c["problem"], c["model"], c["hidden"]) == (problem, model, hidden)}}
        if ("best", problem) in baselines and len(common(cell, baselines[("best", problem)])[0]) > 1:
            row[label]["minus_best"] = difference(cell, baselines[("best", problem)], n_boot)
    for problem, row in found.items():
        if "rad" in row and "realnvp" in row and len(common(
                cells[(problem, "rad", 8)], cells[(problem, "realnvp", 56)])[0]) > 1:
            row["rad_minus_realnvp"] = difference(cells[(problem, "rad", 8)],
                                                  cells[(problem, "realnvp", 56)], n_boot)
    holm([row["rad_minus_realnvp"] for row in found.values() if "rad_minus_realnvp" in row])
    for label in {lab for row in found.values() for lab in row if lab != "rad_minus_realnvp"}:
        holm([row[label]["minus_best"] for row in found.values()
              if label in row and "minus_best" in row[label]])
    return found


def selection_changes(runs, choices):
    """What the choice of each flow (at its paper width) changed: per problem
    and model, the mean over seeds of the chosen training's held-out score
    minus the paper protocol's, paired by seed (0 on a seed that chose the
    paper's training), over the seeds with a finished refit and a paper run.
    ``{model: {problem: {"mean", "n"} or None}}``; None where every seed chose
    the paper's training; a problem none of whose changed seeds has a
    finished refit is left out (a mean over the unchanged seeds alone would
    read as "no change")."""
    found = {}
    for choice in choices.values():
        if choice["hidden"] != PAPER_HIDDEN[choice["model"]]:
            continue
        model, problem, seed = choice["model"], choice["problem"], choice["seed"]
        training = Training.chosen(choice)
        paper = runs.get((PAPER_TRAINING, 10_000, problem, model), {})
        chosen = paper if training == PAPER_TRAINING else refit(runs, training, problem, model)
        cell = found.setdefault(model, {}).setdefault(
            problem, {"kept": True, "refitted": False, "seeds": {}})
        cell["kept"] &= training == PAPER_TRAINING
        if seed in chosen and seed in paper:
            cell["seeds"][seed] = float(np.mean(chosen[seed]) - np.mean(paper[seed]))
            cell["refitted"] |= training != PAPER_TRAINING
    return {model: {problem: None if cell["kept"] else {
        "mean": float(np.mean(list(cell["seeds"].values()))), "n": len(cell["seeds"])}
        for problem, cell in sorted(by_problem.items()) if cell["kept"] or cell["refitted"]}
        for model, by_problem in sorted(found.items())}


#: Rad's widths beyond the paper's 8 hidden units (issue 24, "Capacity")
CAPACITY_WIDTHS = (32, 64)


def capacity_rows(runs, baselines, choices, n_boot):
    """Rad wider than the paper (``CAPACITY_WIDTHS`` hidden units in the
    conditioners and the gating networks), keyed by the training the wider
    runs were trained with (``radref reproduce --models rad --hidden 32 64``
    with a rate and schedule: the one chosen for width 8 on validation data
    when they were trained, validation/select_flows.py).

    Per problem, per training of its wider runs, per width: the held-out
    score, the change from width 8 under **that** training and the
    difference to the baseline chosen on validation data, both paired by
    seed; Holm across the rows of each (width, comparison) column.
    ``"choice"`` says whether that training is still the one chosen for
    width 8 on every seed (``choices``; a grid extended since can move it),
    and if not, what is.  ``{problem: {training name: {"choice", "widths":
    {hidden: entry}}}}``; ``{}`` until a wider run has finished."""
    chosen = {}
    for choice in choices.values():
        if choice["model"] == "rad" and choice["hidden"] == PAPER_HIDDEN["rad"]:
            chosen.setdefault(choice["problem"], set()).add(Training.chosen(choice))
    found = {}
    for problem in PROBLEMS:
        wider = sorted({dataclasses.replace(t, hidden=None) for t, n, p, m in runs
                        if (p, m, n) == (problem, "rad", 10_000) and t.hidden in CAPACITY_WIDTHS
                        and not t.from_ema_run}, key=str)
        for training in wider:
            now = chosen.get(problem, set())
            group = found.setdefault(problem, {})[str(training)] = {
                "choice": "yes" if now == {training} else "no: now " + "; ".join(sorted(
                    f"lr {t.lr:g}, {t.lr_schedule}" for t in now)) if now else "none made",
                "widths": {}}
            narrow = refit(runs, training, problem, "rad")
            for hidden in (PAPER_HIDDEN["rad"], *CAPACITY_WIDTHS):
                cell = narrow if hidden == PAPER_HIDDEN["rad"] else refit(
                    runs, dataclasses.replace(training, hidden=hidden), problem, "rad")
                if not cell:
                    continue
                entry = group["widths"][str(hidden)] = {"scores": means(cell)}
                if hidden != PAPER_HIDDEN["rad"] and common(cell, narrow)[0]:
                    entry["minus_narrow"] = difference(cell, narrow, n_boot)
                if ("best", problem) in baselines and common(
                        cell, baselines[("best", problem)])[0]:
                    entry["minus_best"] = difference(cell, baselines[("best", problem)], n_boot)
    for hidden in (PAPER_HIDDEN["rad"], *CAPACITY_WIDTHS):
        for comparison in ("minus_narrow", "minus_best"):
            holm([group["widths"][str(hidden)][comparison] for by_training in found.values()
                  for group in by_training.values()
                  if comparison in group["widths"].get(str(hidden), {})])
    return found


def exact_gap(problem, cell, n_train=10_000):
    """Mean over the seeds of ``cell`` of (exact - model) mean log-likelihood."""
    truth = exact(problem, cell, n_train)
    return float(np.mean([np.mean(truth[s]) - np.mean(cell[s]) for s in cell]))


def own_best(out, runs, n_boot):
    """Each model with the recipe (or the paper's training) of its best mean
    change over the six problems, Rad − Real NVP on seeds 0-2.  Only
    trainings that differ from the paper's by their recipe compete: more
    steps is a larger budget (table ``matched_time``), another rate a
    choice (table ``selected``); and only those run on seeds 0-2 of every
    problem."""
    seeds = [0, 1, 2]
    recipes = {str(t): t for t, n, _, _ in runs if n == 10_000 and t.recipe}

    def best(model):
        gains = {recipes[v]: np.mean([cells[p]["minus_paper"]["mean"] for p in PROBLEMS])
                 for v, by_model in out["recipes"].items() if v in recipes
                 for m, cells in by_model.items() if m == model
                 and all(set(seeds) <= set(runs[(recipes[v], 10_000, p, m)]) for p in PROBLEMS)}
        gains[PAPER_TRAINING] = 0.0
        return max(gains, key=gains.get)
    rad, nvp = best("rad"), best("realnvp")
    cells = {}
    for p in PROBLEMS:
        a = {s: runs[(rad, 10_000, p, "rad")][s] for s in seeds}
        b = {s: runs[(nvp, 10_000, p, "realnvp")][s] for s in seeds}
        cells[p] = {"rad": means(a), "realnvp": means(b), "rad_minus_realnvp":
                    difference(a, b, n_boot), "rad_gap": exact_gap(p, a)}
    holm([cells[p]["rad_minus_realnvp"] for p in PROBLEMS])
    return {"rad_variant": str(rad), "realnvp_variant": str(nvp), "problems": cells}


def data_sizes(runs, n_boot):
    """Rad against Real NVP, paper protocol, at each training-set size of the
    problems run at more than one size, on every seed both models have at
    that size: ``{problem: {n_train: cell}}``; Holm across all the rows."""
    found = {}
    for problem in PROBLEMS:
        sizes = sorted({n for t, n, p, _ in runs if t == PAPER_TRAINING and p == problem})
        if len(sizes) < 2:
            continue
        for n in sizes:
            rad, nvp = runs.get((PAPER_TRAINING, n, problem, "rad")), runs.get(
                (PAPER_TRAINING, n, problem, "realnvp"))
            if not (rad and nvp):
                continue
            rad, nvp = common(rad, nvp)
            found.setdefault(problem, {})[str(n)] = {
                "rad": means(rad), "realnvp": means(nvp),
                "rad_minus_realnvp": difference(rad, nvp, n_boot),
                "rad_gap": exact_gap(problem, rad, n)}
    holm([row["rad_minus_realnvp"] for by_size in found.values() for row in by_size.values()])
    return found


#: the control of two moons at 10,000 points that sees each point as often
#: as the 100,000-point runs do: 5,000 steps x 500 = 250 passes (100,000
#: points: 50,000 x 500 / 100,000 = 250 passes)
CONTROL = Training(steps=5_000)
#: the second control: 250 passes and the 100,000-point runs' 50,000 updates,
#: at batch 50 (50,000 x 50 / 10,000 = 250 passes; noisier gradients)
CONTROL_BATCH = Training(batch_size=50)
#: the rows of table ``two_moons``: label, training, training points
TWO_MOONS_ROWS = (("10,000 points, 50,000 steps", PAPER_TRAINING, 10_000),
                  ("100,000 points, 50,000 steps", PAPER_TRAINING, 100_000),
                  ("10,000 points, 5,000 steps (passes of 100,000)", CONTROL, 10_000),
                  ("10,000 points, 50,000 steps at batch 50 (passes and updates of 100,000)",
                   CONTROL_BATCH, 10_000))
#: the changes of Rad − Real NVP it pairs (later row, earlier row, by index):
#: more points, and each control against more points and against the paper
TWO_MOONS_CHANGES = ((1, 0), (1, 2), (2, 0), (1, 3), (3, 0))


def two_moons_settled(runs, n_boot, problem="two_moons"):
    """Two moons with every seed: Rad − Real NVP at 10,000 points, at
    100,000, and in the controls of equal passes (10,000 points, 5,000
    steps; 10,000 points, 50,000 steps at batch 50), Holm across those rows;
    and the paired changes of Rad − Real NVP between them
    (:data:`TWO_MOONS_CHANGES`; the test points of a seed are the same at
    every size: ``train_test_split_samples`` draws them from their own
    stream), Holm across the changes.  A row needs two seeds of both models."""
    rows = {}
    for label, training, n in TWO_MOONS_ROWS:
        rad, nvp = runs.get((training, n, problem, "rad")), runs.get((training, n, problem,
                                                                       "realnvp"))
        if rad and nvp and len(common(rad, nvp)[0]) >= 2:
            rad, nvp = common(rad, nvp)
            rows[label] = {"variant": str(training), "n_train": n, "rad": means(rad),
                           "realnvp": means(nvp), "rad_minus_realnvp":
                           difference(rad, nvp, n_boot), "rad_gap": exact_gap(problem, rad, n),
                           "realnvp_gap": exact_gap(problem, nvp, n)}
    if len(rows) < 2:
        return {}
    holm([r["rad_minus_realnvp"] for r in rows.values()])
    changes = {}
    for later, earlier in TWO_MOONS_CHANGES:
        (a, ta, na), (b, tb, nb) = TWO_MOONS_ROWS[later], TWO_MOONS_ROWS[earlier]
        if a not in rows or b not in rows:
            continue
        da = _per_seed_difference(runs, ta, na, problem)
        db = _per_seed_difference(runs, tb, nb, problem)
        if len(common(da, db)[0]) >= 2:
            changes[f"{a} − {b}"] = difference(da, db, n_boot)
    holm(list(changes.values()))
    return {"rows": rows, "changes": changes}


def _per_seed_difference(runs, training, n_train, problem):
    rad = runs[(training, n_train, problem, "rad")]
    nvp = runs[(training, n_train, problem, "realnvp")]
    return {s: rad[s] - nvp[s] for s in sorted(set(rad) & set(nvp))}


def load_dimensions(directory):
    """Runs and baselines of the problems beyond two dimensions
    (validation/dimensions.py's layout): ``({(problem, model): {seed: points}},
    load_baselines(directory/baselines))``."""
    runs = {}
    for run in sorted(glob.glob(os.path.join(directory, "flows", "*"))):
        if not os.path.exists(os.path.join(run, "test_points.npz")):
            continue
        result = _json(os.path.join(run, "result.json"))
        with np.load(os.path.join(run, "test_points.npz")) as points:
            runs.setdefault((result["problem"], result["model"]), {})[result["seed"]] = \
                points["model"]
    return runs, load_baselines(os.path.join(directory, "baselines"))


def dimension_rows(runs, baselines, n_boot):
    """Per problem beyond 2-D: each model's score and gap to the exact
    density, and each flow against the baseline chosen on validation data."""
    found = {}
    for problem in sorted({p for p, _ in runs} | {p for _, p in baselines}):
        row = {"models": {}}
        cells = {m: runs[(problem, m)] for m in ("rad", "realnvp") if (problem, m) in runs}
        cells.update({n: baselines[(n, problem)] for n in ("gmm", "kde", "best")
                      if (n, problem) in baselines})
        for name, cell in cells.items():
            row["models"][name] = {"scores": means(cell), "gap": difference(
                exact(problem, cell, 10_000), cell, n_boot)}
        if ("choice", problem) in baselines:
            row["choice"] = {str(s): c for s, c in sorted(baselines[("choice", problem)].items())}
        for flow in ("rad", "realnvp"):
            if flow in cells and "best" in cells and common(cells[flow], cells["best"])[0]:
                row[f"{flow}_minus_best"] = difference(cells[flow], cells["best"], n_boot)
        if "rad" in cells and "realnvp" in cells and common(cells["rad"], cells["realnvp"])[0]:
            row["rad_minus_realnvp"] = difference(cells["rad"], cells["realnvp"], n_boot)
        found[problem] = row
    # each column's verdicts hold together across the problems (family-wise 5 %)
    for column in ("rad_minus_best", "realnvp_minus_best", "rad_minus_realnvp"):
        holm([row[column] for row in found.values() if column in row])
    return found


# ------------------------------------------------------------------- tables
def _ci(d):
    if d["t_low"] is None:
        return f"{d['mean']:+.4f} (one seed: no interval)"
    return f"{d['mean']:+.4f} [{d['t_low']:+.4f}, {d['t_high']:+.4f}]"


def _holm(d):
    if "holm_low" not in d:  # one seed: not in the correction
        return "—"
    return f"[{d['holm_low']:+.4f}, {d['holm_high']:+.4f}]"


def _boot(d):
    return f"[{d['boot_low']:+.4f}, {d['boot_high']:+.4f}]"


def _ms(m):
    return f"{m['mean']:+.3f} ± {m['sd']:.3f}"


def _gap(d):
    """A gap to the exact density: mean [t interval] (bootstrap with one seed)."""
    if d["t_low"] is None:
        return f"{d['mean']:.3f} [{d['boot_low']:.3f}, {d['boot_high']:.3f}]ᵇ"
    return f"{d['mean']:.3f} [{d['t_low']:.3f}, {d['t_high']:.3f}]"


COMPARISON = ("Rad − Real NVP, 95 % t CI across seeds | Holm-corrected CI | bootstrap over "
              "test points | verdict (Holm)", "---|---|---|---|")


def _comparison(label, a, b, d, extra=""):
    """One row: scores of A and B, A − B with its intervals, the verdict."""
    return (f"| {label} | {_ms(a)} | {_ms(b)} | {_ci(d)} | {_holm(d)} | {_boot(d)} | "
            f"{verdict(d)} (n = {len(d['seeds'])}) |{extra}")


def _exact_mean(study, p):
    return float(np.mean(list(study["exact"][p].values())))


def section43_table(study):
    """The §4.3 table: the paper's numbers next to ours (five seeds)."""
    from radref.user.reproduce import PAPER as PAPER_TABLE
    rows = ["| problem | paper Rad | paper Real NVP | radref Rad | radref Real NVP | "
            "exact density on the test points |", "|---|---|---|---|---|---|"]
    for p, row in study["paper"].items():
        rows.append(f"| {p} | {PAPER_TABLE[p][0]:+.2f} | {PAPER_TABLE[p][1]:+.2f} | "
                    f"{_ms(row['rad'])} ({len(row['rad']['seeds'])} seeds) | "
                    f"{_ms(row['realnvp'])} ({len(row['realnvp']['seeds'])} seeds) | "
                    f"{_exact_mean(study, p):+.3f} ({len(study['exact'][p])} seeds) |")
    return rows


def paper_table(study):
    rows = [f"| problem | Rad | Real NVP | {COMPARISON[0]} |", f"|---|---|---|{COMPARISON[1]}"]
    for p, row in study["paper"].items():
        rows.append(_comparison(p, row["rad"], row["realnvp"], row["rad_minus_realnvp"]))
    return rows


def _choices(row):
    """``GMM 3, KDE 2``: how often each baseline was chosen on validation data."""
    values = list(row.get("choice", {}).values())
    return ", ".join(f"{n.upper()} {values.count(n)}" for n in ("gmm", "kde") if n in values)


def baselines_table(study):
    rows = ["| problem | Rad | GMM (validation) | KDE (CV) | best baseline (chosen on validation, "
            "per seed) | Rad − best baseline, 95 % t CI | Holm-corrected CI | verdict (Holm) |",
            "|---|---|---|---|---|---|---|---|"]
    for p, row in study["paper"].items():
        if "best" in row:
            d = row["rad_minus_best"]
            rows.append(f"| {p} | {_ms(row['rad'])} | {_ms(row['gmm'])} | {_ms(row['kde'])} | "
                        f"{_ms(row['best'])} ({_choices(row)}) | {_ci(d)} | {_holm(d)} | "
                        f"{verdict(d, 'Rad', 'the baseline')} (n = {len(d['seeds'])}) |")
    return rows


def exact_table(study):
    """Gaps to the exact density, paired by seed: mean over seeds of
    mean(log p_true − log q) on each seed's test points, 95 % t interval."""
    names = [("rad", "Rad"), ("realnvp", "Real NVP"), ("gmm", "GMM"), ("kde", "KDE"),
             ("best", "best baseline")]
    rows = ["| problem | seeds | " + " | ".join(label for _, label in names) + " |",
            "|---|---|" + "---|" * len(names)]
    for p, row in study["paper"].items():
        cells = [_gap(row["gaps"][n]) if n in row["gaps"] else "—" for n, _ in names]
        rows.append(f"| {p} | {len(row['gaps']['rad']['seeds'])} | " + " | ".join(cells) + " |")
    return rows


def recipes_table(study):
    rows = ["| recipe | model | " + " | ".join(PROBLEMS) + " | mean |",
            "|---|---|" + "---|" * (len(PROBLEMS) + 1)]
    for v, by_model in study["recipes"].items():
        for model, cells in by_model.items():
            shown = [_ci(cells[p]["minus_paper"]) + ("*" if verdict(cells[p]["minus_paper"])
                                                     .endswith(" ahead") else "")
                     for p in PROBLEMS]
            average = np.mean([cells[p]["minus_paper"]["mean"] for p in PROBLEMS])
            rows.append(f"| {v} | {model} | " + " | ".join(shown) + f" | {average:+.4f} |")
    return rows


def beyond_table(study):
    v = study["beyond"]["variant"]
    rows = [f"| problem | Rad ({v}) | Real NVP ({v}) | {COMPARISON[0]} |",
            f"|---|---|---|{COMPARISON[1]}"]
    for p, d in study["beyond"]["problems"].items():
        rad = study["recipes"][v]["rad"][p]["scores"]
        rows.append(_comparison(p, rad, study["recipes"][v]["realnvp"][p]["scores"], d))
    return rows


def own_best_table(study):
    own = study["own_best"]
    rad, nvp = own["rad_variant"], own["realnvp_variant"]
    rows = [f"| problem | Rad ({rad}) | Real NVP ({nvp}) | Rad − Real NVP, 95 % t CI across "
            f"seeds | Holm-corrected CI | verdict (Holm) | Rad's gap to the exact density |",
            "|---|---|---|---|---|---|---|"]
    for p, row in own["problems"].items():
        d = row["rad_minus_realnvp"]
        rows.append(f"| {p} | {_ms(row['rad'])} | {_ms(row['realnvp'])} | {_ci(d)} | "
                    f"{_holm(d)} | {verdict(d)} (n = {len(d['seeds'])}) | "
                    f"{row['rad_gap']:.3f} |")
    return rows


def matched_time_table(study):
    matched = study["matched_time"]
    rows = [f"| problem | Rad (paper, {PAPER['steps']:,} steps) | Real NVP "
            f"({matched['steps']:,} steps) | {COMPARISON[0]} |",
            f"|---|---|---|{COMPARISON[1]}"]
    for p, row in matched["problems"].items():
        rows.append(_comparison(p, row["rad"], row["realnvp"], row["rad_minus_realnvp"]))
    return rows


def data_size_table(study):
    rows = [f"| problem, training points | Rad | Real NVP | {COMPARISON[0]} | Rad's gap to "
            f"the exact density |", f"|---|---|---|{COMPARISON[1]}---|"]
    for problem, by_size in study["data_size"].items():
        for n, row in by_size.items():
            rows.append(_comparison(f"{problem}, {int(n):,}", row["rad"], row["realnvp"],
                                    row["rad_minus_realnvp"], f" {row['rad_gap']:.3f} |"))
    return rows


def _change_verdict(d):
    """The verdict of a change of Rad − Real NVP between two rows."""
    return {"Rad ahead": "Rad gains", "Real NVP ahead": "Rad loses"}.get(verdict(d),
                                                                         "no change shown")


def two_moons_table(study):
    moons = study["two_moons"]
    rows = [f"| two moons | Rad | Real NVP | {COMPARISON[0]} | Rad's gap to the exact density "
            f"| Real NVP's gap |", f"|---|---|---|{COMPARISON[1]}---|---|"]
    for label, row in moons["rows"].items():
        rows.append(_comparison(label, row["rad"], row["realnvp"], row["rad_minus_realnvp"],
                                f" {row['rad_gap']:.3f} | {row['realnvp_gap']:.3f} |"))
    for label, d in moons["changes"].items():
        rows.append(f"| change of Rad − Real NVP: {label} | | | {_ci(d)} | {_holm(d)} | "
                    f"{_boot(d)} | {_change_verdict(d)} (n = {len(d['seeds'])}) | | |")
    return rows


def dimensions_table(study):
    from radref import datasets_nd
    names = [("rad", "Rad"), ("realnvp", "Real NVP"), ("gmm", "GMM"), ("kde", "KDE"),
             ("best", "best baseline")]
    rows = ["| problem | d | seeds | " + " | ".join(f"{label}: score; gap to exact"
                                                  for _, label in names) +
            " | Rad − best baseline | Real NVP − best baseline | Rad − Real NVP |",
            "|---|---|---|" + "---|" * (len(names) + 3)]
    for p, row in study["dimensions"].items():
        cells = []
        for n, _ in names:
            m = row["models"].get(n)
            cells.append("—" if m is None else f"{_ms(m['scores']) if len(m['scores']['seeds']) > 1 else format(m['scores']['mean'], '+.3f')}; {_gap(m['gap'])}")
        counts = {n: len(m["scores"]["seeds"]) for n, m in row["models"].items()}
        flows = {counts[n] for n in ("rad", "realnvp") if n in counts}
        bases = {counts[n] for n in ("gmm", "kde", "best") if n in counts}
        seeds = (max(counts.values()) if len(flows | bases) == 1 else
                 f"{'/'.join(map(str, sorted(flows)))} (flows), "
                 f"{'/'.join(map(str, sorted(bases)))} (baselines)")
        for column, a, b in (("rad_minus_best", "Rad", "the baseline"),
                             ("realnvp_minus_best", "Real NVP", "the baseline"),
                             ("rad_minus_realnvp", "Rad", "Real NVP")):
            cells.append(_dimension_difference(row.get(column), a, b))
        rows.append(f"| {p} | {datasets_nd.dimension(p)} | {seeds} | " + " | ".join(cells) + " |")
    return rows


def _dimension_difference(d, a, b):
    """A difference of the dimensions table: with several seeds, the mean, its
    Holm-corrected interval (across the problems) and the verdict it gives;
    with one, the mean and the bootstrap over test points (no verdict)."""
    if d is None:
        return "—"
    if "holm_low" not in d:
        return f"{d['mean']:+.4f}, bootstrap {_boot(d)}"
    return f"{d['mean']:+.4f}, Holm {_holm(d)}: {verdict(d, a, b)}"


def selected_table(study):
    rows = ["| problem | model | held-out score | chosen per seed | − best baseline, 95 % t CI | "
            "Holm-corrected CI | verdict (Holm) |", "|---|---|---|---|---|---|---|"]
    for problem, row in study["selected"].items():
        for label, cell in row.items():
            if label == "rad_minus_realnvp":
                continue
            d = cell.get("minus_best")
            picked = {s: c for s, c in cell["choices"].items() if int(s) in cell["scores"]["seeds"]}
            chosen = (next(iter(picked.values())) if len(set(picked.values())) == 1 else
                      "; ".join(f"s{s}: {c}" for s, c in picked.items()))
            rows.append(f"| {problem} | {label} | {_ms(cell['scores'])} | {chosen} | " + (
                "— | — | — |" if d is None or "holm_low" not in d else
                f"{_ci(d)} | {_holm(d)} | {verdict(d, label, 'the baseline')} "
                f"(n = {len(d['seeds'])}) |"))
        if "rad_minus_realnvp" in row:
            d = row["rad_minus_realnvp"]
            rows.append(f"| {problem} | Rad − Real NVP | | | {_ci(d)} | {_holm(d)} | "
                        f"{verdict(d)} (n = {len(d['seeds'])}) |")
    return rows


MODEL_NAMES = {"rad": "Rad", "realnvp": "Real NVP"}


def _bullet(text, width=79):
    """A Markdown list item, wrapped as this project's pages are."""
    return textwrap.fill(text, width, initial_indent="- ", subsequent_indent="  ",
                         break_long_words=False, break_on_hyphens=False).splitlines()


def _baseline_name(study, problems):
    """"the mixture" when the baseline chosen on validation data is the
    mixture on every seed of ``problems``, else "the chosen baseline"."""
    picks = {c for p in problems for c in study["paper"][p].get("choice", {}).values()}
    return "the mixture" if picks == {"gmm"} else "the chosen baseline"


def selected_reading_table(study):
    """The three generated bullets under table ``selected``: what the choice
    changed, each flow against the baseline, Rad − Real NVP (verdicts by the
    Holm-corrected intervals)."""
    changes = [(cell["mean"], f"{MODEL_NAMES[m]} on {p} {cell['mean']:+.3f} (n = {cell['n']})")
               for m, by_problem in study["selection_changes"].items()
               for p, cell in by_problem.items() if cell is not None]
    kept = sorted((p, f"{MODEL_NAMES[m]} on {p}")
                  for m, by_problem in study["selection_changes"].items()
                  for p, cell in by_problem.items() if cell is None)
    first = ("**What the selection changed** (mean over the refitted seeds of the chosen "
             "training's held-out score minus the paper protocol's, paired by seed): "
             + ("; ".join(text for _, text in sorted(changes, key=lambda c: -c[0])) or "none")
             + ".")
    if kept:
        first += " The paper's training was kept for " + ", ".join(t for _, t in kept) + "."
    # each comparison read by verdict(), as the tables are
    by_verdict, below, total = {}, 0, 0
    for problem, row in study["selected"].items():
        for model in ("rad", "realnvp"):
            d = row.get(model, {}).get("minus_best")
            if not d or "holm_low" not in d:
                continue
            total, below = total + 1, below + (d["mean"] < 0)
            by_verdict.setdefault(verdict(d, "the flow", "the baseline"), []).append(
                f"{MODEL_NAMES[model]} on {problem} {d['mean']:+.3f}, corrected "
                f"[{d['holm_low']:+.3f}, {d['holm_high']:+.3f}] (n = {len(d['seeds'])})")
    baseline = _baseline_name(study, study["selected"])
    second = ("**Against the baseline chosen on validation data** (Holm across the "
              f"problems of each model): {baseline} stays ahead of "
              + ("; ".join(by_verdict.get("the baseline ahead", [])) or "no flow") + ".")
    if by_verdict.get("no difference shown"):
        second += (" No difference is shown for " + "; ".join(by_verdict["no difference shown"])
                   + ".")
    second += (" Ahead of the best baseline: " + "; ".join(by_verdict["the flow ahead"]) + "."
               if by_verdict.get("the flow ahead")
               else " No flow is ahead of the best baseline on any problem.")
    second += f" {below} of the {total} point estimates are below it."
    groups = {"Rad ahead": [], "no difference shown": [], "Real NVP ahead": []}
    for problem, row in study["selected"].items():
        d = row.get("rad_minus_realnvp")
        if not d or "holm_low" not in d:
            continue
        groups[verdict(d)].append(f"{problem} {d['mean']:+.3f} [{d['holm_low']:+.3f}, "
                                  f"{d['holm_high']:+.3f}] (n = {len(d['seeds'])})")
    third = ("**Rad − Real NVP, each with its chosen training**: "
             + ("; ".join(f"{name} on " + "; ".join(items) for name, items in groups.items()
                          if items) or "none tabled") + ".")
    return [line for text in (first, second, third) for line in _bullet(text)]


def capacity_table(study):
    rows = ["| problem | hidden units | training | still the choice for width 8 | held-out score "
            "| − width 8, 95 % t CI | Holm-corrected CI | verdict (Holm) | − best baseline, 95 % "
            "t CI | Holm-corrected CI | verdict (Holm) |", "|---" * 11 + "|"]
    for problem, by_training in study["capacity"].items():
        for training, group in by_training.items():
            for hidden, cell in group["widths"].items():
                cols = []
                for key, ahead, behind in (("minus_narrow", f"width {hidden}", "width 8"),
                                           ("minus_best", f"width {hidden}", "the baseline")):
                    d = cell.get(key)
                    n = "" if d is None or len(d["seeds"]) < 2 else f" (n = {len(d['seeds'])})"
                    cols.append("— | — | —" if d is None else
                                f"{_ci(d)} | {_holm(d)} | {verdict(d, ahead, behind)}{n}")
                scores = cell["scores"]
                shown = (f"{_ms(scores)} ({len(scores['seeds'])} seeds)"
                         if len(scores["seeds"]) > 1 else f"{scores['mean']:+.3f} (one seed)")
                rows.append(f"| {problem} | {hidden} | {training} | {group['choice']} | {shown} "
                            f"| {cols[0]} | {cols[1]} |")
    return rows


def load_candidates(selection_dir):
    """The results of validation/select_flows.py's candidates (``select/*/result.json``)."""
    return [_json(path) for path in sorted(glob.glob(os.path.join(selection_dir, "select", "*",
                                                                    "result.json")))]


def selection_grid(candidates):
    """``{"problem model hidden seed": {"lr schedule": validation score}}``, in
    the grid's order, from the candidates' results."""
    grid = {}
    for r in candidates:
        key = f"{r['problem']} {r['model']} {r['hidden']} {r['seed']}"
        grid.setdefault(key, {})[f"{r['lr']:g} {r['lr_schedule']}"] = r["val_loglik"]
    return grid


def selection_grid_table(study):
    """Each candidate's validation score; the chosen one in bold, marked
    "edge" when its rate is the grid's smallest or largest."""
    rates = sorted({float(c.split()[0]) for scores in study["selection_grid"].values()
                    for c in scores})
    columns = [f"{lr:g} {s}" for lr in rates for s in ("constant", "cosine")]
    edges = (f"{rates[0]:g}", f"{rates[-1]:g}")
    rows = ["| problem | model (width) | seed | " + " | ".join(
        f"lr {c.replace(' ', ', ')}" for c in columns) + " |", "|---" * (3 + len(columns)) + "|"]
    for key, scores in study["selection_grid"].items():
        problem, model, hidden, seed = key.split()
        finite = {c: v for c, v in scores.items() if v is not None}
        best = max(finite, key=finite.get)
        edge = " (edge)" if best.split()[0] in edges else ""
        cells = [("—" if c not in scores else "diverged" if scores[c] is None
                  else f"**{scores[c]:+.4f}**{edge}" if c == best
                  else f"{scores[c]:+.4f}") for c in columns]
        rows.append(f"| {problem} | {model} ({hidden}) | {seed} | " + " | ".join(cells) + " |")
    return rows


def run_times(study_dir=STUDY):
    """Every run time this page states, from the committed records: each
    run's ``seconds_this_session`` (wall seconds of its last session, while
    other work shared the machine), the baselines' and dimensions' recorded
    CPU seconds.  ``{label: {"runs", "rad", "realnvp", "total_minutes", "kind"}}``."""
    found = {}
    legacy = glob.glob(os.path.join(os.path.dirname(study_dir), "runs", "*", "result.json"))
    if legacy:
        seconds = {"rad": [], "realnvp": []}
        for path in legacy:
            r = _json(path)
            seconds[r["model"]].append(r["seconds_this_session"])
        found["paper, 10,000 points, seeds 0-2 (validation/results/runs, commit 00e01be)"] = \
            _times(seconds, "wall")
    for protocol_file in sorted(glob.glob(os.path.join(study_dir, "protocol-*",
                                                       "protocol.json"))):
        protocol = _json(protocol_file)
        seconds = {"rad": [], "realnvp": []}
        for path in glob.glob(os.path.join(os.path.dirname(protocol_file), "runs", "*",
                                           "result.json")):
            r = _json(path)
            seconds[r["model"]].append(r["seconds_this_session"])
        ran = [model for model in seconds if seconds[model]] or list(seconds)
        name = " / ".join(sorted({str(Training.of(protocol, model)) for model in ran}))
        label = f"{name}, {protocol['n_train']:,} points ({os.path.basename(os.path.dirname(protocol_file))})"
        found[label] = _times(seconds, "wall")
    for directory, label in ((os.path.join(study_dir, "baselines"), "baselines, 2-D"),
                             (os.path.join(study_dir, "dimensions", "baselines"),
                              "baselines, 4-8 dimensions")):
        path = os.path.join(directory, "baselines.json")
        if os.path.exists(path):
            records = _json(path)["records"]
            if all("cpu_seconds" in r for r in records):
                found[label] = _times({"problem and seed": [r["cpu_seconds"] for r in records]},
                                      "CPU")
    seconds = {"rad": [], "realnvp": []}
    for path in glob.glob(os.path.join(study_dir, "dimensions", "flows", "*", "result.json")):
        r = _json(path)
        seconds[r["model"]].append(r["cpu_seconds_this_session"])
    if seconds["rad"] or seconds["realnvp"]:
        found["flows, 4-8 dimensions"] = _times(seconds, "CPU")
    seconds = {"rad": [], "realnvp": []}
    for r in load_candidates(os.path.join(study_dir, "selection")):
        seconds[r["model"]].append(r["cpu_seconds_this_session"])
    if seconds["rad"] or seconds["realnvp"]:
        found["flow selection, candidates (validation/select_flows.py)"] = _times(seconds, "CPU")
    return found


def _times(seconds, kind):
    cells = {k: float(np.median(v)) for k, v in seconds.items() if v}
    return {"runs": sum(len(v) for v in seconds.values()), "median_seconds": cells,
            "total_minutes": sum(map(sum, seconds.values())) / 60, "kind": kind}


def run_time_table(study):
    rows = ["| runs | how many | median seconds per run | total minutes | clock |",
            "|---|---|---|---|---|"]
    for label, t in study["run_time"].items():
        median = ", ".join(f"{k} {v:.0f}" for k, v in t["median_seconds"].items())
        rows.append(f"| {label} | {t['runs']} | {median} | {t['total_minutes']:.1f} | "
                    f"{t['kind']} |")
    return rows


def tables(study):
    """Markdown of every table (a dict: name -> text)."""
    makers = {"section43": section43_table, "paper": paper_table,
              "baselines": baselines_table, "exact": exact_table, "recipes": recipes_table,
              "beyond": beyond_table, "own_best": own_best_table,
              "data_size": data_size_table, "two_moons": two_moons_table,
              "dimensions": dimensions_table, "selected": selected_table,
              "selection_grid": selection_grid_table, "matched_time": matched_time_table,
              "capacity": capacity_table, "run_time": run_time_table,
              "selected_reading": selected_reading_table}
    optional = ("beyond", "own_best", "two_moons", "dimensions", "selected", "selection_grid",
                "matched_time", "capacity", "run_time", "selected_reading")
    needs = {"selected_reading": "selection_changes"}  # tables made from another's numbers
    return {name: "\n".join(make(study)) for name, make in makers.items()
            if name not in optional or study.get(needs.get(name, name))}


# ------------------------------------------------------------------- figure
def _interval(d):
    """The interval the verdict reads: Holm-corrected when there is one."""
    return (d["holm_low"], d["holm_high"]) if "holm_low" in d else (d["t_low"], d["t_high"])


def figure(study, path):
    """Write :func:`paired_figure` to ``path``."""
    import matplotlib.pyplot as plt
    fig = paired_figure(study)
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def paired_figure(study):
    """Forest plot: each comparison's mean with its t interval (thick) and
    bootstrap interval (thin; not for the recipes, see results.md), one
    panel per question, all on one x axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [("Paper protocol: Rad − Real NVP",
               [(p, study["paper"][p]["rad_minus_realnvp"]) for p in PROBLEMS], True)]
    with_baselines = [p for p in PROBLEMS if "best" in study["paper"][p]]
    if with_baselines:
        panels.append(("Paper protocol: Rad − the baseline chosen on validation data",
                       [(p, study["paper"][p]["rad_minus_best"]) for p in with_baselines], True))
    if "beyond" in study:
        panels.append((f"{study['beyond']['variant']}: Rad − Real NVP",
                       [(p, study["beyond"]["problems"][p]) for p in PROBLEMS], True))
    if "own_best" in study:
        own = study["own_best"]
        panels.append((f"Each model's best training: Rad ({own['rad_variant']}) − Real NVP "
                       f"({own['realnvp_variant']}), no bootstrap",
                       [(p, own["problems"][p]["rad_minus_realnvp"]) for p in PROBLEMS], False))
    for v, by_model in study["recipes"].items():
        if "rad" in by_model:
            # paired with runs of older code: only the t interval holds (results.md)
            panels.append((f"Rad: {v} − paper (no bootstrap)",
                           [(p, by_model["rad"][p]["minus_paper"]) for p in PROBLEMS], False))
    panels.append(("By training points: Rad − Real NVP",
                   [(f"{problem}, {int(n):,}", r["rad_minus_realnvp"])
                    for problem, by_size in study["data_size"].items()
                    for n, r in by_size.items()], True))
    if study.get("two_moons"):
        panels.append(("Two moons, all seeds: Rad − Real NVP",
                       [(label, r["rad_minus_realnvp"])
                        for label, r in study["two_moons"]["rows"].items()], True))
    panels = [panel for panel in panels if panel[1]]
    lows = [min(_interval(d)[0], d["boot_low"]) for _, rows, _ in panels for _, d in rows]
    highs = [max(_interval(d)[1], d["boot_high"]) for _, rows, _ in panels for _, d in rows]
    limits = (1.4 * min(min(lows), -0.1), 1.4 * max(max(highs), 0.1))
    ticks = [t for t in (-3, -1, -0.3, -0.1, -0.03, 0, 0.03, 0.1, 0.3, 1, 3)
             if limits[0] <= t <= limits[1]]
    # wide enough for the row labels, the titles and ticks 0.03 apart
    fig, axes = plt.subplots(len(panels), 1, figsize=(9.5, 1.2 + 1.6 * len(panels)),
                             sharex=True, layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, (title, rows, with_bootstrap) in zip(axes, panels):
        for i, (label, d) in enumerate(rows):
            low, high = _interval(d)
            colour = "tab:green" if low > 0 else "tab:red" if high < 0 else "0.4"
            ax.plot([low, high], [i, i], color=colour, lw=5, alpha=0.45,
                    solid_capstyle="butt", label="Holm-corrected t interval across seeds"
                    if i == 0 else None)
            if with_bootstrap:
                ax.plot([d["boot_low"], d["boot_high"]], [i, i], color="k", lw=1.2,
                        label="95 % paired bootstrap over test points" if i == 0 else None)
            ax.plot(d["mean"], i, "o", color=colour, ms=5)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xscale("symlog", linthresh=0.03, linscale=0.6)
        ax.set_xlim(*limits)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        # the values under every panel: in a figure this tall, the bottom
        # axis alone is a long way from the top panels
        ax.tick_params(axis="x", labelbottom=True, labelsize=8)
        # long row labels (the two-moons controls) wrapped: they would squeeze the panels
        ax.set_yticks(range(len(rows)), [textwrap.fill(label, 38) for label, _ in rows],
                      fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.grid(axis="x", color="0.9")
        ax.set_title(textwrap.fill(title, 75), fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncol=2, fontsize=8, frameon=False)
    axes[-1].set_xlabel("A − B in held-out mean log-likelihood, nats (> 0: A better;\n"
                        "green: interval above 0, red: below; symlog axis: linear within "
                        "±0.03)", fontsize=8)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--write-points", metavar="DIR")
    parser.add_argument("--figure", default=FIGURE)
    parser.add_argument("--figure-only", action="store_true",
                        help="only draw --figure, from the study.json in --study (no analysis, "
                             "no other file written)")
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
    if args.figure_only:
        figure(_json(os.path.join(args.study, "study.json")), args.figure)
        return 0
    if not os.path.isdir(args.study):
        parser.exit(2, f"study.py: error: --study {args.study}: no such directory\n")
    dimensions = os.path.join(args.study, "dimensions")
    choices = os.path.join(args.study, "selection", "choices.json")
    try:
        study = analyse(load_runs(args.study, args.legacy),
                        load_baselines(os.path.join(args.study, "baselines")), args.n_boot,
                        load_dimensions(dimensions) if os.path.isdir(dimensions) else None,
                        _json(choices) if os.path.exists(choices) else None)
    except (ValueError, OSError) as exc:  # runs the study cannot pair, files missing
        parser.exit(2, f"study.py: error: {exc}\n")
    candidates = load_candidates(os.path.join(args.study, "selection"))
    if candidates:
        study["selection_grid"] = selection_grid(candidates)
    study["run_time"] = run_times(args.study)
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
