"""One sweep trial as MLflow sees it: train + attribute + log, idempotent under retries.

A *grid point* is (dataset, model, latent dim, run). Each has exactly one FINISHED child run
under the sweep's parent run, found again by its ``deeppert.grid_key`` tag. A trial:

1. skips grid points that already have a FINISHED run with the same config hash,
2. *claims* the others (:func:`~deeppert.tracking.claims.claim_grid_points`): a RUNNING run whose heartbeat is fresh
   belongs to a live attempt (another sweep submitted beside this one) and is waited for,
   never marked failed; a stale one (heartbeat older than ``sweep.claim_stale_seconds``, or
   its worker process on this host gone) is marked FAILED and taken over; when two trials
   create a claim at once, the older run wins and the other deletes its own,
3. trains the claimed runs of its shape vectorised, logging per-epoch metrics, while a
   :class:`~deeppert.tracking.claims.Heartbeat` thread renews the ``deeppert.heartbeat`` tag
   of the trial's lead run (the others name it in ``deeppert.heartbeat_run``),
4. computes IG gene weights, logs them as Parquet and the encoder as an MLflow PyTorch model
   registered as a version of ``<dataset>-encoder-<MODEL>-d<dim>`` (no latents: the encoder
   gives them again where the ensemble runs), and each run's seed agreement with the other
   runs it trained (metric ``seed_agreement_in_trial``, from the latents in memory),
5. marks each run FINISHED only when all of that is logged (FAILED on any exception).

Nothing here imports Ray: ``ray_jobs/sweep.py`` calls :func:`run_trial` from a Tune trainable.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from deeppert.attribution import attribute_genes
from deeppert.config import ExperimentConfig
from deeppert.data import Signatures
from deeppert.grid import Prepared, train_shape
from deeppert.models import MeanEncoder
from deeppert.tracking.claims import (
    Heartbeat,
    claim_grid_points,
    if_reachable,
    mark_failed_if_reachable,
    now_ms,
    process_alive,
    worker_id,
)
from deeppert.tracking.client import (
    FAILURE_TAG,
    REQUEST_THREADS,
    LoggedModelRef,
    code_version,
    dataset_entity,
    find_runs_by_tag,
    finish_run,
    first_line,
    log_parquet,
    log_torch_model,
    mark_run_failed,
    register_logged_model,
    start_run,
)
from deeppert.tracking.contract import (
    AGREEMENT_METRIC,
    ARTIFACTS,
    EPOCH_METRICS,
    HELD_OUT_METRICS,
    IG_METRIC,
    ROLES,
    TAGS,
    VERSION_TAGS,
    dataset_sha_tag,
    encoder_model_name,
    encoder_model_prefix,
    grid_key,
    pca_artifact,
    pca_folder,
)
from deeppert.tracking.report import run_agreement
from deeppert.tracking.session import TrackingSession
from deeppert.train import seed_for_run

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
    "encoder_model_prefix",
    "trial_plan",
    "trial_params",
    "close_sweep",
    "close_abandoned_runs",
]

log = logging.getLogger(__name__)


def data_sha256(signatures: Signatures) -> str:
    """Content hash of a signature matrix (values, ids, genes)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(signatures.values, dtype=np.float64).tobytes())
    h.update("\x00".join(signatures.sample_ids.tolist()).encode())
    h.update("\x00".join(signatures.genes).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class SweepContext:
    """What every trial needs to log into the right place; small and picklable (the session
    travels without its client)."""

    session: TrackingSession
    parent_run_id: str
    sweep: str
    config_sha: str
    code_version: str
    heartbeat_seconds: float = 10.0
    claim_stale_seconds: float = 60.0
    driver: str = ""  # host:pid of the driver that opened it; tag deeppert.driver of its runs

    def to_dict(self) -> dict:
        """The fields, the session as itself (``asdict`` would copy it field by field)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def sweep_name(config: ExperimentConfig) -> str:
    """The sweep's identity (tag ``deeppert.sweep``): config name + config hash prefix.

    Readers (the ensemble job) use this instead of :func:`open_sweep`, which (re)opens the
    parent run as RUNNING and would leave it dangling.
    """
    return f"{config.name}-{config.sha256()[:12]}"


def open_sweep(config: ExperimentConfig, *, version: str | None = None) -> SweepContext:
    """Find or create the sweep's parent run (keyed by sweep name + config hash).

    Re-running the same config resumes the same parent run, so a resumed sweep adds its
    missing grid points under the parent that holds the finished ones. Runs of the experiment
    that earlier drivers of this host left RUNNING are closed first
    (:func:`close_abandoned_runs`). The caller owns the returned parent: it must end it
    (``finish_run``, or :func:`close_sweep` on failure); a failure here closes it itself.
    """
    session = TrackingSession(config.tracking).connect()
    config_sha = config.sha256()
    sweep = sweep_name(config)
    driver = worker_id()
    close_abandoned_runs(session, keep_sweep=sweep)
    parents = _sweep_parents(session, sweep)
    if not parents:
        created = start_run(
            session,
            run_name=f"sweep {config.name}",
            description=_sweep_description(config),
            tags={
                TAGS.role: ROLES.sweep,
                TAGS.sweep: sweep,
                TAGS.config_sha: config_sha,
                TAGS.code_version: version or code_version(),
                TAGS.driver: driver,
            },
            params=sweep_params(config),
        )
        # Two drivers started together both create a parent: the oldest one is the sweep's,
        # the others are deleted by their creators before any trial logs under them.
        parents = _sweep_parents(session, sweep)
        if parents[0].info.run_id != created:
            log.info("sweep %s: another driver opened it first; joining its parent run", sweep)
            session.client.delete_run(created)
    else:
        _note_abandoned_driver(session, parents[0])
    parent_id = parents[0].info.run_id
    try:
        session.client.update_run(parent_id, status="RUNNING")
        session.client.set_tag(parent_id, TAGS.driver, driver)
        log_config(session, parent_id, config)
    except BaseException as exc:
        mark_failed_if_reachable(session, [parent_id], first_line(exc))
        raise
    return SweepContext(
        session,
        parent_id,
        sweep,
        config_sha,
        version or code_version(),
        heartbeat_seconds=config.sweep.heartbeat_seconds,
        claim_stale_seconds=config.sweep.claim_stale_seconds,
        driver=driver,
    )


def close_sweep(ctx: SweepContext, reason: str) -> None:
    """End a failed sweep attempt: its parent and the trial runs this driver's trials left
    RUNNING (a worker killed on its last retry, a trial that could not mark its own run) are
    marked FAILED with ``reason``, if the server answers (:func:`mark_failed_if_reachable`).

    Only runs tagged with this driver (``deeppert.driver``) are touched: a second driver of
    the same sweep keeps its live trials.
    """
    try:
        ctx.session.check(timeout=3.0)
        left = find_runs_by_tag(
            ctx.session,
            TAGS.driver,
            ctx.driver,
            status="RUNNING",
            parent_run_id=ctx.parent_run_id,
        )
    except Exception as exc:  # noqa: BLE001 - unreachable: the resume closes them
        log.warning("sweep %s: runs not closed (%s); the next attempt will", ctx.sweep, exc)
        return
    trials = [r.info.run_id for r in left if r.info.run_id != ctx.parent_run_id]
    mark_failed_if_reachable(ctx.session, trials, f"sweep driver ended: {reason}")
    mark_failed_if_reachable(ctx.session, [ctx.parent_run_id], reason)


def close_abandoned_runs(session: TrackingSession, *, keep_sweep: str | None = None) -> int:
    """Mark FAILED the runs of the session's experiment left RUNNING by a process of this host that
    no longer exists: sweep parents whose driver is gone and trial runs whose worker is gone,
    but not those of ``keep_sweep`` (the sweep being resumed reopens its parent, and its
    trials' claims supersede their stale runs). Returns how many were closed.

    A failed driver closes its own runs (:func:`close_sweep`); this covers the ones it could
    not: a SIGKILLed driver, a server that was down when it ended, and parents of a config
    that was then corrected (it hashes to another sweep, which never resumes them).
    Runs of other hosts are left to their claims' heartbeats.
    """
    closed = 0
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for role, tag in ((ROLES.sweep, TAGS.driver), (ROLES.trial, TAGS.worker)):
        for run in find_runs_by_tag(session, TAGS.role, role, status="RUNNING"):
            owner = run.data.tags.get(tag, "")
            if run.data.tags.get(TAGS.sweep) == keep_sweep:
                continue  # resumed: its parent reopens, its trials' claims supersede them
            if not owner or process_alive(owner) is not False:
                continue
            what = "driver" if role == ROLES.sweep else "worker"
            mark_run_failed(
                session,
                run.info.run_id,
                reason=f"its {what} {owner} ended without closing it; closed by "
                f"{worker_id()} at {stamp}",
            )
            closed += 1
    if closed:
        log.info("closed %d run(s) left RUNNING by ended processes of this host", closed)
    return closed


def _sweep_parents(session: TrackingSession, sweep: str) -> list:
    """The sweep's parent runs, oldest first (ties by run id): the first one is *the* parent."""
    parents = [
        r
        for r in find_runs_by_tag(session, TAGS.sweep, sweep)
        if r.data.tags.get(TAGS.role) == ROLES.sweep
    ]
    return sorted(parents, key=lambda r: (r.info.start_time, r.info.run_id))


def _note_abandoned_driver(session: TrackingSession, parent) -> None:
    """Record on a resumed parent why its last driver left it open (``deeppert.failure``).

    A parent left RUNNING by a driver process of this host that no longer exists was
    abandoned (killed, or its tracking server stayed down beyond the retry budget).
    """
    driver = parent.data.tags.get(TAGS.driver)
    if parent.info.status == "RUNNING" and driver and process_alive(driver) is False:
        session.client.set_tag(
            parent.info.run_id,
            FAILURE_TAG,
            f"driver {driver} ended without closing the sweep; resumed by {worker_id()} "
            f"at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}",
        )


def _sweep_description(config: ExperimentConfig) -> str:
    grid = config.grid
    return (
        f"Sweep {config.name}: {', '.join(grid.models)} x latent dims "
        f"{', '.join(map(str, grid.latent_dims))} x {grid.runs} runs on "
        f"{', '.join(d.name for d in config.datasets)}; the report (summary metrics, figures "
        "under report/) replaces this text when the sweep finishes. Config: config.yaml."
    )


def log_config(session: TrackingSession, run_id: str, config: ExperimentConfig) -> None:
    """The resolved config as ``config.yaml`` on the parent run (read back by ``load_config``)."""
    import yaml

    client = session.client
    if not any(a.path == "config.yaml" for a in client.list_artifacts(run_id)):
        client.log_text(run_id, yaml.safe_dump(config.to_dict(), sort_keys=False), "config.yaml")


def sweep_params(config: ExperimentConfig) -> dict[str, str]:
    """The config as ``section.key`` params; datasets as ``datasets.<name>.<key>`` (not a blob).

    A dataset read from a file logs no ``synthetic.*`` params: that section only describes
    generated data. The whole config (the one the config hash covers) is also the parent's
    ``config.yaml`` artifact.
    """
    raw = config.to_dict()
    raw["datasets"] = {d.pop("name"): d for d in raw["datasets"]}
    for dataset in raw["datasets"].values():
        if dataset.get("path") is not None:
            dataset.pop("synthetic", None)
    flat = pd.json_normalize(raw, sep=".").iloc[0].to_dict()
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
        entity = dataset_entity(mlflow.data.from_pandas(frame, source=source, name=dataset))
    client = ctx.session.client
    existing = {a.path for a in client.list_artifacts(ctx.parent_run_id, pca_folder(dataset))}
    if pca_artifact(dataset, "components") not in existing:
        for name, table in prepared.pca.to_frames().items():
            log_parquet(ctx.session, ctx.parent_run_id, table, pca_artifact(dataset, name))
        client.set_tag(ctx.parent_run_id, dataset_sha_tag(dataset), sha)
        client.log_inputs(
            ctx.parent_run_id,
            datasets=[DatasetInput(entity, [InputTag("mlflow.data.context", "training")])],
        )
    return entity


def finished_grid_keys(ctx: SweepContext) -> set[str]:
    """Grid keys that already have a FINISHED child run of this sweep (same config hash)."""
    runs = find_runs_by_tag(ctx.session, TAGS.sweep, ctx.sweep, status="FINISHED")
    return {
        r.data.tags[TAGS.grid_key]
        for r in runs
        if r.data.tags.get(TAGS.role) == ROLES.trial
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
    tags: dict[str, str] | None = None,
) -> dict[str, float]:
    """Train, attribute and log the grid points ``(dataset, kind, latent_dim, r) for r in runs``.

    Grid points that another live attempt is training (a second sweep submitted beside this
    one) are waited for, not trained twice
    (:func:`~deeppert.tracking.claims.claim_grid_points`); the trial returns when
    every point of ``runs`` has a FINISHED run. Returns the mean held-out metrics of the runs
    it trained itself (empty when all were done elsewhere). ``tags`` are added to every trial
    run it starts.
    """
    shape = _Shape(dataset, data_sha, kind, latent_dim)
    keys = {run: shape.grid_key(run) for run in runs}
    # Trials run in Ray workers (argv[0] = Ray's default_worker.py): name the sweep's entry
    # point, read once per trial from the parent.
    parent_tags = ctx.session.client.get_run(ctx.parent_run_id).data.tags
    source = {k: v for k, v in parent_tags.items() if k == "mlflow.source.name"}

    def create(run: int) -> str:
        return _start_trial_run(
            ctx, prepared, config, shape=shape, run=run, tags={**source, **(tags or {})}
        )

    pending, frames, announced = list(runs), [], set()
    while pending:
        claimed, busy = claim_grid_points(ctx, {r: keys[r] for r in pending}, create)
        if claimed:
            frames.append(
                _train_claimed(
                    ctx,
                    prepared,
                    config,
                    shape=shape,
                    run_ids=claimed,
                    report=report,
                    data_input=data_input,
                )
            )
        elif busy:
            if tuple(busy) not in announced:  # once per set of points, not every poll
                announced.add(tuple(busy))
                log.info(
                    "%s: trained by a live attempt elsewhere; waiting",
                    ", ".join(keys[r] for r in busy),
                )
            time.sleep(min(5.0, ctx.heartbeat_seconds))
        pending = busy
    if not frames:
        log.info("%s/%s/d%d: every run already finished; nothing to do", dataset, kind, latent_dim)
        return {}
    metrics = pd.concat(frames, ignore_index=True)
    means = metrics[[c for c in ("r2_pca", "r2_genes") if c in metrics]].mean().to_dict()
    return {k: float(v) for k, v in means.items()}


@dataclass(frozen=True)
class _Shape:
    """What one trial trains: model ``kind`` at ``latent_dim`` on ``dataset`` (data ``data_sha``)."""

    dataset: str
    data_sha: str
    kind: str
    latent_dim: int

    def grid_key(self, run: int) -> str:
        return grid_key(self.dataset, self.kind, self.latent_dim, run)


def _start_trial_run(
    ctx: SweepContext,
    prepared: Prepared,
    config: ExperimentConfig,
    *,
    shape: _Shape,
    run: int,
    tags: dict[str, str] | None = None,
) -> str:
    """Create the RUNNING child run of one grid point, with a fresh heartbeat: the claim."""
    dataset, kind, latent_dim = shape.dataset, shape.kind, shape.latent_dim
    return start_run(
        ctx.session,
        run_name=f"{kind} d{latent_dim} r{run}",
        parent_run_id=ctx.parent_run_id,
        description=(
            f"{kind} autoencoder, {latent_dim} latent dims, run {run} "
            f"(seed {seed_for_run(run)}) on cell line {dataset}; one grid point of sweep "
            f"{ctx.sweep}. Encoder: logged model 'encoder' (its code of the training PCA scores "
            "is the run's latents); gene_weights.parquet (IG)."
        ),
        tags={
            TAGS.role: ROLES.trial,
            TAGS.sweep: ctx.sweep,
            TAGS.grid_key: shape.grid_key(run),
            TAGS.cell_line: dataset,
            TAGS.data_sha: shape.data_sha,
            TAGS.config_sha: ctx.config_sha,
            TAGS.code_version: ctx.code_version,
            TAGS.worker: worker_id(),
            TAGS.driver: ctx.driver,
            TAGS.heartbeat: now_ms(),
            TAGS.model: kind,
            TAGS.latent_dim: latent_dim,
            TAGS.run: run,
            **(tags or {}),  # e.g. deeppert.ray_node_id from the Ray job
        },
        params=trial_params(
            config,
            kind,
            latent_dim,
            run,
            n_inputs=prepared.pca.n_components,
            pca_artifact=f"runs:/{ctx.parent_run_id}/{pca_folder(dataset)}",
        ),
    )


def _train_claimed(
    ctx: SweepContext,
    prepared: Prepared,
    config: ExperimentConfig,
    *,
    shape: _Shape,
    run_ids: dict[int, str],
    report: Callable[[dict], None] | None,
    data_input: Any,
) -> pd.DataFrame:
    """Train, attribute and log the claimed runs ``run_ids`` (run -> run id); held-out metrics.

    Each run leaves ``run_ids`` once FINISHED (or taken over); the rest are marked FAILED
    when anything raises.
    """
    session = ctx.session
    client = session.client
    heartbeat = Heartbeat(session, run_ids, ctx.heartbeat_seconds)
    epochs = EpochLog(client, run_ids, report)
    try:
        heartbeat.start()
        if data_input is not None:
            _log_training_input(client, run_ids.values(), data_input)
        trained, metrics = train_shape(
            prepared, config, shape.kind, shape.latent_dim, sorted(run_ids), on_epoch=epochs
        )
        epochs.flush()
        attribution = attribute_genes(
            trained, prepared.x_train, prepared.pca, config=config.attribution
        )
        agreement = run_agreement(
            dict(zip(trained.runs, trained.latents_frames(prepared.x_train, prepared.train_ids)))
        )
        example = prepared.x_train[:5].astype(np.float32)
        registering = threading.Lock()

        def log_run(r: int, run: int) -> None:
            run_id = run_ids[run]
            entity = client.get_run(run_id)
            if entity.info.status != "RUNNING":
                # Declared stale and taken over while we trained (its heartbeat could not be
                # renewed for claim_stale_seconds): the other attempt owns the point now.
                log.warning("%s: claim taken over by another attempt; not logging it", run_id)
                run_ids.pop(run)
                return
            row = metrics[metrics["run"] == run].iloc[0]
            log_parquet(session, run_id, attribution.frame(r), ARTIFACTS.gene_weights)
            encoder = MeanEncoder(trained.module, r).float().cpu()  # GPU trials log a CPU model
            ref = log_torch_model(
                session, run_id, encoder, name=ARTIFACTS.encoder, input_example=example, run=entity
            )
            held_out = _held_out_metrics(row, attribution, r, agreement.get(run), ref.model_id)
            client.log_batch(run_id, metrics=held_out)
            with registering:  # versions of one name, one at a time (MLflow retries a clash 3x)
                version = _register_encoder(ctx, shape, run, ref, row)
            client.set_tag(run_id, TAGS.encoder_version, version)
            finish_run(session, run_id)
            run_ids.pop(run)

        # Logging a run is a dozen requests, each mostly a wait on the server: runs go out
        # REQUEST_THREADS at a time. The first failure cancels what has not started.
        with ThreadPoolExecutor(REQUEST_THREADS, thread_name_prefix="deeppert-log") as pool:
            futures = [pool.submit(log_run, r, run) for r, run in enumerate(trained.runs)]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    except BaseException as exc:
        heartbeat.stop()
        # the curves up to the failure (a diverging loss), then the runs marked FAILED
        if_reachable(session, epochs.flush, "log the last epochs' metrics")
        mark_failed_if_reachable(session, list(run_ids.values()), f"{type(exc).__name__}: {exc}")
        raise
    finally:
        heartbeat.stop()
    return metrics


def _log_training_input(client: Any, run_ids: Iterable[str], data_input: Any) -> None:
    """Record the training data set (an ``mlflow.entities.Dataset``) as each run's input."""
    from mlflow.entities import DatasetInput, InputTag

    inputs = [DatasetInput(data_input, [InputTag("mlflow.data.context", "training")])]
    with ThreadPoolExecutor(REQUEST_THREADS) as pool:
        list(pool.map(lambda run_id: client.log_inputs(run_id, datasets=inputs), run_ids))


class EpochLog:
    """``on_epoch`` for training: each run's epoch metrics to its run, the mean loss to ``report``.

    A trial trains its runs together, so a request per run and epoch would be runs x epochs
    requests that training waits on (10,000 a trial at 100 runs and 100 epochs). The metrics
    are buffered instead and sent as one ``log_batch`` per run: after the first epoch (the UI
    shows the run training), then at most every ``every`` seconds, and at :meth:`flush`.
    """

    BATCH = 1000  # MLflow's limit of metrics per log_batch

    def __init__(
        self,
        client: Any,
        run_ids: dict[int, str],
        report: Callable[[dict], None] | None,
        every: float = 10.0,
    ) -> None:
        self.client, self.run_ids, self.report, self.every = client, run_ids, report, every
        self._pending: dict[int, list] = {}
        self._sent_at: float | None = None

    def __call__(self, epoch: int, frame: pd.DataFrame) -> None:
        from mlflow.entities import Metric

        stamp = pd.Timestamp.now().value // 1_000_000
        names = [name for name in EPOCH_METRICS if name in frame]
        for row in frame.itertuples():
            self._pending.setdefault(row.run, []).extend(
                Metric(name, float(getattr(row, name)), stamp, epoch) for name in names
            )
        if self._sent_at is None or time.monotonic() - self._sent_at >= self.every:
            self.flush()
        if self.report is not None:
            self.report({"epoch": epoch, "loss": float(frame["loss"].mean())})

    def flush(self) -> None:
        """Send what is buffered: one ``log_batch`` per run (more past 1,000 metrics)."""
        pending, self._pending = self._pending, {}
        for run, metrics in pending.items():
            for i in range(0, len(metrics), self.BATCH):
                self.client.log_batch(self.run_ids[run], metrics=metrics[i : i + self.BATCH])
        self._sent_at = time.monotonic()


def _register_encoder(
    ctx: SweepContext,
    shape: _Shape,
    run: int,
    ref: LoggedModelRef,
    held_out: pd.Series,
) -> str:
    """Register the logged encoder ``ref`` as a version of its shape's model name."""
    tags = {
        VERSION_TAGS.sweep: ctx.sweep,
        VERSION_TAGS.model: shape.kind,
        VERSION_TAGS.dim: shape.latent_dim,
        VERSION_TAGS.run: run,
        VERSION_TAGS.grid_key: shape.grid_key(run),
        **(
            {VERSION_TAGS.r2_genes: f"{held_out['r2_genes']:.4f}"} if "r2_genes" in held_out else {}
        ),
    }
    name = encoder_model_name(shape.dataset, shape.kind, shape.latent_dim)
    return register_logged_model(
        ctx.session, ref.model_uri, name, tags=tags, run_id=ref.run_id
    ).version


# TrainConfig fields logged under another name, and those that are not trial params.
_TRAIN_PARAM_NAMES = {"cycle_epochs": "lr_cycle_epochs"}
_TRAIN_NOT_PARAMS = ("dtype", "device")


def trial_params(
    config: ExperimentConfig,
    kind: str,
    latent_dim: int,
    run: int,
    *,
    n_inputs: int,
    pca_artifact: str,
) -> dict[str, Any]:
    """MLflow params of one trial run (names: ``contract.TRIAL_PARAMS``), from the dataclasses.

    The grid point and its seed, the PCA size, every training knob of ``config.train`` but
    dtype/device, and every architecture knob of ``config.model``.
    """
    train = {
        _TRAIN_PARAM_NAMES.get(k, k): v
        for k, v in config.train.to_dict().items()
        if k not in _TRAIN_NOT_PARAMS
    }
    return {
        "model": kind,
        "latent_dim": latent_dim,
        "run": run,
        "seed": seed_for_run(run),
        "pca_components": n_inputs,
        **train,
        **config.model.to_dict(),
        "pca_artifact": pca_artifact,
    }


def _held_out_metrics(
    row: pd.Series, attribution, r: int, agreement: float | None, model_id: str
) -> list:
    """The run's held-out metrics, IG completeness error and (when its trial trained other
    runs of the shape) its seed agreement with them, linked to its logged encoder
    ``model_id`` (the model's page lists them)."""
    from mlflow.entities import Metric

    stamp = pd.Timestamp.now().value // 1_000_000
    values = {k: float(row[k]) for k in HELD_OUT_METRICS if k in row}
    values[IG_METRIC] = float(np.max(attribution.relative_delta[r]))
    if agreement is not None:
        values[AGREEMENT_METRIC] = agreement
    return [Metric(k, v, stamp, 0, model_id=model_id) for k, v in values.items()]


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
