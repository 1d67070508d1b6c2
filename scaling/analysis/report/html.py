"""The HTML report: one self-contained page (inline CSS) with figures referenced relative to it."""

from __future__ import annotations

import datetime as dt
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from scaling.analysis.laws.forms import COEF_NAMES
from scaling.analysis.laws.outcome import FitOutcome
from scaling.analysis.laws.words import interval, num
from scaling.analysis.report.plots import Figure, size_label
from scaling.analysis.tables.compute import ComputeOptimal
from scaling.analysis.tables.runs import SIZE_PARAMS
from scaling.analysis.tables.tradeoff import (
    GENERATION, GROUP, TREND_RHO, DilemmaFlag, EncoderDecoder, Trend,
)

# Columns of the runs table shown in the report (when present), in this order.
RUN_COLUMNS = ("run_name", "sweep", "params_total", "params_encoder", "params_decoder", "quantizer.kind",
               "loss.semantic_weight", "train.flops_budget", "train/images_seen", "train/flops", "val/recon_loss",
               "eval/rfid", "eval/lpips", "eval/psnr", "probe/gfid", "probe/ar_val_loss",
               "probe/linear_acc", "flow/gfid", "flow/val_loss", "flow/linear_acc")
STYLE = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#222;margin:0;
 background:#fafafa;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:32px 0 10px;border-bottom:2px solid #e5e5e5;
 padding-bottom:4px}h3{font-size:16px;margin:18px 0 6px}
.meta{color:#666;font-size:13px;margin-bottom:12px}
ul.laws{padding-left:20px}ul.laws li{margin:6px 0}
.warn{background:#fff7e0;border-left:4px solid #f0b400;padding:6px 10px;margin:4px 0 10px;font-size:13px}
.flag{background:#fdecec;border-left:4px solid #d62728;padding:6px 10px;margin:4px 0;font-size:13px}
.ok{background:#eef7ee;border-left:4px solid #2ca02c;padding:6px 10px;margin:4px 0;font-size:13px}
.skip{color:#777;font-size:13px}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0 16px;width:100%}
th,td{border:1px solid #ddd;padding:4px 7px;text-align:right;white-space:nowrap}
th{background:#f2f2f2}td.l,th.l{text-align:left}tr:nth-child(even) td{background:#fafafa}
.figs{display:flex;flex-wrap:wrap;gap:18px}
figure{margin:0;flex:1 1 480px;max-width:100%}figure img{width:100%;border:1px solid #eee}
figcaption{font-size:12.5px;color:#555}
.wide figure{flex-basis:100%}
.scroll{overflow-x:auto}
code{background:#f3f3f3;padding:0 3px;border-radius:3px}
"""


@dataclass
class FitEntry:
    """One attempted fit: its outcome, or why it was skipped."""

    metric: str
    label: str
    group: str
    outcome: FitOutcome | None
    skipped: str | None


@dataclass
class Analysis:
    """Everything the report shows."""

    source: str
    runs: pd.DataFrame
    size: str
    target: float | None
    bootstrap: int
    fits: list[FitEntry] = field(default_factory=list)
    figures: dict[str, list[Figure]] = field(default_factory=dict)
    per_size: pd.DataFrame | None = None
    pareto: pd.DataFrame | None = None
    flags: list[DilemmaFlag] = field(default_factory=list)
    trends: list[Trend] = field(default_factory=list)
    encoder_decoder: list[EncoderDecoder] = field(default_factory=list)
    compute_fits: list[FitEntry] = field(default_factory=list)  # each metric against training FLOPs
    compute_optimal: list[ComputeOptimal] = field(default_factory=list)  # an isoFLOP grid's optimal sizes
    measurement_warnings: list[str] = field(default_factory=list)  # metrics measured differently across runs
    shorter_runs: int = 0  # runs left out of the laws against size: others of their size saw more images
    repeats: pd.DataFrame | None = None  # grid points run more than once (``tables.repeats.repeats``)


def esc(text: object) -> str:
    return html.escape(str(text))


def _group_name(group: str) -> str:
    return {"with": "with semantic reg.", "without": "without semantic reg."}.get(group, group)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return esc(num(value))
    return esc(value)


def _table(df: pd.DataFrame, left: tuple[str, ...] = ()) -> str:
    head = "".join(f'<th class="{"l" if c in left else ""}">{esc(c)}</th>' for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cells = "".join(
            f'<td class="{"l" if c in left else ""}">{_cell(r[c])}</td>' for c in df.columns
        )
        rows.append(f"<tr>{cells}</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>'


def _figures(figs: list[Figure], base: Path, wide: bool = False) -> str:
    parts = []
    for f in figs:
        png, svg = (os.path.relpath(p, base) for p in (f.png, f.svg))
        parts.append(
            f'<figure><img src="{esc(png)}" alt="{esc(f.title)}"><figcaption><b>{esc(f.title)}.</b> '
            f'{esc(f.caption)} <a href="{esc(svg)}">SVG</a></figcaption></figure>'
        )
    return f'<div class="figs{" wide" if wide else ""}">{"".join(parts)}</div>'


def _laws(entries: list[FitEntry]) -> str:
    items = []
    for e in entries:
        title = f"<b>{esc(e.label)}</b>, {esc(_group_name(e.group))}"
        if e.outcome is None:
            items.append(f'<li>{title}: <span class="skip">not fitted: {esc(e.skipped)}</span></li>')
            continue
        o = e.outcome
        form = "" if o.request.form == "power" else f", {o.request.form} form in (N, D)"
        warns = ""
        if o.warnings:
            warns = '<div class="warn">Weak fit: ' + "; ".join(esc(w) for w in o.warnings) + ".</div>"
        items.append(f"<li>{title}{esc(form)} ({o.n_points} runs): {esc(o.law)}{warns}</li>")
    return f'<ul class="laws">{"".join(items)}</ul>' if items else "<p>No metric could be fitted.</p>"


def _fit_table(entries: list[FitEntry]) -> str:
    rows = []
    for e in entries:
        if e.outcome is None:
            continue
        o = e.outcome
        row = {"metric": e.label, "group": _group_name(e.group), "form": o.request.form, "runs": o.n_points}
        shown = {k: v for k, v in o.params.items() if k not in COEF_NAMES} | o.derived
        for name, value in shown.items():
            row[name] = f"{num(value)} {interval(*o.ci(name))}".strip()
        row["converged"] = "yes" if o.converged else "NO"
        if o.boot is not None:
            row["replicates used / failed"] = f"{o.boot.summary()['used']} / {o.boot.n_failed}"
        rows.append(row)
    if not rows:
        return ""
    return (
        "<h3>Fitted parameters (95% bootstrap intervals)</h3>"
        + _table(pd.DataFrame(rows).fillna(""), left=("metric", "group", "form"))
        + '<p class="skip">Coefficients A, B and every value at full precision are in '
        "<code>fits.csv</code> and <code>fits.json</code>.</p>"
    )


def _sensitivity(a: Analysis) -> str:
    rows = []
    for e in a.fits:
        o = e.outcome
        if o is None or not o.sensitivity:
            continue
        row = {"metric": e.label, "group": _group_name(e.group)}
        for s in o.sensitivity:
            params = s.get("params")
            cell = "skipped"
            if params:
                exps = ", ".join(f"{k} {num(params[k])}" for k in ("alpha", "beta") if k in params)
                floor = f", E {num(params['E'])}" if "E" in params else ""
                cell = f"{exps}{floor} ({s['n_points']} runs)"
            row[str(s["variant"])] = cell
        rows.append(row)
    if not rows:
        return "<p>No sensitivity refits (none requested, or no fit succeeded).</p>"
    return (
        "<p>Each fit redone with squared error instead of Huber, without outliers (log residual "
        "beyond 3 robust SDs), and without the largest size. Large moves mean the law rests on a "
        "few points or on the loss choice.</p>" + _table(pd.DataFrame(rows), left=("metric", "group"))
    )


def _trend_text(a: Analysis, labels: dict[str, str]) -> str:
    """One line per group: how every metric moved from the smallest to the largest size."""
    parts = []
    by_group: dict[str, list[Trend]] = {}
    for t in a.trends:
        by_group.setdefault(t.group, []).append(t)
    for group, trends in by_group.items():
        first = trends[0]
        recon = labels.get(first.recon_metric, first.recon_metric)
        moves = [f"{esc(recon)} {num(first.recon[0])} &rarr; {num(first.recon[1])}"] + [
            f"{esc(labels.get(t.gen_metric, t.gen_metric))} {num(t.gen[0])} &rarr; {num(t.gen[1])}"
            for t in trends
        ]
        head = (f"{esc(_group_name(group))}, from {size_label(first.smallest)} to "
                f"{size_label(first.largest)}: {', '.join(moves)}.")
        worse = [esc(labels.get(t.gen_metric, t.gen_metric)) for t in trends if t.dilemma]
        if worse:
            parts.append(f'<div class="flag"><b>Dilemma.</b> {head} Reconstruction improves with size '
                         f"while {', '.join(worse)} worsen(s) (rank correlation with size beyond "
                         f"{TREND_RHO}).</div>")
        else:
            parts.append(f'<div class="ok">{head}</div>')
    return "".join(parts)


def _steps(a: Analysis, labels: dict[str, str]) -> str:
    """Consecutive-size steps where rFID improves, with the generation metrics that worsened."""
    if not a.flags:
        return ""
    rows: dict[tuple[str, float, float], dict[str, str]] = {}
    for f in a.flags:
        key = (f.group, f.size_from, f.size_to)
        row = rows.setdefault(key, {
            "group": _group_name(f.group),
            "step": f"{size_label(f.size_from)} \u2192 {size_label(f.size_to)}",
            labels.get(f.recon_metric, f.recon_metric): f"{num(f.recon_from)} \u2192 {num(f.recon_to)}",
        })
        row[labels.get(f.gen_metric, f.gen_metric)] = f"{num(f.gen_from)} \u2192 {num(f.gen_to)}"
    cols = ["group", "step", labels.get("eval/rfid", "eval/rfid")] + [labels.get(g, g) for g in GENERATION]
    df = pd.DataFrame(list(rows.values())).reindex(columns=cols).dropna(axis=1, how="all").fillna("")
    return ("<h3>Size steps where reconstruction improved but generation worsened</h3>"
            "<p class='skip'>Blank: that metric did not worsen on this step. Small steps can be noise; "
            "the trend lines above use every size.</p>" + _table(df, left=("group", "step")))


def _tradeoff_text(a: Analysis, labels: dict[str, str]) -> str:
    parts = [_trend_text(a, labels)]
    for ed in a.encoder_decoder:
        parts.append(f'<div class="ok">Encoder vs decoder ({esc(_group_name(ed.group))}): '
                     f"{esc(ed.verdict(labels.get(ed.metric, ed.metric)))}.</div>")
    parts.append(_steps(a, labels))
    if a.pareto is not None and not a.pareto.empty:
        parts.append("<h3>Pareto front (rFID against the first generation metric)</h3>"
                     + _table(_readable(a.pareto, a.size, labels), left=("group",)))
    if a.per_size is not None and not a.per_size.empty:
        parts.append("<h3>Mean metrics per size</h3>"
                     + _table(_readable(a.per_size, a.size, labels), left=("group",)))
    return "".join(parts)


def _readable(df: pd.DataFrame, size: str, labels: dict[str, str]) -> pd.DataFrame:
    out = df.copy()
    out[size] = out[size].map(size_label)
    out[GROUP] = out[GROUP].map(_group_name)
    return out.rename(columns={size: "N", GROUP: "group"} | labels)


def _compute_optimal(co: ComputeOptimal, labels: dict[str, str]) -> str:
    """One group's compute-optimal sizes: a row per budget, then the law through them (or why there is none)."""
    label = labels.get(co.metric, co.metric)
    rows = []
    for b in co.budgets:
        rows.append({"budget C (FLOPs)": f"{b.budget:.3g}", "runs": b.runs, "sizes": b.sizes,
                     "optimal N (95% interval)": f"{size_label(b.n_opt)} [{size_label(b.ci[0])}, "
                     f"{size_label(b.ci[1])}]" if b.n_opt is not None else "",
                     f"{label} at optimum": num(b.loss_at_opt) if b.loss_at_opt is not None else "",
                     "resamples without a minimum": f"{b.failed_share:.0%}",
                     "note": b.left_out or ""})
    head = f"<h3>Compute-optimal size by {esc(label)}, {esc(_group_name(co.group))}</h3>"
    if co.law is None:
        law = f'<div class="warn">No law over budgets: {esc(co.why_no_law)}.</div>'
    else:
        warns = "".join(f'<div class="warn">{esc(w)}.</div>' for w in co.law.warnings)
        law = f'<div class="ok">{esc(co.law.law)}</div>{warns}'
    return head + _table(pd.DataFrame(rows), left=("note",)) + law


def _compute(a: Analysis, labels: dict[str, str], base: Path) -> str:
    if not a.compute_fits and not a.compute_optimal:
        return "<p>No run logged its training FLOPs (<code>train/flops</code>).</p>"
    intro = ("<p>C is what a run spent training: FLOPs per image as <code>scaling plan</code> counts them "
             "(tokenizer, and LPIPS, discriminator and teacher where on) times images seen. Each metric's law "
             "against C is fitted over its compute-efficient runs, those better than every cheaper run.</p>")
    parts = [intro, _laws(a.compute_fits), _figures(a.figures.get("compute", []), base), _fit_table(a.compute_fits)]
    if a.figures.get("surface"):
        parts += ["<h3>Over size and data</h3><p>The (N, D) law L = E + A N^-alpha + B D^-beta over runs of each "
                  "size trained on several amounts of data (a sweep's cooldown branches, or budgets).</p>",
                  _figures(a.figures["surface"], base)]
    parts += [_compute_optimal(co, labels) for co in a.compute_optimal]
    return "".join(parts)


def _shorter(a: Analysis) -> str:
    if not a.shorter_runs:
        return ""
    return (f"<p>Against size, each size's runs that saw the most images are fitted; {a.shorter_runs} run(s) that "
            "saw fewer (cooldown branches, smaller budgets) are in the (N, D) law and the laws against compute.</p>")


def _repeats(a: Analysis, labels: dict[str, str]) -> str:
    """Grid points run more than once: the mean of their runs and its 95% interval, per metric."""
    if a.repeats is None or a.repeats.empty:
        return ""
    rows = [{"group": _group_name(r["group"]), "N": size_label(r[a.size]),
             "images seen": f"{r['train/images_seen']:.3g}" if pd.notna(r["train/images_seen"]) else "",
             "metric": labels.get(r["metric"], r["metric"]), "runs": int(r["runs"]),
             "mean (95% interval)": f"{num(r['mean'])} [{num(r['low'])}, {num(r['high'])}]"}
            for _, r in a.repeats.iterrows()]
    return ("<h3>Repeated runs</h3><p>Grid points run more than once (seeds): the mean of their runs and the "
            "mean's 95% Student-t interval; the plots draw them as a bar over the runs.</p>"
            + _table(pd.DataFrame(rows), left=("group", "metric")))


def _runs(a: Analysis) -> str:
    cols = [c for c in RUN_COLUMNS if c in a.runs.columns and a.runs[c].notna().any()]
    df = a.runs[cols].sort_values(a.size) if a.size in cols else a.runs[cols].copy()
    for col in SIZE_PARAMS:
        if col in df.columns:
            df[col] = df[col].map(lambda v: size_label(v) if pd.notna(v) else "")
    return _table(df, left=("run_name", "sweep"))


def _method(a: Analysis) -> str:
    return (
        "<p>N is the counted parameter total of the tokenizer (<code>"
        f"{esc(a.size)}</code>). Each law is fitted by minimising the Huber loss (delta 1e-3) of log "
        "residuals summed over runs, with L-BFGS-B from a grid of starts; coefficients are "
        "log-parameterised. Intervals are 95% percentile intervals from "
        f"{a.bootstrap} bootstrap resamples of runs; replicates start from the full-data optimum and "
        "random perturbations of it, and those that do not converge are left out (and counted). "
        "Linear-probe accuracy is fitted as its error, 1 - accuracy, so that every fitted metric "
        "falls with scale when it improves.</p>"
    )


def write_report(a: Analysis, path: Path, labels: dict[str, str]) -> Path:
    """Render ``a`` to ``path`` and return it; ``labels`` name metric columns for people."""
    base = path.parent
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    target = f" &middot; extrapolated to N = {size_label(a.target)}" if a.target else ""
    sections = [
        f"<h1>Scaling report</h1><div class='meta'>source <code>{esc(a.source)}</code> &middot; "
        f"{len(a.runs)} runs &middot; {a.bootstrap} bootstrap replicates per fit{target} &middot; {when}</div>",
        "<h2>Fitted laws</h2>" + "".join(f'<div class="flag">{esc(w)}.</div>' for w in a.measurement_warnings)
        + _laws(a.fits),
        "<h2>Scaling with tokenizer size</h2>" + _shorter(a) + _figures(a.figures.get("scaling", []), base)
        + _fit_table(a.fits) + _repeats(a, labels),
        "<h2>Scaling with compute</h2>" + _compute(a, labels, base),
        "<h2>Reconstruction vs generation</h2>" + _tradeoff_text(a, labels)
        + _figures(a.figures.get("tradeoff", []), base, wide=True)
        + _figures(a.figures.get("encoder_decoder", []), base),
        "<h2>Sensitivity of the fits</h2>" + _sensitivity(a),
        "<h2>Runs</h2>" + _runs(a),
        "<h2>Method</h2>" + _method(a),
    ]
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Scaling report: "
        f"{esc(a.source)}</title><style>{STYLE}</style></head><body><main>{''.join(sections)}</main>"
        "</body></html>"
    )
    path.write_text(page, encoding="utf-8")
    return path
