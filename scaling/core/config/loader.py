"""Build a validated ``Config`` from a TOML file plus ``--section.key value`` overrides.

Every problem raises ``ConfigError`` with one line naming the key (or file), before any work starts.
"""

from __future__ import annotations

import difflib
import math
import tomllib
import types
import typing
from dataclasses import asdict, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from scaling.core.config.schema import Config
from scaling.core.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A bad configuration: the message is one line naming the key or file."""


def shipped_configs() -> dict[str, Path]:
    """Configs that ship with the package, by name (file stem)."""
    root = resources.files("scaling") / "configs"
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def resolve_config_path(name_or_path: str) -> Path:
    """A path to an existing file, or the name of a shipped config (``tiny``, ``gigatok-b-l``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_configs()
    if name_or_path in shipped:
        return shipped[name_or_path]
    hint = difflib.get_close_matches(name_or_path, list(shipped), n=1)
    extra = f" (did you mean {hint[0]!r}?)" if hint else f" (shipped: {', '.join(sorted(shipped))})"
    raise ConfigError(f"config {name_or_path!r}: no such file and no shipped config of that name{extra}")


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """``['--optim.lr', '3e-4', '--train.steps=10']`` -> nested dict with TOML-typed values."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"override {arg!r}: expected --section.key VALUE")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv):
                raise ConfigError(f"override --{key}: missing value")
            value = argv[i + 1]
            i += 1
        i += 1
        set_dotted(out, key, _parse_value(value))
    return out


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        tree = tree.setdefault(part, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"{dotted}: {part!r} is a value, not a section")
    tree[parts[-1]] = value


def _parse_value(text: str) -> Any:
    """A TOML literal (number, bool, list, quoted string), else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: invalid TOML: {e}") from None


def read_config(name_or_path: str | None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """The config for a file (or shipped name) and overrides, its keys and types checked but not its values."""
    data = read_toml(resolve_config_path(name_or_path)) if name_or_path else {}
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    return from_dict(Config, merge(data, overrides or {}))


def raise_problems(errors: list[str]) -> None:
    """One ConfigError line for a config's problems, if any: the first, and how many more."""
    if errors:
        raise ConfigError(errors[0] if len(errors) == 1 else f"{errors[0]} (and {len(errors) - 1} more problems)")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Construct dataclass ``cls`` from ``data``, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            hint = difflib.get_close_matches(key, names, n=1)
            extra = f" (did you mean {prefix}{hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{prefix}{key}: unknown key{extra}")
    kwargs = {key: _coerce(hints[key], value, f"{prefix}{key}") for key, value in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    if is_dataclass(tp):
        return from_dict(tp, value, f"{key}.")
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        elem = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            pass
        elif len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(elem, v, key) for v in value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} matches none of {tp}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected none, got {value!r}")
        return None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    if tp is float and not math.isfinite(value):  # TOML's inf and nan: no setting means either
        raise ConfigError(f"{key}: must be a finite number, got {value}")
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), ready for TOML/JSON."""
    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    return conv(asdict(cfg))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def dump_toml(cfg: Any) -> str:
    """Serialise a config to TOML (sections of scalars and flat lists only, which is all we have)."""
    lines: list[str] = []
    tree = cfg if isinstance(cfg, dict) else config_to_dict(cfg)  # a config, or {section: {key: value}}
    for section, table in tree.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")
