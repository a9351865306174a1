"""Models, inner-CV tuning, pooled out-of-fold predictions and metrics for the downstream tasks.

One code path serves the real tasks and the label-shuffle check: featurizers are fitted on
each fold's training rows, hyper-parameters are chosen by an inner cross-validation grouped
by pair/structure, out-of-fold predictions are pooled, and metrics are computed once on the
pool, always with the sample counts beside them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import pearsonr
from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.metrics import average_precision_score, mean_squared_error, roc_auc_score
from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedGroupKFold
from threadpoolctl import threadpool_limits

from deeppert.downstream._compounds import murcko_scaffold
from deeppert.downstream._datasets import SynergyTask, ToxicityTask
from deeppert.downstream._features import Featurizer, pair_features
from deeppert.downstream._splits import (
    Fold,
    drug_disjoint_splits,
    drug_folds,
    random_pair_splits,
    scaffold_splits,
    structure_splits,
)
from deeppert.errors import DeeppertError

__all__ = [
    "ModelName",
    "Target",
    "EvalConfig",
    "EvaluationResult",
    "SYNERGY_SPLITS",
    "TOXICITY_SPLITS",
    "evaluate_synergy",
    "evaluate_toxicity",
    "with_permuted_labels",
    "pooled_metrics",
]

log = logging.getLogger(__name__)

ModelName = Literal["rf", "hgb"]
Target = Literal["regression", "classification"]
SynergySplit = Literal["drug_disjoint", "both_unseen", "random_leaky"]
ToxicitySplit = Literal["structure", "scaffold", "given_leaky"]
SYNERGY_SPLITS: tuple[SynergySplit, ...] = ("drug_disjoint", "both_unseen", "random_leaky")
TOXICITY_SPLITS: tuple[ToxicitySplit, ...] = ("structure", "scaffold", "given_leaky")


@dataclass(frozen=True)
class EvalConfig:
    """How the downstream evaluation runs.

    Attributes
    ----------
    n_folds
        Outer folds (synergy: drug folds, each holding out ~1/n_folds of the drugs).
    seeds
        One full cross-validation per seed (fold assignment and model seed); metrics are
        reported as mean +- sd over seeds.
    models
        ``"rf"`` (RandomForest, the reference) and/or ``"hgb"`` (HistGradientBoosting).
    n_estimators
        Trees per random forest.
    hgb_max_iter
        Boosting iterations.
    inner_folds
        Inner CV folds for the hyper-parameter grid (grouped by pair / structure / scaffold).
    grid
        ``"tiny"``: 2 combinations per model (RF min_samples_leaf 1/5, HGB learning rate
        0.05/0.15); ``"small"``: 2 x 2 (adds RF max_depth, HGB max_leaf_nodes).
    n_jobs
        Parallel jobs of the grid search.
    """

    n_folds: int = 5
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    models: tuple[ModelName, ...] = ("rf", "hgb")
    n_estimators: int = 200
    hgb_max_iter: int = 100
    inner_folds: int = 3
    grid: Literal["small", "tiny"] = "tiny"
    n_jobs: int = 1

    def __post_init__(self) -> None:
        if self.n_folds < 2 or self.inner_folds < 2:
            raise DeeppertError(
                f"EvalConfig: n_folds and inner_folds must be >= 2, got {self.n_folds}, {self.inner_folds}"
            )
        if not self.seeds:
            raise DeeppertError("EvalConfig: at least one seed")
        bad = [m for m in self.models if m not in ("rf", "hgb")]
        if bad or not self.models:
            raise DeeppertError(
                f"EvalConfig: models must be a non-empty subset of rf, hgb; got {list(self.models)}"
            )

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        d["models"] = list(self.models)
        return d


@dataclass(frozen=True)
class EvaluationResult:
    """Per-seed scores and the pooled out-of-fold predictions behind them.

    ``scores``: one row per task, target, feature_set, model, split, metric, seed with
    ``value``, ``n`` (pairs or compounds scored) and ``n_compounds`` (drugs/compounds in them).
    ``predictions``: task, target, feature_set, model, split, seed, sample, y_true, y_pred.
    """

    scores: pd.DataFrame
    predictions: pd.DataFrame


def _grid(kind: ModelName, size: str) -> dict[str, list]:
    """``small``: 2 x 2 combinations; ``tiny``: 2 (the default: the tasks hold ~150 samples)."""
    if kind == "rf":
        grid: dict[str, list] = {"min_samples_leaf": [1, 5]}
        if size == "small":
            grid["max_depth"] = [None, 8]
    else:
        grid = {"learning_rate": [0.05, 0.15]}
        if size == "small":
            grid["max_leaf_nodes"] = [7, 15]
    return grid


def _estimator(kind: ModelName, target: Target, seed: int, cfg: EvalConfig) -> BaseEstimator:
    if kind == "rf":
        cls = RandomForestClassifier if target == "classification" else RandomForestRegressor
        return cls(n_estimators=cfg.n_estimators, max_features="sqrt", random_state=seed, n_jobs=1)
    cls = (
        HistGradientBoostingClassifier
        if target == "classification"
        else HistGradientBoostingRegressor
    )
    # 32 bins suit ~100-300 samples and keep 1956 pair features affordable
    return cls(
        max_iter=cfg.hgb_max_iter,
        max_bins=32,
        max_leaf_nodes=7,
        min_samples_leaf=5,
        early_stopping=False,
        random_state=seed,
    )


def _fit(
    kind: ModelName,
    target: Target,
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    seed: int,
    cfg: EvalConfig,
):
    """Tune on an inner CV grouped by ``groups`` (no group on both sides), refit on all of X."""
    n_groups = len(np.unique(groups))
    if target == "classification":
        if len(np.unique(y)) < 2:
            raise DeeppertError(
                f"a training fold holds a single class ({int(y[0])}); too few samples of the other"
            )
        per_class = min(len(np.unique(groups[y == c])) for c in np.unique(y))
        k = min(cfg.inner_folds, per_class)
        if k < 2:
            raise DeeppertError(
                "a training fold has fewer than 2 groups of one class: cannot tune by inner CV"
            )
        cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        scoring = "roc_auc"
    else:
        k = min(cfg.inner_folds, n_groups)
        if k < 2:
            raise DeeppertError("a training fold has fewer than 2 groups: cannot tune by inner CV")
        cv = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
        scoring = "neg_root_mean_squared_error"
    search = GridSearchCV(
        _estimator(kind, target, seed, cfg),
        _grid(kind, cfg.grid),
        scoring=scoring,
        cv=cv,
        n_jobs=cfg.n_jobs,
        error_score="raise",
        refit=True,
    )
    # one OpenMP thread: HGB otherwise oversubscribes a shared machine badly
    with threadpool_limits(limits=1, user_api="openmp"):
        search.fit(X, y, groups=groups)
    return search.best_estimator_


def _predict(model, X: np.ndarray, target: Target) -> np.ndarray:
    with threadpool_limits(limits=1, user_api="openmp"):
        return model.predict_proba(X)[:, 1] if target == "classification" else model.predict(X)


def pooled_metrics(y_true: np.ndarray, y_pred: np.ndarray, target: Target) -> dict[str, float]:
    """Metrics on one pool of out-of-fold predictions.

    Regression: ``pearson_r``, ``rmse``. Classification: ``roc_auc``, ``pr_auc`` (average precision).
    """
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    if len(y_true) < 3:
        raise DeeppertError(f"only {len(y_true)} sample(s) to score")
    if target == "classification":
        if len(np.unique(y_true)) < 2:
            raise DeeppertError(f"the {len(y_true)} scored samples hold a single class")
        return {
            "roc_auc": float(roc_auc_score(y_true, y_pred)),
            "pr_auc": float(average_precision_score(y_true, y_pred)),
        }
    rmse = float(np.sqrt(mean_squared_error(y_true, y_pred)))
    r = (
        float(pearsonr(y_true, y_pred).statistic)
        if np.std(y_pred) > 0 and np.std(y_true) > 0
        else float("nan")
    )
    return {"pearson_r": r, "rmse": rmse}


def _synergy_oof(
    task: SynergyTask,
    featurizer: Featurizer,
    kind: ModelName,
    target: Target,
    y: np.ndarray,
    folds: list[Fold],
    seed: int,
    cfg: EvalConfig,
) -> np.ndarray:
    """Pooled out-of-fold predictions per pair (mean over the folds that test it)."""
    a, b = task.pairs["drug_a"].to_numpy(), task.pairs["drug_b"].to_numpy()
    # one canonical orientation, so the fitted model cannot depend on how a file orders a pair
    a, b = np.minimum(a, b), np.maximum(a, b)
    total, count = np.zeros(len(y)), np.zeros(len(y))
    for tr, te in folds:
        if len(te) == 0:
            continue
        train_drugs = np.unique(np.concatenate([a[tr], b[tr]]))
        transform = featurizer.fit(task.values[train_drugs], seed=seed)
        feats = transform(task.values)
        X = np.vstack([pair_features(feats, a[tr], b[tr]), pair_features(feats, b[tr], a[tr])])
        model = _fit(kind, target, X, np.tile(y[tr], 2), np.tile(tr, 2), seed, cfg)
        pred = 0.5 * (
            _predict(model, pair_features(feats, a[te], b[te]), target)
            + _predict(model, pair_features(feats, b[te], a[te]), target)
        )
        total[te] += pred
        count[te] += 1
    out = np.full(len(y), np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _rows_oof(
    values: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    featurizer: Featurizer,
    kind: ModelName,
    target: Target,
    folds: list[Fold],
    seed: int,
    cfg: EvalConfig,
) -> np.ndarray:
    """Pooled out-of-fold predictions per row (rows tested more than once are averaged)."""
    total, count = np.zeros(len(y)), np.zeros(len(y))
    for tr, te in folds:
        transform = featurizer.fit(values[tr], seed=seed)
        model = _fit(kind, target, transform(values[tr]), y[tr], groups[tr], seed, cfg)
        total[te] += _predict(model, transform(values[te]), target)
        count[te] += 1
    out = np.full(len(y), np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _check_featurizers(featurizers: Sequence[Featurizer]) -> None:
    if not featurizers:
        raise DeeppertError("no feature sets to evaluate")
    names = [f.name for f in featurizers]
    if len(set(names)) != len(names):
        raise DeeppertError(f"feature set names must be unique, got {names}")


def _frames(score_rows: list[dict], pred_parts: list[pd.DataFrame]) -> EvaluationResult:
    return EvaluationResult(pd.DataFrame(score_rows), pd.concat(pred_parts, ignore_index=True))


def _score_rows(key: dict, y, pred, target, *, seed: int, n_compounds: int) -> list[dict]:
    """One score row per pooled metric of ``pred`` against ``y``, with the counts beside it."""
    return [
        {**key, "metric": m, "seed": seed, "value": v, "n": len(y), "n_compounds": n_compounds}
        for m, v in pooled_metrics(y, pred, target).items()
    ]


def evaluate_synergy(
    task: SynergyTask,
    featurizers: Sequence[Featurizer],
    *,
    config: EvalConfig = EvalConfig(),
    splits: Sequence[SynergySplit] = SYNERGY_SPLITS,
) -> EvaluationResult:
    """Cross-validate synergy prediction: Loewe score (regression) and its 0/1 label.

    Pair features are drug A ++ drug B; training uses both orders, predictions average the
    two. Splits: ``drug_disjoint`` (folds over drugs; a test pair holds >= 1 held-out drug,
    no training pair does; pooled over folds), ``both_unseen`` (the pooled pairs whose two
    drugs were both held out), ``random_leaky`` (the reference's random folds over pairs).
    """
    _check_featurizers(featurizers)
    if task.n_pairs < config.n_folds:
        raise DeeppertError(
            f"{task.name}: {task.n_pairs} pair(s) is too few for {config.n_folds} folds"
        )
    a, b = task.pairs["drug_a"].to_numpy(), task.pairs["drug_b"].to_numpy()
    targets: dict[str, tuple[Target, np.ndarray]] = {
        "loewe": ("regression", task.pairs["synergy"].to_numpy(dtype=float)),
        "label": ("classification", task.pairs["label"].to_numpy(dtype=int)),
    }
    score_rows: list[dict] = []
    pred_parts: list[pd.DataFrame] = []
    for seed in config.seeds:
        fold_of = drug_folds(len(task.drugs), n_folds=config.n_folds, seed=seed)
        disjoint = drug_disjoint_splits(a, b, fold_of)
        both_unseen = fold_of[a] == fold_of[b]
        plans = {
            "drug_disjoint": disjoint,
            "random_leaky": random_pair_splits(task.n_pairs, n_folds=config.n_folds, seed=seed),
        }
        for featurizer in featurizers:
            for kind in config.models:
                for tname, (target, y) in targets.items():
                    for plan, folds in plans.items():
                        if plan not in splits and not (
                            plan == "drug_disjoint" and "both_unseen" in splits
                        ):
                            continue
                        pred = _synergy_oof(task, featurizer, kind, target, y, folds, seed, config)
                        scored = {plan: np.isfinite(pred)}
                        if plan == "drug_disjoint":
                            scored["both_unseen"] = both_unseen & np.isfinite(pred)
                        for split, mask in scored.items():
                            if split not in splits:
                                continue
                            if not mask.any():
                                raise DeeppertError(
                                    f"{task.name}: seed {seed}: no pair scored under split {split!r}"
                                )
                            drugs_in = len(np.unique(np.concatenate([a[mask], b[mask]])))
                            key = dict(
                                task=task.name,
                                target=tname,
                                feature_set=featurizer.name,
                                model=kind,
                                split=split,
                            )
                            score_rows += _score_rows(
                                key, y[mask], pred[mask], target, seed=seed, n_compounds=drugs_in
                            )
                            pred_parts.append(
                                pd.DataFrame(
                                    {
                                        **key,
                                        "seed": seed,
                                        "sample": np.flatnonzero(mask),
                                        "y_true": y[mask],
                                        "y_pred": pred[mask],
                                    }
                                )
                            )
                        log.info(
                            "%s %s %s %s %s seed %d done",
                            task.name,
                            tname,
                            featurizer.name,
                            kind,
                            plan,
                            seed,
                        )
    return _frames(score_rows, pred_parts)


def evaluate_toxicity(
    task: ToxicityTask,
    featurizers: Sequence[Featurizer],
    *,
    config: EvalConfig = EvalConfig(),
    splits: Sequence[ToxicitySplit] = TOXICITY_SPLITS,
) -> EvaluationResult:
    """Cross-validate toxicity classification (ROC-AUC, PR-AUC) on structure-deduplicated compounds.

    Splits: ``structure`` (stratified folds over unique structures), ``scaffold`` (no Murcko
    scaffold on both sides), ``given_leaky`` (the published Train/Test rows as given,
    duplicates included: reported only for comparison).
    """
    _check_featurizers(featurizers)
    if task.n_compounds < config.n_folds:
        raise DeeppertError(
            f"{task.name}: {task.n_compounds} compound(s) is too few for {config.n_folds} folds"
        )
    y = np.asarray(task.labels, dtype=int)
    ids = np.arange(task.n_compounds)
    scaffolds = (
        np.asarray([murcko_scaffold(k) for k in task.keys], dtype=object)
        if "scaffold" in splits
        else None
    )
    given_idx = task.given["index"].to_numpy()
    given_test = (task.given["split"] == "Test").to_numpy()
    score_rows: list[dict] = []
    pred_parts: list[pd.DataFrame] = []
    for seed in config.seeds:
        plans: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, list[Fold]]] = {}
        if "structure" in splits:
            plans["structure"] = (
                ids,
                y,
                ids,
                structure_splits(y, n_folds=config.n_folds, seed=seed),
            )
        if "scaffold" in splits:
            plans["scaffold"] = (
                ids,
                y,
                scaffolds,
                scaffold_splits(y, scaffolds, n_folds=config.n_folds, seed=seed),
            )
        if "given_leaky" in splits:
            if not given_test.any() or given_test.all():
                raise DeeppertError(f"{task.name}: the given split needs both Train and Test rows")
            plans["given_leaky"] = (
                given_idx,
                y[given_idx],
                given_idx,
                [(np.flatnonzero(~given_test), np.flatnonzero(given_test))],
            )
        for featurizer in featurizers:
            for kind in config.models:
                for split, (rows, yy, groups, folds) in plans.items():
                    pred = _rows_oof(
                        task.values[rows],
                        yy,
                        groups,
                        featurizer,
                        kind,
                        "classification",
                        folds,
                        seed,
                        config,
                    )
                    mask = np.isfinite(pred)
                    key = dict(
                        task=task.name,
                        target="label",
                        feature_set=featurizer.name,
                        model=kind,
                        split=split,
                    )
                    n_comp = len(np.unique(rows[mask]))
                    score_rows += _score_rows(
                        key, yy[mask], pred[mask], "classification", seed=seed, n_compounds=n_comp
                    )
                    pred_parts.append(
                        pd.DataFrame(
                            {
                                **key,
                                "seed": seed,
                                "sample": rows[mask],
                                "y_true": yy[mask],
                                "y_pred": pred[mask],
                            }
                        )
                    )
                    log.info(
                        "%s %s %s %s seed %d done", task.name, featurizer.name, kind, split, seed
                    )
    return _frames(score_rows, pred_parts)


def with_permuted_labels(task: SynergyTask | ToxicityTask, seed: int) -> SynergyTask | ToxicityTask:
    """A copy of ``task`` with its labels (and synergy scores) permuted across samples.

    Structures keep one label each, so duplicates in the given split stay consistent; the
    null model for the label-shuffle check.
    """
    rng = np.random.default_rng(seed)
    if isinstance(task, ToxicityTask):
        return replace(task, labels=rng.permutation(task.labels))
    pairs = task.pairs.copy()
    perm = rng.permutation(len(pairs))
    pairs["synergy"] = pairs["synergy"].to_numpy()[perm]
    pairs["label"] = pairs["label"].to_numpy()[perm]
    return replace(task, pairs=pairs)
