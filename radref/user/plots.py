"""Figures of trained models (matplotlib is optional: ``pip install matplotlib``,
or ``pip install ".[plot]"`` in radref's source tree).

- :func:`plot_demo` (:func:`demo_figure`): ``radref demo``'s figure, several
  models side by side on one colour scale;
- :func:`plot_model` (:func:`model_figure`): ``radref plot``'s figure of one
  model: density, samples and what each coupling layer does to the points (for
  Rad, the folding of paper Fig. 14: which branch ``k`` each point takes).

Every panel has ticks and axis labels (:func:`frame`), and panels that show
the same space share one frame, so that they can be compared by eye
(:func:`view_box`, :func:`union_box`; validation/paper_figures.py uses them
too).
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


def _finite_rows(points):
    points = np.asarray(points, dtype=float)
    return points[np.all(np.isfinite(points), axis=1)]


def _padded(low, high, margin):
    # a span of zero (all points equal) would give identical limits, which
    # matplotlib refuses with a warning: such an axis gets a unit span
    span = np.where(high > low, high - low, 1.0)
    return (low[0] - margin * span[0], high[0] + margin * span[0]), \
        (low[1] - margin * span[1], high[1] + margin * span[1])


def bounding_box(data, margin=0.15, trim=0.0):
    """``(xlim, ylim)`` holding ``data`` with a relative ``margin`` on each
    side; ``trim`` leaves out that fraction of the points at each end of each
    axis (so that a few far samples do not shrink the picture).  Rows that are
    not finite are left out."""
    data = _finite_rows(data)
    if len(data) == 0:
        return (-1.0, 1.0), (-1.0, 1.0)
    return _padded(np.quantile(data, trim, axis=0), np.quantile(data, 1.0 - trim, axis=0),
                   margin)


def view_box(points, margin=0.1, trim=0.002, fence=3.0):
    """``(xlim, ylim)`` framing the bulk of ``points``.

    Each axis spans the points' ``trim`` and ``1 - trim`` quantiles, cut at
    Tukey's far-out fences (``fence`` interquartile ranges beyond the
    quartiles), then widened by ``margin`` of the span on each side.  The
    fences are there for a model's samples: a briefly trained flow can put
    several per cent of its samples hundreds of units away, and a box holding
    them all shrinks the rest to a dot.  They do not bite on the problems'
    data, nor on a normal sample (4.7 standard deviations from the mean), nor
    on the long arms a trained flow's layers draw (1.5 interquartile ranges,
    Tukey's inner fences, cut those).  Rows that are not finite are left out.

    Parameters
    ----------
    points : ndarray, shape (n, 2)
    margin : float
        Fraction of each axis's span added on both sides.
    trim : float
        Fraction of the points left out at each end of each axis.
    fence : float
        How many interquartile ranges beyond the quartiles an axis may reach.

    Returns
    -------
    xlim, ylim : tuple of float
        ``(low, high)`` of each axis.
    """
    points = _finite_rows(points)
    if len(points) == 0:
        return (-1.0, 1.0), (-1.0, 1.0)
    q1, q3 = np.quantile(points, [0.25, 0.75], axis=0)
    iqr = q3 - q1
    low = np.maximum(np.quantile(points, trim, axis=0), q1 - fence * iqr)
    high = np.minimum(np.quantile(points, 1.0 - trim, axis=0), q3 + fence * iqr)
    return _padded(low, high, margin)


def union_box(boxes):
    """The smallest ``(xlim, ylim)`` holding every box of ``boxes``."""
    boxes = list(boxes)
    return ((min(b[0][0] for b in boxes), max(b[0][1] for b in boxes)),
            (min(b[1][0] for b in boxes), max(b[1][1] for b in boxes)))


def square_box(xlim, ylim):
    """``(xlim, ylim)`` widened about their centres to the larger of the two
    spans, so that panels of different problems drawn with equal axes get
    boxes of one size."""
    half = max(xlim[1] - xlim[0], ylim[1] - ylim[0]) / 2.0
    cx, cy = (xlim[0] + xlim[1]) / 2.0, (ylim[0] + ylim[1]) / 2.0
    return (cx - half, cx + half), (cy - half, cy + half)


def not_flatter_than(xlim, ylim, ratio=0.45):
    """``(xlim, ylim)`` with the shorter span widened about its centre to at
    least ``ratio`` times the longer (a panel with equal axes takes the box's
    shape; a thin line of points would otherwise give a sliver of a panel)."""
    spans = [xlim[1] - xlim[0], ylim[1] - ylim[0]]
    least = ratio * max(spans)
    out = []
    for lim, span in zip((xlim, ylim), spans):
        centre, half = (lim[0] + lim[1]) / 2.0, max(span, least) / 2.0
        out.append((centre - half, centre + half))
    return tuple(out)


def n_outside(points, xlim, ylim):
    """How many rows of ``points`` lie outside ``xlim x ylim`` (rows that are
    not finite included)."""
    points = np.asarray(points, dtype=float)
    inside = ((points[:, 0] >= xlim[0]) & (points[:, 0] <= xlim[1])
              & (points[:, 1] >= ylim[0]) & (points[:, 1] <= ylim[1]))
    return int(np.count_nonzero(~inside))


def _outside_note(points, xlim, ylim, sep=", "):
    # a reader who sees a tidy panel should know when points lie beyond it
    n = n_outside(points, xlim, ylim)
    return f"{sep}{n} outside the frame" if n else ""


#: axis labels of the data space and of the space after a coupling layer
X_NAMES = ("$x_1$", "$x_2$")
Z_NAMES = ("$z_1$", "$z_2$")


def frame(ax, xlim, ylim, names=X_NAMES):
    """Give ``ax`` the limits ``xlim x ylim``, equal axes, a few labelled
    ticks and the axis labels ``names``.

    Panels framed with the same limits get boxes of one shape, and in a grid
    of equal cells boxes of one size, so that they can be compared by eye.
    """
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    # a few small ticks: the coordinates' scale is part of what a panel shows
    ax.locator_params(nbins=6)
    ax.tick_params(labelsize=7, length=2, pad=1)
    ax.set_xlabel(names[0], fontsize=8, labelpad=1)
    ax.set_ylabel(names[1], fontsize=8, labelpad=1)


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
    try:
        with atomic_write(path, replace=overwrite) as f:  # whole or not at all (docs/errors.md)
            fig.savefig(f, format="png", dpi=110, metadata={"Software": DEMO_SOFTWARE})
    finally:
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
                             figsize=(panel_width * columns + 1.1, 2 * panel_height + 1.05))
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
        note = _outside_note(samples, xlim, ylim, sep="\n")
        axes[0, column].set_title(f"{title} samples ({model.n_parameters()} parameters){note}",
                                  fontsize=10)
        mesh = axes[1, column].pcolormesh(*grids[title], shading="auto", cmap="viridis",
                                          vmin=0.0, vmax=vmax)
        axes[1, column].set_title(f"{title} density: held-out {scores[title]:+.3f} nats",
                                  fontsize=10)
    for ax in axes.ravel():
        frame(ax, xlim, ylim)  # every panel shows the data space: one frame for all
    # the colour bar as tall as the density panels, beside the last of them
    colorbar = fig.colorbar(mesh, cax=axes[1, -1].inset_axes([1.04, 0.0, 0.04, 1.0]),
                            extend="max" if clipped else "neither")
    colorbar.set_label("density p(x), one scale for all", fontsize=8)
    colorbar.ax.tick_params(labelsize=7)
    return fig


def plot_model(path, model, data=None, n_samples=4000, random_state=0, title=None,
               overwrite=True):
    """Write :func:`model_figure` to the PNG file ``path`` (an existing file
    is replaced only if ``overwrite``; else :class:`FileExistsError`)."""
    plt = _pyplot()
    fig = model_figure(model, data, n_samples, random_state, title)
    try:
        with atomic_write(path, replace=overwrite) as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)


def _height_over_width(xlim, ylim):
    return (ylim[1] - ylim[0]) / (xlim[1] - xlim[0])


def model_figure(model, data=None, n_samples=4000, random_state=0, title=None):
    """One fitted 2-D model: the data, its samples and its density, then the
    input and output of every coupling layer.

    For a Rad flow the points are coloured by the branch ``k`` (0, 1, 2) each
    layer's fold sends them to, grey where the layer does not fold (paper
    Fig. 14); for Real NVP by their position in the input, so that the eye can
    follow them through the layers.

    Parameters
    ----------
    model : fitted 2-D estimator
        A :class:`~radref.user.estimators.RadFlow` or ``RealNVPFlow``.
    data : ndarray, shape (n, 2), optional
        Points to draw (the first ``n_samples``) and push through the layers;
        without them the model's samples are pushed through.
    n_samples : int
        How many samples (and data points) to draw.
    random_state : int
        Seed of the samples.
    title : str, optional
        Put before the model's description in the figure's title.

    Returns
    -------
    matplotlib.figure.Figure
        The data-space panels share one frame, taken from the data if given
        (what the model should match), else from the samples; the layer panels
        share another, which holds every layer's points, so that a layer's
        input and output, and the output of one layer and the input of the
        next (the same points), are drawn at one scale.
    """
    plt = _pyplot()
    config = model.config_
    samples = model.sample(n_samples, random_state=random_state)
    points = samples if data is None else data[:n_samples]
    xlim, ylim = not_flatter_than(*view_box(points))
    trajectory = flow_trajectory(points, model.params_, config)
    layer_box = not_flatter_than(*union_box(view_box(z, margin=0.05) for z in trajectory[0]))
    panels = 3 if data is not None else 2
    # sizes (inches) from the frames' shapes, so that equal axes fill their cells
    overview_height = 3.0 * _height_over_width(xlim, ylim)
    layer_height = 2.2 * _height_over_width(*layer_box)
    width = max(panels * 3.6 + 1.0, config.n_layers * 2.75 + 0.3)
    top_height, bottom_height = overview_height + 1.5, 2 * layer_height + 2.0
    fig = plt.figure(figsize=(width, top_height + bottom_height), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[top_height, bottom_height])
    # the data-space panels side by side in the middle of the row: empty
    # columns either side take the width the layers' row needs beyond theirs
    spare = max(width - panels * 3.6 - 1.0, 0.02) / 2.0
    grid = top.add_gridspec(1, panels + 2, width_ratios=[spare] + [3.6] * panels + [spare + 1.0])
    overview = [top.add_subplot(grid[0, i + 1]) for i in range(panels)]
    _plot_overview(top, overview, model, samples, data, xlim, ylim, n_samples)
    _plot_layers(bottom, model, points, trajectory, layer_box)
    top.suptitle(f"{title + ': ' if title else ''}{model.display_name()} flow, "
                 f"{config.n_layers} coupling layers, "
                 f"{model.n_parameters()} parameters, {model.n_steps_} training steps")
    return fig


def _plot_overview(fig, axes, model, samples, data, xlim, ylim, n_samples):
    if data is not None:
        shown = data[:n_samples]
        axes[0].scatter(shown[:, 0], shown[:, 1], s=1, alpha=0.5, color="k", linewidths=0)
        axes[0].set_title(f"data ({len(shown)} points{_outside_note(shown, xlim, ylim)})\n"
                          f"mean log-likelihood {model.score(data):+.3f} nats", fontsize=9)
    samples_ax, density_ax = axes[-2:]
    samples_ax.scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.5, color="C0", linewidths=0)
    samples_ax.set_title(f"{len(samples)} samples{_outside_note(samples, xlim, ylim)}",
                         fontsize=9)
    xs, ys, density = density_grid(model.score_samples, xlim, ylim)
    top = float(np.quantile(density, 0.999))  # as in demo_figure: a spike does not set the scale
    mesh = density_ax.pcolormesh(xs, ys, density, shading="auto", cmap="viridis", vmin=0.0,
                                 vmax=top)
    density_ax.set_title("density p(x)", fontsize=9)
    for ax in axes:
        frame(ax, xlim, ylim)
    # the colour bar inside the row's right margin, as tall as the density's
    # panel (in the panel's own cell it made that panel the smaller one)
    colorbar = fig.colorbar(mesh, cax=density_ax.inset_axes([1.05, 0.0, 0.05, 1.0]),
                            extend="max" if float(density.max()) > top else "neither")
    colorbar.set_label("p(x)", fontsize=8)
    colorbar.ax.tick_params(labelsize=7)


def _plot_layers(fig, model, points, trajectory, box):
    config = model.config_
    zs, folded, k = trajectory
    axes = fig.subplots(2, config.n_layers, squeeze=False)
    size = float(np.clip(2500.0 / len(points), 0.6, 4.0))  # fewer points, larger dots
    discrete = layer_kind(config.kind).HAS_DISCRETE_LATENTS  # colour the branches k
    if discrete:
        fig.suptitle("folding of each layer: red / green / blue = branch k = 0 / 1 / 2 where "
                     "the layer folds the coordinate it transforms, grey = where it is "
                     "invertible", fontsize=10)
    else:
        fig.suptitle("each layer's input and output (colour: the point's position in the "
                     "first layer's input)", fontsize=10)
        order = np.argsort(np.argsort(points[:, 0] + points[:, 1]))
        position = order / max(len(points) - 1, 1)
    for layer in range(config.n_layers):
        # the first layer's input is the data space; after it, the latent one
        names_in = X_NAMES if layer == 0 else Z_NAMES
        if discrete:
            column = int(np.atleast_1d(split(config.dim, layer)[1])[0])
            in_fold = folded[layer][:, column]
            colours = np.where(in_fold, BRANCH_COLOURS[np.maximum(k[:, layer, column], 0)],
                               UNFOLDED_COLOUR)
            where = f" (folds {names_in[column]})"
        else:
            colours, where = None, ""
        for row, (z, label, names) in enumerate(((zs[layer], "input", names_in),
                                                 (zs[layer + 1], "output", Z_NAMES))):
            ax = axes[row, layer]
            if colours is None:
                ax.scatter(z[:, 0], z[:, 1], s=size, c=position, cmap="viridis", linewidths=0)
            else:
                ax.scatter(z[:, 0], z[:, 1], s=size, c=colours, linewidths=0)
            ax.set_title(f"layer {layer + 1} {label}{where if row == 0 else ''}", fontsize=8)
            frame(ax, *box, names=names)
