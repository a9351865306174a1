"""The target-combination algorithm of docs/method.md section 5, as pure functions.

Steps 1-3 (importance summary, MinMax scaling, Ward clustering of the top genes) depend on
the weights only and are computed once by :func:`prepare_weights`; steps 4-7 depend on the
candidate genes and run through :func:`select_pairs` (the permutation null in ``_stats`` keeps
its selection fixed and relabels the candidates).

``mode="reference"`` reproduces the published script's quirks (nearest-centroid assignment
on the first 95 columns, target columns chosen among all columns including the two summary
columns, gene clusters cut to the 50 rows of highest Average_Importance when plots are on);
``mode="default"`` uses the cluster columns only and never lets plotting change results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.preprocessing import MinMaxScaler

from deeppert.errors import DeeppertError
from deeppert.target_config import Mode, TargetConfig
from deeppert.targets._io import validate_weights

__all__ = [
    "Mode",
    "SUMMARY_COLUMNS",
    "REFERENCE_N_COLUMNS",
    "REFERENCE_PLOT_ROWS",
    "PAIR_COLUMNS",
    "TargetConfig",
    "PreparedWeights",
    "PairSelection",
    "gene_importance",
    "scale_importance",
    "cluster_top_genes",
    "auto_threshold",
    "prepare_weights",
    "match_candidates",
    "select_pairs",
]

SUMMARY_COLUMNS = ("Average_Importance", "Total_Importance")
REFERENCE_N_COLUMNS = 95  # the reference slices iloc[:, :95] for the centroid assignment
REFERENCE_PLOT_ROWS = 50  # the reference heatmap keeps df_scaled.index[:50]
PAIR_COLUMNS = (
    "GeneA",
    "GeneB",
    "ClustA_Score",
    "ClustB_Score",
    "Total_Score",
    "PairCorr_Signed",
    "PairCorr_Abs",
)


@dataclass(frozen=True)
class PreparedWeights:
    """Everything that depends on the weights and config but not on the candidate genes.

    Attributes
    ----------
    config
        The config it was made with (clustering fields must match later runs).
    table
        Scaled genes x (cluster columns + Average_Importance + Total_Importance), rows sorted
        by Average_Importance descending (the reference's ``df_scaled``).
    cluster_columns
        The ensemble-cluster column names.
    clusters
        Gene cluster name -> member genes as used downstream (cut to the top 50 rows in
        reference mode with plots on), in the reference's dict order.
    clusters_full
        The same before any cut: the Ward clusters of the top genes.
    assignment_columns, target_pool
        Columns used for the nearest-centroid assignment and for picking target columns.
    target_columns
        Gene cluster name -> (max column, min column).
    row_cluster
        For every row of ``table``: index into ``cluster_names`` of its nearest centroid.
    vmax, vmin
        ``(n_clusters, n_genes)`` values of every row in each cluster's max / min column.
    corr
        ``(n_genes, n_genes)`` Pearson correlation of the scaled rows (all columns).
    """

    config: TargetConfig
    table: pd.DataFrame
    cluster_columns: tuple[str, ...]
    clusters: dict[str, list[str]]
    clusters_full: dict[str, list[str]]
    assignment_columns: tuple[str, ...]
    target_pool: tuple[str, ...]
    target_columns: dict[str, tuple[str, str]]
    cluster_names: tuple[str, ...]
    row_cluster: np.ndarray
    vmax: np.ndarray
    vmin: np.ndarray
    corr: np.ndarray
    row_of: dict[str, int] = field(repr=False)

    @property
    def genes(self) -> list[str]:
        """Gene symbols in row order (Average_Importance descending)."""
        return [str(g) for g in self.table.index]


@dataclass(frozen=True)
class PairSelection:
    """Steps 5-6 on one set of candidate rows (observed or permuted)."""

    chosen: int  # index into PreparedWeights.cluster_names
    members: np.ndarray  # candidate positions (into the candidate list) in the chosen cluster
    first: np.ndarray  # per selected pair: candidate position of GeneA
    second: np.ndarray  # per selected pair: candidate position of GeneB
    score_a: np.ndarray
    score_b: np.ndarray
    total: np.ndarray
    corr: np.ndarray  # signed correlation per selected pair


def gene_importance(weights: pd.DataFrame) -> pd.DataFrame:
    """Step 1: genes x clusters plus Average_/Total_Importance, sorted by the average, descending."""
    table = weights.T.copy()
    table.columns = pd.Index([str(c) for c in table.columns])
    clusters = list(table.columns)
    table["Average_Importance"] = table[clusters].mean(axis=1)
    table["Total_Importance"] = table[clusters].sum(axis=1)
    return table.sort_values("Average_Importance", ascending=False)


def scale_importance(table: pd.DataFrame) -> pd.DataFrame:
    """Step 2: MinMax-scale every column, the two summary columns included."""
    scaled = MinMaxScaler().fit_transform(table)
    return pd.DataFrame(scaled, index=table.index, columns=table.columns)


def cluster_top_genes(
    scaled: pd.DataFrame, *, top_genes: int, n_clusters: int
) -> dict[str, list[str]]:
    """Step 3: Ward linkage on the scaled rows (all columns) of the top genes, cut to k clusters.

    Top genes are ranked by scaled Total_Importance. Returns ``{"Cluster <label>": genes}``
    in order of first appearance among the top genes, as the reference builds it.
    """
    if top_genes > len(scaled):
        raise DeeppertError(f"top_genes={top_genes} exceeds the {len(scaled)} genes of the weights")
    top = scaled.sort_values("Total_Importance", ascending=False).index[:top_genes]
    labels = fcluster(
        linkage(scaled.loc[top].to_numpy(), method="ward"), t=n_clusters, criterion="maxclust"
    )
    clusters: dict[str, list[str]] = {}
    for gene, label in zip(top, labels, strict=True):
        clusters.setdefault(f"Cluster {label}", []).append(str(gene))
    return clusters


def auto_threshold(n_candidates: int) -> float:
    """The reference's ``auto`` threshold: round(n / 200, 1) clipped to [0, 0.9]."""
    return min(0.9, max(0.0, round(n_candidates / 200.0, 1)))


def prepare_weights(weights: pd.DataFrame, config: TargetConfig) -> PreparedWeights:
    """Steps 1-3 and the per-gene quantities the candidate steps need (see :class:`PreparedWeights`)."""
    weights = validate_weights(weights)
    if config.top_genes > weights.shape[1]:
        raise DeeppertError(
            f"top_genes={config.top_genes} exceeds the {weights.shape[1]} genes of the weights"
        )
    table = scale_importance(gene_importance(weights))
    cluster_columns = tuple(c for c in table.columns if c not in SUMMARY_COLUMNS)
    clusters_full = cluster_top_genes(
        table, top_genes=config.top_genes, n_clusters=config.n_clusters
    )
    reference = config.mode == "reference"
    if reference and config.plots:
        shown = set(table.index[:REFERENCE_PLOT_ROWS])
        clusters = {name: [g for g in genes if g in shown] for name, genes in clusters_full.items()}
    else:
        clusters = {name: list(genes) for name, genes in clusters_full.items()}
    if reference:
        assignment_columns = tuple(table.columns[:REFERENCE_N_COLUMNS])
        target_pool = tuple(table.columns)
    else:
        assignment_columns = cluster_columns
        target_pool = cluster_columns
    # The reference skips empty clusters when it builds centroids; keep its dict order.
    names = tuple(name for name, genes in clusters.items() if genes)
    centroids = np.vstack(
        [table.loc[clusters[n], list(assignment_columns)].mean(axis=0).to_numpy() for n in names]
    )
    profiles = table[list(assignment_columns)].to_numpy()
    distances = np.linalg.norm(profiles[:, None, :] - centroids[None, :, :], axis=2)
    row_cluster = np.argmin(distances, axis=1)  # first minimum, as the reference's strict "<"

    target_columns: dict[str, tuple[str, str]] = {}
    vmax = np.empty((len(names), len(table)))
    vmin = np.empty((len(names), len(table)))
    for i, name in enumerate(names):
        col_sum = table.loc[clusters[name], list(target_pool)].sum(axis=0)
        hi, lo = str(col_sum.idxmax()), str(col_sum.idxmin())
        target_columns[name] = (hi, lo)
        vmax[i] = table[hi].to_numpy()
        vmin[i] = table[lo].to_numpy()
    values = table.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.corrcoef(values)
    row_of = {str(g).lower(): i for i, g in enumerate(table.index)}
    return PreparedWeights(
        config=config,
        table=table,
        cluster_columns=cluster_columns,
        clusters=clusters,
        clusters_full=clusters_full,
        assignment_columns=assignment_columns,
        target_pool=target_pool,
        target_columns=target_columns,
        cluster_names=names,
        row_cluster=row_cluster,
        vmax=vmax,
        vmin=vmin,
        corr=corr,
        row_of=row_of,
    )


def match_candidates(prepared: PreparedWeights, genes: list[str]) -> tuple[np.ndarray, list[str]]:
    """Step 4 (matching): rows of the candidate genes present in the weights, case-insensitive.

    Returns the sorted row positions (Average_Importance order, as the reference keeps them)
    and the genes that are absent from the weights.
    """
    rows, missing = set(), []
    for gene in genes:
        row = prepared.row_of.get(str(gene).strip().lower())
        if row is None:
            missing.append(str(gene))
        else:
            rows.add(row)
    return np.array(sorted(rows), dtype=np.int64), missing


def select_pairs(
    prepared: PreparedWeights, rows: np.ndarray, *, threshold: float, n_pairs: int
) -> PairSelection | None:
    """Steps 4-6 on candidate rows sorted by position: assign, choose cluster, filter, score, rank.

    The chosen cluster holds the most candidates; ties go to the cluster whose first
    candidate comes first (the order pandas' value_counts keeps). Pairs keep |r| >= threshold
    and are ranked by Total_Score descending, ties in candidate order. Returns ``None`` when
    no cluster holds two candidates.
    """
    assigned = prepared.row_cluster[rows]
    counts = np.bincount(assigned, minlength=len(prepared.cluster_names))
    best = counts.max() if len(assigned) else 0
    if best < 2:
        return None
    tied = np.flatnonzero(counts == best)
    first_seen = [int(np.flatnonzero(assigned == c)[0]) for c in tied]
    chosen = int(tied[int(np.argmin(first_seen))])
    members = np.flatnonzero(assigned == chosen)
    member_rows = rows[members]
    i, j = np.triu_indices(len(members), k=1)
    r = prepared.corr[member_rows[i], member_rows[j]]
    with np.errstate(invalid="ignore"):
        keep = np.abs(r) >= threshold
    i, j, r = i[keep], j[keep], r[keep]
    vmax, vmin = prepared.vmax[chosen], prepared.vmin[chosen]
    score_a = vmax[member_rows[i]] + vmax[member_rows[j]]
    score_b = vmin[member_rows[i]] + vmin[member_rows[j]]
    total = score_a + score_b
    order = np.argsort(-total, kind="stable")[:n_pairs]
    return PairSelection(
        chosen=chosen,
        members=members,
        first=members[i[order]],
        second=members[j[order]],
        score_a=score_a[order],
        score_b=score_b[order],
        total=total[order],
        corr=r[order],
    )


def n_pairs_of(n: int) -> int:
    """Number of unordered pairs among ``n`` items."""
    return math.comb(n, 2) if n >= 2 else 0
