"""AnnData both ways: `deeppert export --h5ad` on a run folder, EnsembleModel.embed(adata),
and the exported file read back by anndata and by load_signatures."""

from __future__ import annotations

import json

import anndata
import numpy as np
import pytest
import torch

from deeppert.cli import main
from deeppert.data import load_signatures, save_signatures
from deeppert.ensemble.modes import EnsembleModel
from deeppert.workspace import load_signatures_of

CONFIG = """\
name: tiny
datasets:
  - name: s
    synthetic: {n_samples: 200}
preprocess: {n_components: 12}
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A trained, attributed and ensembled run folder (tiny: 2 models x 2 runs, d = 4)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("export")
    (tmp / "tiny.yaml").write_text(CONFIG)
    args = ["--models", "AE,VAE", "--dims", "4", "--runs", "2", "--epochs", "2"]
    try:
        assert (
            main(["train", "--config", str(tmp / "tiny.yaml"), "--out", str(tmp / "out"), *args])
            == 0
        )
        run = tmp / "out" / "s"
        assert main(["attribute", str(run), "--steps", "8"]) == 0
        assert main(["ensemble", str(run), "--n-clusters", "3", "--no-stability"]) == 0
    finally:
        torch.set_num_threads(n)
    return run


def test_export_run_folder_to_h5ad(run_dir, tmp_path, capsys):
    out = tmp_path / "s.h5ad"
    assert main(["export", str(run_dir), "--h5ad", str(out)]) == 0
    assert "obsm['X_deeppert'] (200, 3)" in capsys.readouterr().out
    adata = anndata.read_h5ad(out)
    sig = load_signatures_of(run_dir)
    model = EnsembleModel.load(run_dir / "ensemble" / "model")
    assert adata.shape == (200, 978)
    np.testing.assert_array_equal(adata.X, sig.values.astype(np.float32))
    assert list(adata.obs["sample_id"]) == list(sig.sample_ids)
    assert list(adata.var_names) == sig.genes and adata.var["landmark"].all()
    expected = model.embed(sig.to_frame())
    np.testing.assert_allclose(adata.obsm["X_deeppert"], expected.to_numpy(), rtol=1e-6, atol=1e-6)
    weights = json.loads(json.dumps(list(adata.uns["deeppert"]["clusters"])))
    assert weights == list(expected.columns)
    import pandas as pd

    # clusters x genes: importances (>= 0) and, beside them, the signed loadings
    table = pd.read_parquet(run_dir / "ensemble" / "ensemble_weights.parquet")
    loadings = pd.read_parquet(run_dir / "ensemble" / "ensemble_loadings.parquet")
    np.testing.assert_array_equal(
        adata.varm["deeppert_weights"], table[sig.genes].T.to_numpy(np.float32)
    )
    np.testing.assert_array_equal(
        adata.varm["deeppert_loadings"], loadings[sig.genes].T.to_numpy(np.float32)
    )
    assert (table.to_numpy() >= 0).all() and (loadings.to_numpy() < 0).any()
    np.testing.assert_allclose(table.to_numpy(), np.abs(loadings.to_numpy()))  # consensus
    uns = adata.uns["deeppert"]
    assert json.loads(uns["config"])["dataset"] == "s"
    assert sorted(uns["members"]) == ["AE_d4", "VAE_d4"]
    # the exported file is a signature input like any other .h5ad: obs becomes metadata
    back = load_signatures(out, id_column="sample_id")
    assert list(back.sample_ids) == list(sig.sample_ids) and back.genes == sig.genes


def test_embed_accepts_anndata_and_stores_the_embedding(run_dir, tmp_path):
    model = EnsembleModel.load(run_dir / "ensemble" / "model")
    sig = load_signatures_of(run_dir)
    adata = anndata.AnnData(
        X=sig.values[:20, ::-1].copy(),  # genes in another order: matched by var_names
        obs={"dose": np.arange(20.0)},
    )
    adata.obs_names = list(sig.sample_ids[:20])
    adata.var_names = sig.genes[::-1]
    frame = model.embed(adata)
    expected = model.embed(sig.values[:20], sig.sample_ids[:20])
    np.testing.assert_allclose(frame.to_numpy(), expected.to_numpy(), rtol=1e-12)
    np.testing.assert_array_equal(adata.obsm["X_deeppert"], frame.to_numpy())
    assert adata.uns["deeppert"]["clusters"] == list(frame.columns)


def test_export_with_other_signatures_and_bad_input(run_dir, tmp_path, capsys):
    sig = load_signatures_of(run_dir).take(np.arange(30))
    sig.metadata = __import__("pandas").DataFrame(
        {"cell_id": ["SYN1"] * 30, "dose": np.arange(30.0)}
    )
    save_signatures(sig, tmp_path / "new.parquet")
    out = tmp_path / "new.h5ad"
    assert (
        main(
            [
                "export",
                str(run_dir),
                "--signatures",
                str(tmp_path / "new.parquet"),
                "--h5ad",
                str(out),
            ]
        )
        == 0
    )
    adata = anndata.read_h5ad(out)
    assert adata.shape == (30, 978) and list(adata.obs.columns) == ["sample_id", "cell_id", "dose"]
    capsys.readouterr()
    for argv, message in [
        ([str(tmp_path), "--h5ad", str(tmp_path / "x.h5ad")], "no ensemble/model"),
        ([str(run_dir), "--h5ad", str(tmp_path / "x.txt")], "--h5ad must name a .h5ad file"),
        (
            ["--ensemble", "s-ensemble@current", "--h5ad", str(tmp_path / "x.h5ad")],
            "--ensemble needs --tracking-uri",
        ),
        (
            [
                str(run_dir),
                "--signatures",
                str(tmp_path / "none.csv"),
                "--h5ad",
                str(tmp_path / "x.h5ad"),
            ],
            "none.csv: file not found",
        ),
    ]:
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x.h5ad").exists() and not list(tmp_path.glob(".x.h5ad*"))
