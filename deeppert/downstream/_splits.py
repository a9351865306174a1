"""Honest cross-validation splits: by drug for pairs, by structure or scaffold for compounds.

A split is a list of ``(train_indices, test_indices)`` folds over the task's samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold

from deeppert.errors import DeeppertError

__all__ = [
    "Fold",
    "drug_folds",
    "DrugFold",
    "drug_split_folds",
    "inner_drug_splits",
    "random_pair_splits",
    "structure_splits",
    "scaffold_splits",
]

Fold = tuple[np.ndarray, np.ndarray]


def drug_folds(n_drugs: int, *, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold id (0..n_folds-1) of each drug: a random partition into near-equal fifths."""
    if n_drugs < n_folds:
        raise DeeppertError(f"drug folds: {n_drugs} drug(s) cannot fill {n_folds} folds")
    order = np.random.default_rng(seed).permutation(n_drugs)
    fold = np.empty(n_drugs, dtype=int)
    for f, members in enumerate(np.array_split(order, n_folds)):
        fold[members] = f
    return fold


@dataclass(frozen=True)
class DrugFold:
    """One drug fold's model and the pairs it alone predicts.

    ``train``: pairs with neither drug in the held-out fold; ``one_unseen``: pairs with exactly
    one drug in this fold, assigned to this fold (a pair whose drugs sit in two folds is
    tested by one of the two fold models, never by both); ``both_unseen``: pairs with both
    drugs in this fold. Indices are pair rows.
    """

    held_out: np.ndarray
    train: np.ndarray
    one_unseen: np.ndarray
    both_unseen: np.ndarray


def drug_split_folds(
    drug_a: np.ndarray, drug_b: np.ndarray, fold_of_drug: np.ndarray, *, seed: int = 0
) -> list[DrugFold]:
    """Per drug fold: the training pairs (no held-out drug) and the pairs it tests.

    A pair whose drugs sit in two different folds is assigned, by a seeded coin, to the fold
    of one of its drugs; that fold's model never saw the assigned drug and did see the other.
    Averaging the two fold models instead would let each model contribute the effect of the
    drug it had learnt, so a pair would be scored with both drugs' effects learnt.
    """
    a, b = np.asarray(drug_a), np.asarray(drug_b)
    fa, fb = fold_of_drug[a], fold_of_drug[b]
    coin = np.random.default_rng(seed).random(len(a)) < 0.5
    assigned = np.where(coin, fa, fb)
    folds = []
    for f in range(int(fold_of_drug.max()) + 1):
        touched = (fa == f) | (fb == f)
        folds.append(
            DrugFold(
                held_out=np.flatnonzero(fold_of_drug == f),
                train=np.flatnonzero(~touched),
                one_unseen=np.flatnonzero((fa != fb) & (assigned == f)),
                both_unseen=np.flatnonzero((fa == f) & (fb == f)),
            )
        )
    return folds


def inner_drug_splits(
    drug_a: np.ndarray, drug_b: np.ndarray, *, n_folds: int, seed: int = 0
) -> list[Fold]:
    """Inner CV over the pairs of a training set, grouped by drug.

    The training set's drugs are split into ``n_folds`` folds; validation pairs hold a drug of
    the fold, training pairs none (as the outer one-drug-unseen split). Folds with an empty
    side are dropped.
    """
    a, b = np.asarray(drug_a), np.asarray(drug_b)
    drugs = np.unique(np.concatenate([a, b]))
    k = min(n_folds, len(drugs))
    if k < 2:
        return []
    fold_of = np.full(int(drugs.max()) + 1, -1)
    fold_of[drugs] = drug_folds(len(drugs), n_folds=k, seed=seed)
    out = []
    for f in range(k):
        val = (fold_of[a] == f) | (fold_of[b] == f)
        if val.any() and not val.all():
            out.append((np.flatnonzero(~val), np.flatnonzero(val)))
    return out


def random_pair_splits(n_pairs: int, *, n_folds: int = 5, seed: int = 0) -> list[Fold]:
    """The reference's random split over pairs (both orders of a pair stay together; drugs are shared)."""
    kf = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in kf.split(np.arange(n_pairs))]


def structure_splits(labels: np.ndarray, *, n_folds: int = 5, seed: int = 0) -> list[Fold]:
    """Stratified folds over structures (samples are already one per structure)."""
    labels = np.asarray(labels)
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in skf.split(np.zeros(len(labels)), labels)]


def scaffold_splits(
    labels: np.ndarray, scaffolds: np.ndarray, *, n_folds: int = 5, seed: int = 0
) -> list[Fold]:
    """Stratified folds that keep every Murcko scaffold on one side (a harder split)."""
    labels = np.asarray(labels)
    groups = np.asarray(scaffolds)
    if len(set(groups.tolist())) < n_folds:
        raise DeeppertError(
            f"scaffold split: {len(set(groups.tolist()))} scaffold(s) cannot fill {n_folds} folds"
        )
    sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in sgkf.split(np.zeros(len(labels)), labels, groups)]
