"""What the grid trains: preprocessing, architecture, optimisation and search settings.

:class:`PreprocessConfig`, :class:`ModelConfig`, :class:`TrainConfig` and :class:`SearchConfig`
live here, without numpy or torch, so the experiment schema (:mod:`deeppert.config`) and the
command-line flags derived from it load in a blink; :mod:`deeppert.preprocess`,
:mod:`deeppert.models`, :mod:`deeppert.train` and :mod:`deeppert.search` re-export them beside
the code they configure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal, get_args

from deeppert.errors import DeeppertError
from deeppert.schema import check_choices, knob

if TYPE_CHECKING:
    import torch

__all__ = [
    "PreprocessConfig",
    "PCA_TABLES",
    "ModelKind",
    "MODEL_KINDS",
    "hidden_sizes",
    "ModelConfig",
    "TrainConfig",
    "SEARCHED",
    "Distribution",
    "SearchConfig",
]


@dataclass(frozen=True)
class PreprocessConfig:
    """PCA size, held-out fraction and split seed; gene-wise standardisation is opt-in.

    ``split``: ``"auto"`` groups the validation split by sample id when ids repeat (a
    compound profiled twice never sits on both sides), else splits rows; ``"grouped"`` and
    ``"rows"`` force one or the other.
    """

    n_components: int = 100
    val_fraction: float = 0.1
    split_seed: int = 0
    standardize: bool = False
    split: Literal["auto", "grouped", "rows"] = "auto"

    def __post_init__(self) -> None:
        if self.n_components < 1:
            raise DeeppertError(f"n_components must be positive, got {self.n_components}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise DeeppertError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        check_choices(self, "preprocess")

    def to_dict(self) -> dict:
        return asdict(self)


ModelKind = Literal["AE", "DAE", "VAE"]
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)


def hidden_sizes(latent_dim: int) -> tuple[int, int]:
    """Hidden widths (h1, h2) by latent dim: 5 -> (100, 25); 10 -> (250, 50); else (250, 100)."""
    if latent_dim == 5:
        return (100, 25)
    if latent_dim == 10:
        return (250, 50)
    return (250, 100)


#: The tables a PCA model is stored as, one ``<name>.parquet`` each (:meth:`PCAModel.to_frames`).
PCA_TABLES = ("components", "center", "explained_variance")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one autoencoder.

    Parameters
    ----------
    kind
        ``"AE"``, ``"DAE"`` (AE + Gaussian input noise in training) or ``"VAE"``.
    latent_dim
        Size ``d`` of the code.
    n_inputs
        Number of PCA components ``p`` fed in.
    dropout
        Dropout rate of the AE/DAE hidden layers.
    dae_noise_std
        Standard deviation of the DAE input noise.
    vae_decoder
        ``"mirrored"`` (d -> h2 -> h1 -> p, the default) or ``"reference"`` (d -> h1 -> h2 -> p,
        as the reference implementation built it).
    """

    kind: ModelKind = "VAE"
    latent_dim: int = 10
    n_inputs: int = 100
    dropout: float = 0.1
    dae_noise_std: float = 1.0
    vae_decoder: Literal["mirrored", "reference"] = "mirrored"

    def __post_init__(self) -> None:
        check_choices(self, "model")
        if self.latent_dim < 1 or self.n_inputs < 1:
            raise DeeppertError(
                f"latent_dim and n_inputs must be positive, got {self.latent_dim}, {self.n_inputs}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise DeeppertError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def hidden(self) -> tuple[int, int]:
        return hidden_sizes(self.latent_dim)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; defaults are docs/method.md's (``beta_start=1`` mimics the reference)."""

    epochs: int = knob(100, "training epochs")
    batch_size: int = 256
    lr_max: float = 1e-3
    lr_min: float = 1e-6
    cycle_epochs: int = 20
    beta_start: float = 0.0
    kl_kappa: float = 0.01
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "cycle_epochs"):
            if getattr(self, name) < 1:
                raise DeeppertError(f"train.{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.lr_min <= self.lr_max:
            raise DeeppertError(
                f"need 0 < train.lr_min <= train.lr_max, got {self.lr_min}, {self.lr_max}"
            )
        check_choices(self, "train")

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return torch.float64 if self.dtype == "float64" else torch.float32

    def beta(self, epoch: int) -> float:
        """KL weight at ``epoch`` (0-based): warm-up from beta_start by kl_kappa, capped at 1."""
        return min(1.0, self.beta_start + self.kl_kappa * epoch)

    def to_dict(self) -> dict:
        return asdict(self)


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
    scheduler: Literal["asha", "fifo"] = knob("asha", "early stopping: asha, or fifo (no stops)")
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
        check_choices(self, "search")
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
