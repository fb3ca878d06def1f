"""The evaluation's report: markdown tables and figures from its results dict (`lab.evaluation`).

- `markdown`: per metric group a table of methods x metrics, each cell ``mean [low, high]``
  (95% interval, seeds and images as random effects), the top group in bold, the controls'
  rows, and the number of images every compared method is defined on.
- `ranking_figure`: one panel per metric, the methods sorted by their mean with their
  intervals, the top group filled, the controls as grey bands, n in every title.
- `sweep_figure`: robustness (Spearman clean vs noisy) against sigma, one panel per noise
  variant, a line per method with its intervals, n in every title, the legend outside.
- `state_change_figure`: share of hidden neurons switched against the share of pixels
  perturbed, per replacement, methods and controls.

No jax: NumPy and matplotlib.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from lab import analysis

__all__ = ["cell", "markdown", "ranking_figure", "state_change_figure", "sweep_figure"]


def cell(entry: dict[str, Any], *, bold: bool = False, digits: int = 3) -> str:
    """``mean [low, high]`` of an interval entry (``n/a`` when undefined)."""
    if entry.get("mean") is None:
        return f"n/a ({entry.get('n_images', 0)} images)"
    lo, hi = entry["ci95"]
    text = f"{entry['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"**{text}**" if bold else text


def _groups(metrics: dict[str, Any]) -> dict[str, list[str]]:
    """Metric names by report section: deletion with insertion, robustness per variant."""
    groups: dict[str, list[str]] = {}
    for name in metrics:
        head = name.split("-")[0]
        if name.startswith("Robustness-"):
            head = "-".join(name.split("-")[:2])
        head = {"Insertion": "Deletion"}.get(head, head)
        groups.setdefault(head, []).append(name)
    return groups


GROUP_TITLES = {
    "Deletion": "Faithfulness: deletion and insertion",
    "OnDigit": "Locality",
    "StateChange": "Completeness: hidden neurons switched by the map's top pixels",
}
"""Section titles of the metric groups (a robustness group is titled by its name)."""


def markdown(result: dict[str, Any]) -> list[str]:
    """The report's lines: the run, the method identities, then a table per metric group."""
    cfg, metrics = result["config"], result["metrics"]
    methods = result["methods"]
    sweep = (
        f" (robustness sweep: the first {cfg['sweep_images']}, {cfg['draws']} noise draws each)"
        if result.get("sweep")
        else ""
    )
    if "quantus" in cfg["families"] and "explain_images" in cfg:
        sweep += (
            f"; the Quantus-named metrics that explain again score the first "
            f"{cfg['explain_images']}"
        )
    lines = [
        f"# Every method on 2CONV trained from several seeds ({cfg.get('dataset', 'MNIST')})",
        "",
        f"Produced by `{cfg['command']}` in {cfg['seconds']['total'] / 60:.1f} minutes on "
        f"{cfg['device']}. Seeds {', '.join(map(str, result['seeds']))}; "
        f"{cfg['num_images']} {cfg.get('dataset', 'MNIST')} test images{sweep}; every map "
        f"explains the true class. Metric families: {', '.join(cfg['families'])}.",
        "",
    ]
    if cfg.get("smoke"):
        lines += [
            "**A smoke run of the pipeline on a small setting: it shows that every step "
            "runs, not what the full evaluation finds.**",
            "",
        ]
    lines += [
        "Each cell: mean over seeds and images, and its 95% interval in the two-way "
        "random-effects model (seeds and images crossed, Satterthwaite's degrees of freedom; "
        "`experiments/lab/stats.py`). **Bold**: the top group, the best method and every "
        "method that paired tests against it (Holm-corrected, family-wise 5%) cannot "
        "separate from it, on the images where every method is defined in every seed (n).",
        "",
        "## Methods reported once",
        "",
        *analysis.table(
            ["pair", "largest difference / largest magnitude", "median", "images", "one name"],
            [
                [
                    f"`{k}`",
                    f"{v['max_relative']:.1e}",
                    f"{v['median_relative']:.1e}",
                    str(v["images"]),
                    "yes" if v["merged"] else "no",
                ]
                for k, v in result["identities"].items()
            ],
        ),
        "",
        "Per image, the largest absolute difference of the two maps over the largest absolute "
        f"value of the second; merged where it is within {result['identity_tolerance']:g} "
        "on every image (float32 rounding); aliases: "
        + "; ".join(f"`{m}` = {', '.join(f'`{a}`' for a in al)}" for m, al in methods.items() if al)
        + ".",
        "",
    ]
    for head, names in _groups(metrics).items():
        lines += [f"## {GROUP_TITLES.get(head, head)}", ""]
        for name in names:
            m = metrics[name]
            arrow = "higher" if m["higher_is_better"] else "lower"
            n = m["top_group"]["n_images"]
            left = m["top_group"].get("left_out") or []
            gone = (
                f"; left out of the top group, defined on fewer than 2 images in every seed: "
                f"{', '.join(left)}"
                if left
                else ""
            )
            lines.append(f"- `{name}`: {m['description']} ({arrow} is better; n = {n}{gone}).")
        lines.append("")
        rows = []
        for method in methods:
            rows.append(
                [
                    method,
                    *(
                        cell(
                            metrics[n]["methods"][method],
                            bold=method in metrics[n]["top_group"]["members"],
                        )
                        if method in metrics[n]["methods"]
                        else "-"
                        for n in names
                    ),
                ]
            )
        controls = sorted({c for n in names for c in metrics[n]["controls"]})
        for c in controls:
            rows.append(
                [
                    f"*{c} order*",
                    *(
                        cell(metrics[n]["controls"][c]) if c in metrics[n]["controls"] else "-"
                        for n in names
                    ),
                ]
            )
        lines += [*analysis.table(["method", *names], rows), ""]
    return lines


def _finite(v) -> float:
    return np.nan if v is None else float(v)


def ranking_figure(result: dict[str, Any], names: list[str] | None = None) -> Figure:
    """One panel per metric: methods by mean with 95% intervals; top group filled."""
    metrics = result["metrics"]
    names = list(metrics) if names is None else names
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    n_methods = len(result["methods"])
    fig = Figure(figsize=(4.2 * cols, 0.28 * n_methods * rows + 1.4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    colours = analysis.method_colours(list(result["methods"]))
    for ax, name in zip(axes, names, strict=False):
        m = metrics[name]
        entries = {k: v for k, v in m["methods"].items() if v["mean"] is not None}
        order = sorted(entries, key=lambda k: entries[k]["mean"], reverse=m["higher_is_better"])
        members = set(m["top_group"]["members"])
        for y, meth in enumerate(order):
            e = entries[meth]
            lo, hi = e["ci95"]
            ax.errorbar(
                e["mean"], y, xerr=[[e["mean"] - lo], [hi - e["mean"]]],
                fmt="o", color=colours[meth], mfc=colours[meth] if meth in members else "white",
                ms=5, capsize=2, lw=1.2,
            )  # fmt: skip
        for c, e in m["controls"].items():
            if e["mean"] is None:
                continue
            ax.axvspan(*e["ci95"], color="0.85", zorder=0)
            ax.axvline(e["mean"], color="0.4", ls="--", lw=0.8, zorder=0)
            ax.annotate(
                c.replace("_", " "), (e["mean"], 1.0), xycoords=("data", "axes fraction"),
                fontsize=6, color="0.3", rotation=90, va="top", ha="right",
            )  # fmt: skip
        ax.set_yticks(range(len(order)))
        ax.set_yticklabels([f"{k}{' *' if k in members else ''}" for k in order], fontsize=7)
        ax.invert_yaxis()
        arrow = "↑ better" if m["higher_is_better"] else "↓ better"
        n_seeds = len(result["seeds"])
        ax.set_title(
            f"{name} ({arrow})\nn = {m['top_group']['n_images']} images × {n_seeds} seeds",
            fontsize=8,
        )
        ax.tick_params(axis="x", labelsize=7)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(
        "Mean and 95% interval per method (seeds and images random); filled and * = top group "
        "(Holm-corrected paired tests); grey: control orders",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # room for the title
    return fig


def sweep_figure(result: dict[str, Any]) -> Figure:
    """Robustness against sigma: a panel per variant, a line per method with 95% intervals."""
    sweep = result["sweep"]
    variants, sigmas = sweep["variants"], sweep["sigmas"]
    methods = list(result["methods"])
    colours = analysis.method_colours(methods)
    fig = Figure(figsize=(4.2 * len(variants) + 2.2, 3.8))
    axes = fig.subplots(1, len(variants), sharey=True, squeeze=False)[0]
    offsets = np.linspace(-0.06, 0.06, len(methods))
    for ax, v in zip(axes, variants, strict=True):
        n_images = set()
        for off, meth in zip(offsets, methods, strict=True):
            es = [result["metrics"][name]["methods"].get(meth) for name in sweep["names"][v]]
            means = np.array([_finite(e and e["mean"]) for e in es])
            lo = np.array([_finite(e and e["ci95"] and e["ci95"][0]) for e in es])
            hi = np.array([_finite(e and e["ci95"] and e["ci95"][1]) for e in es])
            n_images |= {e["n_images"] for e in es if e}
            xs = np.log2(sigmas) + off
            ax.errorbar(
                xs, means, yerr=[means - lo, hi - means], fmt="o-", color=colours[meth],
                lw=2.2 if meth == "insens" else 1.0, ms=3, capsize=2, label=meth,
            )  # fmt: skip
        ax.set_xticks(np.log2(sigmas))
        ax.set_xticklabels([f"{s:g}" for s in sigmas])
        ax.set_xlabel("noise sigma")
        n_text = "/".join(str(k) for k in sorted(n_images))
        ax.set_title(
            f"{v}: n = {n_text} images × {len(result['seeds'])} seeds, "
            f"{result['config']['draws']} draws each",
            fontsize=8,
        )
        ax.axhline(0, color="gray", lw=0.5)
    axes[0].set_ylabel("Spearman(clean map, noisy map)")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(
        "Robustness to the paper's noise across sigma: mean and 95% interval "
        "(seeds and images random)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def state_change_figure(result: dict[str, Any]) -> Figure:
    """Share of hidden neurons switched against the share of pixels perturbed."""
    curves = result["state_change_curves"]
    names = list(result["methods"]) + list(curves["controls"])
    colours = analysis.method_colours(list(result["methods"]))
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, len(curves["replacements"]), sharey=True, squeeze=False)[0]
    frac = np.asarray(curves["fraction"]) * 100
    for ax, r in zip(axes, curves["replacements"], strict=True):
        for name in names:
            ys = curves[r].get(name)
            if ys is None:
                continue
            band = curves[r].get(f"{name}/ci95")
            if band is not None:  # the 95% interval of the mean at each k
                colour = "k" if name in curves["controls"] else colours[name]
                ax.fill_between(frac, *band, color=colour, alpha=0.15, lw=0)
            if name in curves["controls"]:
                style = "k--" if name == "random" else "k:"
                ax.plot(frac, ys, style, lw=1.5, label=f"{name} order")
            else:
                ax.plot(frac, ys, color=colours[name], lw=2.2 if name == "insens" else 1.0,
                        label=name)  # fmt: skip
        ax.set_xlabel("pixels perturbed, top by |map| (%)")
        ax.set_title(
            f"{r} replacement; n = {curves['n_images']} images × {len(result['seeds'])} seeds",
            fontsize=8,
        )
    axes[0].set_ylabel("share of hidden neurons switched")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(
        "Completeness: how fast each map's top pixels switch hidden neurons "
        "(mean and 95% interval, seeds and images random)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig
