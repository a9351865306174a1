"""Tidy summaries of downstream scores, and writing them (CSV, markdown, plots) atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deeppert.atomic import atomic_dir
from deeppert.downstream._evaluate import EvaluationResult

__all__ = ["summarize", "markdown_table", "merge_results", "write_results"]

_KEYS = ["task", "target", "feature_set", "setting", "model", "split", "metric"]


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Per task x target x feature set x setting x model x split x metric: mean, sd over seeds.

    ``n`` is the number of pairs/compounds scored (``n_min``/``n_max`` when it varies with
    the seed, as for the both-unseen pairs), ``n_compounds`` the drugs/compounds in them.
    """
    grouped = scores.groupby(_KEYS, sort=False)
    out = grouped.agg(
        mean=("value", "mean"),
        sd=("value", lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")),
        n_seeds=("seed", "nunique"),
        n=("n", "mean"),
        n_min=("n", "min"),
        n_max=("n", "max"),
        n_compounds=("n_compounds", "mean"),
        n_folds=("n_folds", "mean"),
    ).reset_index()
    return out


def markdown_table(summary: pd.DataFrame, *, digits: int = 3) -> str:
    """One markdown table: task, target, feature set, setting, model, split, metric, mean +- sd, n."""
    lines = [
        "| task | target | features | setting | model | split | metric | mean +- sd | n (pairs/compounds) | drugs/compounds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.itertuples(index=False):
        n = f"{r.n:.0f}" if r.n_min == r.n_max else f"{r.n:.1f} ({r.n_min}-{r.n_max})"
        sd = "" if np.isnan(r.sd) else f" +- {r.sd:.{digits}f}"
        lines.append(
            f"| {r.task} | {r.target} | {r.feature_set} | {r.setting} | {r.model} | {r.split} | {r.metric} | "
            f"{r.mean:.{digits}f}{sd} | {n} | {r.n_compounds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def merge_results(results: list[EvaluationResult]) -> EvaluationResult:
    """Concatenate results of several runs (tasks, models or seeds run apart)."""
    return EvaluationResult(
        pd.concat([r.scores for r in results], ignore_index=True),
        pd.concat([r.predictions for r in results], ignore_index=True),
        pd.concat([r.folds for r in results], ignore_index=True).drop_duplicates(ignore_index=True),
    )


def write_results(
    result: EvaluationResult, out_dir: str | Path, *, plots: bool = True, config: dict | None = None
) -> Path:
    """Write ``out_dir`` atomically (replacing it whole).

    Files: ``scores.csv`` (per seed), ``summary.csv`` and ``summary.md`` (mean +- sd with
    counts), ``predictions.csv`` (out-of-fold, with the fold that made each),
    ``folds.csv`` (each fold's training and test rows), ``config.json`` if given, and with
    ``plots`` PNGs: ROC curves per task/split/model, synergy scatter per task/split/model,
    and ``summary_roc_auc.png`` / ``summary_pearson_r.png``.
    """
    from deeppert.atomic import write_json
    from deeppert.downstream import _plots

    summary = summarize(result.scores)
    with atomic_dir(out_dir) as tmp:
        result.scores.to_csv(tmp / "scores.csv", index=False)
        summary.to_csv(tmp / "summary.csv", index=False)
        (tmp / "summary.md").write_text(markdown_table(summary))
        result.predictions.to_csv(tmp / "predictions.csv", index=False)
        result.folds.to_csv(tmp / "folds.csv", index=False)
        if config is not None:
            write_json(config, tmp / "config.json")
        if plots:
            # one curve / panel per feature set and setting
            preds = result.predictions.assign(
                feature_set=result.predictions["feature_set"]
                + " ("
                + result.predictions["setting"]
                + ")"
            )
            combos = preds[["task", "split", "model"]].drop_duplicates().itertuples(index=False)
            for task, split, model in combos:
                sub = preds[
                    (preds["task"] == task) & (preds["split"] == split) & (preds["model"] == model)
                ]
                stem = f"{task}_{split}_{model}"
                if (sub["target"] == "label").any():
                    _plots.plot_roc_curves(
                        preds, tmp / f"roc_{stem}.png", task=task, split=split, model=model
                    )
                if (sub["target"] == "loewe").any():
                    _plots.plot_synergy_scatter(
                        preds, tmp / f"scatter_{stem}.png", task=task, split=split, model=model
                    )
            _plots.plot_summary_figures(summary, tmp)
    return Path(out_dir)
