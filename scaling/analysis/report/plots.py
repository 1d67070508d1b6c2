"""Report figures (matplotlib, Agg backend), each saved as PNG and SVG.

- scaling: a metric against tokenizer size per group, with the fitted law, its 95% bootstrap band
  and its extrapolation (dashed) to a target size;
- trade-off: reconstruction against each generation metric, sizes joined in order, Pareto front;
- dilemma: every metric against size, with and without semantic regularisation, flagged steps in red;
- encoder/decoder: sizes of both halves coloured by a metric;
- isoFLOP: a metric against size per compute budget with each budget's parabola and optimum, and the
  optimal size against compute with the fitted law, its band and its extrapolation;
- surface: the (N, D) law's contours with the runs (trunks and cooldown branches) on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # headless: no display, same output everywhere

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from scaling.analysis.laws.bootstrap import percentile  # noqa: E402
from scaling.analysis.laws.outcome import FitOutcome  # noqa: E402
from scaling.analysis.laws.words import plus_minus  # noqa: E402
from scaling.analysis.tables.compute import BUDGET, ComputeOptimal  # noqa: E402
from scaling.analysis.tables.tradeoff import GROUP, DilemmaFlag, pareto_front  # noqa: E402

COLORS = {"with": "#1f77b4", "without": "#d62728", "all runs": "#2ca02c",
          # runs with discrete and continuous tokenizers (tables.tradeoff.semantic_groups)
          "discrete, with": "#1f77b4", "discrete, without": "#d62728", "discrete": "#1f77b4",
          "continuous, with": "#9467bd", "continuous, without": "#ff7f0e", "continuous": "#9467bd"}
# other groups (token structures, tables.tradeoff.token_structures): the next free colour of this palette, in the
# order they are first drawn, so that one report's plots agree
PALETTE = ("#2ca02c", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#ff7f0e", "#9467bd", "#7f7f7f", "#aec7e8",
           "#98df8a")
_ASSIGNED: dict[str, str] = {}
FLAG_COLOR = "#d62728"
BAND_LEVEL = 95
GRID_POINTS = 200
# A y range narrower than this factor reads better on a linear axis than on a log one.
LOG_Y_SPAN = 3.0


@dataclass(frozen=True)
class Figure:
    """A saved figure: its title, caption, and PNG and SVG paths."""

    title: str
    caption: str
    png: Path
    svg: Path


def size_label(v: float) -> str:
    """136M, 2.9B: parameter counts as people write them."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def _log_ticks(axis: matplotlib.axis.Axis, label: Callable[[float], str]) -> None:
    """Ticks at 1, 2, 5 x 10^k with ``label``; unlabelled minor ticks (they overlap otherwise)."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: label(v)))
    axis.set_minor_formatter(NullFormatter())


def size_axis(ax: plt.Axes, which: str = "x") -> None:
    """Log axis of parameter counts labelled 100M, 2B, ..."""
    if which == "x":
        ax.set_xscale("log")
        _log_ticks(ax.xaxis, size_label)
    else:
        ax.set_yscale("log")
        _log_ticks(ax.yaxis, size_label)


def value_axis(ax: plt.Axes, values: np.ndarray) -> None:
    """Log y axis with plain labels when the values span a factor LOG_Y_SPAN, else linear."""
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and values.max() / values.min() >= LOG_Y_SPAN:
        ax.set_yscale("log")
        _log_ticks(ax.yaxis, lambda v: f"{v:g}")


def _padded(ax: plt.Axes, lo: float, hi: float, pad: float = 0.08) -> tuple[float, float]:
    """(lo, hi) widened by ``pad`` of the range, in log space on a log axis."""
    if ax.get_yscale() == "log" and lo > 0:
        span = np.log(hi / lo) * pad
        return lo * np.exp(-span), hi * np.exp(span)
    span = (hi - lo) * pad
    return lo - span, hi + span


def _save(fig: plt.Figure, stem: Path, title: str, caption: str) -> Figure:
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
    fig.savefig(png, dpi=130, bbox_inches="tight")
    fig.savefig(svg, bbox_inches="tight")
    plt.close(fig)
    return Figure(title, caption, png, svg)


def group_color(group: object) -> str:
    """A group's colour: its own (COLORS), else the one PALETTE gave it when first drawn (the next free one)."""
    name = str(group)
    if name in COLORS:
        return COLORS[name]
    if name not in _ASSIGNED:
        free = [c for c in PALETTE if c not in _ASSIGNED.values()] or list(PALETTE)
        _ASSIGNED[name] = free[0]
    return _ASSIGNED[name]


def _group_label(group: str) -> str:
    """'with' -> 'with semantic reg.'; 'continuous, with' -> 'continuous, with semantic reg.'."""
    return group + " semantic reg." if group.split(", ")[-1] in ("with", "without") else group


def _band(out: FitOutcome, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    if out.boot is None or not len(out.boot.samples.get("alpha", [])):
        return None
    form = out.result.form  # type: ignore[union-attr]
    return _edges(form.predict_many(out.boot.samples, grid[None]))


def _edges(preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The BAND_LEVEL% band of bootstrap predictions (a row per replicate). Where a percentile is infinite the
    band is unbounded: drawn off the axis, not left out."""
    tail = (100 - BAND_LEVEL) / 2
    lo, hi = np.clip(percentile(preds, [tail, 100 - tail], axis=0), -1e300, 1e300)
    return lo, hi


def _draw_fit(ax: plt.Axes, out: FitOutcome, color: str, target: float | None, var: str = "N") -> np.ndarray:
    """Draw the law, its band and its prediction; return the central values (for axis limits). A fit that is no
    law (``FitOutcome.no_law``) is not drawn: the legend says so."""
    if out.no_law:
        ax.plot([], [], color=color, lw=2, ls=":", label="no power law")
        return np.asarray(out.y, dtype=float)
    x = out.xs[0]
    hi = max(x.max(), target or 0)
    grid = np.geomspace(x.min(), hi, GRID_POINTS)
    form = out.result.form  # type: ignore[union-attr]
    pred = form.predict(out.params, grid[None])
    inside = grid <= x.max() * (1 + 1e-9)
    alpha = out.params["alpha"]
    sign = "-" if alpha >= 0 else ""
    label = f"fit: {var}^{sign}{plus_minus(abs(alpha), out.se('alpha'))}"
    ax.plot(grid[inside], pred[inside], color=color, lw=2, label=label)
    if (~inside).any():
        ax.plot(grid[~inside], pred[~inside], color=color, lw=2, ls="--")
    band = _band(out, grid)
    if band is not None:
        ax.fill_between(grid, band[0], band[1], color=color, alpha=0.18, lw=0)
    if target and "prediction" in out.derived:
        lo, hi_ = out.ci("prediction")
        y = out.derived["prediction"]
        err = [[y - lo], [hi_ - y]] if np.isfinite([lo, hi_]).all() else None
        ax.errorbar([target], [y], yerr=err, fmt="D", color=color, ms=6, capsize=4)
    return pred


def scaling_plot(
    points: pd.DataFrame,
    metric: str,
    label: str,
    size: str,
    fits: dict[str, FitOutcome],
    target: float | None,
    stem: Path,
    repeated: pd.DataFrame | None = None,
    compute: bool = False,
) -> Figure:
    """``label`` against ``size`` per group (points), with each group's fitted law and band; ``repeated``
    (``tables.repeats.repeats``): grid points run more than once, drawn as their mean and its interval;
    ``compute``: against training FLOPs (``size`` is their column), the laws fitted over the compute-efficient
    runs."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    # Limits come from the runs and the central curves: a band that widens without bound when
    # extrapolated would otherwise flatten everything else.
    shown = [points[metric].to_numpy(dtype=float)]
    for group, rows in points.groupby(GROUP):
        color = group_color(group)
        ax.scatter(rows[size], rows[metric], color=color, s=28, zorder=3, alpha=0.45 if repeated is not None
                   and not repeated.empty else 1.0, label=f"{_group_label(str(group))} runs")
        _draw_repeats(ax, repeated, str(group), size, color)
        if str(group) in fits:
            shown.append(_draw_fit(ax, fits[str(group)], color, target, "C" if compute else "N"))
    values = np.concatenate(shown)
    values = values[np.isfinite(values) & (values > 0)]
    size_axis(ax)
    value_axis(ax, values)
    if values.size:
        ax.set_ylim(_padded(ax, values.min(), values.max()))
    if target:
        ax.axvline(target, color="#555", ls=":", lw=1)
    ax.set_xlabel(f"training FLOPs C ({size})" if compute else f"tokenizer parameters N ({size})")
    ax.set_ylabel(label)
    ax.set_title(f"{label} against {'training compute' if compute else 'tokenizer size'}")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, frameon=False)
    if compute:
        caption = (f"Points are runs; lines are laws y = E + A C^-alpha with {BAND_LEVEL}% bootstrap bands, fitted "
                   "over the compute-efficient runs (each better than every cheaper run).")
        return _save(fig, stem, f"{label} vs compute", caption)
    caption = (
        f"Points are runs; lines are fitted laws y = E + A N^-alpha with {BAND_LEVEL}% bootstrap bands"
        + ("; dashed: extrapolation, diamond: prediction at the target size." if target else ".")
    ) if fits else "Points are runs; no law is fitted (the fitted laws above say why)."
    return _save(fig, stem, f"{label} vs size", caption)


def _draw_repeats(ax: plt.Axes, repeated: pd.DataFrame | None, group: str, size: str, color: str) -> None:
    """A group's repeated grid points: the mean of their runs and its 95% interval."""
    if repeated is None or repeated.empty:
        return
    rows = repeated[repeated["group"] == group]
    if rows.empty:
        return
    mean = rows["mean"].to_numpy(dtype=float)
    err = np.vstack([mean - rows["low"].to_numpy(dtype=float), rows["high"].to_numpy(dtype=float) - mean])
    ax.errorbar(rows[size].to_numpy(dtype=float), mean, yerr=err, fmt="_", ms=14, mew=2, capsize=4, color=color,
                zorder=4, label=f"mean of seeds, {BAND_LEVEL}% interval")


def surface_plot(out: FitOutcome, group: str, label: str, size: str, stem: Path) -> Figure:
    """The (N, D) law's contours over the sampled sizes and images seen, the runs on them in the same colours."""
    n, d = out.xs[0], out.xs[1]
    pad = 1.15  # the runs at the edges drawn whole
    grid_n, grid_d = np.meshgrid(np.geomspace(n.min() / pad, n.max() * pad, 80),
                                 np.geomspace(d.min() / pad, d.max() * pad, 80))
    form = out.result.form  # type: ignore[union-attr]
    law = form.predict(out.params, np.stack([grid_n.ravel(), grid_d.ravel()])).reshape(grid_n.shape)
    levels = np.quantile(np.concatenate([law.ravel(), out.y]), np.linspace(0, 1, 12))
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    filled = ax.contourf(grid_n, grid_d, law, levels=levels, cmap="viridis", alpha=0.8)
    ax.contour(grid_n, grid_d, law, levels=levels, colors="white", linewidths=0.5)
    ax.scatter(n, d, c=out.y, cmap="viridis", norm=filled.norm, edgecolors="black", s=40, zorder=3)
    fig.colorbar(filled, ax=ax, label=label, format="%.3g")
    size_axis(ax)
    size_axis(ax, which="y")
    ax.set_xlabel(f"tokenizer parameters N ({size})")
    ax.set_ylabel("images seen D")
    ax.set_title(f"{label} over size and data, {_group_label(group)}")
    caption = (f"Contours: the fitted law {out.law}; points: runs (a trunk and its cooldown branches share a size), "
               "coloured on the same scale, so a point that stands out from its contour is a run the law misses.")
    return _save(fig, stem, f"{label} over (N, D), {_group_label(group)}", caption)


def _annotated_path(ax: plt.Axes, rows: pd.DataFrame, x: str, y: str, size: str, color: str) -> None:
    rows = rows.sort_values(size)
    ax.plot(rows[x], rows[y], "-o", color=color, ms=5, lw=1.2, alpha=0.9)
    for _, r in rows.iterrows():
        ax.annotate(size_label(r[size]), (r[x], r[y]), textcoords="offset points", xytext=(4, 4),
                    fontsize=7, color=color)


def tradeoff_plot(
    table: pd.DataFrame, size: str, recon: str, gens: list[str], labels: dict[str, str], stem: Path
) -> Figure:
    """One panel per generation metric: it against ``recon``, per group, with the Pareto front."""
    fig, axes = plt.subplots(1, len(gens), figsize=(4.6 * len(gens), 4.0), squeeze=False)
    for ax, gen in zip(axes[0], gens):
        data = table.dropna(subset=[recon, gen])
        for group, rows in data.groupby(GROUP):
            _annotated_path(ax, rows, recon, gen, size, group_color(group))
            ax.plot([], [], "-o", color=group_color(group), label=_group_label(str(group)))
        front = data[pareto_front(data, [recon, gen])].sort_values(recon)
        ax.scatter(front[recon], front[gen], s=140, facecolors="none", edgecolors="black", lw=1.2,
                   label="Pareto front", zorder=4)
        ax.set_xlabel(labels.get(recon, recon))
        ax.set_ylabel(labels.get(gen, gen))
        ax.grid(True, alpha=0.25)
    axes[0][0].legend(fontsize=8, frameon=False)
    fig.suptitle(f"Reconstruction ({labels.get(recon, recon)}) against generation, by tokenizer size")
    fig.tight_layout()
    caption = "Each line joins one group's sizes from small to large; circled points are Pareto-optimal."
    return _save(fig, stem, "Reconstruction vs generation", caption)


def dilemma_plot(
    table: pd.DataFrame, size: str, metrics: list[str], labels: dict[str, str],
    flags: list[DilemmaFlag], stem: Path,
) -> Figure:
    """Each metric against size per group; steps where generation worsens while rFID improves in red."""
    cols = min(3, len(metrics))
    nrows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.3 * cols, 3.3 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for group, rows in table.dropna(subset=[metric]).groupby(GROUP):
            rows = rows.sort_values(size)
            ax.plot(rows[size], rows[metric], "-o", ms=4, color=group_color(group),
                    label=_group_label(str(group)))
        for f in flags:
            if f.gen_metric == metric:
                ax.plot([f.size_from, f.size_to], [f.gen_from, f.gen_to], color=FLAG_COLOR, lw=7,
                        alpha=0.3, solid_capstyle="round", zorder=1)
        size_axis(ax)
        ax.set_title(labels.get(metric, metric), fontsize=10)
        ax.grid(True, alpha=0.25)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    if flags:
        axes[0][0].plot([], [], color=FLAG_COLOR, lw=7, alpha=0.3, label="dilemma step")
    axes[0][0].legend(fontsize=8, frameon=False)
    fig.supxlabel(f"tokenizer parameters N ({size})", fontsize=9)
    fig.tight_layout()
    caption = ("Metrics against size, with and without semantic regularisation; red: a step where "
               "rFID improves while this generation metric worsens (GigaTok's dilemma).")
    return _save(fig, stem, "Metrics by size", caption)


def encoder_decoder_plot(
    df: pd.DataFrame, metric: str, label: str, enc: str, dec: str, stem: Path
) -> Figure:
    """Encoder against decoder size per group, each size pair coloured and labelled by the mean
    ``metric`` of its runs."""
    data = df.dropna(subset=[metric, enc, dec]).groupby([GROUP, enc, dec], as_index=False)[metric].mean()
    groups = list(data.groupby(GROUP))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.4 * len(groups) + 1, 3.8), squeeze=False)
    norm = plt.Normalize(data[metric].min(), data[metric].max())
    for ax, (group, rows) in zip(axes[0], groups):
        sc = ax.scatter(rows[enc], rows[dec], c=rows[metric], cmap="viridis_r", norm=norm, s=110,
                        edgecolors="black", zorder=3)
        for _, r in rows.iterrows():
            ax.annotate(f"{r[metric]:.3g}", (r[enc], r[dec]), textcoords="offset points",
                        xytext=(7, 5), fontsize=8)
        size_axis(ax)
        size_axis(ax, "y")
        ax.set_title(_group_label(str(group)), fontsize=10)
        ax.set_xlabel(f"encoder parameters ({enc})")
        ax.grid(True, which="both", alpha=0.25)
    axes[0][0].set_ylabel(f"decoder parameters ({dec})")
    fig.colorbar(sc, ax=list(axes[0]), label=label)
    fig.suptitle(f"{label} by encoder and decoder size", fontsize=11)
    return _save(fig, stem, f"Encoder vs decoder: {label}", "Each point is the mean over runs of one "
                 "encoder/decoder pair; labels give the metric.")


def isoflop_plot(co: ComputeOptimal, label: str, size: str, points: pd.DataFrame, stem: Path) -> Figure:
    """Left: ``label`` against size per budget, each budget's parabola in log N and its optimum with its interval.
    Right: the optimal size against compute, with the law N_opt = k C^a, its band and its extrapolation."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.4))
    cmap = plt.get_cmap("viridis")
    shades = np.linspace(0.0, 0.85, len(co.budgets))
    for b, shade in zip(co.budgets, shades):
        color = cmap(shade)
        rows = points[points[BUDGET] == b.budget]
        left.scatter(rows[size], rows[co.metric], color=color, s=26, zorder=3,
                     label=f"C = {b.budget:.3g}" + (" (left out: no minimum)" if b.n_opt is None else ""))
        p = b.profile
        if p is None:
            continue
        grid = np.geomspace(p.n_min, p.n_max, GRID_POINTS)
        left.plot(grid, np.polyval(p.coeffs, np.log(grid)), color=color, lw=1.5)
        err = [[p.n_opt - b.ci[0]], [b.ci[1] - p.n_opt]] if np.isfinite(b.ci).all() else None
        left.errorbar([p.n_opt], [p.loss_opt], xerr=err, fmt="*", color=color, ms=11, capsize=4, zorder=4)
        right.errorbar([b.budget], [p.n_opt], yerr=err, fmt="o", color=color, ms=6, capsize=4, zorder=3)
    size_axis(left)
    left.set_xlabel(f"tokenizer parameters N ({size})")
    left.set_ylabel(label)
    left.set_title(f"isoFLOP profiles of {label}")
    left.legend(fontsize=8, frameon=False)
    if co.law is not None:
        budgets = np.array([p.budget for p in co.law.result.profiles])
        grid = np.geomspace(budgets.min(), co.target, GRID_POINTS)
        a, k = co.law.params["a"], co.law.params["k"]
        inside = grid <= budgets.max() * (1 + 1e-9)
        right.plot(grid[inside], k * grid[inside] ** a, color="black", lw=1.8,
                   label=f"N_opt ~ C^{plus_minus(a, co.law.se('a'))}")
        right.plot(grid[~inside], k * grid[~inside] ** a, color="black", lw=1.8, ls="--")
        samples = co.law.boot.samples if co.law.boot is not None else {}
        if len(samples.get("a", [])):
            preds = samples["k"][:, None] * grid[None] ** samples["a"][:, None]
            right.fill_between(grid, *_edges(preds), color="black", alpha=0.12, lw=0)
        if "prediction" in co.law.derived:
            lo, hi = co.law.ci("prediction")
            y = co.law.derived["prediction"]
            err = [[y - lo], [hi - y]] if np.isfinite([lo, hi]).all() else None
            right.errorbar([co.target], [y], yerr=err, fmt="D", color="black", ms=6, capsize=4)
        right.legend(fontsize=8, frameon=False)
    right.set_xscale("log")
    size_axis(right, which="y")
    right.set_xlabel(f"compute budget C ({BUDGET})")
    right.set_ylabel("loss-optimal N")
    right.set_title("compute-optimal tokenizer size")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.25)
    caption = (f"Left: runs per budget, each budget's parabola in log N and its minimum (star) with a {BAND_LEVEL}% "
               "bootstrap interval. Right: the minima against compute, the law N_opt = k C^a fitted through them "
               f"with its {BAND_LEVEL}% band, dashed to {co.target:.3g} FLOPs (diamond: the prediction).")
    return _save(fig, stem, f"compute-optimal size ({label}, {_group_label(co.group)})", caption)
