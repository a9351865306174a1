"""Figures and tables of one ensemble, shared by ``deeppert ensemble`` and the tracked ensemble run.

- ``cluster_sizes.png``: latent variables per ensemble cluster (L bars);
- ``stability.png``: matched gene-weight correlation between halves of the runs, single
  models against ensembles (the point of ensembling);
- ``top_genes_heatmap.png``: each cluster's top genes (by importance), coloured by their
  signed loadings (by importance when the ensemble has no loadings);
- :func:`top_genes`: the top genes per cluster by importance as a tidy table.

Pure compute and matplotlib: no MLflow, no Ray. Callers save or log the figures and close them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deeppert.ensemble.modes import Ensemble

__all__ = ["top_genes", "ensemble_figures"]

HEATMAP_GENES_PER_CLUSTER = 5
HEATMAP_MAX_CLUSTERS = 40


def top_genes(ensemble: Ensemble, n: int = 20) -> pd.DataFrame:
    """The ``n`` genes of largest importance per cluster: cluster, rank, gene, importance and,
    when the ensemble has them, the signed loading."""
    columns = ["cluster", "rank", "gene", "importance", "loading"]
    if ensemble.weights is None:
        return pd.DataFrame(columns=columns)
    rows = []
    for cluster, weights in ensemble.weights.iterrows():
        order = np.argsort(-np.abs(weights.to_numpy()), kind="stable")[:n]
        for rank, j in enumerate(order, 1):
            gene = weights.index[j]
            rows.append(
                {
                    "cluster": cluster,
                    "rank": rank,
                    "gene": gene,
                    "importance": float(weights.iloc[j]),
                    "loading": float(ensemble.loadings.loc[cluster, gene])
                    if ensemble.loadings is not None
                    else np.nan,
                }
            )
    return pd.DataFrame(rows, columns=columns)


def ensemble_figures(ensemble: Ensemble, stability: dict | None = None) -> dict:
    """Matplotlib figures of ``ensemble`` by file name (stability only when it was computed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {}
    L = ensemble.n_clusters
    fig, ax = plt.subplots(figsize=(max(4, 0.25 * L + 2), 3))
    ax.bar(np.arange(L), ensemble.sizes.fillna(0).to_numpy())
    ax.set_xlabel("ensemble cluster")
    ax.set_ylabel("latent variables")
    chosen = "fixed" if ensemble.gmeans_n_clusters is None else "GMeans"
    ax.set_title(f"cluster sizes (L = {L}, {chosen})")
    fig.tight_layout()
    figures["cluster_sizes.png"] = fig

    if stability and "ensemble_corr" in stability:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        single = [c for v in stability["single_corr"].values() for c in v]
        bins = np.linspace(min([*stability["ensemble_corr"], *single, 0.0]), 1, 30)
        ax.hist(single, bins=bins, alpha=0.6,
                label=f"single models (median {stability['single_median']:.2f})")  # fmt: skip
        ax.hist(stability["ensemble_corr"], bins=bins, alpha=0.6,
                label=f"ensembles (median {stability['ensemble_median']:.2f})")  # fmt: skip
        ax.set_xlabel("matched gene-weight correlation between run halves")
        ax.set_ylabel("matched pairs")
        ax.set_title("stability: ensemble against single models")
        ax.legend(fontsize=7)
        fig.tight_layout()
        figures["stability.png"] = fig

    table = top_genes(ensemble, HEATMAP_GENES_PER_CLUSTER)
    if len(table):
        clusters = ensemble.sizes.sort_values(ascending=False).index[:HEATMAP_MAX_CLUSTERS]
        clusters = [c for c in ensemble.weights.index if c in set(clusters)]
        genes = list(dict.fromkeys(table[table["cluster"].isin(clusters)]["gene"]))
        signed = ensemble.loadings is not None
        table = ensemble.loadings if signed else ensemble.weights
        values = table.loc[clusters, genes].to_numpy()
        limit = float(np.abs(values).max()) or 1.0
        fig, ax = plt.subplots(
            figsize=(min(24, 2 + 0.22 * len(genes)), min(14, 1.5 + 0.3 * len(clusters)))
        )
        image = ax.imshow(
            values,
            cmap="RdBu_r" if signed else "viridis",
            vmin=-limit if signed else 0.0,
            vmax=limit,
            aspect="auto",
        )
        ax.set_xticks(range(len(genes)), genes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(clusters)), clusters, fontsize=7)
        ax.set_xlabel(f"top {HEATMAP_GENES_PER_CLUSTER} genes of each cluster (by importance)")
        title = "ensemble gene loadings" if signed else "ensemble gene importances"
        if L > len(clusters):
            title += f" ({len(clusters)} largest of {L} clusters)"
        ax.set_title(title)
        label = "signed loading" if signed else "importance (mean |IG|)"
        fig.colorbar(image, ax=ax, shrink=0.8, label=label)
        fig.tight_layout()
        figures["top_genes_heatmap.png"] = fig
    return figures
