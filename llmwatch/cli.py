"""The ``llmwatch`` command line: one parser whose subcommands the installed packages provide.

Each entry point of the ``llmwatch.commands`` group names a ``register(subparsers)`` function that
adds its subcommands and sets ``func`` on each parser; heavy imports stay inside the handlers, so
``llmwatch --help`` is instant. A package that is not installed (an extra left out) simply adds no
subcommands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

__all__ = ["build_parser", "main"]

GROUP = "llmwatch.commands"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every installed subcommand."""
    parser = argparse.ArgumentParser(
        prog="llmwatch", description="Anomaly detection for LLM inference servers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    found = sorted(entry_points(group=GROUP), key=lambda ep: ep.name)
    if not found:
        parser.error(f"no subcommands: the {GROUP} entry points are missing (pip install -e .)")
    for ep in found:
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmwatch`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, OSError) as exc:
        print(f"llmwatch {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"llmwatch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
