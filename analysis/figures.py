"""Figures of the report (matplotlib, Agg backend), each saved as PNG and PDF."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.layout_engine import PlaceHolderLayoutEngine  # noqa: E402
from rliable import plot_utils  # noqa: E402

# Separates the two names of an ordered pair for rliable's probability-of-improvement plot;
# a character that does not occur in algorithm or variant names.
PAIR_SEP = "\t"


def colors_for(names: Sequence[str]) -> dict:
    """One fixed colour per algorithm, shared by every figure."""
    palette = sns.color_palette("colorblind" if len(names) <= 10 else "husl", n_colors=len(names))
    return dict(zip(names, palette))


def save(fig, base: Path) -> list[Path]:
    """Write ``base.png`` and ``base.pdf``; returns both paths."""
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".pdf")]
    # After fig.tight_layout() the figure keeps a placeholder layout engine, and savefig draws
    # the whole figure once more before each file because of it; the layout is already done.
    if isinstance(fig.get_layout_engine(), PlaceHolderLayoutEngine):
        fig.set_layout_engine(None)
    # The tight box is computed once for both formats (savefig would redo it per file).
    bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.1)
    for p in paths:
        fig.savefig(p, bbox_inches=bbox, dpi=150)
    plt.close(fig)
    return paths


def aggregates(estimates: dict, names: Sequence[str], colors: dict, xlabel: str,
               base: Path) -> list[Path]:
    """rliable interval-estimate plot: one panel per aggregate, one bar (CI) per algorithm.

    ``estimates``: {label: {metric name: (value, lo, hi)}} in display order.
    """
    labels = list(estimates)
    point = {k: np.array([estimates[k][n][0] for n in names]) for k in labels}
    ci = {k: np.array([[estimates[k][n][1] for n in names], [estimates[k][n][2] for n in names]])
          for k in labels}
    row_height = max(0.45, 1.6 / len(labels))
    fig, axes = plot_utils.plot_interval_estimates(
        point, ci, metric_names=list(names), algorithms=labels, colors=colors,
        xlabel=xlabel, subfigure_width=3.4, row_height=row_height, wspace=0.25,
        # rliable places the x label in figure coordinates: keep it ~0.55 inch below the axes.
        xlabel_y_coordinate=-0.55 / (row_height * len(labels)))
    for ax in np.atleast_1d(axes):
        # Degenerate CIs (one seed, constant scores) would zoom the axis into rounding noise.
        lo, hi = ax.get_xlim()
        centre, span = (lo + hi) / 2, max(0.1, 0.1 * abs((lo + hi) / 2))
        if hi - lo < span:
            ax.set_xlim(centre - span / 2, centre + span / 2)
        ax.tick_params(axis="x", labelsize="x-large")
    return save(fig, base)


def profiles(profs: dict, cis: dict, taus: np.ndarray, colors: dict, xlabel: str,
             base: Path) -> list[Path]:
    """rliable performance profiles (score distributions) with CI bands."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(
        profs, taus, performance_profile_cis=cis, colors={k: colors[k] for k in profs},
        xlabel=xlabel, ylabel=r"Fraction of runs with score $> \tau$", ax=ax,
        labelsize="large", ticklabelsize="medium")
    ax.legend(loc="upper right", fontsize="medium", frameon=False)
    return save(fig, base)


def probability_of_improvement(pairs: Sequence[dict], colors: dict, base: Path) -> list[Path]:
    """rliable probability-of-improvement plot; ``pairs``: dicts with x, y, value, lo, hi."""
    est = {f"{p['x']}{PAIR_SEP}{p['y']}": p["value"] for p in pairs}
    cis = {f"{p['x']}{PAIR_SEP}{p['y']}": np.array([p["lo"], p["hi"]]) for p in pairs}
    fig, ax = plt.subplots(figsize=(5.0, 0.45 * len(pairs) + 1.2))
    plot_utils.plot_probability_of_improvement(
        est, cis, pair_separator=PAIR_SEP, ax=ax, colors=[colors[p["x"]] for p in pairs],
        xticks=[0.0, 0.25, 0.5, 0.75, 1.0], xlabel="P(X > Y)", ticklabelsize="medium",
        labelsize="large")
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(-0.02, 1.02)
    return save(fig, base)


def _panel_grid(n: int, width: float = 4.6, height: float = 3.4):
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def sample_efficiency(title: str, panels: Sequence[dict], colors: dict, ylabel: str,
                      base: Path) -> list[Path]:
    """IQM over seeds at each evaluation with pointwise CI bands, one panel per demo count.

    Each panel: {"title", "xlabel", "curves": {name: (x, point, lo, hi)},
    "lines": {name: (value, lo, hi)}} and optionally "running": {name: [(x, y), ...]};
    ``lines`` are offline algorithms drawn flat at their final score across the panel;
    ``running`` are runs in progress, each drawn as a thin dotted partial curve (its own
    evaluations so far), labelled "NAME (in progress, N runs)".
    """
    fig, axes = _panel_grid(len(panels))
    for ax, panel in zip(axes, panels):
        xmax = 0.0
        for name, (x, y, lo, hi) in panel["curves"].items():
            ax.plot(x, y, color=colors[name], marker="o" if len(x) <= 25 else None, markersize=3,
                    linewidth=2, label=name)
            ax.fill_between(x, lo, hi, color=colors[name], alpha=0.2, linewidth=0)
            xmax = max(xmax, float(np.max(x)))
        for name, runs in panel.get("running", {}).items():
            for i, (x, y) in enumerate(runs):
                ax.plot(x, y, color=colors[name], linestyle=":", linewidth=1.2, alpha=0.8,
                        label=(f"{name} (in progress, {len(runs)} run{'s' if len(runs) > 1 else ''})"
                               if i == 0 else None))
                xmax = max(xmax, float(np.max(x)))
        for name, (v, lo, hi) in panel["lines"].items():
            ax.axhline(v, color=colors[name], linestyle="--", linewidth=2,
                       label=f"{name} (offline, final)")
            ax.axhspan(lo, hi, color=colors[name], alpha=0.12, linewidth=0)
        if xmax == 0.0 and panel["lines"] and not panel["curves"]:
            ax.set_xticks([])
        ax.set_title(panel["title"], fontsize="large")
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.25)
        ax.spines["top"].set_visible(False)
        ax.spines["right"].set_visible(False)
        ax.legend(fontsize="small", frameon=False)
    fig.suptitle(title, fontsize="x-large")
    fig.tight_layout()
    return save(fig, base)


_SEED_STYLES = ("-", "--", ":", "-.")
_SEED_MARKERS = ("o", "s", "^", "v", "D", "P", "X")


def seed_curves(title: str, panels: Sequence[dict], colors: dict, ylabel: str,
                base: Path) -> list[Path]:
    """Every seed's own learning curve, one panel per (algorithm, demo count), each on its own
    step axis (budgets differ between algorithms), with the mean over seeds drawn bold.

    Each panel: {"title", "name" (the algorithm, for its colour), "xlabel",
    "seeds": {seed: (x, y)}} and optionally "running": {seed: (x, y)}, runs in progress drawn
    dotted without markers, labelled "seed S (in progress)" and left out of the mean.
    """
    fig, axes = _panel_grid(len(panels), width=4.0, height=3.0)
    for ax, panel in zip(axes, panels):
        color = colors[panel["name"]]
        runs = panel["seeds"]
        # One colour per algorithm; seeds told apart by line style and marker.
        for i, (seed, (x, y)) in enumerate(sorted(runs.items())):
            ax.plot(x, y, color=color, alpha=0.5, linewidth=1.2,
                    linestyle=_SEED_STYLES[i % len(_SEED_STYLES)],
                    marker=_SEED_MARKERS[i % len(_SEED_MARKERS)], markersize=3.5,
                    label=f"seed {seed}")
        for seed, (x, y) in sorted(panel.get("running", {}).items()):
            ax.plot(x, y, color=color, alpha=0.8, linewidth=1.2, linestyle=":",
                    label=f"seed {seed} (in progress)")
        if runs:
            k = min(len(y) for _, y in runs.values())
            x0 = np.median(np.stack([np.asarray(x[:k], float) for x, _ in runs.values()]), axis=0)
            mean = np.mean(np.stack([np.asarray(y[:k], float) for _, y in runs.values()]), axis=0)
            ax.plot(x0, mean, color=color, linewidth=2.5, label="mean")
        ax.set_title(panel["title"])
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.25)
        ax.spines["top"].set_visible(False)
        ax.spines["right"].set_visible(False)
        ax.legend(fontsize="x-small", frameon=False)
    fig.suptitle(title, fontsize="large")
    fig.tight_layout()
    return save(fig, base)


def score_vs_demos(panels: Sequence[dict], colors: dict, base: Path) -> list[Path]:
    """Final score against the number of demos, one line per algorithm, CI as error bars.

    Each panel: {"title", "ylabel", "series": {name: (demos, value, lo, hi)}}.
    """
    fig, axes = _panel_grid(len(panels))
    for ax, panel in zip(axes, panels):
        all_x: list[float] = []
        for name, (x, y, lo, hi) in panel["series"].items():
            x, y, lo, hi = map(np.asarray, (x, y, lo, hi))
            ax.errorbar(x, y, yerr=[y - lo, hi - y], color=colors[name], marker="o",
                        linewidth=2, capsize=3, label=name)
            all_x += list(x)
        if all_x and min(all_x) > 0 and max(all_x) / min(all_x) >= 8:
            ax.set_xscale("log")
        ticks = sorted(set(all_x))
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_title(panel["title"], fontsize="large")
        ax.set_xlabel("number of demos")
        ax.set_ylabel(panel["ylabel"])
        ax.grid(True, alpha=0.25)
        ax.spines["top"].set_visible(False)
        ax.spines["right"].set_visible(False)
        ax.legend(fontsize="small", frameon=False)
    fig.tight_layout()
    return save(fig, base)
