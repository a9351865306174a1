"""The ``deeppert`` command-line tool: one subcommand per pipeline step.

Each ``deeppert/cli/_<name>.py`` module exposes ``register(subparsers)``, which adds its
subcommand(s) with ``set_defaults(func=...)``; ``func(args)`` returns an exit code.
Bad input (:class:`~deeppert.errors.DeeppertError`) and file-system refusals (``OSError``:
read-only folder, disk full) become one line on stderr and exit 2.
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
    except OSError as exc:
        # The file system refused (read-only, full, a file where a folder should be): the
        # user's environment, not a bug; say which path in one line.
        where = f": {exc.filename}" if exc.filename else ""
        print(
            f"deeppert {args.command}: error: {exc.strerror or exc}{where}",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
