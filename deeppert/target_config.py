"""Target-combination settings (:class:`TargetConfig`), in a module without numpy.

:mod:`deeppert.targets` re-exports it; the command line reads the knobs and their defaults
from this dataclass without importing the algorithm (``deeppert targets --help``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from deeppert.errors import DeeppertError
from deeppert.schema import check_choices, knob

__all__ = ["Mode", "TargetConfig"]

Mode = Literal["default", "reference"]


@dataclass(frozen=True)
class TargetConfig:
    """Parameters of one target-combination run.

    The defaults are the reference's evaluation mode (4 clusters, 50 genes, threshold 0.8,
    100 pairs); :meth:`prediction` gives its prediction mode (threshold auto, 50 pairs).
    ``plots`` is part of the config because in reference mode drawing plots changes results.
    """

    n_clusters: int = knob(4, "gene clusters")
    top_genes: int = knob(50, "top genes clustered")
    threshold: float | Literal["auto"] = knob(0.8, "|Pearson r| threshold in [0, 1] or 'auto'")
    n_pairs: int = knob(100, "pairs reported")
    mode: Mode = knob("default", "'reference' reproduces the published script's quirks")
    plots: bool = True
    permutations: int = knob(1000, "label permutations for the null")
    seed: int = knob(0, "seed of the permutation null")
    top_ns: tuple[int, ...] = tuple(range(10, 101, 10))

    def __post_init__(self) -> None:
        check_choices(self, "targets")
        if self.n_clusters < 2:
            raise DeeppertError(f"n_clusters must be >= 2, got {self.n_clusters}")
        if self.top_genes < self.n_clusters:
            raise DeeppertError(
                f"top_genes ({self.top_genes}) must be >= n_clusters ({self.n_clusters})"
            )
        if self.threshold != "auto":
            if isinstance(self.threshold, str) or not 0.0 <= float(self.threshold) <= 1.0:
                raise DeeppertError(
                    f"threshold must be in [0, 1] or 'auto', got {self.threshold!r}"
                )
        if self.n_pairs < 1:
            raise DeeppertError(f"n_pairs must be >= 1, got {self.n_pairs}")
        if self.permutations < 0:
            raise DeeppertError(f"permutations must be >= 0, got {self.permutations}")
        if not self.top_ns or any(n < 1 for n in self.top_ns):
            raise DeeppertError(f"top_ns must be positive integers, got {self.top_ns}")

    @classmethod
    def evaluation(cls, **overrides: object) -> TargetConfig:
        """The reference's evaluation mode: 4 clusters, 50 genes, threshold 0.8, 100 pairs."""
        return cls(**{"threshold": 0.8, "n_pairs": 100, **overrides})  # type: ignore[arg-type]

    @classmethod
    def prediction(cls, **overrides: object) -> TargetConfig:
        """The reference's prediction mode as published: threshold auto, 50 pairs."""
        return cls(**{"threshold": "auto", "n_pairs": 50, **overrides})  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        """Plain dict (JSON / MLflow params)."""
        out = asdict(self)
        out["top_ns"] = list(self.top_ns)
        return out
