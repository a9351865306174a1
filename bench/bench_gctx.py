"""Benchmark: one cell line out of a full-width Level 5 GCTX, in bounded memory.

Writes a GCTX in the Broad layout (ROW = 12,328 genes with probe ids, ``pr_gene_symbol``,
``pr_gene_id``, ``pr_is_lmark``; COL = signatures with the 35 fields of a Level 5 file) of
12,328 genes x 60,000 signatures, float32 (2.96 GB), chunked as cmapM / cmapR write LINCS
files: at most 1 MiB per chunk, 1,000 genes x floor(262,144 / 1,000) = 262 signatures, i.e.
h5py chunks ``(262, 1000)`` on the ``(signatures, genes)`` dataset. Twelve cell lines are
interleaved signature by signature, so one cell line (5,000 signatures) has rows in every
chunk band: the worst case for a band-wise reader.

Then, each in a fresh child process (so peak RSS is the load's own, imports included):

* ``deeppert``: ``load_signatures(path, cell_line="A375")`` -> 5,000 x 978 landmarks with
  their 35 metadata fields;
* ``h5py_reference``: what one writes by hand with h5py and the same metadata: a fancy-index
  read ``ds[rows, :]`` of the selected signatures, then the landmark columns.

It reports seconds and peak RSS (``ru_maxrss``) of both, the ratio, checks the values of a
few signatures against the generator, and writes ``bench/results/gctx.json``. The file is
written to ``--workdir`` (default: a temporary folder under /tmp) and deleted afterwards
unless ``--keep``. The file was just written, so it is read from the page cache (warm).

Usage::

    python bench/bench_gctx.py [--n-sigs 60000] [--workdir /tmp] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
N_GENES = 12328
CELLS = [
    "A375",
    "A549",
    "HA1E",
    "HCC515",
    "HEPG2",
    "HT29",
    "MCF7",
    "PC3",
    "VCAP",
    "NPC",
    "ASC",
    "SKB",
]
BLOCK = 262 * 8  # signatures generated and written at once (8 chunk bands, 103 MB)


def _block_values(b: int, n_rows: int) -> np.ndarray:
    """Values of block ``b`` (deterministic, so any signature can be recomputed)."""
    return np.random.default_rng([12, b]).standard_normal((n_rows, N_GENES), dtype=np.float32)


def write_file(path: Path, n_sigs: int) -> dict:
    import h5py

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from cmap_files import col_meta, lincs_chunks, probe_ids

    from deeppert.data import landmark_genes

    lm = list(landmark_genes())
    order = np.random.default_rng(1).permutation(N_GENES)  # landmarks spread over the rows
    symbols = np.array(lm + [f"INF{i}" for i in range(N_GENES - len(lm))])[order]
    is_lm = np.array(["Y"] * len(lm) + ["N"] * (N_GENES - len(lm)))[order]
    row = {
        "id": np.array(probe_ids(N_GENES)),
        "pr_gene_symbol": symbols,
        "pr_gene_id": (np.arange(N_GENES) + 100)[order],
        "pr_is_lmark": is_lm,
    }
    ids = np.array(
        [f"BENCH{i // 384:04d}_{CELLS[i % len(CELLS)]}_24H:{i % 384:03d}" for i in range(n_sigs)]
    )
    col = {"id": ids, **col_meta(n_sigs, CELLS)}
    chunks = lincs_chunks(n_sigs, N_GENES)
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        f.attrs["version"] = np.bytes_(b"GCTX1.0")
        ds = f.create_dataset(
            "0/DATA/0/matrix", shape=(n_sigs, N_GENES), dtype=np.float32, chunks=chunks
        )
        for b, start in enumerate(range(0, n_sigs, BLOCK)):
            stop = min(start + BLOCK, n_sigs)
            ds[start:stop] = _block_values(b, stop - start)
        for group, meta in (("ROW", row), ("COL", col)):
            for name, vals in meta.items():
                data = np.char.encode(vals.astype(str)) if vals.dtype.kind == "U" else vals
                f.create_dataset(f"0/META/{group}/{name}", data=data, compression="gzip")
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "chunks": list(chunks),
        "bytes": path.stat().st_size,
    }


def _child(mode: str, path: str, cell: str) -> None:
    """Run one load in this (fresh) process and print its JSON record."""
    t0 = time.perf_counter()
    if mode == "deeppert":
        from deeppert.data import load_signatures

        sig = load_signatures(path, cell_line=cell)
        ids, values, genes = list(sig.sample_ids), sig.values, sig.genes
        n_fields = sig.metadata.shape[1]
    else:
        import h5py

        from deeppert.data._cmap import _decode

        with h5py.File(path, "r") as f:
            cells = _decode(f["0/META/COL/cell_id"][()])
            rows = np.flatnonzero(cells == cell)
            flag = _decode(f["0/META/ROW/pr_is_lmark"][()])
            cols = np.flatnonzero(flag == "Y")
            values = f["0/DATA/0/matrix"][rows, :][:, cols]
            genes = list(_decode(f["0/META/ROW/pr_gene_symbol"][()])[cols])
            ids = list(_decode(f["0/META/COL/id"][()])[rows])
            n_fields = 0
    seconds = time.perf_counter() - t0
    # planted check: recompute three selected signatures from the generator
    import h5py

    with h5py.File(path, "r") as f:
        sym = list(np.char.decode(f["0/META/ROW/pr_gene_symbol"][()]))
        all_ids = list(np.char.decode(f["0/META/COL/id"][()]))
    pos = {s: i for i, s in enumerate(sym)}
    gene_cols = [pos[g] for g in genes]
    max_err = 0.0
    for k in (0, len(ids) // 2, len(ids) - 1):
        i = all_ids.index(ids[k])
        truth = _block_values(i // BLOCK, min(BLOCK, len(all_ids) - i // BLOCK * BLOCK))[
            i % BLOCK, gene_cols
        ]
        max_err = max(max_err, float(np.abs(values[k] - truth).max()))
    print(
        json.dumps(
            {
                "mode": mode,
                "seconds": round(seconds, 2),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "shape": list(values.shape),
                "dtype": str(values.dtype),
                "metadata_fields": n_fields,
                "max_abs_error_vs_generator": max_err,
            }
        )
    )


def _run_child(mode: str, path: Path, cell: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--path", str(path), "--cell", cell],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-sigs", type=int, default=60000)
    parser.add_argument("--cell", default="A375")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true", help="keep the written GCTX")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "gctx.json")
    parser.add_argument("--child", choices=["deeppert", "h5py_reference"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.path, args.cell)
        return {}

    folder = Path(tempfile.mkdtemp(prefix="bench_gctx_", dir=args.workdir))
    path = folder / f"level5_{N_GENES}x{args.n_sigs}.gctx"
    try:
        written = write_file(path, args.n_sigs)
        print(
            f"wrote {path}: {written['bytes'] / 2**30:.2f} GiB in {written['seconds']} s, chunks {written['chunks']}"
        )
        ours = _run_child("deeppert", path, args.cell)
        print(f"deeppert        {ours}")
        ref = None if args.skip_reference else _run_child("h5py_reference", path, args.cell)
        if ref:
            print(f"h5py reference  {ref}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    result = {
        "benchmark": "one cell line + 978 landmarks out of a Level 5 GCTX",
        "file": {
            "genes": N_GENES,
            "signatures": args.n_sigs,
            "gib": round(written["bytes"] / 2**30, 2),
            "chunks": written["chunks"],
            "write_seconds": written["seconds"],
            "cell_lines": len(CELLS),
            "layout": "Broad: ROW = genes (probe ids + pr_gene_symbol/pr_is_lmark), COL = signatures (35 fields), "
            "dataset (signatures, genes) float32, cell lines interleaved",
        },
        "selection": {"cell_line": args.cell},
        "deeppert": ours,
        "h5py_reference": ref,
        "speedup_vs_reference": round(ref["seconds"] / ours["seconds"], 2) if ref else None,
        "targets": {"peak_rss_mib": 1024, "seconds": 60},
        "page_cache": "warm (file just written)",
        "machine": f"{os.cpu_count()}-core {platform.machine()}, load {os.getloadavg()[0]:.2f}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"deeppert: {ours['seconds']} s, peak RSS {ours['peak_rss_mib']:.0f} MiB "
        f"(targets < 60 s, < 1024 MiB); wrote {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
