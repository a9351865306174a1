"""The ``deeppert`` command-line tool: one subcommand per pipeline step.

Each ``deeppert/cli/_<name>.py`` module exposes ``register(subparsers)``, which adds its
subcommand(s) with ``set_defaults(func=...)``; ``func(args)`` returns an exit code.
Bad input (:class:`~deeppert.errors.DeeppertError`) becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from deeppert.errors import DeeppertError

__all__ = ["main", "build_parser"]

# Modules under deeppert/cli that contribute subcommands, in help order.
_COMMAND_MODULES = ("_data", "_train", "_attribution", "_server", "_targets", "_downstream")
_COMMAND_MODULES += ("_export",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deeppert",
        description="Interpretable drug-perturbation embeddings: train, attribute, ensemble, analyse.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"deeppert.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except DeeppertError as exc:
        print(f"deeppert {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
