"""What the ensemble and targets runs log to say what they hold: their descriptions (the run
page's "Description", ``mlflow.note.content``, Markdown) and the targets run's metrics.

Each description names the run's inputs (lineage), what the run holds and how to read its
main metrics and figures, so a reader of the MLflow page needs no other document.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from deeppert.tracking.contract import (
    ARTIFACTS,
    ENSEMBLE_FILES,
    STABILITY_METRICS,
    TAGS,
    targets_metric,
)

if TYPE_CHECKING:
    from deeppert.ensemble.stability import EnsembleStep
    from deeppert.targets import TargetResult

__all__ = ["stability_metrics", "ensemble_description", "targets_metrics", "targets_description"]


def stability_metrics(stability: dict) -> dict[str, float]:
    """The ensemble run's stability metrics (:data:`STABILITY_METRICS`) from ``stability.json``'s
    dict: the numbers it holds, under the names that say what they are."""
    return {
        name: float(stability[key])
        for key, name in STABILITY_METRICS.items()
        if isinstance(stability.get(key), (int, float))
    }


def ensemble_description(
    step: EnsembleStep, *, dataset: str, sweep: str, versions: list[str], parent_run_id: str
) -> str:
    """Markdown description of an ensemble run: inputs, the step's report, how to read it."""
    ens = step.ensemble
    first, last = (versions[0], versions[-1]) if versions else ("none", "none")
    lines = [
        f"**Ensemble of {dataset}**: {ens.n_clusters} gene programs (clusters of latent "
        f"variables) built from the encoders of sweep `{sweep}` ({ens.config.method} mode).",
        "",
        f"- Inputs: {len(versions)} registered encoder versions ({first} ... {last}; all in "
        f"tag `{TAGS.encoder_versions}`, as version ranges per registered model) of the sweep's "
        f"parent run `{parent_run_id}`, their "
        "latents recomputed on the training PCA scores.",
        *(f"- {line.strip()}" for line in step.report()),
        "",
        "How to read it:",
        f"- `{ARTIFACTS.ensemble_weights}`: programs x genes, non-negative gene importances "
        "(what the targets and downstream jobs read); `top_genes_heatmap.png` and "
        f"`{ENSEMBLE_FILES.top_genes}` show each program's top genes.",
        f"- `{STABILITY_METRICS['ensemble_median']}`: the model runs are split into two halves, "
        "an ensemble is built from each and their programs matched; the median matched "
        "correlation (1 = the same programs from other seeds). "
        f"`{STABILITY_METRICS['single_median']}` is the same "
        "for single models' nodes: the ensemble should be higher. "
        f"`{STABILITY_METRICS['n_clusters_a']}` / `{STABILITY_METRICS['n_clusters_b']}` are the "
        "programs each half's ensemble found.",
        "- `n_components_dropped`: latent variables the density filter left out; `silhouette`: "
        "how well separated the chosen number of programs is (below 0.5: weak).",
    ]
    if step.baselines is not None:
        lines.append(
            f"- `{ENSEMBLE_FILES.baselines_plot}`: PCA, FastICA and NMF programs at the same "
            "number, fitted on the same matrix; the ensemble should beat them."
        )
    return "\n".join(lines)


def targets_metrics(result: TargetResult) -> dict[str, float]:
    """Per reported TOP_N (:meth:`TargetResult.match_tables`): known pairs among the top N
    predicted pairs, the match rate and the permutation p-value; empty without a disease."""
    tables = result.match_tables()
    if tables is None:
        return {}
    merged = tables[0].merge(tables[1], on="TOP_N")
    out: dict[str, float] = {}
    for row in merged.itertuples(index=False):
        n = int(row.TOP_N)
        out[targets_metric("known_pairs_in_top", n)] = float(row.Matched_Pairs)
        out[targets_metric("match_rate_top", n)] = float(row.Match_Rate)
        if np.isfinite(row.P_Permutation):
            out[targets_metric("perm_p_top", n)] = float(row.P_Permutation)
    return out


def targets_description(result: TargetResult, *, ensemble: str, version: str) -> str:
    """Markdown description of a targets run: inputs, what it found, how to read the metrics."""
    label = result.disease or "the gene list"
    lines = [
        f"**Target combinations for {label}**: {len(result.pairs)} pairs of candidate genes "
        f"predicted from the gene programs of ensemble `{version}` (resolved from `{ensemble}`).",
        "",
        f"- Inputs: `{ARTIFACTS.ensemble_weights}` of `{version}` (tag `{TAGS.input_model}`) and "
        f"{result.known_pairs} known pairs of {label}; {len(result.candidates)} of its genes "
        "are in the weights.",
        f"- Chosen gene cluster: {result.chosen_cluster} ({len(result.cluster_candidates)} "
        f"candidates); pairs need |r| >= {result.threshold}; scored on columns "
        f"{result.target_columns[0]} (max) and {result.target_columns[1]} (min).",
        f"- `{ARTIFACTS.targets}/target_combinations.csv`: the ranked pairs; "
        "`match_statistics.csv` and `match_significance.csv`: the match tables.",
    ]
    tables = result.match_tables()
    if tables is not None:
        top = tables[0].iloc[-1]
        n = int(top["TOP_N"])
        p = tables[1]["P_Permutation"].iloc[-1]
        chance = result.chance_cluster.rate
        by_chance = (
            f"; a random pair of the cluster's candidates is one with probability {chance:.2f}"
            if np.isfinite(chance)
            else ""
        )
        lines += [
            "",
            "How to read it:",
            f"- `{targets_metric('match_rate_top', n)}` = `{targets_metric('known_pairs_in_top', n)}`"
            f" / {int(top['Total_Pairs'])}: the share of the top {n} predicted pairs that are "
            f"known pairs of {label} (here {top['Match_Rate']:.2f}{by_chance}).",
            f"- `{targets_metric('perm_p_top', n)}`: the chance of as many matches when the "
            f"candidates' gene labels are shuffled (here {p:.2g}; small: better than chance).",
            "- One metric of each per TOP_N; the TOP_N stop at the first that holds every pair.",
        ]
    return "\n".join(lines)
