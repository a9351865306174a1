"""The config schema's building blocks: every knob declared once, on its dataclass field.

A field made with :func:`knob` carries its help line beside its default; a ``Literal``
annotation is its set of choices. From the fields:

- :func:`check_choices` validates every ``Literal`` field of a config (``__post_init__`` calls
  it instead of listing the choices again);
- :func:`add_flags` adds one command-line flag per field (the ``deeppert`` commands and the
  ``ray_jobs`` entry points): help, choices, type and the shown default come from the field;
- :func:`given` reads back the flags that were given, converted to the field's type.

A flag's argparse default is ``None`` ("not given"), so a command can lay the given flags
over a config file's section, which lies over the dataclass defaults. Only the standard
library is imported here: ``--help`` answers without numpy, pandas or torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Union, get_args, get_origin

from deeppert.errors import DeeppertError

__all__ = [
    "knob",
    "help_of",
    "choices_of",
    "check_choices",
    "add_flags",
    "given",
    "flag_name",
]

#: Field metadata keys: the help line, and a metavar for flags whose value is not a plain type.
HELP, METAVAR = "help", "metavar"


def knob(default: Any, help: str, *, metavar: str | None = None) -> Any:
    """A dataclass field with its help line (shown by ``--help`` of every front end)."""
    metadata = {HELP: help} if metavar is None else {HELP: help, METAVAR: metavar}
    return dataclasses.field(default=default, metadata=metadata)


@functools.cache
def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """``name -> (field, resolved annotation)`` of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def help_of(cls: type, name: str) -> str:
    """The help line of field ``name`` of ``cls`` ('' when it has none)."""
    return _fields(cls)[name][0].metadata.get(HELP, "")


def _without_none(tp: Any) -> Any:
    """``X`` for ``X | None``; ``tp`` otherwise."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def choices_of(tp: Any) -> tuple | None:
    """The values of a ``Literal`` (also inside ``| None``), else None."""
    tp = _without_none(tp)
    return get_args(tp) if get_origin(tp) is Literal else None


def check_choices(config: Any, section: str) -> None:
    """Raise :class:`DeeppertError` naming ``section.field`` when a ``Literal`` field (or an
    item of a ``tuple[Literal, ...]`` field) holds a value outside its choices."""
    for name, (_, tp) in _fields(type(config)).items():
        value = getattr(config, name)
        if value is None:
            continue
        valid = choices_of(tp)
        if valid is not None and value not in valid:
            raise DeeppertError(f"{section}.{name} must be one of {list(valid)}, got {value!r}")
        item = _item_type(tp)
        valid = choices_of(item) if item is not None else None
        if valid is not None:
            bad = [v for v in value if v not in valid]
            if bad:
                raise DeeppertError(f"{section}.{name}: {bad[0]!r} is not one of {list(valid)}")


def _item_type(tp: Any) -> Any:
    """The item type of ``tuple[X, ...]`` (also inside ``| None``), else None."""
    tp = _without_none(tp)
    if get_origin(tp) in (tuple, list) and get_args(tp):
        return get_args(tp)[0]
    return None


def flag_name(name: str) -> str:
    """``--n-clusters`` for field ``n_clusters``."""
    return "--" + name.replace("_", "-")


def _flag_map(names: Iterable[str] | Mapping[str, str]) -> Mapping[str, str]:
    """``{field: flag}``: ``names`` itself, or each field's :func:`flag_name`."""
    return names if isinstance(names, Mapping) else {n: flag_name(n) for n in names}


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    names: Iterable[str] | Mapping[str, str],
    *,
    types: Mapping[str, Callable[[str], Any]] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """One flag per field of ``names`` (``field`` or ``{field: "--flag"}``), ``dest`` = field.

    ``Literal`` fields get ``choices``; ``int``/``float``/``str`` their type; a ``tuple[X, ...]``
    field takes a comma-separated list (read back by :func:`given`); a ``bool`` field that
    defaults to False is a switch. ``types[field]`` parses a field whose annotation is not
    one of these (e.g. ``float | Literal["auto"]``). ``defaults`` replaces a field's default
    in the help, for a command whose defaults differ from the dataclass's.
    """
    table = _fields(cls)
    for name, flag in _flag_map(names).items():
        field, tp = table[name]
        default = (defaults or {}).get(name, field.default)
        metavar = field.metadata.get(METAVAR) or flag.lstrip("-").upper().replace("-", "_")
        kwargs: dict[str, Any] = {"default": None, "dest": name}
        plain = _without_none(tp)
        if types and name in types:
            kwargs.update(type=types[name], metavar=metavar)
        elif choices_of(tp) is not None:
            kwargs["choices"] = list(choices_of(tp))
        elif plain is bool:
            if default is not False:
                raise TypeError(f"{cls.__name__}.{name}: a switch must default to False")
            kwargs.update(action="store_const", const=True)
        elif plain in (int, float, str):
            kwargs.update(type=plain, metavar=metavar)
        elif _item_type(tp) is not None:
            item = _item_type(tp)
            valid = choices_of(item)
            kwargs["metavar"] = ",".join(valid) if valid else field.metadata.get(METAVAR, "A,B")
        else:
            raise TypeError(f"{cls.__name__}.{name}: no flag for type {tp!r}")
        text = field.metadata.get(HELP, "")
        shown = "" if default is None or plain is bool else f" (default {_shown(default)})"
        parser.add_argument(flag, help=f"{text}{shown}".strip(), **kwargs)


_ITEM_WORDS = {int: "integers", float: "numbers", str: "names"}


def given(
    args: argparse.Namespace, cls: type, names: Iterable[str] | Mapping[str, str]
) -> dict[str, Any]:
    """The flags of :func:`add_flags` that were given, by field name; a comma-separated list
    becomes a tuple of the field's item type (a bad item raises :class:`DeeppertError`
    naming the flag, before anything heavy is imported)."""
    table = _fields(cls)
    out = {}
    for name, flag in _flag_map(names).items():
        value = getattr(args, name, None)
        if value is None:
            continue
        item = _item_type(table[name][1])
        if item is not None and isinstance(value, str):
            value = _split(value, item, flag)
        out[name] = value
    return out


def _split(text: str, item: Any, flag: str) -> tuple:
    convert = item if item in (int, float) else str
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return tuple(convert(p) for p in parts)
    except ValueError as exc:
        raise DeeppertError(
            f"{flag} must be comma-separated {_ITEM_WORDS[convert]}, got {text!r}"
        ) from exc
