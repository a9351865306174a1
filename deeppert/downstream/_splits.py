"""Honest cross-validation splits: by drug for pairs, by structure or scaffold for compounds.

A split is a list of ``(train_indices, test_indices)`` folds over the task's samples.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold

from deeppert.errors import DeeppertError

__all__ = [
    "Fold",
    "drug_folds",
    "drug_disjoint_splits",
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


def drug_disjoint_splits(
    drug_a: np.ndarray, drug_b: np.ndarray, fold_of_drug: np.ndarray
) -> list[Fold]:
    """Per drug fold: test pairs hold at least one held-out drug, training pairs none.

    A pair whose drugs sit in two different folds is tested in both; its pooled prediction
    is the mean of the two. A pair with both drugs in one fold is tested once, with neither
    drug seen in training (the "both unseen" subset).
    """
    fa, fb = fold_of_drug[np.asarray(drug_a)], fold_of_drug[np.asarray(drug_b)]
    folds = []
    for f in range(int(fold_of_drug.max()) + 1):
        test = (fa == f) | (fb == f)
        folds.append((np.flatnonzero(~test), np.flatnonzero(test)))
    return folds


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
