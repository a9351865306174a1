"""Hyper-parameter search beyond the grid (what scvi-tools' autotune offers), pure compute.

An optional ``search:`` config section names a search space for the learning rate, dropout,
batch size and epochs (log-uniform / uniform ranges or a choice of values) and how to stop
bad trials early (ASHA on the held-out gene-space R^2, or no early stopping). Each trial
trains one run of one (model, latent dim) of the grid and reports the held-out R^2 after
every epoch through :func:`train_with_validation`; ``ray_jobs/search.py`` turns the space
into Ray Tune distributions and schedules the trials.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import pandas as pd
import torch

from deeppert.errors import DeeppertError
from deeppert.models import PerturbationAutoencoder
from deeppert.train import TrainedModels, fit
from deeppert.train_config import _INTEGER, SEARCHED, Distribution, SearchConfig

__all__ = [
    "Distribution",
    "SearchConfig",
    "SEARCHED",
    "apply_hyperparameters",
    "train_with_validation",
]


def apply_hyperparameters(config, values: dict[str, float]):
    """``config`` (an ExperimentConfig) with sampled ``values`` of :data:`SEARCHED` put in place."""
    unknown = set(values) - set(SEARCHED)
    if unknown:
        raise DeeppertError(f"not searchable: {sorted(unknown)}")
    train = {
        k: (int(v) if k in _INTEGER else float(v)) for k, v in values.items() if k != "dropout"
    }
    if "lr_max" in train:
        train["lr_min"] = min(config.train.lr_min, train["lr_max"])
    model = {"dropout": float(values["dropout"])} if "dropout" in values else {}
    return dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, **train),
        model=dataclasses.replace(config.model, **model),
    )


@contextlib.contextmanager
def _capture_module() -> Iterator[list[PerturbationAutoencoder]]:
    """Catch the autoencoder :func:`deeppert.train.fit` builds, at its first forward call.

    ``fit`` hands its epoch callback only the loss table; the held-out R^2 needs the model.
    """
    seen: list[PerturbationAutoencoder] = []

    def hook(module, args):
        if isinstance(module, PerturbationAutoencoder) and not seen:
            seen.append(module)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def train_with_validation(
    prepared,
    config,
    kind: str,
    latent_dim: int,
    run: int,
    on_epoch: Callable[[int, dict[str, float]], None],
) -> TrainedModels:
    """Train run ``run`` of ``kind``/``latent_dim`` on ``prepared`` (a :class:`deeppert.grid.Prepared`),
    calling ``on_epoch(epoch, metrics)`` with the epoch's training loss and held-out
    ``r2_pca`` / ``r2_genes`` (evaluated in eval mode; no random numbers drawn)."""
    if not len(prepared.val_idx):
        raise DeeppertError("search needs held-out rows: set preprocess.val_fraction > 0")
    model_config = config.model.build(kind, latent_dim, prepared.pca.n_components)
    held_out_genes = prepared.signatures.values[prepared.val_idx]

    with _capture_module() as seen:

        def callback(epoch: int, frame: pd.DataFrame) -> None:
            if not seen:
                raise DeeppertError("fit() ran an epoch without calling its autoencoder")
            module = seen[0]
            view = TrainedModels(module, model_config, config.train, [run], frame)
            module.eval()
            try:
                row = view.evaluate(prepared.x_val, held_out_genes, prepared.pca).iloc[0]
            finally:
                module.train()
            metrics = {
                "loss": float(frame["loss"].iloc[0]),
                "r2_pca": float(row["r2_pca"]),
                "r2_genes": float(row["r2_genes"]),
            }
            on_epoch(epoch, metrics)

        return fit(prepared.x_train, model_config, config.train, [run], on_epoch=callback)
