"""The Python face (``import deeppert as dp``): light to import, conventional signatures, and the
whole chain (load, train, attribute, ensemble, targets, export) equal to the CLI's for the same
inputs and seeds."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import deeppert as dp
from deeppert.cli import main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = """\
name: api
preprocess: {n_components: 12, val_fraction: 0.1}
grid: {models: [AE, VAE], latent_dims: [3], runs: 2, baselines: true}
train: {epochs: 2, batch_size: 128}
ensemble: {l_min: 2, l_max: 4}
"""
DISEASE = "Synthetic Disease"
TARGETS = {"n_clusters": 3, "top_genes": 100, "permutations": 10}
# files holding wall times, compared without them
TIMED = {"signatures/ensemble/program_baselines.parquet", "signatures/ensemble/summary.json"}
STEPS = {"train", "attribute", "ensemble", "ensemble_of", "targets", "all_diseases"}


def test_import_deeppert_loads_neither_torch_nor_pandas():
    code = (
        "import sys, deeppert as dp\n"
        "names = dir(dp) + dir(dp.tl)\n"
        "print(sorted(m for m in ('torch', 'pandas', 'numpy', 'mlflow', 'ray') "
        "if m in sys.modules))\n"
        "print(sorted(dp.tl.__all__))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    loaded, steps = proc.stdout.splitlines()
    assert loaded == "[]"
    assert steps == str(sorted(STEPS))


def test_every_public_name_resolves_and_unknown_names_fail():
    for name in dp.__all__:
        assert getattr(dp, name) is not None, name
    assert sorted(dp.tl.__all__) == sorted(STEPS)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dp.nope  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dp.tl.nope  # noqa: B018


@pytest.mark.parametrize("name", ["load", "export", "to_anndata", *sorted(STEPS)])
def test_steps_take_at_most_two_positional_arguments_and_say_what_they_write(name):
    fn = getattr(dp.tl, name) if name in STEPS else getattr(dp, name)
    params = inspect.signature(fn).parameters.values()
    positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert len(positional) <= 2, (name, [p.name for p in positional])
    assert fn.__doc__ and len(fn.__doc__.split()) > 15, name


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A synthetic matrix with known pairs, and the chain run once by the CLI, once by the API."""
    from deeppert.data import SynthConfig, make_synthetic, write_synthetic

    tmp = tmp_path_factory.mktemp("api")
    syn = write_synthetic(
        make_synthetic(SynthConfig(n_samples=200, n_programs=3, module_size=20, seed=1)),
        tmp / "syn",
    )
    (tmp / "config.yaml").write_text(CONFIG)
    data, pairs = str(syn / "signatures.parquet"), str(syn / "target_pairs")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TARGETS.items()]

    cli = tmp / "cli"
    argv = ["train", "--config", str(tmp / "config.yaml"), "--data", data, "--out", str(cli)]
    assert main(argv) == 0
    run_dir = cli / "signatures"
    assert main(["attribute", str(run_dir), "--steps", "8"]) == 0
    assert main(["ensemble", str(run_dir), "--no-stability"]) == 0
    weights = str(run_dir / "ensemble" / "ensemble_weights.parquet")
    common = ["--weights", weights, "--pairs-dir", pairs, *flags]
    assert main(["targets", *common, "--disease", DISEASE, "--out", str(cli / "t")]) == 0
    argv = ["targets", *common, "--all-diseases", "--min-pairs", "1", "--out", str(cli / "all")]
    assert main(argv) == 0
    assert main(["export", str(run_dir), "--h5ad", str(cli / "x.h5ad")]) == 0

    from deeppert.config import load_config

    api = tmp / "api"
    dataset = dp.DataConfig(name="signatures", path=data)
    config = dataclasses.replace(load_config(tmp / "config.yaml"), datasets=(dataset,))
    sig = dp.load(data)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # as `deeppert train` (--threads 1): same BLAS sums
        run = dp.tl.train(sig, api / "signatures", config=config, dataset=dataset)
    completeness = dp.tl.attribute(run, config=dp.IGConfig(n_steps=8))
    step = dp.tl.ensemble(run, stability=False)
    target_config = dp.TargetConfig(**TARGETS)
    result = dp.tl.targets(step, config=target_config, known=pairs, disease=DISEASE, out=api / "t")
    table = dp.tl.all_diseases(run, pairs, config=target_config, min_pairs=1, out=api / "all")
    adata = dp.export(run, h5ad=api / "x.h5ad")
    return {
        "cli": cli,
        "api": api,
        "run": run,
        "completeness": completeness,
        "step": step,
        "result": result,
        "table": table,
        "adata": adata,
    }


def _files(root: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob(pattern))}


@pytest.mark.parametrize(
    "pattern",
    [
        "signatures/*.json",
        "signatures/signatures.parquet",
        "signatures/pca/*.parquet",
        "signatures/latents/*.parquet",
        "signatures/gene_weights/*.parquet",
        "signatures/gene_weights/completeness.csv",
        "signatures/baselines/*.parquet",
        "signatures/metrics.csv",
        "signatures/ensemble/*.parquet",
        "signatures/ensemble/*.json",
        "signatures/ensemble/*.csv",
        "t/*.csv",
        "all/*.csv",
    ],
)
def test_api_chain_writes_the_clis_files_byte_for_byte(world, pattern):
    cli, api = _files(world["cli"], pattern), _files(world["api"], pattern)
    assert cli, pattern
    assert sorted(api) == sorted(cli)
    assert [name for name in cli if api[name] != cli[name] and name not in TIMED] == []


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k != "fit_seconds"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_files_with_wall_times_are_equal_without_them(world):
    """The program baselines carry their fit time (``fit_seconds``): equal apart from it."""
    cli, api = world["cli"], world["api"]
    table = "signatures/ensemble/program_baselines.parquet"
    a, b = (pd.read_parquet(root / table).drop(columns="fit_seconds") for root in (cli, api))
    pd.testing.assert_frame_equal(a, b)
    summary = "signatures/ensemble/summary.json"
    a, b = (_without_timings(json.loads((root / summary).read_text())) for root in (cli, api))
    assert a == b and "baselines" in json.dumps(a)


def test_api_returns_what_it_wrote(world):
    api = world["api"]
    run, step = world["run"], world["step"]
    assert isinstance(run, dp.TrainedRun) and run.dataset == "signatures"
    assert set(run.metrics["model"]) >= {"AE", "VAE", "PCA"}
    pd.testing.assert_frame_equal(
        world["completeness"], pd.read_csv(api / "signatures/gene_weights/completeness.csv")
    )
    assert isinstance(step, dp.EnsembleStep)
    written = pd.read_parquet(api / "signatures/ensemble/ensemble_weights.parquet")
    pd.testing.assert_frame_equal(step.ensemble.weights, written)
    summary = json.loads((api / "signatures/ensemble/summary.json").read_text())
    assert summary == json.loads(json.dumps(step.summary()))
    pairs = pd.read_csv(api / "t/target_combinations.csv")
    assert len(pairs) == len(world["result"].pairs) > 0
    assert world["result"].disease == DISEASE
    assert set(world["table"]["status"]) >= {"ok"}


def test_exported_anndata_equals_the_clis(world):
    import anndata

    cli = anndata.read_h5ad(world["cli"] / "x.h5ad")
    api = anndata.read_h5ad(world["api"] / "x.h5ad")
    mem = world["adata"]
    np.testing.assert_array_equal(api.obsm["X_deeppert"], cli.obsm["X_deeppert"])
    np.testing.assert_array_equal(mem.obsm["X_deeppert"], cli.obsm["X_deeppert"])
    for key in ("deeppert_weights", "deeppert_loadings"):
        np.testing.assert_array_equal(api.varm[key], cli.varm[key])
    np.testing.assert_array_equal(api.X, cli.X)
    assert api.uns["deeppert"]["source"] == str(world["api"] / "signatures")


def test_ensemble_of_another_method_needs_force(world):
    from deeppert.errors import DeeppertError

    run = world["run"]
    with pytest.raises(DeeppertError, match="holds a consensus ensemble; --method gmeans"):
        dp.tl.ensemble(run, config=dp.EnsembleConfig(method="gmeans"), stability=False)


def test_a_missing_run_folder_is_named(tmp_path):
    from deeppert.errors import DeeppertError

    with pytest.raises(DeeppertError, match=f"run folder {tmp_path / 'none'}: folder not found"):
        dp.tl.attribute(tmp_path / "none")
