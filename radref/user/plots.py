"""Figures of trained models (matplotlib is optional: ``pip install matplotlib``,
or ``pip install ".[plot]"`` in radref's source tree).

- :func:`plot_demo`: ``radref demo``'s figure, several models side by side on
  one colour scale;
- :func:`plot_model`: ``radref plot``'s figure of one model: density, samples
  and what each coupling layer does to the points (for Rad, the folding of
  paper Fig. 14: which branch ``k`` each point takes).
"""
import numpy as np

from radref.core.layers import layer_kind, split
from radref.core.flow import flow_trajectory
from radref.training.files import atomic_write

#: colours of the branches k = 0, 1, 2 of a fold (paper Fig. 14's red/green/blue)
BRANCH_COLOURS = np.array(["tab:red", "tab:green", "tab:blue"])
#: colour of points a layer does not fold (its invertible region)
UNFOLDED_COLOUR = "0.55"


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("figures need matplotlib: pip install matplotlib (in radref's "
                          "source tree: pip install \".[plot]\")") from None
    return plt


def bounding_box(data, margin=0.15, trim=0.0):
    """``(xlim, ylim)`` holding ``data`` with a relative ``margin`` on each
    side; ``trim`` leaves out that fraction of the points at each end of each
    axis (so that a few far samples do not shrink the picture)."""
    low = np.quantile(data, trim, axis=0)
    high = np.quantile(data, 1.0 - trim, axis=0)
    pad = margin * (high - low)
    return (low[0] - pad[0], high[0] + pad[0]), (low[1] - pad[1], high[1] + pad[1])


def density_grid(score_samples, xlim, ylim, n_grid=200):
    """Evaluate ``exp(score_samples)`` on a grid over ``xlim x ylim``.

    Returns ``(xs, ys, density)`` with ``density`` of shape ``(n_grid, n_grid)``
    (rows follow ``ys``).
    """
    xs = np.linspace(*xlim, n_grid)
    ys = np.linspace(*ylim, n_grid)
    gx, gy = np.meshgrid(xs, ys)
    log_p = score_samples(np.column_stack([gx.ravel(), gy.ravel()]))
    return xs, ys, np.exp(log_p).reshape(n_grid, n_grid)


def _frame(ax, xlim, ylim):
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    # a few small ticks: the coordinates' scale is part of what a panel shows
    ax.locator_params(nbins=4)
    ax.tick_params(labelsize=7, length=2, pad=1)


#: the PNG "Software" text of the demo's figure: how ``radref demo`` knows a
#: file it may replace without --overwrite is its own
DEMO_SOFTWARE = "radref demo"


def written_by_demo(path):
    """Whether ``path`` is a PNG that :func:`plot_demo` wrote (its text chunks
    precede the image data, within the first kilobytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return (head.startswith(b"\x89PNG\r\n\x1a\n")
            and b"tEXtSoftware\x00" + DEMO_SOFTWARE.encode() in head)


def plot_demo(path, data, models, scores, best=None, log_density=None, random_state=0,
              n_samples=5000, overwrite=True):
    """Write :func:`demo_figure` to the PNG file ``path`` (an existing file
    is replaced only if ``overwrite``; else :class:`FileExistsError`)."""
    plt = _pyplot()
    fig = demo_figure(data, models, scores, best, log_density, random_state, n_samples)
    with atomic_write(path, replace=overwrite) as f:  # whole or not at all (docs/errors.md)
        fig.savefig(f, format="png", dpi=110, metadata={"Software": DEMO_SOFTWARE})
    plt.close(fig)


def demo_figure(data, models, scores, best=None, log_density=None, random_state=0,
                n_samples=5000):
    """The data once, then one column per model: its samples above, its
    density below, every density on one colour scale with one colorbar.

    Parameters
    ----------
    data : ndarray, shape (n, 2)
        Held-out points (the first ``n_samples`` are drawn).
    models : dict
        Title -> fitted 2-D estimator.
    scores : dict
        Title -> held-out mean log-likelihood, shown in the titles.
    best : float, optional
        Best achievable mean log-likelihood (shown with the true density).
    log_density : callable, optional
        The data's exact log-density: drawn below the data, on the same scale.
    """
    plt = _pyplot()
    xlim, ylim = bounding_box(data, trim=0.001)
    grids = {title: density_grid(model.score_samples, xlim, ylim)
             for title, model in models.items()}
    if log_density is not None:
        grids["true"] = density_grid(log_density, xlim, ylim)
    # one scale for every panel; its top is the highest 99.9th percentile of
    # the panels, so that a spike of a few pixels does not darken the rest
    # (values above it are drawn in the top colour; the colorbar says so)
    vmax = max(float(np.quantile(grid[2], 0.999)) for grid in grids.values())
    clipped = any(float(grid[2].max()) > vmax for grid in grids.values())
    columns = 1 + len(models)
    # panels of the data's aspect ratio, so that "equal" axes leave no gaps
    panel_width = 3.1
    panel_height = panel_width * (ylim[1] - ylim[0]) / (xlim[1] - xlim[0])
    fig, axes = plt.subplots(2, columns, layout="constrained", squeeze=False,
                             figsize=(panel_width * columns + 1.1, 2 * panel_height + 0.8))
    shown = data[:n_samples]
    axes[0, 0].scatter(shown[:, 0], shown[:, 1], s=1, alpha=0.4, color="k", linewidths=0)
    axes[0, 0].set_title(f"data ({len(shown)} of {len(data)} held-out points)"
                         if len(shown) < len(data) else f"data ({len(data)} held-out points)",
                         fontsize=10)
    if log_density is not None:
        mesh = axes[1, 0].pcolormesh(*grids["true"], shading="auto", cmap="viridis", vmin=0.0,
                                     vmax=vmax)
        label = "true density" + ("" if best is None else f": best possible {best:+.3f} nats")
        axes[1, 0].set_title(label, fontsize=10)
    else:
        axes[1, 0].axis("off")
    for column, (title, model) in enumerate(models.items(), start=1):
        samples = model.sample(n_samples, random_state=random_state)
        axes[0, column].scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.4, color="C0",
                                linewidths=0)
        axes[0, column].set_title(f"{title} samples ({model.n_parameters()} parameters)",
                                  fontsize=10)
        mesh = axes[1, column].pcolormesh(*grids[title], shading="auto", cmap="viridis",
                                          vmin=0.0, vmax=vmax)
        axes[1, column].set_title(f"{title} density: held-out {scores[title]:+.3f} nats",
                                  fontsize=10)
    for ax in axes.ravel():
        _frame(ax, xlim, ylim)
    fig.colorbar(mesh, ax=axes[1, :].tolist(), label="density p(x), one scale for all",
                 shrink=0.9, extend="max" if clipped else "neither")
    return fig


def plot_model(path, model, data=None, n_samples=4000, random_state=0, title=None,
               overwrite=True):
    """One fitted 2-D model: density, samples (and ``data``), then the input
    and output of every coupling layer.

    For a Rad flow the points are coloured by the branch ``k`` (0, 1, 2) each
    layer's fold sends them to, grey where the layer does not fold (paper
    Fig. 14); for Real NVP by their position in the input, so that the eye can
    follow them through the layers.  The points pushed through the layers are
    ``data`` if given, else the model's samples.
    """
    plt = _pyplot()
    samples = model.sample(n_samples, random_state=random_state)
    points = samples if data is None else data[:n_samples]
    xlim, ylim = bounding_box(points, trim=0.002)
    n_layers = model.config_.n_layers
    fig = plt.figure(figsize=(max(2.6 * n_layers, 7.5), 4.2 + 5.0), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[4.2, 5.0])
    _plot_overview(top, model, samples, data, xlim, ylim, n_samples)
    _plot_layers(bottom, model, points)
    top.suptitle(f"{title + ': ' if title else ''}{model.display_name()} flow, "
                 f"{n_layers} coupling layers, "
                 f"{model.n_parameters()} parameters, {model.n_steps_} training steps")
    with atomic_write(path, replace=overwrite) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def _plot_overview(fig, model, samples, data, xlim, ylim, n_samples):
    panels = 3 if data is not None else 2
    axes = fig.subplots(1, panels)
    xs, ys, density = density_grid(model.score_samples, xlim, ylim)
    top = float(np.quantile(density, 0.999))  # as in demo_figure: a spike does not set the scale
    mesh = axes[0].pcolormesh(xs, ys, density, shading="auto", cmap="viridis", vmin=0.0,
                              vmax=top)
    axes[0].set_title("density p(x)")
    fig.colorbar(mesh, ax=axes[0], shrink=0.85,
                 extend="max" if float(density.max()) > top else "neither")
    axes[1].scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.5, color="C0", linewidths=0)
    axes[1].set_title(f"{len(samples)} samples")
    if data is not None:
        shown = data[:n_samples]
        axes[2].scatter(shown[:, 0], shown[:, 1], s=1, alpha=0.5, color="k", linewidths=0)
        axes[2].set_title(f"data ({len(shown)} points), "
                          f"mean log-likelihood {model.score(data):+.3f} nats", fontsize=9)
    for ax in axes:
        _frame(ax, xlim, ylim)


def _plot_layers(fig, model, points):
    config = model.config_
    zs, folded, k = flow_trajectory(points, model.params_, config)
    axes = fig.subplots(2, config.n_layers, squeeze=False)
    size = float(np.clip(2500.0 / len(points), 0.6, 4.0))  # fewer points, larger dots
    discrete = layer_kind(config.kind).HAS_DISCRETE_LATENTS  # colour the branches k
    if discrete:
        fig.suptitle("folding of each layer: red / green / blue = branch k = 0 / 1 / 2 where "
                     "the layer folds its column, grey = where it is invertible", fontsize=10)
    else:
        fig.suptitle("each layer's input and output (colour: the point's position in the "
                     "first layer's input)", fontsize=10)
        order = np.argsort(np.argsort(points[:, 0] + points[:, 1]))
        position = order / max(len(points) - 1, 1)
    for layer in range(config.n_layers):
        if discrete:
            column = int(np.atleast_1d(split(config.dim, layer)[1])[0])
            in_fold = folded[layer][:, column]
            colours = np.where(in_fold, BRANCH_COLOURS[np.maximum(k[:, layer, column], 0)],
                               UNFOLDED_COLOUR)
            where = f" (folds column {column})"
        else:
            colours, where = None, ""
        for row, (z, label) in enumerate(((zs[layer], "input"), (zs[layer + 1], "output"))):
            ax = axes[row, layer]
            if colours is None:
                ax.scatter(z[:, 0], z[:, 1], s=size, c=position, cmap="viridis", linewidths=0)
            else:
                ax.scatter(z[:, 0], z[:, 1], s=size, c=colours, linewidths=0)
            ax.set_title(f"layer {layer + 1} {label}{where if row == 0 else ''}", fontsize=8)
            _frame(ax, *bounding_box(z, margin=0.05, trim=0.002))
