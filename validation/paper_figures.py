"""Figures of the paper's experiment from the reproduction's trained models.

    python validation/paper_figures.py [--results DIR] [--seed 0] [--out DIR]

draws the runs of ``radref reproduce`` (``--results``: its ``--out``, default
``./radref-results`` where it exists, else the committed runs in
``validation/results``) and writes into ``--out`` (default: ``docs/figures/``
for the committed runs, ``figures/`` in the protocol directory otherwise):

- ``fig11_samples.png``: samples of Real NVP (top) and Rad (bottom) on every problem;
- ``fig12_gaussianization_ring.png``: data pushed to z on the ring mixture;
- ``fig17_gaussianization.png``: the same on every problem, with level sets of N(0, I);
- ``fig13_inference_two_moons.png``: layer-by-layer inference on two moons, points
  coloured by their position in input space;
- ``fig14_folding_<problem>.png``: for each Rad layer, its input (top) and output
  (bottom) points, coloured by the branch k where the layer folds (black: the
  invertible region, where k is not needed);
- ``learning_curves.png``: held-out log-likelihood during training, both models.
"""
import argparse
import json
import os

import numpy as np

from radref import datasets, load_model
from radref.core.flow import flow_trajectory
from radref.user.plots import _pyplot, bounding_box
from radref.user.protocol import DEFAULT_OUT, ReproduceError
from radref.user.runfiles import find_results

TITLES = {"grid": "grid Gaussian mixture", "ring": "ring Gaussian mixture",
          "two_moons": "two moons", "two_circles": "two circles", "spiral": "spiral",
          "many_moons": "many moons"}
MODEL_TITLES = {"realnvp": "Real NVP", "rad": "Rad"}
BRANCH_COLOURS = np.array(["tab:red", "tab:green", "tab:blue"])


def load_run(results, problem, model, seed):
    run = os.path.join(results, "runs", f"{problem}-{model}-s{seed}")
    if not os.path.exists(os.path.join(run, "result.json")):
        raise ReproduceError(f"{results} has no finished run of {model} on {problem} with seed "
                             f"{seed} ({run}); the figures need both models on every problem: "
                             f"radref reproduce --seeds {seed} (--quick for a smoke test)")
    with open(os.path.join(run, "result.json")) as f:
        result = json.load(f)
    _, X_test = datasets.train_test_split_samples(problem, result["n_train"], result["n_test"],
                                                  random_state=seed)
    return load_model(os.path.join(run, "checkpoint.npz")), X_test, result


def position_colours(X):
    """A colour per point from its position (hue = angle, value = radius)."""
    import matplotlib.colors as mcolors
    centred = (X - X.mean(axis=0)) / X.std(axis=0)
    hue = (np.arctan2(centred[:, 1], centred[:, 0]) / (2 * np.pi)) % 1.0
    radius = np.hypot(centred[:, 0], centred[:, 1])
    value = 0.35 + 0.65 * np.clip(radius / np.percentile(radius, 95), 0, 1)
    return mcolors.hsv_to_rgb(np.column_stack([hue, np.full_like(hue, 0.85), value]))


def _clean(ax, xlim=None, ylim=None):
    if xlim is not None:
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal")


def fig_samples(plt, runs, out, n=5000):
    fig, axes = plt.subplots(2, 6, figsize=(18, 6.4))
    for col, problem in enumerate(datasets.PROBLEMS):
        for row, model in enumerate(("realnvp", "rad")):
            flow, X_test, _ = runs[problem, model]
            xlim, ylim = bounding_box(X_test)
            samples = flow.sample(n, random_state=0)
            ax = axes[row, col]
            ax.scatter(samples[:, 0], samples[:, 1], s=0.5, alpha=0.5,
                       color="C0" if model == "rad" else "C1")
            ax.set_title(f"{MODEL_TITLES[model]} on {TITLES[problem]}", fontsize=9)
            _clean(ax, xlim, ylim)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig11_samples.png"), dpi=100)
    plt.close(fig)


def _gaussianization(ax, flow, X, title):
    Z = flow.transform(X[:5000])  # the real latent (infer() also gives K)
    ax.scatter(Z[:, 0], Z[:, 1], s=0.5, alpha=0.5, c=position_colours(X[:5000]))
    angle = np.linspace(0, 2 * np.pi, 200)
    for r in (1, 2, 3):
        ax.plot(r * np.cos(angle), r * np.sin(angle), color="k", lw=0.6)
    ax.set_title(title, fontsize=9)
    _clean(ax, (-4, 4), (-4, 4))


def fig_gaussianization(plt, runs, out):
    fig, axes = plt.subplots(2, 6, figsize=(18, 6.4))
    for col, problem in enumerate(datasets.PROBLEMS):
        for row, model in enumerate(("realnvp", "rad")):
            flow, X_test, _ = runs[problem, model]
            _gaussianization(axes[row, col], flow, X_test,
                             f"{MODEL_TITLES[model]} on {TITLES[problem]}")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig17_gaussianization.png"), dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
    for ax, model in zip(axes, ("realnvp", "rad")):
        flow, X_test, _ = runs["ring", model]
        _gaussianization(ax, flow, X_test, f"{MODEL_TITLES[model]} Gaussianization (ring)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig12_gaussianization_ring.png"), dpi=110)
    plt.close(fig)


def fig_inference(plt, runs, out, problem="two_moons", n=4000):
    _, X_test, _ = runs[problem, "rad"]
    X = X_test[:n]
    colours = position_colours(X)
    n_layers = runs[problem, "rad"][0].n_layers
    fig, axes = plt.subplots(2, n_layers + 1, figsize=(2.6 * (n_layers + 1), 5.6))
    for row, model in enumerate(("realnvp", "rad")):
        flow = runs[problem, model][0]
        zs, _, _ = flow_trajectory(X, flow.params_, flow.config_)
        for col, z in enumerate(zs):
            ax = axes[row, col]
            ax.scatter(z[:, 0], z[:, 1], s=0.4, c=colours)
            ax.set_title(f"{MODEL_TITLES[model]}: " + ("x" if col == 0 else f"z({col})"),
                         fontsize=9)
            _clean(ax, *bounding_box(z, margin=0.05))
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"fig13_inference_{problem}.png"), dpi=100)
    plt.close(fig)


def fig_folding(plt, runs, out, problem, n=4000):
    flow, X_test, _ = runs[problem, "rad"]
    X = X_test[:n]
    zs, folded, k = flow_trajectory(X, flow.params_, flow.config_)
    n_layers = flow.config_.n_layers
    fig, axes = plt.subplots(2, n_layers, figsize=(2.8 * n_layers, 5.8))
    for layer in range(n_layers):
        column = np.flatnonzero((k[:, layer, :] >= 0).any(axis=0))[0]
        in_fold = folded[layer][:, column]
        colours = np.where(in_fold, BRANCH_COLOURS[np.maximum(k[:, layer, column], 0)], "black")
        for row, (z, label) in enumerate(((zs[layer], "input"), (zs[layer + 1], "output"))):
            ax = axes[row, layer]
            ax.scatter(z[:, 0], z[:, 1], s=0.4, c=colours)
            ax.set_title(f"layer {layer + 1} {label} (folds column {column})", fontsize=8)
            _clean(ax, *bounding_box(z, margin=0.05))
    fig.suptitle(f"Rad folding on {TITLES[problem]}: red/green/blue = k = 0/1/2 in the "
                 "folded region, black = invertible region", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"fig14_folding_{problem}.png"), dpi=100)
    plt.close(fig)


def fig_learning_curves(plt, runs, out):
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for ax, problem in zip(axes.ravel(), datasets.PROBLEMS):
        for model in ("realnvp", "rad"):
            _, _, result = runs[problem, model]
            ax.plot(result["val_step"], result["val_loglik"], marker=".",
                    label=f"{MODEL_TITLES[model]} (held-out)",
                    color="C0" if model == "rad" else "C1")
        best, _ = datasets.negative_entropy(problem, n=50_000)
        ax.axhline(best, color="k", ls="--", lw=0.8, label="best achievable")
        ax.set_title(TITLES[problem])
        ax.set_xlabel("Adam step")
        ax.set_ylabel("mean log-likelihood (nats)")
        lows = [min(runs[problem, m][2]["val_loglik"][1:] or [best]) for m in ("rad", "realnvp")]
        ax.set_ylim(min(lows) - 0.3, best + 0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "learning_curves.png"), dpi=100)
    plt.close(fig)


#: the committed paper-protocol runs, whose figures are docs/figures/
COMMITTED = os.path.join("validation", "results")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=None,
                        help=f"runs to draw: the --out of 'radref reproduce' (its one "
                             f"protocol-*/ directory is found) or a protocol directory "
                             f"(default: ./{DEFAULT_OUT} if it exists, else the committed "
                             f"{COMMITTED})")
    parser.add_argument("--seed", type=int, default=0, help="which seed's models to draw "
                                                             "(default 0)")
    parser.add_argument("--out", default=None,
                        help="output directory (default: docs/figures for the committed "
                             "runs, else figures/ in the protocol directory drawn)")
    args = parser.parse_args(argv)
    given = args.results
    if given is None:
        given = DEFAULT_OUT if os.path.isdir(DEFAULT_OUT) else COMMITTED
    try:
        results = find_results(given)
        runs = {(p, m): load_run(results, p, m, args.seed)
                for p in datasets.PROBLEMS for m in ("rad", "realnvp")}
    except ReproduceError as exc:
        parser.exit(2, f"paper_figures.py: error: {exc}\n")
    committed = os.path.abspath(results) == os.path.abspath(COMMITTED)
    out = args.out or (os.path.join("docs", "figures") if committed
                       else os.path.join(results, "figures"))
    print(f"drawing the runs of seed {args.seed} in {results}")
    plt = _pyplot()
    os.makedirs(out, exist_ok=True)
    fig_samples(plt, runs, out)
    fig_gaussianization(plt, runs, out)
    fig_inference(plt, runs, out)
    for problem in ("two_moons", "ring", "spiral"):
        fig_folding(plt, runs, out, problem)
    fig_learning_curves(plt, runs, out)
    print(f"figures written to {out}")


if __name__ == "__main__":
    main()
