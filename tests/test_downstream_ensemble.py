"""Downstream tasks fed by an ensemble: pooled signatures, ensemble/single-model featurizers, CLI."""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from deeppert import downstream as ds
from deeppert.data._signatures import landmark_genes
from deeppert.downstream._pooled import (
    default_member_group,
    ensemble_embed_fn,
    ensemble_feature_sets,
    member_embed_fn,
)
from deeppert.ensemble.modes import EnsembleModel
from deeppert.errors import DeeppertError
from deeppert.models import ModelConfig
from deeppert.preprocess import fit_pca
from deeppert.train import TrainConfig, fit

GENES = list(landmark_genes())


@pytest.fixture(scope="module")
def tiny_model() -> tuple[EnsembleModel, np.ndarray]:
    """AE d=3 x 2 runs on 160 synthetic landmark signatures; 6 members in 2 clusters."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(160, 3)) @ rng.normal(size=(3, 978)) + rng.normal(size=(160, 978))
    pca = fit_pca(X, GENES, 8)
    tm = fit(
        pca.transform(X).astype(np.float32),
        ModelConfig(kind="AE", latent_dim=3, n_inputs=8),
        TrainConfig(epochs=5, batch_size=32),
        runs=range(2),
    )
    names = tm.node_names(0) + tm.node_names(1)
    labels = pd.DataFrame(
        {"cluster": [0, 1, 1, 0, 1, 1], "sign": [1, 1, -1, 1, -1, 1]}, index=names
    )
    return EnsembleModel(pca, {tm.name: tm}, labels), X


@pytest.mark.realdata
def test_pooled_signatures_shape_ids_and_genes(seed_data):
    sig = ds.pooled_signatures(seed_data)
    assert sig.values.shape == (446, 978)
    assert sig.genes == GENES  # L1000 landmark order
    assert not pd.Index(sig.genes).duplicated().any()
    assert sig.metadata["cell_line"].value_counts().to_dict() == {
        "HA1E": 196,
        "NPC": 124,
        "NEU": 63,
        "A375": 22,
        "HT29": 21,
        "VCAP": 20,
    }
    ids = pd.Series(sig.sample_ids)
    assert not ids.duplicated().any()
    assert (ids.str.split("|").str[0] == sig.metadata["cell_line"]).all()
    assert (ids.str.split("|", n=1).str[1] == sig.metadata["canonical_smiles"]).all()
    assert not any("label" in str(c).lower() for c in sig.metadata.columns)  # unsupervised
    # the VCAP rows are exactly the VCAP file's signatures
    vcap = ds.read_signature_csv(seed_data / "downstream/drug_combination/VCAP_COMBINATION.csv")
    np.testing.assert_array_equal(
        sig.values[(sig.metadata["cell_line"] == "VCAP").to_numpy()], vcap.values
    )


def test_ensemble_featurizers_shape_and_determinism(tiny_model):
    model, X = tiny_model
    feats = ensemble_feature_sets(model, pca_components=4)
    assert [f.name for f in feats] == ["raw", "pca", "single_AE_d3_run0", "ensemble"]
    rows = X[:25]
    ens = feats[3].fit(X[25:])(rows)
    assert ens.shape == (25, 2)
    np.testing.assert_array_equal(ens, feats[3].fit(X[:5], seed=3)(rows))  # fit learns nothing
    # equals the EnsembleModel's own embedding of a gene frame in another column order
    frame = pd.DataFrame(rows, columns=GENES)[GENES[::-1]]
    np.testing.assert_allclose(ens, model.embed(frame).to_numpy())
    single = feats[2].fit(X)(rows)
    assert single.shape == (25, 3)
    np.testing.assert_allclose(
        single, model.models["AE_d3"].embed(model.pca.transform(rows))[0], rtol=1e-6
    )
    # replica 1 is a different model: the member choice matters
    assert not np.allclose(member_embed_fn(model, "AE_d3", 1)(rows), single)
    # cluster 0 = mean(+z0 of run0, +z0 of run1): the cluster arithmetic is the ensemble's
    z = model.models["AE_d3"].embed(model.pca.transform(rows))
    np.testing.assert_allclose(ens[:, 0], (z[0, :, 0] + z[1, :, 0]) / 2, rtol=1e-5)
    assert default_member_group(model) == "AE_d3"
    with pytest.raises(DeeppertError, match="978"):
        ensemble_embed_fn(model)(rows[:, :100])
    with pytest.raises(DeeppertError, match="no model group"):
        member_embed_fn(model, "VAE_d9")


def test_ensemble_features_run_through_toxicity_evaluation(tiny_model):
    """Labels set by the ensemble's own first cluster: its features must find them, and a
    featurizer that cannot see the cluster (shuffled labels) must not."""
    model, X = tiny_model
    n = 60
    keys = np.asarray(
        [f"C{'C' * (i % 6)}c1ccc(cc1){'N' * (i // 6)}" for i in range(n)], dtype=object
    )
    cluster0 = ensemble_embed_fn(model)(X[:n])[:, 0]
    labels = (cluster0 > np.median(cluster0)).astype(int)
    given = pd.DataFrame({"index": range(n), "split": ["Train"] * 45 + ["Test"] * 15})
    task = ds.ToxicityTask("toxicity_synthetic", keys, X[:n], labels, given, {"compounds": n})
    config = ds.EvalConfig(seeds=(0,), models=("rf",), n_estimators=10, inner_folds=2, n_folds=3)
    res = ds.evaluate_toxicity(
        task, ensemble_feature_sets(model)[2:], config=config, splits=("structure",)
    )
    assert set(res.scores["feature_set"]) == {"single_AE_d3_run0", "ensemble"}
    assert set(res.scores["setting"]) == {"transductive"}
    assert (res.scores["n"] == n).all()
    auc = res.scores[res.scores["metric"] == "roc_auc"].set_index("feature_set")["value"]
    assert auc["ensemble"] > 0.8, auc
    shuffled = ds.evaluate_toxicity(
        replace(task, labels=np.random.default_rng(5).permutation(task.labels)),
        ensemble_feature_sets(model)[3:],
        config=config,
        splits=("structure",),
    )
    assert shuffled.scores.query("metric == 'roc_auc'")["value"].iloc[0] < 0.7


@pytest.mark.realdata
def test_cli_ensemble_dir_end_to_end(seed_data, tiny_model, tmp_path):
    """`deeppert downstream toxicity --ensemble-dir` on NEU (63 compounds), one seed, 10 trees."""
    from deeppert.cli import _downstream

    model, _ = tiny_model
    model_dir = model.save(tmp_path / "ensemble" / "model")
    parser = argparse.ArgumentParser()
    _downstream.register(parser.add_subparsers(dest="command"))
    common = [
        "--data-dir",
        str(seed_data),
        "--sets",
        "neu",
        "--models",
        "rf",
        "--seeds",
        "1",
        "--n-estimators",
        "10",
        "--inner-folds",
        "2",
        "--splits",
        "structure",
        "--no-plots",
    ]
    out = tmp_path / "out"
    args = parser.parse_args(
        [
            "downstream",
            "toxicity",
            *common,
            "--features",
            "raw,single,ensemble",
            "--ensemble-dir",
            str(model_dir),
            "--out",
            str(out),
        ]
    )
    assert args.func(args) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert set(zip(summary["feature_set"], summary["setting"], strict=True)) == {
        ("raw", "none"),
        ("single_AE_d3_run0", "transductive"),
        ("ensemble", "transductive"),
    }
    assert (summary["n"] == 63).all()
    # asking for ensemble features with no ensemble source is an error, not a silent skip
    bad = parser.parse_args(
        [
            "downstream",
            "toxicity",
            *common,
            "--features",
            "ensemble",
            "--out",
            str(tmp_path / "bad"),
        ]
    )
    with pytest.raises(DeeppertError, match="--ensemble"):
        bad.func(bad)
    # a registry alias without a server URI is refused before any work
    alias = parser.parse_args(
        [
            "downstream",
            "toxicity",
            *common,
            "--features",
            "ensemble",
            "--ensemble",
            "seed-pooled-ensemble@current",
            "--out",
            str(tmp_path / "alias"),
        ]
    )
    with pytest.raises(DeeppertError, match="--tracking-uri"):
        alias.func(alias)
