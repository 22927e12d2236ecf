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
from radref.user.plots import (X_NAMES, Z_NAMES, _pyplot, bounding_box, frame, n_outside,
                                square_box, union_box, view_box)
from radref.user.protocol import DEFAULT_OUT, ReproduceError
from radref.user.runfiles import find_results
from radref.user.tables import protocol_note

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


#: a line stamped at the foot of every figure of runs whose protocol is not
#: the paper's (the smoke test of ``radref reproduce --quick``, say), so that
#: they are not read as the paper's figures; set by :func:`main`
STAMP = None


def _save(plt, fig, path, dpi=100):
    try:
        if STAMP:  # below the panels, in the margin the tight box adds
            fig.text(0.5, -0.01, STAMP, ha="center", va="top", fontsize=10, color="tab:red")
            fig.savefig(path, dpi=dpi, bbox_inches="tight")
        else:
            fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def _trajectory_box(zs):
    """One frame for every panel of a trajectory: a layer's output and the
    next layer's input are the same points, and a reader following them
    through the layers needs one scale to see what each layer stretches."""
    return union_box(view_box(z, margin=0.05) for z in zs)


def samples_figure(plt, runs, n=5000):
    """Fig. 11: samples of Real NVP (top) and Rad (bottom) on every problem.
    Both models' panels of a problem share its frame; the frames are square,
    so that every panel has the same size."""
    fig, axes = plt.subplots(2, 6, figsize=(18, 6.8), layout="constrained")
    for col, problem in enumerate(datasets.PROBLEMS):
        for row, model in enumerate(("realnvp", "rad")):
            flow, X_test, _ = runs[problem, model]
            xlim, ylim = square_box(*bounding_box(X_test))
            samples = flow.sample(n, random_state=0)
            ax = axes[row, col]
            ax.scatter(samples[:, 0], samples[:, 1], s=0.5, alpha=0.5,
                       color="C0" if model == "rad" else "C1")
            outside = n_outside(samples, xlim, ylim)
            ax.set_title(f"{MODEL_TITLES[model]} on {TITLES[problem]}"
                         + (f"\n({outside} of {n} outside the frame)" if outside else ""),
                         fontsize=9)
            frame(ax, xlim, ylim)
    return fig


def fig_samples(plt, runs, out, n=5000):
    _save(plt, samples_figure(plt, runs, n), os.path.join(out, "fig11_samples.png"))


def _gaussianization(ax, flow, X, title):
    Z = flow.transform(X[:5000])  # the real latent (infer() also gives K)
    ax.scatter(Z[:, 0], Z[:, 1], s=0.5, alpha=0.5, c=position_colours(X[:5000]))
    angle = np.linspace(0, 2 * np.pi, 200)
    for r in (1, 2, 3):
        ax.plot(r * np.cos(angle), r * np.sin(angle), color="k", lw=0.6)
    ax.set_title(title, fontsize=9)
    frame(ax, (-4, 4), (-4, 4), names=Z_NAMES)


def gaussianization_figures(plt, runs):
    """Figs. 17 and 12: the test points pushed to the latent space, every
    panel in one frame (the base distribution's)."""
    fig17, axes = plt.subplots(2, 6, figsize=(18, 6.8), layout="constrained")
    for col, problem in enumerate(datasets.PROBLEMS):
        for row, model in enumerate(("realnvp", "rad")):
            flow, X_test, _ = runs[problem, model]
            _gaussianization(axes[row, col], flow, X_test,
                             f"{MODEL_TITLES[model]} on {TITLES[problem]}")
    fig12, axes = plt.subplots(1, 2, figsize=(8, 4.4), layout="constrained")
    for ax, model in zip(axes, ("realnvp", "rad")):
        flow, X_test, _ = runs["ring", model]
        _gaussianization(ax, flow, X_test, f"{MODEL_TITLES[model]} Gaussianization (ring)")
    return fig17, fig12


def fig_gaussianization(plt, runs, out):
    fig17, fig12 = gaussianization_figures(plt, runs)
    _save(plt, fig17, os.path.join(out, "fig17_gaussianization.png"))
    _save(plt, fig12, os.path.join(out, "fig12_gaussianization_ring.png"), dpi=110)


def inference_figure(plt, runs, problem="two_moons", n=4000):
    """Fig. 13: the test points after each layer of Real NVP (top) and Rad
    (bottom), coloured by their position in the data space; every panel in
    one frame."""
    _, X_test, _ = runs[problem, "rad"]
    X = X_test[:n]
    colours = position_colours(X)
    n_layers = runs[problem, "rad"][0].n_layers
    trajectories = {model: flow_trajectory(X, runs[problem, model][0].params_,
                                           runs[problem, model][0].config_)[0]
                    for model in ("realnvp", "rad")}
    box = _trajectory_box([z for zs in trajectories.values() for z in zs])
    height = 2.2 * (box[1][1] - box[1][0]) / (box[0][1] - box[0][0])  # of a panel, inches
    fig, axes = plt.subplots(2, n_layers + 1, figsize=(2.6 * (n_layers + 1), 2 * height + 1.4),
                             layout="constrained")
    for row, model in enumerate(("realnvp", "rad")):
        for col, z in enumerate(trajectories[model]):
            ax = axes[row, col]
            ax.scatter(z[:, 0], z[:, 1], s=0.4, c=colours)
            ax.set_title(f"{MODEL_TITLES[model]}: " + ("x (data)" if col == 0
                                                        else f"after layer {col}"), fontsize=9)
            frame(ax, *box, names=X_NAMES if col == 0 else Z_NAMES)
    return fig


def fig_inference(plt, runs, out, problem="two_moons", n=4000):
    _save(plt, inference_figure(plt, runs, problem, n),
          os.path.join(out, f"fig13_inference_{problem}.png"))


def folding_figure(plt, runs, problem, n=4000):
    """Fig. 14: each Rad layer's input (top) and output (bottom), coloured by
    the branch k where the layer folds; every panel in one frame."""
    flow, X_test, _ = runs[problem, "rad"]
    X = X_test[:n]
    zs, folded, k = flow_trajectory(X, flow.params_, flow.config_)
    box = _trajectory_box(zs)
    n_layers = flow.config_.n_layers
    height = 2.4 * (box[1][1] - box[1][0]) / (box[0][1] - box[0][0])  # of a panel, inches
    fig, axes = plt.subplots(2, n_layers, figsize=(2.8 * n_layers, 2 * height + 1.5),
                             layout="constrained")
    for layer in range(n_layers):
        column = np.flatnonzero((k[:, layer, :] >= 0).any(axis=0))[0]
        in_fold = folded[layer][:, column]
        colours = np.where(in_fold, BRANCH_COLOURS[np.maximum(k[:, layer, column], 0)], "black")
        # the first layer's input is the data space; after it, the latent one
        names_in = X_NAMES if layer == 0 else Z_NAMES
        for row, (z, label, names) in enumerate(((zs[layer], "input", names_in),
                                                 (zs[layer + 1], "output", Z_NAMES))):
            ax = axes[row, layer]
            ax.scatter(z[:, 0], z[:, 1], s=0.4, c=colours)
            ax.set_title(f"layer {layer + 1} {label} (folds {names_in[column]})", fontsize=8)
            frame(ax, *box, names=names)
    fig.suptitle(f"Rad folding on {TITLES[problem]}: red/green/blue = k = 0/1/2 in the "
                 "folded region, black = invertible region", fontsize=10)
    return fig


def fig_folding(plt, runs, out, problem, n=4000):
    _save(plt, folding_figure(plt, runs, problem, n),
          os.path.join(out, f"fig14_folding_{problem}.png"))


def learning_curves_figure(plt, runs):
    """Held-out log-likelihood during training, both models, one panel per
    problem; one legend for all, above the panels (inside a panel it covered
    curves where they dip)."""
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.8), layout="constrained")
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
        # the first score can lie nats below the rest: the frame leaves it out,
        # and an arrow at the frame's foot gives its value, so no line is cut
        # off without a word
        lows = [min(runs[problem, m][2]["val_loglik"][1:] or [best]) for m in ("rad", "realnvp")]
        bottom = min(lows) - 0.3
        ax.set_ylim(bottom, best + 0.3)
        for model in ("realnvp", "rad"):
            steps, values = runs[problem, model][2]["val_step"], runs[problem, model][2]["val_loglik"]
            for step, value in zip(steps, values):
                if value < bottom:
                    ax.annotate(f"{value:.1f}", (step, bottom), xytext=(0, 12),
                                textcoords="offset points", ha="center", fontsize=8,
                                color="C0" if model == "rad" else "C1",
                                arrowprops=dict(arrowstyle="->", color="C0" if model == "rad"
                                                else "C1"))
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside upper center", ncol=3,
               fontsize=9, frameon=False)
    return fig


def fig_learning_curves(plt, runs, out):
    _save(plt, learning_curves_figure(plt, runs), os.path.join(out, "learning_curves.png"))


#: the committed paper-protocol runs, whose figures are docs/figures/
COMMITTED = os.path.join("validation", "results")


def stamp(results):
    """The foot line of figures drawn from ``results``: ``None`` for the
    paper's protocol (or a directory without ``protocol.json``, such as the
    committed runs), else what :func:`radref.user.tables.protocol_note` says."""
    path = os.path.join(results, "protocol.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        tag, sentence = protocol_note(json.load(f))
    if tag == "smoke test":
        return sentence.split("):", 1)[0] + "): not the paper's protocol, not its figures"
    return sentence


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
    global STAMP
    STAMP = stamp(results)
    if STAMP:
        print(STAMP)
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
