"""The tables of ``radref reproduce``: every finished (and verified) run of a
protocol directory, their summary over seeds, and the paper's §4.3 table.
"""
import csv
import io
import json
import math
import os

import numpy as np

from radref import datasets
from radref.training.files import atomic_write
from radref.user.options import describe_recipe
from radref.user.protocol import FULL, MODELS, PAPER, QUICK, ReproduceError, protocol_hash
from radref.user.runfiles import DamagedRun, json_ready, verify_finished_run
from radref.user.sweep import RunFileError, read_json


TABLE_KEYS = ("problem", "model", "seed", "n_parameters", "steps", "lr", "train_loglik",
              "test_loglik")


def finished_results(directory, log=None):
    """Results of every finished run in one protocol directory that passes
    :func:`verify_finished_run`; ``log`` receives a line naming each run
    that does not (it is left out of the tables)."""
    try:
        protocol = read_json(os.path.join(directory, "protocol.json"))
    except RunFileError as exc:
        raise ReproduceError(str(exc)) from None
    runs = os.path.join(directory, "runs")
    results = []
    for name in sorted(os.listdir(runs)) if protocol is not None and os.path.isdir(runs) else []:
        run = os.path.join(runs, name)
        if not os.path.isdir(run):
            continue
        try:
            result = verify_finished_run(run)
        except DamagedRun as exc:
            if log is not None:
                log(f"left out of the tables, damaged: {exc}")
            continue
        if result is not None and result.get("protocol_hash") == protocol_hash(protocol):
            results.append(result)
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
        test_mean, test_std = _mean_std([r["test_loglik"] for r in rs])
        train_mean, train_std = _mean_std([r["train_loglik"] for r in rs])
        summary.append({
            "problem": problem, "model": model, "n_seeds": len(rs),
            "test_mean": test_mean, "test_std": test_std,
            "train_mean": train_mean, "train_std": train_std,
            "n_parameters": rs[0]["n_parameters"],
            "paper": PAPER[problem][MODELS.index(model)],
        })
    return summary


def _mean_std(values):
    """Mean and standard deviation over seeds; a non-finite score (``None`` in
    JSON: -inf) makes the mean -inf and the deviation NaN, without a warning."""
    values = [-math.inf if v is None else float(v) for v in values]
    if not all(math.isfinite(v) for v in values):
        return (-math.inf if all(math.isfinite(v) or v == -math.inf for v in values)
                else math.nan), math.nan
    array = np.array(values)
    return float(array.mean()), float(array.std(ddof=1)) if len(values) > 1 else 0.0


def protocol_note(protocol):
    """``(column tag, sentence)`` for a table of runs under ``protocol`` when
    its training differs from the paper's, so that its numbers are not read
    as the paper's: the smoke test of ``--quick``, or the settings that
    differ; ``(None, None)`` under the paper's sizes, steps and rate."""
    if protocol is None:
        return None, None
    settings = {"steps": protocol["steps"], "n_train": protocol["n_train"],
                "n_test": protocol["n_test"], "batch_size": protocol["batch_size"],
                "lr": protocol["adam"]["lr"]}
    if all(settings[k] == QUICK[k] for k in ("steps", "n_train", "n_test")):
        return "smoke test", (
            f"SMOKE TEST (--quick: {settings['steps']} steps, {settings['n_train']} training "
            f"points): these numbers show that the pipeline runs; they are not comparable "
            f"with the paper's columns ({FULL['steps']} steps, {FULL['n_train']} points).")
    differing = [f"{k} {settings[k]:g} (paper {FULL[k]:g})" for k in settings
                 if settings[k] != FULL[k]]
    if not differing:
        return None, None
    return "this protocol", ("This protocol differs from the paper's in " +
                             ", ".join(differing) + ": compare its columns with care.")


def write_tables(results, directory, negative_entropy=None, recipe=None, protocol=None):
    """``results.csv``, ``results.json``, ``summary.json`` and ``table.md`` in
    ``directory``; ``table.md`` opens with the training recipe when there is one.

    Every file is composed first and then written atomically, so a failure
    leaves the previous tables whole; non-finite values are ``null`` in JSON
    and ``-inf`` / ``nan`` in the CSV and the table."""
    results = sorted(results, key=lambda r: (r["problem"], r["model"], r["seed"]))
    csv_text = io.StringIO()
    writer = csv.writer(csv_text)
    writer.writerow(TABLE_KEYS)
    for r in results:
        writer.writerow([-math.inf if r[k] is None and k.endswith("loglik") else r[k]
                         for k in TABLE_KEYS])
    summary = summarize(results)
    table = (f"Training recipe: {describe_recipe(recipe)} (the paper's columns: the paper's "
             f"training).\n\n" if recipe else "")
    table += markdown_table(summary, negative_entropy, protocol) + "\n"
    texts = {
        "results.csv": csv_text.getvalue(),
        "results.json": json.dumps(json_ready([{k: r[k] for k in TABLE_KEYS} for r in results]),
                                   indent=1, allow_nan=False),
        "summary.json": json.dumps(json_ready(summary), indent=1, allow_nan=False),
        "table.md": table,
    }
    for name, text in texts.items():
        with atomic_write(os.path.join(directory, name), "w") as f:
            f.write(text)


def markdown_table(summary, negative_entropy=None, protocol=None):
    """The §4.3 table: paper vs radref (held-out mean ± std over seeds, with the
    number of seeds) vs the best achievable value.  Under a ``protocol``
    other than the paper's, the table opens with :func:`protocol_note` and
    its radref columns carry the note's tag."""
    by_cell = {(s["problem"], s["model"]): s for s in summary}
    tag, sentence = protocol_note(protocol)
    mine = "" if tag is None else f" ({tag})"
    lines = [] if sentence is None else [sentence, ""]
    lines += [f"| problem | paper Rad | paper Real NVP | radref Rad{mine} | radref Real "
              f"NVP{mine} | best achievable |", "|---|---|---|---|---|---|"]
    for problem in datasets.PROBLEMS:
        row = [problem, f"{PAPER[problem][0]:+.2f}", f"{PAPER[problem][1]:+.2f}"]
        for model in MODELS:
            s = by_cell.get((problem, model))
            if s is None:
                row.append("—")
            elif s["n_seeds"] == 1 or s["test_std"] is None or not math.isfinite(s["test_std"]):
                row.append(f"{s['test_mean']:+.3f} ({s['n_seeds']} seed"
                           f"{'s' if s['n_seeds'] > 1 else ''})")
            else:
                row.append(f"{s['test_mean']:+.3f} ± {s['test_std']:.3f} ({s['n_seeds']} seeds)")
        best = (negative_entropy or {}).get(problem)
        row.append("—" if best is None else f"{best:+.3f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
