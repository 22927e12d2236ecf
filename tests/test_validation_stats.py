"""Tests of validation/paired.py (paired differences with confidence
intervals) and a --quick run of validation/baselines.py (GaussianMixture and
KernelDensity on the reproduce protocol's splits), and validation/study.py
(issue 15's tables, checked against the committed runs and docs/results.md)."""
import glob
import json
import math
import os
import re

import numpy as np
import pytest
from helpers import validation_module

from radref import datasets
from radref.training.schedules import validation_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module(name):
    return validation_module(name)


@pytest.fixture(scope="module")
def paired():
    return _module("paired")


@pytest.fixture(scope="module")
def baselines():
    return _module("baselines")


# -------------------------------------------------------------------- paired

def test_across_seeds_t_interval_by_hand(paired):
    # per-seed mean differences of A - B: seed 0: (0.3 - 0.1 + 0.1) / 3 = 0.1,
    # seed 1: 0.2, seed 2: 0.3.  Mean 0.2, sd 0.1, t_{0.975, 2} = 4.302652729749464
    # (Student's t table: 4.303), half-width 4.30265 * 0.1 / sqrt(3) = 0.248414
    a = {0: np.array([1.3, 1.0, 1.1]), 1: np.array([0.7, 0.2]), 2: np.array([0.3, 0.3, 0.3])}
    b = {0: np.array([1.0, 1.1, 1.0]), 1: np.array([0.5, 0.0]), 2: np.array([0.0, 0.0, 0.0])}
    result = paired.compare(a, b, n_boot=200)
    ci = result["across_seeds"]
    assert ci["mean"] == pytest.approx(0.2, abs=1e-12)
    assert ci["sd"] == pytest.approx(0.1, abs=1e-12)
    assert ci["low"] == pytest.approx(0.2 - 0.2484138, abs=1e-6)
    assert ci["high"] == pytest.approx(0.2 + 0.2484138, abs=1e-6)
    assert [result["per_seed"][s]["mean"] for s in (0, 1, 2)] == pytest.approx([0.1, 0.2, 0.3])
    assert paired.t_quantile(0.975, 2) == pytest.approx(4.302652729749464, rel=1e-12)
    assert "no difference shown" in paired.verdict(result)  # the interval holds 0


def test_bootstrap_of_a_constant_difference_is_that_difference(paired):
    rng = np.random.default_rng(0)
    b = {s: rng.normal(size=50) for s in range(3)}
    a = {s: b[s] + 0.25 for s in range(3)}
    result = paired.within_seeds(a, b, n_boot=300)
    for r in [*result["per_seed"].values(), result["pooled"]]:
        assert r["low"] == pytest.approx(0.25, abs=1e-12)
        assert r["high"] == pytest.approx(0.25, abs=1e-12)


def test_bootstrap_resamples_with_replacement(paired):
    # two points 0 and 1: a resampled mean is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4
    means = paired.bootstrap_means(np.array([0.0, 1.0]), 40_000, np.random.default_rng(1))
    shares = [np.mean(means == v) for v in (0.0, 0.5, 1.0)]
    assert shares == pytest.approx([0.25, 0.5, 0.25], abs=0.01)


def test_a_known_difference_is_covered_and_detected(paired):
    # A = B + 0.05 + seed offset + point noise.  The common part (the test
    # point's difficulty) cancels in the pairing.  Across seeds the target is
    # 0.05 (the offsets average out); the bootstrap over test points holds the
    # trained models (so the seed offsets) fixed: its target is 0.05 plus the
    # mean offset.  Both intervals must cover their target and exclude 0.
    rng = np.random.default_rng(7)
    a, b, offsets = {}, {}, []
    for seed in range(5):
        hard = rng.normal(scale=2.0, size=2000)
        offsets.append(rng.normal(scale=0.005))
        b[seed] = hard
        a[seed] = hard + 0.05 + offsets[-1] + rng.normal(scale=0.1, size=2000)
    result = paired.compare(a, b, n_boot=1000)
    for r, target in ((result["across_seeds"], 0.05),
                      (result["pooled"], 0.05 + np.mean(offsets))):
        assert r["low"] < target < r["high"] and r["low"] > 0
    assert "A ahead" in paired.verdict(result)


def test_mismatched_inputs_are_refused(paired):
    with pytest.raises(ValueError, match="same length"):
        paired.within_seeds({0: np.zeros(3)}, {0: np.zeros(4)})
    with pytest.raises(ValueError, match="other seeds"):
        paired.within_seeds({0: np.zeros(3)}, {1: np.zeros(3)})
    with pytest.raises(ValueError, match="non-finite"):
        paired.within_seeds({0: np.array([0.0, -np.inf])}, {0: np.zeros(2)})
    with pytest.raises(ValueError, match="2 seeds"):
        paired.across_seeds([0.1])


def test_paired_command_line(paired, tmp_path, capsys):
    for seed in (0, 1):
        np.save(tmp_path / f"a-{seed}.npy", np.full(4, 1.0 + seed))
        np.savez(tmp_path / f"b-{seed}.npz", gmm=np.full(4, 0.5))
    assert paired.main(["--a", str(tmp_path / "a-{seed}.npy"),
                        "--b", str(tmp_path / "b-{seed}.npz") + ":gmm",
                        "--seeds", "0", "1", "--n-boot", "50"]) == 0
    out = capsys.readouterr().out
    assert "seed 0: A - B = +0.5000" in out and "seed 1: A - B = +1.5000" in out


# ----------------------------------------------------------------- baselines

def test_gmm_parameter_count_by_hand(baselines):
    # 2 components in 2-d: 1 weight + 4 means + 2 * 3 covariance entries
    assert baselines.gmm_parameter_count(2, 2) == 11
    assert baselines.gmm_parameter_count(1, 3) == 9


def test_gmm_choice_is_the_best_validation_loglik(baselines):
    from sklearn.mixture import GaussianMixture
    X, _ = datasets.train_test_split_samples("grid", 300, 10, random_state=2)
    model, k, loglik = baselines.fit_gaussian_mixture(X, 2, 4, 0.25, n_init=2, component_cap=4)
    assert k == max(loglik, key=loglik.get) and model.n_components == k
    assert model.n_init == 2 and set(loglik) == {1, 2, 3, 4}
    # recompute one candidate's score: fitted on the other rows, the plain
    # mean log-likelihood of the validation rows (no complexity penalty)
    fit_rows, val_rows = validation_split(300, 0.25, np.random.SeedSequence(2))
    two = GaussianMixture(2, covariance_type="full", random_state=2, n_init=2).fit(X[fit_rows])
    assert loglik[2] == pytest.approx(np.mean(two.score_samples(X[val_rows])), rel=1e-10)


def test_gmm_grid_is_extended_while_the_choice_sits_at_its_edge(baselines):
    # the ring's 8 components need more than 3 candidates: starting from
    # 1-3, the grid grows one candidate at a time until the best is inside
    X, _ = datasets.train_test_split_samples("ring", 800, 10, random_state=0)
    _, k, loglik = baselines.fit_gaussian_mixture(X, 0, 3, 0.2, n_init=1, component_cap=40)
    tried = sorted(loglik)
    assert tried[:3] == [1, 2, 3] and len(tried) > 3
    assert tried == [c for c in baselines.COMPONENT_GRID if c <= tried[-1]]
    assert k < tried[-1]  # the search stopped once the best was not the largest tried
    assert max(loglik[c] for c in tried if c > k) < loglik[k]
    # without room to grow, the choice stays at the cap
    _, k_capped, loglik_capped = baselines.fit_gaussian_mixture(X, 0, 3, 0.2, n_init=1)
    assert sorted(loglik_capped) == [1, 2, 3] and k_capped == 3
    with pytest.raises(ValueError, match="max_components"):
        baselines.candidate_components(5, 4)


def test_the_better_baseline_is_chosen_on_validation_data(baselines):
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import KernelDensity
    X, _ = datasets.train_test_split_samples("ring", 400, 10, random_state=1)
    best, val = baselines.validation_choice(X, 1, 0.25, 8, 0.05, n_init=1)
    fit_rows, val_rows = validation_split(400, 0.25, np.random.SeedSequence(1))
    gmm = GaussianMixture(8, covariance_type="full", random_state=1, n_init=1).fit(X[fit_rows])
    kde = KernelDensity(bandwidth=0.05).fit(X[fit_rows])
    assert val["gmm"] == pytest.approx(np.mean(gmm.score_samples(X[val_rows])), rel=1e-12)
    assert val["kde"] == pytest.approx(np.mean(kde.score_samples(X[val_rows])), rel=1e-12)
    assert best == max(val, key=val.get)


def test_quick_run_uses_the_reproduce_splits(baselines, tmp_path, capsys):
    out = tmp_path / "baselines.json"
    status = baselines.main(["--quick", "--problems", "two_moons", "ring", "--json", str(out),
                             "--per-point", str(tmp_path / "points")])
    assert status == 0
    records = json.loads(out.read_text())["records"]
    assert [(r["problem"], r["seed"]) for r in records] == [("two_moons", 0), ("ring", 0)]
    for r in records:
        assert 1 <= r["gmm_components"] <= 4 and r["kde_bandwidth"] > 0
        assert r["best"] in ("gmm", "kde") and r["cpu_seconds"] > 0
        with np.load(tmp_path / "points" / f"{r['problem']}-seed0.npz") as points:
            gmm, kde = points["gmm"], points["kde"]
        assert gmm.shape == kde.shape == (300,)
        assert r["gmm_test_loglik"] == pytest.approx(np.mean(gmm), rel=1e-12)
        # the test points are the reproduce protocol's: rescore them independently
        from sklearn.neighbors import KernelDensity
        X_train, X_test = datasets.train_test_split_samples(r["problem"], 400, 300,
                                                            random_state=0)
        kde_again = KernelDensity(bandwidth=r["kde_bandwidth"]).fit(X_train)
        np.testing.assert_allclose(kde_again.score_samples(X_test), kde, rtol=1e-12)
        # a sensible density: finite and better than a wide Gaussian would do
        assert np.all(np.isfinite(gmm)) and r["gmm_test_loglik"] > -5
    printed = capsys.readouterr().out
    assert "two_moons" in printed and "| problem | seeds | GMM (validation) | KDE (CV) |" in printed


def test_reproduce_points_rescore_the_runs_checkpoints(paired, tmp_path):
    # a miniature results directory laid out as radref reproduce writes it
    from radref import RadFlow
    X_train, X_test = datasets.train_test_split_samples("ring", 200, 50, random_state=4)
    run = tmp_path / "runs" / "ring-rad-s4"
    run.mkdir(parents=True)
    model = RadFlow(n_layers=2, hidden=4, steps=3, batch_size=100, random_state=4).fit(X_train)
    model.save(run / "checkpoint.npz")
    (run / "result.json").write_text(json.dumps({"seed": 4, "n_train": 200, "n_test": 50}))
    (tmp_path / "runs" / "ring-rad-s5").mkdir()  # unfinished: no result.json
    points = paired.reproduce_points(str(tmp_path), "ring", "rad")
    assert list(points) == [4]
    np.testing.assert_array_equal(points[4], model.score_samples(X_test))


def test_bootstrap_in_chunks_draws_what_one_call_draws(paired):
    d = np.random.default_rng(3).normal(size=37)
    whole = paired.bootstrap_means(d, 450, np.random.default_rng(9), chunk=450)
    chunked = paired.bootstrap_means(d, 450, np.random.default_rng(9), chunk=100)
    np.testing.assert_array_equal(whole, chunked)
    by_hand = d[np.random.default_rng(9).integers(0, 37, size=(450, 37))].mean(axis=1)
    np.testing.assert_array_equal(whole, by_hand)


# ---------------------------------------------------------------- the study

@pytest.fixture(scope="module")
def study():
    return _module("study")


def _protocol(recipe=None, steps=50_000, lr=1e-3, hidden=None, batch_size=500):
    protocol = {"steps": steps, "adam": {"lr": lr}, "recipe": recipe or {},
                "batch_size": batch_size}
    if hidden:
        protocol["architectures"] = {"rad": {"hidden": hidden}}
    return protocol


def test_trainings_are_read_from_the_protocol_and_named_by_it(study):
    paper = study.Training.of(_protocol(), "rad")
    assert paper == study.PAPER_TRAINING == study.Training.of(_protocol(), "realnvp")
    assert str(paper) == "paper" and paper.recipe and paper.last_iterate() is None
    ema = study.Training.of(_protocol({"lr_schedule": "cosine", "lr_final_fraction": 0.0,
                                       "ema_decay": 0.999}), "rad")
    assert str(ema) == "cosine + EMA" and ema.recipe
    # the last iterate: the same training without the average, kept apart from its own runs
    assert ema.last_iterate() == study.Training(lr_schedule="cosine", from_ema_run=True)
    assert str(ema.last_iterate()) == "cosine (from the EMA runs)"
    assert str(study.Training.of(_protocol({"ema_decay": 0.999}), "rad").last_iterate()) == \
        "paper (from the EMA runs)"
    # with early stopping the last iterate is of another training set: none
    stopped = study.Training.of(_protocol({"early_stopping": True, "ema_decay": 0.9}), "rad")
    assert str(stopped) == "early stopping + EMA" and stopped.last_iterate() is None
    # steps, rate and width are settings, named after the recipe; only rad is widened here
    wide = study.Training.of(_protocol({"lr_schedule": "cosine"}, lr=3e-3, hidden=32), "rad")
    assert (wide.lr, wide.hidden, wide.recipe) == (3e-3, 32, False)
    assert str(wide) == "cosine (lr 0.003) (hidden 32)"
    assert study.Training.of(_protocol(lr=3e-3, hidden=32), "realnvp").hidden is None
    longer = study.Training.of(_protocol(steps=200_000), "realnvp")
    assert str(longer) == "paper (200,000 steps)" and not longer.recipe
    assert longer.steps == 200_000
    smaller = study.Training.of(_protocol(batch_size=50), "rad")
    assert smaller == study.CONTROL_BATCH and not smaller.recipe
    assert str(smaller) == "paper (batch 50)"


def test_a_refit_is_its_own_run_or_the_last_iterate_of_an_ema_run(study):
    cosine = study.Training(lr_schedule="cosine")
    runs = {(study.Training(lr_schedule="cosine", from_ema_run=True), 10_000, "ring", "rad"):
            {0: "ema run 0", 1: "ema run 1"},
            (cosine, 10_000, "ring", "rad"): {1: "own run 1", 3: "own run 3"}}
    assert study.refit(runs, cosine, "ring", "rad") == {0: "ema run 0", 1: "own run 1",
                                                         3: "own run 3"}
    assert study.refit(runs, cosine, "spiral", "rad") == {}


def test_verdict_reads_the_t_interval(study):
    assert study.verdict({"t_low": 0.001, "t_high": 0.2}) == "Rad ahead"
    assert study.verdict({"t_low": -0.2, "t_high": -0.001}) == "Real NVP ahead"
    assert study.verdict({"t_low": -0.2, "t_high": 0.1}) == "no difference shown"


def test_docs_tables_are_the_committed_study(study):
    # docs/results.md shows the tables validation/study.py wrote from the
    # committed runs, unedited.
    committed = os.path.join(study.STUDY, "study.md")
    with open(committed) as f:
        blocks = dict(re.findall(r"<!-- (\w+) -->\n(.*?)\n\n", f.read(), re.S))
    with open(os.path.join(ROOT, "docs", "results.md")) as f:
        docs = f.read()
    assert {"section43", "paper", "baselines", "exact", "recipes", "beyond", "own_best",
            "data_size", "two_moons", "dimensions", "run_time", "selected",
            "selected_reading"} <= set(blocks)
    for name, table in blocks.items():
        shown = re.search(rf"<!-- study:{name}:start -->\n(.*?)\n<!-- study:{name}:end -->",
                          docs, re.S)
        assert shown is not None, name
        assert shown.group(1).strip() == table.strip(), name


def test_committed_study_means_are_the_runs_scores(study):
    # study.json's per-model means over seeds, recomputed independently from
    # each run's recorded held-out score (result.json), not from the per-point files.
    with open(os.path.join(study.STUDY, "study.json")) as f:
        numbers = json.load(f)
    # the paper protocol's runs: no recipe, its rate, steps, data size and widths
    recorded = {}
    for model in ("rad", "realnvp"):
        for (problem, seed), score in _recorded_scores(
                lambda r: (r["model"] == model and not r.get("recipe") and r["lr"] == 1e-3
                           and r["n_train"] == 10_000 and r.get("steps", 50_000) == 50_000
                           and r.get("batch_size", 500) == 500
                           and r.get("hidden", study.PAPER_HIDDEN[model])
                           == study.PAPER_HIDDEN[model])).items():
            recorded.setdefault((problem, model), {})[seed] = score
    for problem, row in numbers["paper"].items():
        # the rows hold the seeds both models have (all of them but a run
        # whose partner has not finished)
        assert row["rad"]["seeds"] == row["realnvp"]["seeds"]
        for model in ("rad", "realnvp"):
            scores = recorded[(problem, model)]
            seeds = row[model]["seeds"]
            assert set(seeds) <= set(scores) and len(seeds) >= 5
            assert row[model]["mean"] == pytest.approx(np.mean([scores[s] for s in seeds]),
                                                       abs=1e-12)


def _recorded_scores(match):
    """``{(problem, seed): test_loglik}`` of the committed runs whose
    result.json satisfies ``match``: each run's own record of its held-out
    score, written by training, not by validation/study.py."""
    paths = glob.glob(os.path.join(ROOT, "validation", "results", "runs", "*", "result.json"))
    paths += glob.glob(os.path.join(ROOT, "validation", "results", "study", "protocol-*", "runs",
                                    "*", "result.json"))
    found = {}
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        if match(r):
            assert (r["problem"], r["seed"]) not in found, path
            found[(r["problem"], r["seed"])] = r["test_loglik"]
    return found


def test_matched_time_by_hand_from_the_runs_records(study):
    # Rad under the paper protocol minus Real NVP at 200,000 steps, computed
    # here from each run's recorded held-out score: the mean over a run's
    # test points, so a seed's paired difference of means is the difference
    # of the two records.  Then the t interval across seeds and Holm's
    # step-down by hand (scipy's Student t), against both study.matched_time
    # run on those records and the committed study.json.
    from scipy.stats import t as student
    with open(os.path.join(study.STUDY, "study.json")) as f:
        committed = json.load(f)["matched_time"]
    assert committed["variant"] == "paper (200,000 steps)"

    def paper_like(r, model, steps):
        return (r["model"] == model and r["n_train"] == 10_000 and r["steps"] == steps
                and r["lr"] == 1e-3 and not r.get("recipe") and r.get("batch_size", 500) == 500
                and r.get("hidden", study.PAPER_HIDDEN[model]) == study.PAPER_HIDDEN[model])

    rad = _recorded_scores(lambda r: paper_like(r, "rad", 50_000))
    nvp = _recorded_scores(lambda r: paper_like(r, "realnvp", 200_000))
    cells = {}
    for problem in datasets.PROBLEMS:
        seeds = sorted(s for p, s in nvp if p == problem and (p, s) in rad)
        assert seeds == [0, 1, 2, 3, 4], problem
        d = np.array([rad[(problem, s)] - nvp[(problem, s)] for s in seeds])
        se = d.std(ddof=1) / math.sqrt(len(d))
        cells[problem] = (d.mean(), se, 2 * student.sf(abs(d.mean()) / se, len(d) - 1))
    # each record as a run of two test points with that mean (the bootstrap
    # over points needs two)
    spread = np.array([-0.5, 0.5])
    runs = {}
    for (problem, seed), score in nvp.items():
        runs.setdefault((study.Training(steps=200_000), 10_000, problem, "realnvp"), {})[
            seed] = score + spread
    for (problem, seed), score in rad.items():
        runs.setdefault((study.PAPER_TRAINING, 10_000, problem, "rad"), {})[seed] = \
            score + spread
    # longer runs of another training are not the paper's training for longer
    for other in (study.Training(lr_schedule="cosine", steps=400_000),
                  study.Training(steps=400_000, hidden=64), study.Training(steps=400_000,
                                                                           lr=3e-3)):
        for problem, seed in nvp:
            runs.setdefault((other, 10_000, problem, "realnvp"), {})[seed] = spread + 50.0
    computed = study.matched_time(runs, n_boot=10)
    assert computed["variant"] == "paper (200,000 steps)" and computed["steps"] == 200_000
    # Holm: the i-th smallest p-value is tested at 0.05 / (m - i) (i from 0)
    # while all before it were rejected; from the first kept one on, its level
    order = sorted(cells, key=lambda p: cells[p][2])
    level = None
    for i, problem in enumerate(order):
        mean, se, p_value = cells[problem]
        if level is None and p_value > 0.05 / (6 - i):
            level = 0.05 / (6 - i)
        tested = level if level is not None else 0.05 / (6 - i)
        for matched in (computed, committed):
            row = matched["problems"][problem]["rad_minus_realnvp"]
            assert row["seeds"] == [0, 1, 2, 3, 4]
            assert row["mean"] == pytest.approx(mean, abs=1e-9), problem
            half = student.ppf(0.975, 4) * se
            assert (row["t_low"], row["t_high"]) == pytest.approx((mean - half, mean + half),
                                                                  abs=1e-9), problem
            half = student.ppf(1 - tested / 2, 4) * se
            assert (row["holm_low"], row["holm_high"]) == pytest.approx(
                (mean - half, mean + half), abs=1e-9), problem
            assert row["holm_level"] == pytest.approx(1 - tested)
            assert matched["problems"][problem]["rad"]["mean"] == pytest.approx(
                np.mean([rad[(problem, s)] for s in range(5)]), abs=1e-12)
    # the signs the page's prose rests on: Rad ahead after Holm on two
    # circles and many moons only
    ahead = {p for p in cells if committed["problems"][p]["rad_minus_realnvp"]["holm_low"] > 0}
    assert ahead == {"two_circles", "many_moons"}


def _fake_study(root, offsets, n_points=40):
    """A study directory of synthetic runs: per-point scores ``base + offset``
    with ``offset`` by (variant recipe, n_train, model), the same noise for
    every model (so paired differences are the offsets exactly)."""
    rng = np.random.default_rng(0)
    noise = {(p, s): rng.normal(size=n_points) for p in datasets.PROBLEMS for s in range(3)}
    for (recipe, n_train, model), offset in offsets.items():
        protocol = {"steps": 50_000, "n_test": 10_000, "batch_size": 500, "adam": {"lr": 1e-3},
                    "n_train": n_train, **({"recipe": dict(recipe)} if recipe else {})}
        directory = root / f"protocol-{abs(hash((recipe, n_train))) % 10**12:012d}"
        directory.mkdir(exist_ok=True)
        (directory / "protocol.json").write_text(json.dumps(protocol))
        for problem in datasets.PROBLEMS:
            for seed in range(3):
                run = directory / "runs" / f"{problem}-{model}-s{seed}"
                run.mkdir(parents=True)
                (run / "result.json").write_text(json.dumps(
                    {"problem": problem, "model": model, "seed": seed}))
                points = noise[(problem, seed)] + offset + 0.01 * seed
                extra = {"last_iterate": points - 0.5} if recipe else {}
                np.savez(run / "test_points.npz", model=points, **extra)


def test_study_end_to_end_on_synthetic_runs(study, tmp_path):
    cosine = (("ema_decay", 0.999), ("lr_final_fraction", 0.0), ("lr_schedule", "cosine"))
    stopping = (("early_stopping", True), ("n_iter_no_change", 4),
                ("validation_fraction", 0.1))
    _fake_study(tmp_path, {((), 10_000, "rad"): 0.0, ((), 10_000, "realnvp"): -0.25,
                           (cosine, 10_000, "rad"): 0.125, (cosine, 10_000, "realnvp"): 0.0,
                           (stopping, 10_000, "rad"): -0.0625,
                           ((), 1_000, "rad"): -1.0, ((), 1_000, "realnvp"): -0.5})
    runs = study.load_runs(str(tmp_path), legacy=str(tmp_path / "none"))
    # a wider Rad on every problem is table capacity's, never a recipe
    for p in datasets.PROBLEMS:
        runs[(study.Training(hidden=32), 10_000, p, "rad")] = {
            s: v + 5.0 for s, v in runs[(study.PAPER_TRAINING, 10_000, p, "rad")].items()}
    numbers = study.analyse(runs, {}, n_boot=50)
    json.dumps(numbers, allow_nan=False)  # no Training leaks into study.json
    two_moons = numbers["paper"]["two_moons"]["rad_minus_realnvp"]
    assert two_moons["mean"] == pytest.approx(0.25) and two_moons["seeds"] == [0, 1, 2]
    assert two_moons["t_low"] == pytest.approx(0.25) == two_moons["t_high"]  # sd 0
    recipes = numbers["recipes"]
    assert set(recipes) == {"cosine + EMA", "cosine (from the EMA runs)", "early stopping"}
    assert recipes["cosine + EMA"]["rad"]["ring"]["minus_paper"]["mean"] == pytest.approx(0.125)
    last = recipes["cosine (from the EMA runs)"]
    assert last["rad"]["ring"]["minus_paper"]["mean"] == pytest.approx(-0.375)
    assert set(recipes["early stopping"]) == {"rad"}
    assert numbers["beyond"]["variant"] == "cosine + EMA"
    assert numbers["beyond"]["problems"]["grid"]["mean"] == pytest.approx(0.125)
    own = numbers["own_best"]
    assert (own["rad_variant"], own["realnvp_variant"]) == ("cosine + EMA", "cosine + EMA")
    assert own["problems"]["spiral"]["rad_minus_realnvp"]["mean"] == pytest.approx(0.125)
    sizes = numbers["data_size"]["two_moons"]
    assert list(sizes) == ["1000", "10000"] and set(numbers["data_size"]) == set(datasets.PROBLEMS)
    assert sizes["1000"]["rad_minus_realnvp"]["mean"] == pytest.approx(-0.5)
    text = study.tables(numbers)
    assert "| two_moons | " in text["paper"] and "Rad ahead (n = 3)" in text["paper"]
    assert "| two_moons, 1,000 | " in text["data_size"] and "Real NVP ahead" in text["data_size"]
    assert "| early stopping | rad | -0.0625 [-0.0625, -0.0625]" in text["recipes"]
    study.figure(numbers, str(tmp_path / "figure.png"))
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    page = tmp_path / "page.md"
    page.write_text("".join(f"<!-- study:{k}:start -->\nold\n<!-- study:{k}:end -->\n"
                            for k in text))
    study.update_docs(text, str(page))
    assert "old" not in page.read_text() and text["beyond"] in page.read_text()


def test_own_best_leaves_out_runs_of_more_steps(study):
    # four times the steps is a budget (table matched_time), not a recipe:
    # Real NVP's "own best recipe" is cosine here although 200,000 steps gain more
    # (and so is another rate, here gaining even more for Rad: table selected's)
    rng = np.random.default_rng(0)
    cosine, longer = study.Training(lr_schedule="cosine"), study.Training(steps=200_000)
    faster, stopped = study.Training(lr=3e-3), study.Training(early_stopping=True)
    runs, recipes = {}, {"cosine": {}, "paper (200,000 steps)": {}, "paper (lr 0.003)": {},
                         "early stopping": {}}
    for p in datasets.PROBLEMS:
        base = {s: rng.normal(size=20) for s in range(3)}
        for model in ("rad", "realnvp"):
            runs[(study.PAPER_TRAINING, 10_000, p, model)] = base
            runs[(cosine, 10_000, p, model)] = {s: v + 0.125 for s, v in base.items()}
            recipes["cosine"].setdefault(model, {})[p] = {"minus_paper": {"mean": 0.125}}
        runs[(longer, 10_000, p, "realnvp")] = {s: v + 1.0 for s, v in base.items()}
        recipes["paper (200,000 steps)"].setdefault("realnvp", {})[p] = {"minus_paper": {"mean": 1.0}}
        runs[(faster, 10_000, p, "rad")] = {s: v + 2.0 for s, v in base.items()}
        recipes["paper (lr 0.003)"].setdefault("rad", {})[p] = {"minus_paper": {"mean": 2.0}}
        # (and a recipe run on other seeds than 0-2 cannot be paired on them)
        runs[(stopped, 10_000, p, "realnvp")] = {s + 3: v + 3.0 for s, v in base.items()}
        recipes["early stopping"].setdefault("realnvp", {})[p] = {"minus_paper": {"mean": 3.0}}
    own = study.own_best({"recipes": recipes}, runs, n_boot=10)
    assert (own["rad_variant"], own["realnvp_variant"]) == ("cosine", "cosine")
    assert own["problems"]["ring"]["rad_minus_realnvp"]["mean"] == pytest.approx(0.0, abs=1e-12)


def test_holm_by_hand(study):
    # three comparisons over 4 seeds, sd 0.1 (standard error 0.05):
    # t = 20, 2 and 6 on 3 degrees of freedom.  Two-sided p-values from the
    # closed form of Student's t with 3 degrees of freedom,
    # p(t) = 1 - (2 / pi) (a + sin a cos a), a = arctan(t / sqrt(3)):
    # p(2) = 0.1393, p(6) = 0.0093, p(20) = 0.0003.  Holm: the smallest is
    # tested at 0.05/3, the next at 0.05/2 (both rejected), the last at
    # 0.05 (not rejected).
    from scipy.stats import t as student

    def p_value(t):
        a = math.atan(t / math.sqrt(3))
        return 1 - 2 / math.pi * (a + math.sin(a) * math.cos(a))

    cells = [{"seeds": [0, 1, 2, 3], "mean": m, "sd": 0.1} for m in (1.0, 0.1, 0.3)]
    study.holm(cells)
    big, small, middle = cells
    assert [c["holm_p"] for c in cells] == pytest.approx([p_value(20), p_value(2), p_value(6)],
                                                         rel=1e-9)
    assert small["holm_p"] == pytest.approx(0.1393, abs=1e-4)
    assert [c["holm_level"] for c in cells] == pytest.approx([1 - 0.05 / 3, 0.95, 1 - 0.025])
    # the last one's interval is the plain 95 % t interval: t(0.975, 3) = 3.182
    assert small["holm_low"] == pytest.approx(0.1 - 3.1824463 * 0.05, abs=1e-6)
    assert middle["holm_high"] - middle["mean"] == pytest.approx(
        student.ppf(1 - 0.0125, 3) * 0.05, rel=1e-12)
    assert [study.verdict(c) for c in cells] == ["Rad ahead", "no difference shown",
                                                  "Rad ahead"]


def test_holm_stops_at_the_first_comparison_it_keeps(study):
    # p = 0.03 and 0.04: each below 0.05, but the smaller is not below 0.05/2,
    # so neither is rejected, and both intervals (at level 1 - 0.025) hold zero
    from scipy.stats import t as student
    se = 0.1 / 2
    cells = [{"seeds": [0, 1, 2, 3], "mean": student.isf(p / 2, 3) * se, "sd": 0.1}
             for p in (0.03, 0.04)]
    study.holm(cells)
    assert [c["holm_p"] for c in cells] == pytest.approx([0.03, 0.04])
    assert [c["holm_level"] for c in cells] == pytest.approx([0.975, 0.975])
    assert all(c["holm_low"] < 0 < c["holm_high"] for c in cells)
    # uncorrected, both 95 % intervals would exclude zero
    assert all(c["mean"] - student.ppf(0.975, 3) * se > 0 for c in cells)


def test_exact_points_are_the_density_at_the_runs_test_points(study):
    _, X_test = datasets.train_test_split_samples("ring", 1000, 10_000, random_state=3)
    np.testing.assert_array_equal(study.exact_points("ring", 3, 1000),
                                  datasets.log_density("ring", X_test))
    # the test points of a seed do not depend on the training-set size
    np.testing.assert_array_equal(study.exact_points("ring", 3, 1000),
                                  study.exact_points("ring", 3, 20))


def test_two_moons_settled_on_synthetic_runs(study, tmp_path):
    # Rad − Real NVP: 0 at 10,000 points, +0.25 at 100,000, +0.125 in the
    # control of 5,000 steps, +0.0625 in the control at batch 50; the changes
    # between rows are the differences of those offsets
    _fake_study(tmp_path, {((), 10_000, "rad"): 0.0, ((), 10_000, "realnvp"): 0.0,
                           ((), 100_000, "rad"): 0.25, ((), 100_000, "realnvp"): 0.0})
    runs = study.load_runs(str(tmp_path), legacy=str(tmp_path / "none"))
    for control, rad_offset in ((study.CONTROL, 0.125), (study.CONTROL_BATCH, 0.0625)):
        for model, offset in (("rad", rad_offset), ("realnvp", 0.0)):
            runs[(control, 10_000, "two_moons", model)] = {
                s: runs[(study.PAPER_TRAINING, 10_000, "two_moons", model)][s] + offset
                for s in range(3)}
    moons = study.two_moons_settled(runs, n_boot=50)
    rows = list(moons["rows"].values())
    assert [r["rad_minus_realnvp"]["mean"] for r in rows] == pytest.approx(
        [0.0, 0.25, 0.125, 0.0625])
    assert moons["rows"]["10,000 points, 50,000 steps at batch 50 (passes and updates of "
                         "100,000)"]["variant"] == "paper (batch 50)"
    assert {label: d["mean"] for label, d in moons["changes"].items()} == pytest.approx({
        "100,000 points, 50,000 steps − 10,000 points, 50,000 steps": 0.25,
        "100,000 points, 50,000 steps − 10,000 points, 5,000 steps (passes of 100,000)": 0.125,
        "10,000 points, 5,000 steps (passes of 100,000) − 10,000 points, 50,000 steps": 0.125,
        "100,000 points, 50,000 steps − 10,000 points, 50,000 steps at batch 50 (passes and "
        "updates of 100,000)": 0.1875,
        "10,000 points, 50,000 steps at batch 50 (passes and updates of 100,000) − 10,000 "
        "points, 50,000 steps": 0.0625})
    assert all("holm_low" in r["rad_minus_realnvp"] for r in rows)
    text = study.two_moons_table({"two_moons": moons})
    assert any("10,000 points, 5,000 steps" in line for line in text)
    changes = [line for line in text if line.startswith("| change of")]
    assert len(changes) == 5 and all("| Rad gains (n = 3) |" in line for line in changes)
    # without the first control, the batch-50 control still pairs with the right rows
    del runs[(study.CONTROL, 10_000, "two_moons", "rad")]
    moons = study.two_moons_settled(runs, n_boot=50)
    assert [d["mean"] for d in moons["changes"].values()] == pytest.approx([0.25, 0.1875, 0.0625])


def test_a_protocol_of_another_batch_size_is_its_own_training(study, tmp_path):
    # the control at batch 50 (radref reproduce --batch-size 50) is filed
    # apart from the paper protocol's runs, never mixed into them
    _fake_study(tmp_path, {((), 10_000, "rad"): 0.0})
    protocol = tmp_path / "protocol-batch50"
    run = protocol / "runs" / "two_moons-rad-s0"
    run.mkdir(parents=True)
    (protocol / "protocol.json").write_text(json.dumps(
        {"steps": 50_000, "n_test": 10_000, "batch_size": 50, "adam": {"lr": 1e-3},
         "n_train": 10_000}))
    (run / "result.json").write_text(json.dumps({"problem": "two_moons", "model": "rad",
                                                 "seed": 0}))
    np.savez(run / "test_points.npz", model=np.full(40, 7.0))
    runs = study.load_runs(str(tmp_path), legacy=str(tmp_path / "none"))
    np.testing.assert_array_equal(runs[(study.CONTROL_BATCH, 10_000, "two_moons", "rad")][0],
                                  np.full(40, 7.0))
    assert 7.0 not in runs[(study.PAPER_TRAINING, 10_000, "two_moons", "rad")][0]
    assert not study.CONTROL_BATCH.recipe and study.PAPER_TRAINING.recipe


def test_dimensions_quick_run_and_its_rows(study, tmp_path):
    dimensions = _module("dimensions")
    assert dimensions.main(["--out", str(tmp_path), "--quick", "--problems", "rotated_4d"]) == 0
    runs, found = study.load_dimensions(str(tmp_path))
    assert set(runs) == {("rotated_4d", "rad"), ("rotated_4d", "realnvp")}
    with open(tmp_path / "flows" / "rotated_4d-rad-s0" / "result.json") as f:
        result = json.load(f)
    assert result["test_loglik"] == pytest.approx(np.mean(runs[("rotated_4d", "rad")][0]),
                                                  abs=1e-12)
    assert set(found) >= {("gmm", "rotated_4d"), ("kde", "rotated_4d"), ("best", "rotated_4d")}
    # a second call finds the finished runs and trains nothing
    mtime = os.path.getmtime(tmp_path / "flows" / "rotated_4d-rad-s0" / "result.json")
    dimensions.main(["--out", str(tmp_path), "--quick", "--problems", "rotated_4d",
                     "--models", "rad"])
    assert os.path.getmtime(tmp_path / "flows" / "rotated_4d-rad-s0" / "result.json") == mtime
    rows = study.dimension_rows(runs, found, n_boot=20)
    row = rows["rotated_4d"]
    # the gap to the exact density, from the quick run's 300 test points
    from radref import datasets_nd
    _, X_test = datasets_nd.train_test_split_samples("rotated_4d", 600, 300, random_state=0)
    truth = datasets_nd.log_density("rotated_4d", X_test)
    assert row["models"]["rad"]["gap"]["mean"] == pytest.approx(
        np.mean(truth) - result["test_loglik"], abs=1e-10)
    assert row["models"]["rad"]["gap"]["t_low"] is None  # one seed: no interval across seeds
    assert row["rad_minus_best"]["mean"] == pytest.approx(
        result["test_loglik"] - np.mean(found[("best", "rotated_4d")][0]), abs=1e-10)
    assert "| rotated_4d | 4 | 1 |" in "\n".join(study.dimensions_table({"dimensions": rows}))


def test_flow_selection_chooses_on_validation_and_refits(study, tmp_path, capsys):
    select = _module("select_flows")
    assert select.main(["select", "--out", str(tmp_path), "--quick", "--problems", "ring",
                        "--models", "rad", "--seeds", "0", "--hidden", "4"]) == 0
    results = [json.loads(p.read_text()) for p in (tmp_path / "select").glob("*/result.json")]
    assert len(results) == 10  # 5 rates x 2 schedules
    # a candidate's validation score is the mean over the rows the baselines hold out
    X_fit, X_val = select.fit_rows("ring", 0, select.QUICK)
    fit, val = validation_split(400, 0.25, np.random.SeedSequence(0))
    X_train, _ = datasets.train_test_split_samples("ring", 400, 10, random_state=0)
    np.testing.assert_array_equal(X_val, X_train[val])
    np.testing.assert_array_equal(X_fit, X_train[fit])
    assert select.main(["choose", "--out", str(tmp_path)]) == 0
    choices = json.loads((tmp_path / "choices.json").read_text())
    best = max(results, key=lambda r: r["val_loglik"])
    assert choices["ring rad 4 0"]["val_loglik"] == best["val_loglik"]
    printed = capsys.readouterr().out
    assert (f"radref reproduce --problems ring --models rad --seeds 0 --lr {best['lr']:g} "
            f"--lr-schedule {best['lr_schedule']} --hidden 4") in printed


def test_a_diverged_candidate_is_recorded_and_never_chosen(study):
    select = _module("select_flows")
    base = {"problem": "ring", "model": "rad", "hidden": 8, "seed": 0}
    results = [dict(base, lr=3e-4, lr_schedule="constant", val_loglik=3.5),
               dict(base, lr=3e-3, lr_schedule="cosine", val_loglik=3.9),
               dict(base, lr=1e-2, lr_schedule="constant", val_loglik=None, diverged="x")]
    assert select.choose(results)["ring rad 8 0"]["lr"] == 3e-3
    table = "\n".join(study.selection_grid_table({"selection_grid": study.selection_grid(
        results)}))
    # the grid's columns run to 1e-2; 3e-3 is no longer its edge
    assert "| ring | rad (8) | 0 | +3.5000 | — | — | **+3.9000** | diverged | — |" in table


def test_choose_by_hand(study):
    select = _module("select_flows")
    base = {"problem": "spiral", "model": "realnvp", "hidden": 56}
    results = [dict(base, seed=s, lr=lr, lr_schedule=k, val_loglik=v)
               for s, lr, k, v in ((0, 1e-3, "constant", 0.1), (0, 3e-3, "cosine", 0.3),
                                   (0, 3e-4, "cosine", 0.2), (1, 1e-3, "cosine", -0.5),
                                   (1, 3e-4, "constant", -0.5))]
    choices = select.choose(results)
    assert (choices["spiral realnvp 56 0"]["lr"], choices["spiral realnvp 56 0"]["lr_schedule"]) \
        == (3e-3, "cosine")
    # a tie goes to the first candidate of the grid's order
    assert choices["spiral realnvp 56 1"]["lr"] == 3e-4
    assert select.refit_commands(choices) == [
        "radref reproduce --problems spiral --models realnvp --seeds 1 --lr 0.0003 "
        "--lr-schedule constant",
        "radref reproduce --problems spiral --models realnvp --seeds 0 --lr 0.003 "
        "--lr-schedule cosine"]
    assert study.Training.chosen(choices["spiral realnvp 56 0"]) == study.Training(
        lr_schedule="cosine", lr=3e-3)
    assert str(study.Training.chosen(dict(choices["spiral realnvp 56 1"], lr=1e-3, model="rad",
                                          hidden=32))) == "paper (hidden 32)"


def test_selected_rows_take_each_seeds_chosen_refit(study):
    # Rad: seed 0 chose the paper's training, seed 1 a cosine decay at 3e-3;
    # Real NVP chose the paper's on both.  Differences are offsets exactly.
    base = {s: np.random.default_rng(s).normal(size=30) for s in (0, 1)}
    fast = study.Training(lr_schedule="cosine", lr=3e-3)
    runs = {(study.PAPER_TRAINING, 10_000, "ring", "rad"): {0: base[0] + 0.5, 1: base[1] - 9.0},
            (fast, 10_000, "ring", "rad"): {0: base[0] - 9.0, 1: base[1] + 0.25},
            # Real NVP's seed 1 has no run of its own: the last iterate of an
            # EMA run of the same training stands in (seed 0's own run wins)
            (study.PAPER_TRAINING, 10_000, "ring", "realnvp"): {0: base[0]},
            (study.Training(from_ema_run=True), 10_000, "ring", "realnvp"):
                {0: base[0] + 100.0, 1: base[1]}}
    choices = {f"ring rad 8 {s}": {"problem": "ring", "model": "rad", "hidden": 8, "seed": s,
                                   "lr": lr, "lr_schedule": k}
               for s, lr, k in ((0, 1e-3, "constant"), (1, 3e-3, "cosine"))}
    choices.update({f"ring realnvp 56 {s}": {"problem": "ring", "model": "realnvp",
                                             "hidden": 56, "seed": s, "lr": 1e-3,
                                             "lr_schedule": "constant"} for s in (0, 1)})
    baselines = {("best", "ring"): {s: base[s] - 1.0 for s in (0, 1)}}
    rows = study.selected_rows(runs, baselines, choices, n_boot=20)["ring"]
    assert rows["rad_minus_realnvp"]["per_seed"]["0"]["mean"] == pytest.approx(0.5)
    assert rows["rad_minus_realnvp"]["per_seed"]["1"]["mean"] == pytest.approx(0.25)
    assert rows["realnvp"]["minus_best"]["mean"] == pytest.approx(1.0)
    assert rows["rad"]["choices"] == {"0": "lr 0.001, constant", "1": "lr 0.003, cosine"}
    table = "\n".join(study.selected_table({"selected": {"ring": rows}}))
    assert "| ring | Rad − Real NVP | | | +0.3750" in table
    assert "s0: lr 0.001, constant; s1: lr 0.003, cosine" in table
    # chosen once, on seed 0's validation split, and applied to both seeds:
    # one choice, named with the split that made it
    select = _module("select_flows")
    once = select.apply_to({k: c for k, c in choices.items() if c["seed"] == 0}, [0, 1])
    rows = study.selected_rows(runs, baselines, once, n_boot=20)["ring"]
    assert rows["rad"]["choices"] == {s: "lr 0.001, constant (seed 0's split)" for s in "01"}
    assert rows["rad_minus_realnvp"]["per_seed"]["1"]["mean"] == pytest.approx(-9.0)
    table = "\n".join(study.selected_table({"selected": {"ring": rows}}))
    assert "| ring | rad | " in table and "| lr 0.001, constant (seed 0's split) |" in table


def test_the_reading_of_table_selected_is_generated_from_its_numbers(study):
    # Rad on ring chose a cosine decay at 3e-3 (+0.5 over the paper's on seed
    # 0, +0.25 on seed 1: mean +0.375; seed 2's refit is not there); Real NVP
    # kept the paper's training.  The mixture is 1 nat ahead of Real NVP on
    # every seed (an interval of width 0), and of Rad by 0.5 and 0.75 (two
    # seeds: no difference shown).
    base = {s: np.random.default_rng(s).normal(size=30) for s in range(3)}
    fast = study.Training(lr_schedule="cosine", lr=3e-3)
    lift = {0: 0.5, 1: 0.25, 2: -0.5}
    runs = {(study.PAPER_TRAINING, 10_000, "ring", "rad"): {s: base[s] for s in range(3)},
            (fast, 10_000, "ring", "rad"): {s: base[s] + lift[s] for s in range(2)},
            (study.PAPER_TRAINING, 10_000, "ring", "realnvp"): {s: base[s] for s in range(3)}}
    choices = {f"ring {m} {h} {s}": {"problem": "ring", "model": m, "hidden": h, "seed": s,
                                     "lr": lr, "lr_schedule": k}
               for m, h, lr, k in (("rad", 8, 3e-3, "cosine"), ("realnvp", 56, 1e-3, "constant"))
               for s in range(3)}
    # two circles changed its training too, but no refit has finished: it is
    # left out, not shown as a change of 0 (the mean of the unchanged seeds)
    runs[(study.PAPER_TRAINING, 10_000, "two_circles", "rad")] = {s: base[s] for s in range(3)}
    with_circles = dict(choices, **{f"two_circles rad 8 {s}": {
        "problem": "two_circles", "model": "rad", "hidden": 8, "seed": s,
        "lr": 1e-3 if s else 1e-2, "lr_schedule": "constant"} for s in range(3)})
    assert "two_circles" not in study.selection_changes(runs, with_circles)["rad"]
    del runs[(study.PAPER_TRAINING, 10_000, "two_circles", "rad")]
    changes = study.selection_changes(runs, choices)
    # seed 2's refit has not finished: the mean is over seeds 0 and 1
    assert changes == {"rad": {"ring": {"mean": pytest.approx(0.375), "n": 2}},
                       "realnvp": {"ring": None}}
    baselines = {("best", "ring"): {s: base[s] + 1.0 for s in range(3)}}
    numbers = {"selected": study.selected_rows(runs, baselines, choices, n_boot=20),
               "selection_changes": changes,
               "paper": {"ring": {"choice": {"0": "gmm", "1": "gmm", "2": "gmm"}}}}
    lines = study.selected_reading_table(numbers)
    text = " ".join(" ".join(lines).split())
    assert ("paired by seed): Rad on ring +0.375 (n = 2). The paper's training was kept for "
            "Real NVP on ring.") in text
    assert ("the mixture stays ahead of Real NVP on ring -1.000, corrected [-1.000, -1.000] "
            "(n = 3). No difference is shown for Rad on ring -0.625, corrected [") in text
    assert "No flow is ahead of the best baseline on any problem. 2 of the 2 point" in text
    assert ("Rad − Real NVP, each with its chosen training**: no difference shown on ring "
            "+0.375 [") in text
    # another baseline chosen on some seed: not called the mixture
    numbers["paper"]["ring"]["choice"]["1"] = "kde"
    assert "the chosen baseline stays ahead of Real NVP" in " ".join(
        " ".join(study.selected_reading_table(numbers)).split())
    # Markdown list items within 79 characters, as the page is written
    assert [line[:2] for line in lines if not line.startswith("  ")] == ["- "] * 3
    assert max(map(len, lines)) <= 79


def test_capacity_rows_pair_each_width_with_width_8_and_the_baseline(study):
    # Wider runs are grouped by the training they were trained with, and each
    # is paired with width 8 trained the same way: on ring a cosine decay at
    # 3e-3 (the choice) and also the paper's training (not the choice), on two
    # circles the paper's (the choice).  The differences are offsets exactly.
    # Spiral has a wider run but no width-8 run of its training: only its
    # difference to the baseline is shown.
    base = {s: np.random.default_rng(s).normal(size=30) for s in (0, 1, 2)}
    seeds = (0, 1, 2)
    fast = dict(lr_schedule="cosine", lr=3e-3)
    T = study.Training
    runs = {(T(**fast), 10_000, "ring", "rad"): {s: base[s] for s in seeds[:2]},
            (T(**fast, from_ema_run=True), 10_000, "ring", "rad"): {2: base[2]},
            (T(**fast, hidden=32), 10_000, "ring", "rad"):
                {s: base[s] + 0.25 + 0.01 * s for s in seeds},
            (T(**fast, hidden=64), 10_000, "ring", "rad"): {0: base[0] - 0.5},
            (T(), 10_000, "ring", "rad"): {s: base[s] + 8.0 for s in seeds},
            (T(hidden=32), 10_000, "ring", "rad"): {s: base[s] + 9.0 for s in seeds},
            (T(), 10_000, "two_circles", "rad"): {s: base[s] for s in seeds},
            (T(hidden=32), 10_000, "two_circles", "rad"): {s: base[s] - 0.125 for s in seeds},
            (T(hidden=32), 10_000, "spiral", "rad"): {s: base[s] + 0.5 for s in seeds}}
    choices = {}
    for problem, lr, schedule in (("ring", 3e-3, "cosine"), ("two_circles", 1e-3, "constant"),
                                  ("spiral", 1e-3, "cosine")):
        for s in seeds:
            choices[f"{problem} rad 8 {s}"] = {"problem": problem, "model": "rad", "hidden": 8,
                                                "seed": s, "lr": lr, "lr_schedule": schedule}
            choices[f"{problem} realnvp 56 {s}"] = {"problem": problem, "model": "realnvp",
                                                    "hidden": 56, "seed": s, "lr": 1e-3,
                                                    "lr_schedule": "constant"}
    # each problem its own baseline: a mix-up of problems changes the numbers
    baselines = {("best", "ring"): {s: base[s] + 1.0 for s in seeds},
                 ("best", "two_circles"): {s: base[s] + 2.0 for s in seeds},
                 ("best", "spiral"): {s: base[s] + 0.75 - 0.02 * s for s in seeds}}
    rows = study.capacity_rows(runs, baselines, choices, n_boot=20)
    assert {p: list(groups) for p, groups in rows.items()} == {
        "ring": ["cosine (lr 0.003)", "paper"], "two_circles": ["paper"], "spiral": ["paper"]}
    ring, ring_paper = rows["ring"]["cosine (lr 0.003)"], rows["ring"]["paper"]
    assert (ring["choice"], ring_paper["choice"]) == ("yes", "no: now lr 0.003, cosine")
    assert rows["spiral"]["paper"]["choice"] == "no: now lr 0.001, cosine"
    assert set(ring["widths"]) == {"8", "32", "64"} and set(ring_paper["widths"]) == {"8", "32"}
    spiral = rows["spiral"]["paper"]["widths"]
    assert set(spiral) == {"32"} and "minus_narrow" not in spiral["32"]
    wide = ring["widths"]["32"]["minus_narrow"]
    assert wide["seeds"] == [0, 1, 2] and wide["mean"] == pytest.approx(0.26)
    assert wide["sd"] == pytest.approx(0.01)
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t quantile 0.975, 2 degrees of freedom
    assert (wide["t_low"], wide["t_high"]) == pytest.approx((0.26 - half, 0.26 + half))
    assert ring["widths"]["32"]["minus_best"]["mean"] == pytest.approx(-0.74)
    assert ring["widths"]["64"]["minus_narrow"]["seeds"] == [0]  # one seed: no interval
    assert "minus_narrow" not in ring["widths"]["8"]
    assert ring["widths"]["8"]["minus_best"]["mean"] == pytest.approx(-1.0)
    # the paper's training on ring: width 32 paired with width 8 trained so
    assert ring_paper["widths"]["32"]["minus_narrow"]["mean"] == pytest.approx(1.0)
    assert ring_paper["widths"]["8"]["minus_best"]["mean"] == pytest.approx(7.0)
    circles = rows["two_circles"]["paper"]
    assert circles["choice"] == "yes"
    assert circles["widths"]["8"]["minus_best"]["mean"] == pytest.approx(-2.0)
    assert circles["widths"]["32"]["minus_best"]["mean"] == pytest.approx(-2.125)
    assert circles["widths"]["32"]["minus_narrow"]["mean"] == pytest.approx(-0.125)
    assert spiral["32"]["minus_best"]["mean"] == pytest.approx(-0.23)
    # Holm per (width, comparison) column.  Width 32 − width 8 has three rows:
    # two circles' and ring-paper's sd is 0 (p = 0, tested first at 0.05 / 3
    # and 0.05 / 2), ring-cosine's next at 0.05.
    assert sorted([circles["widths"]["32"]["minus_narrow"]["holm_level"],
                   ring_paper["widths"]["32"]["minus_narrow"]["holm_level"]]) == \
        pytest.approx([1 - 0.05 / 2, 1 - 0.05 / 3])
    assert ring["widths"]["32"]["minus_narrow"]["holm_level"] == pytest.approx(0.95)
    # width 32 − best baseline has four rows, in increasing p: two circles and
    # ring-paper (sd 0), ring-cosine (t = 128), spiral (t = 20)
    assert sorted([circles["widths"]["32"]["minus_best"]["holm_level"],
                   ring_paper["widths"]["32"]["minus_best"]["holm_level"]]) == \
        pytest.approx([1 - 0.05 / 3, 1 - 0.05 / 4])
    assert [ring["widths"]["32"]["minus_best"]["holm_level"],
            spiral["32"]["minus_best"]["holm_level"]] == pytest.approx([1 - 0.05 / 2, 0.95])
    table = "\n".join(study.capacity_table({"capacity": rows}))
    assert "| ring | 32 | cosine (lr 0.003) | yes | " in table
    assert "width 32 ahead (n = 3)" in table
    assert "| ring | 32 | paper | no: now lr 0.003, cosine | " in table
    two_ways = {k: (dict(c, lr=1e-2) if k == "ring rad 8 1" else c) for k, c in choices.items()}
    assert study.capacity_rows(runs, baselines, two_ways, n_boot=20)["ring"]["paper"][
        "choice"] == "no: now lr 0.003, cosine; lr 0.01, cosine"
    assert "| two_circles | 8 | paper | yes | " in table
    assert "width 8 ahead (n = 3)" in table  # two circles: the constant offset -0.125
    assert "no verdict (one seed)" in table
    assert table.count("the baseline ahead") == 5
    # two circles' width 32 behind width 8, and ring's paper training at
    # width 8 ahead of the baseline (+7)
    assert table.count("width 8 ahead") == 2
    # without a wider run there is no table
    narrow_only = {k: v for k, v in runs.items() if k[0].hidden is None}
    assert study.capacity_rows(narrow_only, baselines, choices, n_boot=20) == {}
    # the choice moved (a larger grid now picks lr 0.01 for two circles) after
    # the wider runs were trained: the rows keep their pairing and say so
    moved = {k: (dict(c, lr=1e-2) if k.startswith("two_circles rad") else c)
             for k, c in choices.items()}
    runs[(T(lr=1e-2), 10_000, "two_circles", "rad")] = {s: base[s] + 7.0 for s in seeds}
    again = study.capacity_rows(runs, baselines, moved, n_boot=20)["two_circles"]
    assert list(again) == ["paper"] and again["paper"]["choice"] == "no: now lr 0.01, constant"
    assert again["paper"]["widths"]["32"]["minus_narrow"]["mean"] == pytest.approx(-0.125)


def test_run_times_are_the_records_sums(study, tmp_path):
    protocol = tmp_path / "study" / "protocol-000000000001"
    for i, (model, seconds) in enumerate((("rad", 300.0), ("rad", 100.0), ("realnvp", 60.0))):
        run = protocol / "runs" / f"r{i}"
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps({"model": model,
                                                     "seconds_this_session": seconds}))
    (protocol / "protocol.json").write_text(json.dumps(
        {"steps": 5000, "n_train": 10_000, "batch_size": 500, "adam": {"lr": 1e-3}}))
    (tmp_path / "study" / "baselines").mkdir()
    (tmp_path / "study" / "baselines" / "baselines.json").write_text(json.dumps(
        {"records": [{"cpu_seconds": 30.0}, {"cpu_seconds": 90.0}]}))
    times = study.run_times(str(tmp_path / "study"))
    flows = times["paper (5,000 steps), 10,000 points (protocol-000000000001)"]
    assert flows["median_seconds"] == {"rad": 200.0, "realnvp": 60.0}
    assert flows["total_minutes"] == pytest.approx(460 / 60) and flows["runs"] == 3
    assert times["baselines, 2-D"]["total_minutes"] == pytest.approx(2.0)
    # the flow selection's candidates record their CPU seconds
    for i, (model, seconds) in enumerate((("rad", 240.0), ("rad", 180.0), ("realnvp", 66.0))):
        candidate = tmp_path / "study" / "selection" / "select" / f"c{i}"
        candidate.mkdir(parents=True)
        (candidate / "result.json").write_text(json.dumps(
            {"model": model, "cpu_seconds_this_session": seconds}))
    selection = study.run_times(str(tmp_path / "study"))[
        "flow selection, candidates (validation/select_flows.py)"]
    assert selection["median_seconds"] == {"rad": 210.0, "realnvp": 66.0}
    assert selection["total_minutes"] == pytest.approx(486 / 60) and selection["kind"] == "CPU"


def test_choices_made_on_one_seed_apply_to_every_seed(study):
    select = _module("select_flows")
    base = {"problem": "grid", "model": "rad", "hidden": 8, "seed": 0}
    results = [dict(base, lr=lr, lr_schedule=k, val_loglik=v)
               for lr, k, v in ((1e-3, "constant", -1.3), (3e-3, "cosine", -1.1),
                                (3e-4, "constant", -1.2))]
    applied = select.apply_to(select.choose(results), [0, 1, 2])
    assert sorted(applied) == ["grid rad 8 0", "grid rad 8 1", "grid rad 8 2"]
    for seed in (0, 1, 2):
        choice = applied[f"grid rad 8 {seed}"]
        assert (choice["seed"], choice["chosen_on_seed"]) == (seed, 0)
        assert (choice["lr"], choice["lr_schedule"], choice["val_loglik"]) == (3e-3, "cosine", -1.1)
    assert select.refit_commands(applied) == [
        "radref reproduce --problems grid --models rad --seeds 0 1 2 --lr 0.003 "
        "--lr-schedule cosine"]
    # chosen on two seeds: which one to apply is ambiguous
    with pytest.raises(ValueError, match="chosen on seeds 0 and 1"):
        select.apply_to(select.choose(results + [dict(results[0], seed=1)]), [0, 1, 2])


def test_selection_grid_table_marks_the_choice_and_the_grid_edge(study):
    candidates = [{"problem": "grid", "model": "rad", "hidden": 8, "seed": 0, "lr": lr,
                   "lr_schedule": k, "val_loglik": v}
                  for lr, k, v in ((3e-4, "constant", -1.5), (3e-4, "cosine", -1.6),
                                   (1e-3, "constant", -1.3), (1e-3, "cosine", -1.4),
                                   (3e-3, "constant", -1.1), (3e-3, "cosine", -1.05))]
    candidates += [dict(c, model="realnvp", hidden=56, val_loglik=-c["val_loglik"] if
                        (c["lr"], c["lr_schedule"]) == (1e-3, "constant") else -3.0)
                   for c in candidates]
    grid = study.selection_grid(candidates)
    assert grid["grid rad 8 0"]["0.003 cosine"] == -1.05
    table = "\n".join(study.selection_grid_table({"selection_grid": grid}))
    # Rad chose the largest rate of the grid: at its edge; Real NVP the middle one
    assert ("| grid | rad (8) | 0 | -1.5000 | -1.6000 | -1.3000 | -1.4000 | -1.1000 | "
            "**-1.0500** (edge) |") in table
    assert "| grid | realnvp (56) | 0 | -3.0000 | -3.0000 | **+1.3000** | -3.0000 |" in table
