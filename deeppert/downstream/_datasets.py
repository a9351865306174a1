"""Load the synergy (O'Neil, Loewe) and toxicity (HA1E renal, NPC, NEU) tasks from the seed folder.

Every compound is matched by structure (:func:`structure_key`); whatever matches nothing is
listed in an :class:`UnmatchedWarning` with counts, and a task left with no samples is an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deeppert.data._signatures import Signatures, landmark_genes
from deeppert.downstream._compounds import structure_keys, warn_unmatched
from deeppert.downstream_config import SYNERGY_CELL_LINES, TOXICITY_SETS, ToxicitySet
from deeppert.errors import DeeppertError

__all__ = [
    "ToxicitySet",
    "TOXICITY_SETS",
    "SYNERGY_CELL_LINES",
    "SynergyTask",
    "ToxicityTask",
    "read_signature_csv",
    "load_synergy",
    "load_toxicity",
]

log = logging.getLogger(__name__)


# toxicity set -> (signature file, label/split table), under downstream/toxicity
_TOX_FILES: dict[str, tuple[str, str]] = {
    "renal": ("Renal_HA1E.csv", "Renal_toxicity_map_set.csv"),
    "npc": ("NPC_toxicity_compound.csv", "NPC_toxicity_map_set.csv"),
    "neu": ("NEU_toxicity_compound.csv", "NEU_toxicity_map_set.csv"),
}


def read_signature_csv(path: str | Path, *, id_column: str = "canonical_smiles") -> Signatures:
    """Read a downstream signature CSV: the 978 landmark columns picked by name, the rest as metadata.

    Local stop-gap until the shared loader in :mod:`deeppert.data` covers these files. An
    unnamed leading index column is dropped; ``id_column`` gives the sample ids.
    """
    path = Path(path)
    if not path.is_file():
        raise DeeppertError(f"{path}: no such file")
    frame = pd.read_csv(path)
    genes = list(landmark_genes())
    missing = [g for g in genes if g not in frame.columns]
    if missing:
        raise DeeppertError(
            f"{path}: {len(missing)} landmark gene column(s) missing, e.g. {missing[:5]}"
        )
    if id_column not in frame.columns:
        raise DeeppertError(f"{path}: no {id_column!r} column")
    values = frame[genes].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    meta_cols = [
        c for c in frame.columns if c not in set(genes) and not str(c).startswith("Unnamed:")
    ]
    meta = frame[meta_cols].reset_index(drop=True)
    return Signatures(values, frame[id_column].astype(str).to_numpy(), genes, meta, str(path))


@dataclass(frozen=True)
class SynergyTask:
    """Drug pairs of one cell line with the signatures of both drugs.

    Attributes
    ----------
    name
        ``"synergy_<cell line>"``.
    drugs
        Drug names, one per row of ``values``.
    keys
        Structure keys of those drugs.
    values
        ``(n_drugs, 978)`` signatures in landmark order (mean over duplicate structures).
    pairs
        One row per unordered labelled pair: ``drug_a``, ``drug_b`` (row indices into
        ``drugs``), ``synergy`` (Loewe score), ``label`` (0/1).
    counts
        How many drugs/pairs were read, matched and kept.
    """

    name: str
    drugs: tuple[str, ...]
    keys: tuple[str, ...]
    values: np.ndarray
    pairs: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)


@dataclass(frozen=True)
class ToxicityTask:
    """Compounds deduplicated by structure, each with one signature and one binary label.

    Attributes
    ----------
    name
        ``"toxicity_<set>"``.
    keys
        Structure keys, one per row of ``values``.
    values
        ``(n_structures, 978)`` signatures (mean over signatures of the same structure).
    labels
        ``(n_structures,)`` 0/1 (labels agree across duplicate rows, checked).
    given
        The published split, row by row as given (duplicates kept, hence leaky): ``index``
        (row into ``keys``) and ``split`` (``"Train"``/``"Test"``).
    counts
        How many rows/structures were read, matched and kept.
    """

    name: str
    keys: np.ndarray
    values: np.ndarray
    labels: np.ndarray
    given: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def n_compounds(self) -> int:
        return len(self.keys)


def _mean_by_key(values: np.ndarray, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Average rows sharing a structure key; keys in first-seen order."""
    uniq = list(dict.fromkeys(keys))
    pos = {k: i for i, k in enumerate(uniq)}
    idx = np.array([pos[k] for k in keys])
    out = np.zeros((len(uniq), values.shape[1]))
    np.add.at(out, idx, values)
    out /= np.bincount(idx, minlength=len(uniq))[:, None]
    return np.asarray(uniq, dtype=object), out


def load_synergy(data_dir: str | Path, cell_line: str) -> SynergyTask:
    """O'Neil pairs of ``cell_line`` whose two drugs both have a signature in that cell line.

    Label names map to SMILES through ``oneil_drug_two_smiles.csv``; both those SMILES and
    the signatures' ``canonical_smiles`` are reduced to structure keys and joined on them.
    Signatures, names and pairs that match nothing are warned about with counts.
    """
    folder = Path(data_dir) / "downstream" / "drug_combination"
    sig_path = folder / f"{cell_line}_COMBINATION.csv"
    names_path = folder / "oneil_drug_two_smiles.csv"
    labels_path = folder / "label_oneil_loewe.csv"
    sigs = read_signature_csv(sig_path)
    names = pd.read_csv(names_path)
    labels = pd.read_csv(labels_path)
    for frame, path, cols in (
        (names, names_path, ("drug_name", "smiles")),
        (labels, labels_path, ("drug_a_name", "drug_b_name", "cell_line", "synergy", "label")),
    ):
        miss = [c for c in cols if c not in frame.columns]
        if miss:
            raise DeeppertError(f"{path}: missing column(s) {miss}")

    name_keys = structure_keys(names["smiles"], source=f"{names_path}:smiles")
    key_to_name: dict[str, str] = {}
    for name, key in zip(names["drug_name"].astype(str), name_keys):
        if key is None:
            continue
        if key in key_to_name and key_to_name[key] != name:
            raise DeeppertError(
                f"{names_path}: drugs {key_to_name[key]!r} and {name!r} share one structure"
            )
        key_to_name[key] = name

    sig_keys = structure_keys(sigs.sample_ids, source=f"{sig_path}:canonical_smiles")
    ok = [k is not None and k in key_to_name for k in sig_keys]
    warn_unmatched(
        [s for s, m in zip(sigs.sample_ids, ok, strict=True) if not m],
        what="signatures",
        source=f"{sig_path} vs {names_path}",
    )
    keys = [k for k, m in zip(sig_keys, ok, strict=True) if m]
    uniq, values = _mean_by_key(sigs.values[np.asarray(ok, dtype=bool)], keys)
    drugs = tuple(key_to_name[k] for k in uniq)
    drug_index = {d: i for i, d in enumerate(drugs)}

    rows = labels[labels["cell_line"].astype(str) == cell_line]
    if rows.empty:
        raise DeeppertError(f"{labels_path}: no pairs for cell line {cell_line!r}")
    unknown = sorted(set(rows["drug_a_name"]).union(rows["drug_b_name"]) - set(names["drug_name"]))
    if unknown:
        warn_unmatched(
            unknown, what="drug names without a SMILES", source=f"{labels_path} vs {names_path}"
        )
    a = rows["drug_a_name"].astype(str).map(drug_index)
    b = rows["drug_b_name"].astype(str).map(drug_index)
    both = a.notna() & b.notna()
    lacking = list(rows.loc[a.isna(), "drug_a_name"]) + list(rows.loc[b.isna(), "drug_b_name"])
    warn_unmatched(
        lacking,
        what=f"pair members without a {cell_line} signature",
        source=f"{labels_path} vs {sig_path}",
    )
    pairs = pd.DataFrame(
        {
            "drug_a": a[both].astype(int).to_numpy(),
            "drug_b": b[both].astype(int).to_numpy(),
            "synergy": pd.to_numeric(rows.loc[both, "synergy"], errors="coerce").to_numpy(),
            "label": pd.to_numeric(rows.loc[both, "label"], errors="coerce").to_numpy(),
        }
    )
    if pairs.empty:
        raise DeeppertError(
            f"{labels_path}: no {cell_line} pair has signatures for both drugs in {sig_path}"
        )
    bad = pairs[["synergy", "label"]].isna().any(axis=1) | ~pairs["label"].isin([0, 1])
    if bad.any():
        raise DeeppertError(
            f"{labels_path}: {int(bad.sum())} {cell_line} pair(s) with a non-numeric score or non-0/1 label"
        )
    if (pairs["drug_a"] == pairs["drug_b"]).any():
        raise DeeppertError(f"{labels_path}: a {cell_line} pair combines a drug with itself")
    lo = np.minimum(pairs["drug_a"], pairs["drug_b"])
    hi = np.maximum(pairs["drug_a"], pairs["drug_b"])
    dup = pd.Series(list(zip(lo, hi, strict=True))).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DeeppertError(
            f"{labels_path}: {cell_line} pair {drugs[lo[i]]!r} + {drugs[hi[i]]!r} is listed more than once"
        )
    pairs["label"] = pairs["label"].astype(int)
    counts = {
        "signatures": sigs.n_samples,
        "drugs": len(drugs),
        "label_pairs": len(rows),
        "pairs": len(pairs),
        "drugs_in_pairs": len(set(pairs["drug_a"]).union(pairs["drug_b"])),
    }
    log.info("synergy %s: %s", cell_line, counts)
    return SynergyTask(f"synergy_{cell_line}", drugs, tuple(uniq), values, pairs, counts)


def load_toxicity(data_dir: str | Path, which: ToxicitySet) -> ToxicityTask:
    """One toxicity set, deduplicated by structure, with its published (leaky) split kept aside.

    Labels come from the ``*_map_set.csv`` table, reduced to one label per structure (an error
    if duplicates disagree); signatures of the same structure are averaged.
    """
    if which not in _TOX_FILES:
        raise DeeppertError(f"unknown toxicity set {which!r}; choose from {list(_TOX_FILES)}")
    folder = Path(data_dir) / "downstream" / "toxicity"
    sig_name, map_name = _TOX_FILES[which]
    sig_path, map_path = folder / sig_name, folder / map_name
    sigs = read_signature_csv(sig_path)
    if not map_path.is_file():
        raise DeeppertError(f"{map_path}: no such file")
    table = pd.read_csv(map_path)
    miss = [c for c in ("SMILES", "Label", "split") if c not in table.columns]
    if miss:
        raise DeeppertError(f"{map_path}: missing column(s) {miss}")
    table_keys = structure_keys(table["SMILES"], source=f"{map_path}:SMILES")
    table = table.assign(key=table_keys).dropna(subset=["key"]).reset_index(drop=True)
    lab = pd.to_numeric(table["Label"], errors="coerce")
    if lab.isna().any() or not lab.isin([0, 1]).all():
        r = int(np.flatnonzero(lab.isna() | ~lab.isin([0, 1]))[0])
        raise DeeppertError(
            f"{map_path}: row {r}: Label must be 0 or 1, got {table['Label'].iloc[r]!r}"
        )
    table["Label"] = lab.astype(int)
    conflict = table.groupby("key")["Label"].nunique()
    if (conflict > 1).any():
        k = conflict.index[conflict > 1][0]
        raise DeeppertError(
            f"{map_path}: {int((conflict > 1).sum())} structure(s) with disagreeing labels, e.g. {k!r}"
        )
    label_of = table.groupby("key")["Label"].first()

    sig_keys = structure_keys(sigs.sample_ids, source=f"{sig_path}:canonical_smiles")
    ok = np.array([k is not None and k in label_of.index for k in sig_keys], dtype=bool)
    warn_unmatched(
        [s for s, m in zip(sigs.sample_ids, ok, strict=True) if not m],
        what="signatures",
        source=f"{sig_path} vs {map_path}",
    )
    keys, values = _mean_by_key(
        sigs.values[ok], [k for k, m in zip(sig_keys, ok, strict=True) if m]
    )
    if len(keys) == 0:
        raise DeeppertError(f"{sig_path}: no signature matches a structure in {map_path}")
    pos = {k: i for i, k in enumerate(keys)}
    has_sig = table["key"].isin(pos)
    warn_unmatched(
        list(table.loc[~has_sig, "SMILES"].astype(str)),
        what="label rows",
        source=f"{map_path} vs {sig_path}",
    )
    given = pd.DataFrame(
        {
            "index": table.loc[has_sig, "key"].map(pos).astype(int).to_numpy(),
            "split": table.loc[has_sig, "split"].astype(str).to_numpy(),
        }
    )
    bad_split = ~given["split"].isin(["Train", "Test"])
    if bad_split.any():
        raise DeeppertError(
            f"{map_path}: split must be Train or Test, got {sorted(set(given['split'][bad_split]))}"
        )
    in_both = given.groupby("index")["split"].nunique().gt(1).sum()
    counts = {
        "signatures": sigs.n_samples,
        "signatures_matched": int(ok.sum()),
        "label_rows": len(table),
        "label_structures": int(label_of.size),
        "label_structures_in_train_and_test": int(
            table.groupby("key")["split"].nunique().gt(1).sum()
        ),
        "compounds": len(keys),
        "given_rows": len(given),
        "given_structures_in_train_and_test": int(in_both),
    }
    log.info("toxicity %s: %s", which, counts)
    labels = label_of.loc[list(keys)].to_numpy(dtype=int)
    return ToxicityTask(f"toxicity_{which}", keys, values, labels, given, counts)
