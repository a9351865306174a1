"""One disease (or gene list) end to end, and the table over all diseases."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control

from deeppert.errors import DeeppertError
from deeppert.targets._algorithm import (
    PAIR_COLUMNS,
    PairSelection,
    PreparedWeights,
    TargetConfig,
    auto_threshold,
    match_candidates,
    prepare_weights,
    select_pairs,
)
from deeppert.targets._pairs import disease_genes, disease_names, known_pair_keys, resolve_disease
from deeppert.targets._stats import (
    chance_rate,
    empirical_pvalues,
    hypergeom_pvalue,
    known_matrix,
    matches_at,
    permutation_null,
)

__all__ = [
    "Chance",
    "TargetResult",
    "MATCH_COLUMNS",
    "ALL_DISEASE_COLUMNS",
    "predict_targets",
    "run_all_diseases",
]

log = logging.getLogger(__name__)

MATCH_COLUMNS = ("TOP_N", "Total_Pairs", "Matched_Pairs", "Match_Rate")
_PREP_FIELDS = ("n_clusters", "top_genes", "mode", "plots")


@dataclass(frozen=True)
class Chance:
    """Known pairs among all unordered pairs of a candidate set: how often a pair drawn at
    random from that set is a known one."""

    known: int
    pairs: int

    @property
    def rate(self) -> float:
        """``known / pairs``; NaN when the set has no pair."""
        return self.known / self.pairs if self.pairs else float("nan")

    def summary(self) -> dict[str, object]:
        return {"known": self.known, "pairs": self.pairs, "rate": _nan_to_none(self.rate)}


@dataclass(frozen=True)
class TargetResult:
    """Outcome of one run.

    ``pairs`` has the docs/method.md columns of target_combinations.csv; ``match_statistics``
    those of match_statistics.csv and ``significance`` the chance rates and p-values per
    top N (both ``None`` without a disease to evaluate against). ``chance_cluster`` counts
    the known pairs among the chosen cluster's candidates, ``chance_overall`` among every
    candidate present in the weights.
    """

    config: TargetConfig
    disease: str | None
    candidates: tuple[str, ...]
    missing_genes: tuple[str, ...]
    assignments: pd.DataFrame
    chosen_cluster: str
    cluster_candidates: tuple[str, ...]
    target_columns: tuple[str, str]
    threshold: float
    pairs: pd.DataFrame
    match_statistics: pd.DataFrame | None
    significance: pd.DataFrame | None
    known_pairs: int
    chance_cluster: Chance
    chance_overall: Chance
    prepared: PreparedWeights

    def summary(self) -> dict[str, object]:
        """JSON-ready parameters and results (written as summary.json)."""
        out: dict[str, object] = {
            "config": self.config.to_dict(),
            "disease": self.disease,
            "n_candidates": len(self.candidates),
            "candidates": list(self.candidates),
            "missing_genes": list(self.missing_genes),
            "gene_clusters": {k: list(v) for k, v in self.prepared.clusters.items()},
            "chosen_cluster": self.chosen_cluster,
            "chosen_cluster_genes": len(self.prepared.clusters[self.chosen_cluster]),
            "cluster_candidates": list(self.cluster_candidates),
            "target_columns": {"max": self.target_columns[0], "min": self.target_columns[1]},
            "threshold": self.threshold,
            "n_pairs": len(self.pairs),
            "top_pairs": self.pairs.head(5).to_dict(orient="records"),
            "known_pairs": self.known_pairs,
            "chance": {
                "cluster": self.chance_cluster.summary(),
                "overall": self.chance_overall.summary(),
            },
        }
        tables = self.match_tables()
        if tables is not None:
            merged = tables[0].merge(tables[1], on="TOP_N")
            out["match"] = [
                {k: _nan_to_none(v) for k, v in row.items()}
                for row in merged.to_dict(orient="records")
            ]
        return out

    def match_tables(self) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """``(match_statistics, significance)`` as reported (written, printed, logged).

        Once a TOP_N reaches the number of pairs found, every larger TOP_N repeats the same
        pairs; the reported rows stop at the first TOP_N that holds every found pair (its
        ``Total_Pairs`` is the total). The reference mode keeps every configured TOP_N, as the
        reference's match_statistics.csv has them. ``None`` without a disease.
        """
        if self.match_statistics is None or self.significance is None:
            return None
        if self.config.mode == "reference":
            return self.match_statistics, self.significance
        keep = _reported_top_ns(self.match_statistics["TOP_N"].to_numpy(), len(self.pairs))
        return (
            self.match_statistics[keep].reset_index(drop=True),
            self.significance[keep].reset_index(drop=True),
        )


def _reported_top_ns(top_ns: np.ndarray, n_found: int) -> np.ndarray:
    """Mask of the TOP_N values below ``n_found`` and the smallest one at or above it."""
    covering = top_ns[top_ns >= n_found]
    return (top_ns < n_found) | (top_ns == covering.min() if covering.size else False)


def _nan_to_none(value: object) -> object:
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _ensure_prepared(
    weights: pd.DataFrame | PreparedWeights, config: TargetConfig
) -> PreparedWeights:
    if isinstance(weights, PreparedWeights):
        made = weights.config
        diff = [f for f in _PREP_FIELDS if getattr(made, f) != getattr(config, f)]
        if diff:
            raise DeeppertError(f"prepared weights were made with other settings: {diff}")
        return weights
    return prepare_weights(weights, config)


def predict_targets(
    weights: pd.DataFrame | PreparedWeights,
    *,
    config: TargetConfig | None = None,
    known: pd.DataFrame | None = None,
    disease: str | None = None,
    genes: Sequence[str] | None = None,
) -> TargetResult:
    """Run steps 1-7 plus the chance statistics for one disease or one gene list.

    Parameters
    ----------
    weights
        Ensemble gene weights, clusters x genes (a ``dose`` column is dropped), or the
        :class:`PreparedWeights` of an earlier call with the same clustering settings.
    config
        :class:`TargetConfig`; defaults to the evaluation mode in ``mode="default"``.
    known
        Merged known-pair table (:func:`load_known_pairs`); needed with ``disease``.
    disease
        ``fd_name`` of the known pairs: its genes are the candidates (unless ``genes`` is
        given) and its pairs are what predictions are matched against.
    genes
        A user gene list; its genes absent from the weights are named in a warning, and
        fewer than two present is an error.

    Pure: reads and writes no files; errors are :class:`DeeppertError`.
    """
    config = config or TargetConfig()
    if genes is None and disease is None:
        raise DeeppertError("give a disease or a gene list to draw candidate genes from")
    keys: frozenset[tuple[str, str]] | None = None
    if disease is not None:
        if known is None:
            raise DeeppertError(f"disease {disease!r} needs the known-pair tables")
        disease = resolve_disease(known, disease)
        keys = known_pair_keys(known, disease)
    prepared = _ensure_prepared(weights, config)
    rows, missing, source = _candidate_rows(prepared, known, disease, genes)
    threshold = auto_threshold(len(rows)) if config.threshold == "auto" else float(config.threshold)
    selection = select_pairs(prepared, rows, threshold=threshold, n_pairs=config.n_pairs)
    names, assignments = _assignments(prepared, rows, config.mode)
    if selection is None:
        counts = assignments["Assigned_Cluster"].value_counts().to_dict()
        raise DeeppertError(
            f"fewer than 2 candidate genes of {source} in every gene cluster ({counts}); "
            "try fewer clusters or more top genes"
        )
    chosen = prepared.cluster_names[selection.chosen]
    pairs = _pairs_frame(selection, names)
    if pairs.empty:
        log.warning("no pair of %s reaches |r| >= %s in %s", source, threshold, chosen)

    known_mat = known_matrix(names, keys or frozenset())
    chance_cluster = Chance(*chance_rate(known_mat, selection.members)[:2])
    chance_overall = Chance(*chance_rate(known_mat)[:2])
    match_stats = significance = None
    if keys is not None:
        match_stats = _match_statistics(selection, known_mat, config.top_ns, len(pairs))
        null = permutation_null(
            selection,
            known_mat,
            top_ns=config.top_ns,
            permutations=config.permutations,
            seed=config.seed,
        )
        significance = _significance(match_stats, null, chance_cluster, chance_overall)
    return TargetResult(
        config=config,
        disease=disease,
        candidates=tuple(names),
        missing_genes=tuple(missing) if genes is not None else (),
        assignments=assignments,
        chosen_cluster=chosen,
        cluster_candidates=tuple(names[i] for i in selection.members),
        target_columns=prepared.target_columns[chosen],
        threshold=threshold,
        pairs=pairs,
        match_statistics=match_stats,
        significance=significance,
        known_pairs=len(keys) if keys is not None else 0,
        chance_cluster=chance_cluster,
        chance_overall=chance_overall,
        prepared=prepared,
    )


def _candidate_rows(
    prepared: PreparedWeights,
    known: pd.DataFrame | None,
    disease: str | None,
    genes: Sequence[str] | None,
) -> tuple[np.ndarray, list[str], str]:
    """Step 4 (matching): rows of the candidate genes, the absent genes, and where they came from.

    Candidates are the user's gene list, else every gene of the disease's known pairs.
    """
    candidate_genes = list(genes) if genes is not None else disease_genes(known, disease)  # type: ignore[arg-type]
    rows, missing = match_candidates(prepared, candidate_genes)
    source = "the gene list" if genes is not None else f"the known pairs of {disease!r}"
    if len(rows) == 0:
        raise DeeppertError(
            f"no candidate gene of {source} is in the weights ({len(candidate_genes)} tried)"
        )
    if genes is not None:
        if missing:
            log.warning(
                "%d gene(s) of the gene list are not in the weights: %s",
                len(missing),
                ", ".join(missing),
            )
        if len(rows) < 2:
            raise DeeppertError(
                f"only {len(rows)} gene of the gene list is in the weights; need >= 2"
            )
    else:
        log.info(
            "%d of %d candidate genes of %r are in the weights",
            len(rows),
            len(candidate_genes),
            disease,
        )
    return rows, missing, source


def _assignments(
    prepared: PreparedWeights, rows: np.ndarray, mode: str
) -> tuple[list[str], pd.DataFrame]:
    """Candidate names as the outputs spell them (lower-cased in reference mode) and the
    gene cluster each was assigned to (step 4)."""
    gene_names = prepared.genes
    if mode == "reference":
        names = [gene_names[r].lower() for r in rows]
    else:
        names = [gene_names[r] for r in rows]
    assigned = [prepared.cluster_names[c] for c in prepared.row_cluster[rows]]
    return names, pd.DataFrame({"Gene": names, "Assigned_Cluster": assigned})


def _pairs_frame(selection: PairSelection, names: list[str]) -> pd.DataFrame:
    """Step 6's ranked pairs as target_combinations.csv has them."""
    return pd.DataFrame(
        {
            "GeneA": [names[i] for i in selection.first],
            "GeneB": [names[i] for i in selection.second],
            "ClustA_Score": selection.score_a,
            "ClustB_Score": selection.score_b,
            "Total_Score": selection.total,
            "PairCorr_Signed": selection.corr,
            "PairCorr_Abs": np.abs(selection.corr),
        },
        columns=list(PAIR_COLUMNS),
    )


def _match_statistics(
    selection: PairSelection, known_mat: np.ndarray, top_ns: tuple[int, ...], n_found: int
) -> pd.DataFrame:
    """Step 7: matched known pairs among the top N found pairs (match_statistics.csv)."""
    ids = np.arange(known_mat.shape[0])
    matched = matches_at(selection, known_mat, ids, top_ns)
    totals = np.minimum(np.asarray(top_ns), n_found)
    rate = np.where(totals > 0, matched / np.maximum(totals, 1), 0.0)
    return pd.DataFrame(
        {
            "TOP_N": list(top_ns),
            "Total_Pairs": totals,
            "Matched_Pairs": matched,
            "Match_Rate": rate,
        },
        columns=list(MATCH_COLUMNS),
    )


def _significance(
    match_stats: pd.DataFrame,
    null: np.ndarray,
    cluster: Chance,
    overall: Chance,
) -> pd.DataFrame:
    """Chance rates, hypergeometric tails and permutation p-values per top N.

    ``cluster`` and ``overall`` count the known pairs among the chosen cluster's candidates
    and among all candidates; ``null`` the permutation matches per top N.
    """
    matched = match_stats["Matched_Pairs"].to_numpy()
    totals = match_stats["Total_Pairs"].to_numpy()
    return pd.DataFrame(
        {
            "TOP_N": match_stats["TOP_N"].tolist(),
            "Chance_Rate_Cluster": cluster.rate,
            "Chance_Rate_Overall": overall.rate,
            "Expected_Matches_Cluster": totals * cluster.rate,
            "P_Hypergeom_Cluster": [
                hypergeom_pvalue(int(x), int(n), cluster.pairs, cluster.known)
                for x, n in zip(matched, totals, strict=True)
            ],
            "P_Hypergeom_Overall": [
                hypergeom_pvalue(int(x), int(n), overall.pairs, overall.known)
                for x, n in zip(matched, totals, strict=True)
            ],
            "Null_Mean_Matches": null.mean(axis=0) if len(null) else np.nan,
            "P_Permutation": empirical_pvalues(matched, null),
        }
    )


ALL_DISEASE_COLUMNS = (
    "disease",
    "known_pairs",
    "candidates",
    "chosen_cluster",
    "cluster_genes",
    "cluster_candidates",
    "threshold",
    "pairs",
    "matched_10",
    "matched_50",
    "matched_100",
    "chance_rate_cluster",
    "chance_rate_overall",
    "p_hypergeom_10",
    "p_hypergeom_50",
    "p_hypergeom_100",
    "p_perm_10",
    "p_perm_50",
    "p_perm_100",
    "q_perm_100",
    "status",
)


def run_all_diseases(
    weights: pd.DataFrame | PreparedWeights,
    known: pd.DataFrame,
    *,
    config: TargetConfig | None = None,
    min_pairs: int = 20,
) -> pd.DataFrame:
    """Every disease with >= ``min_pairs`` known pairs: one row each (see ``ALL_DISEASE_COLUMNS``).

    The clustering is computed once. p-values are hypergeometric (chosen-cluster population)
    and permutation (same seed for every disease, so a row equals a single run); ``q_perm_100``
    is the Benjamini-Hochberg adjustment of ``p_perm_100`` across the table. A disease whose
    run fails on its input (e.g. < 2 candidates per cluster) keeps a row with the reason in
    ``status`` and no numbers.
    """
    config = config or TargetConfig()
    top_ns = tuple(sorted(set(config.top_ns) | {10, 50, 100}))
    run_config = TargetConfig(**{**config.to_dict(), "top_ns": top_ns})  # type: ignore[arg-type]
    prepared = _ensure_prepared(weights, run_config)
    names = disease_names(known, min_pairs=min_pairs)
    if not names:
        raise DeeppertError(f"no disease has >= {min_pairs} known pairs")
    rows = []
    for disease in names:
        row: dict[str, object] = {
            "disease": disease,
            "known_pairs": len(known_pair_keys(known, disease)),
        }
        try:
            res = predict_targets(prepared, config=run_config, known=known, disease=disease)
        except DeeppertError as exc:
            log.warning("%s: %s", disease, exc)
            row["status"] = str(exc)
            rows.append(row)
            continue
        ms = res.match_statistics.set_index("TOP_N")  # type: ignore[union-attr]
        sg = res.significance.set_index("TOP_N")  # type: ignore[union-attr]
        row.update(
            candidates=len(res.candidates),
            chosen_cluster=res.chosen_cluster,
            cluster_genes=len(prepared.clusters[res.chosen_cluster]),
            cluster_candidates=len(res.cluster_candidates),
            threshold=res.threshold,
            pairs=len(res.pairs),
            chance_rate_cluster=res.chance_cluster.rate,
            chance_rate_overall=res.chance_overall.rate,
            status="ok",
        )
        for n in (10, 50, 100):
            row[f"matched_{n}"] = int(ms.loc[n, "Matched_Pairs"])
            row[f"p_hypergeom_{n}"] = sg.loc[n, "P_Hypergeom_Cluster"]
            row[f"p_perm_{n}"] = sg.loc[n, "P_Permutation"]
        rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=list(ALL_DISEASE_COLUMNS))
    p = pd.to_numeric(table["p_perm_100"], errors="coerce")
    ok = p.notna().to_numpy()
    q = np.full(len(table), np.nan)
    if ok.any():
        q[ok] = false_discovery_control(p[ok].to_numpy())
    table["q_perm_100"] = q
    for col in (
        "candidates",
        "cluster_genes",
        "cluster_candidates",
        "pairs",
        "matched_10",
        "matched_50",
        "matched_100",
    ):
        table[col] = table[col].astype("Int64")
    return table
