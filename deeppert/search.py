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
from dataclasses import asdict, dataclass
from typing import Literal

import pandas as pd
import torch

from deeppert.errors import DeeppertError
from deeppert.models import PerturbationAutoencoder
from deeppert.train import TrainedModels, fit

__all__ = [
    "Distribution",
    "SearchConfig",
    "SEARCHED",
    "apply_hyperparameters",
    "train_with_validation",
]

SEARCHED = ("lr_max", "dropout", "batch_size", "epochs")
_INTEGER = ("batch_size", "epochs")


@dataclass(frozen=True)
class Distribution:
    """One search space: ``loguniform``/``uniform`` over ``[low, high]``, or ``choice`` of ``values``."""

    distribution: Literal["loguniform", "uniform", "choice"]
    low: float | None = None
    high: float | None = None
    values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.distribution == "choice":
            if not self.values or self.low is not None or self.high is not None:
                raise DeeppertError("choice takes a non-empty `values` list and no low/high")
            return
        if self.values or self.low is None or self.high is None:
            raise DeeppertError(f"{self.distribution} takes `low` and `high` and no values")
        if not self.low < self.high:
            raise DeeppertError(f"low must be < high, got low={self.low}, high={self.high}")
        if self.distribution == "loguniform" and self.low <= 0:
            raise DeeppertError(f"loguniform needs low > 0, got {self.low}")

    @property
    def bounds(self) -> tuple[float, float]:
        if self.distribution == "choice":
            return min(self.values), max(self.values)
        return float(self.low), float(self.high)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SearchConfig:
    """The ``search:`` section: spaces for the searched knobs and the early-stopping rule.

    Each trial trains run ``run`` of one (model, latent dim) of ``grid`` with sampled values;
    ``num_samples`` trials per (model, latent dim). ASHA compares trials on ``metric`` after
    ``grace_period`` epochs and keeps the top ``1 / reduction_factor`` at each rung.
    """

    num_samples: int = 8
    scheduler: Literal["asha", "fifo"] = "asha"
    metric: Literal["r2_genes", "r2_pca"] = "r2_genes"
    grace_period: int = 2
    reduction_factor: float = 2.0
    run: int = 0
    seed: int = 0
    lr_max: Distribution | None = None
    dropout: Distribution | None = None
    batch_size: Distribution | None = None
    epochs: Distribution | None = None

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.grace_period < 1 or self.run < 0:
            raise DeeppertError("num_samples and grace_period must be >= 1 and run >= 0")
        if not self.reduction_factor > 1:
            raise DeeppertError(f"reduction_factor must be > 1, got {self.reduction_factor}")
        if not self.spaces:
            raise DeeppertError(f"give a space for at least one of {', '.join(SEARCHED)}")
        for name, space in self.spaces.items():
            low, high = space.bounds
            if name in _INTEGER:
                if space.distribution != "choice" or any(v != int(v) for v in space.values):
                    raise DeeppertError(f"{name}: must be a choice of integers")
                if low < (2 if name == "batch_size" else 1):
                    raise DeeppertError(
                        f"{name}: values must be >= {2 if name == 'batch_size' else 1}"
                    )
            elif name == "dropout" and not (0 <= low and high < 1):
                raise DeeppertError(f"dropout: bounds must lie in [0, 1), got [{low}, {high}]")
            elif name == "lr_max" and not low > 0:
                raise DeeppertError(f"lr_max: bounds must be > 0, got [{low}, {high}]")

    @property
    def spaces(self) -> dict[str, Distribution]:
        """The searched knobs that have a space, by name."""
        return {n: getattr(self, n) for n in SEARCHED if getattr(self, n) is not None}

    def max_epochs(self, default: int) -> int:
        """Longest training a trial can ask for (ASHA's ``max_t``)."""
        return int(self.epochs.bounds[1]) if self.epochs is not None else default

    def to_dict(self) -> dict:
        return asdict(self)


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
