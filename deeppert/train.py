"""The one training loop: R seeds of one architecture trained in a single vectorised pass.

Training plan (docs/method.md section 2): Adam, learning rate cosine-annealed per epoch from
``lr_max`` to ``lr_min`` over a restarting ``cycle_epochs`` cycle, minibatches of 256
shuffled each epoch, VAE beta warmed up from ``beta_start`` by ``kl_kappa`` per epoch to 1.
Run ``r`` uses seed ``123456 * r``: its initialisation and per-epoch shuffling come from a
``torch.Generator`` with that seed (once per fit / epoch), its dropout masks and DAE / VAE
noise from the counter-based stream keyed by that seed (:mod:`deeppert.rng`), drawn for all
replicas and a block of steps in one batched operation. So a replica is the model it
would be alone. Adam is elementwise, so one (fused) optimiser step over the stacked
parameters is R independent ones. The step loop has no Python loop over replicas and no
host-device synchronisation: loss terms are summed on the device and read once per epoch.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deeppert.atomic import atomic_dir, read_json
from deeppert.errors import DeeppertError
from deeppert.models import (
    ModelConfig,
    PerturbationAutoencoder,
    draw_noise,
    init_parameters,
    noise_width,
)
from deeppert.preprocess import PCAModel, r2_score_flat
from deeppert.rng import replica_keys
from deeppert.train_config import TrainConfig

__all__ = ["TrainConfig", "seed_for_run", "TrainedModels", "fit"]

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, pd.DataFrame], None]
HISTORY_COLUMNS = ("epoch", "run", "loss", "reconstruction", "kl", "beta", "lr")

# Random words drawn per block of steps: one step at a time keeps a CPU's block in cache;
# on a GPU a block of many steps turns ~25 small launches per step into ~25 per block.
NOISE_BLOCK_WORDS = {"cpu": 1, "cuda": 1 << 25}


def seed_for_run(run: int) -> int:
    """The reference's seed for run ``run`` (runs numbered from 0)."""
    return 123456 * run


@dataclass
class TrainedModels:
    """R trained replicas of one architecture, with their per-epoch history.

    ``runs[r]`` is the run number of replica ``r`` (seed ``123456 * runs[r]``).
    """

    module: PerturbationAutoencoder
    model_config: ModelConfig
    train_config: TrainConfig
    runs: list[int]
    history: pd.DataFrame

    @property
    def name(self) -> str:
        return f"{self.model_config.kind}_d{self.model_config.latent_dim}"

    def _tensor(self, x_pca: np.ndarray) -> torch.Tensor:
        param = next(self.module.parameters())
        x = torch.as_tensor(np.asarray(x_pca), dtype=param.dtype, device=param.device)
        if x.ndim != 2 or x.shape[1] != self.model_config.n_inputs:
            raise DeeppertError(
                f"{self.name}: expected (n, {self.model_config.n_inputs}) PCA scores, got {tuple(x.shape)}"
            )
        return x.unsqueeze(0).expand(len(self.runs), -1, -1)

    def embed(self, x_pca: np.ndarray) -> np.ndarray:
        """Embeddings (R, n, d): the code (AE/DAE) or the VAE posterior mean, deterministic."""
        return self.module.encode_mean(self._tensor(x_pca)).cpu().numpy()

    def reconstruct(self, x_pca: np.ndarray) -> np.ndarray:
        """Reconstructions (R, n, p) through the deterministic code."""
        return self.module.reconstruct(self._tensor(x_pca)).cpu().numpy()

    def evaluate(self, x_pca: np.ndarray, genes: np.ndarray, pca: PCAModel) -> pd.DataFrame:
        """Held-out metrics per run: R^2 in PCA space and in gene space (+ VAE loss terms).

        ``genes`` are the held-out rows' gene values, so the gene-space R^2 also pays for
        what the PCA truncation loses.
        """
        x_hat = self.reconstruct(x_pca)
        rows = []
        for r, run in enumerate(self.runs):
            row = {
                "model": self.model_config.kind,
                "latent_dim": self.model_config.latent_dim,
                "run": run,
                "r2_pca": r2_score_flat(x_pca, x_hat[r]),
                "r2_genes": r2_score_flat(genes, pca.inverse_transform(x_hat[r])),
            }
            rows.append(row)
        frame = pd.DataFrame(rows)
        if self.model_config.kind == "VAE":
            with torch.no_grad():
                self.module.eval()
                x = self._tensor(x_pca)
                inf = self.module.inference(x)
                terms = self.module.loss(x, inf, self.module.generative(inf["z_mean"]))
            frame["val_reconstruction"] = terms.reconstruction.cpu().numpy()
            frame["val_kl"] = terms.kl.cpu().numpy()
            # summed squared error of the mean code's reconstruction + KL (the training loss at
            # beta = 1); not an ELBO: no Gaussian likelihood, no sampled code
            frame["val_sse_plus_kl"] = frame["val_reconstruction"] + frame["val_kl"]
        return frame

    def latents_frames(self, x_pca: np.ndarray, sample_ids: Sequence[str]) -> list[pd.DataFrame]:
        """Each replica's embedding as a frame: rows = sample ids, columns = node names."""
        z = self.embed(x_pca)
        index = pd.Index(list(sample_ids), name="sample_id")
        return [
            pd.DataFrame(z[r], index=index, columns=self.node_names(r))
            for r in range(len(self.runs))
        ]

    def node_names(self, r: int) -> list[str]:
        """Stable latent-variable names, e.g. ``VAE_d10_run3_z07``."""
        d = self.model_config.latent_dim
        width = len(str(d - 1))
        return [f"{self.name}_run{self.runs[r]}_z{k:0{width}d}" for k in range(d)]

    def save(self, path: str | Path) -> Path:
        """Write ``config.json``, ``state.pt`` and ``history.csv`` into folder ``path`` atomically."""
        with atomic_dir(path) as tmp:
            meta = {
                "model": self.model_config.to_dict(),
                "train": self.train_config.to_dict(),
                "runs": self.runs,
            }
            (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
            torch.save(self.module.state_dict(), tmp / "state.pt")
            self.history.to_csv(tmp / "history.csv", index=False)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> TrainedModels:
        """Reload what :meth:`save` wrote; the embedding is reproduced exactly."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise DeeppertError(f"{path}: not a saved model folder (no config.json)")
        meta = read_json(path / "config.json")
        model_config = ModelConfig(**meta["model"])
        train_config = TrainConfig(**meta["train"])
        module = PerturbationAutoencoder(model_config, replicas=len(meta["runs"])).to(
            train_config.torch_dtype
        )
        state = path / "state.pt"
        try:
            module.load_state_dict(torch.load(state, map_location="cpu", weights_only=True))
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0]
            raise DeeppertError(
                f"{state}: not a readable model state ({detail}); the folder is damaged, "
                "rerun `deeppert train`"
            ) from exc
        history = pd.read_csv(path / "history.csv")
        return cls(module.eval(), model_config, train_config, list(meta["runs"]), history)

    @classmethod
    def from_replicas(
        cls,
        replicas: Sequence[PerturbationAutoencoder],
        runs: Sequence[int],
        train_config: TrainConfig,
    ) -> TrainedModels:
        """Stack single-model modules (R = 1 each, same architecture) back into one group.

        Used to rebuild a shape's group from encoders pulled one by one from a model registry.
        """
        configs = {m.config for m in replicas}
        if len(configs) != 1:
            raise DeeppertError(
                f"cannot stack replicas of different architectures: {sorted(map(str, configs))}"
            )
        module = PerturbationAutoencoder(replicas[0].config, replicas=len(replicas))
        states = [m.state_dict() for m in replicas]
        module.load_state_dict({k: torch.cat([s[k] for s in states]) for k in states[0]})
        module = module.to(next(replicas[0].parameters()).dtype).eval()
        # No training history travels with a registry copy; keep the columns so save/load round-trip.
        history = pd.DataFrame(columns=list(HISTORY_COLUMNS))
        return cls(module, replicas[0].config, train_config, [int(r) for r in runs], history)


def fit(
    x_train: np.ndarray,
    model_config: ModelConfig,
    train_config: TrainConfig,
    runs: Sequence[int],
    *,
    on_epoch: EpochCallback | None = None,
    x_val: np.ndarray | None = None,
) -> TrainedModels:
    """Train one replica per run in ``runs`` on PCA scores ``x_train`` (n, p), all at once.

    ``on_epoch(epoch, frame)`` is called after each epoch with one row per run (loss terms,
    beta, learning rate; with ``x_val``, the held-out terms of :func:`held_out_loss` too):
    the hook for progress bars and experiment trackers.
    """
    runs = [int(r) for r in runs]
    if not runs:
        raise DeeppertError("no runs to train")
    x_train = np.asarray(x_train)
    if x_train.ndim != 2 or x_train.shape[1] != model_config.n_inputs:
        raise DeeppertError(
            f"expected (n, {model_config.n_inputs}) training inputs, got {x_train.shape}"
        )
    n = x_train.shape[0]
    if n < 2:
        raise DeeppertError(f"need at least 2 training rows, got {n}")
    dtype, device = train_config.torch_dtype, torch.device(train_config.device)
    R = len(runs)
    gens = [torch.Generator().manual_seed(seed_for_run(r)) for r in runs]
    keys = replica_keys([seed_for_run(r) for r in runs], device)

    module = PerturbationAutoencoder(model_config, replicas=R).to(dtype)
    init_parameters(module, gens)
    module.to(device).train()
    x = torch.as_tensor(x_train, dtype=dtype, device=device)
    optimizer = torch.optim.Adam(
        module.parameters(), lr=train_config.lr_max, fused=device.type in ("cpu", "cuda")
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=train_config.cycle_epochs, eta_min=train_config.lr_min
    )
    is_vae = model_config.kind == "VAE"
    B = train_config.batch_size
    n_batches = math.ceil(n / B)
    # Noise rows per step: a batch never holds more than n rows, and row i's numbers do not
    # depend on how many rows are drawn, so data smaller than a batch draws only what it uses.
    rows = min(B, n)
    words_per_step = R * rows * max(noise_width(model_config), 1)
    block_steps = max(1, min(n_batches, NOISE_BLOCK_WORDS.get(device.type, 1) // words_per_step))
    records = []
    for epoch in range(train_config.epochs):
        beta = train_config.beta(epoch) if is_vae else 0.0
        lr = optimizer.param_groups[0]["lr"]
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        totals = torch.zeros(3, R, dtype=torch.float64, device=device)
        seen = 0
        for i in range(n_batches):
            k = i % block_steps
            if k == 0:
                block = draw_noise(
                    model_config,
                    keys,
                    epoch * n_batches + i,
                    min(block_steps, n_batches - i),
                    rows,
                    dtype=dtype,
                )
            idx = perms[:, i * B : (i + 1) * B]
            b = idx.shape[1]
            if b < 2:  # batch statistics are undefined for one row; the reference's Keras agrees
                continue
            xb = x[idx]
            out = module(xb, block.step(k, b))
            terms = module.loss(xb, out, out, beta)
            optimizer.zero_grad(set_to_none=True)
            terms.loss.sum().backward()
            optimizer.step()
            with torch.no_grad():
                totals.add_(torch.stack([terms.loss, terms.reconstruction, terms.kl]), alpha=b)
            seen += b
        schedule.step()
        means = (totals / seen).cpu().numpy()
        epoch_frame = pd.DataFrame(
            {
                "epoch": epoch,
                "run": runs,
                "loss": means[0],
                "reconstruction": means[1],
                "kl": means[2],
                "beta": beta,
                "lr": lr,
            }
        )
        if x_val is not None:
            epoch_frame = epoch_frame.assign(**held_out_loss(module, x_val, beta))
        records.append(epoch_frame)
        if on_epoch is not None:
            on_epoch(epoch, epoch_frame)
        if not np.isfinite(means[0]).all():
            raise DeeppertError(
                f"{model_config.kind}_d{model_config.latent_dim}: loss became non-finite at epoch {epoch} "
                f"(runs {[r for r, v in zip(runs, means[0]) if not np.isfinite(v)]}); lower train.lr_max"
            )
    module.eval()
    return TrainedModels(
        module, model_config, train_config, runs, pd.concat(records, ignore_index=True)
    )


@torch.no_grad()
def held_out_loss(
    module: PerturbationAutoencoder, x_val: np.ndarray, beta: float
) -> dict[str, np.ndarray]:
    """Per-run held-out loss terms ``val_loss``, ``val_reconstruction``, ``val_kl`` (R,).

    Eval mode (BatchNorm running statistics, no dropout or noise, the VAE decoded from its
    posterior mean), so it draws no random numbers and leaves training untouched.
    """
    was_training = module.training
    param = next(module.parameters())
    x = torch.as_tensor(np.asarray(x_val), dtype=param.dtype, device=param.device)
    x = x.unsqueeze(0).expand(module.replicas, -1, -1)
    module.eval()
    try:
        inf = module.inference(x)
        terms = module.loss(x, inf, module.generative(inf["z_mean"]), beta)
    finally:
        module.train(was_training)
    return {
        "val_loss": terms.loss.double().cpu().numpy(),
        "val_reconstruction": terms.reconstruction.double().cpu().numpy(),
        "val_kl": terms.kl.double().cpu().numpy(),
    }
