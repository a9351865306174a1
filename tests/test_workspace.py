"""`deeppert train` and the run folder it writes: layout, exact reload, bad input leaves nothing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from deeppert.cli import main
from deeppert.config import parse_config
from deeppert.data import SynthConfig, make_synthetic
from deeppert.errors import DeeppertError
from deeppert.preprocess import PCAModel
from deeppert.workspace import (
    load_pca,
    load_signatures_of,
    load_split,
    load_trained,
    train_dataset,
    training_inputs,
)

CONFIG = """\
name: tiny
datasets:
  - name: s
    synthetic: {n_samples: 300}
preprocess: {n_components: 20}
"""
ARGS = ["--models", "AE,VAE", "--dims", "5", "--runs", "2", "--epochs", "2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def train_cli(monkeypatch):
    """The CLI; a command imports only its own module (independent of the other steps)."""
    return main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    config = tmp / "tiny.yaml"
    config.write_text(CONFIG)
    rc = main(["train", "--config", str(config), "--out", str(tmp / "out"), *ARGS])
    assert rc == 0
    return tmp / "out" / "s"


def _files(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_train_writes_the_documented_run_folder(run_dir):
    models = {
        f"models/{m}_d5/{f}"
        for m in ("AE", "VAE")
        for f in ("config.json", "state.pt", "history.csv")
    }
    latents = {f"latents/{m}_d5_run{r}.parquet" for m in ("AE", "VAE") for r in (0, 1)}
    baselines = {
        f"baselines/{b}_d5_{what}.parquet"
        for b in ("PCA", "ICA", "RP")
        for what in ("embedding", "gene_weights")
    }
    top = {"config.json", "signatures.parquet", "split.json", "metrics.csv", "training_curves.png"}
    pca = {f"pca/{f}.parquet" for f in ("components", "center", "explained_variance")}
    assert _files(run_dir) == top | pca | models | latents | baselines
    # nothing else beside the run folder: no temporary or half-written sibling
    assert [p.name for p in run_dir.parent.iterdir()] == ["s"]


def test_run_folder_contents(run_dir):
    meta = json.loads((run_dir / "config.json").read_text())
    assert meta["dataset"] == "s"
    exp = parse_config(meta["experiment"])  # the resolved config, CLI overrides applied
    assert exp.grid.models == ("AE", "VAE") and exp.grid.latent_dims == (5,)
    assert exp.grid.runs == 2 and exp.train.epochs == 2 and exp.preprocess.n_components == 20

    sig = load_signatures_of(run_dir)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # as `deeppert train` (--threads 1) generated them
        expected = make_synthetic(SynthConfig(n_samples=300)).signatures
    assert np.array_equal(sig.values, expected.values)
    assert list(sig.sample_ids) == list(expected.sample_ids) and sig.genes == expected.genes

    train, val = load_split(run_dir)
    assert len(train) == 270 and len(val) == 30
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(300))

    pca = load_pca(run_dir)
    assert pca.components.shape == (20, 978) and pca.genes == sig.genes
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(20), atol=1e-10)
    np.testing.assert_allclose(pca.mean, sig.values[train].mean(0), atol=1e-12)

    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics[["model", "run"]].values.tolist() == [
        ["AE", 0],
        ["AE", 1],
        ["VAE", 0],
        ["VAE", 1],
        ["PCA", 0],
        ["ICA", 0],
        ["RP", 0],
    ]
    assert np.isfinite(metrics[["r2_pca", "r2_genes"]].to_numpy()).all()
    assert (metrics["split"] == "rows").all()  # synthetic ids are unique: a plain row split
    # a 5-component PCA is the best rank-5 linear map of the training data: sanity of the table
    assert metrics.loc[metrics.model == "PCA", "r2_genes"].item() > 0.3
    assert metrics.loc[metrics.model == "VAE", "val_kl"].notna().all()

    weights = pd.read_parquet(run_dir / "baselines" / "ICA_d5_gene_weights.parquet")
    assert weights.shape == (978, 5) and list(weights.index) == sig.genes
    emb = pd.read_parquet(run_dir / "baselines" / "PCA_d5_embedding.parquet")
    assert emb.index.tolist() == sig.sample_ids[train].tolist()


def test_reloaded_models_reproduce_the_latents_exactly(run_dir):
    trained = load_trained(run_dir)
    assert [t.name for t in trained] == ["AE_d5", "VAE_d5"]
    x_train, ids = training_inputs(run_dir)
    assert x_train.shape == (270, 20)
    for t in trained:
        assert t.runs == [0, 1]
        for run, frame in zip(t.runs, t.latents_frames(x_train, ids)):
            saved = pd.read_parquet(run_dir / "latents" / f"{t.name}_run{run}.parquet")
            pd.testing.assert_frame_equal(frame, saved, check_exact=True)
            assert saved.index.name == "sample_id"
    # the saved VAE latents are the posterior mean: exactly the deterministic embedding
    vae = trained[1]
    saved = pd.read_parquet(run_dir / "latents" / "VAE_d5_run1.parquet")
    assert np.array_equal(saved.to_numpy(), vae.embed(x_train)[1])


def test_a_saved_pca_reloads_exactly_and_a_damaged_one_is_named(run_dir, tmp_path):
    pca = load_pca(run_dir)
    again = PCAModel.load(pca.save(tmp_path / "pca"))
    for field in ("components", "mean", "scale", "explained_variance_ratio"):
        assert np.array_equal(getattr(again, field), getattr(pca, field)), field
    assert again.genes == pca.genes
    (tmp_path / "pca" / "center.parquet").unlink()
    with pytest.raises(DeeppertError, match=r"missing center\.parquet"):
        PCAModel.load(tmp_path / "pca")
    victim = shutil.copytree(run_dir / "pca", tmp_path / "run" / "pca") / "components.parquet"
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(DeeppertError, match="not a readable Parquet file") as err:
        load_pca(tmp_path / "run")
    assert str(victim) in str(err.value)


def test_train_prints_the_held_out_table(tmp_path, train_cli, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG.replace("n_samples: 300", "n_samples: 120"))
    rc = train_cli(
        ["train", "--config", str(config), "--out", str(tmp_path / "o"), "--models", "DAE"]
        + ["--dims", "5", "--runs", "1", "--epochs", "1"]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'o' / 's'}" in out
    assert "held-out reconstruction R^2" in out and "DAE" in out and "r2_genes" in out


# -- bad input: exit code 2, one clear line, no output folder ------------------------------
def _csv(tmp_path, values: np.ndarray, name: str = "sig.csv"):
    genes = make_synthetic(SynthConfig(n_samples=10)).signatures.genes
    frame = pd.DataFrame(values, columns=genes)
    frame.insert(0, "sample_id", [f"x{i}" for i in range(len(frame))])
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _config(tmp_path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(CONFIG)
    return str(path)


def _bad(train_cli, capsys, argv, out) -> str:
    rc = train_cli(["train", "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("deeppert train: error: ")
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists(), list(out.rglob("*"))
    return err


def test_missing_data_file(tmp_path, train_cli, capsys):
    missing = tmp_path / "nope.csv"
    err = _bad(train_cli, capsys, ["--data", str(missing), *ARGS], tmp_path / "out")
    assert f"{missing}: file not found" in err


def test_csv_with_a_nan(tmp_path, train_cli, capsys):
    values = np.random.default_rng(0).standard_normal((60, 978))
    values[17, 5] = np.nan
    path = _csv(tmp_path, values)
    err = _bad(train_cli, capsys, ["--data", str(path), *ARGS], tmp_path / "out")
    assert str(path) in err
    assert "fill" in err.lower()  # points at the explicit fill-with-0 option
    # and the explicit option makes the same file train
    out = tmp_path / "ok"
    argv = ["--config", _config(tmp_path), "--data", str(path), "--fill-missing", *ARGS]
    rc = train_cli(["train", "--out", str(out), *argv])
    assert rc == 0 and (out / "sig" / "metrics.csv").is_file()


def test_latent_dim_above_n_components(tmp_path, train_cli, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    argv = ["--config", str(config), "--models", "AE", "--dims", "5,25", "--epochs", "1"]
    err = _bad(train_cli, capsys, argv, tmp_path / "out")
    assert "grid.latent_dims [25] exceed preprocess.n_components=20" in err


def test_unknown_config_key(tmp_path, train_cli, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG + "train: {epochz: 2}\n")
    err = _bad(train_cli, capsys, ["--config", str(config), *ARGS], tmp_path / "out")
    assert f"{config}: train.epochz: unknown key" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "AE,XYZ"], "grid.models: 'XYZ' is not one of ['AE', 'DAE', 'VAE']"),
        (["--dims", "5,x"], "--dims must be comma-separated integers"),
        (["--runs", "0"], "grid.runs must be at least 1"),
        (["--epochs", "0"], "train.epochs must be positive"),
    ],
)
def test_bad_overrides(tmp_path, train_cli, capsys, argv, message):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    err = _bad(train_cli, capsys, ["--config", str(config), *argv], tmp_path / "out")
    assert message in err


def test_failure_during_training_leaves_no_run_folder(tmp_path, train_cli, capsys):
    """A loss that overflows float32 fails inside the atomic folder: nothing is left behind,
    not even the --out folder the command created. (Values are within the loader's range,
    +-1.8e19, but their PCA scores' squares are not.)"""
    values = np.random.default_rng(1).standard_normal((60, 978)) * 4e18
    values = np.clip(values, -1.8e19, 1.8e19)
    path = _csv(tmp_path, values)
    out = tmp_path / "out"
    argv = ["--config", _config(tmp_path), "--data", str(path), *ARGS]
    rc = train_cli(["train", "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert "loss became non-finite" in err
    assert not out.exists()  # no run folder, no temporary folder, no empty --out


def test_an_existing_run_folder_survives_a_failed_rerun(run_dir, tmp_path):
    """Re-training into an existing folder replaces it whole or not at all."""
    import shutil

    copy = tmp_path / "s"
    shutil.copytree(run_dir, copy)
    before = {f: (copy / f).read_bytes() for f in _files(copy)}
    sig = load_signatures_of(copy)
    sig.values[:] = sig.values * 1e19
    exp = parse_config(json.loads((copy / "config.json").read_text())["experiment"])
    with pytest.raises(DeeppertError, match="non-finite"):
        train_dataset(sig, exp, copy)
    assert {f: (copy / f).read_bytes() for f in _files(copy)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_attribute_takes_its_settings_from_config_then_flags(run_dir, tmp_path):
    """`deeppert attribute`: IGConfig defaults, overridden by --config's section, then by flags."""
    import shutil

    from deeppert.attribution import IGConfig

    work = tmp_path / "run"
    shutil.copytree(run_dir, work)
    assert main(["attribute", str(work)]) == 0
    written = json.loads((work / "gene_weights" / "ig_config.json").read_text())
    assert written == IGConfig().to_dict()

    config = tmp_path / "ig.yaml"
    config.write_text("attribution: {n_steps: 7, chunk_size: 64, method: riemann_trapezoid}\n")
    assert main(["attribute", str(work), "--config", str(config), "--steps", "9"]) == 0
    written = json.loads((work / "gene_weights" / "ig_config.json").read_text())
    assert written == IGConfig(n_steps=9, chunk_size=64, method="riemann_trapezoid").to_dict()


def test_validation_split_is_grouped_by_id_when_ids_repeat():
    """A549-like data repeats ids: no id may sit on both sides of the held-out split."""
    from deeppert.preprocess import PreprocessConfig, resolve_split, split_indices

    rng = np.random.default_rng(0)
    ids = np.array([f"BRD-{i}" for i in rng.integers(0, 400, size=1000)])  # many repeats
    tr, va = split_indices(len(ids), 0.1, 3, groups=ids)
    assert not set(ids[tr]) & set(ids[va])
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(1000))
    assert 100 <= len(va) < 100 + np.unique(ids, return_counts=True)[1].max()
    # a plain row split of the same ids does leak: that is what the grouping prevents
    tr_rows, va_rows = split_indices(len(ids), 0.1, 3)
    assert set(ids[tr_rows]) & set(ids[va_rows])
    assert resolve_split(PreprocessConfig(), ids) == "grouped_by_id"
    assert resolve_split(PreprocessConfig(), np.unique(ids)) == "rows"
    assert resolve_split(PreprocessConfig(split="rows"), ids) == "rows"
    assert resolve_split(PreprocessConfig(split="grouped"), np.unique(ids)) == "grouped_by_id"
    with pytest.raises(DeeppertError, match="split must be one of"):
        PreprocessConfig(split="random")
