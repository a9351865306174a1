"""``deeppert train``: train the model x latent dim x run grid of a config on local files."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from deeppert.cli._data import add_load_arguments, data_config_from_args
from deeppert.cli._inputs import require_file
from deeppert.config import LOAD_OPTIONS, GridConfig
from deeppert.errors import DeeppertError
from deeppert.schema import add_flags, given
from deeppert.train_config import TrainConfig

if TYPE_CHECKING:
    from deeppert.config import ExperimentConfig

__all__ = ["register"]

# Config fields with a flag; help and defaults come from GridConfig and TrainConfig.
_GRID_FLAGS = {"models": "--models", "latent_dims": "--dims", "runs": "--runs"}
_TRAIN_FLAGS = {"epochs": "--epochs"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the AE/DAE/VAE x latent dim x run grid; writes one run folder per dataset",
        description="Train every (model, latent dim) of the grid with all its runs vectorised, "
        "score held-out R^2, fit the linear baselines, and write OUT/<dataset>/ (see deeppert.workspace).",
    )
    p.add_argument(
        "--config", type=Path, help="experiment YAML (configs/*.yaml); defaults otherwise"
    )
    p.add_argument("--data", help="signature file; overrides the config's datasets with this one")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (one run folder per dataset)"
    )
    add_flags(p, GridConfig, _GRID_FLAGS)
    add_flags(p, TrainConfig, _TRAIN_FLAGS)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch and BLAS (default 1: a minibatch of 256 rows is too small to "
        "split, and extra threads on a busy machine multiply the time; on an idle many-core "
        "machine with thousands of rows, more can help)",
    )
    add_load_arguments(p)  # how --data is read: --cell-line, --pert-type, --id-column, ...
    p.set_defaults(func=run)


def _overrides(config: ExperimentConfig, args: argparse.Namespace) -> ExperimentConfig:
    grid = dataclasses.replace(config.grid, **given(args, GridConfig, _GRID_FLAGS))
    train = dataclasses.replace(config.train, **given(args, TrainConfig, _TRAIN_FLAGS))
    config = dataclasses.replace(config, grid=grid, train=train)
    if args.data:
        config = dataclasses.replace(config, datasets=(data_config_from_args(args, args.data),))
    elif stray := [n for n in LOAD_OPTIONS if getattr(args, n) not in (None, False)]:
        raise DeeppertError(
            f"--{stray[0].replace('_', '-')} describes how --data is read; without --data set "
            "it on the config's datasets entry instead"
        )
    return config


def run(args: argparse.Namespace) -> int:
    # Named files are checked before torch and pandas load, so a typo fails in well under 1 s.
    require_file(args.config, "--config")
    require_file(args.data, "--data")
    if args.threads < 1:
        raise DeeppertError(f"--threads must be at least 1, got {args.threads}")
    # The imports below take seconds (minutes on a busy machine): say so before they start.
    print("deeppert train: loading torch and scikit-learn", flush=True)
    import torch
    from threadpoolctl import threadpool_limits

    # The limit covers only the thread pools already loaded: deeppert.workspace loads scipy's
    # BLAS and sklearn's OpenMP beside torch's.
    import deeppert.workspace  # noqa: F401

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with threadpool_limits(limits=args.threads):
            return _train(args)
    finally:
        torch.set_num_threads(previous)


def _train(args: argparse.Namespace) -> int:
    from deeppert import load, tl
    from deeppert.config import ExperimentConfig, load_config

    config = load_config(args.config) if args.config else ExperimentConfig()
    config = _overrides(config, args)
    tables = []
    for dataset in config.datasets:
        out = args.out / dataset.name
        run = tl.train(load(dataset), out, config=config, dataset=dataset)
        tables.append(run.metrics.assign(dataset=dataset.name))
        print(f"wrote {out}")
    for table in tables:
        if "r2_genes" not in table:  # val_fraction 0: no held-out rows to score
            continue
        summary = table.groupby(["dataset", "model", "latent_dim"])[["r2_pca", "r2_genes"]].agg(
            ["mean", "std"]
        )
        split = ", ".join(sorted(set(table["split"])))
        print(f"\nheld-out reconstruction R^2 (mean, sd over runs; validation split: {split})")
        print(summary.round(4).to_string())
        from deeppert.tracking.report import BASELINES, baseline_lines, baseline_versus_models
        from deeppert.train_config import MODEL_KINDS

        models, bases = (table[table["model"].isin(k)] for k in (MODEL_KINDS, BASELINES))
        for line in baseline_lines(baseline_versus_models(models, bases)):
            print(line)
    return 0
