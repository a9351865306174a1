"""The data layer: every format, LINCS metadata, orientation, validation messages, round trips."""

from __future__ import annotations

import json
import logging

import anndata
import h5py
import numpy as np
import pandas as pd
import pytest

from deeppert.cli import main
from deeppert.data import (
    Signatures,
    describe,
    landmark_genes,
    load_signatures,
    save_signatures,
)
from deeppert.errors import DeeppertError

LM = list(landmark_genes())
GENES = LM[:12]  # landmark symbols used by the small tables


def _frame(n: int = 12, genes: list[str] = GENES, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, len(genes))), columns=genes)
    frame.insert(0, "canonical_smiles", [f"C{'C' * (i % 5)}O" for i in range(n)])  # repeats
    frame["dose"] = rng.choice([0.04, 10.0], size=n)
    frame["drug_name"] = [f"drug{i}" for i in range(n)]
    return frame


@pytest.fixture
def data_cli(monkeypatch):
    """The CLI; a command imports only its own module, so these tests need no other step."""
    return main


def _only_file(tmp_path, name: str) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name != name)


# ----------------------------------------------------------------------------- tabular


def test_csv_picks_landmarks_ids_and_metadata(tmp_path):
    frame = _frame()
    frame["ID"] = range(len(frame))  # numeric, not a landmark: metadata
    frame.insert(0, "Unnamed: 0", range(len(frame)))
    path = tmp_path / "x.csv"
    text = frame.to_csv(index=False).replace("Unnamed: 0", "", 1)  # a real unnamed index column
    path.write_text(text)
    sig = load_signatures(path)
    assert sig.genes == GENES
    np.testing.assert_array_equal(sig.values, frame[GENES].to_numpy())
    assert list(sig.sample_ids) == list(frame["canonical_smiles"])
    assert len(set(sig.sample_ids)) == 5 and sig.n_samples == 12  # repeats kept apart
    assert list(sig.metadata.columns) == ["Unnamed: 0", "dose", "drug_name", "ID"]
    np.testing.assert_array_equal(sig.metadata["dose"], frame["dose"])


def test_tsv_and_txt_and_explicit_options(tmp_path):
    frame = _frame()
    for name in ("x.tsv", "x.txt"):
        frame.to_csv(tmp_path / name, sep="\t", index=False)
        sig = load_signatures(tmp_path / name)
        assert sig.genes == GENES
    sig = load_signatures(
        tmp_path / "x.tsv", gene_columns=GENES[3:0:-1], id_column="drug_name", min_genes=3
    )
    assert sig.genes == [GENES[3], GENES[2], GENES[1]]  # the order asked for
    np.testing.assert_array_equal(sig.values[:, 0], frame[GENES[3]])
    assert sig.sample_ids[0] == "drug0"
    assert "canonical_smiles" in sig.metadata.columns


def test_no_landmark_columns_falls_back_to_numeric(tmp_path, caplog):
    frame = pd.DataFrame(np.arange(60.0).reshape(12, 5), columns=[f"g{i}" for i in range(5)])
    frame.insert(0, "name", [f"s{i}" for i in range(12)])
    frame.to_csv(tmp_path / "x.csv", index=False)
    with caplog.at_level(logging.INFO):
        sig = load_signatures(tmp_path / "x.csv", min_genes=5)
    assert sig.genes == [f"g{i}" for i in range(5)]
    assert list(sig.sample_ids) == [f"s{i}" for i in range(12)]  # first non-gene text column
    assert "no L1000 landmark symbol" in caplog.text


def test_ids_fall_back_to_row_positions(tmp_path):
    frame = _frame()[GENES]
    frame.to_csv(tmp_path / "x.csv", index=False)
    sig = load_signatures(tmp_path / "x.csv")
    assert list(sig.sample_ids) == [str(i) for i in range(12)]
    assert sig.metadata is None


def test_parquet_round_trip_exact_with_duplicates_and_other_genes(tmp_path):
    rng = np.random.default_rng(1)
    # Not landmarks: the Parquet file records which columns are genes.
    genes = [f"gene{i}" for i in range(11)]
    ids = np.array(["a", "b", "a", "007", "b", "c", "d", "e", "f", "g", "a", "h"])
    meta = pd.DataFrame({"dose": rng.normal(size=12), "drug": list("abcdefghijkl")})
    sig = Signatures(rng.normal(size=(12, 11)) * 1e-7 + np.pi, ids, genes, meta)
    save_signatures(sig, tmp_path / "s.parquet")
    back = load_signatures(tmp_path / "s.parquet")
    assert back.genes == genes
    np.testing.assert_array_equal(back.sample_ids, ids)
    np.testing.assert_array_equal(back.values, sig.values)  # bit-exact
    pd.testing.assert_frame_equal(back.metadata, meta)
    assert _only_file(tmp_path, "s.parquet") == []  # no temp file left


def test_csv_round_trip_exact(tmp_path):
    rng = np.random.default_rng(2)
    ids = np.array(["007", "007", "x", "1e3"] * 3)  # leading zeros and numeric-looking ids survive
    sig = Signatures(
        rng.normal(size=(12, 12)) / 3, ids, GENES, pd.DataFrame({"dose": np.arange(12.0)})
    )
    save_signatures(sig, tmp_path / "s.csv")
    back = load_signatures(tmp_path / "s.csv")
    np.testing.assert_array_equal(back.sample_ids, ids)
    assert back.genes == GENES
    np.testing.assert_array_equal(back.values, sig.values)
    np.testing.assert_array_equal(back.metadata["dose"], np.arange(12.0))


def test_h5ad_reads_obs_and_var_names(tmp_path):
    rng = np.random.default_rng(3)
    var = GENES + ["NOT_A_LANDMARK"]
    x = rng.normal(size=(12, len(var)))
    obs = pd.DataFrame({"dose": np.arange(12.0)}, index=[f"sig{i}" for i in range(12)])
    anndata.AnnData(x, obs=obs, var=pd.DataFrame(index=var)).write_h5ad(tmp_path / "x.h5ad")
    sig = load_signatures(tmp_path / "x.h5ad")
    assert sig.genes == GENES  # the non-landmark var is not a gene by default
    np.testing.assert_array_equal(sig.values, x[:, :12])
    assert list(sig.sample_ids) == list(obs.index)
    assert list(sig.metadata.columns) == ["NOT_A_LANDMARK", "dose"]  # non-gene vars are metadata
    np.testing.assert_array_equal(sig.metadata["dose"], np.arange(12.0))
    by_obs = load_signatures(tmp_path / "x.h5ad", id_column="dose")
    assert list(by_obs.sample_ids) == [str(float(i)) for i in range(12)]
    assert list(by_obs.metadata.columns) == ["NOT_A_LANDMARK", "obs_name"]  # own ids kept
    assert list(by_obs.metadata["obs_name"]) == list(obs.index)


# ----------------------------------------------------------------------------- GCTX + LINCS tables


# Entrez ids of the landmarks, then three inferred (non-landmark) genes.
ENTREZ = [str(1000 + i) for i in range(len(GENES))] + ["9001", "9002", "9003"]
SIGS = [f"PLATE{i // 4}_{'A549' if i % 2 == 0 else 'MCF7'}_24H:BRD-{i:03d}:10" for i in range(30)]


def _value(i_sig: int, i_gene: int) -> float:
    return 1000.0 * i_sig + i_gene  # planted: reveals any transposition or reordering


def _write_gctx(path, layout: str) -> None:
    """A GCTX written with h5py in LINCS layout (ROW = genes, COL = signatures) or its variants."""
    truth = np.array(
        [[_value(s, g) for g in range(len(ENTREZ))] for s in range(len(SIGS))], dtype=np.float32
    )
    genes_b = np.array([g.encode() for g in ENTREZ])
    sigs_b = np.array([s.encode() for s in SIGS])
    with h5py.File(path, "w") as f:
        if layout == "lincs":  # cmapPy: dataset shape (n COL ids, n ROW ids) = (signatures, genes)
            row, col, data = genes_b, sigs_b, truth
        elif layout == "meta_swapped":  # ROW = signatures, COL = genes, same cmapPy convention
            row, col, data = sigs_b, genes_b, truth.T
        elif layout == "row_major":  # dataset shape (n ROW ids, n COL ids), ROW = genes
            row, col, data = genes_b, sigs_b, truth.T
        else:
            raise AssertionError(layout)
        f.create_dataset("0/DATA/0/matrix", data=data, chunks=True)
        f.create_dataset("0/META/ROW/id", data=row)
        f.create_dataset("0/META/COL/id", data=col)
        f.create_dataset("0/META/ROW/pr_gene_symbol", data=np.array([b"x"] * len(row)))
        f.attrs["version"] = "GCTX1.0"


def _write_lincs_tables(tmp_path, release: str) -> dict:
    pert = [f"BRD-{i % 7:03d}" for i in range(len(SIGS))]
    ptype = ["ctl_vehicle" if i % 10 == 0 else "trt_cp" for i in range(len(SIGS))]
    cells = ["A549" if i % 2 == 0 else "MCF7" for i in range(len(SIGS))]
    feature = ["landmark"] * len(GENES) + ["best inferred"] * 3
    smiles = {f"BRD-{k:03d}": ("" if k == 3 else f"C{'C' * k}N") for k in range(7)}
    if release == "beta":
        sig = pd.DataFrame(
            {
                "sig_id": SIGS,
                "pert_id": pert,
                "pert_type": ptype,
                "cell_iname": cells,
                "cmap_name": [f"cpd{p[-1]}" for p in pert],
                "pert_dose": 10,
            }
        )
        gene = pd.DataFrame(
            {"gene_id": ENTREZ, "gene_symbol": GENES + ["I1", "I2", "I3"], "feature_space": feature}
        )
        # One row per compound and target, as in compoundinfo_beta.txt.
        rows = [(p, f"cpd{p[-1]}", t, s) for p, s in smiles.items() for t in ("T1", "T2")]
        cpd = pd.DataFrame(rows, columns=["pert_id", "cmap_name", "target", "canonical_smiles"])
        names = ("siginfo_beta.txt", "geneinfo_beta.txt", "compoundinfo_beta.txt")
    else:
        sig = pd.DataFrame(
            {
                "sig_id": SIGS,
                "pert_id": pert,
                "pert_iname": [f"cpd{p[-1]}" for p in pert],
                "pert_type": ptype,
                "cell_id": cells,
            }
        )
        gene = pd.DataFrame(
            {
                "pr_gene_id": ENTREZ,
                "pr_gene_symbol": GENES + ["I1", "I2", "I3"],
                "pr_is_lm": [1] * len(GENES) + [0] * 3,
            }
        )
        cpd = pd.DataFrame(
            {
                "pert_id": list(smiles),
                "pert_iname": [f"cpd{p[-1]}" for p in smiles],
                "canonical_smiles": [s or "-666" for s in smiles.values()],
            }
        )
        names = ("sig_info.txt", "gene_info.txt", "pert_info.txt")
    out = {}
    for key, table, name in zip(
        ("siginfo", "geneinfo", "compoundinfo"), (sig, gene, cpd), names, strict=True
    ):
        table.to_csv(tmp_path / name, sep="\t", index=False)
        out[key] = tmp_path / name
    return out


@pytest.mark.parametrize("layout", ["lincs", "meta_swapped", "row_major"])
def test_gctx_orientation_without_tables(tmp_path, layout):
    _write_gctx(tmp_path / "x.gctx", layout)
    sig = load_signatures(tmp_path / "x.gctx")
    assert sig.genes == ENTREZ  # the all-integer (Entrez) axis is the gene axis
    assert list(sig.sample_ids) == SIGS
    expected = np.array([[_value(s, g) for g in range(len(ENTREZ))] for s in range(len(SIGS))])
    np.testing.assert_array_equal(sig.values, expected)


@pytest.mark.parametrize("release", ["beta", "gse92742"])
@pytest.mark.parametrize("layout", ["lincs", "meta_swapped"])
def test_gctx_with_lincs_tables(tmp_path, release, layout):
    _write_gctx(tmp_path / "x.gctx", layout)
    tables = _write_lincs_tables(tmp_path, release)
    sig = load_signatures(
        tmp_path / "x.gctx",
        cell_line="A549",
        siginfo=tables["siginfo"],
        geneinfo=tables["geneinfo"],
        min_rows=5,
    )
    keep = [i for i in range(len(SIGS)) if i % 2 == 0 and i % 10 != 0]  # A549 and trt_cp
    assert list(sig.sample_ids) == [SIGS[i] for i in keep]
    assert sig.genes == GENES  # landmarks only, named by symbol, inferred genes dropped
    expected = np.array([[_value(s, g) for g in range(len(GENES))] for s in keep])
    np.testing.assert_array_equal(sig.values, expected)
    assert set(sig.metadata["cell_line"]) == {"A549"}
    assert set(sig.metadata["pert_type"]) == {"trt_cp"}

    sig = load_signatures(tmp_path / "x.gctx", cell_line="A549", min_rows=5, **tables)
    pert = [f"BRD-{i % 7:03d}" for i in keep]
    want = [p if p == "BRD-003" else f"C{'C' * int(p[-1])}N" for p in pert]  # SMILES, else pert_id
    assert list(sig.sample_ids) == want
    assert list(sig.metadata["sig_id"]) == [SIGS[i] for i in keep]
    assert sig.metadata["canonical_smiles"].isna().tolist() == [p == "BRD-003" for p in pert]
    assert list(sig.metadata["compound_name"]) == [f"cpd{p[-1]}" for p in pert]


def test_lincs_table_errors(tmp_path):
    _write_gctx(tmp_path / "x.gctx", "lincs")
    tables = _write_lincs_tables(tmp_path, "beta")
    with pytest.raises(
        DeeppertError, match=r"no signatures for cell line 'HEPG2' \(present: A549, MCF7\)"
    ):
        load_signatures(tmp_path / "x.gctx", cell_line="HEPG2", siginfo=tables["siginfo"])
    with pytest.raises(
        DeeppertError,
        match=r"x.gctx: selecting cell line 'A549' needs a metadata field 'cell_iname' or 'cell_id' "
        r"or 'cell_line'; fields present: none",
    ):
        load_signatures(tmp_path / "x.gctx", cell_line="A549")
    pd.DataFrame({"sig_id": SIGS, "pert_type": "trt_cp"}).to_csv(
        tmp_path / "bad.txt", sep="\t", index=False
    )
    with pytest.raises(
        DeeppertError,
        match=r"bad.txt: signature info table has no column 'cell_iname' or 'cell_id'",
    ):
        load_signatures(tmp_path / "x.gctx", siginfo=tmp_path / "bad.txt")
    with h5py.File(tmp_path / "broken.gctx", "w") as f:
        f.create_dataset("0/DATA/0/matrix", data=np.zeros((3, 4)))
    with pytest.raises(
        DeeppertError, match=r"broken.gctx: not a GCTX file: dataset '0/META/ROW/id' not found"
    ):
        load_signatures(tmp_path / "broken.gctx")


# ----------------------------------------------------------------------------- validation errors


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DeeppertError, match=r"nope.csv: file not found"):
        load_signatures(tmp_path / "nope.csv")
    (tmp_path / "x.xlsx").write_text("a")
    with pytest.raises(DeeppertError, match=r"x.xlsx: cannot infer the format from suffix '.xlsx'"):
        load_signatures(tmp_path / "x.xlsx")


def test_non_numeric_value_names_column_and_row(tmp_path):
    frame = _frame().astype({GENES[4]: object})
    frame.loc[7, GENES[4]] = "n/a?"
    frame.to_csv(tmp_path / "x.csv", index=False)
    msg = rf"x.csv: non-numeric value 'n/a\?' in gene column '{GENES[4]}' at row 7 \(id 'CCCO'\)"
    with pytest.raises(DeeppertError, match=msg):
        load_signatures(tmp_path / "x.csv")


def test_missing_values_rejected_unless_filled(tmp_path):
    frame = _frame()
    frame.loc[5, GENES[2]] = np.nan
    frame.to_csv(tmp_path / "x.csv", index=False)
    msg = rf"1 missing value\(s\) \(NaN\), first in gene column '{GENES[2]}' at row 5 \(id 'CO'\); pass fill_missing=True"
    with pytest.raises(DeeppertError, match=msg):
        load_signatures(tmp_path / "x.csv")
    sig = load_signatures(tmp_path / "x.csv", fill_missing=True)
    assert sig.values[5, 2] == 0.0
    np.testing.assert_array_equal(sig.values[4], frame.loc[4, GENES].to_numpy(float))


def test_infinite_values_always_rejected(tmp_path):
    frame = _frame()
    frame.loc[3, GENES[0]] = -np.inf
    frame.to_csv(tmp_path / "x.csv", index=False)
    for fill in (False, True):
        with pytest.raises(
            DeeppertError,
            match=rf"infinite value -inf in gene column '{GENES[0]}' at row 3 \(id 'CCCCO'\)",
        ):
            load_signatures(tmp_path / "x.csv", fill_missing=fill)


def test_duplicated_gene_columns(tmp_path):
    text = _frame().to_csv(index=False).splitlines()
    text[0] = text[0].replace(GENES[6], GENES[1])  # header now names GENES[1] twice
    (tmp_path / "x.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(
        DeeppertError, match=rf"duplicated gene column '{GENES[1]}' \(column positions \[2, 7\]\)"
    ):
        load_signatures(tmp_path / "x.csv")


def test_too_few_rows_or_genes(tmp_path):
    _frame(n=4).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(DeeppertError, match=r"x.csv: 4 row\(s\), fewer than the minimum 10"):
        load_signatures(tmp_path / "x.csv")
    with pytest.raises(
        DeeppertError, match=r"x.csv: 12 gene column\(s\), fewer than the minimum 50"
    ):
        load_signatures(tmp_path / "x.csv", min_rows=1, min_genes=50)


def test_unknown_id_or_gene_column(tmp_path):
    _frame().to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(DeeppertError, match=r"x.csv: id column 'sig' not found"):
        load_signatures(tmp_path / "x.csv", id_column="sig")
    with pytest.raises(DeeppertError, match=r"x.csv: gene column\(s\) not found: 'NOPE'"):
        load_signatures(tmp_path / "x.csv", gene_columns=["NOPE", GENES[0]])


def test_save_refuses_clashing_metadata_and_leaves_nothing(tmp_path):
    sig = Signatures(np.zeros((2, 2)), ["a", "b"], ["G1", "G2"], pd.DataFrame({"G1": [1, 2]}))
    with pytest.raises(DeeppertError, match=r"s.parquet: metadata column\(s\) \['G1'\] clash"):
        save_signatures(sig, tmp_path / "s.parquet")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- describe / CLI


def test_describe_and_info_cli(tmp_path, capsys, data_cli):
    sig = Signatures(
        np.array([[1.0, -2.0], [3.0, 0.5], [0.0, 0.0]]), ["a", "a", "b"], [LM[0], "XYZ"]
    )
    d = describe(sig)
    assert (d["rows"], d["genes"], d["unique_ids"], d["duplicated_id_rows"]) == (3, 2, 2, 2)
    assert d["landmark_genes"] == 1 and d["landmark_coverage"] == pytest.approx(1 / 978)
    assert (d["value_min"], d["value_max"]) == (-2.0, 3.0)

    _frame().to_csv(tmp_path / "x.csv", index=False)
    assert data_cli(["info", str(tmp_path / "x.csv"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["rows"], out["genes"], out["duplicated_id_rows"]) == (12, 12, 12)
    assert out["metadata_columns"] == ["dose", "drug_name"]
    assert data_cli(["info", str(tmp_path / "x.csv")]) == 0
    assert "12 L1000 landmarks" in capsys.readouterr().out


def test_info_cli_bad_input_exit_2(tmp_path, capsys, data_cli):
    frame = _frame()
    frame.loc[0, GENES[0]] = np.nan
    frame.to_csv(tmp_path / "x.csv", index=False)
    assert data_cli(["info", str(tmp_path / "x.csv")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "deeppert info: error:" in captured.err and "missing value" in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]
    assert data_cli(["info", str(tmp_path / "x.csv"), "--fill-missing", "--json"]) == 0


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_a375_combination(seed_data):
    path = seed_data / "downstream" / "drug_combination" / "A375_COMBINATION.csv"
    sig = load_signatures(path)
    assert sig.genes == LM  # exactly the 978 landmarks, in L1000 order
    assert sig.n_samples == 22
    assert list(sig.metadata.columns) == ["dose", "can_SMILES", "ID", "drug_name", "smiles"]
    head = pd.read_csv(path, nrows=1)
    assert sig.sample_ids[0] == head["canonical_smiles"].iloc[0]
    assert sig.values[0, 0] == head["DDR1"].iloc[0]


@pytest.mark.realdata
def test_real_renal_and_vcap(seed_data):
    renal = load_signatures(seed_data / "downstream" / "toxicity" / "Renal_HA1E.csv")
    assert renal.genes == LM and renal.n_samples == 196
    assert {"Label", "dose", "SMILES"} <= set(renal.metadata.columns)
    vcap = load_signatures(seed_data / "downstream" / "drug_combination" / "VCAP_COMBINATION.csv")
    assert vcap.genes == LM and "Unnamed: 0" in vcap.metadata.columns


# ----------------------------------------------------------------------------- input traps


def test_lowercase_landmarks_are_an_error_not_a_numeric_fallback(tmp_path, data_cli, capsys):
    frame = _frame(genes=[g.lower() for g in GENES])  # every gene column in the wrong case
    frame.to_csv(tmp_path / "lower.csv", index=False)
    with pytest.raises(
        DeeppertError,
        match=r"lower.csv: 12 column\(s\) are L1000 landmark symbols only when case is ignored "
        rf"\('{GENES[0].lower()}' for '{GENES[0]}'",
    ):
        load_signatures(tmp_path / "lower.csv")  # before: 'dose' silently became a gene
    mixed = _frame()
    mixed[GENES[0].lower() + "_x"] = 1.0  # not a landmark in any case: metadata, as before
    mixed["psme1"] = 0.5
    mixed.to_csv(tmp_path / "mixed.csv", index=False)
    with pytest.raises(DeeppertError, match=r"1 column\(s\) are .* \('psme1' for 'PSME1'\)"):
        load_signatures(tmp_path / "mixed.csv")
    # the explicit way out: --gene-columns, by list or @file, in the order given
    names = [g.lower() for g in GENES][::-1]
    (tmp_path / "genes.txt").write_text("\n".join(names) + "\n")
    for spec in (",".join(names), f"@{tmp_path / 'genes.txt'}"):
        assert (
            data_cli(["info", str(tmp_path / "lower.csv"), "--gene-columns", spec, "--json"]) == 0
        )
        d = json.loads(capsys.readouterr().out)
        assert d["genes"] == 12 and d["first_genes"] == names[:5]
        assert "dose" in d["metadata_columns"]
    assert data_cli(["info", str(tmp_path / "lower.csv")]) == 2
    assert "landmark symbols only when case is ignored" in capsys.readouterr().err


def test_text_na_in_a_gene_column_is_not_missing(tmp_path):
    frame = _frame()
    text = frame.to_csv(index=False).splitlines()
    row = text[3].split(",")
    row[1] = "n/a"  # first gene column of data row 2
    text[3] = ",".join(row)
    (tmp_path / "na.csv").write_text("\n".join(text) + "\n")
    for fill in (False, True):
        with pytest.raises(
            DeeppertError,
            match=rf"na.csv: non-numeric value 'n/a' in gene column '{GENES[0]}' at row 2",
        ):
            load_signatures(tmp_path / "na.csv", fill_missing=fill)
    row[1] = ""  # an empty cell is missing: an error unless filled
    text[3] = ",".join(row)
    (tmp_path / "empty.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DeeppertError, match=r"1 missing value\(s\) \(NaN\)"):
        load_signatures(tmp_path / "empty.csv")
    assert load_signatures(tmp_path / "empty.csv", fill_missing=True).values[2, 0] == 0.0


def test_binary_file_named_csv(tmp_path, data_cli, capsys):
    rng = np.random.default_rng(0)
    (tmp_path / "garbage.csv").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(4000))
    with pytest.raises(
        DeeppertError,
        match=r"garbage.csv: not a CSV text file: byte b'\\x89' at offset 0 is not UTF-8",
    ):
        load_signatures(tmp_path / "garbage.csv")
    assert data_cli(["info", str(tmp_path / "garbage.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "garbage.csv: not a CSV text file" in err[0]
