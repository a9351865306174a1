"""Read L1000 GCTX (HDF5) matrices with h5py, in either orientation, reading only what is asked.

Layout: the matrix is ``0/DATA/0/matrix``, the ids ``0/META/ROW/id`` and ``0/META/COL/id``.
In LINCS files ROW ids are genes (Entrez ids) and COL ids are signatures, and, as written
by cmapPy, the HDF5 dataset has shape ``(n_col_ids, n_row_ids)``. Files written the other
way round exist, so the gene axis is found by matching ids and the dataset axes by shape.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection

import numpy as np

from deeppert.errors import DeeppertError

__all__ = ["read_gctx", "MATRIX", "ROW_IDS", "COL_IDS"]

log = logging.getLogger(__name__)

MATRIX = "0/DATA/0/matrix"
ROW_IDS = "0/META/ROW/id"
COL_IDS = "0/META/COL/id"
_BLOCK = 2048  # signatures read per HDF5 call, to bound memory on large files


def _ids(raw: np.ndarray) -> np.ndarray:
    out = [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in np.ravel(raw)]
    return np.array([s.strip() for s in out], dtype=object)


def _gene_axis(
    row_ids: np.ndarray, col_ids: np.ndarray, gene_hint: Collection[str], source: str
) -> str:
    """``"row"`` or ``"col"``: which META axis holds the genes."""
    hint = set(gene_hint)
    row_hits, col_hits = len(hint.intersection(row_ids)), len(hint.intersection(col_ids))
    if row_hits != col_hits:
        return "row" if row_hits > col_hits else "col"
    row_int = all(s.isdigit() for s in row_ids)
    col_int = all(s.isdigit() for s in col_ids)
    if row_int != col_int:
        return "row" if row_int else "col"
    log.info(
        "%s: cannot tell the gene axis from the ids; assuming LINCS layout (ROW = genes)", source
    )
    return "row"


def read_gctx(
    path: str | os.PathLike,
    *,
    sample_ids: Collection[str] | None = None,
    gene_ids: Collection[str] | None = None,
    gene_hint: Collection[str] = (),
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a GCTX file as ``(values samples x genes, sample ids, gene ids)``.

    Parameters
    ----------
    path
        The ``.gctx`` file.
    sample_ids, gene_ids
        Keep only these signatures / genes (file order is kept); None keeps all. Only the
        selected signatures are read from disk.
    gene_hint
        Ids known to be genes (landmark Entrez ids or symbols): the META axis that matches
        more of them is the gene axis; failing that, the all-integer (Entrez) axis; failing
        that, ROW as in LINCS.
    """
    import h5py

    source = str(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise DeeppertError(f"{source}: cannot open as HDF5/GCTX: {exc}") from exc
    with handle as f:
        for key in (MATRIX, ROW_IDS, COL_IDS):
            if key not in f:
                raise DeeppertError(f"{source}: not a GCTX file: dataset {key!r} not found")
        ds = f[MATRIX]
        row_ids, col_ids = _ids(f[ROW_IDS][()]), _ids(f[COL_IDS][()])
        if ds.ndim != 2:
            raise DeeppertError(f"{source}: {MATRIX} has {ds.ndim} dimensions, expected 2")
        nr, nc = len(row_ids), len(col_ids)
        if ds.shape == (nc, nr):
            disk = ("col", "row")  # cmapPy / LINCS: dataset axis 0 = COL ids
        elif ds.shape == (nr, nc):
            disk = ("row", "col")
        else:
            raise DeeppertError(
                f"{source}: {MATRIX} has shape {ds.shape} but there are {nr} ROW ids and {nc} COL ids"
            )
        gene_axis = _gene_axis(row_ids, col_ids, gene_hint, source)
        genes_all = row_ids if gene_axis == "row" else col_ids
        samples_all = col_ids if gene_axis == "row" else row_ids
        s_pos = np.arange(len(samples_all))
        g_pos = np.arange(len(genes_all))
        if sample_ids is not None:
            s_pos = np.flatnonzero(np.isin(samples_all, np.asarray(list(sample_ids), dtype=object)))
        if gene_ids is not None:
            g_pos = np.flatnonzero(np.isin(genes_all, np.asarray(list(gene_ids), dtype=object)))
        samples_on_axis0 = disk[0] != gene_axis
        values = np.empty((len(s_pos), len(g_pos)), dtype=np.float64)
        for start in range(0, len(s_pos), _BLOCK):
            idx = s_pos[start : start + _BLOCK]
            sel = slice(int(idx[0]), int(idx[-1]) + 1) if np.all(np.diff(idx) == 1) else idx
            block = ds[sel, :] if samples_on_axis0 else ds[:, sel].T
            values[start : start + len(idx)] = block[:, g_pos]
    log.debug(
        "%s: gene axis %s, dataset axes %s, read %d x %d", source, gene_axis, disk, *values.shape
    )
    return values, samples_all[s_pos].astype(str), [str(g) for g in genes_all[g_pos]]
