"""The ``scaling`` command. Each concern registers its own subcommands; heavy imports happen inside them."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules exposing ``register(subparsers)``; each subparser sets ``func(args) -> int``.
COMMAND_MODULES = (
    "scaling.data.cli",
    "scaling.train.cli",
    "scaling.export.cli",
    "scaling.probe.cli",
    "scaling.eval.cli",
    "scaling.launch.cli",
    "scaling.sweep.cli",
    "scaling.study.cli",
    "scaling.plan.cli",
    "scaling.analysis.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaling", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from scaling.core.errors import UserError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"scaling: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a training run's first Ctrl-C stops it with a checkpoint (core.signals); not this
        print("scaling: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
