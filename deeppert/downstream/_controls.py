"""Simulated tasks with known answers, to check that an evaluation split cannot leak.

``identity_synergy_task``: every drug has a random feature vector (it identifies the drug and
says nothing else) and a hidden effect; a pair's synergy is the sum of its two drugs' effects
plus noise. A model can learn a seen drug's effect from its other pairs, never an unseen
drug's. With ``pure_noise`` the synergy is noise, independent of the drugs.
``noise_toxicity_task``: random signatures, labels independent of them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deeppert.downstream._datasets import SynergyTask, ToxicityTask
from deeppert.downstream._evaluate import fold_mean_metrics

__all__ = ["identity_synergy_task", "noise_toxicity_task"]


def identity_synergy_task(
    n_drugs: int = 22,
    *,
    n_features: int = 16,
    noise_sd: float = 0.4,
    pure_noise: bool = False,
    seed: int = 0,
) -> tuple[SynergyTask, np.ndarray]:
    """All pairs of ``n_drugs`` drugs; returns the task and the drugs' true effects.

    Synergy = effect[a] + effect[b] + N(0, noise_sd^2) (effects ~ N(0, 1)); the label is
    synergy above its median. ``pure_noise``: synergy ~ N(0, 1) for every pair instead.
    """
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_drugs, n_features))
    effect = rng.normal(size=n_drugs)
    a, b = np.triu_indices(n_drugs, k=1)
    noise = rng.normal(size=len(a))
    y = noise if pure_noise else effect[a] + effect[b] + noise_sd * noise
    pairs = pd.DataFrame(
        {"drug_a": a, "drug_b": b, "synergy": y, "label": (y > np.median(y)).astype(int)}
    )
    names = tuple(f"D{i}" for i in range(n_drugs))
    counts = {"drugs": n_drugs, "pairs": len(a)}
    return SynergyTask("synergy_identity_control", names, names, values, pairs, counts), effect


def noise_toxicity_task(n: int = 150, *, n_features: int = 16, seed: int = 0) -> ToxicityTask:
    """``n`` compounds with random signatures and random balanced labels.

    Structures are distinct: an alkyl chain on one of 20 ring systems (cycloalkanes of 3-12
    atoms, alone or bonded to a benzene), so the scaffold split has 20 scaffolds to group by.
    """
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, n_features))
    labels = rng.permutation(np.arange(n) % 2)
    rings = [f"C1{'C' * k}C1" for k in range(1, 11)]
    rings += [f"C1{'C' * k}C1c1ccccc1" for k in range(1, 11)]
    keys = np.asarray(
        [f"{'C' * (i // len(rings) + 1)}{rings[i % len(rings)]}" for i in range(n)], dtype=object
    )
    given = pd.DataFrame(
        {"index": np.arange(n), "split": np.where(rng.random(n) < 0.75, "Train", "Test")}
    )
    return ToxicityTask("toxicity_noise_control", keys, values, labels, given, {"compounds": n})


def seen_drug_oracle(task: SynergyTask, effect: np.ndarray, result) -> pd.DataFrame:
    """Per one-unseen prediction row: the unseen/seen drugs from the fold provenance.

    Returns the ``one_unseen`` rows of ``result.predictions`` (Loewe target) with
    ``unseen_drugs`` (how many of the pair's drugs no training pair of its fold holds) and
    ``seen_effect`` (the true effect of the drug that fold did see; NaN unless exactly one
    drug is unseen). The oracle r is the fold-mean r of ``seen_effect`` against ``y_true``.
    """
    a = task.pairs["drug_a"].to_numpy()
    b = task.pairs["drug_b"].to_numpy()
    preds = result.predictions
    rows = preds[(preds["split"] == "one_unseen") & (preds["target"] == "loewe")].copy()
    folds = result.folds[
        (result.folds["split"] == "one_unseen") & (result.folds["role"] == "train")
    ]
    trained: dict[tuple[int, int], set[int]] = {}
    for (seed, fold), part in folds.groupby(["seed", "fold"]):
        s = part["sample"].to_numpy()
        trained[(int(seed), int(fold))] = set(a[s].tolist()) | set(b[s].tolist())
    unseen, seen_effect = [], []
    for seed, fold, sample in rows[["seed", "fold", "sample"]].itertuples(index=False):
        drugs_seen = trained[(int(seed), int(fold))]
        da, db = int(a[sample]), int(b[sample])
        unseen.append(int(da not in drugs_seen) + int(db not in drugs_seen))
        if (da in drugs_seen) != (db in drugs_seen):
            seen_effect.append(effect[da] if da in drugs_seen else effect[db])
        else:
            seen_effect.append(np.nan)
    rows["unseen_drugs"] = unseen
    rows["seen_effect"] = seen_effect
    return rows


def seen_drug_oracle_r(task: SynergyTask, effect: np.ndarray, result) -> float:
    """The oracle's fold-mean Pearson r: :func:`seen_drug_oracle`'s ``seen_effect`` against
    ``y_true`` on the one-unseen rows (what a model could reach from the seen drug alone)."""
    o = seen_drug_oracle(task, effect, result)
    metrics, _ = fold_mean_metrics(
        o["y_true"].to_numpy(),
        o["seen_effect"].to_numpy(),
        o["fold"].to_numpy(),
        target="regression",
    )
    return metrics["pearson_r"]
