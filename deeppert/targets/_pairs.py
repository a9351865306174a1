"""Known target pairs: load and merge the three reference tables, and look diseases up."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pandas as pd

from deeppert.errors import DeeppertError

__all__ = [
    "PAIR_INFO_FILE",
    "MAPPING_FILE",
    "TRIALS_FILE",
    "load_known_pairs",
    "merge_known_pairs",
    "disease_names",
    "resolve_disease",
    "disease_genes",
    "known_pair_keys",
    "pair_key",
]

PAIR_INFO_FILE = "TargetPair_Information.txt"
MAPPING_FILE = "TargetPair_DrugCombination_Mapping_Table.txt"
TRIALS_FILE = "Drug_Combination_Clinicaltrial_Phase_Information.txt"

_REQUIRED = {
    PAIR_INFO_FILE: ("tpid", "genename1", "genename2"),
    MAPPING_FILE: ("dcid", "tpid"),
    TRIALS_FILE: ("dcid", "fd_name"),
}


def load_known_pairs(pairs_dir: str | os.PathLike) -> pd.DataFrame:
    """Read the three known-pair tables (tab-separated) from ``pairs_dir`` and merge them."""
    folder = Path(pairs_dir)
    if not folder.is_dir():
        raise DeeppertError(f"{folder}: known-pair folder not found")
    tables = {}
    for name in (PAIR_INFO_FILE, MAPPING_FILE, TRIALS_FILE):
        path = folder / name
        if not path.is_file():
            raise DeeppertError(f"{path}: known-pair table missing")
        try:
            tables[name] = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=True)
        except pd.errors.EmptyDataError as exc:
            raise DeeppertError(f"{path}: table is empty") from exc
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise DeeppertError(f"{path}: cannot read table: {exc}") from exc
    return merge_known_pairs(
        tables[PAIR_INFO_FILE],
        tables[MAPPING_FILE],
        tables[TRIALS_FILE],
        sources={k: str(folder / k) for k in tables},
    )


def merge_known_pairs(
    pair_info: pd.DataFrame,
    mapping: pd.DataFrame,
    trials: pd.DataFrame,
    *,
    sources: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Merge mapping with trial info on ``dcid``, then pair info on ``tpid``; drop duplicates.

    Duplicates are dropped on (genename1, genename2, fd_name), as the reference does. Rows
    whose gene names or disease are missing cannot be used and are removed.
    """
    sources = sources or {}
    for name, frame in (
        (PAIR_INFO_FILE, pair_info),
        (MAPPING_FILE, mapping),
        (TRIALS_FILE, trials),
    ):
        where = sources.get(name, name)
        missing = [c for c in _REQUIRED[name] if c not in frame.columns]
        if missing:
            raise DeeppertError(
                f"{where}: missing column(s) {missing}; found {list(frame.columns)[:8]}"
            )
        if frame.empty:
            raise DeeppertError(f"{where}: table has no rows")
    merged = pd.merge(mapping, trials, on="dcid")
    merged = pd.merge(pair_info, merged, on="tpid")
    merged = merged.drop_duplicates(subset=["genename1", "genename2", "fd_name"])
    merged = merged.dropna(subset=["genename1", "genename2", "fd_name"])
    if merged.empty:
        raise DeeppertError("known-pair tables share no dcid/tpid keys: the merge is empty")
    return merged.reset_index(drop=True)


def pair_key(a: str, b: str) -> tuple[str, str]:
    """Order-free, case-free key of a gene pair: the two upper-case symbols, sorted."""
    x, y = str(a).strip().upper(), str(b).strip().upper()
    return (x, y) if x <= y else (y, x)


def known_pair_keys(known: pd.DataFrame, disease: str) -> frozenset[tuple[str, str]]:
    """The disease's known pairs as :func:`pair_key` tuples (self-pairs kept out)."""
    rows = known[known["fd_name"] == disease]
    keys = {pair_key(a, b) for a, b in zip(rows["genename1"], rows["genename2"], strict=True)}
    return frozenset(k for k in keys if k[0] != k[1])


def disease_genes(known: pd.DataFrame, disease: str) -> list[str]:
    """All genes named in the disease's known pairs, sorted (the candidate genes)."""
    rows = known[known["fd_name"] == disease]
    genes = set(rows["genename1"].astype(str)) | set(rows["genename2"].astype(str))
    return sorted(g.strip() for g in genes if g.strip())


def disease_names(known: pd.DataFrame, *, min_pairs: int = 0) -> list[str]:
    """Diseases with at least ``min_pairs`` distinct known pairs, most pairs first, then by name."""
    counts = {d: len(known_pair_keys(known, d)) for d in known["fd_name"].unique()}
    kept = [d for d, n in counts.items() if n >= min_pairs]
    return sorted(kept, key=lambda d: (-counts[d], d))


def resolve_disease(known: pd.DataFrame, disease: str) -> str:
    """Return the table's spelling of ``disease`` (exact, else unique case-insensitive match).

    Raises :class:`DeeppertError` naming the closest valid names when it is unknown.
    """
    names = sorted(known["fd_name"].unique())
    if disease in names:
        return disease
    folded = [n for n in names if n.lower() == disease.strip().lower()]
    if len(folded) == 1:
        return folded[0]
    close = difflib.get_close_matches(disease, names, n=5, cutoff=0.4)
    hint = f"; closest: {', '.join(repr(c) for c in close)}" if close else ""
    raise DeeppertError(f"unknown disease {disease!r} (fd_name of the known-pair tables){hint}")
