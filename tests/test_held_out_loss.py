"""Per-epoch held-out loss: the same numbers as the final evaluation, and training untouched."""

from __future__ import annotations

import numpy as np
import torch

from deeppert.models import ModelConfig
from deeppert.preprocess import fit_pca
from deeppert.train import TrainConfig, fit


def test_held_out_loss_per_epoch_matches_evaluate_and_leaves_training_alone() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 30)) @ rng.normal(size=(30, 30))
    genes = [f"g{j}" for j in range(30)]
    pca = fit_pca(x[:200], genes, 10)
    x_train, x_val = pca.transform(x[:200]), pca.transform(x[200:])
    model = ModelConfig(kind="VAE", latent_dim=3, n_inputs=10)
    train = TrainConfig(epochs=4, batch_size=64, dtype="float64")
    with_val = fit(x_train, model, train, runs=[0, 1], x_val=x_val)
    without = fit(x_train, model, train, runs=[0, 1])
    # Evaluating each epoch draws no random numbers and updates no statistics.
    for a, b in zip(with_val.module.state_dict().values(), without.module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    history = with_val.history
    assert {"val_loss", "val_reconstruction", "val_kl"} <= set(history)
    assert len(history) == 4 * 2 and history["val_loss"].notna().all()
    last = history[history["epoch"] == 3].set_index("run")
    final = with_val.evaluate(x_val, x[200:], pca).set_index("run")
    np.testing.assert_allclose(last["val_reconstruction"], final["val_reconstruction"], rtol=1e-10)
    np.testing.assert_allclose(last["val_kl"], final["val_kl"], rtol=1e-10)
    beta = train.beta(3)
    np.testing.assert_allclose(
        last["val_loss"], last["val_reconstruction"] + beta * last["val_kl"], rtol=1e-10
    )
