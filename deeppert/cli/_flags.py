"""Command-line flags derived from a config dataclass: each knob's default lives on its dataclass.

A flag's default is ``None`` ("not given"); the value used is the flag when given, else the
``--config`` file's section, else the dataclass default. ``--help`` shows the dataclass
default, and ``Literal`` fields become ``choices``.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

__all__ = ["add_config_flag", "add_dataclass_flags", "config_section", "apply_flags"]


def add_config_flag(parser: argparse.ArgumentParser, section: str) -> None:
    """``--config FILE``: an experiment YAML whose ``section`` gives this command's settings."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"experiment YAML: its `{section}` section sets the defaults; flags override it",
    )


def add_dataclass_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    flags: Mapping[str, str],
    *,
    help: Mapping[str, str],
    types: Mapping[str, Callable[[str], Any]] | None = None,
) -> None:
    """One ``--flag`` per ``field: flag`` of ``flags``, typed from the field's annotation
    (or by the parser ``types[field]``, for a field such as ``float | Literal["auto"]``)."""
    hints = typing.get_type_hints(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for name, flag in flags.items():
        kwargs: dict[str, Any] = {"default": None, "dest": name}
        tp = hints[name]
        if types and name in types:
            kwargs["type"] = types[name]
            kwargs["metavar"] = flag.lstrip("-").upper().replace("-", "_")
        elif get_origin(tp) is Literal:
            kwargs["choices"] = list(get_args(tp))
        elif tp in (int, float, str):
            kwargs["type"] = tp
            kwargs["metavar"] = flag.lstrip("-").upper().replace("-", "_")
        else:
            raise TypeError(f"{cls.__name__}.{name}: no flag for type {tp!r}")
        parser.add_argument(flag, help=f"{help[name]} (default {defaults[name]})", **kwargs)


def config_section(args: argparse.Namespace, section: str, cls: type) -> Any:
    """The ``section`` of ``--config`` when given (validated), else ``cls()``."""
    if getattr(args, "config", None) is None:
        return cls()
    from deeppert.config import load_config

    return getattr(load_config(args.config), section)


def apply_flags(config: Any, args: argparse.Namespace, flags: Mapping[str, str]) -> Any:
    """``config`` with every flag of ``flags`` that was given on the command line."""
    given = {name: getattr(args, name) for name in flags if getattr(args, name) is not None}
    return dataclasses.replace(config, **given)
