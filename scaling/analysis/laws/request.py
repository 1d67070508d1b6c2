"""What to fit: a form, the table columns it uses, and how (loss, start grid, where to predict)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from scaling.analysis.laws.optimize import Loss
from scaling.core.errors import UserError

FormName = Literal["power", "chinchilla", "isoflop"]
Grid = Literal["auto", "epoch"]


@dataclass(frozen=True)
class FitRequest:
    """A fit of column ``y`` against ``x`` (and ``x2`` for Chinchilla's D; ``group`` is the compute
    budget for isoFLOP profiles). ``target`` is where to predict: X, or N,D, or a compute budget C."""

    form: FormName
    x: str
    y: str
    x2: str | None = None
    group: str | None = None
    offset: bool = True
    loss: Loss = "huber"
    grid: Grid = "auto"
    target: tuple[float, ...] | None = None
    strict: bool = False  # isoflop: refuse a budget whose minimum is not inside its sizes, instead of leaving it out

    @property
    def inputs(self) -> list[str]:
        return [self.x] + ([self.x2] if self.x2 else [])


def check_request(request: FitRequest) -> None:
    """A UserError for a request that asks for an inconsistent fit (worded as ``scaling fit``'s flags)."""
    r = request
    if r.form == "chinchilla" and not r.x2:
        raise UserError("--form chinchilla needs --x2 COLUMN (the data axis D; --x is N)")
    if r.form != "chinchilla" and r.x2:
        raise UserError("--x2 applies only to --form chinchilla")
    if r.form == "isoflop" and not r.group:
        raise UserError("--form isoflop needs --group COLUMN (each run's compute budget C)")
    if r.form != "isoflop" and r.group:
        raise UserError("--group applies only to --form isoflop (the compute-budget column)")
    want = 2 if r.form == "chinchilla" else 1
    if r.target is not None and len(r.target) != want:
        what = "N,D" if want == 2 else ("C" if r.form == "isoflop" else "X")
        raise UserError(f"--target for --form {r.form} is {what}, got {len(r.target)} value(s)")
