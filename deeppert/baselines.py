"""Linear baselines on the same PCA input: PCA, FastICA, Gaussian random projection.

Each gives an embedding (samples x d) and gene weights (genes x d). A linear encoder
``z = x @ M`` on PCA scores ``x`` has Integrated Gradients ``IG_k(x) = x * M[:, k]`` (baseline 0),
so its gene weights follow the same definition as the autoencoders': mean over samples of
``|(x * M[:, k]) @ components|``. That keeps baseline and autoencoder weights comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA, FastICA
from sklearn.random_projection import GaussianRandomProjection

from deeppert.errors import DeeppertError
from deeppert.preprocess import PCAModel

__all__ = ["BaselineKind", "Baseline", "fit_baseline", "linear_gene_weights"]

BaselineKind = Literal["PCA", "ICA", "RP"]
BASELINE_KINDS: tuple[str, ...] = ("PCA", "ICA", "RP")


@dataclass
class Baseline:
    """A fitted linear baseline: ``embedding = (x - center) @ projection``."""

    kind: str
    projection: np.ndarray  # (p, d)
    center: np.ndarray  # (p,)
    embedding: pd.DataFrame  # samples x d
    gene_weights: pd.DataFrame  # genes x d

    @property
    def name(self) -> str:
        return f"{self.kind}_d{self.projection.shape[1]}"


def linear_gene_weights(
    x_pca: np.ndarray, projection: np.ndarray, pca: PCAModel, *, chunk: int = 2048
) -> np.ndarray:
    """Gene weights (genes x d) of the linear encoder ``x @ projection`` by exact IG."""
    x_pca = np.asarray(x_pca, dtype=np.float64)
    d = projection.shape[1]
    total = np.zeros((pca.components.shape[1], d))
    for start in range(0, len(x_pca), chunk):
        xb = x_pca[start : start + chunk]
        for k in range(d):
            total[:, k] += np.abs((xb * projection[:, k]) @ pca.components).sum(axis=0)
    return total / len(x_pca)


def fit_baseline(
    kind: BaselineKind,
    x_pca: np.ndarray,
    pca: PCAModel,
    n_components: int,
    *,
    sample_ids: list[str],
    seed: int = 0,
) -> Baseline:
    """Fit baseline ``kind`` with ``n_components`` on PCA scores ``x_pca`` (n, p)."""
    if kind not in BASELINE_KINDS:
        raise DeeppertError(f"unknown baseline {kind!r}; valid: {list(BASELINE_KINDS)}")
    x_pca = np.asarray(x_pca, dtype=np.float64)
    if n_components > x_pca.shape[1]:
        raise DeeppertError(
            f"{kind}: {n_components} components from only {x_pca.shape[1]} PCA inputs"
        )
    if kind == "PCA":
        est = PCA(n_components=n_components, svd_solver="full").fit(x_pca)
        projection, center = est.components_.T, est.mean_
    elif kind == "ICA":
        est = FastICA(
            n_components=n_components, random_state=seed, whiten="unit-variance", max_iter=1000
        )
        est.fit(x_pca)
        projection, center = est.components_.T, est.mean_
    else:
        est = GaussianRandomProjection(n_components=n_components, random_state=seed).fit(x_pca)
        projection, center = np.asarray(est.components_).T, np.zeros(x_pca.shape[1])
    name = f"{kind}_d{n_components}"
    columns = [f"{name}_z{k:02d}" for k in range(n_components)]
    embedding = pd.DataFrame(
        (x_pca - center) @ projection, index=pd.Index(sample_ids, name="sample_id"), columns=columns
    )
    weights = pd.DataFrame(
        linear_gene_weights(x_pca - center, projection, pca),
        index=pd.Index(pca.genes, name="gene"),
        columns=columns,
    )
    return Baseline(kind, projection, center, embedding, weights)
