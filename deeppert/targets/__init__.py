"""Target combination (docs/method.md section 5): predict drug-target gene pairs from ensemble weights.

Pure compute: reads files only in the ``load_*``/``read_*`` helpers and writes only in
``write_*``. The main entry for in-memory weights (e.g. read from a registry) is
:func:`predict_targets`; :func:`run_all_diseases` builds the table over diseases.
"""

from __future__ import annotations

from deeppert.targets._algorithm import (
    PAIR_COLUMNS,
    SUMMARY_COLUMNS,
    Mode,
    PairSelection,
    PreparedWeights,
    TargetConfig,
    auto_threshold,
    cluster_top_genes,
    gene_importance,
    match_candidates,
    prepare_weights,
    scale_importance,
    select_pairs,
)
from deeppert.targets._io import load_weights, read_gene_list, validate_weights
from deeppert.targets._outputs import write_all_diseases, write_target_outputs
from deeppert.targets._pairs import (
    disease_genes,
    disease_names,
    known_pair_keys,
    load_known_pairs,
    merge_known_pairs,
    pair_key,
    resolve_disease,
)
from deeppert.targets._pipeline import (
    ALL_DISEASE_COLUMNS,
    MATCH_COLUMNS,
    Chance,
    TargetResult,
    predict_targets,
    run_all_diseases,
)
from deeppert.targets._stats import (
    chance_rate,
    empirical_pvalues,
    hypergeom_pvalue,
    known_matrix,
    matches_at,
    permutation_null,
)

__all__ = [
    "ALL_DISEASE_COLUMNS",
    "MATCH_COLUMNS",
    "PAIR_COLUMNS",
    "SUMMARY_COLUMNS",
    "Mode",
    "PairSelection",
    "PreparedWeights",
    "TargetConfig",
    "Chance",
    "TargetResult",
    "auto_threshold",
    "chance_rate",
    "cluster_top_genes",
    "disease_genes",
    "disease_names",
    "empirical_pvalues",
    "gene_importance",
    "hypergeom_pvalue",
    "known_matrix",
    "known_pair_keys",
    "load_known_pairs",
    "load_weights",
    "match_candidates",
    "matches_at",
    "merge_known_pairs",
    "pair_key",
    "permutation_null",
    "predict_targets",
    "prepare_weights",
    "read_gene_list",
    "resolve_disease",
    "run_all_diseases",
    "scale_importance",
    "select_pairs",
    "validate_weights",
    "write_all_diseases",
    "write_target_outputs",
]
