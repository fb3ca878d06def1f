"""The experiments' figures show what they measure: every map figure has a colour key, an
undefined map is marked (never drawn as a blank panel), each layer's maps are scaled by that
layer alone, and the plots of measures carry their intervals and n.

The figures are inspected as matplotlib objects (colour-key axes, the "undefined" text,
the colour limits of every heatmap), not as pixels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from experiment_helpers import load_script
from matplotlib.figure import Figure

import slp
from slp import plotting


def key_axes(fig: Figure) -> list:
    return [ax for ax in fig.get_axes() if ax.get_label() == plotting.KEY_AXES_LABEL]


def heatmap_axes(fig: Figure) -> list:
    """Axes showing a heatmap (the blue-white-red colour map)."""
    return [ax for ax in fig.get_axes() if ax.images and ax.images[0].cmap is plotting.HEATMAP_CMAP]


def undefined_marks(ax) -> list:
    return [t for t in ax.texts if t.get_gid() == plotting.UNDEFINED_MARK]


def test_heatmap_marks_an_undefined_map_and_only_that():
    fig = Figure()
    zero, nan, fine = fig.subplots(1, 3)
    plotting.heatmap(zero, np.zeros((4, 4)))
    plotting.heatmap(nan, np.full((4, 4), np.nan))
    plotting.heatmap(fine, np.eye(4))
    assert "all 0" in undefined_marks(zero)[0].get_text()
    assert "not finite" in undefined_marks(nan)[0].get_text()
    assert undefined_marks(fine) == []
    assert plotting.undefined_reason(np.array([0.0, np.nan, 1.0])) is None


def test_cifar10_figure6_marks_undefined_deep_taylor_maps():
    script = load_script("cifar10.py")
    rng = np.random.default_rng(0)
    x, x_noisy = rng.random((3, 8, 8, 3)), rng.random((3, 8, 8, 3))
    methods = ["insens", "deep_taylor"]
    clean = {m: rng.normal(size=(3, 8, 8, 3)) for m in methods}
    noisy = {m: rng.normal(size=(3, 8, 8, 3)) for m in methods}
    clean["deep_taylor"][1] = 0.0  # target logit <= 0: Deep Taylor has nothing to show
    fig = script.figure6(
        x, x_noisy, np.arange(3), [0, 1], [0, 1], clean, noisy, methods,
        positions=[0, 1], sigma=0.1, title="t",
    )  # fmt: skip
    panels = heatmap_axes(fig)
    assert len(panels) == 2 * 2 * 2  # 2 images x (clean, noisy) x 2 methods
    marked = [k for k, ax in enumerate(panels) if undefined_marks(ax)]
    # rows: image 0 clean, image 0 noisy, image 1 clean (deep_taylor undefined), image 1 noisy
    assert marked == [5]
    assert len(key_axes(fig)) == 1


def test_grid_figures_of_maps_have_a_key():
    rng = np.random.default_rng(1)
    fig = plotting.grid_figure(
        [[rng.random((5, 5)), rng.normal(size=(5, 5)), np.zeros((5, 5))]],
        col_titles=["input", "a", "b"],
    )
    assert len(key_axes(fig)) == 1
    assert [bool(undefined_marks(ax)) for ax in heatmap_axes(fig)] == [False, True]


def test_pong_figure_has_a_key():
    script = load_script("pong.py")
    rng = np.random.default_rng(0)
    maps = {"insens": rng.normal(size=(12, 12, 4)), "gradient": np.zeros((12, 12, 4))}
    fig = script.draw(rng.random((12, 12, 4)), maps, title="t")
    assert len(key_axes(fig)) == 1
    assert sum(bool(undefined_marks(ax)) for ax in heatmap_axes(fig)) == 5  # 4 frames + sum


def test_layers_figure_scales_each_layer_by_itself_with_a_key_per_layer():
    """mnist_noise_layers.png: a dense map 1000x larger than conv1's must not set conv1's
    colour scale (it did when a row shared one scale)."""
    script = load_script("mnist_noise.py")
    rng = np.random.default_rng(2)
    scales = (1e-3, 1e-2, 1.0)  # conv1, conv2, dense

    def by_layer(x):
        maps = tuple(jnp.asarray(s * rng.normal(size=(28, 28, 1)), x.dtype) for s in scales)
        return slp.LayerInsens(maps, tuple(jnp.asarray(1) for _ in scales))

    images = np.zeros((3, 28, 28, 1), np.float32)
    images[:, 10:18, 12:16] = 1.0
    keys = jax.random.split(jax.random.key(0), 3)
    fig, cols, _ = script.layers_figure(
        lambda x: jnp.zeros(10), by_layer, images, np.zeros(3, int), keys,
        examples=[0], sigma=1.0, batch_size=4,
    )  # fmt: skip
    assert cols == ["input", "conv1", "conv2", "dense", "total"]
    panels = heatmap_axes(fig)
    n_rows = len(script.FIGURE_CONDITIONS)
    assert len(panels) == n_rows * 4
    limits = np.array([ax.images[0].get_clim()[1] for ax in panels]).reshape(n_rows, 4)
    # one limit per column, shared down the column
    assert np.allclose(limits, limits[:1])
    # conv1's limit is conv1's own largest |value|, three orders below the dense layer's
    assert limits[0, 0] < 1e-2 * limits[0, 2]
    assert len(key_axes(fig)) == 4


@pytest.fixture
def evaluation_result():
    """A results dict of lab.evaluation's shape, for two methods and one control."""

    def iv(mean, n=30):
        return {"mean": mean, "ci95": [mean - 0.05, mean + 0.05], "n_images": n, "n_seeds": 2}

    metric = {
        "higher_is_better": True,
        "description": "d",
        "methods": {"insens": iv(0.6), "gradient": iv(0.4)},
        "controls": {"random": iv(0.2)},
        "top_group": {"best": "insens", "members": ["insens"], "n_images": 30},
    }
    return {
        "seeds": [0, 1],
        "methods": {"insens": [], "gradient": []},
        "metrics": {"Robustness-bordered-1": metric, "StateChange-noise": metric},
        "sweep": {
            "variants": ["bordered"],
            "sigmas": [1.0],
            "names": {"bordered": ["Robustness-bordered-1"]},
        },
        "config": {"draws": 3},
    }


def test_ranking_and_sweep_figures_show_intervals_and_n(evaluation_result):
    from lab import evaluation_report as report

    fig = report.ranking_figure(evaluation_result)
    for ax in fig.get_axes()[:2]:
        assert "n = 30 images × 2 seeds" in ax.get_title()
        # an error bar per method: the interval
        assert sum(len(c.get_segments()) for c in ax.collections if hasattr(c, "get_segments")) >= 2
    fig = report.sweep_figure(evaluation_result)
    (ax,) = [a for a in fig.get_axes() if a.get_title()]
    assert "n = 30 images × 2 seeds, 3 draws each" in ax.get_title()
    legend = ax.get_legend()
    # the legend sits outside the axes (anchored right of it), covering no data
    assert legend is not None and legend.get_bbox_to_anchor().x0 >= ax.get_window_extent().x1


def test_randomisation_figure_marks_points_from_fewer_images():
    """Deep Taylor is defined on few images after randomisation: its points are hollow and
    carry their n; points from every image are filled; every point has an interval."""
    from lab import analysis

    def summary(mean, n, undefined=0):
        return {"mean": mean, "std": 0.1, "sem": 0.1 / n**0.5, "n": n, "n_undefined": undefined}

    steps = ["Dense_1", "Conv_0"]
    rand = {
        "insens": {s: {k: summary(0.5, 40) for k in ("spearman", "spearman_abs")} for s in steps},
        "deep_taylor": {
            s: {k: summary(0.99, 6, 34) for k in ("spearman", "spearman_abs")} for s in steps
        },
    }
    fig = analysis.randomization_figure(rand, steps, ["insens", "deep_taylor"])
    ax = fig.get_axes()[0]
    notes = [t.get_text() for t in ax.texts]
    assert notes.count("n=6") == len(steps) and "n=40" not in notes
    hollow = [
        ln for ln in ax.lines if ln.get_marker() == "o" and ln.get_markerfacecolor() == "white"
    ]
    assert len(hollow) == len(steps)  # deep_taylor's randomised points; "trained" is filled
    assert "95% interval" in fig._suptitle.get_text()


def test_curves_figure_draws_each_mean_curve_with_its_interval():
    """Deletion/insertion curves carry a 95% band over the images; the interval at each step
    is the t-interval of that step's values (checked against scipy on hand-made curves)."""
    from scipy import stats as sps

    from lab import analysis

    rng = np.random.default_rng(3)
    curves = rng.random((12, 5))
    low, high = analysis.curve_interval(curves)
    for k in range(5):
        ref = sps.t.interval(0.95, 11, loc=curves[:, k].mean(), scale=sps.sem(curves[:, k]))
        np.testing.assert_allclose([low[k], high[k]], ref, rtol=1e-12)

    def entry():
        return {
            mode: {"probability": curves.mean(0).tolist(), "probability/ci95": [low, high]}
            for mode in analysis.MODES
        }

    mean_curves = {
        "fraction": np.linspace(0, 1, 5).tolist(),
        analysis.RANDOM: entry(),
        "insens": {order: entry() for order in analysis.ORDERS},
    }
    fig = analysis.curves_figure(mean_curves, ["insens"], kind="probability", title="t")
    for ax in fig.get_axes():
        if ax.lines:  # one band per drawn curve: Insens and the random order
            assert len(ax.collections) == 2
    assert "95% interval" in fig._suptitle.get_text()
    for order in analysis.ORDERS:  # results without intervals: curves only, and it says so
        for mode in analysis.MODES:
            del mean_curves["insens"][order][mode]["probability/ci95"]
    for mode in analysis.MODES:
        del mean_curves[analysis.RANDOM][mode]["probability/ci95"]
    fig = analysis.curves_figure(mean_curves, ["insens"], kind="probability", title="t")
    assert all(not ax.collections for ax in fig.get_axes())
    assert "no intervals" in fig._suptitle.get_text()
