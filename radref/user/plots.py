"""Figures (matplotlib is an optional extra: ``pip install radref[plot]``)."""
import numpy as np


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("figures need matplotlib: pip install 'radref[plot]'") from None
    return plt


def bounding_box(data, margin=0.15):
    """``(xlim, ylim)`` holding ``data`` with a relative ``margin`` on each side."""
    low, high = data.min(axis=0), data.max(axis=0)
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


def plot_data_samples_density(path, data, models, random_state=0, n_samples=5000):
    """One row per model: the data, the model's samples, its density.

    Parameters
    ----------
    path : str
        PNG file to write.
    data : ndarray, shape (n, 2)
    models : dict
        Title -> fitted 2-D estimator.
    """
    plt = _pyplot()
    xlim, ylim = bounding_box(data)
    fig, axes = plt.subplots(len(models), 3, figsize=(10, 3.3 * len(models)), squeeze=False)
    for row, (title, model) in zip(axes, models.items()):
        samples = model.sample(n_samples, random_state=random_state)
        xs, ys, density = density_grid(model.score_samples, xlim, ylim)
        row[0].scatter(data[:n_samples, 0], data[:n_samples, 1], s=1, alpha=0.4, color="k")
        row[0].set_title("data")
        row[1].scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.4, color="C0")
        row[1].set_title(f"{title}: samples")
        row[2].pcolormesh(xs, ys, density, shading="auto", cmap="viridis")
        row[2].set_title(f"{title}: density")
        for ax in row:
            ax.set_xlim(*xlim)
            ax.set_ylim(*ylim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
