"""Downstream evaluation settings, in a module without numpy: one set of defaults for both
front ends (``deeppert downstream`` and ``ray_jobs/downstream.py``).

:class:`EvalConfig` (how models are fitted and scored), :class:`FeatureConfig` (the feature
sets' own knobs) and :class:`TaskConfig` (which tasks run); :func:`add_downstream_flags` adds
their flags to a parser and :func:`downstream_configs` reads them back. :mod:`deeppert.downstream`
re-exports the dataclasses beside the code they configure.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Literal

from deeppert.errors import DeeppertError
from deeppert.schema import add_flags, check_choices, given, knob

__all__ = [
    "ModelName",
    "Setting",
    "SETTINGS",
    "ToxicitySet",
    "TOXICITY_SETS",
    "SYNERGY_CELL_LINES",
    "EvalConfig",
    "FeatureConfig",
    "TaskConfig",
    "add_downstream_flags",
    "downstream_configs",
]

ModelName = Literal["rf", "hgb"]
Setting = Literal["inductive", "transductive"]
SETTINGS: tuple[Setting, ...] = ("inductive", "transductive")
ToxicitySet = Literal["renal", "npc", "neu"]
TOXICITY_SETS: tuple[ToxicitySet, ...] = ("renal", "npc", "neu")
SYNERGY_CELL_LINES: tuple[str, ...] = ("A375", "HT29", "VCAP")


@dataclass(frozen=True)
class EvalConfig:
    """How the downstream evaluation runs.

    Attributes
    ----------
    n_folds
        Outer folds (synergy: drug folds, each holding out ~1/n_folds of the drugs).
    settings
        How featurizers that learn from signatures are fitted: ``inductive`` (the training
        fold's signatures only) and/or ``transductive`` (all of the task's signatures, test
        rows included; labels never). Featurizers that learn nothing per fold (raw genes, a
        pre-trained embedding) carry their own fixed setting.
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
        Inner CV folds for the hyper-parameter grid (grouped by drug / structure / scaffold).
    grid
        ``"tiny"``: 2 combinations per model (RF min_samples_leaf 1/5, HGB learning rate
        0.05/0.15); ``"small"``: 2 x 2 (adds RF max_depth, HGB max_leaf_nodes).
    n_jobs
        Parallel jobs of the grid search.
    """

    n_folds: int = knob(5, "outer folds")
    settings: tuple[Setting, ...] = knob(
        SETTINGS,
        "featurizer settings for PCA: inductive (training fold's signatures), transductive "
        "(all of the task's signatures; labels never used)",
    )
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    models: tuple[ModelName, ...] = knob(("rf", "hgb"), "models fitted on each feature set")
    n_estimators: int = knob(200, "trees per random forest")
    hgb_max_iter: int = knob(100, "boosting iterations")
    inner_folds: int = knob(3, "inner CV folds of the hyper-parameter grid")
    grid: Literal["small", "tiny"] = knob("tiny", "hyper-parameter grid")
    n_jobs: int = knob(1, "parallel jobs of the grid search")

    def __post_init__(self) -> None:
        if self.n_folds < 2 or self.inner_folds < 2:
            raise DeeppertError(
                f"EvalConfig: n_folds and inner_folds must be >= 2, got {self.n_folds}, {self.inner_folds}"
            )
        if not self.seeds:
            raise DeeppertError("EvalConfig: at least one seed")
        if not self.settings:
            raise DeeppertError("EvalConfig: settings must not be empty")
        if not self.models:
            raise DeeppertError("EvalConfig: models must not be empty")
        check_choices(self, "EvalConfig")

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        d["settings"] = list(self.settings)
        d["models"] = list(self.models)
        return d


@dataclass(frozen=True)
class FeatureConfig:
    """Knobs of the feature sets compared (raw genes, PCA, one model, the ensemble)."""

    pca_components: int = knob(10, "components of the PCA feature set (refitted per fold)")
    member: str | None = knob(
        None, "model group of the single-model feature set (default: the largest)"
    )


@dataclass(frozen=True)
class TaskConfig:
    """Which downstream tasks run: O'Neil synergy cell lines and toxicity sets."""

    synergy: tuple[str, ...] = knob(SYNERGY_CELL_LINES, "synergy cell lines ('' = none)")
    toxicity: tuple[ToxicitySet, ...] = knob(TOXICITY_SETS, "toxicity sets ('' = none)")

    def __post_init__(self) -> None:
        check_choices(self, "tasks")


#: EvalConfig fields with a flag, and their flags; ``seeds`` is ``--seeds N --seed-start S``.
EVAL_FLAGS = {
    "models": "--models",
    "n_estimators": "--n-estimators",
    "hgb_max_iter": "--hgb-max-iter",
    "n_folds": "--folds",
    "inner_folds": "--inner-folds",
    "grid": "--grid",
    "n_jobs": "--n-jobs",
    "settings": "--settings",
}
FEATURE_FLAGS = ("pca_components", "member")


def add_downstream_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of :class:`EvalConfig` and :class:`FeatureConfig` (help and defaults from the
    fields; ``--seeds N --seed-start S`` for ``seeds = S .. S+N-1``)."""
    default = EvalConfig().seeds
    parser.add_argument(
        "--seeds", type=int, help=f"number of seeds, mean +- sd over them (default {len(default)})"
    )
    parser.add_argument(
        "--seed-start",
        type=int,
        help=f"first seed, to run seeds apart and merge (default {default[0]})",
    )
    add_flags(parser, EvalConfig, EVAL_FLAGS)
    add_flags(parser, FeatureConfig, FEATURE_FLAGS)


def downstream_configs(args: argparse.Namespace) -> tuple[EvalConfig, FeatureConfig]:
    """The :class:`EvalConfig` and :class:`FeatureConfig` of :func:`add_downstream_flags`' flags
    (a flag not given keeps the dataclass default)."""
    default = EvalConfig().seeds
    count = len(default) if args.seeds is None else args.seeds
    start = default[0] if args.seed_start is None else args.seed_start
    evaluation = EvalConfig(
        seeds=tuple(range(start, start + count)), **given(args, EvalConfig, EVAL_FLAGS)
    )
    return evaluation, FeatureConfig(**given(args, FeatureConfig, FEATURE_FLAGS))
