"""Heatmaps of attributions and grids of them (matplotlib).

Convention of the paper (Figure 4): positive values red, negative blue, zero
white, on a colour scale symmetric about zero and set per map from the map's
own largest magnitude. The colour map `HEATMAP_CMAP` runs linearly blue (0, 0, 1)
-> white (1, 1, 1) -> red (1, 0, 0) with an odd number (255) of entries, so that
0 falls on an entry that is exactly white (matplotlib's 256-entry `"bwr"` would
draw 0 faintly red).

Every figure of maps carries a colour key (`colour_key`, `colour_bar`): the colour
bar of the blue-white-red scale with its range. When each map has its own scale the
key is drawn on [-1, 1] and labelled in units of the map's own largest magnitude
("-max |map|", "0", "+max |map|"), which is what a reader needs to compare colours
within a map; when maps share a scale the key gives that scale's limits.

Figures are built with the object-oriented API (no pyplot state), so the
module works headless and inside tests; `save_figure` writes atomically.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colorbar import Colorbar
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from slp.data._files import atomic_writer
from slp.metrics import pixel_map

__all__ = [
    "HEATMAP_CMAP",
    "symmetric_limit",
    "heatmap",
    "mark_undefined",
    "undefined_reason",
    "UNDEFINED_MARK",
    "show_image",
    "canvas",
    "colour_bar",
    "colour_key",
    "grid_figure",
    "save_figure",
]

HEATMAP_CMAP = LinearSegmentedColormap.from_list(
    "slp_blue_white_red", [(0.0, 0.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0)], N=255
).with_extremes(bad="black")
"""Blue (negative) - white (zero) - red (positive); a NaN or inf entry black."""

PER_MAP_KEY_LABEL = "red positive, blue negative, white 0; each map scaled to its own max |value|"
"""Label of the colour key of a figure whose maps each have their own symmetric scale."""


_MAX_CHANNELS = 4
"""The most channels a drawn map has (RGB, RGBA, a stack of 4 Atari frames): a map with at
most that many rows and more channels is refused by `to_2d` as channels first."""


def to_2d(values: np.ndarray) -> np.ndarray:
    """A map `(H, W)` from `(H, W)`, `(H, W, 1)` or `(H, W, C)` (channels summed).

    Summing over channels keeps the signed total contribution of each pixel.

    Args:
      values: array `(H, W)` or `(H, W, C)`.

    Returns:
      float numpy array `(H, W)`.

    Raises:
      ValueError: ``values`` has neither 2 nor 3 axes, or 3 axes that read as channels first
        `(C, H, W)` or as a stack of a few maps (a first axis of at most 4 and a last one
        of more than 4): summed over its last axis it would draw a strip of the wrong map.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 3 and values.shape[0] <= _MAX_CHANNELS < values.shape[-1]:
        raise ValueError(
            f"a map of shape {values.shape} reads as channels first (C, H, W) or as a stack "
            f"of {values.shape[0]} maps; slp's maps are channels last (H, W, C) and one map "
            "is drawn at a time: pass np.moveaxis(values, 0, -1), or one map of the stack"
        )
    return pixel_map(values)


def symmetric_limit(values: np.ndarray) -> float:
    """The colour limit `L` of a map, so that it is drawn on `[-L, L]`.

    `L = max |values|` over finite entries; 1 for an all-zero (or empty) map, so
    that it is drawn white instead of failing.

    Args:
      values: any array.

    Returns:
      A positive float.

    Examples:
      >>> slp.plotting.symmetric_limit(np.array([[0.5, -2.0], [1.0, 0.0]]))
      2.0
    """
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    limit = float(np.max(np.abs(finite))) if finite.size else 0.0
    return limit if limit > 0 else 1.0


UNDEFINED_MARK = "undefined"
"""Gid (`Artist.get_gid`) of the text that `heatmap` writes on a map with nothing to show."""


def mark_undefined(ax: Axes, why: str) -> None:
    """Hatches ``ax`` and writes "undefined" and ``why`` in it (gid `UNDEFINED_MARK`).

    Args:
      ax: the axes of a map with nothing to show.
      why: the reason, written in brackets below "undefined" (e.g. `undefined_reason`'s).

    Examples:
      >>> fig, axes = slp.plotting.canvas(1, 1, cell=1.0, left=0.1, top=0.1)
      >>> slp.plotting.mark_undefined(axes[0, 0], "all 0")
      >>> (mark,) = [t for t in axes[0, 0].texts if t.get_gid() == slp.plotting.UNDEFINED_MARK]
      >>> print(mark.get_text())
      undefined
      (all 0)
    """
    ax.add_patch(
        Rectangle(
            (0, 0), 1, 1, transform=ax.transAxes, fill=False, hatch="///", ec="0.6", lw=0, zorder=2
        )
    )
    text = ax.text(
        0.5, 0.5, f"{UNDEFINED_MARK}\n({why})", transform=ax.transAxes, ha="center",
        va="center", fontsize=7, zorder=3,
        bbox={"facecolor": "white", "edgecolor": "0.6", "boxstyle": "round,pad=0.2"},
    )  # fmt: skip
    text.set_gid(UNDEFINED_MARK)


def undefined_reason(values: np.ndarray) -> str | None:
    """Why a map has nothing to show: ``"not finite"``, ``"all 0"``, or None when it has.

    Args:
      values: any array (a map).

    Returns:
      ``"not finite"`` when no entry is finite (also an empty map), ``"all 0"`` when every
      finite entry is 0, else None.

    Examples:
      >>> slp.plotting.undefined_reason(np.array([[0.0, np.nan], [0.0, 0.0]]))
      'all 0'
      >>> slp.plotting.undefined_reason(np.full((2, 2), np.nan))
      'not finite'
      >>> slp.plotting.undefined_reason(np.array([0.0, -0.5])) is None  # something to draw
      True
    """
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "not finite"
    if not np.any(finite):
        return "all 0"
    return None


def heatmap(ax: Axes, values: np.ndarray, *, title: str | None = None, limit=None):
    """Draws a signed map: red positive, blue negative, white zero.

    A map with nothing to show (no finite value, or all zero: e.g. Deep Taylor when the
    target's logit is not positive) is hatched and marked "undefined" (`mark_undefined`),
    never drawn as a blank panel. A map with some NaN or inf entries draws them black and
    says how many at its foot, so that none reads as a 0.

    Args:
      ax: the axes to draw into (ticks are removed).
      values: array `(H, W)` or `(H, W, C)` (channels are summed, see `to_2d`).
      title: optional axes title.
      limit: colour limit `L` (scale `[-L, L]`); default `symmetric_limit(values)`.

    Returns:
      The `AxesImage`.

    Raises:
      ValueError: the colour limit is not positive (an all-zero map without `limit`).

    Examples:
      >>> fig, axes = slp.plotting.canvas(1, 1, cell=1.0, left=0.1, top=0.1)
      >>> im = slp.plotting.heatmap(axes[0, 0], np.array([[1.0, -0.5], [0.0, 0.25]]))
      >>> im.get_clim()  # symmetric about 0
      (-1.0, 1.0)
    """
    values = to_2d(values)
    limit = symmetric_limit(values) if limit is None else float(limit)
    if not limit > 0:
        raise ValueError(f"limit must be > 0, got {limit}")
    why = undefined_reason(values)
    if why is not None:  # white behind the "undefined" mark, not black NaN
        values = np.where(np.isfinite(values), values, 0.0)
    im = ax.imshow(values, cmap=HEATMAP_CMAP, vmin=-limit, vmax=limit, interpolation="nearest")
    _decorate(ax, title)
    if why is not None:
        mark_undefined(ax, why)
    elif bad := int(values.size - np.count_nonzero(np.isfinite(values))):
        _mark_not_finite(ax, bad)
    return im


def _mark_not_finite(ax: Axes, count: int) -> None:
    """Writes at the foot of a map that ``count`` of its entries (drawn black) are NaN or inf,
    so that they are not read as values (gid ``"not-finite"``)."""
    text = ax.text(
        0.5, 0.02, f"{count} not finite (black)", transform=ax.transAxes, ha="center",
        va="bottom", fontsize=6, zorder=3,
        bbox={"facecolor": "white", "edgecolor": "0.6", "boxstyle": "round,pad=0.15"},
    )  # fmt: skip
    text.set_gid("not-finite")


def show_image(ax: Axes, image: np.ndarray, *, title: str | None = None):
    """Draws an input image with intensities in [0, 1] (grayscale, or RGB for 3 channels).

    Args:
      ax: the axes to draw into (ticks are removed).
      image: array `(H, W)`, `(H, W, 1)` or `(H, W, 3)` in [0, 1].
      title: optional axes title.

    Returns:
      The `AxesImage`.

    Raises:
      ValueError: `image` is not `(H, W)`, `(H, W, 1)` or `(H, W, 3)`.

    Examples:
      >>> fig, axes = slp.plotting.canvas(1, 1, cell=1.0, left=0.1, top=0.1)
      >>> im = slp.plotting.show_image(axes[0, 0], np.zeros((28, 28, 1)), title="digit")
      >>> axes[0, 0].get_title()
      'digit'
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        im = ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    elif image.ndim == 3 and image.shape[-1] == 3:
        im = ax.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
    else:
        raise ValueError(f"expected an image (H, W), (H, W, 1) or (H, W, 3), got {image.shape}")
    _decorate(ax, title)
    return im


def _decorate(ax: Axes, title: str | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=8)


def _tick_label(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:.1e}" if not 1e-2 <= abs(value) < 1e3 else f"{value:.3g}"


KEY_AXES_LABEL = "colour key"
"""Label (`Axes.get_label`) of every axes that `colour_bar` draws into."""


def colour_bar(
    fig: Figure,
    cax: Axes,
    *,
    limit: float | None = None,
    label: str | None = None,
    orientation: str = "vertical",
    fontsize: float = 7,
) -> Colorbar:
    """Draws the colour bar of the heatmap scale into ``cax``.

    Args:
      fig: the figure holding ``cax``.
      cax: the axes the bar fills.
      limit: the shared colour limit `L` of the maps it keys (ticks at -L, 0, L); None for
        maps that each have their own scale: the bar then runs over [-1, 1] in units of a
        map's own largest magnitude (ticks "-max |map|", "0", "+max |map|").
      label: text next to the bar (above a horizontal bar, beside a vertical one).
      orientation: ``"vertical"`` or ``"horizontal"``.
      fontsize: of ticks and label.

    Returns:
      The matplotlib `Colorbar`; its mappable's colour limits are ``(-L, L)`` (or
      ``(-1, 1)``); ``cax`` is labelled `KEY_AXES_LABEL`.

    Raises:
      ValueError: `limit` is given and not positive.

    Examples:
      >>> fig, axes = slp.plotting.canvas(1, 2, cell=1.0, left=0.1, top=0.1)
      >>> bar = slp.plotting.colour_bar(fig, axes[0, 1], limit=0.5)
      >>> bar.mappable.get_clim()
      (-0.5, 0.5)
    """
    if limit is not None and not float(limit) > 0:
        raise ValueError(f"limit must be > 0, got {limit}")
    lim = 1.0 if limit is None else float(limit)
    cax.set_label(KEY_AXES_LABEL)
    mappable = ScalarMappable(norm=Normalize(vmin=-lim, vmax=lim), cmap=HEATMAP_CMAP)
    bar = fig.colorbar(mappable, cax=cax, orientation=orientation, ticks=[-lim, 0.0, lim])
    if limit is None:
        names = ["\u2212max |map|", "0", "+max |map|"]
    else:
        names = [_tick_label(-lim), "0", _tick_label(lim)]
    if orientation == "horizontal":
        bar.ax.set_xticklabels(names, fontsize=fontsize)
        if label:
            bar.ax.set_title(label, fontsize=fontsize + 1)
    else:
        bar.ax.set_yticklabels(names, fontsize=fontsize)
        if label:
            bar.set_label(label, fontsize=fontsize)
    return bar


KEY_MARGIN = 0.85
"""Bottom margin in inches that `colour_key` needs below the panels."""


def colour_key(
    fig: Figure,
    *,
    limit: float | None = None,
    label: str | None = PER_MAP_KEY_LABEL,
    width: float = 3.6,
) -> Colorbar:
    """A horizontal colour key centred at the bottom of ``fig`` (leave `KEY_MARGIN` inches free).

    Args:
      fig: the figure.
      limit: shared colour limit of the maps, or None when each map has its own scale
        (see `colour_bar`).
      label: text above the bar, saying what the colours mean.
      width: length of the bar in inches (at most 80% of the figure's width).

    Returns:
      The `Colorbar`.

    Examples:
      >>> bottom = slp.plotting.KEY_MARGIN  # room for the key
      >>> fig, axes = slp.plotting.canvas(1, 3, cell=1.0, left=0.1, top=0.1, bottom=bottom)
      >>> slp.plotting.colour_key(fig).mappable.get_clim()  # each map on its own scale
      (-1.0, 1.0)
    """
    fig_w, fig_h = fig.get_size_inches()
    w = min(width, 0.8 * fig_w)
    cax = fig.add_axes(((fig_w - w) / 2 / fig_w, 0.3 / fig_h, w / fig_w, 0.12 / fig_h))
    if label and len(label) > 13 * fig_w:  # about 13 characters per inch at 8 points
        label = textwrap.fill(label, width=max(int(13 * fig_w), 20))
    return colour_bar(fig, cax, limit=limit, label=label, orientation="horizontal")


def canvas(
    n_rows: int,
    n_cols: int,
    *,
    cell: float,
    left: float,
    top: float,
    bottom: float = 0.1,
    right: float = 0.1,
) -> tuple[Figure, np.ndarray]:
    """A figure of ``n_rows x n_cols`` square panels of ``cell`` inches, tightly spaced.

    Args:
      n_rows: rows of panels.
      n_cols: columns of panels.
      cell: side of a panel in inches.
      left: margin in inches for row titles.
      top: margin in inches for column titles.
      bottom: margin in inches (room for a colour key).
      right: margin in inches.

    Returns:
      The figure and its axes, shape ``(n_rows, n_cols)``.

    Examples:
      >>> fig, axes = slp.plotting.canvas(2, 3, cell=1.0, left=0.1, top=0.3)
      >>> axes.shape
      (2, 3)
    """
    width = left + n_cols * cell + right
    height = top + n_rows * cell + bottom
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        wspace=0.05,
        hspace=0.05,
    )
    return fig, fig.subplots(n_rows, n_cols, squeeze=False)


def grid_figure(
    panels: Sequence[Sequence[np.ndarray]],
    *,
    col_titles: Sequence[str],
    row_titles: Sequence[str] | None = None,
    image_columns: Sequence[int] = (0,),
    cell_size: float = 1.4,
    title: str | None = None,
    key_label: str | None = PER_MAP_KEY_LABEL,
) -> Figure:
    """A rows x columns grid of inputs and heatmaps, with a colour key below.

    Columns listed in `image_columns` are drawn as inputs (`show_image`), all
    others as heatmaps (`heatmap`), each with its own symmetric colour scale; the
    key below the grid (`colour_key`) says so.

    Args:
      panels: `R` rows of `C` arrays each (every array `(H, W)` or `(H, W, C')`).
      col_titles: `C` titles shown above the first row.
      row_titles: optional `R` labels shown left of each row.
      image_columns: indices of the columns holding input images.
      cell_size: size of one panel in inches.
      title: optional figure title.
      key_label: text of the colour key; None draws no key (e.g. a grid of inputs only).

    Returns:
      The matplotlib `Figure`.

    Raises:
      ValueError: no panels, rows of different lengths, or titles or `image_columns`
        that do not fit the grid.

    Examples:
      >>> x = np.zeros((28, 28, 1)); omega = np.linspace(-1, 1, 784).reshape(28, 28, 1)
      >>> fig = slp.plotting.grid_figure([[x, omega]], col_titles=["digit", "Insens"])
      >>> len(fig.axes)  # two panels and the colour key
      3
    """
    rows = [list(r) for r in panels]
    if not rows or not rows[0]:
        raise ValueError("grid_figure needs at least one row and one column")
    n_cols = len(rows[0])
    if any(len(r) != n_cols for r in rows):
        raise ValueError(f"every row must have {n_cols} panels; got {[len(r) for r in rows]}")
    if len(col_titles) != n_cols:
        raise ValueError(f"got {len(col_titles)} column titles for {n_cols} columns")
    if row_titles is not None and len(row_titles) != len(rows):
        raise ValueError(f"got {len(row_titles)} row titles for {len(rows)} rows")
    bad = [c for c in image_columns if not 0 <= c < n_cols]
    if bad:
        raise ValueError(f"image_columns {bad} out of range for {n_cols} columns")

    left = 1.4 if row_titles is not None else 0.1
    top = 0.5 + (0.3 if title else 0.0)
    bottom = KEY_MARGIN if key_label is not None else 0.1
    fig, axes = canvas(len(rows), n_cols, cell=cell_size, left=left, top=top, bottom=bottom)
    for r, row in enumerate(rows):
        for c, values in enumerate(row):
            ax = axes[r, c]
            col_title = col_titles[c] if r == 0 else None
            if c in image_columns:
                show_image(ax, values, title=col_title)
            else:
                heatmap(ax, values, title=col_title)
            if c == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[r], rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    if key_label is not None:
        colour_key(fig, label=key_label)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Saves `fig` atomically (temp file in the same folder, then `os.replace`).

    Args:
      fig: the figure.
      path: destination; its suffix picks the format (e.g. `.png`).
      dpi: resolution.

    Returns:
      The path written.

    Examples:
      >>> import tempfile, pathlib
      >>> fig, axes = slp.plotting.canvas(1, 1, cell=1.0, left=0.1, top=0.1)
      >>> with tempfile.TemporaryDirectory() as folder:
      ...     path = slp.plotting.save_figure(fig, pathlib.Path(folder) / "map.png")
      ...     print(path.name, path.stat().st_size > 0)
      map.png True
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    with atomic_writer(path) as fh:
        fig.savefig(fh, format=fmt, dpi=dpi)
    return path
