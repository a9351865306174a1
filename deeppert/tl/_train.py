"""``dp.tl.train``: the training grid of a config on one signature matrix, into a run folder."""

from __future__ import annotations

import os

from deeppert.config import DataConfig, ExperimentConfig
from deeppert.data import Signatures
from deeppert.workspace import TrainedRun, train_dataset

__all__ = ["train"]


def train(
    signatures: Signatures,
    out: str | os.PathLike,
    *,
    config: ExperimentConfig | None = None,
    dataset: DataConfig | None = None,
) -> TrainedRun:
    """Train every (kind, latent dim) of ``config.grid`` with all its runs on ``signatures``.

    Writes the run folder ``out`` atomically (layout: :mod:`deeppert.workspace`): the split,
    PCA, models, latents, baselines, ``metrics.csv`` and the training curves.

    Parameters
    ----------
    signatures
        The signature matrix (:func:`deeppert.load`).
    out
        The run folder to write; it must not be a file, and its parent must be writable.
    config
        The experiment config (``ExperimentConfig()`` when None); its ``grid``,
        ``preprocess``, ``model`` and ``train`` sections apply.
    dataset
        The dataset entry naming the run (``config.datasets[0]`` when None).

    Returns
    -------
    The run folder, holding the held-out metrics table as ``.metrics``.
    """
    config = config or ExperimentConfig()
    metrics = train_dataset(signatures, config, out, dataset=dataset)
    return TrainedRun(out, metrics)
