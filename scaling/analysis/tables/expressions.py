"""Derived columns: ``NAME=EXPR`` where EXPR is arithmetic over a table's columns.

Column names may contain spaces and are written as they are (``Training FLOP/(6*Model Size)``) or in
backticks; the longest matching name wins. Allowed: numbers, + - * / **, parentheses and the functions
log, log10, exp, sqrt. The expression is parsed with ``ast`` and walked node by node, never ``eval``-ed.
"""

from __future__ import annotations

import ast
import operator
import re
from typing import Callable

import numpy as np
import pandas as pd

from scaling.core.errors import UserError

_BINARY: dict[type, Callable[[object, object], object]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[object], object]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS: dict[str, Callable[[object], object]] = {
    "log": np.log,
    "log10": np.log10,
    "exp": np.exp,
    "sqrt": np.sqrt,
}
_PLACEHOLDER = "__col{}"


def _substitute(expr: str, columns: list[str]) -> tuple[str, dict[str, str]]:
    """Replace column names (backticked or bare, longest first) by placeholders."""
    names: dict[str, str] = {}

    def placeholder(column: str) -> str:
        key = _PLACEHOLDER.format(len(names))
        names[key] = column
        return key

    def backticked(m: re.Match[str]) -> str:
        if m.group(1) not in columns:
            raise UserError(f"unknown column `{m.group(1)}` in expression {expr!r}")
        return placeholder(m.group(1))

    out = re.sub(r"`([^`]+)`", backticked, expr)
    ordered = sorted((c for c in columns if c.strip()), key=len, reverse=True)
    if ordered:
        bare = "|".join(re.escape(c) for c in ordered)
        out = re.sub(rf"(?<![\w.])(?:{bare})(?![\w])", lambda m: placeholder(m.group(0)), out)
    return out, names


def _walk(node: ast.AST, env: dict[str, pd.Series], expr: str) -> object:
    if isinstance(node, ast.Expression):
        return _walk(node.body, env, expr)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_walk(node.left, env, expr), _walk(node.right, env, expr))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_walk(node.operand, env, expr))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and len(node.args) == 1
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](_walk(node.args[0], env, expr))
    if isinstance(node, ast.Name):
        raise UserError(f"unknown column or function {node.id!r} in expression {expr!r}")
    raise UserError(f"unsupported syntax in expression {expr!r} (use numbers, columns, + - * / **)")


def evaluate(df: pd.DataFrame, expr: str) -> pd.Series:
    """The column that ``expr`` computes from ``df``."""
    text, names = _substitute(expr, [str(c) for c in df.columns])
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise UserError(f"cannot parse expression {expr!r}") from None
    env = {key: pd.to_numeric(df[col], errors="coerce") for key, col in names.items()}
    with np.errstate(all="ignore"):
        value = _walk(tree, env, expr)
    if isinstance(value, float):
        return pd.Series(value, index=df.index)
    return pd.Series(value, index=df.index, dtype=float)


def derive(df: pd.DataFrame, derivation: str) -> pd.DataFrame:
    """``df`` with the column ``derivation`` = "NAME=EXPR" added (or replaced)."""
    name, sep, expr = derivation.partition("=")
    if not sep or not name.strip() or not expr.strip():
        raise UserError(f"--derive wants NAME=EXPRESSION, got {derivation!r}")
    out = df.copy()
    out[name.strip()] = evaluate(df, expr)
    return out
