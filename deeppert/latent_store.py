"""Samples x latent variables held one model run at a time: what a streaming ensemble reads.

:class:`LatentStore` stands where the ensemble step takes a latents DataFrame
(:func:`deeppert.ensemble.stability.ensemble_step`, consensus mode): it knows every latent variable's
name and the sample ids, and reads a model run's code only when asked
(``store[columns].to_numpy()``), from a Parquet file per run (:meth:`LatentStore.from_files`)
or by running the run's encoder on the PCA scores (:meth:`LatentStore.from_encoders`). So the
step holds one run's code at a time, whatever the number of runs; selecting columns
(``store[cols]``) gives another store, not a copy of the data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from deeppert.atomic import parquet_errors, read_parquet
from deeppert.ensemble.modes import run_groups
from deeppert.errors import DeeppertError

__all__ = ["LatentStore", "EncoderLatents", "ParquetLatents"]


class ParquetLatents:
    """Reads one model run's code from its Parquet file (``<model run>.parquet``)."""

    def __init__(self, files: Mapping[str, str | Path]) -> None:
        self.files = {key: str(path) for key, path in files.items()}

    def __call__(self, key: str, columns: Sequence[str]) -> np.ndarray:
        return read_parquet(self.files[key], columns=list(columns)).to_numpy()

    def subset(self, keys: Sequence[str]) -> ParquetLatents:
        """The reader of model runs ``keys`` only."""
        return ParquetLatents({key: self.files[key] for key in keys})


class EncoderLatents:
    """Computes one model run's code with its encoder (a ``(n, p) -> (n, d)`` torch module) on
    the PCA scores ``x_pca``: nothing per run needs to be stored but the encoder.

    ``encoders``: model run -> (its latent variable names, in node order; its encoder)."""

    def __init__(
        self, x_pca: np.ndarray, encoders: Mapping[str, tuple[Sequence[str], object]]
    ) -> None:
        self.x_pca = np.asarray(x_pca, dtype=np.float32)
        self.encoders = {key: (list(names), enc) for key, (names, enc) in encoders.items()}

    def __call__(self, key: str, columns: Sequence[str]) -> np.ndarray:
        import torch

        names, encoder = self.encoders[key]
        dtype = next(encoder.parameters()).dtype
        # a Ray task's x_pca is a read-only view of the object store: torch warns about it
        x = np.require(self.x_pca, requirements="W")
        with torch.no_grad():
            z = encoder(torch.as_tensor(x, dtype=dtype)).numpy()
        if z.shape[1] != len(names):
            raise DeeppertError(f"encoder of {key} has {z.shape[1]} nodes, expected {len(names)}")
        return z[:, [names.index(c) for c in columns]]

    def subset(self, keys: Sequence[str]) -> EncoderLatents:
        """The reader of model runs ``keys`` only: it holds their encoders, not the others'."""
        return EncoderLatents(self.x_pca, {key: self.encoders[key] for key in keys})


class LatentStore:
    """Latent variables ``columns`` (named ``<model>_run<r>_z<k>``) over samples ``index``,
    read one model run at a time by ``read(model run, its columns) -> (n, d) array``."""

    def __init__(
        self,
        index: pd.Index,
        columns: Sequence[str],
        read: Callable[[str, Sequence[str]], np.ndarray],
    ) -> None:
        self.index = pd.Index(index)
        self.columns = pd.Index(list(columns))
        if self.columns.has_duplicates:
            raise DeeppertError("latent variable names must be unique")
        self.read = read
        self.groups = run_groups(self.columns)

    @classmethod
    def from_files(cls, files: Mapping[str, str | Path]) -> LatentStore:
        """One Parquet file per model run (rows = samples, columns = its latent variables, as
        ``deeppert train`` writes ``latents/<model run>.parquet``); only the first file's
        sample ids and every file's column names are read now."""
        import pyarrow.parquet as pq

        if not files:
            raise DeeppertError("no latents files")
        columns: list[str] = []
        for path in files.values():
            with parquet_errors(path):
                schema = pq.read_schema(path)
            index_columns = set(map(str, (schema.pandas_metadata or {}).get("index_columns", [])))
            columns += [c for c in schema.names if c not in index_columns]
        index = read_parquet(next(iter(files.values())), columns=[]).index
        store = cls(index, columns, ParquetLatents(files))
        unknown = set(store.groups) - set(files)
        if unknown:
            raise DeeppertError(f"latent variables of {sorted(unknown)[:3]} in another run's file")
        return store

    @classmethod
    def from_encoders(
        cls,
        x_pca: np.ndarray,
        sample_ids: Sequence[str],
        encoders: Mapping[str, tuple[Sequence[str], object]],
    ) -> LatentStore:
        """Model run -> (its latent variable names, its encoder); codes computed on demand."""
        columns = [name for names, _ in encoders.values() for name in names]
        return cls(pd.Index(list(sample_ids)), columns, EncoderLatents(x_pca, encoders))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.index), len(self.columns)

    def __getitem__(self, columns: Sequence[str]) -> LatentStore:
        """The store restricted to ``columns`` (names; no data is read)."""
        columns = list(columns)
        known = set(self.columns)  # built once: per column, it was quadratic in the columns
        missing = [c for c in columns if c not in known]
        if missing:
            raise KeyError(f"latent variables not in the store: {missing[:3]}")
        return LatentStore(self.index, columns, self.read)

    def runs(self, keys: Sequence[str]) -> LatentStore:
        """The store of model runs ``keys`` alone; its reader keeps only their files or
        encoders (when it has ``subset``), so what is sent to a worker does not grow with the
        number of runs in the whole store."""
        keys = list(keys)
        unknown = [key for key in keys if key not in self.groups]
        if unknown:
            raise KeyError(f"model runs not in the store: {unknown[:3]}")
        subset = getattr(self.read, "subset", None)
        read = subset(keys) if subset is not None else self.read
        return LatentStore(self.index, [c for key in keys for c in self.groups[key]], read)

    def run(self, key: str) -> np.ndarray:
        """``(n, d)``: one model run's code, float64."""
        z = np.asarray(self.read(key, self.groups[key]), dtype=np.float64)
        if z.shape != (len(self.index), len(self.groups[key])):
            raise DeeppertError(
                f"latents of {key}: shape {z.shape}, expected "
                f"{(len(self.index), len(self.groups[key]))}"
            )
        return z

    def to_numpy(self, dtype: object = np.float64) -> np.ndarray:
        """Every column's values (n, columns): reads each model run once; the whole matrix is
        held (the gmeans mode needs it; the consensus mode asks for one run at a time)."""
        out = np.empty(self.shape, dtype=dtype, order="F")  # the layout pandas gives a block
        at = {c: j for j, c in enumerate(self.columns)}
        for key, cols in self.groups.items():
            out[:, [at[c] for c in cols]] = self.run(key)
        return out

    def to_frame(self) -> pd.DataFrame:
        """The whole matrix as a DataFrame (see :meth:`to_numpy`)."""
        return pd.DataFrame(self.to_numpy(), index=self.index, columns=self.columns)
