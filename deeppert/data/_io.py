"""Load and save signature matrices: one validation path for CSV, TSV, Parquet, h5ad, GCT and GCTX.

Each format only *reads* its file into a :class:`_Raw` table (column names exactly as in the
file, repeats included, plus any row ids / row annotations the format carries); everything
else (choosing gene and id columns, LINCS selection, numeric and finiteness checks, size
limits) happens once, in :func:`_assemble`. GCT/GCTX files carry metadata for both axes, so
their genes and signatures are chosen from it *before* any value is read (bounded memory on
full-size Level 5 files), with the same rules, then pass through :func:`_assemble` too.

Missing values: in a text file only an empty cell or ``NaN``/``nan`` is missing (and needs
``fill_missing``); any other text in a gene column (``n/a``, ``NA``, ``null``) is an error
naming the cell, so a typo or an export artefact is never silently read as missing.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from deeppert.atomic import atomic_path
from deeppert.data._cmap import (
    LANDMARK_FIELDS,
    SYMBOL_FIELDS,
    CMapMatrix,
    data_level,
    landmark_rows,
    open_gctx,
    read_gct,
    write_gct,
)
from deeppert.data._lincs import read_compoundinfo, read_geneinfo, read_siginfo, select_signatures
from deeppert.data._signatures import Signatures, landmark_genes
from deeppert.errors import DeeppertError
from deeppert.file_formats import Format

__all__ = ["Format", "load_signatures", "save_signatures", "describe", "infer_format"]

log = logging.getLogger(__name__)

_SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".h5ad": "h5ad",
    ".gct": "gct",
    ".gctx": "gctx",
}
# Metadata fields that name the cell line / perturbation type (LINCS beta, GSE92742, ours).
CELL_LINE_FIELDS = ("cell_iname", "cell_id", "cell_line")
PERT_TYPE_FIELDS = ("pert_type",)
# Text cells read as missing in gene columns (see the module docstring).
_TEXT_MISSING = ["", "NaN", "nan"]
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
    own_ids_as: str = "row_id"  # metadata column for row_ids when an id column replaces them


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
    kind = "CSV" if sep == "," else "TSV"
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh, delimiter=sep))
        names = [h.strip() or f"Unnamed: {i}" for i, h in enumerate(header)]
        dtype = {i: str for i, n in enumerate(names) if n in str_columns}
        frame = pd.read_csv(
            path,
            sep=sep,
            header=0,
            names=list(range(len(names))),
            dtype=dtype,
            keep_default_na=False,
            na_values=_TEXT_MISSING,
            float_precision="round_trip",
            low_memory=False,
            encoding="utf-8-sig",
        )
    except StopIteration:
        raise DeeppertError(f"{path}: file is empty") from None
    except UnicodeDecodeError as exc:
        raise DeeppertError(
            f"{path}: not a {kind} text file: byte {exc.object[exc.start : exc.start + 1]!r} "
            f"at offset {exc.start} is not UTF-8 (binary file?)"
        ) from None
    except (pd.errors.ParserError, ValueError, csv.Error) as exc:
        raise DeeppertError(f"{path}: cannot parse as {kind}: {exc}") from exc
    return _Raw(names, frame)


def _read_parquet(path: Path) -> _Raw:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DeeppertError(f"{path}: cannot read as Parquet: {_first_line(exc)}") from exc
    twice = pd.Index(names)[pd.Index(names).duplicated()].unique().tolist()
    if twice:
        shown = ", ".join(repr(n) for n in twice[:5]) + (", ..." if len(twice) > 5 else "")
        raise DeeppertError(f"{path}: {len(twice)} column name(s) appear more than once: {shown}")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DeeppertError(f"{path}: cannot read as Parquet: {_first_line(exc)}") from exc
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


def _first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (pyarrow appends whole schemas), at most 300 chars."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


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
        own_ids_as="obs_name",
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
    pert_type: str | None = None,
    siginfo: str | os.PathLike | None = None,
    geneinfo: str | os.PathLike | None = None,
    compoundinfo: str | os.PathLike | None = None,
) -> Signatures:
    """Load a samples x genes perturbation matrix and validate it.

    Parameters
    ----------
    path
        CSV, TSV (``.tsv``/``.txt``), Parquet, AnnData ``.h5ad``, CMap ``.gct`` (1.2, 1.3)
        or ``.gctx`` file.
    format
        Overrides the format inferred from the suffix.
    gene_columns
        The gene columns, in the order wanted. Default: the columns that are L1000
        landmark symbols (or, with ``geneinfo``, landmark Entrez ids or symbols); if there
        are none, every numeric column (logged), unless some column names are landmark
        symbols in the wrong case (an error). GCT/GCTX genes are named by their ids when
        these are landmark symbols or Entrez ids, else by the ``pr_gene_symbol`` /
        ``gene_symbol`` field, landmarks by ``pr_is_lmark``. Files written by
        :func:`save_signatures` name their own gene columns.
    id_column
        Column holding the sample ids. Default: ``sample_id``, else ``canonical_smiles``,
        else the first non-gene text column, else the row position. h5ad, GCT and GCTX carry
        their own ids (obs names, signature ids); naming a metadata field here
        (``pert_iname``, ``pert_id``) indexes rows by it instead, and the file's own ids go
        to the metadata (``sig_id`` / ``obs_name``). Repeated ids are kept apart.
    fill_missing
        Replace missing values (empty or NaN) in gene columns with 0, as the reference did.
        Infinite values and text such as ``n/a`` are always an error.
    min_rows, min_genes
        Fewer samples or genes than this is an error.
    cell_line, pert_type
        Keep only signatures of this cell line / perturbation type (``trt_cp``: compound
        treatments). Read from ``siginfo`` when given (which then keeps ``trt_cp`` unless
        ``pert_type`` says otherwise), else from the file's own metadata (GCTX/GCT column
        fields, h5ad obs, text columns: ``cell_iname``/``cell_id``/``cell_line``,
        ``pert_type``).
    siginfo
        LINCS signature info (``siginfo_beta.txt`` / ``sig_info.txt``): select signatures
        and add their annotations to the metadata. Sample ids must be ``sig_id`` values.
        External tables win over the file's own metadata.
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
        Naming the file and the row (id and 0-based position), column or field at fault:
        a missing or unreadable file, a non-numeric or non-finite value in a gene column,
        duplicated gene columns, too few rows or genes, an unknown id/gene column or
        metadata field (the fields present are listed), gene ids in no known naming scheme,
        a selection matching nothing, GCT header counts disagreeing with the body, bad
        LINCS tables.
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
    if compoundinfo is not None and siginfo is None:
        raise DeeppertError(
            f"{source}: compoundinfo needs siginfo to map signatures to compounds (pert_id)"
        )

    sig_table = None
    if siginfo is not None:
        sig_table = select_signatures(
            read_siginfo(siginfo), cell_line, pert_type=pert_type or "trt_cp", source=str(siginfo)
        )
        cell_line = pert_type = None  # done
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
        opener = open_gctx if fmt == "gctx" else read_gct
        with opener(path, gene_hint=hint) as matrix:
            raw = _read_cmap(matrix, gene_columns, gene_table, sig_table, cell_line, pert_type)
        gene_columns = None  # chosen and declared in raw
        cell_line = pert_type = None  # selected before reading
    return _assemble(
        raw,
        source,
        gene_columns=gene_columns,
        id_column=id_column,
        fill_missing=fill_missing,
        min_rows=min_rows,
        min_genes=min_genes,
        cell_line=cell_line,
        pert_type=pert_type,
        sig_table=sig_table,
        gene_table=gene_table,
        cpd_table=cpd_table,
    )


def _read_cmap(
    m: CMapMatrix,
    gene_columns: Sequence[str] | None,
    gene_table: pd.DataFrame | None,
    sig_table: pd.DataFrame | None,
    cell_line: str | None,
    pert_type: str | None,
) -> _Raw:
    """Choose genes and signatures of a GCT/GCTX from its metadata, then read only those."""
    gene_pos, genes = _cmap_genes(m, gene_columns, gene_table)
    if sig_table is not None:
        rows = np.flatnonzero(np.isin(m.sample_ids, sig_table["sig_id"].to_numpy(dtype=object)))
        if len(rows) == 0:
            raise DeeppertError(
                f"{m.source}: no signature id matches a selected sig_id of the signature info table"
            )
    else:
        rows = _select_rows(
            m.sample_fields, m.sample_field, len(m.sample_ids), cell_line, pert_type, m.source
        )
    values = m.read(rows, gene_pos)
    return _Raw(
        list(genes),
        pd.DataFrame(values, copy=False),
        row_ids=m.sample_ids[rows],
        row_meta=m.sample_meta(rows) if m.sample_fields else None,
        gene_columns=list(genes),
        own_ids_as="sig_id",
    )


def _cmap_genes(
    m: CMapMatrix, gene_columns: Sequence[str] | None, gene_table: pd.DataFrame | None
) -> tuple[np.ndarray, list[str]]:
    """Positions (file order, or the order asked) and names of the genes to read.

    Ids are used as names when they are landmark symbols, known to ``gene_table``, asked for
    by ``gene_columns``, or all Entrez ids; otherwise the symbol field names the genes and
    the landmark flag (else membership in the 978) picks them.
    """
    ids = m.gene_ids
    sym_field = next((f for f in SYMBOL_FIELDS if f in m.gene_meta.columns), None)
    symbols = None if sym_field is None else m.gene_meta[sym_field].astype(str).to_numpy()
    flag_field = next((f for f in LANDMARK_FIELDS if f in m.gene_meta.columns), None)

    if gene_columns is not None:
        wanted = [str(g) for g in gene_columns]
        dup = pd.Index(wanted)[pd.Index(wanted).duplicated()]
        if len(dup):
            raise DeeppertError(f"{m.source}: gene column {dup[0]!r} requested twice")
        for labels in (ids, symbols):
            if labels is not None and set(wanted) <= set(labels):
                counts = pd.Index(labels).value_counts()
                twice = [g for g in wanted if counts[g] > 1]
                if twice:
                    raise DeeppertError(f"{m.source}: gene {twice[0]!r} names several rows")
                return pd.Index(labels).get_indexer(wanted), wanted
        known = set(ids) | (set(symbols) if symbols is not None else set())
        missing = [g for g in wanted if g not in known]
        raise DeeppertError(
            f"{m.source}: gene(s) not found among the gene ids"
            f"{' or ' + sym_field if sym_field else ''}: {', '.join(map(repr, missing[:10]))}"
            f"{' ...' if len(missing) > 10 else ''}"
        )
    if gene_table is not None:
        by_id = dict(zip(gene_table["gene_id"], gene_table["gene_symbol"], strict=True))
        table_syms = set(gene_table["gene_symbol"])
        pos = np.flatnonzero([g in by_id or g in table_syms for g in ids])
        names = [by_id.get(g, g) for g in ids[pos]]
        if not len(pos) and symbols is not None:
            pos = np.flatnonzero(np.isin(symbols, list(table_syms)))
            names = list(symbols[pos])
        if not len(pos):
            raise DeeppertError(
                f"{m.source}: no gene id{' or ' + sym_field if sym_field else ''} matches a "
                "landmark gene id or symbol of the gene info table"
            )
    else:
        lm = list(landmark_genes())
        pos = np.flatnonzero(np.isin(ids, lm))
        names = list(ids[pos])
        if not len(pos) and symbols is not None:
            pos, names, renamed = landmark_rows(m)
            log.info(
                "%s: genes named by %s%s: %d genes",
                m.source,
                sym_field,
                f", landmarks by {flag_field}" if flag_field else " (landmark symbols)",
                len(pos),
            )
            if renamed:
                log.info(
                    "%s: %d previous landmark symbols named as today: %s",
                    m.source,
                    len(renamed),
                    ", ".join(f"{old} -> {new}" for old, new in renamed.items()),
                )
        if not len(pos) and all(g.isdigit() for g in ids):
            pos, names = np.arange(len(ids)), list(ids)
            log.info("%s: gene ids are Entrez ids; pass geneinfo to name them by symbol", m.source)
        if not len(pos):
            raise DeeppertError(
                f"{m.source}: gene ids match no naming scheme (neither L1000 landmark symbols "
                f"nor Entrez ids; first: {', '.join(repr(str(g)) for g in ids[:3])}) and there is no "
                f"{' / '.join(SYMBOL_FIELDS)} field (gene fields: "
                f"{', '.join(map(str, m.gene_meta.columns)) or 'none'}); pass geneinfo "
                "(--geneinfo) or gene_columns (--gene-columns)"
            )
    dup = pd.Index(names)[pd.Index(names).duplicated()]
    if len(dup):
        where = [int(p) for p, n in zip(pos, names, strict=True) if n == dup[0]]
        raise DeeppertError(f"{m.source}: gene {dup[0]!r} names several rows (positions {where})")
    return np.asarray(pos), names


def _select_rows(
    fields: Sequence[str],
    get: Callable[[str], np.ndarray],
    n: int,
    cell_line: str | None,
    pert_type: str | None,
    source: str,
) -> np.ndarray:
    """Positions of the rows whose metadata has ``cell_line`` and ``pert_type`` (all if None)."""
    keep = np.ones(n, dtype=bool)
    for value, options, what in (
        (cell_line, CELL_LINE_FIELDS, "cell line"),
        (pert_type, PERT_TYPE_FIELDS, "perturbation type"),
    ):
        if value is None:
            continue
        field = next((f for f in options if f in fields), None)
        if field is None:
            raise DeeppertError(
                f"{source}: selecting {what} {value!r} needs a metadata field "
                f"{' or '.join(map(repr, options))}; fields present: "
                f"{', '.join(map(str, fields)) or 'none'} (or pass siginfo / --siginfo)"
            )
        col = pd.Series(get(field)).astype(str).to_numpy()
        hit = col == value
        if not hit.any():
            present = pd.Series(col).value_counts().index[:20]
            raise DeeppertError(
                f"{source}: no signature has {field} == {value!r} (present: {', '.join(present)}"
                f"{' ...' if pd.Series(col).nunique() > 20 else ''})"
            )
        keep &= hit
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        raise DeeppertError(
            f"{source}: no signature has cell line {cell_line!r} and perturbation type {pert_type!r}"
        )
    return rows


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
        by_lower = {g.lower(): g for g in lm}
        wrong_case = [n for n in names if n not in lm and n.lower() in by_lower]
        if wrong_case:
            raise DeeppertError(
                f"{source}: {len(wrong_case)} column(s) are L1000 landmark symbols only when case "
                f"is ignored ({', '.join(f'{n!r} for {by_lower[n.lower()]!r}' for n in wrong_case[:3])}"
                f"{' ...' if len(wrong_case) > 3 else ''}); rename them to the official symbols, "
                "or pass gene_columns (--gene-columns) to say which columns are genes"
            )
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
                fields = [] if raw.row_meta is None else [str(c) for c in raw.row_meta.columns]
                raise DeeppertError(
                    f"{source}: id column {id_column!r} not found among the metadata fields "
                    f"({', '.join(fields) or 'none'}; the file's own ids are used by default)"
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


#: The largest magnitude a signature value may have: its square is still finite in float32,
#: the training dtype, so losses and variances cannot overflow.
MAX_SIGNATURE_VALUE = float(np.sqrt(np.finfo(np.float32).max))


def _numeric(
    frame: pd.DataFrame, names: list[str], ids: np.ndarray, source: str, fill_missing: bool
) -> np.ndarray:
    """Gene columns as float (float32 if all are), every bad cell reported by column, row and id."""
    cols = []
    # float32 sources (GCTX, float32 Parquet) stay float32: exact, and half the memory
    dtype = np.float32 if all(frame[j].dtype == np.float32 for j in frame.columns) else np.float64
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
        cols.append(col.to_numpy(dtype=dtype, na_value=np.nan))
    values = np.column_stack(cols) if cols else np.empty((len(ids), 0), dtype=dtype)
    inf = np.isinf(values)
    if inf.any():
        r, c = np.argwhere(inf)[0]
        raise DeeppertError(
            f"{source}: infinite value {values[r, c]} in gene column {names[c]!r} at row {r} (id {ids[r]!r})"
        )
    huge = np.abs(values) > MAX_SIGNATURE_VALUE
    if huge.any():
        r, c = np.argwhere(huge)[0]
        raise DeeppertError(
            f"{source}: value {values[r, c]:g} in gene column {names[c]!r} at row {r} "
            f"(id {ids[r]!r}) is out of range ({int(huge.sum())} value(s) beyond "
            f"+-{MAX_SIGNATURE_VALUE:.1e}, where squares overflow in training); signatures are "
            "expected on a z-score or log-fold-change scale"
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
    cell_line: str | None = None,
    pert_type: str | None = None,
) -> Signatures:
    if id_column is not None and raw.row_meta is not None and id_column in raw.row_meta.columns:
        # h5ad / GCT(X): ids from a metadata field instead of the format's own ids, kept aside
        col = raw.row_meta[id_column]
        if col.isna().any():
            r = int(np.flatnonzero(col.isna().to_numpy())[0])
            raise DeeppertError(
                f"{source}: missing value in id field {id_column!r} at row {r} "
                f"({raw.own_ids_as} {raw.row_ids[r]!r})"
            )
        meta = raw.row_meta.drop(columns=[id_column])
        if raw.row_ids is not None and raw.own_ids_as not in meta.columns:
            meta.insert(0, raw.own_ids_as, raw.row_ids)
        raw = replace(raw, row_ids=col.astype(str).to_numpy(), row_meta=meta)
        id_column = None
    gene_pos, genes = _choose_genes(raw, source, gene_columns, gene_table)
    ids, id_pos = _choose_ids(raw, source, id_column, gene_pos)
    meta_pos = [i for i in range(len(raw.names)) if i not in set(gene_pos) and i != id_pos]
    meta = raw.frame[meta_pos].set_axis([raw.names[i] for i in meta_pos], axis=1)
    if raw.row_meta is not None:
        meta = pd.concat([meta, raw.row_meta.reset_index(drop=True)], axis=1)
    meta = meta.reset_index(drop=True)
    rows = np.arange(len(ids))

    if sig_table is None and (cell_line is not None or pert_type is not None):
        rows = _select_rows(
            list(meta.columns), lambda f: meta[f].to_numpy(), len(ids), cell_line, pert_type, source
        )
        meta, ids = meta.iloc[rows].reset_index(drop=True), ids[rows]
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
    sig: Signatures,
    path: str | os.PathLike,
    *,
    format: Literal["parquet", "csv", "gct"] | None = None,
) -> Path:
    """Write ``sig`` atomically to Parquet, CSV or GCT 1.3: ids, genes, metadata.

    Parquet and CSV: ``sample_id``, the genes, then the metadata columns. GCT 1.3: genes as
    rows, signatures as columns, the metadata as column fields (CMap's layout).

    Parquet files also record which columns are genes, so they load back exactly (ids,
    repeats included, genes, values) whatever the gene names. A CSV loads back exactly
    when its genes are landmark symbols or its metadata has no numeric column (otherwise
    pass ``gene_columns`` when loading).
    """
    path = Path(path)
    fmt = format or infer_format(path)
    if fmt not in ("parquet", "csv", "gct"):
        raise DeeppertError(f"{path}: save_signatures writes parquet, csv or gct, not {fmt}")
    if fmt == "gct":
        with atomic_path(path) as tmp:
            write_gct(tmp, sig.values, list(sig.sample_ids), sig.genes, sig.metadata)
        return path
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


def describe(sig: Signatures, *, top: int = 3) -> dict[str, Any]:
    """A JSON-ready summary for ``deeppert info``: size, repeated ids, landmark coverage, value
    range, and per metadata field its distinct values and ``top`` most frequent values."""
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
        "metadata": {} if sig.metadata is None else _field_summary(sig.metadata, top),
        "first_genes": list(sig.genes[:5]),
        "level_warning": data_level([] if sig.metadata is None else sig.metadata.columns, v),
    }


def _field_summary(meta: pd.DataFrame, top: int) -> dict[str, dict[str, Any]]:
    """Per metadata field: distinct values, missing count and the ``top`` most frequent values."""
    out = {}
    for name in meta.columns:
        col = meta[name]
        counts = col.astype(str)[col.notna()].value_counts()
        out[str(name)] = {
            "distinct": int(col.nunique(dropna=True)),
            "missing": int(col.isna().sum()),
            "top": [[str(v), int(c)] for v, c in counts.iloc[:top].items()],
        }
    return out
