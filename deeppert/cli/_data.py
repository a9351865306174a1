"""``deeppert synth`` and ``deeppert info`` (placeholder while the data layer lands)."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the data subcommands (filled in by the data-layer commit)."""
