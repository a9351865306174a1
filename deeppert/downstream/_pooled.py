"""The pooled real signatures the downstream ensemble is trained on (unsupervised, transductive).

All signatures of the six downstream cell lines (A375, HT29, VCAP from the O'Neil combination
files; HA1E, NPC, NEU from the toxicity files) stacked into one matrix in landmark order. No
label column is read: the ensemble trained on this matrix never sees synergy or toxicity
labels, but it does see the very signatures the downstream tasks later embed (transductive).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deeppert.data._signatures import Signatures
from deeppert.downstream._datasets import read_signature_csv
from deeppert.errors import DeeppertError

__all__ = [
    "POOLED_FILES",
    "pooled_signatures",
    "ensemble_embed_fn",
    "member_embed_fn",
    "default_member_group",
    "ensemble_feature_sets",
]

#: cell line -> signature file, relative to ``<data_dir>/downstream``
POOLED_FILES: dict[str, str] = {
    "A375": "drug_combination/A375_COMBINATION.csv",
    "HT29": "drug_combination/HT29_COMBINATION.csv",
    "VCAP": "drug_combination/VCAP_COMBINATION.csv",
    "HA1E": "toxicity/Renal_HA1E.csv",
    "NPC": "toxicity/NPC_toxicity_compound.csv",
    "NEU": "toxicity/NEU_toxicity_compound.csv",
}


def pooled_signatures(data_dir: str | Path) -> Signatures:
    """Stack the downstream signatures of all six cell lines (978 landmark genes, L1000 order).

    ``data_dir`` is the deeppert-seed folder (holding ``downstream/``) or ``downstream/``
    itself. Sample ids are ``"<cell line>|<canonical SMILES>"``; metadata has ``cell_line``,
    ``canonical_smiles``, ``dose`` and ``source`` (file name). Labels are never read.
    """
    root = Path(data_dir)
    if (root / "downstream").is_dir():
        root = root / "downstream"
    parts, ids, metas = [], [], []
    for cell_line, rel in POOLED_FILES.items():
        sig = read_signature_csv(root / rel)
        smiles = sig.sample_ids.astype(str)
        dose = (
            pd.to_numeric(sig.metadata["dose"], errors="coerce").to_numpy()
            if sig.metadata is not None and "dose" in sig.metadata
            else np.full(len(smiles), np.nan)
        )
        parts.append(sig.values)
        ids.extend(f"{cell_line}|{s}" for s in smiles)
        metas.append(
            pd.DataFrame(
                {"cell_line": cell_line, "canonical_smiles": smiles, "dose": dose, "source": rel}
            )
        )
        genes = sig.genes
    values = np.vstack(parts)
    if values.shape[1] != 978:
        raise DeeppertError(f"{root}: pooled matrix has {values.shape[1]} genes, expected 978")
    meta = pd.concat(metas, ignore_index=True)
    return Signatures(values, np.asarray(ids), list(genes), meta, f"{root} (pooled)")


def _gene_frame(model, values: np.ndarray) -> pd.DataFrame:
    """Landmark-ordered values as a frame, so the model reorders them to its PCA genes."""
    from deeppert.data._signatures import landmark_genes

    values = np.asarray(values, dtype=np.float64)
    genes = list(landmark_genes())
    if values.ndim != 2 or values.shape[1] != len(genes):
        raise DeeppertError(f"expected (n, 978) landmark-ordered signatures, got {values.shape}")
    return pd.DataFrame(values, columns=genes)


def ensemble_embed_fn(model):
    """``values (n, 978, landmark order) -> (n, clusters)``: an EnsembleModel's embedding."""

    def embed_ensemble(values: np.ndarray) -> np.ndarray:
        return model.embed(_gene_frame(model, values)).to_numpy(dtype=np.float64)

    return embed_ensemble


def default_member_group(model) -> str:
    """The model group contributing most ensemble members (ties: first by name)."""
    from deeppert.ensemble.modes import parse_variable_name

    counts = pd.Series([parse_variable_name(v)[0] for v in model.labels.index]).value_counts()
    best = counts[counts == counts.max()].index
    return sorted(str(n) for n in best)[0]


def member_embed_fn(model, group: str | None = None, replica: int = 0):
    """``values -> (n, d)``: one trained model of the ensemble (``group``, replica ``replica``)."""
    group = group or default_member_group(model)
    if group not in model.models:
        raise DeeppertError(f"ensemble has no model group {group!r}; has {sorted(model.models)}")
    tm = model.models[group]
    if not 0 <= replica < len(tm.runs):
        raise DeeppertError(f"{group}: replica {replica} out of range (0..{len(tm.runs) - 1})")

    def embed_member(values: np.ndarray) -> np.ndarray:
        frame = _gene_frame(model, values)[list(model.pca.genes)]
        return np.asarray(tm.embed(model.pca.transform(frame.to_numpy()))[replica], np.float64)

    return embed_member


def ensemble_feature_sets(
    model, *, pca_components: int = 10, group: str | None = None, replica: int = 0
) -> list:
    """The four feature sets: raw genes, PCA (refitted per fold), one member, the ensemble.

    The member is ``<group>_run<replica>`` (default: :func:`default_member_group`, replica 0);
    both embeddings are fixed functions learnt without labels.
    """
    from deeppert.downstream._features import (
        embedding_featurizer,
        pca_featurizer,
        raw_featurizer,
    )

    group = group or default_member_group(model)
    return [
        raw_featurizer(),
        pca_featurizer(pca_components),
        embedding_featurizer(
            member_embed_fn(model, group, replica), name=f"single_{group}_run{replica}"
        ),
        embedding_featurizer(ensemble_embed_fn(model), name="ensemble"),
    ]
