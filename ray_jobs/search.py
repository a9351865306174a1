"""Model search: Ray Tune samples the config's ``search:`` space, ASHA stops bad trials early.

    .venv/bin/python ray_jobs/search.py --config configs/search_demo.yaml      # a private local Ray
    deeppert cluster submit -- python ray_jobs/search.py --config configs/search_demo.yaml

The tracking server is ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else the config's
``tracking.uri``; the parent run is named ``search <name> <ASHA|FIFO>``.

For every (dataset, model, latent dim) of the grid, ``search.num_samples`` trials each train
run ``search.run`` with sampled learning rate / dropout / batch size / epochs and report the
held-out R^2 after every epoch; ASHA (``search.scheduler: asha``) keeps the best
``1 / reduction_factor`` at each rung. Every trial is an MLflow child run of one search run,
ending FINISHED or KILLED with tag ``deeppert.stop_reason``; the best values are tag
``deeppert.best_config`` of the parent. Prints one row per trial and the epochs ASHA saved.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from typing import TYPE_CHECKING

from deeppert.errors import DeeppertError
from deeppert.schema import add_flags
from deeppert.train_config import SEARCHED, Distribution, SearchConfig
from ray_jobs._common import check_ray_address, connect_ray, job_config, job_parser, run_job

if TYPE_CHECKING:
    import pandas as pd

    from deeppert.config import ExperimentConfig
    from deeppert.tracking.search import SearchContext

log = logging.getLogger("deeppert.search")


def tune_space(dist: Distribution, integer: bool):
    """A :class:`Distribution` as a Ray Tune search space."""
    from ray import tune

    if dist.distribution == "loguniform":
        return tune.loguniform(dist.low, dist.high)
    if dist.distribution == "uniform":
        return tune.uniform(dist.low, dist.high)
    return tune.choice([int(v) if integer else float(v) for v in dist.values])


def _trainable(trial_config: dict, *, prepared: dict, config: ExperimentConfig, ctx: SearchContext):
    import ray
    import torch
    from ray import tune

    from deeppert.search import apply_hyperparameters, train_with_validation
    from deeppert.tracking.search import end_search_trial, log_search_epoch, start_search_trial

    torch.set_num_threads(max(1, int(config.sweep.cpus_per_trial)))
    shape = trial_config["shape"]
    values = {k: trial_config[k] for k in SEARCHED if k in trial_config}
    trial = apply_hyperparameters(config, values)
    session, epochs = ctx.session, trial.train.epochs
    run_id = start_search_trial(
        ctx,
        dataset=shape["dataset"],
        kind=shape["model"],
        latent_dim=shape["latent_dim"],
        run=config.search.run,
        values=values,
        trial_id=tune.get_context().get_trial_id(),
        node_id=ray.get_runtime_context().get_node_id(),
    )
    done = 0

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        nonlocal done
        log_search_epoch(session, run_id, epoch, metrics)
        done = epoch + 1
        tune.report({**metrics, "epoch": done, "epochs": epochs, "mlflow_run_id": run_id})

    try:
        train_with_validation(
            prepared[shape["dataset"]],
            trial,
            shape["model"],
            shape["latent_dim"],
            config.search.run,
            on_epoch,
        )
    except SystemExit:
        # Tune stops a trial by raising SystemExit in its tune.report call; the driver, which
        # knows why (the scheduler's decision), closes the run (close_search).
        raise
    except BaseException as exc:
        end_search_trial(session, run_id, status="FAILED", reason=f"{type(exc).__name__}: {exc}")
        raise
    end_search_trial(session, run_id, status="FINISHED", reason=f"completed {epochs} epochs")


def _trial_name(trial) -> str:
    """Tune's name of a trial (its progress table, its folder): the shape, then Tune's id."""
    shape = trial.config["shape"]
    return f"{shape['dataset']}_{shape['model']}_d{shape['latent_dim']}_{trial.trial_id}"


def run_search(config: ExperimentConfig, *, storage_path: str | None = None) -> pd.DataFrame:
    """Run the search of ``config``; returns one row per trial (values, epochs, metric)."""
    from deeppert.grid import load_dataset, prepare
    from deeppert.tracking.client import mark_run_failed
    from deeppert.tracking.search import close_search, open_search

    search = config.search
    if search is None:
        raise DeeppertError("the config has no search: section")
    check_ray_address(config)  # before the parent run: a wrong address leaves no run behind
    ctx = open_search(config)
    log.info("search %s: parent run %s on %s", ctx.name, ctx.parent_run_id, ctx.session.uri)
    try:
        prepared = {d.name: prepare(load_dataset(d), config) for d in config.datasets}
        connect_ray(config)
        tuner = _tuner(config, ctx, prepared, storage_path)
        t0 = time.perf_counter()
        results = tuner.fit()
        wall = time.perf_counter() - t0
    except BaseException as exc:
        mark_run_failed(ctx.session, ctx.parent_run_id, reason=f"{type(exc).__name__}: {exc}")
        raise
    if results.errors:
        close_search(ctx, best=None, summary={}, status="FAILED")
        mark_run_failed(
            ctx.session, ctx.parent_run_id, reason=f"{len(results.errors)} trial(s) failed"
        )
        raise DeeppertError(
            f"search {ctx.name}: {len(results.errors)} trial(s) failed; first: {results.errors[0]}"
        )
    table = _trial_table(results, search)
    best_config, summary = _best_and_summary(table, search, wall)
    close_search(ctx, best=best_config, summary=summary, outcomes=_outcomes(table, search))
    table.attrs.update(summary=summary, best=best_config, parent_run_id=ctx.parent_run_id)
    return table


def _search_space(config: ExperimentConfig) -> dict:
    """Tune's param space: the sampled hyper-parameters, and a grid over the shapes."""
    from ray import tune

    space = {
        k: tune_space(d, k in ("batch_size", "epochs")) for k, d in config.search.spaces.items()
    }
    space["shape"] = tune.grid_search(
        [
            {"dataset": d.name, "model": m, "latent_dim": dim}
            for d in config.datasets
            for m in config.grid.models
            for dim in config.grid.latent_dims
        ]
    )
    return space


def _scheduler(search: SearchConfig, max_t: int):
    """ASHA over training iterations (epochs), or FIFO (no early stops)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if search.scheduler != "asha":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_t,
        grace_period=min(search.grace_period, max_t),
        reduction_factor=search.reduction_factor,
    )


def _tuner(config: ExperimentConfig, ctx: SearchContext, prepared: dict, storage_path: str | None):
    """The Tuner of the search: prepared data through ``tune.with_parameters``, named trials."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    search = config.search
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, prepared=prepared, config=config, ctx=ctx),
        {"cpu": config.sweep.cpus_per_trial, "gpu": config.sweep.gpus_per_trial},
    )
    return tune.Tuner(
        trainable,
        param_space=_search_space(config),
        tune_config=tune.TuneConfig(
            metric=search.metric,
            mode="max",
            scheduler=_scheduler(search, search.max_epochs(config.train.epochs)),
            num_samples=search.num_samples,
            search_alg=BasicVariantGenerator(
                random_state=search.seed, max_concurrent=config.sweep.max_concurrent_trials
            ),
            reuse_actors=True,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=f"{ctx.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=storage_path,
            verbose=1,
        ),
    )


def _trial_table(results, search: SearchConfig) -> pd.DataFrame:
    """One row per trial: its shape, sampled values, epochs trained and planned, metric, run."""
    import pandas as pd

    rows = []
    for result in results:
        m = result.metrics
        rows.append(
            {
                **result.config["shape"],
                **{k: result.config[k] for k in SEARCHED if k in result.config},
                "epochs_trained": int(m.get("epoch", 0)),
                "epochs_planned": int(m.get("epochs", 0)),
                search.metric: m.get(search.metric),
                "mlflow_run_id": m.get("mlflow_run_id"),
            }
        )
    return pd.DataFrame(rows)


def _best_and_summary(table: pd.DataFrame, search: SearchConfig, wall: float) -> tuple[dict, dict]:
    """The best trial's values (the parent's ``deeppert.best_config``) and the search summary."""
    best = json.loads(table.loc[table[search.metric].idxmax()].to_json())  # plain Python types
    keys = ("dataset", "model", "latent_dim", *search.spaces, search.metric, "mlflow_run_id")
    best_config = {k: best[k] for k in keys}
    stopped = int((table["epochs_trained"] < table["epochs_planned"]).sum())
    summary = {
        "trials": len(table),
        "trials_stopped_early": stopped,
        "epochs_trained": int(table["epochs_trained"].sum()),
        "epochs_planned": int(table["epochs_planned"].sum()),
        "wall_s": wall,
        f"best_{search.metric}": float(best[search.metric]),
    }
    return best_config, summary


def _outcomes(table: pd.DataFrame, search: SearchConfig) -> dict[str, tuple[str, str]]:
    """MLflow run id -> (status, stop reason) of every trial: FINISHED, or KILLED early."""
    return {
        row.mlflow_run_id: (
            ("FINISHED", f"completed {row.epochs_planned} epochs")
            if row.epochs_trained >= row.epochs_planned
            else (
                "KILLED",
                f"stopped early by {search.scheduler} after epoch {row.epochs_trained}"
                f" of {row.epochs_planned}",
            )
        )
        for row in table.itertuples()
    }


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--storage-path", help="Tune's results folder (default ~/ray_results)")
    add_flags(parser, SearchConfig, ("scheduler",))  # overrides the config's search.scheduler
    args = parser.parse_args(argv)

    def body() -> int:
        config = job_config(args)
        if args.scheduler and config.search is not None:
            search = dataclasses.replace(config.search, scheduler=args.scheduler)
            config = dataclasses.replace(config, search=search)
        table = run_search(config, storage_path=args.storage_path)
        print(table.drop(columns=["mlflow_run_id"]).round(4).to_string(index=False))
        s = table.attrs["summary"]
        print(
            f"search: {s['trials']} trials, {s['trials_stopped_early']} stopped early; "
            f"{s['epochs_trained']} of {s['epochs_planned']} epochs trained "
            f"({1 - s['epochs_trained'] / s['epochs_planned']:.0%} saved) in {s['wall_s']:.1f} s; "
            f"best: {table.attrs['best']}"
        )
        return 0

    return run_job("search", body)


if __name__ == "__main__":
    sys.exit(main())
