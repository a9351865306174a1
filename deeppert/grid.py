"""The training step every front end shares: a dataset entry loaded, split and projected
(:func:`prepare`), and one shape's runs trained on it (:func:`train_shape`).

``deeppert train`` (:mod:`deeppert.workspace`, a run folder on disk) and the MLflow sweep
(:mod:`deeppert.tracking.sweep`, one Tune trial per shape) both train the grid through these
functions, so a grid point is the same model whichever front end trained it. The loop itself is
:func:`deeppert.train.fit`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from deeppert.baselines import Baseline, fit_baseline
from deeppert.config import DataConfig, ExperimentConfig
from deeppert.data import Signatures, load_signatures
from deeppert.data.synthetic import make_synthetic
from deeppert.errors import DeeppertError
from deeppert.preprocess import fit_pca, r2_score_flat, resolve_split, split_indices
from deeppert.train import TrainedModels, fit

__all__ = [
    "load_dataset",
    "Prepared",
    "prepare",
    "train_shape",
    "baseline_metrics",
    "baseline_frame",
]


def load_dataset(dataset: DataConfig) -> Signatures:
    """The signature matrix a dataset entry describes (a file, or synthetic data)."""
    if dataset.path is None:
        return make_synthetic(dataset.synthetic).signatures
    return load_signatures(dataset.path, **dataset.load_options())


class Prepared:
    """A dataset split and projected: what every grid point of one cell line trains on."""

    def __init__(self, signatures: Signatures, config: ExperimentConfig) -> None:
        pre = config.preprocess
        self.signatures = signatures
        # "grouped_by_id" when ids repeat (default): a repeated compound never straddles the split
        self.split = resolve_split(pre, signatures.sample_ids)
        self.train_idx, self.val_idx = split_indices(
            signatures.n_samples,
            pre.val_fraction,
            pre.split_seed,
            groups=signatures.sample_ids if self.split == "grouped_by_id" else None,
        )
        if len(self.train_idx) < 2:
            raise DeeppertError(
                f"{signatures.source}: too few training rows ({len(self.train_idx)})"
            )
        train_values = signatures.values[self.train_idx]
        if not np.ptp(train_values, axis=0).any():
            raise DeeppertError(
                f"{signatures.source}: every gene is constant across the "
                f"{len(self.train_idx)} training rows (e.g. all values "
                f"{train_values.flat[0]:g}): nothing to embed; check the file's gene columns"
            )
        self.pca = fit_pca(
            train_values, signatures.genes, pre.n_components, standardize=pre.standardize
        )
        self.x_train = self.pca.transform(train_values)
        self.x_val = self.pca.transform(signatures.values[self.val_idx])
        self.train_ids = signatures.sample_ids[self.train_idx].tolist()


def prepare(signatures: Signatures, config: ExperimentConfig) -> Prepared:
    """Split ``signatures`` and fit the PCA on the training rows."""
    return Prepared(signatures, config)


def train_shape(
    prepared: Prepared,
    config: ExperimentConfig,
    kind: str,
    latent_dim: int,
    runs: list[int],
    *,
    on_epoch=None,
) -> tuple[TrainedModels, pd.DataFrame]:
    """Train the runs ``runs`` of one (kind, latent dim) vectorised; return models + held-out metrics."""
    model_config = config.model.build(kind, latent_dim, prepared.pca.n_components)
    x_val = prepared.x_val if len(prepared.val_idx) else None
    trained = fit(
        prepared.x_train, model_config, config.train, runs, on_epoch=on_epoch, x_val=x_val
    )
    if len(prepared.val_idx):
        metrics = trained.evaluate(
            prepared.x_val, prepared.signatures.values[prepared.val_idx], prepared.pca
        )
    else:
        metrics = pd.DataFrame({"model": kind, "latent_dim": latent_dim, "run": runs})
    return trained, metrics.assign(split=prepared.split)


def baseline_metrics(prepared: Prepared, kinds: Sequence[str], dims: Sequence[int]) -> pd.DataFrame:
    """Held-out R^2 of the linear baselines ``kinds`` (e.g. PCA, ICA) at latent sizes ``dims``."""
    frames = [
        baseline_frame(
            fit_baseline(kind, prepared.x_train, prepared.pca, dim, sample_ids=prepared.train_ids),
            prepared,
        )
        for kind in kinds
        for dim in dims
    ]
    return pd.concat(frames, ignore_index=True)


def baseline_frame(base: Baseline, prepared: Prepared) -> pd.DataFrame:
    """Held-out R^2 of a linear baseline: project and reconstruct by least squares."""
    proj = base.projection
    x = prepared.x_val - base.center
    z = x @ proj
    recon = z @ np.linalg.pinv(proj) + base.center
    return pd.DataFrame(
        [
            {
                "model": base.kind,
                "latent_dim": proj.shape[1],
                "run": 0,
                "r2_pca": r2_score_flat(prepared.x_val, recon),
                "r2_genes": r2_score_flat(
                    prepared.signatures.values[prepared.val_idx],
                    prepared.pca.inverse_transform(recon),
                ),
                "split": prepared.split,
            }
        ]
    )
