"""The signature file formats :func:`deeppert.data.load_signatures` reads.

A module of its own (no numpy, pandas or h5py) so the command line can offer the choices
without loading the data stack.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["Format", "FORMATS"]

Format = Literal["csv", "tsv", "parquet", "h5ad", "gct", "gctx"]
FORMATS: tuple[str, ...] = get_args(Format)
