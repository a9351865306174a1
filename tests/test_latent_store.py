"""The streaming ensemble: latents read one model run at a time, per-run components computed
once (or elsewhere, as Ray tasks compute them) give the in-process ensemble step's result."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deeppert.ensemble.modes import EnsembleConfig, components_by_run, run_groups
from deeppert.ensemble.stability import ensemble_step
from deeppert.errors import DeeppertError
from deeppert.latent_store import LatentStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _planted(seed=0, n=600, G=100, K=3, size=15, runs=4):
    """Planted modules; each model run's code is a random invertible mixture of the programs
    plus noise, at dims K and K + 2 (what an autoencoder's code is, up to nonlinearity)."""
    from deeppert.preprocess import fit_pca

    rng = np.random.default_rng(seed)
    member = np.zeros((K, G), bool)
    for k in range(K):
        member[k, k * size : (k + 1) * size] = True
    load = np.where(member, rng.uniform(0.8, 1.2, (K, G)), rng.normal(0, 0.1, (K, G)))
    A = rng.laplace(size=(n, K))
    X = A @ load + rng.normal(size=(n, G))
    pca = fit_pca(X, [f"g{j}" for j in range(G)], 15)
    frames = {}
    for run in range(runs):
        for d in (K, K + 2):
            code = A @ rng.normal(size=(K, d)) + 0.3 * rng.normal(size=(n, d))
            cols = [f"AE_d{d}_run{run}_z{k:02d}" for k in range(d)]
            frames[f"AE_d{d}_run{run}"] = pd.DataFrame(
                code, index=pd.Index([f"s{i}" for i in range(n)], name="sample_id"), columns=cols
            )
    return frames, pca.transform(X), pca


class CountingReads:
    """A store reader that counts reads per model run and the most columns asked at once."""

    def __init__(self, frames: dict[str, pd.DataFrame]) -> None:
        self.frames, self.reads, self.widest = frames, {}, 0

    def __call__(self, key, columns):
        self.reads[key] = self.reads.get(key, 0) + 1
        self.widest = max(self.widest, len(columns))
        return self.frames[key][list(columns)].to_numpy()


def _assert_same_step(a, b) -> None:
    for role, frame in a.tables().items():
        timing = [c for c in frame.columns if c.endswith("_seconds")]  # wall clock, not a result
        pd.testing.assert_frame_equal(
            frame.drop(columns=timing),
            b.tables()[role].drop(columns=timing),
            rtol=1e-10,
            atol=1e-12,
        )
    assert a.stability["ensemble_median"] == pytest.approx(b.stability["ensemble_median"])
    assert a.stability["single_corr"].keys() == b.stability["single_corr"].keys()
    for model, corr in a.stability["single_corr"].items():
        np.testing.assert_allclose(corr, b.stability["single_corr"][model], rtol=1e-10)


@pytest.fixture(scope="module")
def planted():
    frames, x, pca = _planted()
    latents = pd.concat(frames.values(), axis=1)
    config = EnsembleConfig(method="consensus", l_max=6, seed=0)
    return (
        frames,
        latents,
        x,
        pca,
        config,
        ensemble_step(latents, None, config=config, x_pca=x, pca=pca),
    )


def test_streamed_step_equals_the_in_memory_step(planted):
    """The same step over a store that holds no latents: every table and the stability equal,
    each model run's code read at most 3 times (its components once, the embedding of the
    ensemble and of its half) and never more than one run's columns at once."""
    frames, latents, x, pca, config, expected = planted
    reader = CountingReads(frames)
    store = LatentStore(latents.index, latents.columns, reader)
    step = ensemble_step(store, None, config=config, x_pca=x, pca=pca)
    _assert_same_step(step, expected)
    assert set(reader.reads) == set(frames)
    assert max(reader.reads.values()) <= 3, reader.reads
    assert reader.widest == max(f.shape[1] for f in frames.values())


def test_components_computed_elsewhere_give_the_same_step(planted):
    """Per-run components computed in separate chunks (as Ray tasks do) are what the
    in-process step computes: same rotations, same ensemble."""
    frames, latents, x, pca, config, expected = planted
    keys = list(run_groups(latents.columns))
    chunks = [keys[0::2], keys[1::2]]
    precomputed = {}
    for chunk in chunks:  # each chunk sees only its own runs' latents
        own = latents[[c for k in chunk for c in run_groups(latents.columns)[k]]]
        precomputed.update(components_by_run(own, x, pca, config))
    whole = components_by_run(latents, x, pca, config)
    for key in keys:
        np.testing.assert_array_equal(precomputed[key].rotation, whole[key].rotation)
    step = ensemble_step(latents, None, config=config, x_pca=x, pca=pca, precomputed=precomputed)
    _assert_same_step(step, expected)
    assert step.ensemble.n_clusters == 3


def test_store_from_files_and_from_encoders(tmp_path):
    """A store over per-run Parquet files reads back each run's frame; one over encoders
    computes each run's code from its encoder, as the trained models embed it."""
    import torch

    from deeppert.models import ModelConfig
    from deeppert.train import TrainConfig, fit

    frames, x, pca = _planted(runs=2)
    files = {}
    for key, frame in frames.items():
        frame.to_parquet(tmp_path / f"{key}.parquet")
        files[key] = tmp_path / f"{key}.parquet"
    store = LatentStore.from_files(files)
    assert list(store.index) == list(frames["AE_d3_run0"].index)
    assert store.shape == (600, sum(f.shape[1] for f in frames.values()))
    sub = store[["AE_d5_run1_z04", "AE_d5_run1_z00"]]
    np.testing.assert_array_equal(
        sub.to_numpy(), frames["AE_d5_run1"][["AE_d5_run1_z04", "AE_d5_run1_z00"]].to_numpy()
    )
    with pytest.raises(KeyError, match="not in the store"):
        store[["AE_d9_run0_z00"]]

    from deeppert.models import MeanEncoder

    trained = fit(
        x.astype(np.float32),
        ModelConfig(kind="VAE", latent_dim=3, n_inputs=x.shape[1]),
        TrainConfig(epochs=2),
        runs=[0, 1],
    )
    expected = trained.latents_frames(x, [f"s{i}" for i in range(len(x))])
    encoders = {
        f"{trained.name}_run{run}": (trained.node_names(r), MeanEncoder(trained.module, r))
        for r, run in enumerate(trained.runs)
    }
    store = LatentStore.from_encoders(x, expected[0].index, encoders)
    frame = store.to_frame()
    pd.testing.assert_frame_equal(
        frame, pd.concat(expected, axis=1).astype(np.float64), rtol=1e-5, atol=1e-6,
        check_names=False,
    )  # fmt: skip
    assert torch.get_num_threads() == 1

    one = store.runs([f"{trained.name}_run1"])
    assert list(one.columns) == trained.node_names(1)
    assert list(one.read.encoders) == [f"{trained.name}_run1"]  # the other encoder is not sent
    np.testing.assert_array_equal(one.to_numpy(), store[list(one.columns)].to_numpy())
    files_one = LatentStore.from_files(files).runs(["AE_d5_run1"])
    assert list(files_one.read.files) == ["AE_d5_run1"]
    np.testing.assert_array_equal(files_one.to_numpy(), frames["AE_d5_run1"].to_numpy())
    with pytest.raises(KeyError, match="not in the store"):
        store.runs(["AE_d9_run0"])


def test_store_refuses_repeated_names_and_wrong_shapes():
    frames, _, _ = _planted(runs=2)
    latents = pd.concat(frames.values(), axis=1)
    with pytest.raises(DeeppertError, match="unique"):
        LatentStore(latents.index, [*latents.columns, latents.columns[0]], CountingReads(frames))
    short = LatentStore(latents.index, latents.columns, lambda key, cols: np.zeros((3, len(cols))))
    with pytest.raises(DeeppertError, match="shape"):
        short.run("AE_d3_run0")
