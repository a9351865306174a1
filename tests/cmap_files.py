"""Test files in CMap's exact layouts, written with h5py / plain text (no cmapPy).

cmapPy 4.0.1 (the last release) does not run on numpy 2 (``np.string_`` was removed), so
the Broad layout is built here from its documented form, checked once against cmapPy's own
``write_gctx`` run with a one-line shim (see docs/architecture.md): groups ``0/DATA/0`` and
``0/META/{ROW,COL}``, fixed-length byte strings, gzip on metadata, the float32 matrix stored
as ``(n COL ids, n ROW ids)`` and chunked as cmapM/cmapR write it (1,000 genes x
floor(262,144 / 1,000) = 262 signatures per 1 MiB chunk).
"""

from __future__ import annotations

import h5py
import numpy as np

from deeppert.data import landmark_genes

# The 35 column fields of a Broad Level 5 (MODZ) plate GCTX such as LJP005.
COL_FIELDS = (
    "brew_prefix",
    "cell_id",
    "det_plate",
    "det_well",
    "distil_cc_q75",
    "distil_nsample",
    "distil_ss",
    "is_gold",
    "mfc_plate_name",
    "ngenes_modulated_dn_lm",
    "ngenes_modulated_up_lm",
    "pct_self_rank_q25",
    "pert_dose",
    "pert_dose_unit",
    "pert_id",
    "pert_idose",
    "pert_iname",
    "pert_itime",
    "pert_mfc_desc",
    "pert_mfc_id",
    "pert_time",
    "pert_time_unit",
    "pert_type",
    "pert_vehicle",
    "pool_id",
    "provenance_code",
    "rna_plate",
    "rna_well",
    "tas",
    "x_avg_cc",
    "x_cc_q75",
    "x_nsample",
    "x_ss",
    "qc_pass",
    "sig_strength",
)
assert len(COL_FIELDS) == 35
NUMERIC_FIELDS = {
    "distil_cc_q75",
    "distil_nsample",
    "distil_ss",
    "ngenes_modulated_dn_lm",
    "ngenes_modulated_up_lm",
    "pct_self_rank_q25",
    "pert_dose",
    "pert_time",
    "tas",
    "x_avg_cc",
    "x_cc_q75",
    "x_nsample",
    "x_ss",
    "sig_strength",
}
CHUNK_KB = 1024


def lincs_chunks(n_sigs: int, n_genes: int) -> tuple[int, int]:
    """cmapM/cmapR chunking of a float32 matrix, as h5py sees it: (signatures, genes)."""
    genes = min(n_genes, 1000)
    return min(CHUNK_KB * 256 // genes, n_sigs), genes


def probe_ids(n: int) -> list[str]:
    """Affymetrix-style probe ids (``200814_at``...), one per gene row."""
    return [f"{200000 + 7 * i}_{'s_at' if i % 5 == 0 else 'at'}" for i in range(n)]


def col_meta(n: int, cells: list[str], seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible values for the 35 fields; cell line cycles through ``cells``, every 7th
    signature is a DMSO control, the rest compounds."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    cell = np.array(cells)[i % len(cells)]
    ctl = i % 7 == 0
    cpd = np.where(ctl, "DMSO", np.char.add("cpd-", (i % 41).astype(str)))
    pid = np.where(ctl, "DMSO", np.char.add("BRD-K", (10000 + i % 41).astype(str)))
    out: dict[str, np.ndarray] = {}
    for f in COL_FIELDS:
        if f == "cell_id":
            out[f] = cell
        elif f == "pert_iname":
            out[f] = cpd
        elif f == "pert_id":
            out[f] = pid
        elif f == "pert_type":
            out[f] = np.where(ctl, "ctl_vehicle", "trt_cp")
        elif f == "pert_idose":
            out[f] = np.where(ctl, "-666", np.array(["0.04 um", "1.11 um", "10 um"])[i % 3])
        elif f == "pert_itime":
            out[f] = np.full(n, "24 h")
        elif f == "pert_dose":
            out[f] = np.where(ctl, -666.0, np.array([0.04, 1.11, 10.0])[i % 3])
        elif f in NUMERIC_FIELDS:
            out[f] = rng.normal(size=n).round(4)
        else:
            out[f] = np.char.add(f"{f[:6]}_", (i % 11).astype(str))
    return out


def write_broad_gctx(
    path,
    values: np.ndarray,
    sig_ids: list[str],
    cells: list[str],
    *,
    chunked: bool = True,
    symbols: dict[str, str] | None = None,
    entrez: dict[str, int] | None = None,
    drop_col_fields: tuple[str, ...] = (),
) -> dict:
    """A Broad-layout GCTX of ``values`` (signatures x genes, genes = the 978 landmarks and
    more): ROW = probe ids with ``pr_gene_symbol``, ``pr_gene_id``, ``pr_is_lmark`` (Y/N),
    COL = signature ids with the 35 fields less ``drop_col_fields``. ``symbols`` writes some
    landmarks under another symbol (current -> written), ``entrez`` gives some landmarks
    their Entrez id (else 100 + position). Returns the row and column metadata written."""
    n_sigs, n_genes = values.shape
    lm = list(landmark_genes())
    gene_ids = [(entrez or {}).get(g, 100 + i) for i, g in enumerate(lm)]
    gene_ids += list(range(100 + len(lm), 100 + n_genes))
    symbols = [(symbols or {}).get(g, g) for g in lm] + [
        f"INF{i}" for i in range(n_genes - len(lm))
    ]
    is_lm = ["Y"] * len(lm) + ["N"] * (n_genes - len(lm))
    # Broad order is by probe id, not landmarks first: a fixed shuffle of the rows
    order = np.random.default_rng(1).permutation(n_genes)
    row = {
        "id": np.array(probe_ids(n_genes)),
        "pr_gene_symbol": np.array(symbols)[order],
        "pr_gene_id": np.array(gene_ids)[order],
        "pr_gene_title": np.array([f"title of {s}" for s in symbols])[order],
        "pr_is_lmark": np.array(is_lm)[order],
    }
    fields = col_meta(n_sigs, cells)
    col = {"id": np.array(sig_ids), **{k: v for k, v in fields.items() if k not in drop_col_fields}}
    with h5py.File(path, "w") as f:
        f.attrs["version"] = np.bytes_(b"GCTX1.0")
        f.attrs["src"] = np.bytes_(str(path).encode())
        f.create_dataset(
            "0/DATA/0/matrix",
            data=values[:, order].astype(np.float32),
            chunks=lincs_chunks(n_sigs, n_genes) if chunked else None,
        )
        for group, meta in (("ROW", row), ("COL", col)):
            for name, vals in meta.items():
                data = np.char.encode(vals.astype(str)) if vals.dtype.kind == "U" else vals
                f.create_dataset(f"0/META/{group}/{name}", data=data, compression="gzip")
    return {"row": row, "col": col, "order": order}
