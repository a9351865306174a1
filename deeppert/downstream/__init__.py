"""Downstream tasks: drug synergy (O'Neil, Loewe) and toxicity (HA1E renal, NPC, NEU).

Signatures become features through a :class:`Featurizer` (raw genes, PCA fitted per fold
(inductive) or on all of the task's signatures (transductive), or any embedding callable);
models (RandomForest, HistGradientBoosting, tuned by an inner CV grouped by drug/structure)
are scored on out-of-fold predictions, each made by exactly one fold model, under
one-drug-unseen / both-drugs-unseen / structure / scaffold splits, with the leaky reference
splits reported beside them for comparison only.

Typical use::

    from deeppert import downstream as ds
    task = ds.load_synergy(data_dir, "VCAP")
    result = ds.evaluate_synergy(task, [ds.raw_featurizer(), ds.pca_featurizer(10),
                                        ds.embedding_featurizer(ensemble_embed_fn)])
    ds.write_results(result, "out/synergy_VCAP")
"""

from __future__ import annotations

from deeppert.downstream._compounds import (
    UnmatchedWarning,
    murcko_scaffold,
    structure_key,
    structure_keys,
)
from deeppert.downstream._datasets import (
    SYNERGY_CELL_LINES,
    TOXICITY_SETS,
    SynergyTask,
    ToxicityTask,
    load_synergy,
    load_toxicity,
    read_signature_csv,
)
from deeppert.downstream._evaluate import (
    SETTINGS,
    SYNERGY_SPLITS,
    TOXICITY_SPLITS,
    EvalConfig,
    EvaluationResult,
    evaluate_synergy,
    evaluate_toxicity,
    fold_mean_metrics,
    pooled_metrics,
)
from deeppert.downstream._features import (
    Featurizer,
    embedding_featurizer,
    pair_features,
    pca_featurizer,
    raw_featurizer,
)
from deeppert.downstream._pooled import ensemble_feature_sets, pooled_signatures
from deeppert.downstream._report import markdown_table, merge_results, summarize, write_results

__all__ = [
    "UnmatchedWarning",
    "structure_key",
    "structure_keys",
    "murcko_scaffold",
    "SYNERGY_CELL_LINES",
    "TOXICITY_SETS",
    "SynergyTask",
    "ToxicityTask",
    "load_synergy",
    "load_toxicity",
    "read_signature_csv",
    "Featurizer",
    "raw_featurizer",
    "pca_featurizer",
    "embedding_featurizer",
    "pair_features",
    "SETTINGS",
    "SYNERGY_SPLITS",
    "TOXICITY_SPLITS",
    "EvalConfig",
    "EvaluationResult",
    "evaluate_synergy",
    "evaluate_toxicity",
    "pooled_metrics",
    "fold_mean_metrics",
    "summarize",
    "markdown_table",
    "merge_results",
    "write_results",
    "pooled_signatures",
    "ensemble_feature_sets",
]
