"""Feature builders: signatures (n x 978, landmark order) -> model features.

A :class:`Featurizer` is fitted on the signatures the evaluation hands it and returns a plain
transform callable. The evaluation hands it the training fold's signatures (``inductive``) or
all of the task's signatures (``transductive``); labels never reach a featurizer. A featurizer
that learns nothing per fold declares ``fixed_setting`` instead: ``"none"`` for raw genes, and
for a pre-trained embedding how its model saw the task's signatures (``"transductive"`` for the
seed-pooled ensemble, trained on all 446 of them). The embedding builder wraps any
``embed_fn(values) -> array``, e.g. an ensemble that embeds new signatures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from sklearn.decomposition import PCA

from deeppert.errors import DeeppertError

__all__ = [
    "Transform",
    "Featurizer",
    "RawFeaturizer",
    "PCAFeaturizer",
    "EmbeddingFeaturizer",
    "raw_featurizer",
    "pca_featurizer",
    "embedding_featurizer",
    "pair_features",
]

Transform = Callable[[np.ndarray], np.ndarray]


@runtime_checkable
class Featurizer(Protocol):
    """Builds features from signatures; ``fit`` sees the signatures of one setting, never labels.

    Optional attribute ``fixed_setting``: set by featurizers whose ``fit`` learns nothing.
    """

    name: str

    def fit(self, train_values: np.ndarray, *, seed: int = 0) -> Transform:
        """Return a transform ``(n, 978) -> (n, k)`` learnt from ``train_values`` alone."""
        ...

    def to_dict(self) -> dict[str, object]:
        """Parameters, for logging."""
        ...


def _check(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise DeeppertError(f"{what}: expected a non-empty 2-D array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise DeeppertError(f"{what}: {int((~np.isfinite(values)).sum())} non-finite value(s)")
    return values


@dataclass(frozen=True)
class RawFeaturizer:
    """The raw 978 landmark genes, unchanged (nothing fitted: setting ``none``)."""

    name: str = "raw"
    fixed_setting: str = "none"

    def fit(self, train_values: np.ndarray, *, seed: int = 0) -> Transform:
        _check(train_values, "raw features")
        return lambda values: _check(values, "raw features")

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "kind": "raw"}


@dataclass(frozen=True)
class PCAFeaturizer:
    """PCA scores, the PCA fitted on the signatures it is handed (inductive or transductive).

    ``n_components`` is capped at ``min(n_train_rows, n_genes)`` (a fold of 16 training
    drugs cannot support more components than that).
    """

    n_components: int = 10
    name: str = "pca"

    def __post_init__(self) -> None:
        if self.n_components < 1:
            raise DeeppertError(
                f"PCA featurizer: n_components must be >= 1, got {self.n_components}"
            )

    def fit(self, train_values: np.ndarray, *, seed: int = 0) -> Transform:
        train_values = _check(train_values, "PCA features (training rows)")
        k = min(self.n_components, *train_values.shape)
        pca = PCA(n_components=k, random_state=seed).fit(train_values)
        return lambda values: pca.transform(_check(values, "PCA features"))

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "kind": "pca", "n_components": self.n_components}


@dataclass(frozen=True)
class EmbeddingFeaturizer:
    """Wraps a fixed ``embed_fn(values (n, 978)) -> (n, k)``; ``fit`` learns nothing.

    The function must be fitted without the task's labels (an unsupervised model); it is
    called on each fold's rows and its output shape is checked. ``fixed_setting`` says how
    its model saw the task's signatures: ``"transductive"`` (all of them, e.g. the
    seed-pooled ensemble) unless the caller knows better (e.g. ``"external"``).
    """

    embed_fn: Transform
    name: str = "embedding"
    fixed_setting: str = "transductive"

    def fit(self, train_values: np.ndarray, *, seed: int = 0) -> Transform:
        def transform(values: np.ndarray) -> np.ndarray:
            values = _check(values, f"{self.name} input")
            out = np.asarray(self.embed_fn(values), dtype=np.float64)
            if out.ndim != 2 or out.shape[0] != values.shape[0]:
                raise DeeppertError(
                    f"{self.name}: embed_fn returned shape {out.shape} for {values.shape[0]} signatures"
                )
            return _check(out, f"{self.name} output")

        return transform

    def to_dict(self) -> dict[str, object]:
        fn = getattr(self.embed_fn, "__qualname__", type(self.embed_fn).__name__)
        return {
            "name": self.name,
            "kind": "embedding",
            "embed_fn": str(fn),
            "setting": self.fixed_setting,
        }


def raw_featurizer() -> RawFeaturizer:
    """The raw 978-gene baseline."""
    return RawFeaturizer()


def pca_featurizer(n_components: int = 10, *, name: str = "pca") -> PCAFeaturizer:
    """PCA with ``n_components``, refitted per fold (inductive) or on all signatures (transductive)."""
    return PCAFeaturizer(n_components=n_components, name=name)


def embedding_featurizer(
    embed_fn: Transform, *, name: str = "embedding", setting: str = "transductive"
) -> EmbeddingFeaturizer:
    """Features from any embedding callable, e.g. an ensemble embedding of new signatures.

    ``setting`` names how the embedding's model saw the task's signatures (reported as is).
    """
    if not callable(embed_fn):
        raise DeeppertError(f"embedding featurizer {name!r}: embed_fn is not callable")
    return EmbeddingFeaturizer(embed_fn=embed_fn, name=name, fixed_setting=setting)


def pair_features(drug_features: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Features of drug pairs in the order given: ``drug_features[a] ++ drug_features[b]``."""
    return np.hstack([drug_features[np.asarray(a)], drug_features[np.asarray(b)]])
