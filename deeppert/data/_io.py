"""Load and save signature matrices: one validation path for CSV, TSV, Parquet, h5ad and GCTX.

Each format only *reads* its file into a :class:`_Raw` table (column names exactly as in the
file, repeats included, plus any row ids / row annotations the format carries); everything
else (choosing gene and id columns, LINCS selection, numeric and finiteness checks, size
limits) happens once, in :func:`_assemble`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from deeppert.atomic import atomic_path
from deeppert.data._gctx import read_gctx
from deeppert.data._lincs import read_compoundinfo, read_geneinfo, read_siginfo, select_signatures
from deeppert.data._signatures import Signatures, landmark_genes
from deeppert.errors import DeeppertError

__all__ = ["Format", "load_signatures", "save_signatures", "describe", "infer_format"]

log = logging.getLogger(__name__)

Format = Literal["csv", "tsv", "parquet", "h5ad", "gctx"]
_SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".h5ad": "h5ad",
    ".gctx": "gctx",
}
# Id column preference when none is named: our own files, then the reference's SMILES index.
_ID_PREFERENCE = ("sample_id", "canonical_smiles")
# Key of the Parquet schema metadata that save_signatures writes (genes, id column).
_PARQUET_KEY = b"deeppert"


@dataclass
class _Raw:
    """A file as read, before any interpretation."""

    names: list[str]  # column names in file order, repeats kept
    frame: pd.DataFrame  # columns are positions 0..len(names)-1
    row_ids: np.ndarray | None = None  # ids the format itself carries (h5ad, GCTX)
    row_meta: pd.DataFrame | None = None  # per-row annotations the format carries (h5ad obs)
    gene_columns: list[str] | None = None  # gene columns the file declares (our Parquet)
    id_column: str | None = None  # id column the file declares (our Parquet)


def infer_format(path: str | os.PathLike) -> Format:
    """The format named by ``path``'s suffix (``.csv``, ``.tsv``/``.txt``, ``.parquet``, ``.h5ad``, ``.gctx``)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise DeeppertError(
            f"{path}: cannot infer the format from suffix {suffix!r}; "
            f"use one of {', '.join(sorted(_SUFFIXES))} or pass format="
        )
    return _SUFFIXES[suffix]


# ----------------------------------------------------------------------------- readers


def _read_text(path: Path, sep: str, str_columns: Sequence[str]) -> _Raw:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        try:
            header = next(csv.reader(fh, delimiter=sep))
        except StopIteration:
            raise DeeppertError(f"{path}: file is empty") from None
    names = [h.strip() or f"Unnamed: {i}" for i, h in enumerate(header)]
    dtype = {i: str for i, n in enumerate(names) if n in str_columns}
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            header=0,
            names=list(range(len(names))),
            dtype=dtype,
            float_precision="round_trip",
            low_memory=False,
            encoding="utf-8-sig",
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise DeeppertError(
            f"{path}: cannot parse as {'CSV' if sep == ',' else 'TSV'}: {exc}"
        ) from exc
    return _Raw(names, frame)


def _read_parquet(path: Path) -> _Raw:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DeeppertError(f"{path}: cannot read as Parquet: {exc}") from exc
    declared = (table.schema.metadata or {}).get(_PARQUET_KEY)
    names = list(table.column_names)
    table = table.replace_schema_metadata(None).rename_columns([str(i) for i in range(len(names))])
    frame = table.to_pandas()
    frame.columns = range(len(names))
    names = ["Unnamed: index" if n == "__index_level_0__" else n for n in names]
    raw = _Raw(names, frame)
    if declared is not None:
        spec = json.loads(declared)
        raw.gene_columns, raw.id_column = spec["genes"], spec["id_column"]
    return raw


def _read_h5ad(path: Path) -> _Raw:
    import anndata

    try:
        adata = anndata.read_h5ad(path)
    except Exception as exc:  # h5py/anndata raise several unrelated types for a bad file
        raise DeeppertError(f"{path}: cannot read as AnnData .h5ad: {exc}") from exc
    x = adata.X
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    meta = adata.obs.reset_index(drop=True) if adata.obs.shape[1] else None
    return _Raw(
        [str(v) for v in adata.var_names],
        pd.DataFrame(x),
        row_ids=np.asarray(adata.obs_names, dtype=str),
        row_meta=meta,
    )


# ----------------------------------------------------------------------------- public API


def load_signatures(
    path: str | os.PathLike,
    *,
    format: Format | None = None,
    gene_columns: Sequence[str] | None = None,
    id_column: str | None = None,
    fill_missing: bool = False,
    min_rows: int = 10,
    min_genes: int = 10,
    cell_line: str | None = None,
    siginfo: str | os.PathLike | None = None,
    geneinfo: str | os.PathLike | None = None,
    compoundinfo: str | os.PathLike | None = None,
) -> Signatures:
    """Load a samples x genes perturbation matrix and validate it.

    Parameters
    ----------
    path
        CSV, TSV (``.tsv``/``.txt``), Parquet, AnnData ``.h5ad`` or L1000 ``.gctx`` file.
    format
        Overrides the format inferred from the suffix.
    gene_columns
        The gene columns, in the order wanted. Default: the columns that are L1000
        landmark symbols (or, with ``geneinfo``, landmark Entrez ids or symbols); if there
        are none, every numeric column (logged). Files written by :func:`save_signatures`
        name their own gene columns.
    id_column
        Column holding the sample ids. Default: ``sample_id``, else ``canonical_smiles``,
        else the first non-gene text column, else the row position. h5ad and GCTX carry
        their own ids (obs names, signature ids). Repeated ids are kept apart.
    fill_missing
        Replace missing values (NaN) in gene columns with 0, as the reference did.
        Infinite values are always an error.
    min_rows, min_genes
        Fewer samples or genes than this is an error.
    cell_line, siginfo
        LINCS signature info (``siginfo_beta.txt`` / ``sig_info.txt``): keep only compound
        treatments (``trt_cp``) of ``cell_line`` and add the signature annotations to the
        metadata. Sample ids must be ``sig_id`` values.
    geneinfo
        LINCS gene info (``geneinfo_beta.txt`` / ``gene_info.txt``): keep the landmark
        genes and name them by symbol.
    compoundinfo
        LINCS compound info (``compoundinfo_beta.txt`` / ``pert_info.txt``): index rows by
        compound (canonical SMILES where known, else ``pert_id``); the signature id,
        compound name and SMILES go to the metadata. Needs ``siginfo`` (for ``pert_id``).

    Raises
    ------
    DeeppertError
        Naming the file and the row (id and 0-based position) or column at fault: a
        missing file, a non-numeric or non-finite value in a gene column, duplicated gene
        columns, too few rows or genes, an unknown id/gene column, bad LINCS tables.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise DeeppertError(f"{source}: file not found")
    fmt = format or infer_format(path)
    if fmt not in _SUFFIXES.values():
        raise DeeppertError(
            f"{source}: unknown format {fmt!r}; use one of {sorted(set(_SUFFIXES.values()))}"
        )
    if cell_line is not None and siginfo is None:
        raise DeeppertError(
            f"{source}: selecting cell line {cell_line!r} needs siginfo (signature info table)"
        )
    if compoundinfo is not None and siginfo is None:
        raise DeeppertError(
            f"{source}: compoundinfo needs siginfo to map signatures to compounds (pert_id)"
        )

    sig_table = None
    if siginfo is not None:
        sig_table = select_signatures(read_siginfo(siginfo), cell_line, source=str(siginfo))
    gene_table = read_geneinfo(geneinfo) if geneinfo is not None else None
    cpd_table = read_compoundinfo(compoundinfo) if compoundinfo is not None else None

    if fmt in ("csv", "tsv"):
        wanted_str = [id_column] if id_column else list(_ID_PREFERENCE)
        raw = _read_text(path, "," if fmt == "csv" else "\t", wanted_str)
    elif fmt == "parquet":
        raw = _read_parquet(path)
    elif fmt == "h5ad":
        raw = _read_h5ad(path)
    else:
        hint = set(landmark_genes())
        if gene_table is not None:
            hint = set(gene_table["gene_id"]) | set(gene_table["gene_symbol"])
        wanted_genes = list(gene_columns) if gene_columns is not None else None
        if wanted_genes is None and gene_table is not None:
            wanted_genes = list(gene_table["gene_id"]) + list(gene_table["gene_symbol"])
        values, ids, genes = read_gctx(
            path,
            sample_ids=None if sig_table is None else sig_table["sig_id"],
            gene_ids=wanted_genes,
            gene_hint=hint,
        )
        raw = _Raw(genes, pd.DataFrame(values), row_ids=ids)
    return _assemble(
        raw,
        source,
        gene_columns=gene_columns,
        id_column=id_column,
        fill_missing=fill_missing,
        min_rows=min_rows,
        min_genes=min_genes,
        sig_table=sig_table,
        gene_table=gene_table,
        cpd_table=cpd_table,
    )


# ----------------------------------------------------------------------------- the one path


def _choose_genes(
    raw: _Raw, source: str, gene_columns: Sequence[str] | None, gene_table: pd.DataFrame | None
) -> tuple[list[int], list[str]]:
    """Positions of the gene columns and their output names (symbols)."""
    names = raw.names
    rename: dict[str, str] = {}
    if gene_columns is None and raw.gene_columns is not None:
        gene_columns = raw.gene_columns
    if gene_columns is not None:
        wanted = [str(g) for g in gene_columns]
        dup = pd.Index(wanted)[pd.Index(wanted).duplicated()]
        if len(dup):
            raise DeeppertError(f"{source}: gene column {dup[0]!r} requested twice")
        missing = [g for g in wanted if g not in names]
        if missing:
            raise DeeppertError(
                f"{source}: gene column(s) not found: {', '.join(map(repr, missing[:10]))}"
                f"{' ...' if len(missing) > 10 else ''}"
            )
        chosen = set(wanted)
    elif gene_table is not None:
        by_id = dict(zip(gene_table["gene_id"], gene_table["gene_symbol"], strict=True))
        symbols = set(gene_table["gene_symbol"])
        chosen = {n for n in names if n in by_id or n in symbols}
        rename = {n: by_id[n] for n in chosen if n in by_id}
        if not chosen:
            raise DeeppertError(
                f"{source}: no column matches a landmark gene id or symbol of the gene info table"
            )
    else:
        lm = set(landmark_genes())
        chosen = {n for n in names if n in lm}
        if not chosen:
            chosen = {
                n
                for i, n in enumerate(names)
                if pd.api.types.is_numeric_dtype(raw.frame[i])
                and not pd.api.types.is_bool_dtype(raw.frame[i])
            }
            log.info(
                "%s: no L1000 landmark symbol among the columns; using all %d numeric columns as genes "
                "(pass gene_columns to choose)",
                source,
                len(chosen),
            )
    positions = [i for i, n in enumerate(names) if n in chosen]
    out_names = [rename.get(names[i], names[i]) for i in positions]
    counts = pd.Index(out_names).value_counts()
    if (counts > 1).any():
        gene = counts.index[counts > 1][0]
        where = [i for i, n in zip(positions, out_names, strict=True) if n == gene]
        raise DeeppertError(f"{source}: duplicated gene column {gene!r} (column positions {where})")
    if gene_columns is not None:  # the order asked for
        order = {g: k for k, g in enumerate(gene_columns)}
        pairs = sorted(zip(positions, out_names, strict=True), key=lambda p: order[names[p[0]]])
        positions, out_names = [p for p, _ in pairs], [n for _, n in pairs]
    return positions, out_names


def _choose_ids(
    raw: _Raw, source: str, id_column: str | None, gene_pos: list[int]
) -> tuple[np.ndarray, int | None]:
    """Sample ids and the position of the column they came from (None: row ids or positions)."""
    n = len(raw.frame)
    id_column = id_column or raw.id_column
    pos: int | None = None
    if id_column is not None:
        hits = [i for i, name in enumerate(raw.names) if name == id_column]
        if not hits:
            if raw.row_ids is not None:
                raise DeeppertError(
                    f"{source}: id column {id_column!r} not found (this format carries its own ids)"
                )
            raise DeeppertError(f"{source}: id column {id_column!r} not found")
        if len(hits) > 1:
            raise DeeppertError(f"{source}: id column {id_column!r} appears {len(hits)} times")
        pos = hits[0]
    elif raw.row_ids is not None:
        return np.asarray(raw.row_ids, dtype=str), None
    else:
        genes = set(gene_pos)
        for name in _ID_PREFERENCE:
            hits = [i for i, nm in enumerate(raw.names) if nm == name and i not in genes]
            if hits:
                pos = hits[0]
                break
        else:
            pos = next(
                (
                    i
                    for i in range(len(raw.names))
                    if i not in genes
                    and not raw.names[i].startswith("Unnamed: ")
                    and (
                        pd.api.types.is_object_dtype(raw.frame[i])
                        or pd.api.types.is_string_dtype(raw.frame[i])
                    )
                ),
                None,
            )
    if pos is None:
        log.info("%s: no id column; using row positions as sample ids", source)
        return np.arange(n).astype(str), None
    if pos in gene_pos:
        raise DeeppertError(f"{source}: id column {raw.names[pos]!r} is also a gene column")
    col = raw.frame[pos]
    missing = col.isna().to_numpy()
    if missing.any():
        r = int(np.flatnonzero(missing)[0])
        raise DeeppertError(f"{source}: missing sample id in column {raw.names[pos]!r} at row {r}")
    return col.astype(str).to_numpy(), pos


def _numeric(
    frame: pd.DataFrame, names: list[str], ids: np.ndarray, source: str, fill_missing: bool
) -> np.ndarray:
    """Gene columns as float64, with every bad cell reported by column, row and id."""
    cols = []
    for j, name in zip(frame.columns, names, strict=True):
        col = frame[j]
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            conv = pd.to_numeric(col, errors="coerce")
            bad = (conv.isna() & col.notna()).to_numpy()
            if pd.api.types.is_bool_dtype(col):
                bad = np.ones(len(col), dtype=bool)
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                raise DeeppertError(
                    f"{source}: non-numeric value {col.iloc[r]!r} in gene column {name!r} "
                    f"at row {r} (id {ids[r]!r})"
                )
            col = conv
        cols.append(col.to_numpy(dtype=np.float64, na_value=np.nan))
    values = np.column_stack(cols) if cols else np.empty((len(ids), 0))
    inf = np.isinf(values)
    if inf.any():
        r, c = np.argwhere(inf)[0]
        raise DeeppertError(
            f"{source}: infinite value {values[r, c]} in gene column {names[c]!r} at row {r} (id {ids[r]!r})"
        )
    nan = np.isnan(values)
    if nan.any():
        if not fill_missing:
            r, c = np.argwhere(nan)[0]
            raise DeeppertError(
                f"{source}: {int(nan.sum())} missing value(s) (NaN), first in gene column {names[c]!r} "
                f"at row {r} (id {ids[r]!r}); pass fill_missing=True (--fill-missing) to fill them with 0"
            )
        log.warning("%s: filled %d missing value(s) with 0", source, int(nan.sum()))
        values[nan] = 0.0
    return values


def _assemble(
    raw: _Raw,
    source: str,
    *,
    gene_columns: Sequence[str] | None,
    id_column: str | None,
    fill_missing: bool,
    min_rows: int,
    min_genes: int,
    sig_table: pd.DataFrame | None,
    gene_table: pd.DataFrame | None,
    cpd_table: pd.DataFrame | None,
) -> Signatures:
    if id_column is not None and raw.row_meta is not None and id_column in raw.row_meta.columns:
        # h5ad: ids from an obs column instead of obs_names
        raw = replace(
            raw,
            row_ids=raw.row_meta[id_column].astype(str).to_numpy(),
            row_meta=raw.row_meta.drop(columns=[id_column]),
        )
        id_column = None
    gene_pos, genes = _choose_genes(raw, source, gene_columns, gene_table)
    ids, id_pos = _choose_ids(raw, source, id_column, gene_pos)
    meta_pos = [i for i in range(len(raw.names)) if i not in set(gene_pos) and i != id_pos]
    meta = raw.frame[meta_pos].set_axis([raw.names[i] for i in meta_pos], axis=1)
    if raw.row_meta is not None:
        meta = pd.concat([meta, raw.row_meta.reset_index(drop=True)], axis=1)
    meta = meta.reset_index(drop=True)
    rows = np.arange(len(ids))

    if sig_table is not None:  # ids are LINCS signature ids: select and annotate
        found = pd.Index(sig_table["sig_id"]).get_indexer(ids)
        rows = np.flatnonzero(found >= 0)
        if len(rows) == 0:
            raise DeeppertError(
                f"{source}: no sample id matches a selected sig_id of the signature info table"
            )
        ann = sig_table.iloc[found[rows]].reset_index(drop=True)
        meta = meta.iloc[rows].reset_index(drop=True)
        meta = pd.concat(
            [meta, ann.drop(columns=[c for c in ann.columns if c in meta.columns])], axis=1
        )
        ids = ids[rows]
        if cpd_table is not None:
            cpd = cpd_table.set_index("pert_id").reindex(meta["pert_id"])
            smiles = cpd["canonical_smiles"].to_numpy(dtype=object)
            meta["compound_name"] = cpd["compound_name"].to_numpy(dtype=object)
            meta["canonical_smiles"] = smiles
            has = pd.notna(smiles)
            ids = np.where(has, smiles, meta["pert_id"].to_numpy(dtype=object)).astype(str)
            log.info(
                "%s: %d of %d signatures indexed by canonical SMILES, the rest by pert_id",
                source,
                int(has.sum()),
                len(ids),
            )

    frame = raw.frame.iloc[rows, gene_pos] if len(rows) != len(raw.frame) else raw.frame[gene_pos]
    values = _numeric(frame, genes, ids, source, fill_missing)
    if values.shape[0] < min_rows:
        raise DeeppertError(
            f"{source}: {values.shape[0]} row(s), fewer than the minimum {min_rows}"
        )
    if values.shape[1] < min_genes:
        raise DeeppertError(
            f"{source}: {values.shape[1]} gene column(s), fewer than the minimum {min_genes}"
        )
    return Signatures(values, ids, genes, meta if meta.shape[1] else None, source)


# ----------------------------------------------------------------------------- writing


def save_signatures(
    sig: Signatures, path: str | os.PathLike, *, format: Literal["parquet", "csv"] | None = None
) -> Path:
    """Write ``sig`` atomically to Parquet (or CSV): ``sample_id``, the genes, then the metadata.

    Parquet files also record which columns are genes, so they load back exactly (ids,
    repeats included, genes, values) whatever the gene names. A CSV loads back exactly
    when its genes are landmark symbols or its metadata has no numeric column (otherwise
    pass ``gene_columns`` when loading).
    """
    path = Path(path)
    fmt = format or infer_format(path)
    if fmt not in ("parquet", "csv"):
        raise DeeppertError(f"{path}: save_signatures writes parquet or csv, not {fmt}")
    frame = pd.DataFrame(sig.values, columns=sig.genes)
    frame.insert(0, "sample_id", sig.sample_ids.astype(str))
    if sig.metadata is not None:
        clash = [c for c in sig.metadata.columns if str(c) in set(frame.columns)]
        if clash:
            raise DeeppertError(
                f"{path}: metadata column(s) {clash} clash with sample_id or a gene name"
            )
        frame = pd.concat(
            [
                frame,
                sig.metadata.reset_index(drop=True).set_axis(
                    [str(c) for c in sig.metadata.columns], axis=1
                ),
            ],
            axis=1,
        )
    if fmt == "csv":
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    spec = json.dumps({"genes": list(sig.genes), "id_column": "sample_id"}).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _PARQUET_KEY: spec})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def describe(sig: Signatures) -> dict[str, Any]:
    """A JSON-ready summary for ``deeppert info``: size, repeated ids, landmark coverage, value range."""
    ids = pd.Series(sig.sample_ids)
    lm = set(landmark_genes())
    n_lm = sum(g in lm for g in sig.genes)
    v = sig.values
    return {
        "source": sig.source,
        "rows": sig.n_samples,
        "genes": sig.n_genes,
        "unique_ids": int(ids.nunique()),
        "duplicated_id_rows": int(ids.duplicated(keep=False).sum()),
        "landmark_genes": n_lm,
        "landmark_coverage": n_lm / len(lm),
        "value_min": float(v.min()) if v.size else None,
        "value_max": float(v.max()) if v.size else None,
        "value_mean": float(v.mean()) if v.size else None,
        "value_std": float(v.std()) if v.size else None,
        "metadata_columns": [] if sig.metadata is None else [str(c) for c in sig.metadata.columns],
        "first_genes": list(sig.genes[:5]),
    }
