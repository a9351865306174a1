"""Tests of deeppert.targets and ``deeppert targets``: synthetic quirks, statistics, bad input, real data."""

from __future__ import annotations

import inspect
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deeppert import cli
from deeppert.errors import DeeppertError
from deeppert.targets import (
    MATCH_COLUMNS,
    PAIR_COLUMNS,
    SUMMARY_COLUMNS,
    TargetConfig,
    auto_threshold,
    chance_rate,
    empirical_pvalues,
    hypergeom_pvalue,
    known_matrix,
    load_known_pairs,
    load_weights,
    merge_known_pairs,
    predict_targets,
    prepare_weights,
    read_gene_list,
    run_all_diseases,
    write_target_outputs,
)
from deeppert.targets._pairs import MAPPING_FILE, PAIR_INFO_FILE, TRIALS_FILE

TC = "target_combination"
OV7 = "OV7_DeepProfile_Ensemble_Gene_Importance_Weights_95L.tsv"


# ----------------------------------------------------------------------------- helpers
def weights_from(rows: list[tuple[str, list[float]]]) -> pd.DataFrame:
    """clusters x genes frame from (gene, values per cluster) rows."""
    values = np.array([v for _, v in rows], dtype=float).T
    return pd.DataFrame(
        values, index=[str(i) for i in range(values.shape[0])], columns=[g for g, _ in rows]
    )


def fillers(rng: np.random.Generator, n: int, width: int) -> list[tuple[str, list[float]]]:
    return [(f"F{i}", list(0.01 * rng.random(width))) for i in range(n)]


def summary_leak_weights() -> pd.DataFrame:
    """2 clusters: X genes sit nearer group A on the cluster columns, nearer B on the summary columns."""
    rng = np.random.default_rng(0)
    rows = [(f"A{i}", [10 + rng.random(), 0.05 * rng.random()]) for i in range(5)]
    rows += [(f"B{i}", [0.05 * rng.random(), 3 + 0.1 * rng.random()]) for i in range(5)]
    rows += [("X1", [2.5, 0.3]), ("X2", [2.4, 0.35]), ("X3", [2.6, 0.25])]
    return weights_from(rows + fillers(rng, 10, 2))


def summary_target_weights() -> pd.DataFrame:
    """G genes are the most important overall but only middling in each cluster column."""
    rng = np.random.default_rng(1)
    rows = [(f"G{i}", [5 + 0.2 * rng.random() for _ in range(3)]) for i in range(5)]
    rows += [
        (f"H{j}{i}", [10 * (k == j) + 0.1 * rng.random() for k in range(3)])
        for j in range(3)
        for i in range(3)
    ]
    return weights_from(rows + fillers(rng, 5, 3))


def plot_cut_weights() -> pd.DataFrame:
    """60 top genes: 50 strong A genes and 10 weaker C genes forming their own gene cluster."""
    rng = np.random.default_rng(2)
    rows = [(f"A{i}", [10 + rng.random(), 1 + rng.random(), 1 + rng.random()]) for i in range(50)]
    rows += [
        (f"C{i}", [0.1 * rng.random(), 5 + 0.1 * rng.random(), 5 + 0.1 * rng.random()])
        for i in range(10)
    ]
    rows += [("Y1", [0, 4, 4.1]), ("Y2", [0.05, 4.1, 4]), ("Y3", [0.02, 3.9, 3.95])]
    return weights_from(rows + fillers(rng, 10, 3))


def planted_weights(seed: int = 3, n_genes: int = 120, n_clusters: int = 8) -> pd.DataFrame:
    """Random weights with gene symbols GENE0.. (enough rows for permutations)."""
    rng = np.random.default_rng(seed)
    values = rng.gamma(2.0, 1.0, size=(n_clusters, n_genes))
    return pd.DataFrame(
        values,
        index=[str(i) for i in range(n_clusters)],
        columns=[f"GENE{i}" for i in range(n_genes)],
    )


def known_tables(
    pairs: dict[str, list[tuple[str, str]]],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The three known-pair tables for {disease: [(gene1, gene2), ...]}."""
    info, mapping, trials = [], [], []
    for d, (disease, plist) in enumerate(pairs.items()):
        for p, (a, b) in enumerate(plist):
            tpid, dcid = f"TP{d:02d}{p:04d}", f"DC{d:02d}{p:04d}"
            info.append({"tpid": tpid, "tp_name": f"{a};{b}", "genename1": a, "genename2": b})
            mapping.append({"dcid": dcid, "tpid": tpid})
            trials.append(
                {"dcid": dcid, "dc_name": "x;y", "fd_name": disease, "maxphase": "Phase 1"}
            )
    return pd.DataFrame(info), pd.DataFrame(mapping), pd.DataFrame(trials)


def write_tables(folder: Path, tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in zip((PAIR_INFO_FILE, MAPPING_FILE, TRIALS_FILE), tables, strict=True):
        frame.to_csv(folder / name, sep="\t", index=False)
    return folder


def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """The real dispatcher (it imports only the targets subcommand's module)."""
    return cli.main(["targets", *argv])


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


# ----------------------------------------------------------------------------- config and inputs
def test_config_presets_and_validation() -> None:
    ev, pr = TargetConfig.evaluation(), TargetConfig.prediction()
    assert (ev.n_clusters, ev.top_genes, ev.threshold, ev.n_pairs) == (4, 50, 0.8, 100)
    assert (pr.n_clusters, pr.top_genes, pr.threshold, pr.n_pairs) == (4, 50, "auto", 50)
    assert json.loads(json.dumps(pr.to_dict()))["threshold"] == "auto"
    for bad in (
        {"threshold": 1.5},
        {"n_clusters": 1},
        {"mode": "ref"},
        {"n_pairs": 0},
        {"top_genes": 2},
    ):
        with pytest.raises(DeeppertError):
            TargetConfig(**bad)


def test_auto_threshold_matches_reference_rounding() -> None:
    assert auto_threshold(11) == 0.1
    assert auto_threshold(30) == 0.1  # Python's round(0.15, 1): 0.15 is stored just below 0.15
    assert auto_threshold(50) == 0.2
    assert auto_threshold(1000) == 0.9
    assert auto_threshold(0) == 0.0


def test_read_gene_list_formats(tmp_path: Path) -> None:
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfSYMBOL\r\nEGFR\r\n erbb2 \r\n\r\nEgfr\r\n")
    assert read_gene_list(bom) == ["EGFR", "erbb2"]
    tsv = tmp_path / "list.tsv"
    tsv.write_text("gene\tscore\nKRAS\t1\nBRAF\t2\n")
    assert read_gene_list(tsv) == ["KRAS", "BRAF"]
    sym = tmp_path / "sym.csv"
    sym.write_text("id,symbol\n1,TP53\n2,MDM2\n")
    assert read_gene_list(sym) == ["TP53", "MDM2"]
    txt = tmp_path / "plain.txt"
    txt.write_text("PIK3CA\nAKT1\n")
    assert read_gene_list(txt) == ["PIK3CA", "AKT1"]
    empty = tmp_path / "empty.csv"
    empty.write_text("SYMBOL\n")
    with pytest.raises(DeeppertError, match="no gene symbols"):
        read_gene_list(empty)


def test_load_weights_formats_drop_dose_and_reject_bad(tmp_path: Path) -> None:
    w = planted_weights(n_genes=6, n_clusters=3)
    w["dose"] = 1.0
    w.to_csv(tmp_path / "w.tsv", sep="\t")
    w.to_csv(tmp_path / "w.csv")
    w.to_parquet(tmp_path / "w.parquet")
    frames = [load_weights(tmp_path / f) for f in ("w.tsv", "w.csv", "w.parquet")]
    for f in frames:
        assert "dose" not in f.columns and f.shape == (3, 6)
        np.testing.assert_allclose(f.to_numpy(), frames[0].to_numpy(), rtol=0, atol=1e-12)
    bad = w.drop(columns="dose")
    bad.iloc[1, 2] = np.nan
    bad.to_csv(tmp_path / "nan.tsv", sep="\t")
    with pytest.raises(DeeppertError, match=r"nan\.tsv.*non-finite.*GENE2"):
        load_weights(tmp_path / "nan.tsv")
    dup = w.drop(columns="dose").rename(columns={"GENE1": "gene0"})
    with pytest.raises(DeeppertError, match="duplicate gene"):
        prepare_weights(dup, TargetConfig(n_clusters=2, top_genes=4))


def test_merge_known_pairs_and_malformed_tables() -> None:
    info, mapping, trials = known_tables({"D": [("A", "B"), ("A", "B")], "E": [("B", "C")]})
    merged = merge_known_pairs(info, mapping, trials)
    assert sorted(merged["fd_name"]) == ["D", "E"]  # duplicate (A, B, D) dropped
    with pytest.raises(DeeppertError, match=f"{PAIR_INFO_FILE}.*genename2"):
        merge_known_pairs(info.drop(columns="genename2"), mapping, trials)
    with pytest.raises(DeeppertError, match=f"{TRIALS_FILE}.*fd_name"):
        merge_known_pairs(info, mapping, trials.drop(columns="fd_name"))


# ----------------------------------------------------------------------------- the three reference quirks
def test_quirk_first_95_columns_lets_summary_columns_into_assignment() -> None:
    w = summary_leak_weights()
    runs = {
        mode: predict_targets(
            w,
            config=TargetConfig(
                n_clusters=2, top_genes=10, threshold=0.0, mode=mode, permutations=0
            ),
            genes=["X1", "X2", "X3"],
        )
        for mode in ("default", "reference")
    }
    for mode, res in runs.items():
        assert set(res.prepared.clusters_full) == {"Cluster 1", "Cluster 2"}
        home_a = next(n for n, g in res.prepared.clusters.items() if "A0" in g)
        expected = (
            home_a if mode == "default" else next(n for n in res.prepared.clusters if n != home_a)
        )
        assert set(res.assignments["Assigned_Cluster"]) == {expected}, mode
    assert runs["reference"].prepared.assignment_columns == ("0", "1", *SUMMARY_COLUMNS)
    assert runs["default"].prepared.assignment_columns == ("0", "1")


def test_quirk_more_than_95_clusters_reference_uses_first_95() -> None:
    w = planted_weights(n_genes=40, n_clusters=100)
    ref = prepare_weights(w, TargetConfig(top_genes=20, mode="reference"))
    assert ref.assignment_columns == tuple(str(i) for i in range(95))
    assert prepare_weights(w, TargetConfig(top_genes=20)).assignment_columns == tuple(
        str(i) for i in range(100)
    )


def test_quirk_target_columns_among_summary_columns() -> None:
    w = summary_target_weights()
    genes = ["G0", "G1", "G2"]
    cfg = {"n_clusters": 4, "top_genes": 14, "threshold": 0.0, "permutations": 0}
    ref = predict_targets(w, config=TargetConfig(mode="reference", **cfg), genes=genes)
    dflt = predict_targets(w, config=TargetConfig(mode="default", **cfg), genes=genes)
    assert ref.chosen_cluster == dflt.chosen_cluster
    assert ref.target_columns[0] in SUMMARY_COLUMNS
    assert dflt.target_columns[0] not in SUMMARY_COLUMNS
    table = ref.prepared.table
    g0, g1 = ref.pairs.iloc[0][["GeneA", "GeneB"]].str.upper()
    assert ref.pairs["ClustA_Score"].iloc[0] == pytest.approx(
        table.loc[g0, ref.target_columns[0]] + table.loc[g1, ref.target_columns[0]]
    )
    assert not np.allclose(ref.pairs["ClustA_Score"], dflt.pairs["ClustA_Score"])


def test_quirk_plots_cut_clusters_to_top_50_rows_only_in_reference_mode() -> None:
    w = plot_cut_weights()
    genes = ["Y1", "Y2", "Y3"]
    res = {
        (mode, plots): predict_targets(
            w,
            config=TargetConfig(
                n_clusters=2, top_genes=60, threshold=0.0, mode=mode, plots=plots, permutations=0
            ),
            genes=genes,
        )
        for mode in ("default", "reference")
        for plots in (True, False)
    }
    c_cluster = next(n for n, g in res["default", True].prepared.clusters_full.items() if "C0" in g)
    assert len(res["default", True].prepared.clusters_full[c_cluster]) == 10
    for key in (("default", True), ("default", False), ("reference", False)):
        assert res[key].chosen_cluster == c_cluster, key
    assert res["reference", True].prepared.clusters[c_cluster] == []  # cut away: ranks 51-60
    assert res["reference", True].chosen_cluster != c_cluster
    pd.testing.assert_frame_equal(res["default", True].pairs, res["default", False].pairs)


# ----------------------------------------------------------------------------- statistics
def test_chance_rate_and_hypergeom_by_hand() -> None:
    known = known_matrix(["a", "B", "c", "d"], frozenset({("A", "B"), ("C", "D"), ("A", "Z")}))
    assert chance_rate(known) == (2, 6, 2 / 6)
    assert chance_rate(known, np.array([0, 1, 2]))[:2] == (1, 3)
    # P(X >= 2) drawing 3 of 10 with 4 successes, by counting
    exact = sum(math.comb(4, x) * math.comb(6, 3 - x) for x in (2, 3)) / math.comb(10, 3)
    assert hypergeom_pvalue(2, 3, 10, 4) == pytest.approx(exact, rel=1e-12)
    assert hypergeom_pvalue(0, 3, 10, 4) == pytest.approx(1.0)
    assert math.isnan(hypergeom_pvalue(1, 0, 10, 4))
    np.testing.assert_allclose(
        empirical_pvalues(np.array([3, 0]), np.array([[3, 1], [1, 0], [4, 0]])), [3 / 4, 1.0]
    )


def covarying_case(kind: str, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Weights (20 cluster columns) and known pairs where the truth is set, not read off the algorithm.

    ``counter``: 39 candidates C0..C38 share one profile (all their pairs have r ~ 1) and 60
    random pairs among them are known (disease "Counter"); nothing links the known pairs to
    the ranking. ``planted``: 16 co-varying candidates C0..C15 (one profile + 5 % noise) and
    24 unrelated candidates C16..C39; "Signal" knows 20 random pairs among the co-varying and
    20 among the unrelated; "Noise" knows 40 random pairs among all 40. Both cases add 200
    unrelated genes G0.. (normal rows).
    """
    rng = np.random.default_rng(seed)
    n_cols = 20
    other = rng.normal(size=(200, n_cols))
    profile = rng.gamma(2.0, 1.0, size=n_cols)

    def draw(pool: list[tuple[str, str]], k: int) -> list[tuple[str, str]]:
        return [pool[i] for i in rng.choice(len(pool), k, replace=False)]

    def pairs_of(names: list[str]) -> list[tuple[str, str]]:
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]

    if kind == "counter":
        cand = profile + 1e-3 * rng.random((39, n_cols))
        names = [f"C{i}" for i in range(39)]
        diseases = {"Counter": draw(pairs_of(names), 60)}
    else:
        cand = np.vstack([profile + 0.05 * rng.random((16, n_cols)), rng.normal(size=(24, n_cols))])
        names = [f"C{i}" for i in range(40)]
        diseases = {
            "Signal": draw(pairs_of(names[:16]), 20) + draw(pairs_of(names[16:]), 20),
            "Noise": draw(pairs_of(names), 40),
        }
    genes = names + [f"G{i}" for i in range(len(other))]
    values = np.vstack([cand, other]).T
    # importances are non-negative; one shift of every value changes no step of the algorithm
    # (the summaries shift alike, MinMax scaling removes it)
    w = pd.DataFrame(values - values.min(), index=[str(i) for i in range(n_cols)], columns=genes)
    return w, merge_known_pairs(*known_tables(diseases))


NULL_CFG = TargetConfig(
    n_clusters=4, top_genes=50, threshold=0.8, n_pairs=100, permutations=300, seed=0
)


def test_permutation_null_is_not_fooled_by_candidates_that_resemble_each_other() -> None:
    """Candidates that share one profile: 7/100 matched against a chance rate of 8.5 %.

    A null of random rows of the whole matrix gives p = 0.0033 here, the smallest possible
    with 300 permutations (docs/evaluation.md); relabelling the candidates gives what the
    hypergeometric tail says, and its mean is the chance rate times N.
    """
    w, known = covarying_case("counter")
    res = predict_targets(w, config=NULL_CFG, known=known, disease="Counter")
    row = res.match_statistics.merge(res.significance, on="TOP_N").set_index("TOP_N").loc[100]
    assert row["Matched_Pairs"] == 7 and row["Total_Pairs"] == 100
    assert row["P_Permutation"] > 0.2
    assert abs(row["P_Permutation"] - row["P_Hypergeom_Overall"]) < 0.1
    assert row["Null_Mean_Matches"] == pytest.approx(100 * res.chance_overall.rate, abs=1.0)


@pytest.fixture(scope="module")
def planted() -> dict[str, object]:
    """Known pairs placed among truly co-varying candidates (Signal) or at random (Noise)."""
    w, known = covarying_case("planted")
    sig = known[known["fd_name"] == "Signal"]
    signal = list(zip(sig["genename1"], sig["genename2"], strict=True))
    return {"w": w, "cfg": NULL_CFG, "known": known, "signal": signal}


def test_permutation_null_detects_planted_signal_and_is_seeded(planted: dict) -> None:
    w, cfg, known = planted["w"], planted["cfg"], planted["known"]
    sig = predict_targets(w, config=cfg, known=known, disease="Signal")
    s = sig.match_statistics.merge(sig.significance, on="TOP_N").set_index("TOP_N")
    assert s.loc[100, "Matched_Pairs"] >= 15  # chance: ~6 of 100
    assert (s.loc[20:, "P_Permutation"] < 0.01).all()  # top 10: 0.013 (10 pairs only)
    again = predict_targets(w, config=cfg, known=known, disease="Signal")
    pd.testing.assert_frame_equal(sig.significance, again.significance)
    other = predict_targets(
        w, config=TargetConfig(**{**cfg.to_dict(), "seed": 8}), known=known, disease="Signal"
    )
    assert not np.array_equal(
        sig.significance["Null_Mean_Matches"], other.significance["Null_Mean_Matches"]
    )
    noise = predict_targets(w, config=cfg, known=known, disease="Noise")
    assert noise.significance["P_Permutation"].min() > 0.05
    m = noise.match_statistics
    assert list(m.columns) == list(MATCH_COLUMNS)
    assert (m["Matched_Pairs"] <= m["Total_Pairs"]).all()
    np.testing.assert_allclose(m["Match_Rate"], m["Matched_Pairs"] / m["Total_Pairs"])


def test_match_tables_stop_at_the_top_n_holding_every_pair(planted: dict, tmp_path: Path) -> None:
    """Reported TOP_N rows end at the first N >= pairs found; reference mode keeps all."""
    w, known = planted["w"], planted["known"]
    cfg = TargetConfig(**{**planted["cfg"].to_dict(), "n_pairs": 45, "plots": False})
    res = predict_targets(w, config=cfg, known=known, disease="Signal")
    assert len(res.pairs) == 45 and list(res.match_statistics["TOP_N"]) == list(cfg.top_ns)
    stats, significance = res.match_tables()
    assert list(stats["TOP_N"]) == list(significance["TOP_N"]) == [10, 20, 30, 40, 50]
    assert stats["Total_Pairs"].iloc[-1] == 45  # the largest row holds the total
    write_target_outputs(res, tmp_path / "out")
    written = pd.read_csv(tmp_path / "out" / "match_statistics.csv")
    assert list(written["TOP_N"]) == [10, 20, 30, 40, 50]
    assert len(pd.read_csv(tmp_path / "out" / "match_significance.csv")) == 5
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [row["TOP_N"] for row in summary["match"]] == [10, 20, 30, 40, 50]
    exact = TargetConfig(**{**cfg.to_dict(), "n_pairs": 50})
    stats = predict_targets(w, config=exact, known=known, disease="Signal").match_tables()[0]
    assert list(stats["TOP_N"]) == [10, 20, 30, 40, 50]
    ref = TargetConfig(**{**cfg.to_dict(), "mode": "reference"})
    stats = predict_targets(w, config=ref, known=known, disease="Signal").match_tables()[0]
    assert list(stats["TOP_N"]) == list(cfg.top_ns)


def test_targets_run_metrics_and_description_name_their_top_n(planted: dict) -> None:
    """The targets run logs one metric of each kind per reported TOP_N, values from the tables."""
    from deeppert.tracking.notes import targets_description, targets_metrics

    cfg = TargetConfig(**{**planted["cfg"].to_dict(), "n_pairs": 30, "plots": False})
    res = predict_targets(planted["w"], config=cfg, known=planted["known"], disease="Signal")
    metrics = targets_metrics(res)
    stats, significance = res.match_tables()
    assert sorted(metrics) == sorted(
        f"{kind}_{n}"
        for kind in ("known_pairs_in_top", "match_rate_top", "perm_p_top")
        for n in (10, 20, 30)
    )
    assert metrics["known_pairs_in_top_30"] == stats["Matched_Pairs"].iloc[-1]
    assert metrics["match_rate_top_20"] == stats["Match_Rate"].iloc[1]
    assert metrics["perm_p_top_10"] == significance["P_Permutation"].iloc[0]
    note = targets_description(res, ensemble="SYN1-ensemble@current", version="SYN1-ensemble/3")
    assert "SYN1-ensemble/3" in note and "`match_rate_top_30`" in note and "`perm_p_top_30`" in note
    assert f"{metrics['match_rate_top_30']:.2f}" in note


def test_permutation_null_by_hand() -> None:
    """Two selected pairs, known pair (0, 1): a relabelling hits it with probability 2/6 per pair."""
    from deeppert.targets import permutation_null
    from deeppert.targets._algorithm import PairSelection

    known = known_matrix(["a", "b", "c", "d"], frozenset({("A", "B")}))
    sel = PairSelection(
        chosen=0,
        members=np.arange(4),
        first=np.array([0, 2]),
        second=np.array([1, 3]),
        score_a=np.zeros(2),
        score_b=np.zeros(2),
        total=np.zeros(2),
        corr=np.ones(2),
    )
    null = permutation_null(sel, known, top_ns=(1, 2, 5), permutations=6000, seed=0)
    assert null.shape == (6000, 3) and (null[:, 2] == null[:, 1]).all()  # N capped at 2 pairs
    # P(pair (0,1) known after relabelling) = 1/6; two disjoint pairs: E[matches] = 2/6
    assert null[:, 0].mean() == pytest.approx(1 / 6, abs=0.02)
    assert null[:, 1].mean() == pytest.approx(2 / 6, abs=0.03)
    assert null[:, 1].max() == 1  # one known pair can match at most once


def test_all_diseases_table(planted: dict) -> None:
    table = run_all_diseases(planted["w"], planted["known"], config=planted["cfg"], min_pairs=5)
    assert sorted(table["disease"]) == ["Noise", "Signal"]
    row = table.set_index("disease").loc["Signal"]
    assert row["status"] == "ok" and row["matched_100"] >= 15 and row["p_perm_100"] < 0.01
    assert row["q_perm_100"] <= 2 * row["p_perm_100"]  # BH with 2 tests
    with pytest.raises(DeeppertError, match=">= 50 known pairs"):
        run_all_diseases(planted["w"], planted["known"], config=planted["cfg"], min_pairs=50)


# ----------------------------------------------------------------------------- outputs and CLI
def test_cli_writes_every_output(
    tmp_path: Path, planted: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    planted["w"].to_csv(tmp_path / "w.tsv", sep="\t")
    write_tables(
        tmp_path / "pairs",
        known_tables({"Signal": planted["signal"]}),
    )
    out = tmp_path / "out"
    rc = run_cli(
        [
            "--weights",
            str(tmp_path / "w.tsv"),
            "--pairs-dir",
            str(tmp_path / "pairs"),
            "--disease",
            "signal",
            "--n-clusters",
            "4",
            "--top-genes",
            "50",
            "--threshold",
            "0.8",
            "--permutations",
            "20",
            "--out",
            str(out),
        ],
        monkeypatch,
    )
    assert rc == 0
    files = set(leftovers(out))
    assert {
        "target_combinations.csv",
        "match_statistics.csv",
        "match_significance.csv",
        "summary.json",
        "gene_cluster_heatmap.svg",
        "gene_cluster_heatmap.png",
        "match_rate.svg",
        "match_rate.png",
    } <= files
    assert list(pd.read_csv(out / "target_combinations.csv").columns) == list(PAIR_COLUMNS)
    assert list(pd.read_csv(out / "match_statistics.csv").columns) == list(MATCH_COLUMNS)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["disease"] == "Signal" and summary["config"]["permutations"] == 20
    assert (out / "gene_cluster_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    # --no-plots, rerun into the same folder: replaced whole
    rc = run_cli(
        [
            "--weights",
            str(tmp_path / "w.tsv"),
            "--pairs-dir",
            str(tmp_path / "pairs"),
            "--disease",
            "Signal",
            "--n-clusters",
            "4",
            "--top-genes",
            "50",
            "--permutations",
            "0",
            "--no-plots",
            "--out",
            str(out),
        ],
        monkeypatch,
    )
    assert rc == 0 and not (out / "match_rate.png").exists()
    assert leftovers(tmp_path) == ["out", "pairs", "w.tsv"]


def _bad_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, argv: list[str]
) -> str:
    out = tmp_path / "out"
    before = leftovers(tmp_path)
    rc = run_cli([*argv, "--out", str(out)], monkeypatch)
    assert rc == 2
    assert not out.exists()
    assert leftovers(tmp_path) == before  # no temporary folder left either
    return capsys.readouterr().err


@pytest.fixture()
def cli_inputs(tmp_path: Path) -> list[str]:
    planted_weights().to_csv(tmp_path / "w.tsv", sep="\t")
    write_tables(
        tmp_path / "pairs",
        known_tables({"Ovarian Cancer": [("GENE1", "GENE2")], "Lung Cancer": [("NOPE1", "NOPE2")]}),
    )
    return ["--weights", str(tmp_path / "w.tsv"), "--pairs-dir", str(tmp_path / "pairs")]


def test_cli_takes_its_settings_from_config_then_flags(
    tmp_path: Path, planted: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`deeppert targets`: TargetConfig defaults, overridden by --config's section, then flags."""
    planted["w"].to_csv(tmp_path / "w.tsv", sep="\t")
    write_tables(tmp_path / "pairs", known_tables({"Signal": planted["signal"]}))
    common = ["--weights", str(tmp_path / "w.tsv"), "--pairs-dir", str(tmp_path / "pairs")]
    common += ["--disease", "Signal", "--no-plots", "--out", str(tmp_path / "out")]
    config = tmp_path / "t.yaml"
    config.write_text("targets: {n_pairs: 30, permutations: 5, threshold: auto, seed: 3}\n")
    assert run_cli([*common, "--permutations", "0"], monkeypatch) == 0
    written = json.loads((tmp_path / "out" / "summary.json").read_text())["config"]
    assert written == TargetConfig(plots=False, permutations=0).to_dict()
    assert run_cli([*common, "--config", str(config), "--seed", "4"], monkeypatch) == 0
    written = json.loads((tmp_path / "out" / "summary.json").read_text())["config"]
    expected = TargetConfig(n_pairs=30, permutations=5, threshold="auto", seed=4, plots=False)
    assert written == expected.to_dict()


def test_bad_unknown_disease_names_closest(tmp_path, monkeypatch, capsys, cli_inputs) -> None:
    err = _bad_cli(tmp_path, monkeypatch, capsys, [*cli_inputs, "--disease", "Ovarian Cancr"])
    assert "unknown disease 'Ovarian Cancr'" in err and "closest: 'Ovarian Cancer'" in err


def test_bad_no_candidate_in_weights(tmp_path, monkeypatch, capsys, cli_inputs) -> None:
    err = _bad_cli(tmp_path, monkeypatch, capsys, [*cli_inputs, "--disease", "Lung Cancer"])
    assert "no candidate gene" in err and "Lung Cancer" in err


def test_bad_fewer_than_two_candidates_per_cluster(
    tmp_path, monkeypatch, capsys, cli_inputs
) -> None:
    w = planted_weights()
    prep = prepare_weights(w, TargetConfig())
    one_each = [
        next(g for g, c in zip(prep.genes, prep.row_cluster, strict=True) if c == k)
        for k in range(len(prep.cluster_names))
    ]
    (tmp_path / "genes.csv").write_text("SYMBOL\n" + "\n".join(one_each) + "\n")
    err = _bad_cli(
        tmp_path, monkeypatch, capsys, [*cli_inputs[:2], "--gene-list", str(tmp_path / "genes.csv")]
    )
    assert "fewer than 2 candidate genes" in err


def test_bad_gene_list_warns_and_needs_two(
    tmp_path, monkeypatch, capsys, caplog, cli_inputs
) -> None:
    (tmp_path / "genes.txt").write_text("SYMBOL\nGENE5\nNOTAGENE\nALSO_MISSING\n")
    with caplog.at_level(logging.WARNING):
        err = _bad_cli(
            tmp_path,
            monkeypatch,
            capsys,
            [*cli_inputs[:2], "--gene-list", str(tmp_path / "genes.txt")],
        )
    assert "only 1 gene of the gene list" in err
    assert any(
        "NOTAGENE" in r.getMessage() and "ALSO_MISSING" in r.getMessage() for r in caplog.records
    )


def test_bad_malformed_table(tmp_path, monkeypatch, capsys, cli_inputs) -> None:
    trials = tmp_path / "pairs" / TRIALS_FILE
    pd.read_csv(trials, sep="\t").drop(columns="fd_name").to_csv(trials, sep="\t", index=False)
    err = _bad_cli(tmp_path, monkeypatch, capsys, [*cli_inputs, "--disease", "Ovarian Cancer"])
    assert TRIALS_FILE in err and "fd_name" in err


def test_bad_disease_without_pairs_dir_and_nonempty_out(
    tmp_path, monkeypatch, capsys, cli_inputs
) -> None:
    err = _bad_cli(tmp_path, monkeypatch, capsys, [*cli_inputs[:2], "--disease", "Ovarian Cancer"])
    assert "--pairs-dir" in err
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("x")
    rc = run_cli([*cli_inputs, "--disease", "Ovarian Cancer", "--out", str(precious)], monkeypatch)
    assert rc == 2 and leftovers(precious) == ["keep.txt"]


def test_public_functions_keyword_only_after_three_positional() -> None:
    import deeppert.targets as t

    for name in t.__all__:
        obj = getattr(t, name)
        if inspect.isfunction(obj):
            positional = [
                p
                for p in inspect.signature(obj).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            assert len(positional) <= 4, name  # write helpers take (result, out) + one table


# ----------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def ov7(seed_data: Path) -> dict[str, object]:
    folder = seed_data / TC
    return {"w": load_weights(folder / OV7), "known": load_known_pairs(folder), "folder": folder}


@pytest.mark.realdata
def test_reference_prediction_mode_equals_published(ov7: dict, tmp_path: Path) -> None:
    res = predict_targets(
        ov7["w"],
        config=TargetConfig.prediction(mode="reference", permutations=100),
        known=ov7["known"],
        disease="Ovarian Cancer",
    )
    pub = ov7["folder"] / "published_ovarian"
    published = pd.read_csv(pub / "target_combinations.csv", float_precision="round_trip")
    assert list(res.pairs.columns) == list(published.columns) == list(PAIR_COLUMNS)
    assert (
        res.pairs[["GeneA", "GeneB"]].values.tolist()
        == published[["GeneA", "GeneB"]].values.tolist()
    )
    np.testing.assert_allclose(
        res.pairs.iloc[:, 2:].to_numpy(), published.iloc[:, 2:].to_numpy(), rtol=0, atol=1e-9
    )
    stats = pd.read_csv(pub / "match_statistics.csv", float_precision="round_trip")
    pd.testing.assert_frame_equal(res.match_statistics, stats, check_exact=True)
    write_target_outputs(res, tmp_path / "out")
    text = (tmp_path / "out" / "match_statistics.csv").read_text()
    assert text == (pub / "match_statistics.csv").read_text().replace("\r\n", "\n")
    assert res.threshold == 0.1 and res.target_columns == ("10", "89")


@pytest.mark.realdata
def test_evaluation_mode_and_default_vs_reference_on_ov7(ov7: dict) -> None:
    runs = {
        mode: predict_targets(
            ov7["w"],
            config=TargetConfig.evaluation(mode=mode, permutations=50),
            known=ov7["known"],
            disease="Ovarian Cancer",
        )
        for mode in ("reference", "default")
    }
    ref, dflt = runs["reference"], runs["default"]
    assert len(ref.pairs) == 28 and (ref.pairs["PairCorr_Abs"] >= 0.8).all()
    assert ref.match_statistics["Total_Pairs"].max() == 28
    # on OV7 (95 clusters, 50 top genes, no summary column wins) the modes differ only in spelling
    assert ref.target_columns == dflt.target_columns
    assert [g.lower() for g in dflt.pairs["GeneA"]] == list(ref.pairs["GeneA"])
    pd.testing.assert_frame_equal(ref.pairs.iloc[:, 2:], dflt.pairs.iloc[:, 2:])
    pd.testing.assert_frame_equal(ref.match_statistics, dflt.match_statistics)


@pytest.mark.realdata
def test_nash_gene_list_reads_bom_and_names_missing(seed_data: Path, ov7: dict, caplog) -> None:
    genes = read_gene_list(seed_data / TC / "NASH_Combination_key.csv")
    assert genes[0] == "ACACB" and len(genes) == 12
    with caplog.at_level(logging.WARNING):
        res = predict_targets(ov7["w"], config=TargetConfig.prediction(permutations=0), genes=genes)
    assert set(res.candidates) == {
        "HMGCR",
        "PPARD",
        "PPARG",
    }  # the weights' spelling in default mode
    assert len(res.pairs) == 3 and res.match_statistics is None
    assert any("FXR" in r.getMessage() and "SCD1" in r.getMessage() for r in caplog.records)


def test_negatively_loaded_module_genes_reach_the_top_genes_as_often_as_positive_ones():
    """Four planted modules, half of each module's genes loading negatively; each 'model run'
    is a noisy invertible mixture of the programs. Targets' top 50 genes, taken from the
    consensus ensemble's importances, hold as many negatively as positively loaded module
    genes, both far above chance (10 of each); ranking by the signed loadings instead would
    keep only one sign half of each module, so a signed table is refused."""
    from deeppert.ensemble.modes import EnsembleConfig, build_ensemble
    from deeppert.preprocess import fit_pca
    from deeppert.targets import gene_importance

    rng = np.random.default_rng(0)
    n, G, K, size = 800, 200, 4, 20
    member = np.zeros((K, G), bool)
    for k in range(K):
        member[k, k * size : (k + 1) * size] = True
    sign = np.where(np.arange(G) % 2 == 0, 1.0, -1.0)  # every other gene of a module: negative
    load = np.where(member, rng.uniform(0.8, 1.2, (K, G)) * sign, rng.normal(0, 0.1, (K, G)))
    A = rng.laplace(size=(n, K))
    X = A @ load + rng.normal(size=(n, G))
    genes = [f"G{j}" for j in range(G)]
    pca = fit_pca(X, genes, 20)
    cols, codes = [], []
    for run in range(4):
        for d in (K, K + 2):
            codes.append(A @ rng.normal(size=(K, d)) + 0.3 * rng.normal(size=(n, d)))
            cols += [f"AE_d{d}_run{run}_z{k:02d}" for k in range(d)]
    latents = pd.DataFrame(np.hstack(codes), columns=cols)
    ens = build_ensemble(latents, config=EnsembleConfig(l_max=8), x_pca=pca.transform(X), pca=pca)
    assert (ens.weights.to_numpy() >= 0).all()
    np.testing.assert_allclose(ens.weights.to_numpy(), np.abs(ens.loadings.to_numpy()))
    prepared = prepare_weights(ens.weights, TargetConfig(top_genes=50))
    top = {g for members in prepared.clusters_full.values() for g in members}
    assert len(top) == 50
    in_module = member.any(0)
    pos = sum(g in top for g in np.array(genes)[in_module & (sign > 0)])
    neg = sum(g in top for g in np.array(genes)[in_module & (sign < 0)])
    assert pos >= 20 and neg >= 20, (pos, neg)
    # as often: pos within 3 sd of a sign-blind draw of pos + neg of the 80 module genes
    m = pos + neg
    assert abs(pos - m / 2) <= 3 * np.sqrt(m * 0.25 * (80 - m) / 79), (pos, neg)
    # by the signed values only one half of each module (the one its cluster's sign put on
    # top) can reach the top genes
    signed = set(gene_importance(ens.loadings)["Total_Importance"].nlargest(50).index)

    def minority(chosen: set[str]) -> int:
        """Genes of the less represented sign half, summed over the modules."""
        return sum(
            min(sum(genes[j] in chosen for j in np.flatnonzero(member[k] & (sign * s > 0)))
                for s in (1, -1))
            for k in range(K)
        )  # fmt: skip

    assert minority(top) >= 15 and minority(signed) <= 2, (minority(top), minority(signed))
    with pytest.raises(DeeppertError, match="ensemble_loadings.parquet"):
        prepare_weights(ens.loadings, TargetConfig(top_genes=50))
