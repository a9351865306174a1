"""The :class:`Signatures` container that every step of the pipeline consumes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd

from deeppert.errors import DeeppertError

__all__ = ["Signatures", "landmark_genes"]


@cache
def landmark_genes() -> tuple[str, ...]:
    """The 978 L1000 landmark gene symbols, in L1000 order."""
    text = resources.files("deeppert.data").joinpath("landmark_genes_978.txt").read_text()
    genes = tuple(line.strip() for line in text.splitlines() if line.strip())
    assert len(genes) == 978, len(genes)
    return genes


@dataclass
class Signatures:
    """A perturbation matrix: samples x genes, with sample ids kept even when repeated.

    Attributes
    ----------
    values
        ``(n_samples, n_genes)`` float32 or float64 array; finite (validated on construction).
    sample_ids
        ``(n_samples,)`` array of str; duplicates are allowed and kept apart by position.
    genes
        Gene symbols, one per column, unique.
    metadata
        Optional per-sample table (same row order), e.g. compound, SMILES, dose.
    source
        Where the matrix came from (a path or ``"synthetic"``), used in error messages.
    """

    values: np.ndarray
    sample_ids: np.ndarray
    genes: list[str]
    metadata: pd.DataFrame | None = None
    source: str = "<memory>"

    def __post_init__(self) -> None:
        values = np.asarray(self.values)
        # float32 (GCTX, float32 Parquet) is kept as it is; everything else becomes float64
        self.values = (
            values if values.dtype == np.float32 else values.astype(np.float64, copy=False)
        )
        self.sample_ids = np.asarray(self.sample_ids).astype(str)
        self.genes = [str(g) for g in self.genes]
        if self.values.ndim != 2:
            raise DeeppertError(
                f"{self.source}: expected a 2-D matrix, got shape {self.values.shape}"
            )
        n, g = self.values.shape
        if len(self.sample_ids) != n:
            raise DeeppertError(f"{self.source}: {len(self.sample_ids)} sample ids for {n} rows")
        if len(self.genes) != g:
            raise DeeppertError(f"{self.source}: {len(self.genes)} gene names for {g} columns")
        dup = pd.Index(self.genes)[pd.Index(self.genes).duplicated()]
        if len(dup):
            raise DeeppertError(f"{self.source}: duplicated gene columns: {', '.join(dup[:10])}")
        bad = ~np.isfinite(self.values)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise DeeppertError(
                f"{self.source}: {int(bad.sum())} non-finite value(s), first at row {r} "
                f"(id {self.sample_ids[r]!r}), column {self.genes[c]!r}"
            )
        if self.metadata is not None and len(self.metadata) != n:
            raise DeeppertError(
                f"{self.source}: metadata has {len(self.metadata)} rows for {n} samples"
            )

    @property
    def n_samples(self) -> int:
        return self.values.shape[0]

    @property
    def n_genes(self) -> int:
        return self.values.shape[1]

    def to_frame(self) -> pd.DataFrame:
        """Samples x genes DataFrame indexed by sample id (duplicates kept)."""
        return pd.DataFrame(
            self.values, index=pd.Index(self.sample_ids, name="sample_id"), columns=self.genes
        )

    def take(self, rows: np.ndarray) -> Signatures:
        """The subset of rows ``rows`` (integer positions or boolean mask)."""
        meta = None if self.metadata is None else self.metadata.iloc[rows].reset_index(drop=True)
        return Signatures(
            self.values[rows], self.sample_ids[rows], list(self.genes), meta, self.source
        )
