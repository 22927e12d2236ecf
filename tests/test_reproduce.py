"""The reproduction pipeline end to end (``radref reproduce --quick``) and the
intermediate representations used by its figures."""
import json
import os

import numpy as np

from radref import datasets
from radref.user.cli import main
from radref.core.flow import FlowConfig, flow_forward, flow_init, flow_trajectory
from radref.user.reproduce import FULL, PAPER, markdown_table, summarize


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def test_quick_reproduction_end_to_end_and_resumes(tmp_path, capsys):
    out = str(tmp_path / "results")
    assert main(["reproduce", "--quick", "--workers", "1", "--out", out]) == 0
    table = capsys.readouterr().out
    rows = _read_json(os.path.join(out, "results.json"))
    assert len(rows) == 2 * len(datasets.PROBLEMS)
    assert all(np.isfinite(r["test_loglik"]) and np.isfinite(r["train_loglik"]) for r in rows)
    for problem in datasets.PROBLEMS:
        assert f"| {problem} |" in table
    assert os.path.exists(os.path.join(out, "table.md"))
    # --table-only summarises the finished runs without training anything.
    os.remove(os.path.join(out, "table.md"))
    assert main(["reproduce", "--quick", "--table-only", "--out", out]) == 0
    with open(os.path.join(out, "table.md")) as f:
        assert "| two_moons |" in f.read()
    # A second call finds every run finished and recomputes nothing.
    before = {r["problem"] + r["model"]: r["test_loglik"] for r in rows}
    assert main(["reproduce", "--quick", "--workers", "1", "--out", out]) == 0
    after = _read_json(os.path.join(out, "results.json"))
    assert {r["problem"] + r["model"]: r["test_loglik"] for r in after} == before


def test_summary_mean_and_std_over_seeds():
    rows = [{"problem": "spiral", "model": "rad", "seed": s, "test_loglik": v,
             "train_loglik": v + 1, "n_parameters": 10} for s, v in enumerate([1.0, 2.0, 4.0])]
    (cell,) = summarize(rows)
    assert cell["test_mean"] == 7.0 / 3.0
    assert np.isclose(cell["test_std"], np.std([1.0, 2.0, 4.0], ddof=1))
    assert cell["paper"] == PAPER["spiral"][0]
    assert "+2.333 ± 1.528 (3 seeds)" in markdown_table([cell])


def test_full_protocol_is_the_papers():
    # Paper §4.2-4.3 / notes §7: batch 500, 50,000 steps, 10,000 points, >= 3 seeds.
    assert (FULL["batch_size"], FULL["steps"], FULL["n_train"]) == (500, 50_000, 10_000)
    assert len(FULL["seeds"]) >= 3


def test_trajectory_matches_forward():
    for kind in ("rad", "affine"):
        config = FlowConfig(kind, 3, 4, 5, 5)
        params = flow_init(config, out_std=0.4, random_state=1)
        x = np.random.default_rng(2).normal(size=(50, 3))
        _, z, k, _ = flow_forward(x, params, config)
        zs, folded, k_traj = flow_trajectory(x, params, config)
        assert len(zs) == config.n_layers + 1 and zs[0] is x
        np.testing.assert_array_equal(zs[-1], z)
        np.testing.assert_array_equal(k_traj, k)
        if kind == "rad":
            # Outside the folded interval only one branch exists: k = 0 below, 2 above.
            for layer, mask in enumerate(folded):
                transformed = k[:, layer, :] >= 0
                assert not np.any(mask & ~transformed)
                assert np.any(mask) and np.any(transformed & ~mask)
        else:
            assert all(m is None for m in folded)
