"""The vectorised training loop: equality with one-by-one training, seeds, schedule, VAE mean, I/O."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from deeppert import train as train_module
from deeppert.data.synthetic import SynthConfig, make_synthetic
from deeppert.errors import DeeppertError
from deeppert.models import ModelConfig, Noise
from deeppert.preprocess import fit_pca, split_indices
from deeppert.train import TrainConfig, TrainedModels, fit, seed_for_run

P = 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def x_small() -> np.ndarray:
    """131 rows x 12 'PCA scores' with some structure; batch 32 leaves a last batch of 3."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((131, 3))
    return z @ rng.standard_normal((3, P)) * 2 + 0.3 * rng.standard_normal((131, P))


F64 = TrainConfig(epochs=3, batch_size=32, dtype="float64")


def _cfg(kind: str, d: int = 5) -> ModelConfig:
    return ModelConfig(kind=kind, latent_dim=d, n_inputs=P)


def test_seed_for_run():
    assert [seed_for_run(r) for r in range(4)] == [0, 123456, 246912, 370368]


# The bias of a Linear that feeds a BatchNorm has an identically zero gradient: its updates
# are Adam-normalised round-off (~1e-9 after 3 epochs), which also reaches the BN running
# means and, through them, the eval-mode embedding. Every other tensor agrees to ~1e-16.
_PRE_BN = ("encoder.0.bias", "encoder.2.bias", "encoder.1.running_mean", "encoder.3.running_mean")


@pytest.mark.parametrize("kind", ["AE", "DAE", "VAE"])
def test_vectorised_training_equals_one_by_one(kind, x_small):
    group = fit(x_small, _cfg(kind), F64, [0, 1, 2])
    state = group.module.state_dict()
    z_group = group.embed(x_small)
    for r in range(3):
        alone = fit(x_small, _cfg(kind), F64, [r])
        for name, value in alone.module.state_dict().items():
            atol = 1e-8 if name in _PRE_BN else 1e-12
            np.testing.assert_allclose(
                state[name][r].numpy(), value[0].numpy(), rtol=0, atol=atol, err_msg=name
            )
        np.testing.assert_allclose(z_group[r], alone.embed(x_small)[0], rtol=0, atol=1e-8)
        hist = group.history[group.history["run"] == r].reset_index(drop=True)
        np.testing.assert_allclose(hist["loss"], alone.history["loss"], rtol=1e-10)
    # the runs are genuinely different models (else equality above proves little)
    assert np.abs(z_group[0] - z_group[1]).max() > 1e-3
    # and training moved them away from their initialisation
    assert group.history.groupby("run")["loss"].apply(lambda s: s.iloc[-1] < s.iloc[0]).all()


def test_noise_drawn_in_blocks_of_steps_trains_the_same_model(x_small, monkeypatch):
    """A GPU draws the noise of many steps at once, a CPU of one: the model must not change."""
    one = fit(x_small, _cfg("DAE"), F64, [0, 1])
    monkeypatch.setitem(train_module.NOISE_BLOCK_WORDS, "cpu", 1 << 20)  # 3 steps per block
    block = fit(x_small, _cfg("DAE"), F64, [0, 1])
    for (name, a), b in zip(one.module.state_dict().items(), block.module.state_dict().values()):
        assert torch.equal(a, b), name


def test_run_numbers_not_positions_choose_the_seed(x_small):
    a = fit(x_small, _cfg("AE"), F64, [2])
    b = fit(x_small, _cfg("AE"), F64, [0, 2])
    np.testing.assert_allclose(a.embed(x_small)[0], b.embed(x_small)[1], rtol=0, atol=1e-10)
    assert b.runs == [0, 2]
    assert sorted(b.history["run"].unique()) == [0, 2]


def test_seeded_training_is_deterministic(x_small):
    cfg = TrainConfig(epochs=2, batch_size=32)  # float32, the default
    a = fit(x_small, _cfg("DAE"), cfg, [0, 1])
    b = fit(x_small, _cfg("DAE"), cfg, [0, 1])
    for (name, va), vb in zip(a.module.state_dict().items(), b.module.state_dict().values()):
        assert torch.equal(va, vb), name
    pd.testing.assert_frame_equal(a.history, b.history)
    assert next(a.module.parameters()).dtype == torch.float32


def test_learning_rate_follows_cosine_annealing_with_restarts(x_small):
    epochs = 45
    trained = fit(x_small[:40], _cfg("AE"), TrainConfig(epochs=epochs, batch_size=64), [0])
    lr = trained.history["lr"].to_numpy()
    e = np.arange(epochs) % 20
    expected = 1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + np.cos(np.pi * e / 20))
    np.testing.assert_allclose(lr, expected, rtol=1e-9)
    assert lr[0] == pytest.approx(1e-3) and lr[20] == pytest.approx(1e-3)  # restarts
    assert lr[19] < 1e-5  # near the floor at the end of a cycle
    assert np.all(trained.history["beta"] == 0.0)  # no KL weight outside the VAE


def test_vae_beta_warms_up_from_zero_and_caps_at_one(x_small):
    epochs = 104
    trained = fit(x_small[:40], _cfg("VAE"), TrainConfig(epochs=epochs, batch_size=64), [0])
    h = trained.history
    beta = h["beta"].to_numpy()
    np.testing.assert_allclose(beta[:4], [0.0, 0.01, 0.02, 0.03], atol=1e-12)
    np.testing.assert_allclose(beta, np.minimum(1.0, 0.01 * np.arange(epochs)), atol=1e-12)
    assert beta[100:].tolist() == [1.0] * 4
    # beta enters the loss: loss = reconstruction + beta * KL (epoch means, one batch per epoch)
    np.testing.assert_allclose(h["loss"], h["reconstruction"] + beta * h["kl"], rtol=1e-5)
    assert (h["kl"] > 0).all()
    # the reference's beta_start=1 means no warm-up at all
    assert TrainConfig(beta_start=1.0).beta(0) == 1.0


@pytest.fixture(scope="module")
def vae(x_small) -> TrainedModels:
    return fit(x_small, _cfg("VAE"), TrainConfig(epochs=3, batch_size=32), [0, 1])


def test_vae_embedding_is_the_posterior_mean(vae, x_small):
    assert not vae.module.training
    z1, z2 = vae.embed(x_small), vae.embed(x_small)
    assert np.array_equal(z1, z2)  # deterministic across calls
    x = torch.as_tensor(x_small, dtype=torch.float32).expand(2, -1, -1)
    vae.module.eval()
    with torch.no_grad():
        inf = vae.module.inference(x)
        sampled = vae.module.inference(
            x,
            Noise(eps=torch.randn(2, len(x_small), 5, generator=torch.Generator().manual_seed(1))),
        )
    assert np.array_equal(z1, inf["z_mean"].numpy())
    assert np.array_equal(z1, inf["z"].numpy())  # without noise the code is the mean
    assert np.abs(sampled["z"].numpy() - z1).max() > 1e-2  # a sample is not the embedding
    assert np.array_equal(sampled["z_mean"].numpy(), z1)
    # eval-mode BatchNorm: a row's embedding does not depend on the rows beside it
    np.testing.assert_allclose(vae.embed(x_small[5:9]), z1[:, 5:9], rtol=1e-6, atol=1e-6)
    # embedding leaves the module's mode alone
    vae.module.train()
    assert np.array_equal(vae.embed(x_small), z1)
    assert vae.module.training
    vae.module.eval()


def test_latents_frames_name_nodes_and_keep_ids(vae, x_small):
    ids = [f"s{i % 50}" for i in range(len(x_small))]  # repeated ids stay apart
    frames = vae.latents_frames(x_small, ids)
    assert len(frames) == 2
    assert list(frames[1].columns) == [f"VAE_d5_run1_z{k}" for k in range(5)]
    assert frames[0].index.tolist() == ids
    np.testing.assert_array_equal(frames[1].to_numpy(), vae.embed(x_small)[1])


def test_save_load_reproduces_the_embedding_exactly(vae, x_small, tmp_path):
    path = vae.save(tmp_path / "VAE_d5")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "history.csv", "state.pt"]
    back = TrainedModels.load(path)
    assert back.runs == vae.runs
    assert back.model_config == vae.model_config and back.train_config == vae.train_config
    assert np.array_equal(back.embed(x_small), vae.embed(x_small))
    assert np.array_equal(back.reconstruct(x_small), vae.reconstruct(x_small))
    pd.testing.assert_frame_equal(back.history, vae.history)
    with pytest.raises(DeeppertError, match="no config.json"):
        TrainedModels.load(tmp_path / "missing")


def test_save_load_float64_and_ae(x_small, tmp_path):
    ae = fit(x_small, _cfg("AE"), F64, [3])
    back = TrainedModels.load(ae.save(tmp_path / "ae"))
    assert next(back.module.parameters()).dtype == torch.float64
    assert np.array_equal(back.embed(x_small), ae.embed(x_small))


def test_evaluate_reports_held_out_r2(x_small):
    rng = np.random.default_rng(3)
    genes = rng.standard_normal((200, 30))
    genes[:, :10] += rng.standard_normal((200, 2)) @ rng.standard_normal((2, 10)) * 3
    tr, va = split_indices(200, 0.2, 0)
    pca = fit_pca(genes[tr], [f"g{i}" for i in range(30)], P)
    x_tr, x_va = pca.transform(genes[tr]), pca.transform(genes[va])
    trained = fit(x_tr, _cfg("VAE"), TrainConfig(epochs=2, batch_size=64), [0, 1])
    m = trained.evaluate(x_va, genes[va], pca)
    assert m["run"].tolist() == [0, 1]
    for col in ("r2_pca", "r2_genes", "val_reconstruction", "val_kl", "val_sse_plus_kl"):
        assert np.isfinite(m[col]).all(), col
    # the gene-space R^2 is an R^2 of the held-out gene values
    x_hat = trained.reconstruct(x_va)[0]
    genes_hat = pca.inverse_transform(x_hat)
    ss_res = ((genes[va] - genes_hat) ** 2).sum()
    ss_tot = ((genes[va] - genes[va].mean(0)) ** 2).sum()
    assert m["r2_genes"].iloc[0] == pytest.approx(1 - ss_res / ss_tot, rel=1e-9)
    assert (m["val_reconstruction"] > 0).all() and (m["val_kl"] > 0).all()


def test_non_finite_loss_raises(x_small):
    bad = x_small.copy()
    bad[7, 3] = np.nan
    with pytest.raises(DeeppertError, match="non-finite at epoch 0"):
        fit(bad, _cfg("AE"), TrainConfig(epochs=2, batch_size=32), [0])
    huge = x_small * 1e25  # squares overflow float32
    with pytest.raises(DeeppertError, match=r"AE_d5: loss became non-finite.*runs \[0, 1\]"):
        fit(huge, _cfg("AE"), TrainConfig(epochs=2, batch_size=32), [0, 1])


def test_fit_rejects_bad_shapes(x_small):
    with pytest.raises(DeeppertError, match=r"expected \(n, 12\)"):
        fit(x_small[:, :5], _cfg("AE"), F64, [0])
    with pytest.raises(DeeppertError, match="no runs"):
        fit(x_small, _cfg("AE"), F64, [])
    with pytest.raises(DeeppertError, match="at least 2"):
        fit(x_small[:1], _cfg("AE"), F64, [0])
    with pytest.raises(DeeppertError, match="lr_min"):
        TrainConfig(lr_min=1e-2, lr_max=1e-3)
    with pytest.raises(DeeppertError, match="epochs"):
        TrainConfig(epochs=0)


# -- the pinned configuration (bar: held-out gene-space R^2 >= 0.9 x signal fraction) ----
# measured (1 thread) with per-replica torch.Generator noise: AE 0.594, DAE 0.593, VAE 0.579
# vs bar 0.54; passes unchanged with the counter-based noise streams (deeppert.rng)
PINNED_EPOCHS = 25


@pytest.mark.slow
def test_pinned_configuration_reaches_ninety_percent_of_the_signal():
    syn = make_synthetic(SynthConfig(n_samples=5000, n_programs=5, signal_fraction=0.6, seed=0))
    assert syn.signal_fraction == pytest.approx(0.6)
    sig = syn.signatures
    tr, va = split_indices(sig.n_samples, 0.1, 0)
    pca = fit_pca(sig.values[tr], sig.genes, 100)
    x_tr, x_va = pca.transform(sig.values[tr]), pca.transform(sig.values[va])
    bar = 0.9 * syn.signal_fraction
    d = 5  # the smallest latent dim >= K = 5
    results = {}
    for kind in ("AE", "DAE", "VAE"):
        trained = fit(
            x_tr,
            ModelConfig(kind=kind, latent_dim=d, n_inputs=100),
            TrainConfig(epochs=PINNED_EPOCHS),
            [0],
        )
        results[kind] = float(trained.evaluate(x_va, sig.values[va], pca)["r2_genes"].iloc[0])
    assert all(r >= bar for r in results.values()), (bar, results)
    # and nothing beats the signal: held-out noise cannot be reconstructed
    assert all(r <= syn.signal_fraction + 0.02 for r in results.values()), results
    assert math.isfinite(sum(results.values()))


def test_train_command_runs_torch_and_every_blas_pool_on_its_threads(tmp_path):
    """``deeppert train --threads N`` in a fresh interpreter: torch and every BLAS / OpenMP
    pool (scipy's and sklearn's, which load with the training code, included) run on N
    threads while training; torch's count is restored after."""
    code = """
import builtins, json, sys, types
import pandas as pd, torch
from threadpoolctl import threadpool_info

seen = {}

def record(signatures, config, out, *, dataset):
    seen["torch"] = torch.get_num_threads()
    seen["pools"] = {i["filepath"]: i["num_threads"] for i in threadpool_info()}
    return pd.DataFrame({"model": ["AE"]})

real_import = builtins.__import__

def patched(name, *args, **kwargs):  # replace training and loading as their modules load
    module = real_import(name, *args, **kwargs)
    if name == "deeppert.workspace":
        sys.modules[name].train_dataset = record
        sys.modules[name].TrainedRun = lambda out, metrics: types.SimpleNamespace(metrics=metrics)
    if name == "deeppert.grid":
        sys.modules[name].load_dataset = lambda dataset: None
    return module

builtins.__import__ = patched
from deeppert.cli import main
before = torch.get_num_threads()
rc = main(sys.argv[1:])
seen["later"] = sorted(i["filepath"] for i in threadpool_info())
seen.update(rc=rc, before=before, after=torch.get_num_threads())
print(json.dumps(seen))
"""
    data = tmp_path / "signatures.csv"
    data.write_text("sample_id\n")
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "out"), "--threads", "3"]
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0] == "deeppert train: loading torch and scikit-learn"
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["rc"] == 0 and seen["torch"] == 3, proc.stderr[-2000:]
    assert set(seen["pools"].values()) == {3}, seen["pools"]
    assert sorted(seen["pools"]) == seen["later"]  # no pool loaded after the limit was set
    assert seen["after"] == seen["before"]
