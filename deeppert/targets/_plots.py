"""Figures of a target-combination run: gene-cluster heatmap with trend panel, match rate vs top N.

Built on :class:`matplotlib.figure.Figure` directly (no pyplot state, no display needed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.cluster.hierarchy import dendrogram, linkage

from deeppert.targets._algorithm import (
    REFERENCE_N_COLUMNS,
    REFERENCE_PLOT_ROWS,
    PreparedWeights,
)

__all__ = ["heatmap_frame", "plot_gene_clusters", "plot_match_rate"]

_PALETTE = ("#66c2a5", "#fc8d62", "#8da0cb", "#e78ac3", "#a6d854", "#ffd92f", "#e5c494", "#b3b3b3")


def heatmap_frame(prepared: PreparedWeights) -> pd.DataFrame:
    """The rows and columns the heatmap shows.

    Reference mode: the 50 rows of highest Average_Importance and the first 95 columns, as
    the published script draws them. Default mode: every clustered top gene, cluster columns.
    """
    table = prepared.table
    if prepared.config.mode == "reference":
        return table.iloc[:REFERENCE_PLOT_ROWS, :REFERENCE_N_COLUMNS]
    genes = [g for members in prepared.clusters_full.values() for g in members]
    return table.loc[genes, list(prepared.cluster_columns)]


def plot_gene_clusters(prepared: PreparedWeights, *, title: str = "") -> Figure:
    """Heatmap of scaled importance (rows ordered by Ward dendrogram, coloured by gene cluster)
    above a panel of each gene cluster's mean +- sd across the ensemble-cluster columns."""
    frame = heatmap_frame(prepared)
    values = frame.to_numpy()
    fig = Figure(figsize=(12, 12))
    grid = fig.add_gridspec(
        2,
        5,
        width_ratios=(1.2, 0.25, 10, 1.4, 0.3),
        height_ratios=(4, 1.2),
        wspace=0.02,
        hspace=0.15,
    )
    ax_den = fig.add_subplot(grid[0, 0])
    ax_strip = fig.add_subplot(grid[0, 1])
    ax_heat = fig.add_subplot(grid[0, 2])
    ax_bar = fig.add_subplot(grid[0, 4])  # column 3 leaves room for gene labels
    ax_trend = fig.add_subplot(grid[1, 2])

    order = np.arange(len(frame))
    if len(frame) > 2:
        den = dendrogram(
            linkage(values, method="ward"),
            orientation="left",
            no_labels=True,
            ax=ax_den,
            color_threshold=0,
            above_threshold_color="#555555",
        )
        order = np.asarray(den["leaves"])[::-1]
    ax_den.set_axis_off()
    member_of = {g: name for name, genes in prepared.clusters.items() for g in genes}
    names = list(prepared.clusters)
    colours = {
        name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(sorted(names, key=_cluster_key))
    }
    strip = [
        [_hex_rgb(colours.get(member_of.get(str(g), ""), "#ffffff"))] for g in frame.index[order]
    ]
    ax_strip.imshow(np.array(strip), aspect="auto", interpolation="nearest")
    ax_strip.set_axis_off()
    im = ax_heat.imshow(
        values[order], aspect="auto", cmap="viridis", interpolation="nearest", vmin=0, vmax=1
    )
    ax_heat.set_yticks(np.arange(len(frame)))
    ax_heat.set_yticklabels(
        [str(g) for g in frame.index[order]], fontsize=max(4, min(9, 400 // max(len(frame), 1)))
    )
    ax_heat.yaxis.tick_right()
    ax_heat.set_xticks([])
    ax_heat.set_xlabel(f"{frame.shape[1]} columns (ensemble clusters)")
    fig.colorbar(im, cax=ax_bar, label="Normalized score")

    x = np.arange(frame.shape[1])
    for name in sorted(names, key=_cluster_key):
        genes = [g for g in prepared.clusters[name] if g in frame.index]
        if not genes:
            continue
        sub = frame.loc[genes].to_numpy()
        mean, sd = sub.mean(axis=0), sub.std(axis=0, ddof=1) if len(genes) > 1 else np.zeros(len(x))
        ax_trend.plot(x, mean, color=colours[name], linewidth=2, label=f"{name} (n={len(genes)})")
        ax_trend.fill_between(x, mean - sd, mean + sd, color=colours[name], alpha=0.15)
    ax_trend.set_xlim(-0.5, frame.shape[1] - 0.5)
    ax_trend.set_xlabel("Ensemble-cluster column")
    ax_trend.set_ylabel("Mean score")
    ax_trend.legend(title="Gene clusters", fontsize=8, frameon=False, loc="upper right")
    ax_trend.grid(axis="y", linestyle=":", color="lightgray")
    fig.suptitle(
        title or "Gene importance across ensemble clusters", fontsize=16, fontweight="bold"
    )
    return fig


def plot_match_rate(
    match_statistics: pd.DataFrame, significance: pd.DataFrame, *, title: str = ""
) -> Figure:
    """Match rate vs top N, with the chance rates (chosen cluster, overall) and the permutation mean."""
    fig = Figure(figsize=(9, 5.5))
    ax = fig.add_subplot()
    n = match_statistics["TOP_N"].to_numpy()
    ax.plot(n, match_statistics["Match_Rate"], marker="o", color="#1f77b4", label="predicted pairs")
    rate_c = float(significance["Chance_Rate_Cluster"].iloc[0])
    rate_o = float(significance["Chance_Rate_Overall"].iloc[0])
    if np.isfinite(rate_c):
        ax.axhline(
            rate_c, color="#d62728", linestyle="--", label=f"chance, chosen cluster ({rate_c:.3f})"
        )
    if np.isfinite(rate_o):
        ax.axhline(
            rate_o, color="#7f7f7f", linestyle=":", label=f"chance, all candidates ({rate_o:.3f})"
        )
    totals = match_statistics["Total_Pairs"].to_numpy()
    null_mean = significance["Null_Mean_Matches"].to_numpy(dtype=float)
    if np.isfinite(null_mean).all():
        with np.errstate(invalid="ignore", divide="ignore"):
            ax.plot(
                n,
                np.where(totals > 0, null_mean / totals, np.nan),
                color="#2ca02c",
                linestyle="-.",
                label="permutation null, mean",
            )
    ax.set_xlabel("TOP_N")
    ax.set_ylabel("Match rate")
    ax.set_ylim(bottom=0)
    ax.grid(True, linestyle=":", color="lightgray")
    ax.legend(frameon=False, fontsize=9)
    ax.set_title(title or "Match rate vs TOP_N")
    return fig


def _cluster_key(name: str) -> tuple[int, str]:
    tail = name.rsplit(" ", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (10**9, name)


def _hex_rgb(colour: str) -> tuple[float, float, float]:
    colour = colour.lstrip("#")
    return tuple(int(colour[i : i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[return-value]
