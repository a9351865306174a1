"""``--config FILE`` and the config-derived flags of a command (:func:`deeppert.schema.add_flags`).

A flag's default is ``None`` ("not given"); the value used is the flag when given, else the
``--config`` file's section, else the dataclass default.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from deeppert.schema import given

__all__ = ["add_config_flag", "config_section", "apply_flags"]


def add_config_flag(parser: argparse.ArgumentParser, section: str) -> None:
    """``--config FILE``: an experiment YAML whose ``section`` gives this command's settings."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"experiment YAML: its `{section}` section sets the defaults; flags override it",
    )


def config_section(args: argparse.Namespace, section: str, cls: type) -> Any:
    """The ``section`` of ``--config`` when given (validated), else ``cls()``."""
    if getattr(args, "config", None) is None:
        return cls()
    from deeppert.config import load_config

    return getattr(load_config(args.config), section)


def apply_flags(
    config: Any, args: argparse.Namespace, flags: Iterable[str] | Mapping[str, str]
) -> Any:
    """``config`` with every flag of ``flags`` that was given on the command line."""
    return dataclasses.replace(config, **given(args, type(config), flags))
