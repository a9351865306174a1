"""LINCS L1000 metadata tables: signature, gene and compound info, in both release layouts.

The 2020 "beta" release (``siginfo_beta.txt``, ``geneinfo_beta.txt``, ``compoundinfo_beta.txt``)
and GSE92742 (``sig_info.txt``, ``gene_info.txt``, ``pert_info.txt``) name the same facts
differently; each reader maps both onto one small schema so the loader has one code path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from deeppert.errors import DeeppertError

__all__ = ["read_siginfo", "read_geneinfo", "read_compoundinfo", "select_signatures"]

log = logging.getLogger(__name__)

# Values LINCS uses for "not available".
_MISSING = {"", "-666", "-666.0", "nan", "NaN", "NA", "restricted"}


def _read_table(path: str | os.PathLike, what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DeeppertError(f"{path}: {what} file not found")
    try:
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DeeppertError(
            f"{path}: cannot parse {what} table as tab-separated text: {exc}"
        ) from exc


def _pick(
    frame: pd.DataFrame, path: Path, what: str, options: dict[str, tuple[str, ...]]
) -> pd.DataFrame:
    """Rename the first present alias of each wanted column to its canonical name."""
    out = {}
    for canonical, aliases in options.items():
        hit = next((a for a in aliases if a in frame.columns), None)
        if hit is None:
            raise DeeppertError(
                f"{path}: {what} table has no column {' or '.join(map(repr, aliases))} "
                f"(columns: {', '.join(frame.columns[:12])})"
            )
        out[canonical] = hit
    return frame.rename(columns={v: k for k, v in out.items() if v != k})


def read_siginfo(path: str | os.PathLike) -> pd.DataFrame:
    """Signature info with canonical columns ``sig_id``, ``pert_type``, ``cell_line``, ``pert_id``.

    Accepts ``siginfo_beta.txt`` (``cell_iname``) and GSE92742 ``sig_info.txt`` (``cell_id``);
    every other column is kept as it is.
    """
    path = Path(path)
    frame = _read_table(path, "signature info")
    frame = _pick(
        frame,
        path,
        "signature info",
        {
            "sig_id": ("sig_id",),
            "pert_type": ("pert_type",),
            "cell_line": ("cell_iname", "cell_id"),
            "pert_id": ("pert_id",),
        },
    )
    dup = frame["sig_id"][frame["sig_id"].duplicated()]
    if len(dup):
        raise DeeppertError(f"{path}: duplicated sig_id {dup.iloc[0]!r} in signature info")
    return frame


def select_signatures(
    siginfo: pd.DataFrame,
    cell_line: str | None,
    *,
    pert_type: str = "trt_cp",
    source: str = "signature info",
) -> pd.DataFrame:
    """Rows of ``siginfo`` of type ``pert_type`` (compound treatments by default) in
    ``cell_line`` (every cell line if None)."""
    keep = siginfo["pert_type"] == pert_type
    if not keep.any():
        types = sorted(set(siginfo["pert_type"]))
        raise DeeppertError(
            f"{source}: no signatures of pert_type {pert_type!r} (present: {', '.join(types[:20])})"
        )
    if cell_line is not None:
        in_line = siginfo["cell_line"] == cell_line
        if not in_line.any():
            lines = sorted(set(siginfo["cell_line"]))
            raise DeeppertError(
                f"{source}: no signatures for cell line {cell_line!r} "
                f"(present: {', '.join(lines[:20])}{' ...' if len(lines) > 20 else ''})"
            )
        keep &= in_line
    else:
        log.info(
            "%s: no cell line given, keeping %s signatures of every cell line", source, pert_type
        )
    out = siginfo[keep]
    if out.empty:
        raise DeeppertError(f"{source}: no {pert_type} signatures for cell line {cell_line!r}")
    return out.reset_index(drop=True)


def read_geneinfo(path: str | os.PathLike) -> pd.DataFrame:
    """Landmark genes, in file order, as columns ``gene_id`` (Entrez id, str) and ``gene_symbol``.

    ``geneinfo_beta.txt`` marks landmarks by ``feature_space == 'landmark'``; GSE92742
    ``gene_info.txt`` by ``pr_is_lm == 1``.
    """
    path = Path(path)
    frame = _read_table(path, "gene info")
    if "feature_space" in frame.columns:
        frame = _pick(
            frame, path, "gene info", {"gene_id": ("gene_id",), "gene_symbol": ("gene_symbol",)}
        )
        frame = frame[frame["feature_space"].str.strip().str.lower() == "landmark"]
    elif "pr_is_lm" in frame.columns:
        frame = _pick(
            frame,
            path,
            "gene info",
            {"gene_id": ("pr_gene_id",), "gene_symbol": ("pr_gene_symbol",)},
        )
        frame = frame[frame["pr_is_lm"].str.strip().isin({"1", "1.0", "True", "true"})]
    else:
        raise DeeppertError(
            f"{path}: gene info table has neither 'feature_space' (geneinfo_beta.txt) "
            "nor 'pr_is_lm' (gene_info.txt), so landmark genes cannot be told apart"
        )
    frame = frame[["gene_id", "gene_symbol"]].apply(lambda c: c.str.strip())
    if frame.empty:
        raise DeeppertError(f"{path}: gene info table marks no landmark genes")
    for col in ("gene_id", "gene_symbol"):
        dup = frame[col][frame[col].duplicated()]
        if len(dup):
            raise DeeppertError(f"{path}: duplicated landmark {col} {dup.iloc[0]!r} in gene info")
    return frame.reset_index(drop=True)


def read_compoundinfo(path: str | os.PathLike) -> pd.DataFrame:
    """One row per ``pert_id`` with ``compound_name`` and ``canonical_smiles`` (None where absent).

    ``compoundinfo_beta.txt`` repeats a compound once per target; the first non-missing
    SMILES (and name) of each ``pert_id`` is kept. GSE92742 ``pert_info.txt`` writes -666
    for a missing value.
    """
    path = Path(path)
    frame = _read_table(path, "compound info")
    frame = _pick(
        frame,
        path,
        "compound info",
        {
            "pert_id": ("pert_id",),
            "compound_name": ("cmap_name", "pert_iname"),
            "canonical_smiles": ("canonical_smiles",),
        },
    )
    frame = frame[["pert_id", "compound_name", "canonical_smiles"]].apply(lambda c: c.str.strip())
    frame = frame.mask(frame.isin(_MISSING))
    return frame.groupby("pert_id", sort=False, as_index=False).first()
