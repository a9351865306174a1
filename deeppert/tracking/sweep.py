"""One sweep trial as MLflow sees it: train + attribute + log, idempotent under retries.

A *grid point* is (dataset, model, latent dim, run). Each has exactly one FINISHED child run
under the sweep's parent run, found again by its ``deeppert.grid_key`` tag. A trial:

1. marks FAILED any RUNNING run of its grid points left by a dead attempt (a killed worker),
2. skips grid points that already have a FINISHED run with the same config hash,
3. trains the remaining runs of its shape vectorised, logging per-epoch metrics,
4. computes IG gene weights, logs latents and gene weights as Parquet, the encoder as an
   MLflow PyTorch model registered as a version of ``<dataset>-encoder``,
5. marks each run FINISHED only when all of that is logged (FAILED on any exception).

Nothing here imports Ray: ``ray_jobs/sweep.py`` calls :func:`run_trial` from a Tune trainable.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import deeppert
from deeppert.attribution import attribute_genes
from deeppert.config import ExperimentConfig
from deeppert.data import Signatures
from deeppert.models import MeanEncoder
from deeppert.tracking.client import (
    check_server,
    find_runs_by_tag,
    finish_run,
    get_or_create_experiment,
    log_parquet,
    log_torch_model,
    mark_run_failed,
    register_logged_model,
    start_run,
    tracking_client,
)
from deeppert.workspace import Prepared, train_shape

__all__ = [
    "TAGS",
    "SweepContext",
    "grid_key",
    "data_sha256",
    "code_version",
    "open_sweep",
    "sweep_name",
    "log_dataset",
    "finished_grid_keys",
    "run_trial",
    "encoder_model_name",
    "trial_plan",
]

log = logging.getLogger(__name__)


class TAGS:
    """Tag names of the artifact contract (docs/architecture.md)."""

    role = "deeppert.role"
    sweep = "deeppert.sweep"
    grid_key = "deeppert.grid_key"
    cell_line = "deeppert.cell_line"
    data_sha = "deeppert.data_sha256"
    config_sha = "deeppert.config_sha256"
    code_version = "deeppert.code_version"
    worker = "deeppert.worker"
    model = "deeppert.model"
    latent_dim = "deeppert.latent_dim"
    run = "deeppert.run"


def grid_key(dataset: str, kind: str, latent_dim: int, run: int) -> str:
    """The deterministic key of one grid point, e.g. ``A549/VAE/d10/run3``."""
    return f"{dataset}/{kind}/d{latent_dim}/run{run}"


def encoder_model_name(dataset: str) -> str:
    """Registered model that holds every encoder of one cell line (one version per trial run)."""
    return f"{dataset}-encoder"


def data_sha256(signatures: Signatures) -> str:
    """Content hash of a signature matrix (values, ids, genes)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(signatures.values, dtype=np.float64).tobytes())
    h.update("\x00".join(signatures.sample_ids.tolist()).encode())
    h.update("\x00".join(signatures.genes).encode())
    return h.hexdigest()


def code_version() -> str:
    """``git describe`` of the checkout when available, else the package version."""
    root = Path(deeppert.__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return f"{deeppert.__version__}+{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return deeppert.__version__


@dataclass(frozen=True)
class SweepContext:
    """What every trial needs to log into the right place; small and picklable."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    sweep: str
    config_sha: str
    code_version: str

    def to_dict(self) -> dict:
        return asdict(self)


def sweep_name(config: ExperimentConfig) -> str:
    """The sweep's identity (tag ``deeppert.sweep``): config name + config hash prefix.

    Readers (the ensemble job) use this instead of :func:`open_sweep`, which (re)opens the
    parent run as RUNNING and would leave it dangling.
    """
    return f"{config.name}-{config.sha256()[:12]}"


def open_sweep(config: ExperimentConfig, *, version: str | None = None) -> SweepContext:
    """Find or create the sweep's parent run (keyed by sweep name + config hash).

    Re-running the same config resumes the same parent run, so a resumed sweep adds its
    missing grid points under the parent that holds the finished ones.
    """
    uri = config.tracking.uri
    check_server(uri)
    experiment_id = get_or_create_experiment(uri, config.tracking.experiment)
    config_sha = config.sha256()
    sweep = sweep_name(config)
    parents = [
        r
        for r in find_runs_by_tag(uri, experiment_id, TAGS.sweep, sweep)
        if r.data.tags.get(TAGS.role) == "sweep"
    ]
    parent = parents[0] if parents else None
    if parent is None:
        parent_id = start_run(
            uri,
            experiment_id,
            run_name=f"sweep {config.name}",
            tags={
                TAGS.role: "sweep",
                TAGS.sweep: sweep,
                TAGS.config_sha: config_sha,
                TAGS.code_version: version or code_version(),
            },
            params=_flat_params(config),
        )
    else:
        parent_id = parent.info.run_id
        tracking_client(uri).update_run(parent_id, status="RUNNING")
    return SweepContext(uri, experiment_id, parent_id, sweep, config_sha, version or code_version())


def _flat_params(config: ExperimentConfig) -> dict[str, str]:
    flat = pd.json_normalize(config.to_dict(), sep=".").iloc[0].to_dict()
    return {k: str(v)[:500] for k, v in flat.items()}


def log_dataset(
    ctx: SweepContext, dataset: str, prepared: Prepared, sha: str, *, source: str | None = None
) -> Any:
    """Log a cell line's inputs once on the parent run; return its MLflow dataset entity.

    The PCA model goes to ``pca/<dataset>/*.parquet``; the signature matrix is recorded as an
    MLflow dataset input (``mlflow.data.from_pandas``: name, digest, schema, source), which
    every trial run of that cell line logs again (:func:`run_trial` ``data_input``).
    """
    import warnings

    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():  # a file path "can be interpreted in multiple ways"
        warnings.simplefilter("ignore", UserWarning)
        frame = prepared.signatures.to_frame().reset_index()
        entity = mlflow.data.from_pandas(frame, source=source, name=dataset)._to_mlflow_entity()
    client = tracking_client(ctx.tracking_uri)
    existing = {a.path for a in client.list_artifacts(ctx.parent_run_id, f"pca/{dataset}")}
    if f"pca/{dataset}/components.parquet" not in existing:
        for name, table in prepared.pca.to_frames().items():
            log_parquet(ctx.tracking_uri, ctx.parent_run_id, table, f"pca/{dataset}/{name}.parquet")
        client.set_tag(ctx.parent_run_id, f"deeppert.data_sha256.{dataset}", sha)
        client.log_inputs(
            ctx.parent_run_id,
            datasets=[DatasetInput(entity, [InputTag("mlflow.data.context", "training")])],
        )
    return entity


def finished_grid_keys(ctx: SweepContext) -> set[str]:
    """Grid keys that already have a FINISHED child run of this sweep (same config hash)."""
    runs = find_runs_by_tag(
        ctx.tracking_uri, ctx.experiment_id, TAGS.sweep, ctx.sweep, status="FINISHED"
    )
    return {
        r.data.tags[TAGS.grid_key]
        for r in runs
        if r.data.tags.get(TAGS.role) == "trial"
        and r.data.tags.get(TAGS.config_sha) == ctx.config_sha
    }


def run_trial(
    ctx: SweepContext,
    prepared: Prepared,
    config: ExperimentConfig,
    *,
    dataset: str,
    data_sha: str,
    kind: str,
    latent_dim: int,
    runs: list[int],
    report: Callable[[dict], None] | None = None,
    data_input: Any = None,
) -> dict[str, float]:
    """Train, attribute and log the grid points ``(dataset, kind, latent_dim, r) for r in runs``.

    Returns the mean held-out metrics of the runs it trained (empty when all were done).
    """
    uri = ctx.tracking_uri
    todo: list[int] = []
    for run in runs:
        key = grid_key(dataset, kind, latent_dim, run)
        done = False
        for old in find_runs_by_tag(
            uri, ctx.experiment_id, TAGS.grid_key, key, parent_run_id=ctx.parent_run_id
        ):
            status = old.info.status
            if status == "FINISHED" and old.data.tags.get(TAGS.config_sha) == ctx.config_sha:
                done = True
            elif status in ("RUNNING", "SCHEDULED"):
                mark_run_failed(
                    uri,
                    old.info.run_id,
                    reason="attempt died before finishing; superseded by a retry",
                )
        if not done:
            todo.append(run)
    if not todo:
        log.info("%s/%s/d%d: every run already finished; nothing to do", dataset, kind, latent_dim)
        return {}

    run_ids: dict[int, str] = {}
    try:
        for run in todo:
            run_ids[run] = start_run(
                uri,
                ctx.experiment_id,
                run_name=f"{dataset} {kind} d{latent_dim} run{run}",
                parent_run_id=ctx.parent_run_id,
                tags={
                    TAGS.role: "trial",
                    TAGS.sweep: ctx.sweep,
                    TAGS.grid_key: grid_key(dataset, kind, latent_dim, run),
                    TAGS.cell_line: dataset,
                    TAGS.data_sha: data_sha,
                    TAGS.config_sha: ctx.config_sha,
                    TAGS.code_version: ctx.code_version,
                    TAGS.worker: f"{socket.gethostname()}:{os.getpid()}",
                    TAGS.model: kind,
                    TAGS.latent_dim: latent_dim,
                    TAGS.run: run,
                },
                params={
                    "model": kind,
                    "latent_dim": latent_dim,
                    "run": run,
                    "seed": 123456 * run,
                    "pca_components": prepared.pca.n_components,
                    "epochs": config.train.epochs,
                    "batch_size": config.train.batch_size,
                    "lr_max": config.train.lr_max,
                    "lr_min": config.train.lr_min,
                    "lr_cycle_epochs": config.train.cycle_epochs,
                    "beta_start": config.train.beta_start,
                    "kl_kappa": config.train.kl_kappa,
                    "dropout": config.model.dropout,
                    "dae_noise_std": config.model.dae_noise_std,
                    "vae_decoder": config.model.vae_decoder,
                    "pca_artifact": f"runs:/{ctx.parent_run_id}/pca/{dataset}",
                },
            )
        client = tracking_client(uri)
        if data_input is not None:
            from mlflow.entities import DatasetInput, InputTag

            tag = [InputTag("mlflow.data.context", "training")]
            for run_id in run_ids.values():
                client.log_inputs(run_id, datasets=[DatasetInput(data_input, tag)])

        def on_epoch(epoch: int, frame: pd.DataFrame) -> None:
            from mlflow.entities import Metric

            stamp = pd.Timestamp.now().value // 1_000_000
            for row in frame.itertuples():
                client.log_batch(
                    run_ids[row.run],
                    metrics=[
                        Metric(name, float(getattr(row, name)), stamp, epoch)
                        for name in ("loss", "reconstruction", "kl", "beta", "lr")
                    ],
                )
            if report is not None:
                report({"epoch": epoch, "loss": float(frame["loss"].mean())})

        trained, metrics = train_shape(prepared, config, kind, latent_dim, todo, on_epoch=on_epoch)
        attribution = attribute_genes(
            trained, prepared.x_train, prepared.pca, config=config.attribution
        )
        latents = trained.latents_frames(prepared.x_train, prepared.train_ids)
        example = prepared.x_train[:5].astype(np.float32)
        for r, run in enumerate(trained.runs):
            run_id = run_ids[run]
            log_parquet(uri, run_id, latents[r], "latents.parquet")
            log_parquet(uri, run_id, attribution.frame(r), "gene_weights.parquet")
            row = metrics[metrics["run"] == run].iloc[0]
            client.log_batch(run_id, metrics=_held_out_metrics(row, attribution, r))
            encoder = MeanEncoder(trained.module, r).float().cpu()  # GPU trials log a CPU model
            ref = log_torch_model(uri, run_id, encoder, name="encoder", input_example=example)
            tags = {
                "sweep": ctx.sweep,
                "model": kind,
                "dim": latent_dim,
                "run": run,
                "grid_key": grid_key(dataset, kind, latent_dim, run),
            }
            version = register_logged_model(
                uri, ref.model_uri, encoder_model_name(dataset), tags=tags
            )
            client.set_tag(run_id, "deeppert.encoder_version", version.version)
            finish_run(uri, run_id)
            run_ids.pop(run)
    except BaseException as exc:
        for run_id in run_ids.values():
            mark_run_failed(uri, run_id, reason=f"{type(exc).__name__}: {exc}")
        raise
    means = metrics[[c for c in ("r2_pca", "r2_genes") if c in metrics]].mean().to_dict()
    return {k: float(v) for k, v in means.items()}


def _held_out_metrics(row: pd.Series, attribution, r: int) -> list:
    from mlflow.entities import Metric

    stamp = pd.Timestamp.now().value // 1_000_000
    values = {
        k: float(row[k])
        for k in ("r2_pca", "r2_genes", "val_reconstruction", "val_kl", "val_sse_plus_kl")
        if k in row
    }
    values["ig_max_rel_completeness_error"] = float(np.max(attribution.relative_delta[r]))
    return [Metric(k, v, stamp, 0) for k, v in values.items()]


def trial_plan(config: ExperimentConfig, done: set[str]) -> list[dict]:
    """Trials still to run: one per (dataset, model, dim) and chunk of runs without a finished run."""
    plan = []
    chunk = config.sweep.seeds_per_trial or config.grid.runs
    for dataset in config.datasets:
        for kind in config.grid.models:
            for dim in config.grid.latent_dims:
                runs = [
                    r
                    for r in range(config.grid.runs)
                    if grid_key(dataset.name, kind, dim, r) not in done
                ]
                for start in range(0, len(runs), chunk):
                    plan.append(
                        {
                            "dataset": dataset.name,
                            "model": kind,
                            "latent_dim": dim,
                            "runs": runs[start : start + chunk],
                        }
                    )
    return plan
