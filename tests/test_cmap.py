"""CMap files as users have them: Broad-layout GCTX with embedded metadata, GCT 1.2 / 1.3,
selection from metadata before reading, band-wise reads, and the errors on bad input."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pandas as pd
import pytest
from cmap_files import COL_FIELDS, lincs_chunks, probe_ids, write_broad_gctx

from deeppert.cli import main
from deeppert.data import describe, landmark_genes, load_signatures, save_signatures
from deeppert.errors import DeeppertError

LM = list(landmark_genes())
N_SIGS, N_GENES = 300, 1100  # 978 landmarks + 122 inferred genes
CELLS = ["A375", "MCF7", "PC3"]


@pytest.fixture
def broad(tmp_path):
    """A Broad-layout Level 5 GCTX; values[s, g] = s + g / 10000 in landmark-then-inferred order."""
    s, g = np.meshgrid(np.arange(N_SIGS), np.arange(N_GENES), indexing="ij")
    values = (s + g / 10000).astype(np.float32)
    ids = [f"LJP005_{CELLS[i % 3]}_24H:{chr(65 + i % 16)}{i:03d}" for i in range(N_SIGS)]
    path = tmp_path / "LJP005_L5.gctx"
    meta = write_broad_gctx(path, values, ids, CELLS)
    return path, values, ids, meta


@pytest.fixture
def data_cli():
    """``deeppert`` in process (only the invoked command's module is imported)."""
    return main


def _by_symbol(sig, values: np.ndarray, rows) -> np.ndarray:
    """Expected values in ``sig``'s gene order (symbols -> planted landmark position)."""
    col = {g: i for i, g in enumerate(LM)}
    return values[np.ix_(rows, [col[g] for g in sig.genes])]


def test_broad_gctx_names_genes_and_keeps_metadata(broad):
    path, values, ids, meta = broad
    sig = load_signatures(path)
    assert sig.n_samples == N_SIGS and sorted(sig.genes) == sorted(LM)  # 978 by symbol
    assert sig.values.dtype == np.float32  # as stored: exact, half the memory
    np.testing.assert_array_equal(sig.values, _by_symbol(sig, values, np.arange(N_SIGS)))
    assert list(sig.sample_ids) == ids
    assert sorted(sig.metadata.columns) == sorted(COL_FIELDS)
    assert list(sig.metadata["cell_id"]) == [CELLS[i % 3] for i in range(N_SIGS)]
    # CMap's -666 is missing, in text and numeric fields
    ctl = np.arange(N_SIGS) % 7 == 0
    assert sig.metadata["pert_idose"].isna().tolist() == ctl.tolist()
    assert sig.metadata["pert_dose"].isna().tolist() == ctl.tolist()
    d = describe(sig)
    assert d["landmark_genes"] == 978 and d["landmark_coverage"] == 1.0
    assert d["metadata"]["cell_id"] == {
        "distinct": 3,
        "missing": 0,
        "top": [["A375", 100], ["MCF7", 100], ["PC3", 100]],
    }
    assert d["metadata"]["pert_type"]["top"][0] == ["trt_cp", 257]


def test_broad_gctx_selects_from_metadata_and_indexes_by_field(broad):
    path, values, ids, _ = broad
    sig = load_signatures(path, cell_line="MCF7", pert_type="trt_cp", id_column="pert_iname")
    rows = [i for i in range(N_SIGS) if i % 3 == 1 and i % 7 != 0]
    assert list(sig.metadata["sig_id"]) == [ids[i] for i in rows]  # own ids kept
    assert list(sig.sample_ids) == [f"cpd-{i % 41}" for i in rows]
    assert "pert_iname" not in sig.metadata.columns
    assert set(sig.metadata["cell_id"]) == {"MCF7"} and set(sig.metadata["pert_type"]) == {"trt_cp"}
    np.testing.assert_array_equal(sig.values, _by_symbol(sig, values, rows))
    by_id = load_signatures(path, cell_line="PC3", id_column="pert_id")
    assert by_id.n_samples == 100 and "DMSO" in set(by_id.sample_ids)  # no type filter unless asked


def test_external_tables_win_over_embedded_metadata(broad, tmp_path):
    path, values, ids, _ = broad
    # siginfo says two of the A375 signatures are compounds in "HELA": it wins over cell_id
    chosen = [ids[3], ids[9]]
    pd.DataFrame(
        {
            "sig_id": ids,
            "pert_id": "BRD-X",
            "pert_type": "trt_cp",
            "cell_iname": ["HELA" if s in chosen else "OTHER" for s in ids],
        }
    ).to_csv(tmp_path / "siginfo_beta.txt", sep="\t", index=False)
    # geneinfo keeps only 12 landmarks (by symbol: the file's ids are probe ids)
    pd.DataFrame({"gene_id": [str(100 + i) for i in range(12)], "gene_symbol": LM[:12]}).assign(
        feature_space="landmark"
    ).to_csv(tmp_path / "geneinfo_beta.txt", sep="\t", index=False)
    sig = load_signatures(
        path,
        cell_line="HELA",
        siginfo=tmp_path / "siginfo_beta.txt",
        geneinfo=tmp_path / "geneinfo_beta.txt",
        min_rows=2,
    )
    assert list(sig.sample_ids) == chosen
    assert sorted(sig.genes) == sorted(LM[:12])
    assert list(sig.metadata["cell_line"]) == ["HELA", "HELA"]  # the table's annotation
    assert list(sig.metadata["cell_id"]) == ["A375", "A375"]  # the file's, kept
    np.testing.assert_array_equal(sig.values, _by_symbol(sig, values, [3, 9]))


class _Spy:
    """Records every slab read from the matrix dataset (shape of the HDF5 selection)."""

    def __init__(self, monkeypatch):
        self.slabs: list[tuple[int, ...]] = []
        original = h5py.Dataset.__getitem__

        def getitem(ds, key):
            out = original(ds, key)
            if ds.name == "/0/DATA/0/matrix":
                self.slabs.append(out.shape)
            return out

        monkeypatch.setattr(h5py.Dataset, "__getitem__", getitem)


def test_gctx_reads_only_selected_bands(tmp_path, monkeypatch):
    """The full-size path on a small file: chunk bands in file order, never the whole matrix."""
    n_sigs, n_genes = 2000, 1100
    rng = np.random.default_rng(5)
    values = rng.normal(size=(n_sigs, n_genes)).astype(np.float32)
    ids = [f"SIG{i:05d}" for i in range(n_sigs)]
    cells = ["A375"] * 5 + ["MCF7"] * 995  # A375: signatures 0-4 and 1000-1004
    path = tmp_path / "big.gctx"
    meta = write_broad_gctx(path, values, ids, cells)
    chunk_sigs, _ = lincs_chunks(n_sigs, n_genes)
    assert chunk_sigs == 262  # 1 MiB chunks of 1,000 genes x 262 signatures (float32)
    spy = _Spy(monkeypatch)
    wanted = ["PSME1", "ATF1", "RHEB"]  # out of file order, by symbol
    sig = load_signatures(path, cell_line="A375", gene_columns=wanted, min_rows=1, min_genes=1)
    rows = [i for i in range(n_sigs) if i % 1000 < 5]
    assert list(sig.sample_ids) == [ids[i] for i in rows]
    assert sig.genes == wanted
    np.testing.assert_array_equal(sig.values, _by_symbol(sig, values, rows))
    assert spy.slabs, "no read went through h5py"
    # one read per chunk band holding a selected row (bands 0 and 3 of 8), spanning only the
    # selected rows, and only the gene columns between the first and last gene asked for
    assert [s[0] for s in spy.slabs] == [5, 5]
    gene_pos = sorted(int(np.flatnonzero(meta["row"]["pr_gene_symbol"] == g)[0]) for g in wanted)
    assert all(s[1] == gene_pos[-1] - gene_pos[0] + 1 for s in spy.slabs)
    # a dense selection reads band by band, never more than one band at once
    spy.slabs.clear()
    dense = load_signatures(path, cell_line="MCF7", min_rows=1)
    assert dense.n_samples == n_sigs - 10 and len(spy.slabs) == -(-n_sigs // chunk_sigs)
    assert max(s[0] for s in spy.slabs) <= chunk_sigs


def test_gctx_unchunked_and_row_major_read_the_same(tmp_path):
    rng = np.random.default_rng(6)
    values = rng.normal(size=(40, 1000)).astype(np.float32)
    ids = [f"S{i}" for i in range(40)]
    write_broad_gctx(tmp_path / "a.gctx", values, ids, ["A", "B"], chunked=False)
    a = load_signatures(tmp_path / "a.gctx", cell_line="B")
    # the same data stored (genes, signatures) with ROW = genes
    with h5py.File(tmp_path / "a.gctx") as f, h5py.File(tmp_path / "b.gctx", "w") as g:
        g.create_dataset("0/DATA/0/matrix", data=f["0/DATA/0/matrix"][()].T, chunks=(1000, 7))
        for k in ("ROW", "COL"):
            for name, ds in f[f"0/META/{k}"].items():
                g.create_dataset(f"0/META/{k}/{name}", data=ds[()])
    b = load_signatures(tmp_path / "b.gctx", cell_line="B")
    assert a.genes == b.genes and list(a.sample_ids) == list(b.sample_ids)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.values, _by_symbol(a, values, range(1, 40, 2)))


# ----------------------------------------------------------------------------- GCT text


def _gct12(path, genes, sigs, values, desc=None) -> None:
    lines = ["#1.2", f"{len(genes)}\t{len(sigs)}", "\t".join(["Name", "Description", *sigs])]
    for j, g in enumerate(genes):
        d = desc[j] if desc else "na"
        lines.append("\t".join([g, d, *(f"{v:.4f}" for v in values[:, j])]))
    path.write_text("\n".join(lines) + "\n")


def test_gct12_probe_ids_named_by_description_symbols(tmp_path):
    rng = np.random.default_rng(7)
    values = rng.normal(size=(15, 20)).round(4)
    genes = probe_ids(20)
    _gct12(tmp_path / "x.gct", genes, [f"s{i}" for i in range(15)], values, desc=LM[:20])
    with pytest.raises(DeeppertError, match="no pr_gene_symbol / gene_symbol field"):
        load_signatures(tmp_path / "x.gct")  # Description is free text, not a symbol field
    sig = load_signatures(tmp_path / "x.gct", gene_columns=genes[:12])
    np.testing.assert_array_equal(sig.values, values[:, :12])
    _gct12(tmp_path / "y.gct", LM[:20], [f"s{i}" for i in range(15)], values)
    sig = load_signatures(tmp_path / "y.gct")
    assert sig.genes == LM[:20] and list(sig.sample_ids) == [f"s{i}" for i in range(15)]
    np.testing.assert_array_equal(sig.values, values)
    assert sig.metadata is None  # GCT 1.2 has no column fields


def test_gct13_round_trip_and_same_semantics_as_gctx(tmp_path, broad):
    path, values, ids, _ = broad
    gctx = load_signatures(path, cell_line="A375", id_column="pert_iname")
    out = save_signatures(gctx, tmp_path / "a375.gct")
    text = out.read_text().splitlines()
    assert text[0] == "#1.3" and text[1] == f"978\t100\t0\t{gctx.metadata.shape[1]}"
    back = load_signatures(out)
    assert back.genes == gctx.genes
    assert list(back.sample_ids) == list(gctx.sample_ids)  # repeated pert_iname ids kept apart
    np.testing.assert_array_equal(back.values, gctx.values.astype(np.float64))
    pd.testing.assert_frame_equal(back.metadata, gctx.metadata, check_dtype=False)
    # selection and indexing from GCT column fields, as from GCTX
    again = load_signatures(out, pert_type="trt_cp", id_column="sig_id")
    assert list(again.sample_ids) == [ids[i] for i in range(0, N_SIGS, 3) if i % 7 != 0]


def test_gct13_row_fields_name_genes(tmp_path):
    lm_genes = LM[:11]
    lines = [
        "#1.3",
        "12\t3\t2\t1",
        "id\tpr_gene_symbol\tpr_is_lmark\ts1\ts2\ts3",
        "cell_id\t-666\t-666\tA375\tA375\tPC3",
    ]
    for j, g in enumerate([*lm_genes, "NOTLM"]):
        flag = "Y" if j < 11 else "N"
        lines.append(f"{200000 + j}_at\t{g}\t{flag}\t{j}\t{j + 0.5}\t-{j}")
    (tmp_path / "x.gct").write_text("\n".join(lines) + "\n")
    sig = load_signatures(tmp_path / "x.gct", cell_line="A375", min_rows=1)
    assert sig.genes == lm_genes  # symbols; the N row left out
    np.testing.assert_array_equal(sig.values, [np.arange(11.0), np.arange(11) + 0.5])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda ls: [ls[0], "4\t3\t2\t1", *ls[2:]],
            r"line 2 announces 1 column-field lines and 4 rows \(5 lines\) but the body has 13",
        ),
        (
            lambda ls: [ls[0], "12\t4\t2\t1", *ls[2:]],
            r"header line 3 has 6 fields; the counts on line 2 \(12 rows, 4 columns, 2 row fields\) need 7",
        ),
        (lambda ls: [*ls[:-1], ls[-1] + "\t7"], r"line 16 has 7 fields, expected 6"),
        (
            lambda ls: [*ls[:5], ls[5].replace("\t1.5\t", "\tn/a\t"), *ls[6:]],
            r"non-numeric value 'n/a' for gene '200001_at' \(line 6\) in signature 's2'",
        ),
        (
            lambda ls: ["#1.4", *ls[1:]],
            r"not a GCT file: first line is '#1.4', expected #1.2 or #1.3",
        ),
    ],
)
def test_gct_header_and_body_errors(tmp_path, edit, message):
    lines = [
        "#1.3",
        "12\t3\t2\t1",
        "id\tpr_gene_symbol\tpr_is_lmark\ts1\ts2\ts3",
        "cell_id\t-666\t-666\tA\tA\tB",
    ]
    lines += [f"{200000 + j}_at\t{LM[j]}\tY\t{j}\t{j + 0.5}\t{j}" for j in range(12)]
    (tmp_path / "bad.gct").write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(DeeppertError, match=r"bad.gct: " + message):
        load_signatures(tmp_path / "bad.gct", min_rows=1)


# ----------------------------------------------------------------------------- bad input


def test_absent_field_lists_the_fields_present(broad):
    path, *_ = broad
    with pytest.raises(
        DeeppertError,
        match=r"LJP005_L5.gctx: id column 'pert_name' not found among the metadata fields "
        r"\(brew_prefix, cell_id, .*, pert_id, pert_idose, pert_iname, .*x_ss; the file's own ids",
    ):
        load_signatures(path, id_column="pert_name")
    h5 = path.with_name("nocell.gctx")
    with h5py.File(path) as f, h5py.File(h5, "w") as g:
        for key in (
            "0/DATA/0/matrix",
            "0/META/ROW/id",
            "0/META/ROW/pr_gene_symbol",
            "0/META/ROW/pr_is_lmark",
            "0/META/COL/id",
            "0/META/COL/pert_type",
            "0/META/COL/pert_iname",
        ):
            g.create_dataset(key, data=f[key][()])
    with pytest.raises(
        DeeppertError,
        match=r"nocell.gctx: selecting cell line 'A375' needs a metadata field 'cell_iname' or "
        r"'cell_id' or 'cell_line'; fields present: pert_iname, pert_type",
    ):
        load_signatures(h5, cell_line="A375")


def test_row_ids_in_no_naming_scheme(tmp_path):
    with h5py.File(tmp_path / "probes.gctx", "w") as f:
        f.create_dataset("0/DATA/0/matrix", data=np.zeros((20, 30), dtype=np.float32))
        f.create_dataset("0/META/ROW/id", data=np.char.encode(np.array(probe_ids(30))))
        f.create_dataset("0/META/ROW/pr_gene_title", data=np.array([b"t"] * 30))
        f.create_dataset("0/META/COL/id", data=np.array([f"s{i}".encode() for i in range(20)]))
    with pytest.raises(
        DeeppertError,
        match=r"probes.gctx: gene ids match no naming scheme \(neither L1000 landmark symbols nor "
        r"Entrez ids; first: '200000_s_at', '200007_at', '200014_at'\) and there is no "
        r"pr_gene_symbol / gene_symbol field \(gene fields: pr_gene_title\)",
    ):
        load_signatures(tmp_path / "probes.gctx")


def test_truncated_gctx(broad, tmp_path):
    path, *_ = broad
    data = path.read_bytes()
    for keep in (len(data) // 2, 4096):
        cut = tmp_path / f"cut{keep}.gctx"
        cut.write_bytes(data[:keep])
        with pytest.raises(DeeppertError, match=rf"cut{keep}.gctx: .*(truncated|not HDF5)"):
            load_signatures(cut)


def test_selection_matching_nothing(broad):
    path, *_ = broad
    with pytest.raises(
        DeeppertError,
        match=r"LJP005_L5.gctx: no signature has cell_id == 'HELA' \(present: A375, MCF7, PC3\)",
    ):
        load_signatures(path, cell_line="HELA")
    with pytest.raises(DeeppertError, match=r"no signature has pert_type == 'trt_sh'"):
        load_signatures(path, pert_type="trt_sh")


def test_info_cli_on_broad_file(broad, data_cli, capsys):
    path, *_ = broad
    assert data_cli(["info", str(path), "--cell-line", "PC3", "--pert-type", "trt_cp"]) == 0
    out = capsys.readouterr().out
    assert "genes            978 (978 L1000 landmarks, coverage 100.0%)" in out
    assert "metadata fields  35" in out
    assert "cell_id                 1 distinct: PC3 (86)" in out
    assert "pert_type               1 distinct: trt_cp (86)" in out
    assert data_cli(["info", str(path), "--cell-line", "HELA"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no signature has cell_id == 'HELA'" in err[0]


def test_previous_landmark_symbols_are_named_as_today(tmp_path, data_cli, capsys):
    """A GSE92742-era file writes renamed landmarks under their previous symbols (CD97 for
    ADGRE5 ...): matched by Entrez id, or by the previous symbol, all 978 are read."""
    from deeppert.data._cmap import landmark_renames

    table = landmark_renames()
    old = {new: prev for prev, new, _ in table}
    entrez = {new: int(e) for _, new, e in table}
    # one landmark carries a symbol no table knows (a typo): its Entrez id alone names it
    old["ADGRE5"] = "CD97-TYPO"
    values = np.arange(4 * N_GENES, dtype=np.float32).reshape(4, N_GENES)
    ids = [f"CPC004_A375_6H:BRD-K{i:05d}:10" for i in range(4)]
    path = tmp_path / "GSE92742_L5.gctx"
    write_broad_gctx(path, values, ids, ["A375"], symbols=old, entrez=entrez)
    sig = load_signatures(path, min_rows=1)
    assert sorted(sig.genes) == sorted(LM)  # 978 of 978
    np.testing.assert_array_equal(sig.values, _by_symbol(sig, values, np.arange(4)))
    assert data_cli(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "genes            978 (978 L1000 landmarks, coverage 100.0%)" in out
    assert f"renamed          {len(table)} previous symbols: " in out
    assert "CD97-TYPO -> ADGRE5" in out and "GPR56 -> ADGRG1" in out and "ERO1L -> ERO1A" in out
    # without the Entrez ids the table's previous symbols still match; the typo cannot
    path2 = tmp_path / "no_entrez.gctx"
    write_broad_gctx(path2, values, ids, ["A375"], symbols=old)
    genes = load_signatures(path2, min_rows=1).genes
    assert len(genes) == 978 and "CD97-TYPO" in genes and "ADGRE5" not in genes
    assert "ADGRG1" in genes and "GPR56" not in genes
    assert data_cli(["info", str(path2)]) == 0
    out = capsys.readouterr().out
    assert "genes            978 (977 L1000 landmarks, coverage 99.9%)" in out
    assert "not landmarks    1: CD97-TYPO" in out


def test_info_warns_of_replicate_wells_not_signatures(tmp_path, broad, data_cli, capsys):
    """Per-well metadata without any consensus (distil_*) field: Level 3/4 instances."""
    values = np.abs(np.random.default_rng(0).normal(8, 2, size=(6, N_GENES))).astype(np.float32)
    ids = [f"LJP005_A375_24H_X1_B19:A{i + 3:02d}" for i in range(6)]
    consensus = ("distil_cc_q75", "distil_nsample", "distil_ss", "pct_self_rank_q25")
    path = tmp_path / "LJP005_L3.gctx"
    write_broad_gctx(path, values, ids, ["A375"], drop_col_fields=consensus)
    assert data_cli(["info", str(path)]) == 0
    warning = [ln for ln in capsys.readouterr().out.splitlines() if "warning" in ln]
    assert len(warning) == 1 and "det_well, rna_well" in warning[0]
    assert "Level 3 (normalised expression" in warning[0]
    assert describe(load_signatures(broad[0]))["level_warning"] is None  # Level 5


def test_cmappy_written_gctx_loads_the_same(tmp_path, monkeypatch):
    """cmapPy's own writer, where it is installed (4.0.1 needs ``np.string_``, gone in numpy 2)."""
    monkeypatch.setattr(np, "string_", np.bytes_, raising=False)
    pytest.importorskip("cmapPy", reason="cmapPy not installed (unmaintained; not a dependency)")
    from cmapPy.pandasGEXpress import GCToo, write_gctx

    rng = np.random.default_rng(0)
    data = rng.normal(size=(1000, 12)).astype(np.float32)  # genes x signatures, as cmapPy holds it
    rm = pd.DataFrame(
        {
            "pr_gene_symbol": LM + [f"INF{i}" for i in range(22)],
            "pr_is_lmark": ["Y"] * 978 + ["N"] * 22,
        },
        index=pd.Index(probe_ids(1000), name="rid"),
    )
    cm = pd.DataFrame(
        {"cell_id": "A375", "pert_iname": [f"cpd{i % 5}" for i in range(12)], "pert_dose": 10.0},
        index=pd.Index([f"S{i}" for i in range(12)], name="cid"),
    )
    frame = pd.DataFrame(data, index=rm.index, columns=cm.index)
    gctoo = GCToo.GCToo(data_df=frame, row_metadata_df=rm, col_metadata_df=cm)
    write_gctx.write(gctoo, str(tmp_path / "c.gctx"))
    sig = load_signatures(tmp_path / "c.gctx")
    assert sig.genes == LM and list(sig.sample_ids) == list(cm.index)
    np.testing.assert_array_equal(sig.values, data[:978].T)
    pd.testing.assert_frame_equal(sig.metadata, cm.reset_index(drop=True), check_like=True)


def test_config_dataset_selects_from_embedded_metadata(broad, tmp_path):
    """A sweep config's dataset entry takes the same selection as the command line."""
    from deeppert.config import load_config
    from deeppert.grid import load_dataset

    path, values, ids, _ = broad
    cfg = tmp_path / "mcf7.yaml"
    cfg.write_text(
        f"name: mcf7\ndatasets:\n  - name: MCF7\n    path: {path}\n    cell_line: MCF7\n"
        "    pert_type: trt_cp\n    id_column: pert_iname\n"
    )
    config = load_config(cfg)
    sig = load_dataset(config.dataset("MCF7"))
    rows = [i for i in range(N_SIGS) if i % 3 == 1 and i % 7 != 0]
    assert list(sig.sample_ids) == [f"cpd-{i % 41}" for i in rows]
    assert list(sig.metadata["sig_id"]) == [ids[i] for i in rows]
    np.testing.assert_array_equal(sig.values, _by_symbol(sig, values, rows))
    # unset, the new options stay out of the hash: configs written before them keep their sweep
    cfg.write_text(f"name: mcf7\ndatasets:\n  - name: MCF7\n    path: {path}\n")
    plain = load_config(cfg)
    science = plain.to_dict()
    for key in ("id_column", "gene_columns", "pert_type", "siginfo", "geneinfo", "compoundinfo"):
        assert science["datasets"][0].pop(key) is None
    for key in ("tracking", "sweep", "search"):
        science.pop(key)
    assert (
        plain.sha256() == hashlib.sha256(json.dumps(science, sort_keys=True).encode()).hexdigest()
    )


def test_train_cli_reads_data_with_the_load_options(broad, tmp_path, data_cli, capsys):
    path, *_ = broad
    out = tmp_path / "out"
    cfg = tmp_path / "small.yaml"
    cfg.write_text("name: small\npreprocess:\n  n_components: 10\n")
    argv = ["train", "--config", str(cfg), "--data", str(path), "--out", str(out),
            "--models", "AE", "--dims", "2", "--runs", "1", "--epochs", "1",
            "--cell-line", "PC3", "--pert-type", "trt_cp"]  # fmt: skip
    assert data_cli(argv) == 0
    sig = pd.read_parquet(out / path.stem / "signatures.parquet")
    assert len(sig) == 86  # PC3 compound treatments only (of 300 signatures)
    capsys.readouterr()
    assert data_cli(["train", "--out", str(out), "--cell-line", "PC3"]) == 2
    err = capsys.readouterr().err
    assert "--cell-line describes how --data is read" in err
