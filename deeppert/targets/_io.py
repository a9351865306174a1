"""Readers for the target-combination inputs: the ensemble gene-importance matrix and user gene lists."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from deeppert.errors import DeeppertError

__all__ = ["load_weights", "validate_weights", "read_gene_list"]

_TEXT_SUFFIXES = {".tsv": "\t", ".txt": "\t", ".csv": ","}
_PARQUET_SUFFIXES = {".parquet", ".pq"}


def load_weights(path: str | os.PathLike) -> pd.DataFrame:
    """Read an ensemble gene-importance matrix (clusters as rows, genes as columns).

    TSV/TXT (tab), CSV (comma) or Parquet, chosen by suffix; the first text column is the
    cluster id. A ``dose`` column is dropped, as in the reference. The result is validated
    with :func:`validate_weights`.
    """
    path = Path(path)
    if not path.is_file():
        raise DeeppertError(f"{path}: weights file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in _PARQUET_SUFFIXES:
            frame = pd.read_parquet(path)
        elif suffix in _TEXT_SUFFIXES:
            frame = pd.read_csv(path, sep=_TEXT_SUFFIXES[suffix], index_col=0)
        else:
            raise DeeppertError(
                f"{path}: unknown weights format {suffix!r} (use .tsv, .txt, .csv or .parquet)"
            )
    except DeeppertError:
        raise
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DeeppertError(f"{path}: cannot read weights: {exc}") from exc
    return validate_weights(frame, source=str(path))


def validate_weights(weights: pd.DataFrame, *, source: str = "<weights>") -> pd.DataFrame:
    """Check a clusters x genes frame and return a clean float copy.

    Drops ``dose``; requires >= 2 clusters, >= 2 genes, numeric finite non-negative values,
    unique cluster ids and gene symbols unique ignoring case (genes are matched
    case-insensitively). Cluster ids become strings, as the reference does before scaling.

    Target combination ranks genes by their summed importance, so weights must be
    importances (``ensemble_weights.parquet``, the reference's OV7 table): signed loadings
    would rank a program's negatively loaded genes last, and are refused.
    """
    if not isinstance(weights, pd.DataFrame):
        raise DeeppertError(f"{source}: expected a DataFrame, got {type(weights).__name__}")
    frame = weights.drop(columns="dose") if "dose" in weights.columns else weights
    if frame.shape[0] < 2 or frame.shape[1] < 2:
        raise DeeppertError(
            f"{source}: need >= 2 clusters (rows) and >= 2 genes (columns), got shape {frame.shape}"
        )
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise DeeppertError(f"{source}: non-numeric gene column(s) {bad[:5]}")
    values = frame.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        row, col = np.argwhere(~np.isfinite(values))[0]
        raise DeeppertError(
            f"{source}: non-finite value at cluster {frame.index[row]!r}, gene {frame.columns[col]!r}"
        )
    if (values < 0).any():
        row, col = np.argwhere(values < 0)[0]
        raise DeeppertError(
            f"{source}: {int((values < 0).sum())} negative gene weights (first at cluster "
            f"{frame.index[row]!r}, gene {frame.columns[col]!r}); targets needs non-negative "
            "importances: pass the ensemble's ensemble_weights.parquet, not its signed "
            "ensemble_loadings.parquet (or take absolute values)"
        )
    genes = [str(g).strip() for g in frame.columns]
    lower = pd.Series([g.lower() for g in genes])
    if lower.duplicated().any():
        dup = sorted(set(lower[lower.duplicated()]))[:5]
        raise DeeppertError(f"{source}: duplicate gene symbol(s) (ignoring case) {dup}")
    clusters = [str(c) for c in frame.index]
    if len(set(clusters)) != len(clusters):
        raise DeeppertError(f"{source}: duplicate cluster id(s) in the row index")
    if set(clusters) & {"Average_Importance", "Total_Importance"}:
        raise DeeppertError(f"{source}: a cluster id clashes with a summary column name")
    return pd.DataFrame(values, index=pd.Index(clusters), columns=pd.Index(genes))


def read_gene_list(path: str | os.PathLike) -> list[str]:
    """Read a user gene list: a ``SYMBOL`` column if present (any case), else the first column.

    CSV is comma-separated, TSV/TXT tab-separated; a UTF-8 byte-order mark is tolerated. The
    first line is a header, except in a one-column ``.txt`` file whose first line is not
    ``SYMBOL``: that is read as one gene per line. Blanks are dropped, duplicates (ignoring
    case) keep their first spelling.
    """
    path = Path(path)
    if not path.is_file():
        raise DeeppertError(f"{path}: gene list not found")
    suffix = path.suffix.lower()
    if suffix not in _TEXT_SUFFIXES:
        raise DeeppertError(f"{path}: unknown gene-list format {suffix!r} (use .csv, .tsv or .txt)")
    sep = _TEXT_SUFFIXES[suffix]
    try:
        raw = pd.read_csv(
            path, sep=sep, header=None, dtype=str, encoding="utf-8-sig", skip_blank_lines=True
        )
    except pd.errors.EmptyDataError as exc:
        raise DeeppertError(f"{path}: gene list is empty") from exc
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DeeppertError(f"{path}: cannot read gene list: {exc}") from exc
    header = [str(h).strip() for h in raw.iloc[0].tolist()]
    symbol_cols = [i for i, h in enumerate(header) if h.upper() == "SYMBOL"]
    if symbol_cols:
        column, body = symbol_cols[0], raw.iloc[1:]
    elif suffix == ".txt" and raw.shape[1] == 1:
        column, body = 0, raw
    else:
        column, body = 0, raw.iloc[1:]
    genes: list[str] = []
    seen: set[str] = set()
    for value in body.iloc[:, column].tolist():
        if not isinstance(value, str):
            continue
        gene = value.strip()
        if gene and gene.lower() not in seen:
            seen.add(gene.lower())
            genes.append(gene)
    if not genes:
        raise DeeppertError(f"{path}: no gene symbols in column {header[column]!r}")
    return genes
