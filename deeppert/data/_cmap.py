"""CMap matrices: GCTX (HDF5) and GCT 1.2 / 1.3 text, with the metadata of both axes.

A file is first *opened* as a :class:`CMapMatrix`: the ids and metadata fields of the gene
axis and of the signature axis, but no values. The caller chooses genes and signatures from
that metadata, then :meth:`CMapMatrix.read` reads only those cells. For GCTX this reads the
HDF5 dataset in bands of whole chunks along the signature axis, in file order, so a
selection from a 23 GB Level 5 file never holds more than one band plus the result.

GCTX layout (cmapM / cmapR / cmapPy): the matrix is ``0/DATA/0/matrix``, the ids
``0/META/ROW/id`` and ``0/META/COL/id``, every other dataset under ``0/META/ROW`` or
``0/META/COL`` is a metadata field (``pr_gene_symbol``, ``pr_is_lmark``, ``cell_id``,
``pert_iname`` ...). In Broad files ROW ids are genes (Entrez or Affymetrix probe ids) and the
HDF5 dataset has shape ``(n COL ids, n ROW ids)``; files written the other way round exist,
so the gene axis is found from ids and fields, and the dataset axes by shape.
CMap writes ``-666`` for a missing metadata value; it is read as missing.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from deeppert.data._signatures import landmark_genes
from deeppert.errors import DeeppertError

__all__ = [
    "CMapMatrix",
    "open_gctx",
    "read_gct",
    "write_gct",
    "SYMBOL_FIELDS",
    "LANDMARK_FIELDS",
    "ENTREZ_FIELDS",
    "landmark_renames",
    "current_symbols",
    "landmark_rows",
    "data_level",
    "MATRIX",
    "ROW_IDS",
    "COL_IDS",
]

log = logging.getLogger(__name__)

MATRIX = "0/DATA/0/matrix"
ROW_META, COL_META = "0/META/ROW", "0/META/COL"
ROW_IDS, COL_IDS = f"{ROW_META}/id", f"{COL_META}/id"
# Gene-axis fields holding gene symbols / the landmark flag, in order of preference.
SYMBOL_FIELDS = ("pr_gene_symbol", "gene_symbol")
LANDMARK_FIELDS = ("pr_is_lmark", "pr_is_lm", "is_landmark")
# Gene-axis fields holding the Entrez gene id.
ENTREZ_FIELDS = ("pr_gene_id", "gene_id")
# Signature-axis fields of a replicate well, and of a consensus signature (Level 5: the wells
# it was computed from). Wells without consensus fields are Level 3 or 4 instances.
_WELL_FIELDS = ("det_well", "rna_well")
_CONSENSUS_FIELDS = ("distil_id", "distil_ids", "distil_nsample", "distil_cc_q75", "nsample",
                     "cc_q75", "pct_self_rank_q25")  # fmt: skip
_MISSING = ("-666", "-666.0", "-666.000")
# Cells of a GCT matrix read as missing (NaN); any other text is an error, ``n/a`` included.
_GCT_MISSING = ("", "NA", "NaN", "nan", "-666")
_BAND_BYTES = 32 * 2**20  # rows per read when the dataset is not chunked


def _decode(raw: np.ndarray) -> np.ndarray:
    """HDF5 strings (fixed or variable length bytes) as an object array of stripped str;
    numbers stay numbers. ``-666`` becomes missing."""
    raw = np.ravel(raw)
    if raw.dtype.kind in "iuf":
        out = raw.astype(np.float64) if raw.dtype.kind == "f" else raw
        if np.any(out == -666):
            out = np.where(out == -666, np.nan, out.astype(np.float64))
        return out
    vals = np.array(
        [(x.decode("utf-8") if isinstance(x, bytes) else str(x)).strip() for x in raw],
        dtype=object,
    )
    vals[np.isin(vals, _MISSING)] = None
    return vals


def is_landmark_flag(values: np.ndarray) -> np.ndarray:
    """``pr_is_lmark`` as booleans: CMap writes ``Y``/``N``, gene_info.txt ``1``/``0``."""
    s = pd.Series(values).astype(str).str.strip().str.lower()
    return s.isin({"y", "yes", "1", "1.0", "true"}).to_numpy()


@cache
def landmark_renames() -> tuple[tuple[str, str, str], ...]:
    """``(previous symbol, current symbol, Entrez id)`` of the landmark genes renamed since the
    CMap annotation of GSE92742 (``landmark_renames.txt``); current = the 978 list's name."""
    text = resources.files("deeppert.data").joinpath("landmark_renames.txt").read_text()
    rows = [ln.split("\t") for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert rows[0] == ["old_symbol", "symbol", "entrez_id"], rows[0]
    return tuple((old, new, entrez) for old, new, entrez in rows[1:])


def _entrez(value: object) -> str | None:
    """An Entrez id as digits (``976``, ``976.0`` and ``b"976"`` alike), else None."""
    text = value.decode() if isinstance(value, bytes) else str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return None
    return str(int(number)) if number == number and number == int(number) else None


def current_symbols(
    symbols: Sequence[str], entrez_ids: Sequence[object] | None = None
) -> tuple[list[str], dict[str, str]]:
    """``symbols`` named as in the 978 landmark list, and ``{previous: current}`` of those
    renamed: a symbol outside the list is looked up by its Entrez id (when given), then by
    its previous symbol, in :func:`landmark_renames`; others are kept."""
    landmarks = set(landmark_genes())
    by_entrez = {entrez: new for _, new, entrez in landmark_renames()}
    by_old = {old: new for old, new, _ in landmark_renames()}
    names, renamed = [], {}
    for k, symbol in enumerate(map(str, symbols)):
        name = symbol
        if symbol not in landmarks:
            key = None if entrez_ids is None else _entrez(entrez_ids[k])
            name = by_entrez.get(key) or by_old.get(symbol, symbol)
        if name != symbol:
            renamed[symbol] = name
        names.append(name)
    return names, renamed


def data_level(fields: Collection[str], values: np.ndarray) -> str | None:
    """A warning when the signature-axis metadata marks each column as one replicate well
    (L1000 Level 3 expression or Level 4 z-scores) rather than a consensus signature (Level 5,
    which names the wells it combines); None otherwise."""
    wells = sorted(set(fields) & set(_WELL_FIELDS))
    if not wells or set(fields) & set(_CONSENSUS_FIELDS):
        return None
    level = (
        "Level 3 (normalised expression, all values >= 0)"
        if values.size and float(np.min(values)) >= 0
        else "Level 4 (per-well z-scores)"
    )
    return (
        f"the signature metadata ({', '.join(wells)}; no distil_* or nsample field) marks one "
        f"replicate well per row: {level}, not Level 5 consensus signatures"
    )


@dataclass
class CMapMatrix:
    """A GCT/GCTX matrix, opened but not read: ids and metadata of both axes.

    Attributes
    ----------
    source
        The file, for messages.
    gene_ids, sample_ids
        Ids of the gene axis and of the signature axis (str, file order).
    gene_meta
        One row per gene id: every field of the gene axis (may have no columns).
    sample_fields
        Names of the signature-axis fields; read them with :meth:`sample_field`.
    gene_axis
        ``"row"`` or ``"col"``: which META axis holds the genes.
    """

    source: str
    gene_ids: np.ndarray
    gene_meta: pd.DataFrame
    sample_ids: np.ndarray
    sample_fields: list[str]
    gene_axis: str
    _field: Callable[[str, np.ndarray | None], np.ndarray]
    _read: Callable[[np.ndarray, np.ndarray], np.ndarray]
    _close: Callable[[], None] = lambda: None

    def __enter__(self) -> CMapMatrix:
        return self

    def __exit__(self, *exc) -> None:
        self._close()

    def sample_field(self, name: str) -> np.ndarray:
        """One signature-axis field for every signature (raises naming the fields present)."""
        if name not in self.sample_fields:
            raise DeeppertError(
                f"{self.source}: no signature metadata field {name!r} "
                f"(fields: {', '.join(self.sample_fields) or 'none'})"
            )
        return self._field(name, None)

    def sample_meta(self, positions: np.ndarray) -> pd.DataFrame:
        """Every signature-axis field at ``positions``, one field at a time; only the values
        at ``positions`` are decoded (473,647 x 35 strings would not fit the memory bound)."""
        return pd.DataFrame(
            {name: self._field(name, positions) for name in self.sample_fields},
            index=pd.RangeIndex(len(positions)),
        )

    def read(self, sample_pos: np.ndarray, gene_pos: np.ndarray) -> np.ndarray:
        """Values at sorted ``sample_pos`` x ``gene_pos`` (any order) as float32 (samples x genes)."""
        sample_pos = np.asarray(sample_pos, dtype=np.int64)
        gene_pos = np.asarray(gene_pos, dtype=np.int64)
        if len(sample_pos) and np.any(np.diff(sample_pos) <= 0):
            raise ValueError("sample positions must be sorted and unique")
        order = np.sort(gene_pos)
        values = self._read(sample_pos, order)
        if not np.array_equal(order, gene_pos):
            values = values[:, np.searchsorted(order, gene_pos)]
        return values


# ----------------------------------------------------------------------------- orientation


def _gene_axis(
    row_ids: np.ndarray,
    col_ids: np.ndarray,
    row_symbols: np.ndarray | None,
    col_symbols: np.ndarray | None,
    gene_hint: Collection[str],
    source: str,
) -> str:
    """``"row"`` or ``"col"``: ids matching known genes, then symbol fields matching them,
    then the all-integer (Entrez) axis, then ROW as in every Broad file."""
    hint = set(gene_hint)
    for row, col in ((row_ids, col_ids), (row_symbols, col_symbols)):
        r = 0 if row is None else len(hint.intersection(row))
        c = 0 if col is None else len(hint.intersection(col))
        if r != c:
            return "row" if r > c else "col"
    row_int = all(s.isdigit() for s in row_ids)
    col_int = all(s.isdigit() for s in col_ids)
    if row_int != col_int:
        return "row" if row_int else "col"
    if (row_symbols is None) != (col_symbols is None):
        return "row" if row_symbols is not None else "col"
    log.info("%s: cannot tell the gene axis from ids or fields; assuming ROW = genes", source)
    return "row"


def landmark_rows(m: CMapMatrix) -> tuple[np.ndarray, list[str], dict[str, str]] | None:
    """Positions, current symbols and ``{previous: current}`` renames of the landmark genes of
    a matrix whose genes carry a symbol field; None without one.

    Landmarks are the rows the landmark flag marks, else those whose symbol (renamed by its
    Entrez id: the row id when all ids are digits, else ``pr_gene_id``) is in the 978 list.
    """
    symbols = _symbols(m.gene_meta)
    if symbols is None:
        return None
    entrez_field = next((f for f in ENTREZ_FIELDS if f in m.gene_meta.columns), None)
    if all(str(g).isdigit() for g in m.gene_ids):
        entrez = m.gene_ids
    else:
        entrez = None if entrez_field is None else m.gene_meta[entrez_field].to_numpy()
    flag_field = next((f for f in LANDMARK_FIELDS if f in m.gene_meta.columns), None)
    if flag_field is not None:
        pos = np.flatnonzero(is_landmark_flag(m.gene_meta[flag_field].to_numpy()))
        names, renamed = current_symbols(symbols[pos], None if entrez is None else entrez[pos])
        return pos, names, renamed
    names, renamed = current_symbols(symbols, entrez)
    pos = np.flatnonzero(np.isin(names, list(landmark_genes())))
    kept = {names[p] for p in pos}
    return pos, [names[p] for p in pos], {o: n for o, n in renamed.items() if n in kept}


def _symbols(meta: pd.DataFrame) -> np.ndarray | None:
    field = next((f for f in SYMBOL_FIELDS if f in meta.columns), None)
    return None if field is None else meta[field].astype(str).to_numpy(dtype=object)


# ----------------------------------------------------------------------------- GCTX


def _band_read(ds, samples_on_axis0: bool) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Read (sorted samples) x (sorted genes) in bands of whole chunks along the sample axis."""
    axis = 0 if samples_on_axis0 else 1
    n_genes_disk = ds.shape[1 - axis]
    if ds.chunks is not None:
        band = ds.chunks[axis]
    else:
        band = max(1, _BAND_BYTES // (n_genes_disk * ds.dtype.itemsize))

    def read(s: np.ndarray, g: np.ndarray) -> np.ndarray:
        out = np.empty((len(s), len(g)), dtype=np.float32)
        if len(s) == 0 or len(g) == 0:
            return out
        glo, ghi = int(g[0]), int(g[-1]) + 1
        gsel = g - glo
        bands = s // band
        cuts = np.flatnonzero(np.diff(bands)) + 1
        for rows_at in np.split(np.arange(len(s)), cuts):
            rows = s[rows_at]
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            slab = ds[lo:hi, glo:ghi] if samples_on_axis0 else ds[glo:ghi, lo:hi].T
            out[rows_at[0] : rows_at[-1] + 1] = slab[rows - lo][:, gsel]
        return out

    return read


def open_gctx(path: str | os.PathLike, *, gene_hint: Collection[str] = ()) -> CMapMatrix:
    """Open a GCTX file: ids and fields of both axes; values are read on demand.

    Use as a context manager (the HDF5 file stays open until exit).
    """
    import h5py

    source = str(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DeeppertError(
            f"{source}: cannot open as HDF5/GCTX (truncated or not HDF5?): {exc}"
        ) from exc
    try:
        for key in (MATRIX, ROW_IDS, COL_IDS):
            if key not in f:
                raise DeeppertError(f"{source}: not a GCTX file: dataset {key!r} not found")
        ds = f[MATRIX]
        if ds.ndim != 2:
            raise DeeppertError(f"{source}: {MATRIX} has {ds.ndim} dimensions, expected 2")
        try:
            row_ids, col_ids = _decode(f[ROW_IDS][()]), _decode(f[COL_IDS][()])
        except OSError as exc:
            raise DeeppertError(f"{source}: cannot read the ids (truncated file?): {exc}") from exc
        row_ids, col_ids = row_ids.astype(str), col_ids.astype(str)
        nr, nc = len(row_ids), len(col_ids)
        if ds.shape == (nc, nr):
            disk0 = "col"  # cmapM / cmapR / cmapPy: dataset axis 0 = COL ids
        elif ds.shape == (nr, nc):
            disk0 = "row"
        else:
            raise DeeppertError(
                f"{source}: {MATRIX} has shape {ds.shape} but there are {nr} ROW ids and {nc} COL ids"
            )

        def fields(group: str) -> list[str]:
            g = f.get(group)
            return (
                [k for k in g.keys() if k != "id" and isinstance(g[k], h5py.Dataset)] if g else []
            )

        def field(group: str, name: str, n: int, at: np.ndarray | None = None) -> np.ndarray:
            try:
                raw = np.ravel(f[f"{group}/{name}"][()])  # compact bytes; decoded below
            except OSError as exc:
                raise DeeppertError(
                    f"{source}: cannot read field {group}/{name} (truncated file?): {exc}"
                ) from exc
            if len(raw) != n:
                raise DeeppertError(
                    f"{source}: field {group}/{name} has {len(raw)} values for {n} ids"
                )
            return _decode(raw if at is None else raw[at])

        def small_meta(group: str, n: int, names: list[str]) -> pd.DataFrame:
            return pd.DataFrame({k: field(group, k, n) for k in names}, index=pd.RangeIndex(n))

        row_fields, col_fields = fields(ROW_META), fields(COL_META)
        sym = {
            axis: next((k for k in SYMBOL_FIELDS if k in names), None)
            for axis, names in (("row", row_fields), ("col", col_fields))
        }
        syms = {
            axis: None if sym[axis] is None else field(grp, sym[axis], n).astype(str)
            for axis, grp, n in (("row", ROW_META, nr), ("col", COL_META, nc))
        }
        gene_axis = _gene_axis(row_ids, col_ids, syms["row"], syms["col"], gene_hint, source)
        g_group, s_group = (ROW_META, COL_META) if gene_axis == "row" else (COL_META, ROW_META)
        g_fields, s_fields = (
            (row_fields, col_fields) if gene_axis == "row" else (col_fields, row_fields)
        )
        gene_ids, sample_ids = (row_ids, col_ids) if gene_axis == "row" else (col_ids, row_ids)
        samples_on_axis0 = disk0 != gene_axis
        reader = _band_read(ds, samples_on_axis0)

        def read(s: np.ndarray, g: np.ndarray) -> np.ndarray:
            try:
                return reader(s, g)
            except OSError as exc:
                raise DeeppertError(
                    f"{source}: cannot read {MATRIX} (truncated or corrupt file?): {exc}"
                ) from exc

        log.debug("%s: gene axis %s, dataset %s chunks %s", source, gene_axis, ds.shape, ds.chunks)
        return CMapMatrix(
            source=source,
            gene_ids=gene_ids,
            gene_meta=small_meta(g_group, len(gene_ids), g_fields),
            sample_ids=sample_ids,
            sample_fields=s_fields,
            gene_axis=gene_axis,
            _field=lambda name, at: field(s_group, name, len(sample_ids), at),
            _read=read,
            _close=f.close,
        )
    except BaseException:
        f.close()
        raise


# ----------------------------------------------------------------------------- GCT text


def _gct_error(source: str, message: str) -> DeeppertError:
    return DeeppertError(f"{source}: {message}")


def read_gct(path: str | os.PathLike, *, gene_hint: Collection[str] = ()) -> CMapMatrix:
    """Read a GCT 1.2 or 1.3 text file (rows = genes, columns = signatures) into memory.

    1.2: ``#1.2``, ``<rows> <cols>``, header ``Name Description <cids>``, one row per gene.
    1.3: ``#1.3``, ``<rows> <cols> <row fields> <col fields>``, header ``id <row fields>
    <cids>``, one line per column field (``-666`` under the row fields), then the genes.
    The header counts must agree with the body. Missing values: empty, ``NaN``, ``NA``.
    """
    source = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            lines = list(csv.reader(fh, delimiter="\t"))
    except UnicodeDecodeError as exc:
        raise _gct_error(source, f"not a GCT text file (not UTF-8: {exc.reason})") from exc
    except csv.Error as exc:
        raise _gct_error(source, f"cannot parse as GCT: {exc}") from exc
    lines = [ln for ln in lines if ln and any(c.strip() for c in ln)]
    if len(lines) < 3:
        raise _gct_error(source, "not a GCT file: fewer than three lines")
    version = lines[0][0].strip()
    if version not in ("#1.2", "#1.3"):
        raise _gct_error(
            source, f"not a GCT file: first line is {version!r}, expected #1.2 or #1.3"
        )
    try:
        counts = [int(c) for c in lines[1] if c.strip()]
    except ValueError:
        raise _gct_error(source, f"line 2: dimensions {lines[1]!r} are not integers") from None
    want = 2 if version == "#1.2" else 4
    if len(counts) != want:
        raise _gct_error(source, f"line 2: {version} needs {want} counts, found {counts}")
    n_rows, n_cols = counts[:2]
    n_rmeta, n_cmeta = (1, 0) if version == "#1.2" else counts[2:]
    header = [h.strip() for h in lines[2]]
    width = 1 + n_rmeta + n_cols
    if len(header) != width:
        raise _gct_error(
            source,
            f"header line 3 has {len(header)} fields; the counts on line 2 "
            f"({n_rows} rows, {n_cols} columns, {n_rmeta} row fields) need {width}",
        )
    body = lines[3:]
    if len(body) != n_cmeta + n_rows:
        raise _gct_error(
            source,
            f"line 2 announces {n_cmeta} column-field lines and {n_rows} rows "
            f"({n_cmeta + n_rows} lines) but the body has {len(body)}",
        )
    for k, ln in enumerate(body):
        if len(ln) != width:
            raise _gct_error(source, f"line {k + 4} has {len(ln)} fields, expected {width}")
    sample_ids = np.array(header[1 + n_rmeta :], dtype=object)
    cmeta = {
        ln[0].strip(): _decode(np.array(ln[1 + n_rmeta :], dtype=object)) for ln in body[:n_cmeta]
    }
    for name, vals in cmeta.items():  # numeric fields as numbers, as GCTX stores them
        num = pd.to_numeric(pd.Series(vals), errors="coerce")
        if num.notna().sum() == pd.Series(vals).notna().sum():
            cmeta[name] = num.to_numpy()
    rows = body[n_cmeta:]
    gene_ids = np.array([ln[0].strip() for ln in rows], dtype=object)
    rnames = header[1 : 1 + n_rmeta]
    gene_meta = pd.DataFrame(
        {
            name: _decode(np.array([ln[1 + k] for ln in rows], dtype=object))
            for k, name in enumerate(rnames)
        },
        index=pd.RangeIndex(n_rows),
    )
    text = np.char.strip(np.array([ln[1 + n_rmeta :] for ln in rows], dtype=str))
    text = text.reshape(n_rows, n_cols)
    missing = np.isin(text, _GCT_MISSING)
    try:
        values = np.where(missing, "nan", text).astype(np.float64).T.copy()
    except ValueError:
        for j, c in zip(*np.nonzero(~missing), strict=True):
            try:
                float(text[j, c])
            except ValueError:
                raise _gct_error(
                    source,
                    f"non-numeric value {str(text[j, c])!r} for gene {gene_ids[j]!r} "
                    f"(line {n_cmeta + j + 4}) in signature {sample_ids[c]!r}",
                ) from None
        raise
    gene_axis = _gene_axis(
        gene_ids.astype(str), sample_ids.astype(str), _symbols(gene_meta), None, gene_hint, source
    )
    if gene_axis == "col":
        raise _gct_error(source, "the gene ids are the column ids; GCT rows must be genes")
    return CMapMatrix(
        source=source,
        gene_ids=gene_ids.astype(str),
        gene_meta=gene_meta,
        sample_ids=sample_ids.astype(str),
        sample_fields=list(cmeta),
        gene_axis="row",
        _field=lambda name, at: cmeta[name] if at is None else cmeta[name][at],
        _read=lambda s, g: values[np.ix_(s, g)],
    )


def write_gct(
    path: Path,
    values: np.ndarray,
    sample_ids: Sequence[str],
    genes: Sequence[str],
    sample_meta: pd.DataFrame | None,
) -> None:
    """Write GCT 1.3 text (rows = genes, columns = signatures) to ``path`` (already a temp path).

    Values are written with ``repr`` precision so they read back exactly; missing
    metadata as ``-666``. The gene ids are the names given; there are no row fields.
    """
    meta = sample_meta if sample_meta is not None else pd.DataFrame(index=range(len(sample_ids)))
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["#1.3"])
        w.writerow([len(genes), len(sample_ids), 0, meta.shape[1]])
        w.writerow(["id", *sample_ids])
        for name in meta.columns:
            col = meta[name]
            w.writerow([name, *["-666" if pd.isna(v) else v for v in col.tolist()]])
        for j, gene in enumerate(genes):
            w.writerow([gene, *[repr(float(v)) for v in values[:, j]]])
