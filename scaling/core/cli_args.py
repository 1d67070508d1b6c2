"""argparse types shared by the subcommands' parsers: a bad value is argparse's one-line usage error."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """A finite number above zero of ``kind`` (a count of GPUs, a memory size, a polling interval)."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
        return value

    parse.__name__ = kind.__name__  # what argparse names in its messages
    return parse
