"""Ensembling latent variables of many models (docs/method.md section 4).

Two modes (``EnsembleConfig.method``). The default, ``"consensus"``
(:func:`consensus_ensemble`), rotates each model run's code to identifiable axes (ICA and
varimax, pooled) and takes a consensus of the components' signed gene loadings, L chosen
from a stability curve.

The reference mode, ``"gmeans"``: every latent variable of every model (all dims, all runs)
is one row of ``V``, its values over the training samples the features. :func:`gmeans`
chooses the number of clusters ``L``; ``KMeans(L)`` labels the variables; an ensemble
cluster's gene importances are the mean of its members' IG gene-weight vectors and its
embedding the mean of its members' latent values.

Every ensemble carries two gene tables (:class:`Ensemble`): ``weights``, non-negative gene
importances, the input of the downstream steps; and ``loadings``, signed, for reading a
program's direction. Only the gmeans mode uses the IG gene weights.

:class:`EnsembleModel` applies an ensemble of either mode to NEW signatures (PCA transform ->
every member encoder -> per-cluster mean).

Latent variables are sign-ambiguous (a node and its negation carry the same
information). ``sign_alignment="centroid"`` flips each variable to correlate positively
with its cluster's centroid (axial k-means: start from the sign of the correlation with
the variables' first principal axis, then alternate KMeans and sign flips until no sign
changes; every step lowers the k-means objective, so it terminates). Gene weights are
mean ``|.|`` and unaffected by a flip; the ensemble embedding averages signed values.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.stats import anderson
from sklearn.cluster import KMeans
from sklearn.decomposition import FastICA
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import silhouette_score

from deeppert.atomic import atomic_dir
from deeppert.attribution import gene_loadings
from deeppert.ensemble.config import _AD_NORMAL, EnsembleConfig
from deeppert.errors import DeeppertError
from deeppert.preprocess import PCAModel
from deeppert.progress import Progress
from deeppert.train import TrainedModels

__all__ = [
    "EnsembleConfig",
    "GMeansResult",
    "Ensemble",
    "EnsembleModel",
    "anderson_critical_value",
    "gmeans",
    "kmeans_labels",
    "align_signs",
    "prepare_variables",
    "build_ensemble",
    "Components",
    "rotate_code",
    "apply_rotation",
    "model_components",
    "RunComponents",
    "run_components",
    "components_by_run",
    "run_groups",
    "local_density",
    "Mapper",
    "consensus_ensemble",
    "ConsensusPrograms",
    "consensus_programs",
    "parse_variable_name",
    "cluster_names",
]

# rotations.npz holds this key beside the model runs: the layout of rotate_code's rows
# (row 0 = offset mean(z) @ W). A file without it, or with another value, is refused.
_ROTATION_FORMAT = ("__rotation_format__", 2)

_NAME = re.compile(r"^(?P<model>.+)_run(?P<run>\d+)_(?:z|ic)(?P<node>\d+)$")


# -- GMeans -------------------------------------------------------------------------------
def anderson_critical_value(n: int, strictness: int = 3) -> float:
    """Critical value of the Anderson-Darling normality test (estimated mean and variance).

    Equals ``scipy.stats.anderson(x).critical_values[strictness]`` for ``len(x) == n``
    exactly: scipy rounds the corrected value to three decimals, and so does this.
    """
    return float(np.around(_AD_NORMAL[strictness] / (1.0 + 0.75 / n + 2.25 / n**2), 3))


def _anderson_statistic(x: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return float(anderson(x, dist="norm").statistic)


@dataclass
class GMeansResult:
    """GMeans leaves: ``labels`` (n,) in depth-first leaf order, their depths and centres."""

    labels: np.ndarray
    n_clusters: int
    depths: list[int]
    centers: np.ndarray


def _two_means(X: np.ndarray, seed: int, n_init: int) -> tuple[np.ndarray, np.ndarray]:
    km = KMeans(n_clusters=2, n_init=n_init, random_state=seed).fit(X)
    labels, centers = km.labels_, km.cluster_centers_
    if (
        labels.size and labels[0] == 1
    ):  # canonical child order: the one holding the first point first
        labels, centers = 1 - labels, centers[::-1]
    return labels, centers


def gmeans(
    X: np.ndarray, *, seed: int = 0, strictness: int = 3, max_depth: int = 10, n_init: int = 10
) -> GMeansResult:
    """GMeans (Hamerly & Elkan): split clusters with 2-means until each looks Gaussian.

    A cluster is split in two with ``KMeans(2, n_init, random_state=seed)``; its points are
    projected on the line joining the two child centres, the projection standardised and
    tested with Anderson-Darling. The cluster stays whole when the test passes at level
    ``strictness`` (3 = 2.5 %), when a child would hold <= 1 point, or at ``max_depth``
    (root = depth 1); otherwise both children are split in turn (neither is abandoned).
    Deterministic for a given seed.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1:
        raise DeeppertError(f"gmeans needs a non-empty (points, features) matrix, got {X.shape}")
    leaves: list[tuple[np.ndarray, int]] = []

    def split(idx: np.ndarray, depth: int) -> None:
        if depth >= max_depth or idx.size < 4:
            leaves.append((idx, depth))
            return
        pts = X[idx]
        labels, centers = _two_means(pts, seed, n_init)
        sizes = np.bincount(labels, minlength=2)
        if sizes.min() <= 1:
            leaves.append((idx, depth))
            return
        v = centers[1] - centers[0]
        proj = pts @ v / max(float(v @ v), np.finfo(float).tiny)
        sd = proj.std()
        if sd <= 0 or _anderson_statistic((proj - proj.mean()) / sd) < anderson_critical_value(
            idx.size, strictness
        ):
            leaves.append((idx, depth))
            return
        for child in (0, 1):
            split(idx[labels == child], depth + 1)

    split(np.arange(X.shape[0]), 1)
    out = np.empty(X.shape[0], dtype=np.int64)
    for k, (idx, _) in enumerate(leaves):
        out[idx] = k
    centers = np.stack([X[idx].mean(0) for idx, _ in leaves])
    return GMeansResult(out, len(leaves), [d for _, d in leaves], centers)


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0..L-1 by size (descending), ties by first member: seed-free ids."""
    ids = np.unique(labels)
    first = {k: int(np.flatnonzero(labels == k)[0]) for k in ids}
    order = sorted(ids, key=lambda k: (-int((labels == k).sum()), first[k]))
    remap = {old: new for new, old in enumerate(order)}
    return np.array([remap[k] for k in labels], dtype=np.int64)


def kmeans_labels(X: np.ndarray, n_clusters: int, *, seed: int = 0, n_init: int = 10) -> np.ndarray:
    """KMeans(L) labels, renumbered canonically (largest cluster first)."""
    n_clusters = min(n_clusters, len(X))
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(
        np.asarray(X, dtype=np.float64)
    )
    return _canonical(km.labels_)


def align_signs(
    X: np.ndarray, n_clusters: int, *, seed: int = 0, n_init: int = 10, max_iter: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """Axial k-means: signs (+-1 per row) and labels with each row on its centroid's side.

    Start from the sign of each row's projection on the first principal axis of the rows,
    then alternate KMeans(L) (warm-started) and flipping every row whose negation is closer
    to a centroid, until no sign changes.
    """
    X = np.asarray(X, dtype=np.float64)
    _, _, vt = np.linalg.svd(X, full_matrices=False)
    signs = np.where(X @ vt[0] < 0, -1.0, 1.0)
    n_clusters = min(n_clusters, len(X))
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(signs[:, None] * X)
    for _ in range(max_iter):
        c = km.cluster_centers_
        sq = (X**2).sum(1, keepdims=True) + (c**2).sum(1)[None]
        d_pos = (sq - 2 * X @ c.T).min(1)
        d_neg = (sq + 2 * X @ c.T).min(1)
        new = np.where(d_neg < d_pos - 1e-12, -1.0, np.where(d_pos < d_neg - 1e-12, 1.0, signs))
        if np.array_equal(new, signs):
            break
        signs = new
        km = KMeans(n_clusters=n_clusters, init=c, n_init=1, random_state=seed).fit(
            signs[:, None] * X
        )
    return signs, km.labels_


def prepare_variables(latents: pd.DataFrame, scaling: str = "standardize") -> np.ndarray:
    """``V`` (variables, samples) from a samples x variables frame, optionally standardised."""
    V = latents.to_numpy(dtype=np.float64).T
    if not np.isfinite(V).all():
        raise DeeppertError("latent values contain NaN or infinity")
    if scaling == "standardize":
        V = V - V.mean(1, keepdims=True)
        sd = V.std(1, keepdims=True)
        V = V / np.where(sd > 0, sd, 1.0)
    return V


def cluster_names(n: int) -> list[str]:
    """``cluster_000`` ... : the ensemble's column / row names."""
    return [f"cluster_{k:03d}" for k in range(n)]


def parse_variable_name(name: str) -> tuple[str, int, int]:
    """``"VAE_d10_run3_z07"`` -> ``("VAE_d10", 3, 7)`` (model, run, node).

    Rotated components of the consensus mode are named ``<model>_run<r>_ic<k>``.
    """
    m = _NAME.match(name)
    if m is None:
        raise DeeppertError(f"latent variable name {name!r} is not <model>_run<r>_z<k>")
    return m["model"], int(m["run"]), int(m["node"])


# -- the ensemble --------------------------------------------------------------------------
@dataclass
class Ensemble:
    """An ensemble of latent variables.

    Attributes
    ----------
    labels
        One row per latent variable (index): ``cluster`` (0..L-1), ``cluster_name``, ``sign``.
    n_clusters
        ``L``.
    gmeans_n_clusters
        What GMeans chose (None when ``config.n_clusters`` fixed L).
    weights
        Clusters x genes: non-negative gene **importances**, what downstream steps (target
        combination, ``ensemble_weights.parquet``) consume. gmeans mode: the mean of the
        members' IG gene weights (mean |IG|; None without gene weights); consensus mode:
        ``|loadings|``.
    loadings
        Clusters x genes: signed gene **loadings**, each cluster's covariance with the genes
        per standard deviation of the cluster (a gene that falls when the program rises is
        negative; ``ensemble_loadings.parquet``). consensus mode: the per-cluster median of the
        members' sign-aligned component loadings, signed so the largest |loading| is positive;
        gmeans mode: the loadings of the ensemble embedding (None without the PCA scores).
    embedding
        Samples x clusters: mean of the members' sign-aligned values (latent values; rotated
        component values in the consensus mode).
    config
        The :class:`EnsembleConfig`.
    selection
        consensus mode: the L-selection curve, one row per L (``stability``, ``error``, ...).
    rotations
        consensus mode: ``"<model>_run<r>"`` -> ``(d + 1, r)`` array (:func:`rotate_code`):
        rows 1.. the map ``W`` (d x r), row 0 the offset ``mean(z) @ W``; component values
        are :func:`apply_rotation` ``= z @ W - offset`` (centred, unit variance). ``r`` is the
        code's rank (``< d`` when it has directions without variance), twice that for the
        pooled ``"ica+varimax"`` rotation.
    n_dropped
        consensus mode: components dropped by the density filter.
    density_filter
        consensus mode: what the density filter did (``components``, ``kept``, ``dropped``,
        ``neighbours``, ``threshold``, ``median_distance`` and the ``reason`` for dropping).
    """

    labels: pd.DataFrame
    n_clusters: int
    gmeans_n_clusters: int | None
    weights: pd.DataFrame | None
    embedding: pd.DataFrame
    config: EnsembleConfig = field(default_factory=EnsembleConfig)
    loadings: pd.DataFrame | None = None
    selection: pd.DataFrame | None = None
    rotations: dict[str, np.ndarray] | None = None
    n_dropped: int = 0
    density_filter: dict | None = None

    @property
    def members(self) -> dict[str, list[str]]:
        """Cluster name -> its latent variables, in input order."""
        return {
            name: list(group.index)
            for name, group in self.labels.groupby("cluster_name", sort=True)
        }

    @property
    def sizes(self) -> pd.Series:
        return self.labels["cluster_name"].value_counts().reindex(cluster_names(self.n_clusters))


def build_ensemble(
    latents: pd.DataFrame,
    gene_weights: pd.DataFrame | None = None,
    *,
    config: EnsembleConfig | None = None,
    cluster_on: Literal["latents", "gene_weights"] | None = None,
    x_pca: np.ndarray | None = None,
    pca: PCAModel | None = None,
    precomputed: Mapping[str, RunComponents] | None = None,
    mapper: Mapper = map,
) -> Ensemble:
    """Cluster latent variables and average them into ensemble weights and embedding.

    Parameters
    ----------
    latents
        Samples x latent variables (every model, dim and run side by side; rows aligned by
        position, so repeated sample ids are fine).
    gene_weights
        Genes x latent variables (the IG gene weights of the same variables), optional.
    config
        :class:`EnsembleConfig`; ``config.method`` picks the reference or the consensus mode.
    cluster_on
        Overrides ``config.cluster_on`` (gmeans mode).
    x_pca, pca
        The PCA scores the latents were computed from (rows aligned with ``latents``) and the
        PCA model: the consensus mode needs them; the gmeans mode uses them, when given, for
        :attr:`Ensemble.loadings`.
    precomputed
        Consensus mode: model run -> :class:`RunComponents` already computed
        (:func:`components_by_run`), used instead of rotating those runs again.
    mapper
        Consensus mode: how its independent pieces of work run (:data:`Mapper`).
    """
    config = config or EnsembleConfig()
    if config.method == "consensus":
        if x_pca is None or pca is None:
            raise DeeppertError(
                "ensemble.method = consensus needs the PCA scores and PCA model of the latents "
                "(or set ensemble.method = gmeans, the reference mode)"
            )
        return consensus_ensemble(
            latents, x_pca, pca, config=config, precomputed=precomputed, mapper=mapper
        )
    cluster_on = cluster_on or config.cluster_on
    names = list(latents.columns)
    if len(set(names)) != len(names):
        raise DeeppertError("latent variable names must be unique")
    if gene_weights is not None:
        missing = [v for v in names if v not in gene_weights.columns]
        if missing:
            raise DeeppertError(
                f"gene weights lack {len(missing)} latent variables, e.g. {missing[:3]}"
            )
    if cluster_on == "gene_weights":
        if gene_weights is None:
            raise DeeppertError("cluster_on='gene_weights' needs gene weights")
        V = prepare_variables(gene_weights[names], config.scaling)
    else:
        V = prepare_variables(latents, config.scaling)
    signs = np.ones(len(names))
    if config.sign_alignment == "centroid":
        _, _, vt = np.linalg.svd(V, full_matrices=False)
        signs = np.where(V @ vt[0] < 0, -1.0, 1.0)
    chosen = None
    if config.n_clusters is None or config.labelling == "gmeans":
        gm = gmeans(
            signs[:, None] * V,
            seed=config.seed,
            strictness=config.strictness,
            max_depth=config.max_depth,
            n_init=config.n_init,
        )
        chosen = gm.n_clusters
    L = config.n_clusters if config.n_clusters is not None else chosen
    if config.labelling == "gmeans":
        labels = gm.labels
        if config.sign_alignment == "centroid":  # flip towards the leaf centroid
            cent = np.stack(
                [(signs[labels == k, None] * V[labels == k]).mean(0) for k in range(gm.n_clusters)]
            )
            signs = np.where((signs[:, None] * V * cent[labels]).sum(1) < 0, -signs, signs)
    elif config.sign_alignment == "centroid":
        signs, labels = align_signs(
            V, L, seed=config.seed, n_init=config.n_init, max_iter=config.max_sign_iter
        )
    else:
        labels = kmeans_labels(V, L, seed=config.seed, n_init=config.n_init)
    labels = _canonical(labels)
    L = int(labels.max()) + 1
    cnames = cluster_names(L)
    frame = pd.DataFrame(
        {
            "cluster": labels,
            "cluster_name": [cnames[k] for k in labels],
            "sign": signs.astype(np.int64),
        },
        index=pd.Index(names, name="variable"),
    )
    onehot = np.zeros((len(names), L))
    onehot[np.arange(len(names)), labels] = 1.0
    onehot /= onehot.sum(0, keepdims=True)
    values = latents.to_numpy(dtype=np.float64) * signs[None]
    embedding = pd.DataFrame(values @ onehot, index=latents.index, columns=cnames)
    weights = None
    if gene_weights is not None:
        gw = gene_weights[names].to_numpy(dtype=np.float64)
        weights = pd.DataFrame(
            (gw @ onehot).T, index=pd.Index(cnames, name="cluster"), columns=gene_weights.index
        )
    loadings = None
    if x_pca is not None and pca is not None:
        loadings = pd.DataFrame(
            gene_loadings(embedding.to_numpy(), np.asarray(x_pca, dtype=np.float64), pca).T,
            index=pd.Index(cnames, name="cluster"),
            columns=pd.Index(pca.genes, name="gene"),
        )
    return Ensemble(frame, L, chosen, weights, embedding, config, loadings)


# -- the consensus mode --------------------------------------------------------------------
@dataclass
class Components:
    """Identifiable components of every model run: rotations and signed loadings.

    Attributes
    ----------
    names
        ``<model>_run<r>_ic<k>``, one per component.
    loadings_pca
        ``(p, components)``: each component's covariance with the PCA scores. Gene loadings are
        ``pca.components.T @ loadings_pca`` (:func:`deeppert.attribution.gene_loadings`); the
        PCA components are orthonormal, so distances and angles between components are the same
        in these ``p`` coordinates as over genes: the tractable representation to cluster.
    rotations
        ``"<model>_run<r>"`` -> ``(d + 1, r)``: the offset, then the map to components
        (:func:`rotate_code`).
    columns
        ``"<model>_run<r>"`` -> its latent variables (the code's columns, in order).
    """

    names: list[str]
    loadings_pca: np.ndarray
    rotations: dict[str, np.ndarray]
    columns: dict[str, list[str]]

    @property
    def n_models(self) -> int:
        """Model runs (every shape and run)."""
        return len(self.rotations)

    @property
    def n_replicates(self) -> int:
        """The most runs of any one model shape: cNMF's replicates (``n_iter``)."""
        shapes = [key.rsplit("_run", 1)[0] for key in self.rotations]
        return max(shapes.count(s) for s in set(shapes))

    def gene_loadings(self, pca: PCAModel) -> pd.DataFrame:
        """Genes x components: signed loadings in gene space (all of them: 0.8 GB at DeepProfile
        scale; :meth:`run_gene_loadings` gives one model run's)."""
        return pd.DataFrame(
            pca.components.T @ self.loadings_pca,
            index=pd.Index(pca.genes, name="gene"),
            columns=self.names,
        )

    def run_gene_loadings(self, key: str, pca: PCAModel) -> np.ndarray:
        """``(r, genes)``: the signed gene loadings of model run ``key``'s components."""
        start, stop = self._spans[key]
        return self.loadings_pca[:, start:stop].T @ pca.components

    @cached_property
    def _spans(self) -> dict[str, tuple[int, int]]:
        """Model run -> its components' column range (a run's components are adjacent)."""
        spans, start = {}, 0
        for key, rotation in self.rotations.items():
            spans[key] = (start, start + rotation.shape[1])
            start += rotation.shape[1]
        return spans

    def values(self, latents: pd.DataFrame, names: Sequence[str] | None = None) -> np.ndarray:
        """Samples x components (``names``, default all): unit-variance component values."""
        names = list(self.names if names is None else names)
        out = np.empty((len(latents), len(names)))
        wanted: dict[str, list[tuple[int, int]]] = {}
        for j, name in enumerate(names):
            key, k = name.rsplit("_ic", 1)
            wanted.setdefault(key, []).append((j, int(k)))
        for key, items in wanted.items():
            z = latents[self.columns[key]].to_numpy(dtype=np.float64)
            comp = apply_rotation(z, self.rotations[key])
            for j, k in items:
                out[:, j] = comp[:, k]
        return out


def _varimax(loadings: np.ndarray, *, max_iter: int = 500, tol: float = 1e-8) -> np.ndarray:
    """Orthogonal ``(r, r)`` rotation maximising the varimax criterion of ``loadings`` (m, r).

    Kaiser's raw varimax (no row normalisation: genes with small loadings stay small), by the
    SVD iteration, started from the identity: deterministic. Stops when the criterion grows by
    less than ``tol`` (relative) or after ``max_iter`` rounds.
    """
    m, r = loadings.shape
    R = np.eye(r)
    crit = 0.0
    for _ in range(max_iter):
        lam = loadings @ R
        u, s, vt = np.linalg.svd(loadings.T @ (lam**3 - lam * ((lam**2).sum(0) / m)))
        R = u @ vt
        prev, crit = crit, float(s.sum())
        if prev > 0 and crit <= prev * (1 + tol):
            break
    return R


def rotate_code(
    z: np.ndarray,
    rotation: str = "ica",
    *,
    seed: int = 0,
    max_iter: int = 200,
    max_rows: int | None = None,
    x_pca: np.ndarray | None = None,
    pca: PCAModel | None = None,
) -> np.ndarray:
    """``(d + 1, r)``: offset and map of one model's code ``z`` (n, d) to unit-variance components.

    Rows 1.. are the map ``W`` (d x r), row 0 the offset ``mean(z) @ W``: component values
    are ``z @ W - offset`` (:func:`apply_rotation`), whatever ``r``.

    The code is whitened with its own covariance over all rows (``eigh``, ``d x d``) and the
    white code rotated orthogonally (an invertible map of the latent space: the model
    reconstructs the same, but its axes are no longer arbitrary mixtures):

    - ``"ica"``: to FastICA's independent axes (logcosh, symmetric): programs whose
      activities are non-Gaussian;
    - ``"varimax"``: to the raw varimax axes of the white components' gene loadings (their
      covariance with the genes, through ``x_pca`` and ``pca``): programs whose gene loadings
      are sparse, whatever the distribution of their activities;
    - ``"ica+varimax"``: both sets side by side (``r`` = twice the rank), for the consensus to
      keep what recurs across runs;
    - ``"none"``: only standardises the raw nodes.

    Directions with (numerically) no variance, e.g. collapsed VAE nodes, are left out, so
    ``r <= d`` per rotation. FastICA and the loadings use at most ``max_rows`` rows (a sample
    seeded by ``seed``), FastICA at most ``max_iter`` iterations, and the map is applied to
    every row. The cost per model is ``max_rows x r^2 x max_iter`` (ICA) and ``genes x r^2``
    per varimax round, whatever the number of samples: a DeepProfile-sized ensemble
    (600 models up to d = 100 over 15,000 samples) stays tractable
    (bench/results/recovery_scale.json).
    """
    if rotation not in ("ica", "varimax", "ica+varimax", "none"):
        raise DeeppertError(f"rotation must be ica, varimax, ica+varimax or none, got {rotation!r}")
    z = np.asarray(z, dtype=np.float64)
    mean = z.mean(0)
    zc = z - mean
    d = z.shape[1]
    if rotation == "none":
        W = np.eye(d)[:, zc.std(0) > 0]
    else:
        evals, evecs = np.linalg.eigh(np.cov(zc, rowvar=False).reshape(d, d))
        keep = evals > 1e-8 * max(float(evals.max()), np.finfo(float).tiny)
        white = evecs[:, keep] / np.sqrt(evals[keep])  # zc @ white has identity covariance
        rows = np.arange(len(zc))
        if max_rows is not None and len(zc) > max_rows:
            rows = np.sort(np.random.default_rng(seed).choice(len(zc), max_rows, replace=False))
        maps = []
        if rotation in ("ica", "ica+varimax"):
            W = white
            if W.shape[1] > 1:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    ica = FastICA(whiten=False, random_state=seed, max_iter=max_iter)
                    W = W @ ica.fit(zc[rows] @ W).components_.T
            maps.append(W)
        if rotation in ("varimax", "ica+varimax"):
            if x_pca is None or pca is None:
                raise DeeppertError(
                    f"rotation = {rotation} needs the PCA scores and PCA model of the code "
                    "(the gene loadings it makes sparse)"
                )
            x = np.asarray(x_pca, dtype=np.float64)
            if x.shape != (len(z), pca.n_components):
                raise DeeppertError(
                    f"PCA scores of shape {x.shape} do not fit a code of {len(z)} rows and a "
                    f"PCA of {pca.n_components} components"
                )
            x = x[rows]
            s = zc[rows] @ white
            genes = pca.components.T @ ((x - x.mean(0)).T @ (s - s.mean(0)) / len(rows))
            maps.append(white @ (_varimax(genes) if white.shape[1] > 1 else np.eye(white.shape[1])))
        W = np.hstack(maps)
    sd = (zc @ W).std(0)
    W = W / np.where(sd > 0, sd, 1.0)
    return np.vstack([mean @ W, W])


def apply_rotation(z: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Component values ``(n, r)`` of a code ``z`` (n, d) under a :func:`rotate_code` result."""
    return np.asarray(z, dtype=np.float64) @ rotation[1:] - rotation[0]


@dataclass(frozen=True)
class RunComponents:
    """One model run's part of :class:`Components`: its rotation and the signed loadings of its
    components on the PCA scores (what :func:`run_components` computes)."""

    rotation: np.ndarray  # (d + 1, r), as rotate_code returns
    loadings_pca: np.ndarray  # (p, r)


def configured_rotation(
    z: np.ndarray, x_pca: np.ndarray, pca: PCAModel, config: EnsembleConfig
) -> np.ndarray:
    """:func:`rotate_code` of one model run's code with the consensus settings of ``config``."""
    return rotate_code(
        z,
        config.rotation,
        seed=config.seed,
        max_iter=config.ica_max_iter,
        max_rows=config.ica_max_rows,
        x_pca=x_pca,
        pca=pca,
    )


def run_components(
    z: np.ndarray,
    x: np.ndarray,
    xc: np.ndarray,
    pca: PCAModel,
    config: EnsembleConfig,
    *,
    key: str = "model run",
) -> RunComponents:
    """Rotate one model run's code ``z`` (n, d) (:func:`rotate_code`; the varimax rotation reads
    the PCA scores ``x`` and ``pca``) and load its components on the centred PCA scores ``xc``
    (n, p): the per-run unit of :func:`model_components`, which depends on no other run (a
    distributed ensemble runs it as one task)."""
    z = np.asarray(z, dtype=np.float64)
    if not np.isfinite(z).all():
        raise DeeppertError(f"latent values of {key} contain NaN or infinity")
    rot = configured_rotation(z, x, pca, config)
    S = apply_rotation(z, rot)
    return RunComponents(rot, xc.T @ (S - S.mean(0)) / len(S))


def run_groups(columns: Iterable[str]) -> dict[str, list[str]]:
    """``"<model>_run<r>"`` -> its latent variables, in column order."""
    groups: dict[str, list[str]] = {}
    for name in columns:
        model, run, _ = parse_variable_name(name)
        groups.setdefault(f"{model}_run{run}", []).append(name)
    return groups


def _checked_scores(latents, x_pca: np.ndarray | None, pca: PCAModel | None) -> np.ndarray:
    """The PCA scores as float64, checked against the latents' rows and the PCA model."""
    if x_pca is None or pca is None:
        raise DeeppertError(
            "ensemble.method = consensus needs the PCA scores and PCA model of the latents "
            "(or set ensemble.method = gmeans, the reference mode)"
        )
    x = np.asarray(x_pca, dtype=np.float64)
    if x.shape[0] != len(latents):
        raise DeeppertError(
            f"PCA scores have {x.shape[0]} rows, latents {len(latents)}: not the same samples"
        )
    if x.shape[1] != pca.n_components:
        raise DeeppertError(f"PCA scores have {x.shape[1]} columns, PCA has {pca.n_components}")
    return x


def components_by_run(
    latents: pd.DataFrame,
    x_pca: np.ndarray,
    pca: PCAModel,
    config: EnsembleConfig,
    *,
    keys: Sequence[str] | None = None,
) -> dict[str, RunComponents]:
    """:func:`run_components` of the model runs ``keys`` (default all) of ``latents``, reading
    one run's code at a time (``latents`` may be a :class:`~deeppert.latent_store.LatentStore`).
    Over ``_SCAN_PROGRESS_ROWS`` latent variables or more (tens of minutes on one core at
    DeepProfile scale) it says how far it is."""
    x = _checked_scores(latents, x_pca, pca)
    xc = x - x.mean(0)
    groups = run_groups(latents.columns)
    keys = list(groups if keys is None else keys)
    found = {}
    variables = sum(len(groups[key]) for key in keys)
    with _progress(variables, len(keys), "rotating model runs", "run") as bar:
        for key in keys:
            z = latents[groups[key]].to_numpy(dtype=np.float64)
            found[key] = run_components(z, x, xc, pca, config, key=key)
            if bar is not None:
                bar.update(1)
    return found


def model_components(
    latents: pd.DataFrame,
    x_pca: np.ndarray,
    pca: PCAModel,
    config: EnsembleConfig,
    *,
    precomputed: Mapping[str, RunComponents] | None = None,
) -> Components:
    """Rotate every model run's code (:func:`rotate_code`) and load its components on the PCA
    scores, one model run at a time (the samples x components matrix is never held).

    ``precomputed`` (model run -> :class:`RunComponents`, e.g. from :func:`components_by_run`
    or Ray tasks) is used for the runs it holds; the others are computed here."""
    _checked_scores(latents, x_pca, pca)
    groups = run_groups(latents.columns)
    known = dict(precomputed or {})
    missing = [key for key in groups if key not in known]
    if missing:
        known.update(components_by_run(latents, x_pca, pca, config, keys=missing))
    loads, names, rotations = [], [], {}
    for key in groups:
        found = known[key]
        rotations[key] = found.rotation
        loads.append(found.loadings_pca)
        names += [f"{key}_ic{k:02d}" for k in range(found.rotation.shape[1])]
    return Components(names, np.hstack(loads), rotations, groups)


#: Components from which the density filter and the L scan log their progress.
_SCAN_PROGRESS_ROWS = 10_000

#: How the consensus runs its independent pieces of work (the density filter's row segments,
#: the L scan's clusterings): ``mapper(fn, items)`` yields ``fn(item)`` for each item, in order.
#: The builtin ``map`` runs them in this process; the Ray ensemble job passes
#: :func:`ray_jobs._distributed.ray_map`, which runs them as Ray tasks. ``fn`` is a
#: :func:`functools.partial` holding the shared arrays, so a mapper can ship it once.
Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]

#: Row segments of the density filter: the pieces a mapper spreads over workers.
_DENSITY_SEGMENTS = 32


def _progress(rows: int, total: int, desc: str, unit: str):
    """A :class:`Progress` over ``total`` steps when the work has ``rows`` >=
    ``_SCAN_PROGRESS_ROWS`` components (minutes at DeepProfile scale), else no progress."""
    return (
        Progress(total, desc, unit=unit)
        if rows >= _SCAN_PROGRESS_ROWS
        else contextlib.nullcontext()
    )


#: Elements of the float64 blocks (32 MB) that the density filter (rows x all components) and
#: the cluster medians (members x genes) work through one at a time: their memory then does not
#: grow with the number of model runs (one 512-row block of similarities was 0.4 GB, and the
#: gene loadings of every component 0.8 GB, at DeepProfile scale's ~100,000 components).
_BLOCK_ELEMENTS = 4_000_000


def local_density(
    profiles: np.ndarray,
    n_neighbours: int,
    *,
    groups: np.ndarray | None = None,
    chunk: int | None = None,
    mapper: Mapper = map,
) -> np.ndarray:
    """Mean distance of each unit-normalised profile (row) to its ``n_neighbours`` nearest others.

    Distance between rows ``u, v`` is ``sqrt(2 - 2 |u . v|)``: the Euclidean distance after
    aligning signs. With ``groups`` (one label per row, e.g. the model run), only rows of
    other groups count as neighbours: two rotations of one run that agree are not a
    recurrence. Computed in row chunks, so ``(m, m)`` is never held: about 3 x chunk x m x
    8 bytes at a time, with ``chunk`` (default) rows such that chunk x m is at most
    ``_BLOCK_ELEMENTS`` (about 0.1 GB at any m). ``mapper`` runs the rows'
    ``_DENSITY_SEGMENTS`` segments (:data:`Mapper`; the same result with any).
    """
    U = _unit_rows(profiles)
    m = len(U)
    if groups is None:
        g = np.arange(m)
    elif len(groups) == m:
        g = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    else:
        raise DeeppertError(f"local_density: {len(groups)} group labels for {m} profiles")
    largest = int(np.bincount(g).max()) if m else 0
    k = min(max(1, n_neighbours), m - largest)
    out = np.zeros(m)
    if k < 1:
        return out
    chunk = chunk or min(512, max(1, _BLOCK_ELEMENTS // m))
    bounds = np.linspace(0, m, min(_DENSITY_SEGMENTS, m) + 1).astype(int)
    segments = list(zip(bounds[:-1], bounds[1:], strict=True))
    rows = partial(_density_rows, U, g, k, chunk)
    with _progress(m, m, f"neighbours of {m} components", "component") as bar:
        for (start, stop), found in zip(segments, mapper(rows, segments), strict=True):
            out[start:stop] = found
            if bar is not None:
                bar.update(stop - start)
    return out


def _density_rows(
    U: np.ndarray, g: np.ndarray, k: int, chunk: int, rows: tuple[int, int]
) -> np.ndarray:
    """:func:`local_density` of the unit rows ``U[start:stop]`` (``rows``), ``chunk`` at a time."""
    start, stop = rows
    out = np.empty(stop - start)
    for a in range(start, stop, chunk):
        b = min(a + chunk, stop)
        sim = np.abs(U[a:b] @ U.T)
        sim[g[a:b, None] == g[None]] = -np.inf  # not itself, its group
        top = -np.partition(-sim, k - 1, axis=1)[:, :k]
        out[a - start : b - start] = np.sqrt(np.clip(2 - 2 * top, 0, None)).mean(1)
    return out


def _unit_rows(M: np.ndarray) -> np.ndarray:
    M = np.asarray(M, dtype=np.float64)
    norm = np.linalg.norm(M, axis=1, keepdims=True)
    return M / np.where(norm > 0, norm, 1.0)


def _medians(P: np.ndarray, labels: np.ndarray, L: int) -> np.ndarray:
    """Per-cluster median of the rows of ``P`` (L x columns)."""
    return np.stack([np.median(P[labels == c], axis=0) for c in range(L)])


def _unexplained(x: np.ndarray, programs: np.ndarray) -> float:
    """Fraction of the variance of PCA scores ``x`` (n, p) left by least-squares usages of
    ``programs`` (L, p): cNMF's reconstruction error with the consensus held fixed."""
    xc = x - x.mean(0)
    coef, *_ = np.linalg.lstsq(programs.T, xc.T, rcond=None)  # (L, n)
    resid = xc - coef.T @ programs
    return float((resid**2).sum() / max((xc**2).sum(), np.finfo(float).tiny))


def _merge_duplicates(
    P: np.ndarray, signs: np.ndarray, labels: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Join clusters whose median loadings have ``|cosine| >= threshold`` (and chains of them).

    KMeans on the pooled rotations can split one program into near-copies (its ICA and its
    varimax components, or those of small and large latent dims), each tight enough for the
    silhouette to prefer the split. A joined cluster's members are flipped to the sign of
    its largest part. Returns signs and canonical labels."""
    L = int(labels.max()) + 1
    if L < 2:
        return signs, labels
    M = _unit_rows(_medians(signs[:, None] * P, labels, L))
    cos = M @ M.T
    _, group = connected_components(csr_matrix(np.abs(cos) >= threshold), directed=False)
    sizes = np.bincount(labels, minlength=L)
    flip = np.ones(L)
    for g in np.unique(group):
        parts = np.flatnonzero(group == g)
        lead = parts[np.argmax(sizes[parts])]
        flip[parts] = np.where(cos[parts, lead] < 0, -1.0, 1.0)
    return signs * flip[labels], _canonical(group[labels])


def _explains(curve: pd.DataFrame, p: int, factor: float) -> np.ndarray:
    """Per row of the selection curve: do its added clusters explain more than ``factor``
    times what as many average residual directions would?

    The error of row ``i`` is compared with the previous row's (with L = 0, error 1 before
    the first): the gain ``error[i-1] - error[i]`` against ``factor x error[i-1] x (L[i] -
    L[i-1]) / (p - L[i-1])``, the share of the residual variance an average one of the
    ``p - L[i-1]`` remaining PCA directions carries (Kaiser's criterion on the residual).
    Duplicate and noise clusters explain about an average direction or nothing."""
    L = curve["L"].to_numpy()
    err = curve["error"].to_numpy()
    prev_L = np.concatenate([[0], L[:-1]])
    prev_err = np.concatenate([[1.0], err[:-1]])
    added = np.maximum(L - prev_L, 0)
    baseline = factor * prev_err * added / np.maximum(p - prev_L, 1)
    return (added > 0) & (prev_err - err > baseline)


def _consensus_at(
    U: np.ndarray, P: np.ndarray, x: np.ndarray, L: int, config: EnsembleConfig
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Sign-aligned KMeans(L) of unit profiles ``U``; stability and error of that clustering,
    and the clusters left after joining duplicates (:func:`_merge_duplicates`)."""
    signs, labels = align_signs(
        U, L, seed=config.seed, n_init=config.n_init, max_iter=config.max_sign_iter
    )
    labels = _canonical(labels)
    L = int(labels.max()) + 1
    stability = _silhouette(signs[:, None] * U, labels, config.seed)
    error = _unexplained(x, _medians(signs[:, None] * P, labels, L))
    sizes = np.bincount(labels, minlength=L)
    distinct_stability = stability
    if config.n_clusters is None:  # a fixed L is kept as asked
        signs, labels = _merge_duplicates(P, signs, labels, config.merge_threshold)
        if labels.max() + 1 < L:
            distinct_stability = _silhouette(signs[:, None] * U, labels, config.seed)
    return (
        signs,
        labels,
        {
            "L": L,
            "stability": stability,
            "error": error,
            "min_size": int(sizes.min()),
            "distinct": int(labels.max()) + 1,
            "distinct_stability": distinct_stability,
        },
    )


def _silhouette(A: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """Silhouette of a clustering of the rows of ``A`` (at most 5,000 rows, seeded); NaN for
    one cluster or one row per cluster."""
    L = int(labels.max()) + 1
    if not 1 < L < len(A):
        return float("nan")
    return float(silhouette_score(A, labels, sample_size=min(len(A), 5000), random_state=seed))


def consensus_ensemble(
    latents: pd.DataFrame,
    x_pca: np.ndarray,
    pca: PCAModel,
    *,
    config: EnsembleConfig | None = None,
    precomputed: Mapping[str, RunComponents] | None = None,
    mapper: Mapper = map,
) -> Ensemble:
    """Identifiable consensus of many models' latent spaces (``ensemble.method = consensus``).

    1. Each model run's code is rotated to identifiable axes (:func:`rotate_code`,
       ``config.rotation``; an autoencoder's code is defined only up to an invertible map, so
       its raw nodes are arbitrary mixtures of programs that differ from run to run): by
       default both its ICA axes (non-Gaussian activities) and its varimax axes (sparse gene
       loadings), pooled.
    2. Each component gets signed loadings through the linear PCA map (its covariance with
       the PCA scores; over genes that is :func:`deeppert.attribution.gene_loadings`), compared
       as unit vectors in the ``p`` PCA coordinates (an isometry of gene space).
    3. cNMF-style filter: components whose mean sign-aligned distance to their
       ``neighbourhood x n_replicates x copies`` nearest neighbours (``copies`` = 2 under the
       pooled rotation, which gives a program an ICA and a varimax component in each run;
       else 1) exceeds ``density_threshold`` are
       dropped (no other run reproduces them; a run's own components are not its
       neighbours). ``n_replicates`` is the number of runs of a
       model shape (cNMF's replicates of one K), not the number of model runs of all shapes:
       a program that only the larger latent dims hold recurs in their runs alone.
    4. For every L in ``l_min..l_max``: sign-aligned KMeans (:func:`align_signs`); stability =
       silhouette of that clustering (cNMF's stability), error = fraction of the PCA-score
       variance the L consensus programs leave unexplained (least-squares usages), and
       whether the clusters added at that L explain more than ``gain_factor`` average
       residual directions (:func:`_explains`; duplicates and noise clusters do not). L = the
       most stable (the smaller on ties) of those up to the last L that explains, unless
       ``n_clusters`` fixes it (when none explains, the most stable of all). Clusters of the
       chosen L whose medians have ``|cosine| >= merge_threshold`` are then joined
       (:func:`_merge_duplicates`; not when ``n_clusters`` fixes L). The curve is
       ``Ensemble.selection`` (``distinct``: the clusters left after joining).
    5. Cluster loadings = per-cluster median of the members' sign-aligned gene loadings
       (robust to stragglers), signed so the largest |loading| is positive; gene importances
       (``weights``) = their absolute values; embedding = per-cluster mean of the sign-aligned
       component values.

    ``mapper`` (:data:`Mapper`) runs the independent work of steps 3 to 5 (row segments of
    the filter, one clustering per L, the embedding of a few model runs at a time): in this
    process by default, as Ray tasks in the ensemble job; the result is the same.
    """
    config = config or EnsembleConfig()
    found = consensus_programs(
        latents, x_pca, pca, config=config, precomputed=precomputed, mapper=mapper
    )
    L, names, signs, labels = found.n_clusters, found.names, found.signs, found.labels
    embedding = _cluster_embedding(latents, found.components, names, signs, labels, L, mapper)
    cnames = cluster_names(L)
    frame = pd.DataFrame(
        {
            "cluster": labels,
            "cluster_name": [cnames[k] for k in labels],
            "sign": signs.astype(np.int64),
            "local_distance": found.density[found.keep],
        },
        index=pd.Index(names, name="variable"),
    )
    index, genes = pd.Index(cnames, name="cluster"), pd.Index(pca.genes, name="gene")
    return Ensemble(
        labels=frame,
        n_clusters=L,
        gmeans_n_clusters=None,
        weights=pd.DataFrame(np.abs(found.loadings), index=index, columns=genes),
        embedding=pd.DataFrame(embedding, index=latents.index, columns=cnames),
        config=config,
        loadings=pd.DataFrame(found.loadings, index=index, columns=genes),
        selection=found.selection,
        rotations=found.components.rotations,
        n_dropped=int((~found.keep).sum()),
        density_filter=found.density_filter,
    )


@dataclass
class ConsensusPrograms:
    """Steps 1-5 of :func:`consensus_ensemble` without the embedding: what the split-half
    stability compares (each half's ``loadings``), which needs no sample values."""

    components: Components  # every model run's rotated components (step 1-2)
    keep: np.ndarray  # kept by the density filter (bool, one per component)
    density: np.ndarray  # each component's mean distance to its neighbours
    density_filter: dict  # the filter's summary (Ensemble.density_filter)
    names: list[str]  # the kept components
    selection: pd.DataFrame  # the curve over L
    signs: np.ndarray  # the kept components' signs, aligned with their cluster's loadings
    labels: np.ndarray  # the kept components' clusters
    loadings: np.ndarray  # L x genes, signed

    @property
    def n_clusters(self) -> int:
        return len(self.loadings)


def consensus_programs(
    latents: pd.DataFrame,
    x_pca: np.ndarray,
    pca: PCAModel,
    *,
    config: EnsembleConfig | None = None,
    precomputed: Mapping[str, RunComponents] | None = None,
    mapper: Mapper = map,
) -> ConsensusPrograms:
    """The consensus programs of :func:`consensus_ensemble` (its steps 1-5 but the
    embedding), with the same arguments."""
    config = config or EnsembleConfig()
    x = np.asarray(x_pca, dtype=np.float64)
    comp = model_components(latents, x, pca, config, precomputed=precomputed)
    if comp.n_models < 2:
        raise DeeppertError(
            f"the consensus compares components across model runs and found one "
            f"({', '.join(comp.rotations)}): train at least 2 runs, or use ensemble.method = gmeans"
        )
    P_all = comp.loadings_pca.T  # components x p
    U_all = _unit_rows(P_all)
    keep, density, density_filter = _density_filter(U_all, comp, config, mapper)
    U, P = U_all[keep], P_all[keep]
    names = [n for n, k in zip(comp.names, keep, strict=True) if k]
    curve, signs, labels = _select_clusters(U, P, x, config, mapper)
    L = int(labels.max()) + 1
    loadings, signs = _cluster_loadings(P, pca.components, signs, labels, L)
    return ConsensusPrograms(
        comp, keep, density, density_filter, names, curve, signs, labels, loadings
    )


def _density_filter(
    U: np.ndarray, comp: Components, config: EnsembleConfig, mapper: Mapper = map
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Step 3 of :func:`consensus_ensemble`: which unit profiles ``U`` another model run
    reproduces (cNMF's local-density filter); returns the kept mask, each component's mean
    distance to its neighbours and the filter's summary. Raises when too few are kept to
    cluster."""
    copies = 2 if config.rotation == "ica+varimax" else 1  # a program's components per run
    n_neighbours = max(1, int(round(config.neighbourhood * comp.n_replicates * copies)))
    runs = np.array([name.rsplit("_ic", 1)[0] for name in comp.names])
    density = local_density(U, n_neighbours, groups=runs, mapper=mapper)
    keep = density <= config.density_threshold
    density_filter = {
        "components": len(U),
        "kept": int(keep.sum()),
        "dropped": int((~keep).sum()),
        "neighbours": n_neighbours,
        "threshold": config.density_threshold,
        "median_distance": float(np.median(density)),
        "reason": (
            f"a component is dropped when its mean sign-aligned distance to its "
            f"{n_neighbours} nearest others exceeds {config.density_threshold}: no other model "
            "run reproduces it"
        ),
    }
    if keep.sum() < max(2, config.l_min):
        raise DeeppertError(
            f"only {int(keep.sum())} of {len(U)} components recur across the "
            f"{comp.n_models} model runs (median distance to the {n_neighbours} nearest "
            f"{np.median(density):.2f} > ensemble.density_threshold = "
            f"{config.density_threshold}): train more runs or more epochs, or use "
            "ensemble.method = gmeans"
        )
    return keep, density, density_filter


def _select_clusters(
    U: np.ndarray, P: np.ndarray, x: np.ndarray, config: EnsembleConfig, mapper: Mapper = map
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Step 4 of :func:`consensus_ensemble`: the selection curve over L and the signs and
    labels of the chosen L (the most stable up to the last L whose clusters explain, or the
    fixed ``n_clusters``); ``mapper`` runs the clusterings of the Ls."""
    if config.n_clusters is not None:
        Ls = [min(config.n_clusters, len(U))]
    else:
        Ls = list(range(config.l_min, min(config.l_max, len(U) - 1) + 1)) or [config.l_min]
    rows, fits = {}, {}
    # one axial KMeans per L over every kept component, each independent of the others:
    # minutes at DeepProfile scale (about 40,000 kept), so a large scan says how far it is.
    # The largest (slowest) L go first: a mapper over several workers then ends sooner.
    fit, order = partial(_consensus_at, U, P, x, config=config), sorted(Ls, reverse=True)
    with _progress(len(U), len(Ls), f"scanning L over {len(U)} components", "L") as bar:
        for L, (signs, labels, row) in zip(order, mapper(fit, order), strict=True):
            rows[L], fits[L] = row, (signs, labels)
            if bar is not None:
                bar.update(1, L=L, stability=row["stability"])
    curve = pd.DataFrame([rows[L] for L in Ls], index=pd.Index(Ls, name="L_requested"))
    curve["explains"] = _explains(curve, x.shape[1], config.gain_factor)
    stab = curve["stability"].fillna(-np.inf).to_numpy()
    if config.n_clusters is None and curve["explains"].any():  # not beyond the last that does
        last = int(np.flatnonzero(curve["explains"].to_numpy())[-1])
        stab = np.where(np.arange(len(stab)) <= last, stab, -np.inf)
    chosen = Ls[int(np.argmax(stab))]  # the first maximum: the smaller L on ties
    curve["chosen"] = curve.index == chosen
    signs, labels = fits[chosen]
    return curve, signs, labels


def _cluster_loadings(
    P: np.ndarray, components: np.ndarray, signs: np.ndarray, labels: np.ndarray, L: int
) -> tuple[np.ndarray, np.ndarray]:
    """Step 5 of :func:`consensus_ensemble`: per-cluster median of the members' sign-aligned
    gene loadings ``P @ components`` (robust to stragglers), each flipped so its largest
    |loading| is positive; returns the loadings (L x genes) and the members' signs flipped with
    them. A cluster's gene loadings are formed a block of genes at a time."""
    loadings = np.empty((L, components.shape[1]))
    for c in range(L):
        mask = labels == c
        members = signs[mask, None] * P[mask]
        step = max(1, _BLOCK_ELEMENTS // max(len(members), 1))
        for g in range(0, components.shape[1], step):
            block = members @ components[:, g : g + step]
            loadings[c, g : g + step] = np.median(block, axis=0)
    flip = np.where(loadings[np.arange(L), np.abs(loadings).argmax(1)] < 0, -1.0, 1.0)
    loadings *= flip[:, None]
    return loadings, signs * flip[labels]


#: Model runs per piece of the embedding (a mapper's unit: one task reads their codes).
_EMBEDDING_RUNS = 16


@dataclass(frozen=True)
class _EmbeddingPiece:
    """A few model runs' part of the embedding: their latents (a store of their runs alone,
    or their columns), their components (rotations and columns) and the kept components'
    names, signs and clusters."""

    latents: Any
    components: Components
    names: list[str]
    signs: np.ndarray
    labels: np.ndarray


def _components_by_run(names: Sequence[str]) -> dict[str, list[int]]:
    """``"<model>_run<r>"`` -> the positions in ``names`` of its components (``..._ic<k>``)."""
    by_run: dict[str, list[int]] = {}
    for j, name in enumerate(names):
        by_run.setdefault(name.rsplit("_ic", 1)[0], []).append(j)
    return by_run


def _embedding_sum(piece: _EmbeddingPiece, L: int) -> np.ndarray:
    """Samples x L: per cluster, the sum of ``piece``'s sign-aligned component values, added
    one model run at a time (a piece's values at once would be samples x its components:
    ~150 MB at 16 runs of latent dim 100 and 15,000 samples)."""
    out = np.zeros((len(piece.latents), L))
    for idx in _components_by_run(piece.names).values():
        values = piece.components.values(piece.latents, [piece.names[j] for j in idx])
        np.add.at(out.T, piece.labels[idx], (values * piece.signs[idx]).T)
    return out


def _cluster_embedding(
    latents: pd.DataFrame,
    comp: Components,
    names: Sequence[str],
    signs: np.ndarray,
    labels: np.ndarray,
    L: int,
    mapper: Mapper = map,
) -> np.ndarray:
    """Step 5 of :func:`consensus_ensemble`: per-cluster mean of the sign-aligned component
    values (samples x L). Summed over pieces of ``_EMBEDDING_RUNS`` model runs, which
    ``mapper`` runs (each reads its runs' codes alone), so samples x all components is never
    held in memory."""
    by_run = _components_by_run(names)
    keys = list(by_run)
    # A LatentStore's runs() keeps only a piece's runs' encoders or files; a frame, its columns.
    runs = getattr(latents, "runs", None)

    def pieces() -> Iterator[_EmbeddingPiece]:  # made as the mapper asks: one piece's codes
        for start in range(0, len(keys), _EMBEDDING_RUNS):
            chunk = keys[start : start + _EMBEDDING_RUNS]
            idx = [j for key in chunk for j in by_run[key]]
            part = Components(
                names=[],
                loadings_pca=np.empty((0, 0)),
                rotations={key: comp.rotations[key] for key in chunk},
                columns={key: comp.columns[key] for key in chunk},
            )
            cols = [c for key in chunk for c in comp.columns[key]]
            piece = runs(chunk) if callable(runs) else latents[cols]
            yield _EmbeddingPiece(piece, part, [names[j] for j in idx], signs[idx], labels[idx])

    embedding = np.zeros((len(latents), L))
    for total in mapper(partial(_embedding_sum, L=L), pieces()):
        embedding += total
    embedding /= np.bincount(labels, minlength=L)
    return embedding


# -- applying an ensemble to new signatures -------------------------------------------------
@dataclass
class EnsembleModel:
    """PCA -> every member encoder -> per-cluster mean: embeds signatures not seen in training.

    Attributes
    ----------
    pca
        The PCA model the encoders were trained on.
    models
        Trained model groups by name (``TrainedModels.name``, e.g. ``VAE_d10``).
    labels
        :attr:`Ensemble.labels` (variable -> cluster, sign); variables must be named
        ``<model>_run<r>_z<k>`` as :meth:`TrainedModels.node_names` names them, or
        ``<model>_run<r>_ic<k>`` (consensus components) when ``rotations`` are given.
    rotations
        :attr:`Ensemble.rotations` of a consensus ensemble: each model run's code is mapped
        to its components before the per-cluster mean. None for the reference mode.
    """

    pca: PCAModel
    models: dict[str, TrainedModels]
    labels: pd.DataFrame
    rotations: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self._index: dict[str, tuple[str, int, int]] = {}
        for name, tm in self.models.items():
            for r, run in enumerate(tm.runs):
                if self.rotations is None:
                    names = tm.node_names(r)
                else:
                    rot = self.rotations.get(f"{name}_run{run}")
                    n = 0 if rot is None else rot.shape[1]
                    names = [f"{name}_run{run}_ic{k:02d}" for k in range(n)]
                for k, var in enumerate(names):
                    self._index[var] = (name, r, k)
        missing = [v for v in self.labels.index if v not in self._index]
        if missing:
            raise DeeppertError(
                f"no trained model provides {len(missing)} ensemble members, e.g. {missing[:3]}"
            )

    @classmethod
    def from_ensemble(
        cls, ensemble: Ensemble, models: Sequence[TrainedModels], pca: PCAModel
    ) -> EnsembleModel:
        """Keep only the models that hold ensemble members."""
        wanted = {parse_variable_name(v)[0] for v in ensemble.labels.index}
        return cls(
            pca,
            {m.name: m for m in models if m.name in wanted},
            ensemble.labels.copy(),
            ensemble.rotations,
        )

    @property
    def cluster_names(self) -> list[str]:
        return cluster_names(int(self.labels["cluster"].max()) + 1)

    def embed_pca(self, x_pca: np.ndarray, sample_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Ensemble embedding (samples x clusters) of PCA scores ``(n, p)``."""
        x_pca = np.asarray(x_pca)
        n = x_pca.shape[0]
        L = len(self.cluster_names)
        total = np.zeros((n, L))
        codes = {name: tm.embed(x_pca) for name, tm in self.models.items()}  # (R, n, d) each
        if self.rotations is not None:  # consensus: map each run's code to its components
            codes = {
                name: [
                    apply_rotation(z[r], rot)
                    if (rot := self.rotations.get(f"{name}_run{run}")) is not None
                    else np.zeros((n, 0))
                    for r, run in enumerate(self.models[name].runs)
                ]
                for name, z in codes.items()
            }
        for var, row in self.labels.iterrows():
            name, r, k = self._index[var]
            total[:, int(row["cluster"])] += row["sign"] * codes[name][r][:, k].astype(np.float64)
        counts = np.bincount(self.labels["cluster"].to_numpy(), minlength=L)
        index = pd.Index(list(sample_ids) if sample_ids is not None else range(n), name="sample_id")
        return pd.DataFrame(total / counts, index=index, columns=self.cluster_names)

    def embed(
        self, values: np.ndarray | pd.DataFrame, sample_ids: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Ensemble embedding of gene values ``(n, genes)`` (a frame is reordered to the PCA genes).

        An AnnData (samples x genes) is embedded from ``X`` by ``var_names``; the embedding
        is also stored in it as ``obsm["X_deeppert"]`` and the cluster names in
        ``uns["deeppert"]["clusters"]`` (scverse conventions)."""
        if hasattr(values, "obsm") and hasattr(values, "to_df"):  # AnnData, without importing it
            adata = values
            out = self.embed(adata.to_df(), sample_ids)
            adata.obsm["X_deeppert"] = out.to_numpy()
            adata.uns.setdefault("deeppert", {})["clusters"] = list(out.columns)
            return out
        if isinstance(values, pd.DataFrame):
            missing = [g for g in self.pca.genes if g not in values.columns]
            if missing:
                raise DeeppertError(
                    f"signatures lack {len(missing)} genes of the PCA model, e.g. {missing[:3]}"
                )
            sample_ids = list(values.index) if sample_ids is None else sample_ids
            values = values[self.pca.genes].to_numpy(dtype=np.float64)
        return self.embed_pca(self.pca.transform(values), sample_ids)

    def save(self, path: str | Path) -> Path:
        """Write ``pca/`` (:meth:`PCAModel.save`), ``labels.parquet``, ``models/<name>/`` (and,
        for a consensus ensemble, ``rotations.npz``) atomically."""
        with atomic_dir(path) as tmp:
            self.pca.save(tmp / "pca")
            self.labels.to_parquet(tmp / "labels.parquet")
            if self.rotations is not None:
                key, value = _ROTATION_FORMAT
                np.savez(tmp / "rotations.npz", **self.rotations, **{key: np.array(value)})
            for name, tm in self.models.items():
                tm.save(tmp / "models" / name)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> EnsembleModel:
        """Reload what :meth:`save` wrote."""
        path = Path(path)
        if not (path / "labels.parquet").is_file():
            raise DeeppertError(f"{path}: not a saved ensemble model (no labels.parquet)")
        pca = PCAModel.load(path / "pca")
        models = {
            p.name: TrainedModels.load(p) for p in sorted((path / "models").iterdir()) if p.is_dir()
        }
        rotations = None
        if (path / "rotations.npz").is_file():
            key, value = _ROTATION_FORMAT
            with np.load(path / "rotations.npz") as f:
                if key not in f.files or int(f[key]) != value:
                    raise DeeppertError(
                        f"{path / 'rotations.npz'}: rotation layout of another deeppert version; "
                        "re-run `deeppert ensemble` (or the ensemble job) to rebuild the model"
                    )
                rotations = {k: f[k] for k in f.files if k != key}
        return cls(pca, models, pd.read_parquet(path / "labels.parquet"), rotations)
