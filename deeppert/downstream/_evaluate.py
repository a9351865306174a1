"""Models, inner-CV tuning, out-of-fold predictions and metrics for the downstream tasks.

One code path serves the real tasks and the controls: every prediction row comes from exactly
one fold model (recorded in ``fold``, with each fold's training rows in
``EvaluationResult.folds``); hyper-parameters are chosen by an inner cross-validation grouped
by drug (synergy) or structure/scaffold (toxicity). Unsupervised featurizers are fitted either
on the training fold's signatures (``inductive``) or on all of the task's signatures
(``transductive``; labels are never used). Synergy metrics are the mean over folds of each
fold's metric (pooling across folds would mix in the differences between the fold models'
training means); toxicity metrics are computed on the pooled out-of-fold predictions. Sample
counts are always reported beside the values.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
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
from threadpoolctl import ThreadpoolController

from deeppert.downstream._compounds import murcko_scaffold
from deeppert.downstream._datasets import SynergyTask, ToxicityTask
from deeppert.downstream._features import Featurizer, pair_features
from deeppert.downstream._splits import (
    Fold,
    drug_folds,
    drug_split_folds,
    inner_drug_splits,
    random_pair_splits,
    scaffold_splits,
    structure_splits,
)
from deeppert.downstream_config import SETTINGS, EvalConfig, ModelName, Setting
from deeppert.errors import DeeppertError

__all__ = [
    "ModelName",
    "Target",
    "Setting",
    "SETTINGS",
    "EvalConfig",
    "EvaluationResult",
    "SYNERGY_SPLITS",
    "TOXICITY_SPLITS",
    "evaluate_synergy",
    "evaluate_toxicity",
    "pooled_metrics",
    "fold_mean_metrics",
]

log = logging.getLogger(__name__)

Target = Literal["regression", "classification"]
SynergySplit = Literal["one_unseen", "both_unseen", "random_leaky"]
ToxicitySplit = Literal["structure", "scaffold", "given_leaky"]
SYNERGY_SPLITS: tuple[SynergySplit, ...] = ("one_unseen", "both_unseen", "random_leaky")
TOXICITY_SPLITS: tuple[ToxicitySplit, ...] = ("structure", "scaffold", "given_leaky")


@dataclass(frozen=True)
class EvaluationResult:
    """Per-seed scores, the out-of-fold predictions behind them, and which fold made each.

    ``scores``: one row per task, target, feature_set, setting, model, split, metric, seed
    with ``value``, ``n`` (pairs or compounds scored), ``n_compounds`` (drugs/compounds in
    them), ``n_folds`` (folds that could be scored) and ``aggregate`` (``fold_mean`` or
    ``pooled``). ``predictions``: task, target, feature_set, setting, model, split, seed,
    fold, sample, y_true, y_pred. ``folds``: task, split, seed, fold, sample, role
    (``train``/``test``): the rows each fold model was trained on and tested on.
    """

    scores: pd.DataFrame
    predictions: pd.DataFrame
    folds: pd.DataFrame


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


def _grouped_inner(
    target: Target, y: np.ndarray, groups: np.ndarray, seed: int, cfg: EvalConfig
) -> list[Fold]:
    """Inner CV folds with no group (structure, scaffold) on both sides."""
    if target == "classification":
        if len(np.unique(y)) < 2:
            raise DeeppertError(
                f"a training fold holds a single class ({int(y[0])}); too few samples of the other"
            )
        per_class = min(len(np.unique(groups[y == c])) for c in np.unique(y))
        k = min(cfg.inner_folds, per_class)
        cv = StratifiedGroupKFold(n_splits=max(k, 2), shuffle=True, random_state=seed)
    else:
        k = min(cfg.inner_folds, len(np.unique(groups)))
        cv = GroupKFold(n_splits=max(k, 2), shuffle=True, random_state=seed)
    if k < 2:
        raise DeeppertError("a training fold has fewer than 2 groups: cannot tune by inner CV")
    return list(cv.split(np.zeros(len(y)), y, groups))


@functools.cache
def _threadpools() -> ThreadpoolController:
    """The process's native thread pools, found once (sklearn's OpenMP is loaded on import).

    ``threadpool_limits`` rescans every loaded library on each call (~45 ms), a sixth of a
    small evaluation's time when it wraps every fit and predict.
    """
    return ThreadpoolController()


def _one_openmp_thread():
    """Context manager: OpenMP pools limited to one thread inside it."""
    return _threadpools().limit(limits=1, user_api="openmp")


def _fit(
    kind: ModelName,
    target: Target,
    X: np.ndarray,
    y: np.ndarray,
    inner: list[Fold],
    seed: int,
    cfg: EvalConfig,
):
    """Tune on the given inner folds, refit the best grid point on all of X.

    For classification, inner folds with one class on either side are dropped.
    """
    if target == "classification":
        if len(np.unique(y)) < 2:
            raise DeeppertError(
                f"a training fold holds a single class ({int(y[0])}); too few samples of the other"
            )
        inner = [
            (tr, va)
            for tr, va in inner
            if len(np.unique(y[tr])) == 2 and len(np.unique(y[va])) == 2
        ]
    if not inner:
        raise DeeppertError("a training fold has too few groups to tune by inner CV")
    search = GridSearchCV(
        _estimator(kind, target, seed, cfg),
        _grid(kind, cfg.grid),
        scoring="roc_auc" if target == "classification" else "neg_root_mean_squared_error",
        cv=inner,
        n_jobs=cfg.n_jobs,
        error_score="raise",
        refit=True,
    )
    # one OpenMP thread: HGB otherwise oversubscribes a shared machine badly
    with _one_openmp_thread():
        search.fit(X, y)
    return search.best_estimator_


def _predict(model, X: np.ndarray, target: Target) -> np.ndarray:
    with _one_openmp_thread():
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


def fold_mean_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, fold: np.ndarray, *, target: Target
) -> tuple[dict[str, float], int]:
    """Each metric computed within every fold, then averaged over the folds that can be scored.

    A fold is skipped when it holds < 3 samples, one class, or constant values. Returns the
    metrics (NaN when no fold can be scored) and the number of folds scored.
    """
    y_true, y_pred, fold = np.asarray(y_true), np.asarray(y_pred), np.asarray(fold)
    names = ("roc_auc", "pr_auc") if target == "classification" else ("pearson_r", "rmse")
    values: dict[str, list[float]] = defaultdict(list)
    scored = 0
    for f in np.unique(fold):
        m = fold == f
        try:
            met = pooled_metrics(y_true[m], y_pred[m], target)
        except DeeppertError:
            continue
        if not all(np.isfinite(v) for v in met.values()):
            continue
        scored += 1
        for k, v in met.items():
            values[k].append(v)
    return {k: float(np.mean(values[k])) if values[k] else float("nan") for k in names}, scored


#: one plan = per fold, the training rows and the test rows of each split it scores
Plan = list[tuple[np.ndarray, dict[str, np.ndarray]]]


def _fit_plan(
    values: np.ndarray,
    variant: _Variant,
    target: Target,
    y: np.ndarray,
    plan: Plan,
    design,
    seed: int,
    cfg: EvalConfig,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Fit one model per fold of ``plan`` and predict that fold's test rows of every split.

    ``design`` (:class:`_PairDesign` or :class:`_RowDesign`) gives the signatures an inductive
    featurizer is fitted on (``fit_rows``), the training matrix with its inner folds
    (``train``) and the test predictions (``predict``); a transductive featurizer is fitted on
    ``values``. Returns per split the prediction and the fold of every row (-1 where the
    split does not test it); a row tested twice within a split is an error.
    """
    preds = {split: np.full(len(y), np.nan) for _, tests in plan[:1] for split in tests}
    folds = {split: np.full(len(y), -1) for split in preds}
    for f, (tr, tests) in enumerate(plan):
        if all(len(te) == 0 for te in tests.values()):
            continue
        fit_on = values if variant.fit_all else design.fit_rows(tr)
        transform = variant.featurizer.fit(fit_on, seed=seed)
        X, yy, inner = design.train(transform, tr, y, seed)
        model = _fit(variant.kind, target, X, yy, inner, seed, cfg)
        for split, te in tests.items():
            if len(te) == 0:
                continue
            if (folds[split][te] >= 0).any():
                raise DeeppertError(f"split {split!r}: a row is tested by two fold models")
            preds[split][te] = design.predict(model, transform, te, target)
            folds[split][te] = f
    return preds, folds


@dataclass(frozen=True)
class _PairDesign:
    """Pair rows -> features: drug A ++ drug B, training on both orders, predicting their mean."""

    values: np.ndarray
    a: np.ndarray
    b: np.ndarray
    inner_folds: int

    def fit_rows(self, tr: np.ndarray) -> np.ndarray:
        return self.values[np.unique(np.concatenate([self.a[tr], self.b[tr]]))]

    def train(self, transform, tr, y, seed):
        feats = transform(self.values)
        a, b = self.a[tr], self.b[tr]
        X = np.vstack([pair_features(feats, a, b), pair_features(feats, b, a)])
        n = len(tr)
        inner = [
            (np.concatenate([i, i + n]), np.concatenate([v, v + n]))
            for i, v in inner_drug_splits(a, b, n_folds=self.inner_folds, seed=seed)
        ]
        return X, np.tile(y[tr], 2), inner

    def predict(self, model, transform, te, target):
        feats = transform(self.values)
        a, b = self.a[te], self.b[te]
        return 0.5 * (
            _predict(model, pair_features(feats, a, b), target)
            + _predict(model, pair_features(feats, b, a), target)
        )


@dataclass(frozen=True)
class _RowDesign:
    """Compound rows -> features; inner CV grouped by structure or scaffold."""

    values: np.ndarray
    groups: np.ndarray
    target: Target
    cfg: EvalConfig

    def fit_rows(self, tr: np.ndarray) -> np.ndarray:
        return self.values[tr]

    def train(self, transform, tr, y, seed):
        inner = _grouped_inner(self.target, y[tr], self.groups[tr], seed, self.cfg)
        return transform(self.values[tr]), y[tr], inner

    def predict(self, model, transform, te, target):
        return _predict(model, transform(self.values[te]), target)


def _check_featurizers(featurizers: Sequence[Featurizer]) -> None:
    if not featurizers:
        raise DeeppertError("no feature sets to evaluate")
    names = [f.name for f in featurizers]
    if len(set(names)) != len(names):
        raise DeeppertError(f"feature set names must be unique, got {names}")


@dataclass(frozen=True)
class _Variant:
    """One way a feature set is evaluated: featurizer, setting and model kind."""

    featurizer: Featurizer
    setting: str
    fit_all: bool  # fit the featurizer on all the task's signatures (transductive)
    kind: ModelName

    def __str__(self) -> str:
        return f"{self.featurizer.name}/{self.setting} {self.kind}"


def _variants(featurizers: Sequence[Featurizer], cfg: EvalConfig) -> Iterator[_Variant]:
    """Every (featurizer, setting, model kind) to evaluate, in that nesting order.

    A featurizer that learns nothing per fold declares ``fixed_setting`` (``"none"`` for raw
    genes, ``"transductive"`` for an embedding pre-trained on the task's signatures) and runs
    once; the others run under every setting of ``cfg.settings``.
    """
    for featurizer in featurizers:
        fixed = getattr(featurizer, "fixed_setting", None)
        settings = (
            [(str(fixed), False)]
            if fixed is not None
            else [(s, s == "transductive") for s in cfg.settings]
        )
        for setting, fit_all in settings:
            for kind in cfg.models:
                yield _Variant(featurizer, setting, fit_all, kind)


def _check_splits(splits: Sequence[str], allowed: Sequence[str]) -> None:
    bad = [s for s in splits if s not in allowed]
    if bad or not splits:
        raise DeeppertError(
            f"splits must be a non-empty subset of {list(allowed)}, got {list(splits)}"
        )


def _fold_rows(task: str, split: str, seed: int, plan: Plan) -> list[pd.DataFrame]:
    """The provenance table of one plan: each fold's training and test rows for ``split``."""
    out = []
    for f, (tr, tests) in enumerate(plan):
        te = tests[split]
        out.append(
            pd.DataFrame(
                {
                    "task": task,
                    "split": split,
                    "seed": seed,
                    "fold": f,
                    "sample": np.concatenate([tr, te]),
                    "role": ["train"] * len(tr) + ["test"] * len(te),
                }
            )
        )
    return out


@dataclass
class _Collector:
    """The rows of one evaluation as they are produced: scores, predictions, fold provenance.

    ``per_fold``: scores are the mean of each fold's metric (synergy), else computed on the
    pooled out-of-fold predictions (toxicity).
    """

    task: str
    per_fold: bool
    scores: list[dict] = field(default_factory=list)
    predictions: list[pd.DataFrame] = field(default_factory=list)
    folds: list[pd.DataFrame] = field(default_factory=list)

    def add_plan(self, seed: int, plan: Plan, splits: Sequence[str]) -> None:
        """Record which rows each fold of ``plan`` trains and tests on, per split."""
        for split in splits:
            self.folds += _fold_rows(self.task, split, seed, plan)

    def add_predictions(
        self,
        variant: _Variant,
        target: tuple[str, Target],
        seed: int,
        y: np.ndarray,
        fitted: tuple[dict[str, np.ndarray], dict[str, np.ndarray]],
        sample: np.ndarray,
        n_compounds: Callable[[np.ndarray], int] | None = None,
    ) -> None:
        """Score the rows each split of a :func:`_fit_plan` result tested.

        ``sample``: the sample id of each row; ``n_compounds(mask)``: the compounds in the
        scored rows (default: the distinct sample ids). Adds the score rows (with counts) and
        the prediction rows.
        """
        target_name, kind = target
        preds, folds = fitted
        for split in preds:
            mask = folds[split] >= 0
            if not mask.any():
                raise DeeppertError(
                    f"{self.task}: seed {seed}: no row scored under split {split!r}"
                )
            yy, pred, fold = y[mask], preds[split][mask], folds[split][mask]
            if self.per_fold:
                metrics, n_folds = fold_mean_metrics(yy, pred, fold, target=kind)
            else:
                metrics, n_folds = pooled_metrics(yy, pred, kind), len(np.unique(fold))
            key = {
                "task": self.task,
                "target": target_name,
                "feature_set": variant.featurizer.name,
                "setting": variant.setting,
                "model": variant.kind,
                "split": split,
            }
            compounds = n_compounds(mask) if n_compounds else len(np.unique(sample[mask]))
            counts = {"n": len(yy), "n_compounds": compounds, "n_folds": n_folds}
            aggregate = "fold_mean" if self.per_fold else "pooled"
            self.scores += [
                {**key, "metric": m, "seed": seed, "value": v, **counts, "aggregate": aggregate}
                for m, v in metrics.items()
            ]
            self.predictions.append(
                pd.DataFrame(
                    {
                        **key,
                        "seed": seed,
                        "fold": fold,
                        "sample": sample[mask],
                        "y_true": yy,
                        "y_pred": pred,
                    }
                )
            )

    def result(self) -> EvaluationResult:
        return EvaluationResult(
            pd.DataFrame(self.scores),
            pd.concat(self.predictions, ignore_index=True),
            pd.concat(self.folds, ignore_index=True),
        )


def evaluate_synergy(
    task: SynergyTask,
    featurizers: Sequence[Featurizer],
    *,
    config: EvalConfig = EvalConfig(),
    splits: Sequence[SynergySplit] = SYNERGY_SPLITS,
    targets: Sequence[str] = ("loewe", "label"),
) -> EvaluationResult:
    """Cross-validate synergy prediction: Loewe score (regression) and/or its 0/1 label.

    Pair features are drug A ++ drug B; training uses both orders, predictions average the
    two orders of one model. Drugs are split into ``n_folds`` folds; fold f's model trains on
    the pairs holding no drug of fold f. Splits:

    - ``one_unseen``: pairs with one drug in a held-out fold and the other seen in training;
      each is predicted by exactly one fold model (a seeded coin picks which of its two drugs
      is the unseen one);
    - ``both_unseen``: pairs whose two drugs sit in one held-out fold, predicted by that fold;
    - ``random_leaky``: the reference's random folds over pairs (drugs on both sides; for
      comparison only).

    Each metric is computed within every fold and averaged over the folds (see module doc).
    """
    _check_featurizers(featurizers)
    _check_splits(splits, SYNERGY_SPLITS)
    if task.n_pairs < config.n_folds:
        raise DeeppertError(
            f"{task.name}: {task.n_pairs} pair(s) is too few for {config.n_folds} folds"
        )
    chosen = _synergy_targets(task, targets)
    a, b = task.pairs["drug_a"].to_numpy(), task.pairs["drug_b"].to_numpy()
    # one canonical orientation, so the fitted model cannot depend on how a file orders a pair
    a, b = np.minimum(a, b), np.maximum(a, b)
    design = _PairDesign(task.values, a, b, config.inner_folds)
    pair_ids = np.arange(task.n_pairs)

    def n_drugs(mask: np.ndarray) -> int:
        return len(np.unique(np.concatenate([a[mask], b[mask]])))

    out = _Collector(task.name, per_fold=True)
    for seed in config.seeds:
        plans = _synergy_plans(task, a, b, splits, seed, config)
        for plan in plans:
            out.add_plan(seed, plan, list(plan[0][1]))
        for variant in _variants(featurizers, config):
            for name, (target, y) in chosen.items():
                for plan in plans:
                    fitted = _fit_plan(task.values, variant, target, y, plan, design, seed, config)
                    out.add_predictions(variant, (name, target), seed, y, fitted, pair_ids, n_drugs)
                log.info("%s %s %s seed %d done", task.name, name, variant, seed)
    return out.result()


def _synergy_targets(
    task: SynergyTask, targets: Sequence[str]
) -> dict[str, tuple[Target, np.ndarray]]:
    """The chosen targets by name: Loewe score (regression) and/or its 0/1 label."""
    known: dict[str, tuple[Target, np.ndarray]] = {
        "loewe": ("regression", task.pairs["synergy"].to_numpy(dtype=float)),
        "label": ("classification", task.pairs["label"].to_numpy(dtype=int)),
    }
    bad = [t for t in targets if t not in known]
    if bad or not targets:
        raise DeeppertError(
            f"targets must be a non-empty subset of loewe, label; got {list(targets)}"
        )
    return {t: known[t] for t in targets}


def _synergy_plans(
    task: SynergyTask,
    a: np.ndarray,
    b: np.ndarray,
    splits: Sequence[SynergySplit],
    seed: int,
    cfg: EvalConfig,
) -> list[Plan]:
    """One seed's fold plans: drug folds (scoring the one/both-unseen splits), random folds."""
    plans: list[Plan] = []
    drug_splits = [s for s in ("one_unseen", "both_unseen") if s in splits]
    if drug_splits:
        fold_of = drug_folds(len(task.drugs), n_folds=cfg.n_folds, seed=seed)
        plans.append(
            [
                (df.train, {s: getattr(df, s) for s in drug_splits})
                for df in drug_split_folds(a, b, fold_of, seed=seed)
            ]
        )
    if "random_leaky" in splits:
        plans.append(
            [
                (tr, {"random_leaky": te})
                for tr, te in random_pair_splits(task.n_pairs, n_folds=cfg.n_folds, seed=seed)
            ]
        )
    return plans


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
    duplicates included: reported only for comparison). Metrics are computed on the pooled
    out-of-fold predictions (every compound is predicted by exactly one fold model).
    """
    _check_featurizers(featurizers)
    _check_splits(splits, TOXICITY_SPLITS)
    if task.n_compounds < config.n_folds:
        raise DeeppertError(
            f"{task.name}: {task.n_compounds} compound(s) is too few for {config.n_folds} folds"
        )
    y = np.asarray(task.labels, dtype=int)
    scaffolds = (
        np.asarray([murcko_scaffold(k) for k in task.keys], dtype=object)
        if "scaffold" in splits
        else None
    )
    out = _Collector(task.name, per_fold=False)
    for seed in config.seeds:
        plans = _toxicity_plans(task, y, scaffolds, splits, seed, config)
        for split, (rows, _, folds) in plans.items():
            out.add_plan(seed, [(rows[tr], {split: rows[te]}) for tr, te in folds], [split])
        for variant in _variants(featurizers, config):
            for split, (rows, groups, folds) in plans.items():
                yy = y[rows]
                design = _RowDesign(task.values[rows], groups, "classification", config)
                plan: Plan = [(tr, {split: te}) for tr, te in folds]
                fitted = _fit_plan(
                    task.values, variant, "classification", yy, plan, design, seed, config
                )
                label = ("label", "classification")
                out.add_predictions(variant, label, seed, yy, fitted, rows)
                log.info("%s %s %s seed %d done", task.name, variant, split, seed)
    return out.result()


def _toxicity_plans(
    task: ToxicityTask,
    y: np.ndarray,
    scaffolds: np.ndarray | None,
    splits: Sequence[ToxicitySplit],
    seed: int,
    cfg: EvalConfig,
) -> dict[str, tuple[np.ndarray, np.ndarray, list[Fold]]]:
    """One seed's folds per split: (compound rows, their inner-CV groups, folds over them)."""
    ids = np.arange(task.n_compounds)
    plans: dict[str, tuple[np.ndarray, np.ndarray, list[Fold]]] = {}
    if "structure" in splits:
        plans["structure"] = (ids, ids, structure_splits(y, n_folds=cfg.n_folds, seed=seed))
    if "scaffold" in splits:
        plans["scaffold"] = (
            ids,
            scaffolds,
            scaffold_splits(y, scaffolds, n_folds=cfg.n_folds, seed=seed),
        )
    if "given_leaky" in splits:
        given_idx = task.given["index"].to_numpy()
        given_test = (task.given["split"] == "Test").to_numpy()
        if not given_test.any() or given_test.all():
            raise DeeppertError(f"{task.name}: the given split needs both Train and Test rows")
        plans["given_leaky"] = (
            given_idx,
            given_idx,
            [(np.flatnonzero(~given_test), np.flatnonzero(given_test))],
        )
    return plans
