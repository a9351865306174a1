"""Tests for deeppert.downstream: structure matching, splits, featurizers, evaluation, CLI."""

from __future__ import annotations

import argparse
import inspect
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from deeppert import downstream as ds
from deeppert.data._signatures import landmark_genes
from deeppert.downstream._splits import (
    drug_folds,
    drug_split_folds,
    inner_drug_splits,
    scaffold_splits,
)
from deeppert.errors import DeeppertError

FAST = ds.EvalConfig(seeds=(0,), models=("rf",), n_estimators=15, inner_folds=2)


# ---------------------------------------------------------------- synthetic tasks
def _tox_task(
    n: int = 120, *, signal: float = 0.0, dup_frac: float = 0.0, seed: int = 0
) -> ds.ToxicityTask:
    """n structures, 978 genes with a 3-factor structure; labels follow factor 0 with strength ``signal``.

    ``dup_frac`` of the structures appear twice in the given split, once in Train and once in Test.
    """
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, 3))
    values = factors @ rng.normal(size=(3, 978)) + rng.normal(size=(n, 978))
    logits = signal * factors[:, 0] + rng.normal(size=n)
    labels = (logits > np.median(logits)).astype(int)
    train = rng.random(n) < 0.75
    idx, split = list(range(n)), ["Train" if t else "Test" for t in train]
    for i in np.flatnonzero(rng.random(n) < dup_frac):
        idx.append(int(i))
        split.append("Test" if train[i] else "Train")
    keys = np.asarray(
        [f"C{'C' * (i % 7)}c1ccc(cc1){'N' * (i // 7)}" for i in range(n)], dtype=object
    )
    given = pd.DataFrame({"index": idx, "split": split})
    return ds.ToxicityTask("toxicity_synthetic", keys, values, labels, given, {"compounds": n})


def _syn_task(n_drugs: int = 14, *, seed: int = 0) -> ds.SynergyTask:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_drugs, 978))
    a, b = np.triu_indices(n_drugs, k=1)
    score = values[a, 0] + values[b, 0] + 0.5 * rng.normal(size=len(a))
    pairs = pd.DataFrame(
        {"drug_a": a, "drug_b": b, "synergy": score, "label": (score > 0).astype(int)}
    )
    names = tuple(f"D{i}" for i in range(n_drugs))
    return ds.SynergyTask("synergy_synthetic", names, names, values, pairs, {"pairs": len(a)})


# ---------------------------------------------------------------- structure keys
def test_structure_key_ignores_salt_stereo_and_spelling():
    base = ds.structure_key("CC(N)C(=O)O")
    assert base == ds.structure_key("C[C@H](N)C(=O)O.Cl")  # stereo mark and salt
    assert ds.structure_key("c1ccccc1O") == ds.structure_key("OC1=CC=CC=C1")  # aromatic vs Kekulé
    assert base != ds.structure_key("CC(N)C(=O)OC")


def test_unparsable_smiles_are_warned_with_counts():
    with pytest.warns(ds.UnmatchedWarning, match=r"2 unparsable SMILES \(1 distinct\).*x2"):
        keys = ds.structure_keys(["CCO", "not-a-smiles", "not-a-smiles"], source="t.csv:smiles")
    assert keys[0] == "CCO" and keys[1] is None and keys[2] is None


def test_murcko_scaffold():
    assert ds.murcko_scaffold("CCc1ccccc1") == "c1ccccc1"
    assert ds.murcko_scaffold("CCO") == ""
    # plain, not generic: atom types are kept (a generic scaffold would make both C1CCCCC1)
    assert ds.murcko_scaffold("CCc1ccncc1") == "c1ccncc1"


# ---------------------------------------------------------------- splits
def test_drug_split_folds_test_every_pair_once_with_its_unseen_drugs_out_of_training():
    task = _syn_task(17)
    a, b = task.pairs["drug_a"].to_numpy(), task.pairs["drug_b"].to_numpy()
    fold_of = drug_folds(17, n_folds=5, seed=3)
    assert sorted(np.bincount(fold_of)) == [3, 3, 3, 4, 4]
    folds = drug_split_folds(a, b, fold_of, seed=3)
    tested = np.zeros(len(a), dtype=int)
    unseen_a = np.zeros(len(a), dtype=int)
    for f, fold in enumerate(folds):
        held = np.flatnonzero(fold_of == f)
        np.testing.assert_array_equal(fold.held_out, held)
        tr = fold.train
        assert not np.isin(a[tr], held).any() and not np.isin(b[tr], held).any()
        one, both = fold.one_unseen, fold.both_unseen
        assert (np.isin(a[one], held) ^ np.isin(b[one], held)).all()  # exactly one unseen
        assert (np.isin(a[both], held) & np.isin(b[both], held)).all()
        tested[one] += 1
        tested[both] += 1
        unseen_a[one] += np.isin(a[one], held)
    assert (tested == 1).all()  # every pair by exactly one fold model
    cross = fold_of[a] != fold_of[b]
    # the coin picks either drug as the unseen one, not always the same side
    assert 0.3 < unseen_a[cross].mean() < 0.7
    # seeded: same seed, same assignment; another seed, another
    again = drug_split_folds(a, b, fold_of, seed=3)
    assert all(
        np.array_equal(x.one_unseen, y.one_unseen) for x, y in zip(folds, again, strict=True)
    )
    other = drug_split_folds(a, b, fold_of, seed=4)
    assert not all(
        np.array_equal(x.one_unseen, y.one_unseen) for x, y in zip(folds, other, strict=True)
    )


def test_inner_drug_splits_are_grouped_by_drug():
    task = _syn_task(12)
    a, b = task.pairs["drug_a"].to_numpy(), task.pairs["drug_b"].to_numpy()
    inner = inner_drug_splits(a, b, n_folds=3, seed=0)
    assert len(inner) == 3
    for tr, va in inner:
        val_drugs = set(a[va]) | set(b[va])
        train_drugs = set(a[tr]) | set(b[tr])
        # every validation pair holds a drug the inner training pairs never hold
        assert all(x not in train_drugs or y not in train_drugs for x, y in zip(a[va], b[va]))
        assert val_drugs - train_drugs


def test_scaffold_split_never_shares_a_scaffold():
    rng = np.random.default_rng(0)
    scaffolds = rng.integers(0, 30, size=200).astype(str)
    labels = rng.integers(0, 2, size=200)
    for tr, te in scaffold_splits(labels, scaffolds, n_folds=5, seed=1):
        assert not set(scaffolds[tr]) & set(scaffolds[te])


# ---------------------------------------------------------------- featurizers
def test_pca_featurizer_is_fitted_on_training_rows_only():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(30, 978)), rng.normal(size=(10, 978)) + 5.0
    transform = ds.pca_featurizer(4).fit(train, seed=0)
    out = transform(test)
    assert out.shape == (10, 4)
    from sklearn.decomposition import PCA

    expected = PCA(4, random_state=0).fit(train).transform(test)
    np.testing.assert_allclose(np.abs(out), np.abs(expected), rtol=1e-6, atol=1e-8)
    all_rows = PCA(4, random_state=0).fit(np.vstack([train, test])).transform(test)
    assert not np.allclose(np.abs(out), np.abs(all_rows), atol=1e-3)
    assert ds.pca_featurizer(50).fit(train)(test).shape == (10, 30)  # capped at n training rows


def test_embedding_featurizer_wraps_a_callable_and_checks_its_shape():
    w = np.random.default_rng(0).normal(size=(978, 3))
    feat = ds.embedding_featurizer(lambda v: v @ w, name="ens")
    x = np.ones((5, 978))
    np.testing.assert_allclose(feat.fit(x)(x), x @ w)
    bad = ds.embedding_featurizer(lambda v: v[:2] @ w)
    with pytest.raises(DeeppertError, match="returned shape"):
        bad.fit(x)(x)
    assert isinstance(feat, ds.Featurizer)


def test_pair_features_concatenate_in_order():
    f = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(ds.pair_features(f, [0, 2], [1, 0]), [[0, 1, 2, 3], [4, 5, 0, 1]])


# ---------------------------------------------------------------- evaluation
def test_synergy_prediction_does_not_depend_on_pair_order():
    task = _syn_task(12)
    swapped = task.pairs.rename(columns={"drug_a": "drug_b", "drug_b": "drug_a"})
    cfg = replace(FAST, settings=("inductive",))
    res1 = ds.evaluate_synergy(task, [ds.pca_featurizer(3)], config=cfg, splits=("one_unseen",))
    res2 = ds.evaluate_synergy(
        replace(task, pairs=swapped), [ds.pca_featurizer(3)], config=cfg, splits=("one_unseen",)
    )
    np.testing.assert_allclose(res1.predictions["y_pred"], res2.predictions["y_pred"])


def test_synergy_scores_carry_counts_settings_and_fold_provenance():
    task = _syn_task(15)
    res = ds.evaluate_synergy(task, [ds.raw_featurizer(), ds.pca_featurizer(3)], config=FAST)
    sc = res.scores
    assert set(sc["split"]) == {"one_unseen", "both_unseen", "random_leaky"}
    assert set(sc["metric"]) == {"pearson_r", "rmse", "roc_auc", "pr_auc"}
    assert set(zip(sc["feature_set"], sc["setting"], strict=True)) == {
        ("raw", "none"),
        ("pca", "inductive"),
        ("pca", "transductive"),
    }
    assert (sc["aggregate"] == "fold_mean").all()
    assert (sc.loc[sc["split"] == "random_leaky", "n"] == task.n_pairs).all()
    one = sc.loc[sc["split"] == "one_unseen", "n"].to_numpy()
    both = sc.loc[sc["split"] == "both_unseen", "n"].to_numpy()
    assert (both > 0).all() and (one + both == task.n_pairs).all()
    # fold provenance: every prediction row's fold trained on pairs other than the row
    f = res.folds
    for split, part in res.predictions.groupby("split"):
        for fold, rows in part.groupby("fold"):
            train = f[(f["split"] == split) & (f["fold"] == fold) & (f["role"] == "train")]
            assert not set(rows["sample"]) & set(train["sample"])
    # the signal (gene 0 of both drugs) is learnable when one drug is unseen
    r = sc.query("split == 'one_unseen' and metric == 'pearson_r' and feature_set == 'raw'")[
        "value"
    ]
    assert (r > 0.3).all()


def test_pca_transductive_setting_fits_on_all_signatures_and_inductive_on_training_drugs():
    """A recording featurizer sees all 12 drugs per fit when transductive, the training drugs otherwise."""
    task = _syn_task(12)
    seen: list[int] = []

    class Recording:
        name = "rec"

        def fit(self, train_values, *, seed=0):
            seen.append(len(train_values))
            return lambda v: v[:, :3]

        def to_dict(self):
            return {"name": self.name}

    ds.evaluate_synergy(
        task,
        [Recording()],
        config=replace(FAST, settings=("transductive",)),
        splits=("one_unseen",),
    )
    assert set(seen) == {12}
    seen.clear()
    ds.evaluate_synergy(
        task, [Recording()], config=replace(FAST, settings=("inductive",)), splits=("one_unseen",)
    )
    assert max(seen) < 12


def test_toxicity_learns_a_real_signal():
    res = ds.evaluate_toxicity(
        _tox_task(150, signal=3.0), [ds.raw_featurizer()], config=FAST, splits=("structure",)
    )
    auc = res.scores.query("metric == 'roc_auc'")["value"].iloc[0]
    assert auc > 0.75
    assert res.scores["n"].iloc[0] == 150


@pytest.mark.slow
def test_label_shuffle_falls_to_chance_and_the_leaky_split_does_not():
    """>= 20 shuffles of a 500-compound set through evaluate_toxicity: mean ROC-AUC 0.5 +- 0.05.

    The same shuffled labels under the given split with duplicated structures on both sides
    score well above chance: the check can see a leak when there is one.
    """
    base = _tox_task(500, signal=3.0, dup_frac=0.5)
    cfg = ds.EvalConfig(
        seeds=(0,), models=("rf",), n_estimators=20, inner_folds=2, settings=("inductive",)
    )
    honest, leaky = [], []
    for s in range(20):
        task = replace(base, labels=np.random.default_rng(100 + s).permutation(base.labels))
        cfg_s = replace(cfg, seeds=(s,))
        res = ds.evaluate_toxicity(
            task, [ds.pca_featurizer(5)], config=cfg_s, splits=("structure",)
        )
        auc = res.scores.query("metric == 'roc_auc'")
        assert auc["n"].iloc[0] == 500
        honest.append(auc["value"].iloc[0])
        if s < 3:
            res = ds.evaluate_toxicity(
                task, [ds.raw_featurizer()], config=cfg_s, splits=("given_leaky",)
            )
            leaky.append(res.scores.query("metric == 'roc_auc'")["value"].iloc[0])
    assert abs(np.mean(honest) - 0.5) < 0.05, honest
    assert np.mean(leaky) > 0.65, leaky


def test_bad_inputs_raise():
    with pytest.raises(DeeppertError, match="no feature sets"):
        ds.evaluate_toxicity(_tox_task(30), [], config=FAST)
    with pytest.raises(DeeppertError, match="models"):
        ds.EvalConfig(models=("svm",))  # type: ignore[arg-type]
    with pytest.raises(DeeppertError, match="single class"):
        ds.pooled_metrics(np.ones(5), np.linspace(0, 1, 5), "classification")


def _write_synergy_folder(root, *, smiles_for_signature):
    folder = root / "downstream" / "drug_combination"
    folder.mkdir(parents=True)
    genes = list(landmark_genes())
    rng = np.random.default_rng(0)
    sig = pd.DataFrame(rng.normal(size=(len(smiles_for_signature), 978)), columns=genes)
    sig.insert(0, "canonical_smiles", smiles_for_signature)
    sig["dose"] = 1.0
    sig.to_csv(folder / "TEST_COMBINATION.csv", index=False)
    pd.DataFrame({"drug_name": ["ETHANOL", "PHENOL"], "smiles": ["OCC", "Oc1ccccc1.Cl"]}).to_csv(
        folder / "oneil_drug_two_smiles.csv", index=False
    )
    pd.DataFrame(
        {
            "drug_a_name": ["ETHANOL"],
            "drug_b_name": ["PHENOL"],
            "cell_line": ["TEST"],
            "synergy": [1.5],
            "label": [1],
        }
    ).to_csv(folder / "label_oneil_loewe.csv", index=False)


def test_synergy_loader_matches_by_structure_and_warns(tmp_path):
    _write_synergy_folder(tmp_path, smiles_for_signature=["CCO", "OC1=CC=CC=C1", "CCCCCC"])
    with pytest.warns(ds.UnmatchedWarning, match="1 signatures.*CCCCCC"):
        task = ds.load_synergy(tmp_path, "TEST")
    assert task.drugs == ("ETHANOL", "PHENOL") and task.n_pairs == 1


def test_synergy_loader_empty_task_is_an_error(tmp_path):
    _write_synergy_folder(tmp_path, smiles_for_signature=["CCO", "CCCCCC"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ds.UnmatchedWarning)
        with pytest.raises(DeeppertError, match="no TEST pair has signatures for both drugs"):
            ds.load_synergy(tmp_path, "TEST")


def test_public_api_keyword_only_after_three_positionals():
    for name in ds.__all__:
        obj = getattr(ds, name)
        if inspect.isfunction(obj):
            params = inspect.signature(obj).parameters.values()
            positional = [
                p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            assert len(positional) <= 3, name


# ---------------------------------------------------------------- real data
@pytest.mark.realdata
@pytest.mark.parametrize(
    ("cell_line", "n_drugs", "n_pairs"), [("A375", 22, 153), ("HT29", 21, 134), ("VCAP", 20, 129)]
)
def test_real_synergy_matching(seed_data, cell_line, n_drugs, n_pairs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task = ds.load_synergy(seed_data, cell_line)
    msgs = [str(w.message) for w in caught if issubclass(w.category, ds.UnmatchedWarning)]
    assert not [m for m in msgs if "signatures" in m], msgs  # every signature drug matched a name
    assert task.counts["signatures"] == n_drugs and len(task.drugs) == n_drugs
    assert task.n_pairs == n_pairs
    assert any(
        "pair members without" in m for m in msgs
    )  # the other pairs are listed, not dropped silently


@pytest.mark.realdata
def test_real_toxicity_matching_and_leaky_given_split(seed_data):
    with pytest.warns(ds.UnmatchedWarning):
        renal = ds.load_toxicity(seed_data, "renal")
    c = renal.counts
    assert (c["signatures"], c["signatures_matched"], c["compounds"]) == (196, 195, 194)
    assert (c["label_rows"], c["label_structures"], c["label_structures_in_train_and_test"]) == (
        823,
        195,
        96,
    )
    assert len(set(renal.keys)) == renal.n_compounds
    for which, n, both in (("npc", 124, 2), ("neu", 63, 4)):
        task = ds.load_toxicity(seed_data, which)
        assert task.counts["signatures_matched"] == n == task.n_compounds
        assert task.counts["label_structures_in_train_and_test"] == both


@pytest.mark.realdata
@pytest.mark.slow
def test_cli_toxicity_writes_tables_and_plots(seed_data, tmp_path):
    from deeppert.cli import _downstream

    parser = argparse.ArgumentParser()
    _downstream.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "tox"
    args = parser.parse_args(
        [
            "downstream",
            "toxicity",
            "--data-dir",
            str(seed_data),
            "--sets",
            "neu",
            "--models",
            "rf",
            "--seeds",
            "2",
            "--n-estimators",
            "15",
            "--out",
            str(out),
        ]
    )
    assert args.func(args) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["split"]) == {"structure", "scaffold", "given_leaky"}
    assert (summary["n_seeds"] == 2).all()
    assert (summary.loc[summary["split"] == "structure", "n"] == 63).all()
    assert (out / "summary.md").read_text().startswith("| task |")
    assert (out / "summary_roc_auc.png").stat().st_size > 1000
    assert (out / "roc_toxicity_neu_structure_rf.png").is_file()


@pytest.mark.mlflow
def test_downstream_job_logs_each_tasks_bars_on_that_tasks_runs(sqlite_server) -> None:
    """The Ray job's runs carry the per-task chart: every feature set, honest and leaky splits."""
    from deeppert.tracking.client import start_run, tracking_client
    from deeppert.tracking.session import TrackingSession
    from ray_jobs.downstream import log_task_figures

    rows = [
        {"task": task, "target": target, "feature_set": fs, "setting": "inductive",
         "model": "rf", "split": split, "metric": metric, "mean": 0.6, "sd": 0.05}
        for task, target, metric, splits in (
            ("synergy_A375", "loewe", "pearson_r", ("one_unseen", "random_leaky")),
            ("toxicity_neu", "label", "roc_auc", ("structure", "given_leaky")),
        )
        for split in splits
        for fs in ("genes", "ensemble")
    ]  # fmt: skip
    session = TrackingSession.for_uri(sqlite_server.url, "downstream-figures").connect()
    runs = {t: [start_run(session) for _ in range(2)]
            for t in ("synergy_A375", "toxicity_neu")}  # fmt: skip
    log_task_figures(session, pd.DataFrame(rows), runs)
    client = tracking_client(sqlite_server.url)
    for task, metric in (("synergy_A375", "pearson_r"), ("toxicity_neu", "roc_auc")):
        for run_id in runs[task]:
            paths = [a.path for a in client.list_artifacts(run_id, "figures")]
            assert paths == [f"figures/summary_{metric}.png"], paths  # its own task's metric only
