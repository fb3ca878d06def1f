"""Tests of slp.plotting: colours of rendered heatmaps, grid layout, atomic saving."""

from __future__ import annotations

import numpy as np
import pytest
from experiment_helpers import load_script
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from slp import plotting


def render_pixels(draw, *, size_px: int = 40) -> np.ndarray:
    """Renders `draw(ax)` into a borderless square figure; returns RGB uint8 (H, W, 3)."""
    fig = Figure(figsize=(1, 1), dpi=size_px)
    ax = fig.add_axes((0, 0, 1, 1))
    draw(ax)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3]


def test_heatmap_draws_red_positive_blue_negative_white_zero():
    values = np.array([[2.0, -2.0], [0.0, 1.0]])
    px = render_pixels(lambda ax: plotting.heatmap(ax, values))
    # Centres of the four cells of a 40x40 rendering.
    np.testing.assert_array_equal(px[10, 10], [255, 0, 0])  # +max: pure red
    np.testing.assert_array_equal(px[10, 30], [0, 0, 255])  # -max: pure blue
    np.testing.assert_array_equal(px[30, 10], [255, 255, 255])  # 0: white
    # +max/2 is halfway from white to red on the symmetric scale.
    r, g, b = px[30, 30].astype(int)
    assert r == 255 and abs(g - 128) <= 2 and abs(b - 128) <= 2


def test_heatmap_scale_is_symmetric_per_map():
    fig = Figure()
    a, b = fig.subplots(1, 2)
    im1 = plotting.heatmap(a, np.array([[0.5, -0.1]]))
    im2 = plotting.heatmap(b, np.array([[3.0, -7.0]]))
    assert im1.get_clim() == (-0.5, 0.5)
    assert im2.get_clim() == (-7.0, 7.0)
    # An all-zero map does not fail; it is hatched and marked "undefined", not left blank
    # (tests/experiments/test_figures.py checks the mark in the experiments' figures).
    px = render_pixels(lambda ax: plotting.heatmap(ax, np.zeros((3, 3))), size_px=80)
    assert (px[6:-6, 6:-6] != 255).any()  # inside the axes frame: not a white panel


def test_heatmap_sums_channels_and_ignores_nonfinite_for_the_scale():
    values = np.zeros((2, 2, 3))
    values[0, 0] = [1.0, 1.0, -4.0]  # sum -2
    values[1, 1] = [0.5, 0.5, 0.0]  # sum 1
    np.testing.assert_array_equal(plotting.to_2d(values), [[-2.0, 0.0], [0.0, 1.0]])
    assert plotting.symmetric_limit(np.array([np.nan, -3.0, np.inf])) == 3.0
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\)"):
        plotting.to_2d(np.zeros((1, 2, 2, 1)))


def test_heatmap_refuses_a_channels_first_map_or_a_stack_of_maps():
    # (C, H, W), the torch layout, and (N, H, W), a few maps stacked, would be drawn as C
    # (or N) rows of the map summed over its columns: a strip of the wrong map.
    ax = Figure().add_subplot()
    for shape in [(3, 16, 16), (1, 28, 28), (2, 28, 28), (4, 84, 84)]:
        with pytest.raises(ValueError, match=r"channels first \(C, H, W\).*np.moveaxis"):
            plotting.heatmap(ax, np.ones(shape))
    # channels last, up to the 4 frames of an Atari state, and tall maps of any width
    for shape in [(16, 16, 3), (84, 84, 4), (28, 28, 1), (5, 7, 6), (2, 3, 4)]:
        plotting.heatmap(ax, np.ones(shape))


def test_heatmap_draws_non_finite_entries_black_and_counts_them():
    """A NaN or inf entry is not drawn as a 0 (white): black, with a count at the map's foot;
    a map with no finite entry stays a hatched white "undefined" panel, without the count."""
    values = np.array([[2.0, np.nan], [0.0, -np.inf]])
    px = render_pixels(lambda ax: plotting.heatmap(ax, values))
    np.testing.assert_array_equal(px[10, 30], [0, 0, 0])  # NaN: black
    np.testing.assert_array_equal(px[10, 10], [255, 0, 0])  # the finite ones as before
    np.testing.assert_array_equal(px[30, 10], [255, 255, 255])
    fig = Figure()
    a, b = fig.subplots(1, 2)
    plotting.heatmap(a, values)
    plotting.heatmap(b, np.full((2, 2), np.nan))
    assert [t.get_text() for t in a.texts if t.get_gid() == "not-finite"] == [
        "2 not finite (black)"
    ]
    assert not [t for t in b.texts if t.get_gid() == "not-finite"]
    assert [t.get_gid() for t in b.texts] == [plotting.UNDEFINED_MARK]
    px = render_pixels(lambda ax: plotting.heatmap(ax, np.full((3, 3), np.nan)), size_px=80)
    assert (px[6:-6, 6:-6] == 255).all(axis=-1).mean() > 0.5  # white behind the hatching


def test_show_image_is_grayscale_on_unit_range():
    img = np.array([[0.0, 1.0], [0.5, 1.0]])[..., None]
    px = render_pixels(lambda ax: plotting.show_image(ax, img))
    np.testing.assert_array_equal(px[10, 10], [0, 0, 0])
    np.testing.assert_array_equal(px[10, 30], [255, 255, 255])
    assert abs(int(px[30, 10, 0]) - 128) <= 1


def test_grid_figure_layout_and_titles():
    rng = np.random.default_rng(0)
    panels = [[rng.random((5, 5)), rng.normal(size=(5, 5, 1)), -rng.random((5, 5))]] * 2
    fig = plotting.grid_figure(
        panels, col_titles=["input", "a", "b"], row_titles=["r0", "r1"], title="T"
    )
    *axes, key = fig.get_axes()
    assert len(axes) == 6
    assert key.get_label() == plotting.KEY_AXES_LABEL
    assert [ax.get_title() for ax in axes[:3]] == ["input", "a", "b"]
    assert [ax.get_title() for ax in axes[3:]] == ["", "", ""]
    assert axes[0].get_ylabel() == "r0" and axes[3].get_ylabel() == "r1"
    # The input column is grayscale on [0, 1]; heatmaps are symmetric per panel.
    assert axes[0].images[0].get_clim() == (0.0, 1.0)
    lim = np.abs(panels[0][2]).max()
    assert axes[2].images[0].get_clim() == (-lim, lim)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"panels": [[np.zeros((2, 2))], []], "col_titles": ["a"]}, "every row"),
        ({"panels": [[np.zeros((2, 2))]], "col_titles": ["a", "b"]}, "column titles"),
        ({"panels": [[np.zeros((2, 2))]], "col_titles": ["a"], "row_titles": []}, "row titles"),
        ({"panels": [[np.zeros((2, 2))]], "col_titles": ["a"], "image_columns": [3]}, "range"),
        ({"panels": [], "col_titles": []}, "at least one"),
    ],
)
def test_grid_figure_rejects_bad_layouts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plotting.grid_figure(**kwargs)


def test_save_figure_writes_a_png_atomically(tmp_path):
    fig = plotting.grid_figure([[np.zeros((4, 4)), np.eye(4)]], col_titles=["x", "y"])
    path = plotting.save_figure(fig, tmp_path / "sub" / "fig.png")
    assert [p.name for p in path.parent.iterdir()] == ["fig.png"]
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 50 and im.size[1] > 50


def test_grid_figure_has_a_colour_key_in_units_of_each_maps_maximum():
    rng = np.random.default_rng(1)
    panels = [[rng.random((6, 6)), rng.normal(size=(6, 6)) * 10.0, rng.normal(size=(6, 6))]]
    fig = plotting.grid_figure(panels, col_titles=["input", "a", "b"])
    bars = [ax for ax in fig.get_axes() if ax.get_label() == plotting.KEY_AXES_LABEL]
    assert len(bars) == 1
    image_axes = [ax for ax in fig.get_axes() if ax.images]
    assert len(image_axes) == 3
    # Every map has its own scale, so the key runs over [-1, 1] of a map's own maximum.
    assert bars[0].get_xlim() == (-1.0, 1.0)
    labels = [t.get_text() for t in bars[0].get_xticklabels()]
    assert labels == ["\u2212max |map|", "0", "+max |map|"]
    assert "own max" in bars[0].get_title()
    # The key sits below the panels.
    assert bars[0].get_position().y1 < min(ax.get_position().y0 for ax in image_axes)
    no_key = plotting.grid_figure(panels, col_titles=["i", "a", "b"], key_label=None)
    assert not _key_axes(no_key) and len(no_key.get_axes()) == 3


def test_colour_key_renders_blue_white_red_over_a_symmetric_range(tmp_path):
    fig = Figure(figsize=(4, 2), dpi=100)
    bar = plotting.colour_key(fig, limit=0.25, label="Insens")
    assert bar.mappable.get_clim() == (-0.25, 0.25)
    assert bar.mappable.get_cmap() is plotting.HEATMAP_CMAP
    np.testing.assert_allclose(bar.get_ticks(), [-0.25, 0.0, 0.25])
    assert [t.get_text() for t in bar.ax.get_xticklabels()] == ["-0.25", "0", "0.25"]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    px = np.asarray(canvas.buffer_rgba())[..., :3]
    x0, y0, x1, y1 = bar.ax.get_window_extent().extents
    row = int(round(px.shape[0] - (y0 + y1) / 2))  # display y runs upwards, pixel rows down
    left, mid, right = (px[row, int(round(x))] for x in (x0 + 3, (x0 + x1) / 2, x1 - 3))
    # 3 pixels in from each end the linear scale has moved by ~1% of its range.
    np.testing.assert_allclose(left, [0, 0, 255], atol=8)  # -L: blue
    np.testing.assert_allclose(right, [255, 0, 0], atol=8)  # +L: red
    assert (mid >= 250).all()  # 0: white


def test_colour_bar_with_a_shared_limit_and_bad_limits():
    fig = Figure()
    cax = fig.add_axes((0.8, 0.1, 0.05, 0.8))
    bar = plotting.colour_bar(fig, cax, limit=1.6e-4)
    assert bar.mappable.get_clim() == (-1.6e-4, 1.6e-4)
    assert [t.get_text() for t in cax.get_yticklabels()] == ["-1.6e-04", "0", "1.6e-04"]
    with pytest.raises(ValueError, match="limit must be > 0"):
        plotting.colour_bar(fig, cax, limit=0.0)


# --- the experiments' figures of maps ------------------------------------------------------


def _key_axes(fig: Figure) -> list:
    return [ax for ax in fig.get_axes() if ax.get_label() == plotting.KEY_AXES_LABEL]


def test_cifar10_figure_has_a_noisy_row_under_each_clean_row_and_a_key():
    script = load_script("cifar10.py")
    rng = np.random.default_rng(0)
    x, x_noisy = rng.random((5, 8, 8, 3)), rng.random((5, 8, 8, 3))
    methods = ["insens", "gradient"]
    clean = {m: rng.normal(size=(5, 8, 8, 3)) for m in methods}
    noisy = {m: rng.normal(size=(5, 8, 8, 3)) for m in methods}
    labels = np.array([0, 1, 2, 3, 4])
    fig = script.figure6(
        x,
        x_noisy,
        labels,
        [0, 1],
        [1, 9],
        clean,
        noisy,
        methods,
        positions=[1, 3],
        sigma=0.1,
        title="t",
    )
    panels = [ax for ax in fig.get_axes() if ax.images]
    assert len(panels) == 2 * 2 * 3  # 2 images x (clean, noisy) rows x (input + 2 maps)
    labels = [ax.get_ylabel() for ax in panels[::3]]
    assert labels == [
        "automobile, clean\npred airplane",
        "noise sigma 0.1\npred automobile",
        "cat, clean\npred automobile",
        "noise sigma 0.1\npred truck",
    ]
    # The noisy row shows the noisy input and the maps of the noisy input.
    np.testing.assert_array_equal(panels[3].images[0].get_array(), x_noisy[1])
    np.testing.assert_allclose(panels[5].images[0].get_array(), noisy["gradient"][1].sum(-1))
    (key,) = _key_axes(fig)
    assert "noisy row" in key.get_title()


def test_pong_figure_has_a_key_and_explains_the_insens_row():
    script = load_script("pong.py")
    rng = np.random.default_rng(0)
    maps = {"insens": rng.normal(size=(12, 12, 4)), "gradient": rng.normal(size=(12, 12, 4))}
    fig = script.draw(rng.random((12, 12, 4)), maps, title="t")
    (key,) = _key_axes(fig)
    assert key.get_xlim() == (-1.0, 1.0)
    row_labels = [ax.get_ylabel() for ax in fig.get_axes() if ax.get_ylabel()]
    assert any("stride 4" in label for label in row_labels if label.startswith("insens"))


def test_encodings_figure_has_a_key():
    script = load_script("encodings.py")
    rng = np.random.default_rng(0)
    encoded = {e: rng.random((2, 6, 6, 1)) for e in script.ENCODINGS}
    maps = {e: {"insens": rng.normal(size=(2, 6, 6, 1))} for e in script.ENCODINGS}
    accuracies = dict.fromkeys(script.ENCODINGS, 0.9)
    fig = script.maps_figure(None, encoded, maps, ["insens"], [1], [0, 3], accuracies, "t")
    (key,) = _key_axes(fig)
    assert "'mean'" in key.get_title()
