"""Tests of the figures' readability (radref.user.plots), on the figure objects:
every data panel has ticks and axis labels, panels that show the same space have
one frame (identical limits), panels of a row or grid have boxes of one size, and
the demo's densities share one colour scale.  Tiny models: the figures' layout,
not the models' quality, is under test."""
import re

import numpy as np
import pytest
from helpers import validation_module

pytest.importorskip("matplotlib")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import QuadMesh  # noqa: E402

from radref import RadFlow, RealNVPFlow, datasets  # noqa: E402
from radref.user import plots  # noqa: E402

N_LAYERS = 6


@pytest.fixture(scope="module")
def moons():
    return datasets.train_test_split_samples("two_moons", 500, 400, random_state=0)


@pytest.fixture(scope="module")
def models(moons):
    X_train, _ = moons
    return {"Rad": RadFlow(n_layers=N_LAYERS, hidden=4, steps=30, progress=False,
                           random_state=0).fit(X_train),
            "Real NVP": RealNVPFlow(n_layers=N_LAYERS, hidden=4, steps=30, progress=False,
                                    random_state=0).fit(X_train)}


@pytest.fixture
def drawn():
    """Close the figures a test makes, and lay each out before it is read
    (positions and tick labels are final only after a draw)."""
    figures = []

    def draw(fig):
        figures.append(fig)
        fig.canvas.draw()
        return fig
    yield draw
    for fig in figures:
        plt.close(fig)


def all_axes(fig):
    """Every axes of ``fig`` and of its subfigures, once each."""
    found = list(fig.axes)
    for sub in fig.subfigs:
        found += [ax for ax in all_axes(sub) if ax not in found]
    return found


def colorbar_axes(fig):
    return [child for ax in all_axes(fig) for child in [ax, *ax.child_axes]
            if hasattr(child, "_colorbar")]


def data_axes(fig):
    """The panels that draw points or densities (not colour bars, not panels
    switched off)."""
    bars = colorbar_axes(fig)
    return [ax for ax in all_axes(fig) if ax not in bars and ax.axison]


def assert_readable(ax):
    """Ticks with labels inside the limits on both axes, and axis labels."""
    for axis, lim, name in ((ax.xaxis, ax.get_xlim(), "x"), (ax.yaxis, ax.get_ylim(), "y")):
        low, high = min(lim), max(lim)
        labels = [tick.get_text() for tick in axis.get_ticklabels()
                  if low <= tick.get_position()[0 if name == "x" else 1] <= high
                  and tick.get_visible() and tick.get_text()]
        assert len(labels) >= 2, (ax.get_title(), name, labels)
        assert axis.get_label_text(), (ax.get_title(), name)


def assert_beside(bar, panel):
    """The colour bar ``bar`` is right of ``panel`` and as tall (less the
    arrow of an extended colour bar, which matplotlib draws within its box)."""
    bar, panel = bar.get_position(), panel.get_position()
    assert bar.x0 > panel.x1
    assert bar.y0 >= panel.y0 - 1e-9 and bar.y1 <= panel.y1 + 1e-9
    assert bar.height >= 0.9 * panel.height


def box_sizes(axes):
    return np.array([ax.get_position().bounds[2:] for ax in axes])


def titled(axes, start):
    return [ax for ax in axes if ax.get_title().startswith(start)]


def test_demo_figure(models, moons, drawn):
    _, X_test = moons
    scores = {name: model.score(X_test) for name, model in models.items()}
    fig = drawn(plots.demo_figure(X_test, models, scores, best=-1.0, n_samples=300,
                                  log_density=lambda X: datasets.log_density("two_moons", X)))
    panels = data_axes(fig)
    assert len(panels) == 6  # data and true density, samples and density of each model
    for ax in panels:
        assert_readable(ax)
        assert ax.get_xlabel() == "$x_1$" and ax.get_ylabel() == "$x_2$"
    # one frame for all: every panel shows the data space
    assert len({(ax.get_xlim(), ax.get_ylim()) for ax in panels}) == 1
    assert np.allclose(box_sizes(panels), box_sizes(panels)[0], rtol=1e-6)
    # the densities on one colour scale, from 0, with one colour bar
    meshes = [c for ax in panels for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(meshes) == 3
    assert len({(m.norm.vmin, m.norm.vmax) for m in meshes}) == 1 and meshes[0].norm.vmin == 0
    bars = colorbar_axes(fig)
    assert len(bars) == 1 and bars[0]._colorbar.mappable.norm.vmax == meshes[0].norm.vmax
    assert bars[0].get_ylabel()
    # the colour bar beside the density panels, as tall as them
    assert_beside(bars[0], titled(panels, "Real NVP density")[0])


def test_demo_samples_outside_the_frame_are_counted(models, moons, drawn):
    _, X_test = moons
    scores = {name: model.score(X_test) for name, model in models.items()}
    # a frame around a corner of the data: most samples fall outside it
    fig = drawn(plots.demo_figure(X_test[X_test[:, 0] < 0], models, scores, n_samples=300))
    titles = [ax.get_title() for ax in data_axes(fig)]
    assert any(title.startswith("Rad samples") and "outside the frame" in title
               for title in titles), titles


@pytest.mark.parametrize("name", ["Rad", "Real NVP"])
@pytest.mark.parametrize("with_data", [True, False])
def test_model_figure(models, moons, drawn, name, with_data):
    _, X_test = moons
    model = models[name]
    fig = drawn(plots.model_figure(model, data=X_test if with_data else None, n_samples=300,
                                   title="m.npz"))
    panels = data_axes(fig)
    for ax in panels:
        assert_readable(ax)
    layers = titled(panels, "layer ")
    overview = [ax for ax in panels if ax not in layers]
    assert len(layers) == 2 * N_LAYERS
    assert len(overview) == (3 if with_data else 2)
    assert titled(overview, "density") and titled(overview, "300 samples")
    # the data, samples and density: one frame, boxes of one size
    assert len({(ax.get_xlim(), ax.get_ylim()) for ax in overview}) == 1
    assert np.allclose(box_sizes(overview), box_sizes(overview)[0], rtol=1e-6)
    # the layers' inputs and outputs: one frame (a layer's output is the next
    # one's input), boxes of one size
    assert len({(ax.get_xlim(), ax.get_ylim()) for ax in layers}) == 1
    assert np.allclose(box_sizes(layers), box_sizes(layers)[0], rtol=1e-6)
    # the first layer's input is in the data space, everything after in z
    first = titled(layers, "layer 1 input")[0]
    assert (first.get_xlabel(), first.get_ylabel()) == ("$x_1$", "$x_2$")
    for ax in layers:
        if ax is not first:
            assert (ax.get_xlabel(), ax.get_ylabel()) == ("$z_1$", "$z_2$"), ax.get_title()
    # the density's colour bar: labelled, beside the density, as tall as it
    density = titled(overview, "density")[0]
    bars = colorbar_axes(fig)
    assert len(bars) == 1 and bars[0].get_ylabel() == "p(x)"
    assert_beside(bars[0], density)
    if name == "Rad":  # the folded coordinate named as the axes name it
        assert first.get_title() == "layer 1 input (folds $x_2$)"
        assert titled(layers, "layer 2 input")[0].get_title() == "layer 2 input (folds $z_1$)"


def test_model_figure_frames_the_bulk_of_heavy_tailed_samples(models, drawn, monkeypatch):
    # a briefly trained flow can put several per cent of its samples hundreds of
    # units away; the frame holds the bulk, and the title counts the others
    model = models["Rad"]
    far = np.random.default_rng(0).normal(size=(300, 2))
    far[:15] *= 1000.0
    monkeypatch.setattr(model, "sample", lambda n, random_state=None: far[:n])
    fig = drawn(plots.model_figure(model, n_samples=300))
    samples = titled(data_axes(fig), "300 samples")[0]
    # (the 15 far samples and the few of the normal ones beyond its fences)
    outside = int(re.fullmatch(r"300 samples, (\d+) outside the frame", samples.get_title())[1])
    assert 15 <= outside <= 20
    xlim, ylim = samples.get_xlim(), samples.get_ylim()
    assert -10 < xlim[0] < -2 and 2 < xlim[1] < 10 and -10 < ylim[0] < -2 and 2 < ylim[1] < 10


def test_view_box():
    rng = np.random.default_rng(1)
    ring = datasets.sample("ring", 4000, random_state=1)
    xlim, ylim = plots.view_box(ring, margin=0.0, trim=0.0)
    # the data's short tails: the fences do not cut them
    assert xlim == pytest.approx((ring[:, 0].min(), ring[:, 0].max()))
    assert ylim == pytest.approx((ring[:, 1].min(), ring[:, 1].max()))
    assert plots.n_outside(ring, xlim, ylim) == 0
    # far points and rows that are not finite are left out
    points = rng.normal(size=(1000, 2))
    points[:30, 0] = 1e6
    points[30:40] = np.inf
    points[40:50] = np.nan
    xlim, ylim = plots.view_box(points)
    assert xlim[1] < 10 and plots.n_outside(points, xlim, ylim) >= 50
    # all points equal: a unit span, not identical limits (which matplotlib refuses)
    xlim, ylim = plots.view_box(np.ones((5, 2)))
    assert xlim[1] > xlim[0] and ylim[1] > ylim[0]


def test_boxes():
    assert plots.union_box([((0, 1), (0, 2)), ((-1, 0.5), (1, 3))]) == ((-1, 1), (0, 3))
    assert plots.square_box((0, 4), (0, 1)) == ((0, 4), (-1.5, 2.5))
    assert plots.not_flatter_than((0, 10), (0, 1), ratio=0.5) == ((0, 10), (-2.0, 3.0))
    assert plots.not_flatter_than((0, 10), (0, 8), ratio=0.5) == ((0, 10), (0, 8))


# ------------------------------------------- validation/paper_figures.py

@pytest.fixture(scope="module")
def paper_runs():
    """``runs`` as paper_figures.py loads them, from tiny flows trained briefly
    on every problem (the figures' layout is under test)."""
    runs = {}
    for problem in datasets.PROBLEMS:
        X_train, X_test = datasets.train_test_split_samples(problem, 400, 300, random_state=0)
        for model, cls in (("rad", RadFlow), ("realnvp", RealNVPFlow)):
            flow = cls(n_layers=N_LAYERS, hidden=4, steps=10, progress=False,
                       random_state=0).fit(X_train)
            runs[problem, model] = (flow, X_test, {"val_step": [10, 20],
                                                   "val_loglik": [-3.0, -2.5]})
    return runs


def test_paper_figures(paper_runs, drawn, monkeypatch):
    figures = validation_module("paper_figures")
    # (the learning curves' "best achievable" line: not under test, and slow)
    monkeypatch.setattr(datasets, "negative_entropy", lambda problem, n: (-1.0, 0.0))
    samples = drawn(figures.samples_figure(plt, paper_runs, n=300))
    panels = data_axes(samples)
    assert len(panels) == 12
    for ax in panels:
        assert_readable(ax)
    # both models on a problem in its frame; every panel of one size
    for col in range(6):
        assert panels[col].get_xlim() == panels[6 + col].get_xlim()
        assert panels[col].get_ylim() == panels[6 + col].get_ylim()
    assert np.allclose(box_sizes(panels), box_sizes(panels)[0], rtol=1e-6)
    fig17, fig12 = figures.gaussianization_figures(plt, paper_runs)
    for fig in (drawn(fig17), drawn(fig12)):
        panels = data_axes(fig)
        for ax in panels:
            assert_readable(ax)
            assert (ax.get_xlim(), ax.get_ylim()) == ((-4, 4), (-4, 4))
        assert np.allclose(box_sizes(panels), box_sizes(panels)[0], rtol=1e-6)
    # the layers: every panel in one frame, of one size, x then z
    for fig in (drawn(figures.inference_figure(plt, paper_runs, n=300)),
                drawn(figures.folding_figure(plt, paper_runs, "spiral", n=300))):
        panels = data_axes(fig)
        assert len(panels) in (2 * (N_LAYERS + 1), 2 * N_LAYERS)
        for ax in panels:
            assert_readable(ax)
        assert len({(ax.get_xlim(), ax.get_ylim()) for ax in panels}) == 1
        assert np.allclose(box_sizes(panels), box_sizes(panels)[0], rtol=1e-6)
        assert {ax.get_xlabel() for ax in panels} == {"$x_1$", "$z_1$"}
    curves = drawn(figures.learning_curves_figure(plt, paper_runs))
    for ax in data_axes(curves):
        assert_readable(ax)
        assert ax.get_legend() is None  # one legend, outside the panels
    assert len(curves.legends) == 1


# ----------------------------------------------- validation/study.py's figure

def assert_inside_figure(fig, texts):
    """Every non-empty text of ``texts`` lies within the figure (a title or
    label wider than the figure is cut off in the PNG)."""
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    for text in texts:
        if text.get_text() and text.get_visible():
            extent = text.get_window_extent(renderer)
            assert (extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1
                    and extent.y0 >= box.y0 - 1 and extent.y1 <= box.y1 + 1), text.get_text()


def test_paired_differences_figure(drawn):
    import json
    import os
    study = validation_module("study")
    with open(os.path.join(os.path.dirname(study.__file__), "results", "study",
                           "study.json")) as f:
        committed = json.load(f)
    fig = drawn(study.paired_figure(committed))
    panels = data_axes(fig)
    assert len(panels) >= 5
    # one x axis for all the comparisons, its values under every panel
    assert len({ax.get_xlim() for ax in panels}) == 1
    for ax in panels:
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_visible()]
        assert "0" in labels and len(labels) >= 5, ax.get_title()
        assert ax.get_yticklabels()
    assert panels[-1].get_xlabel()
    assert_inside_figure(fig, [ax.title for ax in panels] + [panels[-1].xaxis.label]
                         + [t for ax in panels for t in ax.get_yticklabels()])
    # tick labels of one axis do not overlap
    renderer = fig.canvas.get_renderer()
    extents = sorted((t.get_window_extent(renderer) for t in panels[0].get_xticklabels()
                      if t.get_text()), key=lambda e: e.x0)
    assert all(a.x1 <= b.x0 for a, b in zip(extents, extents[1:]))


# ------------------------------------- validation/benchmark.py's scaling figure

def test_performance_scaling_figure(drawn):
    import json
    import os
    benchmark = validation_module("benchmark")
    with open(os.path.join(os.path.dirname(benchmark.__file__), "results",
                           "benchmark.json")) as f:
        committed = json.load(f)
    fig = drawn(benchmark.scaling_figure(committed))
    renderer = fig.canvas.get_renderer()
    panels = data_axes(fig)
    assert len(panels) == 6
    for ax in panels:
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
        # the y tick labels (log axis): at least two, none overlapping
        labels = sorted((t.get_window_extent(renderer) for t in
                         ax.yaxis.get_ticklabels(minor=False) + ax.yaxis.get_ticklabels(minor=True)
                         if t.get_text() and t.get_visible()
                         and ax.get_ylim()[0] <= t.get_position()[1] <= ax.get_ylim()[1]),
                        key=lambda e: e.y0)
        assert len(labels) >= 2, ax.get_title()
        assert all(a.y1 <= b.y0 for a, b in zip(labels, labels[1:])), ax.get_title()
