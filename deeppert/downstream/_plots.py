"""Figures for the downstream results (PNG).

Built on :class:`matplotlib.figure.Figure` directly (no pyplot state, no backend switch on
import, no display needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from deeppert.atomic import atomic_path

__all__ = ["plot_roc_curves", "plot_synergy_scatter", "plot_summary_bars"]


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def _select(predictions: pd.DataFrame, **equal: str) -> pd.DataFrame:
    """Rows of ``predictions`` whose columns equal the given values."""
    mask = np.logical_and.reduce([predictions[col] == value for col, value in equal.items()])
    return predictions[mask]


def plot_roc_curves(
    predictions: pd.DataFrame, path: str | Path, *, task: str, split: str, model: str
) -> Path:
    """ROC curves of ``task`` under ``split`` for ``model``, one per feature set (first seed)."""
    sel = _select(predictions, task=task, split=split, model=model, target="label")
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    seed = sel["seed"].min()
    for name, part in sel[sel["seed"] == seed].groupby("feature_set", sort=True):
        fpr, tpr, _ = roc_curve(part["y_true"], part["y_pred"])
        ax.plot(fpr, tpr, label=f"{name} (n={len(part)})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=f"{task}\n{split}, {model}, seed {seed}",
    )
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, Path(path))


def plot_synergy_scatter(
    predictions: pd.DataFrame, path: str | Path, *, task: str, split: str, model: str
) -> Path:
    """Predicted vs observed Loewe synergy, one panel per feature set (first seed)."""
    sel = _select(predictions, task=task, split=split, model=model, target="loewe")
    sets = sorted(sel["feature_set"].unique())
    fig = Figure(figsize=(4 * max(len(sets), 1), 4))
    axes = fig.subplots(1, max(len(sets), 1), squeeze=False)
    seed = sel["seed"].min()
    for ax, name in zip(axes[0], sets, strict=False):
        part = sel[(sel["feature_set"] == name) & (sel["seed"] == seed)]
        ax.scatter(part["y_true"], part["y_pred"], s=10, alpha=0.7)
        lo = float(np.nanmin([part["y_true"].min(), part["y_pred"].min()]))
        hi = float(np.nanmax([part["y_true"].max(), part["y_pred"].max()]))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        r = np.corrcoef(part["y_true"], part["y_pred"])[0, 1] if len(part) > 2 else np.nan
        ax.set(
            xlabel="observed Loewe",
            ylabel="predicted Loewe",
            title=f"{name}: r={r:.2f}, n={len(part)}",
        )
    fig.suptitle(f"{task}, {split}, {model}, seed {seed}")
    return _save(fig, Path(path))


def plot_summary_bars(summary: pd.DataFrame, path: str | Path, *, metric: str = "roc_auc") -> Path:
    """Bar chart of ``metric`` (mean +- sd over seeds) per task/split/model, bars per feature set."""
    sel = summary[summary["metric"] == metric].copy()
    sel["group"] = sel["task"] + "\n" + sel["split"] + "\n" + sel["model"]
    groups = list(dict.fromkeys(sel.sort_values(["task", "split", "model"])["group"]))
    sets = sorted(sel["feature_set"].unique())
    width = 0.8 / max(len(sets), 1)
    fig = Figure(figsize=(max(6, 0.9 * len(groups)), 4))
    ax = fig.subplots()
    x = np.arange(len(groups))
    for i, name in enumerate(sets):
        part = sel[sel["feature_set"] == name].set_index("group").reindex(groups)
        ax.bar(x + i * width, part["mean"], width, yerr=part["sd"], label=name, capsize=2)
    if metric == "roc_auc":
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x + width * (len(sets) - 1) / 2, groups, fontsize=6)
    ax.set_ylabel(f"{metric} (mean +- sd over seeds)")
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def plot_summary_figures(summary: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``summary_roc_auc.png`` / ``summary_pearson_r.png`` in ``out_dir`` for the metrics present.

    Bars per feature set and featurizer setting, grouped by task, split and model: the
    honest splits beside the leaky ones (``random_leaky``, ``given_leaky``), so a reader sees
    what each split costs.
    """
    labelled = summary.assign(feature_set=summary["feature_set"] + " (" + summary["setting"] + ")")
    return [
        plot_summary_bars(labelled, Path(out_dir) / f"summary_{metric}.png", metric=metric)
        for metric in ("roc_auc", "pearson_r")
        if (summary["metric"] == metric).any()
    ]
