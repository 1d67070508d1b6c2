"""Fitted laws in words, for people: "rFID falls as N^-0.21 ± 0.04 towards 0.62 [0.40, 0.75]"."""

from __future__ import annotations

import math

from scaling.analysis.spec import FitOutcome


def num(v: float, digits: int = 3) -> str:
    """A number in ``digits`` significant figures, in scientific notation when very large or small."""
    if v is None or not math.isfinite(v):
        return "n/a"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        mantissa, exp = f"{v:.{digits - 1}e}".split("e")
        return f"{mantissa}e{int(exp)}"
    return f"{v:#.{digits}g}".rstrip(".")


def interval(lo: float, hi: float) -> str:
    return f"[{num(lo)}, {num(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else ""


def _exponent(out: FitOutcome, key: str, var: str) -> tuple[str, str]:
    """('falls', 'N^-0.21 ± 0.04'), or ('rises', 'N^0.10 ± 0.05') for a negative exponent."""
    v, se = out.params[key], out.se(key)
    pm = f" ± {se:.2f}" if math.isfinite(se) else ""
    return ("falls", f"{var}^-{v:.2f}{pm}") if v >= 0 else ("rises", f"{var}^{-v:.2f}{pm}")


def _prediction(out: FitOutcome, what: str) -> str:
    if "prediction" not in out.derived or not out.spec.target:
        return ""
    at = ", ".join(f"{name} = {num(t)}" for name, t in zip(_target_names(out), out.spec.target))
    lo, hi = out.ci("prediction")
    return f" At {at} the fit predicts {what} = {num(out.derived['prediction'])} {interval(lo, hi)}."


def _target_names(out: FitOutcome) -> list[str]:
    return [out.spec.group or "C"] if out.spec.form == "isoflop" else out.spec.inputs


def describe(out: FitOutcome) -> str:
    """One or two sentences stating the law with bootstrap SEs and 95% intervals."""
    s = out.spec
    if s.form == "isoflop":
        a = _exponent_plain(out, "a")
        return f"The loss-optimal {s.x} grows as C^{a}." + _prediction(out, f"optimal {s.x}")
    verb, term = _exponent(out, "alpha", s.x)
    text = f"{s.y} {verb} as {term}"
    if s.form == "chinchilla":
        verb2, term2 = _exponent(out, "beta", s.x2 or "D")
        text += f" and {term2}" if verb2 == verb else f" and {verb2} as {term2}"
    if s.offset:
        lo, hi = out.ci("E")
        text += f", towards a floor of {num(out.params['E'])} {interval(lo, hi)}".rstrip()
    text += "."
    if s.form == "chinchilla":
        text += f" Compute-optimal {s.x} grows as C^{_exponent_plain(out, 'a')} (C = 6 {s.x} {s.x2})."
    return text + _prediction(out, s.y)


def _exponent_plain(out: FitOutcome, key: str) -> str:
    v = out.derived.get(key, out.params.get(key, math.nan))
    se = out.se(key)
    return f"{v:.3f}" + (f" ± {se:.3f}" if math.isfinite(se) else "")
