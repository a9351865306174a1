"""Ray Tune sweep over the cell line x model x latent dim x run grid of one config.

Submit to a running Ray cluster::

    ray job submit --working-dir . -- python ray_jobs/sweep.py --config configs/demo.yaml

(or run it directly: ``python ray_jobs/sweep.py --config ...`` starts a local Ray).
One Tune trial trains all runs (or ``sweep.seeds_per_trial`` of them) of one shape
vectorised, attributes them and logs one MLflow child run per grid point under the
sweep's parent run (see :mod:`deeppert.tracking.sweep`). Re-running the same command
resumes: grid points with a FINISHED run of the same config are skipped. Failed trials
are retried up to ``sweep.max_failures`` times.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from deeppert.errors import DeeppertError
from deeppert.interrupts import Terminated, interrupt_exit, terminate_deferred
from ray_jobs._common import (
    check_ray_address,
    connect_ray,
    job_config,
    job_parser,
    run_job,
)

if TYPE_CHECKING:
    import pandas as pd

    from deeppert.config import ExperimentConfig
    from deeppert.grid import Prepared
    from deeppert.tracking.session import TrackingSession
    from deeppert.tracking.sweep import SweepContext

log = logging.getLogger("deeppert.sweep")


@dataclasses.dataclass(frozen=True)
class SweepData:
    """The planned datasets, each loaded, split and projected once on the driver and logged on
    the parent run; keyed by dataset name. Trials get it through the object store."""

    prepared: dict[str, Prepared]
    shas: dict[str, str]  # data_sha256 of the signature matrix
    inputs: dict[str, Any]  # the MLflow dataset input each trial run carries


def prepare_sweep_data(ctx: SweepContext, config: ExperimentConfig, plan: list[dict]) -> SweepData:
    """Load, split and project every dataset ``plan`` trains on, and log each on the parent run."""
    from deeppert.grid import load_dataset, prepare
    from deeppert.tracking.sweep import data_sha256, log_dataset

    data = SweepData({}, {}, {})
    for dataset in config.datasets:
        if not any(t["dataset"] == dataset.name for t in plan):
            continue
        signatures = load_dataset(dataset)
        prepared = data.prepared[dataset.name] = prepare(signatures, config)
        sha = data.shas[dataset.name] = data_sha256(signatures)
        data.inputs[dataset.name] = log_dataset(
            ctx, dataset.name, prepared, sha, source=dataset.path
        )
    return data


def run_planned_trial(
    ctx: SweepContext, config: ExperimentConfig, data: SweepData, trial: dict, **kwargs: Any
) -> dict:
    """One trial of :func:`~deeppert.tracking.sweep.trial_plan` through
    :func:`~deeppert.tracking.sweep.run_trial` (``kwargs``: its ``report`` and ``tags``)."""
    from deeppert.tracking.sweep import run_trial

    return run_trial(
        ctx,
        data.prepared[trial["dataset"]],
        config,
        dataset=trial["dataset"],
        data_sha=data.shas[trial["dataset"]],
        kind=trial["model"],
        latent_dim=trial["latent_dim"],
        runs=list(trial["runs"]),
        data_input=data.inputs[trial["dataset"]],
        **kwargs,
    )


def _trainable(
    trial_config: dict,
    *,
    data: SweepData,
    config: ExperimentConfig,
    ctx: SweepContext,
    verbose: bool = False,
) -> None:
    import ray
    import torch
    from ray import tune

    from deeppert.tracking.client import quiet_mlflow
    from deeppert.tracking.contract import TAGS

    # The driver prints one line per trial; a trial's own INFO lines (and MLflow's per-run
    # prints) reach the driver's log only with --verbose.
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    quiet_mlflow(verbose)
    # The data arrive as read-only views of Ray's object store; training only reads them, so
    # torch's warning about tensors over non-writable arrays says nothing here.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    torch.set_num_threads(max(1, int(config.sweep.cpus_per_trial)))
    if config.sweep.gpus_per_trial > 0 and torch.cuda.is_available():
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, device="cuda"))
    try:
        metrics = run_planned_trial(
            ctx,
            config,
            data,
            trial_config["trial"],
            report=lambda m: tune.report(m) if (m["epoch"] + 1) % 10 == 0 else None,
            tags={TAGS.ray_node_id: ray.get_runtime_context().get_node_id()},
        )
    except Exception as exc:
        fatal = _non_retryable(exc, ctx.session)
        if fatal is None:
            raise  # Tune retries it (sweep.max_failures)
        # The trial's runs are already marked FAILED; report the cause instead of raising,
        # so Tune neither retries it nor starts further trials (_fatal_stopper).
        log.error("trial failed, not retryable: %s", fatal)
        tune.report({FATAL_METRIC: fatal, "done": 1})
        return
    tune.report({**metrics, "done": 1})


def trial_name(trial: dict) -> str:
    """What a planned trial holds, for Tune's progress table and folders:
    ``<dataset>_<MODEL>_d<dim>_runs<first>-<last>`` (``run<r>`` for one run, ``runs0,2,5`` for
    runs that are not consecutive)."""
    runs = list(trial["runs"])
    if len(runs) == 1:
        which = f"run{runs[0]}"
    elif runs == list(range(runs[0], runs[-1] + 1)):
        which = f"runs{runs[0]}-{runs[-1]}"
    else:
        which = "runs" + ",".join(map(str, runs))
    return f"{trial['dataset']}_{trial['model']}_d{trial['latent_dim']}_{which}"


def _tune_trial_name(trial) -> str:
    return trial_name(trial.config["trial"])


#: Result key of a trial that failed in a way no retry can fix (the cause, one line).
FATAL_METRIC = "deeppert_fatal"


def _non_retryable(exc: BaseException, session: TrackingSession) -> str | None:
    """The cause of ``exc`` in one line when retrying the trial cannot help: bad input
    (``DeeppertError``), a refused tracking request, a full or read-only store; else None.

    An internal server error (500) that outlived the client's retries is retried only while
    the server reports itself healthy: one that answers /health with an error (e.g. its readiness check
    finds the artifact store unwritable) would fail every retry the same way.
    """
    from deeppert.tracking.client import ServerUnreachable, request_error

    if isinstance(exc, DeeppertError):
        return str(exc)
    found = request_error(exc)
    if found is None:
        return None
    line, retryable = found
    if not retryable:
        return line
    if " HTTP 500" not in line:  # 502-504: a gateway or a restart, worth another try
        return None
    try:
        session.check(timeout=3.0)
    except ServerUnreachable:
        return None
    except DeeppertError as unhealthy:
        return f"{line}; {unhealthy}"
    return None


def _failure_reason(exc: BaseException) -> str:
    """One line for a run's ``deeppert.failure`` tag."""
    from deeppert.tracking.client import first_line, request_error

    if isinstance(exc, DeeppertError):
        return str(exc)
    if (stopped := interrupt_exit(exc)) is not None:
        return f"sweep driver {stopped[0]}"
    found = request_error(exc)
    return found[0] if found is not None else first_line(exc)


@contextlib.contextmanager
def _tune_console(verbose: bool) -> Iterator[None]:
    """Without ``verbose``, Tune's console output off: its newer engine prints a configuration
    box, a results path and a TensorBoard hint even at ``verbose=0``; the older one at 0 prints
    nothing (``RAY_AIR_NEW_OUTPUT=0``). The driver's own lines say what a person needs."""
    if verbose:
        yield
        return
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous


def _ask_tune_to_stop() -> None:
    """Tune's graceful stop (its SIGUSR1 handler); before Tune has installed it, SIGUSR1 would
    end the process outright, so stop at once instead."""
    if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
        raise Terminated()
    os.kill(os.getpid(), signal.SIGUSR1)


def run_sweep(
    config: ExperimentConfig, *, storage_path: str | None = None, verbose: bool = False
) -> pd.DataFrame:
    """Run (or resume) the sweep of ``config``; returns one row per trial that ran.

    The log holds one line per finished trial (:func:`trial_lines`); ``verbose`` adds the
    trials' own lines, MLflow's per-run prints and Tune's status tables.

    Whatever ends the driver once the parent run exists (bad data, a refused request, an
    interrupt, trials out of retries) closes the parent and this driver's leftover trial runs
    FAILED with the cause (:func:`~deeppert.tracking.sweep.close_sweep`) before it propagates.
    """
    from deeppert.tracking.client import finish_run
    from deeppert.tracking.report import log_sweep_report
    from deeppert.tracking.sweep import close_sweep, open_sweep

    check_ray_address(config)  # before any work: an unreachable cluster fails in seconds
    ctx = open_sweep(config)
    log.info("sweep %s: parent run %s on %s", ctx.sweep, ctx.parent_run_id, ctx.session.uri)
    try:
        table = _run_opened(ctx, config, storage_path, verbose)
        log_sweep_report(ctx, config)  # a resumed, complete sweep refreshes its report
        finish_run(ctx.session, ctx.parent_run_id)
    except BaseException as exc:
        close_sweep(ctx, _failure_reason(exc))
        raise
    return table


def _run_opened(
    ctx: SweepContext, config: ExperimentConfig, storage_path: str | None, verbose: bool
) -> pd.DataFrame:
    """The sweep under its open parent run: plan, prepare the data, run the trials with Tune."""
    import pandas as pd
    from ray import tune

    from deeppert.tracking.sweep import finished_grid_keys, trial_plan

    done = finished_grid_keys(ctx)
    plan = trial_plan(config, done)
    n_points = (
        len(config.datasets)
        * len(config.grid.models)
        * len(config.grid.latent_dims)
        * config.grid.runs
    )
    log.info(
        "%d of %d grid points already finished; %d trials to run", len(done), n_points, len(plan)
    )
    if not plan:
        return pd.DataFrame()
    data = prepare_sweep_data(ctx, config, plan)

    connect_ray(config)
    fatal = _fatal_stopper()
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, data=data, config=config, ctx=ctx, verbose=verbose),
        {"cpu": config.sweep.cpus_per_trial, "gpu": config.sweep.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(plan)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=config.sweep.max_concurrent_trials or None,
            # One actor process per trial would re-import torch + mlflow every time
            # (bench/bench_sweep.py); trials all ask for the same resources, so reuse them.
            reuse_actors=True,
            trial_name_creator=_tune_trial_name,
            trial_dirname_creator=_tune_trial_name,
        ),
        run_config=tune.RunConfig(
            name=f"{ctx.sweep}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=storage_path,
            failure_config=tune.FailureConfig(max_failures=config.sweep.max_failures),
            stop=fatal,
            verbose=1 if verbose else 0,
            callbacks=[trial_lines(ctx, len(plan))],
        ),
    )
    # SIGTERM (`ray job stop`) asks Tune to stop the way its SIGUSR1 handler does: it ends
    # the trials and returns, then Terminated closes the parent and the trial runs.
    with terminate_deferred(_ask_tune_to_stop), _tune_console(verbose):
        results = tuner.fit()
    if fatal.error:
        raise DeeppertError(f"sweep {ctx.sweep}: a trial failed: {fatal.error}")
    if results.errors:
        raise _sweep_failed(config, ctx, results.errors)
    rows = []
    for result in results:
        t = result.config["trial"]
        rows.append(
            {
                "dataset": t["dataset"],
                "model": t["model"],
                "latent_dim": t["latent_dim"],
                "runs": ",".join(map(str, t["runs"])),
                "r2_pca": result.metrics.get("r2_pca"),
                "r2_genes": result.metrics.get("r2_genes"),
            }
        )
    return pd.DataFrame(rows)


def trial_lines(ctx: SweepContext, total: int):
    """A Tune callback that logs one line per trial as it ends: how many of ``total`` are done,
    what it trained, its held-out R^2 and the sweep's MLflow run (its grid points' runs are
    the children listed there)."""
    from ray.tune import Callback

    from deeppert.tracking.client import ui_url

    link = ui_url(ctx.session.uri, ctx.session.experiment_id, ctx.parent_run_id)
    started = time.monotonic()

    class TrialLines(Callback):
        done = 0

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            result = trial.last_result or {}
            r2 = result.get("r2_genes")
            log.info(
                "trial %d/%d %s done after %.0f s%s; runs: %s",
                self.done,
                total,
                trial_name(trial.config["trial"]),
                time.monotonic() - started,
                f", held-out R^2 {r2:.3f}" if isinstance(r2, float) else "",
                link,
            )

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            log.warning("trial %s failed; see %s", trial_name(trial.config["trial"]), link)

    return TrialLines()


def _fatal_stopper():
    """A Tune stopper that ends the whole sweep at the first trial reporting a non-retryable
    error (:data:`FATAL_METRIC`, set by :func:`_trainable`); ``.error`` keeps that line."""
    from ray.tune import Stopper

    class FatalStopper(Stopper):
        error = ""

        def __call__(self, trial_id: str, result: dict) -> bool:
            if result.get(FATAL_METRIC):
                self.error = self.error or str(result[FATAL_METRIC])
                return True
            return False

        def stop_all(self) -> bool:
            return bool(self.error)

    return FatalStopper()


def _sweep_failed(config: ExperimentConfig, ctx: SweepContext, errors: list) -> DeeppertError:
    """Say in one line why the sweep ended when trials failed after their retries.

    When the tracking server is down past the client's retry budget nothing can be marked
    now; the runs left RUNNING stop renewing their heartbeat and the next run of the same
    command (the resume) marks them FAILED with the reason before training their points.
    """
    from deeppert.tracking.client import ServerUnreachable

    last = [ln for ln in str(errors[0]).strip().splitlines() if ln.strip()]
    cause = last[-1].strip()[:300] if last else type(errors[0]).__name__
    t = config.tracking
    try:
        ctx.session.check(timeout=3.0)
    except ServerUnreachable:
        return DeeppertError(
            f"sweep {ctx.sweep}: tracking server {ctx.session.uri} unreachable beyond the "
            f"retry budget (tracking.http_max_retries={t.http_max_retries}, "
            f"http_backoff_factor={t.http_backoff_factor}); {len(errors)} trial(s) failed; "
            f"rerun the same command when the server is back to resume (runs left RUNNING are "
            f"then marked FAILED); last error: {cause}"
        )
    except DeeppertError as unhealthy:  # it answers, and says what is wrong with it
        cause = f"{cause}; {unhealthy}"
    return DeeppertError(
        f"sweep {ctx.sweep}: {len(errors)} trial(s) failed after retries; last error: {cause}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--storage-path", help="Tune's results folder (default ~/ray_results)")
    args = parser.parse_args(argv)

    def body() -> int:
        table = run_sweep(job_config(args), storage_path=args.storage_path, verbose=args.verbose)
        if table.empty:
            print("sweep: every grid point already has a finished run; nothing to do")
        else:
            print(table.round(4).to_string(index=False))
        return 0

    return run_job("sweep", body)


if __name__ == "__main__":
    sys.exit(main())
