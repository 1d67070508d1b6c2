"""Fitted laws in words, for people: "rFID falls as N^-0.21 ± 0.04 towards 0.62 [0.40, 0.75]"."""

from __future__ import annotations

import math

import numpy as np

from scaling.analysis.laws.outcome import FitOutcome


def num(v: float, digits: int = 3) -> str:
    """A number in ``digits`` significant figures, in scientific notation when very large or small."""
    if v is None or not math.isfinite(v):
        return "n/a"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        mantissa, exp = f"{v:.{digits - 1}e}".split("e")
        return f"{mantissa}e{int(exp)}"
    return f"{v:#.{digits}g}".rstrip(".")


# A lower bound this small relative to the upper one is zero for a reader (E pinned at its bound).
NEGLIGIBLE = 1e-4


def interval(lo: float, hi: float) -> str:
    """``[lo, hi]``; an unbounded end as ``inf)`` or ``(-inf``; nothing where there is no interval (NaN)."""
    if math.isnan(lo) or math.isnan(hi):
        return ""
    low = "(-inf" if math.isinf(lo) else "[" + ("~0" if 0 < lo < NEGLIGIBLE * abs(hi) < math.inf else num(lo))
    high = "inf)" if math.isinf(hi) else num(hi) + "]"
    return f"{low}, {high}"


def floor_at_bound(out: FitOutcome) -> bool:
    """Whether E's whole interval is negligible beside the data: every replicate put it at its bound, 0."""
    hi = out.ci("E")[1]
    scale = float(np.min(np.abs(out.y))) if np.size(out.y) else 0.0
    return math.isfinite(hi) and 0 <= hi < NEGLIGIBLE * scale


def floor(out: FitOutcome) -> str:
    """E with its interval; '~0' alone where it is at its bound."""
    if floor_at_bound(out):
        return "~0"
    return f"{num(out.params['E'])} {interval(*out.ci('E'))}".rstrip()


def plus_minus(v: float, se: float) -> str:
    """'0.347 ± 0.015': the value to the decimals of the SE's two significant digits (at least 2)."""
    if not math.isfinite(se) or se <= 0:
        return f"{v:.2f}"
    decimals = max(2, 1 - math.floor(math.log10(se)))
    return f"{v:.{decimals}f} ± {se:.{decimals}f}"


def _exponent(out: FitOutcome, key: str, var: str) -> tuple[str, str]:
    """('falls', 'N^-0.21 ± 0.04'), or ('rises', 'N^0.10 ± 0.05') for a negative exponent."""
    v, se = out.params[key], out.se(key)
    return ("falls", f"{var}^-{plus_minus(v, se)}") if v >= 0 else ("rises", f"{var}^{plus_minus(-v, se)}")


def _prediction(out: FitOutcome, what: str, names: dict[str, str]) -> str:
    if "prediction" not in out.derived or not out.request.target:
        return ""
    at = ", ".join(
        f"{names.get(name, name)} = {num(t)}" for name, t in zip(_target_names(out), out.request.target)
    )
    lo, hi = out.ci("prediction")
    return f" At {at} the fit predicts {what} = {num(out.derived['prediction'])} {interval(lo, hi)}."


def _target_names(out: FitOutcome) -> list[str]:
    return [out.request.group or "C"] if out.request.form == "isoflop" else out.request.inputs


def describe(out: FitOutcome, names: dict[str, str] | None = None) -> str:
    """One or two sentences stating the law with bootstrap SEs and 95% intervals; ``names`` maps
    column names to how the text should call them (e.g. params_total -> N)."""
    names = names or {}
    s = out.request
    x, y, x2 = (names.get(c, c) if c else c for c in (s.x, s.y, s.x2))
    if out.no_law:
        return f"{y}: {out.no_law}."
    if s.form == "isoflop":
        a = _exponent_plain(out, "a")
        return f"The loss-optimal {x} grows as C^{a}." + _prediction(out, f"optimal {x}", names)
    verb, term = _exponent(out, "alpha", x)
    text = f"{y} {verb} as {term}"
    if s.form == "chinchilla":
        verb2, term2 = _exponent(out, "beta", x2 or "D")
        text += f" and {term2}" if verb2 == verb else f" and {verb2} as {term2}"
    if s.offset:
        where = "towards a floor of" if verb == "falls" else "from a base of"
        text += f", {where} {floor(out)}"
    text += "."
    if s.form == "chinchilla":
        # The exponent needs only C proportional to N D (C = 6 N D for a language model; a tokenizer's FLOPs per
        # image grow with its size too, but not exactly in proportion)
        text += f" Compute-optimal {x} grows as C^{_exponent_plain(out, 'a')} (where compute grows as {x} x {x2})."
    return text + _prediction(out, y, names)


def _exponent_plain(out: FitOutcome, key: str) -> str:
    return plus_minus(out.derived.get(key, out.params.get(key, math.nan)), out.se(key))
