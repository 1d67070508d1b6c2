"""Reconstruction against generation: per-size tables, the Pareto front, GigaTok's dilemma, and
encoder-vs-decoder scaling.

GigaTok found that, without semantic regularisation, growing the tokenizer improves reconstruction
(rFID falls) while the generation it enables worsens (AR-probe gFID and AR val loss rise, linear probe
falls). ``dilemma`` flags exactly that between consecutive sizes, per regularisation group.

Generation is measured by a probe of one kind per metric (``probe/``: the AR probe; ``flow/``: the flow probe),
so no table or law mixes probes. Where the runs hold both discrete and continuous tokenizers, the groups split
by that too ("continuous, with"), and where they hold tokens of different structures (multi-scale, product,
coarse-to-fine, nested; "plain" for none), by those ("multi-scale, without"), so that no law is fitted, and no two
runs of one size averaged, across bottleneck kinds or token structures either. An AR probe that predicted the next
scale (``probe.order = "scale"``, VAR's) rather than the next token splits its runs off the same way ("multi-scale,
next-scale AR, without"): its generation metrics measure another generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaling.analysis.tables.runs import higher_is_better

RECONSTRUCTION = ("eval/rfid", "eval/lpips", "eval/psnr")
GENERATION = ("probe/gfid", "probe/ar_val_loss", "probe/linear_acc", "flow/gfid", "flow/val_loss", "flow/linear_acc")
SEMANTIC_WEIGHT = "loss.semantic_weight"
QUANTIZER_KIND = "quantizer.kind"
# the params that structure a run's tokens (as scaling.core.config.schema names them)
STRUCTURE_PARAMS = {"product": "quantizer.parts", "multi-scale": "quantizer.scales",
                    "coarse-to-fine": "model.coarse_to_fine", "nested": "model.nested_dropout"}
AR_ORDER = "probe.order"  # "scale": the AR probe predicted the next scale
CONTINUOUS_KINDS = ("kl", "continuous")  # as scaling.core.config.schema says (the analysis does not import core)
GROUP = "semantic reg"
NO_SPLIT = "all runs"


def semantic_groups(df: pd.DataFrame, column: str = SEMANTIC_WEIGHT) -> pd.Series:
    """'with' / 'without' semantic regularisation per run (weight > 0), or one group if unknown; prefixed by
    'discrete, ' or 'continuous, ' where the runs hold tokenizers of both kinds, and by the token structure
    ('multi-scale, ', ...) where they hold more than one."""
    semantic = pd.Series(NO_SPLIT, index=df.index)
    weight = pd.to_numeric(df[column], errors="coerce") if column in df.columns else None
    if weight is not None and not weight.isna().all():
        semantic = pd.Series(np.where(weight.fillna(0) > 0, "with", "without"), index=df.index)
    splits = [s for s in (bottleneck_kinds(df), token_structures(df)) if s is not None]
    if not splits:
        return semantic
    prefix = splits[0] if len(splits) == 1 else splits[0] + ", " + splits[1]
    return prefix.where(semantic == NO_SPLIT, prefix + ", " + semantic)


def bottleneck_kinds(df: pd.DataFrame) -> pd.Series | None:
    """'discrete' or 'continuous' per run, when the runs hold both (runs without the param count as discrete,
    the default); None otherwise."""
    if QUANTIZER_KIND not in df.columns:
        return None
    continuous = df[QUANTIZER_KIND].isin(CONTINUOUS_KINDS)
    if continuous.all() or not continuous.any():
        return None
    return pd.Series(np.where(continuous, "continuous", "discrete"), index=df.index)


def token_structures(df: pd.DataFrame) -> pd.Series | None:
    """How each run's tokens are structured: 'multi-scale', 'product', 'coarse-to-fine' (which implies nested
    dropout), 'nested', joined ('product, multi-scale'), or 'plain'; 'next-scale AR' joins them where the AR probe
    predicted the next scale. When the runs hold more than one (runs without the params count as plain and
    next-token, the defaults); None otherwise."""
    flags = {name: df[col].map(_structured) if col in df.columns else pd.Series(False, index=df.index)
             for name, col in STRUCTURE_PARAMS.items()}
    flags["nested"] = flags["nested"] & ~flags["coarse-to-fine"]
    flags["next-scale AR"] = df[AR_ORDER].astype(str).eq("scale") if AR_ORDER in df.columns else \
        pd.Series(False, index=df.index)
    labels = pd.Series([", ".join(name for name, on in flags.items() if on[i]) or "plain" for i in df.index],
                       index=df.index)
    return labels if labels.nunique() > 1 else None


def _structured(value: object) -> bool:
    """Whether a structure param's value (as MLflow logged it, or as a CSV or pandas holds it) turns it on:
    true, more than one part, a non-empty list of scales."""
    text = str(value).strip().lower()
    if text in ("", "nan", "none", "false", "[]", "()"):
        return False
    return text == "true" or text.startswith(("[", "(")) or (text.replace(".", "", 1).isdigit() and float(text) > 1)


def per_size(df: pd.DataFrame, size: str, metrics: list[str], groups: pd.Series) -> pd.DataFrame:
    """Mean of each metric per (group, size), with the number of runs averaged."""
    present = [m for m in metrics if m in df.columns and df[m].notna().any()]
    frame = df[[size] + present].assign(**{GROUP: groups.to_numpy()})
    table = frame.groupby([GROUP, size], as_index=False).agg(
        **{m: (m, "mean") for m in present}, runs=(size, "size")
    )
    return table.sort_values([GROUP, size]).reset_index(drop=True)


def pareto_front(df: pd.DataFrame, objectives: list[str]) -> pd.Series:
    """True for rows no other row beats on every objective (direction from the metric name)."""
    data = df[objectives].to_numpy(dtype=float)
    signs = np.array([-1.0 if higher_is_better(m) else 1.0 for m in objectives])
    costs = data * signs  # lower is better for every column now
    valid = ~np.isnan(costs).any(axis=1)
    front = np.zeros(len(df), dtype=bool)
    for i in np.flatnonzero(valid):
        others = costs[valid]
        dominated = ((others <= costs[i]).all(axis=1) & (others < costs[i]).any(axis=1)).any()
        front[i] = not dominated
    return pd.Series(front, index=df.index)


@dataclass(frozen=True)
class DilemmaFlag:
    """Between two consecutive sizes of one group, reconstruction improved and generation worsened."""

    group: str
    size_from: float
    size_to: float
    recon_metric: str
    recon_from: float
    recon_to: float
    gen_metric: str
    gen_from: float
    gen_to: float

    def to_dict(self) -> dict[str, object]:
        return self.__dict__.copy()


def _improves(metric: str, before: float, after: float) -> bool:
    return after > before if higher_is_better(metric) else after < before


def dilemma(table: pd.DataFrame, size: str, recon: str = "eval/rfid") -> list[DilemmaFlag]:
    """Flags for every consecutive size pair where ``recon`` improves but a generation metric worsens."""
    if recon not in table.columns:
        return []
    flags = []
    for group, rows in table.groupby(GROUP):
        rows = rows.sort_values(size)
        for (_, a), (_, b) in zip(rows.iloc[:-1].iterrows(), rows.iloc[1:].iterrows()):
            if not _improves(recon, a[recon], b[recon]):
                continue
            for gen in GENERATION:
                if gen in rows.columns and _improves(gen, b[gen], a[gen]):  # b is worse than a
                    flags.append(
                        DilemmaFlag(str(group), a[size], b[size], recon, a[recon], b[recon],
                                    gen, a[gen], b[gen])
                    )
    return flags


@dataclass(frozen=True)
class Trend:
    """Over all sizes of one group: how reconstruction and one generation metric move with size.

    ``recon_rho`` and ``gen_rho`` are Spearman correlations of each metric's *quality* (sign-adjusted
    so that positive means better) with size; the dilemma is recon_rho > 0 with gen_rho < 0.
    """

    group: str
    recon_metric: str
    gen_metric: str
    smallest: float
    largest: float
    recon: tuple[float, float]
    gen: tuple[float, float]
    recon_rho: float
    gen_rho: float

    @property
    def dilemma(self) -> bool:
        return self.recon_rho >= TREND_RHO and self.gen_rho <= -TREND_RHO


# A trend counts when the rank correlation of quality with size is at least this strong.
TREND_RHO = 0.6


def _quality_rho(metric: str, size: pd.Series, values: pd.Series) -> float:
    rho = size.rank().corr(values.rank())
    return float(rho if higher_is_better(metric) else -rho)


def trends(table: pd.DataFrame, size: str, recon: str = "eval/rfid") -> list[Trend]:
    """Per group and generation metric, the size trend of both (groups with >= 3 sizes)."""
    if recon not in table.columns:
        return []
    out = []
    for group, rows in table.groupby(GROUP):
        for gen in GENERATION:
            if gen not in rows.columns:
                continue
            data = rows.dropna(subset=[recon, gen]).sort_values(size)
            if len(data) < 3:
                continue
            first, last = data.iloc[0], data.iloc[-1]
            out.append(Trend(
                str(group), recon, gen, first[size], last[size], (first[recon], last[recon]),
                (first[gen], last[gen]), _quality_rho(recon, data[size], data[recon]),
                _quality_rho(gen, data[size], data[gen]),
            ))
    return out


# Encoder and decoder sizes whose logs correlate at least this strongly grew together: a regression cannot tell
# their effects apart (in the tiny study it gave "+229024.5% per doubling of the encoder").
COLLINEAR = 0.95


@dataclass(frozen=True)
class EncoderDecoder:
    """log metric = c + enc * log N_encoder + dec * log N_decoder, fitted by least squares; or, where the two
    sizes grew together (``corr``, of their logs, at least ``COLLINEAR``), no fit (``enc``, ``dec`` NaN)."""

    metric: str
    group: str
    enc: float
    dec: float
    runs: int
    r2: float
    corr: float

    @property
    def separable(self) -> bool:
        return abs(self.corr) < COLLINEAR

    def verdict(self, label: str) -> str:
        """Which side's growth helps the metric (called ``label``) more, per doubling; or that the data cannot
        tell."""
        if not self.separable:
            return (f"the data cannot separate encoder from decoder size: they grew together (correlation of their "
                    f"logs {self.corr:.2f} over {self.runs} runs); vary one with the other fixed to tell them apart")
        sign = -1.0 if higher_is_better(self.metric) else 1.0
        gain_enc, gain_dec = -sign * self.enc, -sign * self.dec  # positive: doubling helps
        better = "decoder" if gain_dec > gain_enc else "encoder"
        pct = {k: 100 * (2.0**v - 1) for k, v in (("enc", self.enc), ("dec", self.dec))}
        return (
            f"doubling the encoder changes {label} by {pct['enc']:+.1f}%, doubling the decoder by "
            f"{pct['dec']:+.1f}%: scaling the {better} helps more (R^2 = {self.r2:.2f}, {self.runs} runs)"
        )


def encoder_decoder(
    df: pd.DataFrame, metric: str, group: str = NO_SPLIT,
    enc: str = "params_encoder", dec: str = "params_decoder",
) -> EncoderDecoder | None:
    """Elasticities of ``metric`` to encoder and decoder size within one group of runs where both sizes vary
    (None where either is constant), unless they vary together (``EncoderDecoder.separable``)."""
    if not {metric, enc, dec} <= set(df.columns):
        return None
    data = df[[metric, enc, dec]].apply(pd.to_numeric, errors="coerce").dropna()
    data = data[(data > 0).all(axis=1)]
    if len(data) < 4 or data[enc].nunique() < 2 or data[dec].nunique() < 2:
        return None
    log_enc, log_dec = np.log(data[enc].to_numpy()), np.log(data[dec].to_numpy())
    corr = float(np.corrcoef(log_enc, log_dec)[0, 1])
    if abs(corr) >= COLLINEAR:
        return EncoderDecoder(metric, group, math.nan, math.nan, len(data), math.nan, corr)
    design = np.column_stack([np.ones(len(data)), log_enc, log_dec])
    target = np.log(data[metric].to_numpy())
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    resid = target - design @ coef
    total = ((target - target.mean()) ** 2).sum()
    r2 = 1 - (resid**2).sum() / total if total > 0 else 1.0
    return EncoderDecoder(metric, group, float(coef[1]), float(coef[2]), len(data), float(r2), corr)
