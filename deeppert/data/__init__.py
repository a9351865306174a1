"""Signature matrices: the in-memory type, loaders for every supported format, and synthetic data."""

from __future__ import annotations

from deeppert.data._io import Format, describe, infer_format, load_signatures, save_signatures
from deeppert.data._lincs import read_compoundinfo, read_geneinfo, read_siginfo, select_signatures
from deeppert.data._signatures import Signatures, landmark_genes
from deeppert.data.synthetic import (
    TARGET_PAIR_FILES,
    SynthConfig,
    SyntheticData,
    make_synthetic,
    write_synthetic,
)

__all__ = [
    "Signatures",
    "landmark_genes",
    "Format",
    "load_signatures",
    "save_signatures",
    "describe",
    "infer_format",
    "read_siginfo",
    "read_geneinfo",
    "read_compoundinfo",
    "select_signatures",
    "SynthConfig",
    "SyntheticData",
    "make_synthetic",
    "write_synthetic",
    "TARGET_PAIR_FILES",
]
