"""Model search as MLflow sees it: a parent run (``deeppert.role=search``) with one child run
per trial (``deeppert.role=search_trial``).

A trial run holds the sampled values as params, per-epoch ``loss``/``r2_pca``/``r2_genes``
(one ``log_batch`` per epoch) and ends FINISHED (trained all its epochs) or KILLED (stopped
early by the scheduler), with the why in tag ``deeppert.stop_reason``; never left RUNNING.
The parent carries the best trial's values as tag ``deeppert.best_config`` (JSON).
Nothing here imports Ray: ``ray_jobs/search.py`` calls in from Tune.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from deeppert.config import ExperimentConfig
from deeppert.tracking.client import code_version, start_run
from deeppert.tracking.contract import ROLES, TAGS
from deeppert.tracking.session import TrackingSession

__all__ = [
    "STOP_REASON",
    "SearchContext",
    "open_search",
    "start_search_trial",
    "log_search_epoch",
    "end_search_trial",
    "close_search",
]

STOP_REASON = TAGS.stop_reason


@dataclass(frozen=True)
class SearchContext:
    """Where a search's trials log; small and picklable (the session travels without its
    client)."""

    session: TrackingSession
    parent_run_id: str
    name: str


def open_search(config: ExperimentConfig) -> SearchContext:
    """Start the search's parent run (a new one per invocation: searches are not resumed),
    named ``search <config name> <ASHA|FIFO>`` so runs of either scheduler tell apart."""
    session = TrackingSession(config.tracking).connect()
    name = f"{config.name}-search-{config.sha256()[:12]}"
    assert config.search is not None
    params = {
        f"search.{k}": json.dumps(v) if isinstance(v, dict) else v
        for k, v in config.search.to_dict().items()
        if v is not None
    }
    parent = start_run(
        session,
        run_name=f"search {config.name} {config.search.scheduler.upper()}",
        tags={
            TAGS.role: ROLES.search,
            TAGS.sweep: name,
            TAGS.config_sha: config.sha256(),
            TAGS.code_version: code_version(),
        },
        params=params,
    )
    return SearchContext(session, parent, name)


def start_search_trial(
    ctx: SearchContext,
    *,
    dataset: str,
    kind: str,
    latent_dim: int,
    run: int,
    values: dict[str, float],
    trial_id: str,
    node_id: str = "",
) -> str:
    """A RUNNING child run for one trial, with its sampled values as params."""
    return start_run(
        ctx.session,
        run_name=f"{dataset} {kind} d{latent_dim} trial {trial_id}",
        parent_run_id=ctx.parent_run_id,
        tags={
            TAGS.role: ROLES.search_trial,
            TAGS.sweep: ctx.name,
            TAGS.cell_line: dataset,
            TAGS.model: kind,
            TAGS.latent_dim: latent_dim,
            TAGS.run: run,
            TAGS.tune_trial: trial_id,
            **({TAGS.ray_node_id: node_id} if node_id else {}),
        },
        params={"model": kind, "latent_dim": latent_dim, "run": run, **values},
    )


def log_search_epoch(
    session: TrackingSession, run_id: str, epoch: int, metrics: dict[str, float]
) -> None:
    """One request per epoch for all of its metrics."""
    import time

    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    session.client.log_batch(
        run_id, metrics=[Metric(k, float(v), stamp, epoch) for k, v in metrics.items()]
    )


def end_search_trial(session: TrackingSession, run_id: str, *, status: str, reason: str) -> None:
    """Close a trial run as FINISHED / KILLED / FAILED with ``reason`` in ``deeppert.stop_reason``."""
    client = session.client
    client.set_tag(run_id, STOP_REASON, reason[:4000])
    client.set_terminated(run_id, status=status)


def close_search(
    ctx: SearchContext,
    *,
    best: dict | None,
    summary: dict[str, float],
    outcomes: dict[str, tuple[str, str]] | None = None,
    status: str = "FINISHED",
) -> None:
    """Close every trial run still RUNNING with its ``outcomes[run_id]`` (status, reason), as
    the driver saw the scheduler decide (a stopped trial cannot log once Tune stops it), else
    KILLED; tag the best config on the parent, log the summary numbers, finish the parent."""
    client = ctx.session.client
    leftovers = client.search_runs(
        [ctx.session.experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{ctx.parent_run_id}' and attributes.status = 'RUNNING'"
        ),
    )
    for run in leftovers:
        end, reason = (outcomes or {}).get(
            run.info.run_id, ("KILLED", "stopped by the scheduler before reporting an epoch")
        )
        end_search_trial(ctx.session, run.info.run_id, status=end, reason=reason)
    if best is not None:
        client.set_tag(ctx.parent_run_id, TAGS.best_config, json.dumps(best, sort_keys=True))
    import time

    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    client.log_batch(
        ctx.parent_run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in summary.items()]
    )
    client.set_terminated(ctx.parent_run_id, status=status)
