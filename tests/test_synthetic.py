"""The synthetic generator: determinism, planted modules, signal fraction, pair tables, writing, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from deeppert.cli import main
from deeppert.data import (
    TARGET_PAIR_FILES,
    SynthConfig,
    landmark_genes,
    load_signatures,
    make_synthetic,
    write_synthetic,
)
from deeppert.errors import DeeppertError
from deeppert.synth_config import N_LANDMARKS

SMALL = SynthConfig(
    n_samples=400,
    n_programs=4,
    module_size=25,
    n_known_pairs=30,
    n_disease_programs=2,
    n_decoy_pairs=15,
    seed=7,
)


@pytest.fixture
def data_cli(monkeypatch):
    """The CLI; a command imports only its own module, so these tests need no other step."""
    return main


@pytest.fixture(scope="module")
def small():
    return make_synthetic(SMALL)


def test_deterministic_for_a_seed(small):
    again = make_synthetic(SMALL)
    np.testing.assert_array_equal(again.signatures.values, small.signatures.values)
    pd.testing.assert_frame_equal(again.known_pairs, small.known_pairs)
    pd.testing.assert_frame_equal(again.signatures.metadata, small.signatures.metadata)
    other = make_synthetic(SynthConfig(**{**SMALL.to_dict(), "seed": 8}))
    assert not np.allclose(other.signatures.values, small.signatures.values)


@pytest.mark.parametrize("activity", ["gaussian", "laplace", "student_t"])
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_realised_signal_fraction(activity, fraction):
    data = make_synthetic(
        SynthConfig(n_samples=300, n_programs=3, signal_fraction=fraction, activity=activity)
    )
    assert data.signal_fraction == pytest.approx(fraction, abs=1e-9)
    # Recompute from the ground truth alone: signal = activities @ loadings.
    x = data.signatures.values
    signal = data.activities.to_numpy() @ data.loadings.to_numpy()
    sc, xc = signal - signal.mean(0), x - x.mean(0)
    assert (sc**2).sum() / (xc**2).sum() == pytest.approx(fraction, abs=1e-9)
    assert np.std(x - signal) == pytest.approx(data.noise_std, rel=0.02)
    assert xc.var(0).mean() == pytest.approx(1.0)  # level-5-like scale


def test_heavy_tailed_activities_have_heavy_tails():
    kurt = {}
    for activity in ("gaussian", "student_t"):
        a = make_synthetic(
            SynthConfig(n_samples=4000, activity=activity, seed=1)
        ).activities.to_numpy()
        kurt[activity] = float(((a - a.mean(0)) ** 4).mean() / a.var(0).mean() ** 2)
        assert a.var(0) == pytest.approx(np.ones(5), abs=0.15)
    assert kurt["gaussian"] == pytest.approx(3.0, abs=0.3)
    assert kurt["student_t"] > 4.0


def test_modules_disjoint_sized_and_dominant(small):
    m = small.membership
    assert m.shape == (978, 4) and list(m.index) == list(landmark_genes())
    assert (m.sum(axis=0) == 25).all()
    assert (m.sum(axis=1) <= 1).all()  # disjoint
    load = small.loadings.to_numpy()
    for k in range(4):
        own = np.abs(load[k, m.iloc[:, k].to_numpy()])
        other = np.abs(load[k, ~m.iloc[:, k].to_numpy()])
        assert own.min() > 3 * np.median(other) and own.mean() > 5 * other.mean()
        assert small.module_genes(k) == list(m.index[m.iloc[:, k]])
    assert small.signatures.genes == list(landmark_genes())
    assert (
        small.signatures.sample_ids[0] == "SYN000001"
        and small.signatures.sample_ids[-1] == "SYN000400"
    )
    assert list(small.signatures.metadata.columns) == [
        "pert_id",
        "dose",
        "cell_iname",
        "dominant_program",
    ]


def test_module_genes_covary(small):
    """Planted modules are visible in the data: within-module |corr| beats between-module |corr|."""
    corr = np.abs(np.corrcoef(small.signatures.values.T))
    m = small.membership.to_numpy()
    same = (m @ m.T).astype(bool) & ~np.eye(978, dtype=bool)
    assert corr[same].mean() > 3 * corr[~same & ~np.eye(978, dtype=bool)].mean()


def _merged(folder):
    info, mapping, trials = (pd.read_csv(folder / name, sep="\t") for name in TARGET_PAIR_FILES)
    merged = mapping.merge(trials, on="dcid").merge(info, on="tpid")
    return merged.drop_duplicates(subset=["genename1", "genename2", "fd_name"])


def test_write_and_pair_tables(small, tmp_path):
    out = write_synthetic(small, tmp_path / "syn")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]  # no temp folder left
    assert sorted(p.name for p in (out / "target_pairs").iterdir()) == sorted(TARGET_PAIR_FILES)
    sig = load_signatures(out / "signatures.parquet")
    np.testing.assert_array_equal(sig.values, small.signatures.values)
    np.testing.assert_array_equal(sig.sample_ids, small.signatures.sample_ids)
    member = pd.read_parquet(out / "ground_truth" / "module_membership.parquet")
    pd.testing.assert_frame_equal(member, small.membership)
    summary = json.loads((out / "ground_truth" / "summary.json").read_text())
    assert summary["signal_fraction"] == pytest.approx(0.6, abs=1e-9)
    assert summary["modules"]["P2"] == small.module_genes(1)

    merged = _merged(out / "target_pairs")
    module_of = {g: p for p in member.columns for g in member.index[member[p]]}
    disease = merged[merged["fd_name"] == "Synthetic Disease"]
    decoy = merged[merged["fd_name"] == "Synthetic Decoy Disease"]
    assert len(disease) == 30 and len(decoy) == 15
    for a, b in zip(disease["genename1"], disease["genename2"], strict=True):
        assert module_of.get(a) is not None and module_of.get(a) == module_of.get(b)
        assert module_of[a] in {"P1", "P2"}  # n_disease_programs = 2
    assert {module_of.get(a) for a in disease["genename1"]} == {"P1", "P2"}
    for a, b in zip(decoy["genename1"], decoy["genename2"], strict=True):
        assert module_of.get(a) is None or module_of.get(a) != module_of.get(b)
    assert (merged["tp_name"] == merged["genename1"] + ";" + merged["genename2"]).all()

    write_synthetic(
        make_synthetic(SynthConfig(n_samples=50, n_known_pairs=5, n_decoy_pairs=2)), out
    )
    assert len(pd.read_parquet(out / "ground_truth" / "activities.parquet")) == 50  # replaced whole


def test_write_refuses_foreign_folder(small, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DeeppertError, match="exists and is not an earlier synth output; refusing"):
        write_synthetic(small, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"signal_fraction": 1.0}, r"signal_fraction must lie in \(0, 1\), got 1.0"),
        (
            {"n_programs": 30, "module_size": 40},
            "the modules cover 1200 genes, more than the 978",
        ),
        ({"n_known_pairs": 1000, "module_size": 10}, "n_known_pairs must lie in"),
        ({"activity": "cauchy"}, "synthetic.activity must be one of"),
    ],
)
def test_config_validation(change, message):
    with pytest.raises(DeeppertError, match=message):
        SynthConfig(**change)


def test_default_config_is_the_pinned_one():
    data = make_synthetic()
    assert data.signatures.values.shape == (5000, 978)
    assert data.signal_fraction == pytest.approx(0.6, abs=1e-9)
    assert (data.membership.sum(axis=0) == 40).all() and data.membership.shape[1] == 5


def test_synth_cli(tmp_path, capsys, data_cli):
    out = tmp_path / "syn"
    rc = data_cli(
        [
            "synth",
            "--out",
            str(out),
            "--n-samples",
            "200",
            "--n-programs",
            "3",
            "--seed",
            "3",
            "--signal-fraction",
            "0.5",
            "--activity",
            "laplace",
        ]
    )
    assert rc == 0
    assert "signal fraction 0.5000" in capsys.readouterr().out
    summary = json.loads((out / "ground_truth" / "summary.json").read_text())
    assert summary["config"]["seed"] == 3 and summary["config"]["activity"] == "laplace"
    assert summary["n_samples"] == 200 and summary["signal_fraction"] == pytest.approx(0.5)
    assert data_cli(["info", str(out / "signatures.parquet"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["landmark_coverage"] == 1.0


def test_synth_cli_bad_input_exit_2_no_output(tmp_path, capsys, data_cli):
    out = tmp_path / "syn"
    assert data_cli(["synth", "--out", str(out), "--signal-fraction", "1.5"]) == 2
    captured = capsys.readouterr()
    assert (
        "deeppert synth: error: synthetic config: signal_fraction must lie in (0, 1), got 1.5"
        in captured.err
    )
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []


def test_synth_cli_writes_heavy_tailed_programs_by_default(tmp_path, data_cli):
    out = tmp_path / "syn"
    assert data_cli(["synth", "--out", str(out), "--n-samples", "3000", "--n-programs", "2"]) == 0
    summary = json.loads((out / "ground_truth" / "summary.json").read_text())
    assert summary["config"]["activity"] == "laplace"
    a = pd.read_parquet(out / "ground_truth" / "activities.parquet").to_numpy()
    kurtosis = ((a - a.mean(0)) ** 4).mean(0) / a.var(0) ** 2
    assert (kurtosis > 4.5).all()  # Laplace: 6; Gaussian: 3
    assert (pd.read_parquet(out / "ground_truth" / "responses.parquet") == "linear").all().all()


def test_overlapping_modules_and_balanced_signs():
    data = make_synthetic(
        SynthConfig(n_samples=50, n_programs=4, module_size=30, module_overlap=10, signs="balanced")
    )
    m = data.membership.to_numpy()
    assert (m.sum(0) == 30).all() and m.any(1).sum() == 4 * 20 + 10
    shared = m.T.astype(int) @ m.astype(int)
    assert all(shared[k, k + 1] == 10 for k in range(3)) and shared[0, 2] == 0
    load = data.loadings.to_numpy()
    for k in range(4):
        assert (load[k, m[:, k]] < 0).sum() == 15  # exactly half of each module negative


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_nonlinear_worlds_respond_with_the_planted_shapes():
    cfg = SynthConfig(
        n_samples=4000,
        n_programs=3,
        module_size=30,
        activity="laplace",
        response="mixed",
        interaction=True,
        signal_fraction=0.9,
        seed=2,
    )
    data = make_synthetic(cfg)
    assert data.signal_fraction == pytest.approx(0.9, abs=1e-9)
    shapes, a = data.responses, data.activities.to_numpy()
    x = data.signatures.values
    for k in range(2):  # programs 1-2: a third of each module per shape
        counts = shapes.iloc[k][data.membership.iloc[:, k]].value_counts()
        assert counts.to_dict() == {"linear": 10, "tanh": 10, "threshold": 10}
    assert set(shapes.iloc[2][data.membership.iloc[:, 2]]) == {"product"}
    assert set(shapes.to_numpy()[~data.membership.to_numpy().T]) == {"linear"}
    genes = list(shapes.columns)
    for shape, f in (("tanh", np.tanh(2 * a[:, 0])), ("threshold", np.maximum(a[:, 0] - 0.5, 0))):
        g = genes.index(shapes.columns[(shapes.iloc[0] == shape).to_numpy()][0])
        assert abs(_corr(x[:, g], f)) > abs(_corr(x[:, g], a[:, 0])) + 0.02
    g = genes.index(shapes.columns[(shapes.iloc[2] == "product").to_numpy()][0])
    assert abs(_corr(x[:, g], a[:, 1] * a[:, 2])) > 0.7 > 0.2 > abs(_corr(x[:, g], a[:, 2]))
    with pytest.raises(DeeppertError, match="module_overlap"):
        SynthConfig(module_size=10, module_overlap=10)
    with pytest.raises(DeeppertError, match="interaction needs"):
        SynthConfig(n_programs=1, interaction=True)


def test_module_recovery_matches_modules_to_programs_one_to_one():
    from deeppert.data.synthetic import module_recovery

    genes = [f"g{i}" for i in range(12)]
    membership = pd.DataFrame(False, index=genes, columns=["m0", "m1"])
    membership.iloc[0:3, 0] = True
    membership.iloc[3:6, 1] = True
    weights = pd.DataFrame(0.0, index=["c0", "c1", "c2"], columns=genes)
    weights.loc["c1", ["g0", "g1", "g2"]] = [-3.0, 2.0, 1.0]  # |w|: sign does not matter
    weights.loc["c0", ["g3", "g4", "g9"]] = 1.0  # 2 of its top 3 in m1
    weights.loc["c2", ["g3", "g4", "g5"]] = 0.5  # all 3 in m1: m1 takes c2 over c0
    table = module_recovery(weights, membership)
    assert list(table["program"]) == ["c1", "c2"]
    assert table["precision"].tolist() == [1.0, 1.0]
    assert table.attrs["matrix"].loc["m1", "c0"] == pytest.approx(2 / 3)


def test_the_numpy_free_landmark_count_matches_the_gene_file() -> None:
    """``SynthConfig`` checks module coverage against N_LANDMARKS without reading the file."""
    assert N_LANDMARKS == len(landmark_genes())
    assert SynthConfig.__module__ == "deeppert.synth_config"
    assert make_synthetic.__module__ == "deeppert.data.synthetic"
