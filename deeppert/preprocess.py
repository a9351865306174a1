"""Train/validation split and PCA fitted on the training split (docs/method.md section 1).

The PCA components are kept: attributions computed in PCA space are mapped back to genes
through them, and reconstructions are mapped back to gene space to score held-out R^2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deeppert.atomic import read_parquet
from deeppert.errors import DeeppertError
from deeppert.train_config import PCA_TABLES, PreprocessConfig

__all__ = [
    "PreprocessConfig",
    "PCAModel",
    "PCA_TABLES",
    "split_indices",
    "resolve_split",
    "fit_pca",
    "r2_score_flat",
]


@dataclass
class PCAModel:
    """A fitted gene -> PCA map: ``scores = ((X - mean) / scale) @ components.T``.

    Attributes
    ----------
    components
        ``(p, genes)`` orthonormal rows.
    mean, scale
        ``(genes,)`` centring and (if standardising, else ones) scaling vectors.
    explained_variance_ratio
        ``(p,)`` fraction of training variance per component.
    genes
        Gene names of the columns.
    """

    components: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    explained_variance_ratio: np.ndarray
    genes: list[str]

    @property
    def n_components(self) -> int:
        return self.components.shape[0]

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Gene values (n, genes) -> PCA scores (n, p)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self.genes):
            raise DeeppertError(
                f"PCA expects (n, {len(self.genes)}) gene values, got shape {values.shape}"
            )
        return ((values - self.mean) / self.scale) @ self.components.T

    def to_frames(self) -> dict[str, pd.DataFrame]:
        """The model as the three tables of :data:`PCA_TABLES`, the one form it is stored in:
        Parquet files in a run folder, in a saved ensemble model and on an MLflow run."""
        names = [f"PC{i + 1:03d}" for i in range(self.n_components)]
        return {
            "components": pd.DataFrame(
                self.components, index=pd.Index(names, name="component"), columns=self.genes
            ),
            "center": pd.DataFrame(
                {"mean": self.mean, "scale": self.scale}, index=pd.Index(self.genes, name="gene")
            ),
            "explained_variance": pd.DataFrame(
                {"explained_variance_ratio": self.explained_variance_ratio},
                index=pd.Index(names, name="component"),
            ),
        }

    @classmethod
    def from_frames(
        cls, components: pd.DataFrame, center: pd.DataFrame, explained_variance: pd.DataFrame
    ) -> PCAModel:
        """Rebuild a model from the tables of :meth:`to_frames`."""
        return cls(
            components.to_numpy(),
            center["mean"].to_numpy(),
            center["scale"].to_numpy(),
            explained_variance["explained_variance_ratio"].to_numpy(),
            list(components.columns),
        )

    def save(self, folder: str | os.PathLike) -> Path:
        """Write :meth:`to_frames` into ``folder`` as ``<table>.parquet`` files."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, table in self.to_frames().items():
            table.to_parquet(folder / f"{name}.parquet")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> PCAModel:
        """Read what :meth:`save` wrote; a missing or unreadable table is a
        :class:`DeeppertError` naming the file."""
        folder = Path(folder)
        missing = [
            f"{name}.parquet" for name in PCA_TABLES if not (folder / f"{name}.parquet").is_file()
        ]
        if missing:
            raise DeeppertError(f"{folder}: no saved PCA model (missing {', '.join(missing)})")
        return cls.from_frames(*(read_parquet(folder / f"{name}.parquet") for name in PCA_TABLES))

    def inverse_transform(self, scores: np.ndarray) -> np.ndarray:
        """PCA scores (n, p) -> gene values (n, genes)."""
        return (np.asarray(scores, dtype=np.float64) @ self.components) * self.scale + self.mean


def split_indices(
    n: int, val_fraction: float, seed: int, *, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of ``range(n)`` into sorted (train, validation) positions.

    With ``groups`` (one label per row, e.g. the sample id), whole groups go to one side:
    groups are taken in a seeded random order until the validation side holds at least
    ``round(n * val_fraction)`` rows.
    """
    rng = np.random.default_rng(seed)
    n_val = int(round(n * val_fraction))
    if groups is None:
        order = rng.permutation(n)
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    groups = np.asarray(groups)
    if len(groups) != n:
        raise DeeppertError(f"split: {len(groups)} group labels for {n} rows")
    _, code = np.unique(groups, return_inverse=True)
    sizes = np.bincount(code)
    order = rng.permutation(len(sizes))
    taken = order[: int(np.searchsorted(np.cumsum(sizes[order]), n_val)) + 1] if n_val else []
    val = np.isin(code, taken)
    return np.flatnonzero(~val), np.flatnonzero(val)


def resolve_split(config: PreprocessConfig, sample_ids: np.ndarray) -> str:
    """``"grouped_by_id"`` or ``"rows"``: what ``config.split`` means for these ids."""
    repeats = len(sample_ids) != len(np.unique(np.asarray(sample_ids)))
    if config.split == "grouped" or (config.split == "auto" and repeats):
        return "grouped_by_id"
    return "rows"


def fit_pca(
    values: np.ndarray, genes: list[str], n_components: int, *, standardize: bool = False
) -> PCAModel:
    """Fit PCA with scikit-learn's full SVD (deterministic) on ``values`` (n, genes)."""
    values = np.asarray(values, dtype=np.float64)
    n, g = values.shape
    if n_components > min(n, g):
        raise DeeppertError(
            f"cannot fit {n_components} PCA components on {n} training rows x {g} genes; "
            f"lower preprocess.n_components to at most {min(n, g)}"
        )
    mean = values.mean(axis=0)
    scale = values.std(axis=0, ddof=1) if standardize else np.ones(g)
    scale = np.where(scale > 0, scale, 1.0)
    centred = values - mean  # the one n x genes copy: scaled and centred in place from here on
    centred /= scale
    from sklearn.decomposition import PCA

    pca = PCA(n_components=n_components, svd_solver="full", copy=False).fit(centred)
    return PCAModel(pca.components_, mean, scale, pca.explained_variance_ratio_, list(genes))


def r2_score_flat(truth: np.ndarray, pred: np.ndarray) -> float:
    """Variance-weighted R^2 = 1 - SS_res / SS_tot over all columns (held-out rows)."""
    from sklearn.metrics import r2_score

    return float(r2_score(truth, pred, multioutput="variance_weighted"))
