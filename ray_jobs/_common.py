"""What every job shares: config and tracking flags, logging, the Ray connection, the exit code.

Only light modules are imported here (the config schema, the standard library): a job's
``--help`` answers before MLflow, pandas or torch load; each job imports those inside the
functions that use them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable

from deeppert.config import ExperimentConfig, load_config
from deeppert.errors import DeeppertError
from deeppert.interrupts import Terminated, interrupt_exit, rearm_terminate, terminate_raises

__all__ = [
    "job_parser",
    "job_config",
    "check_ray_address",
    "connect_ray",
    "run_job",
]


def job_parser(doc: str, *, config_required: bool = True) -> argparse.ArgumentParser:
    """A parser with the job's first docstring line and the shared ``--config``/``--tracking-uri``."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument(
        "--config", required=config_required, help="experiment YAML (configs/*.yaml)"
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow server (default: $MLFLOW_TRACKING_URI, else the config's tracking.uri)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show MLflow's per-run prints and warnings (and Tune's status tables)",
    )
    return parser


def job_config(args: argparse.Namespace) -> ExperimentConfig:
    """The validated config of ``--config``, its tracking URI replaced by ``--tracking-uri``, else
    by an exported ``MLFLOW_TRACKING_URI`` (as MLflow's own clients do). The job's
    :class:`~deeppert.tracking.session.TrackingSession` of ``config.tracking`` sets the
    process's MLflow client settings when it connects; MLflow's per-run prints stay out of
    the log unless ``--verbose`` (:func:`~deeppert.tracking.client.quiet_mlflow`)."""
    from deeppert.tracking.client import quiet_mlflow

    quiet_mlflow(getattr(args, "verbose", False))
    config = load_config(args.config)
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        tracking = dataclasses.replace(config.tracking, uri=uri)
        config = dataclasses.replace(config, tracking=tracking)
    return config


def check_ray_address(config: ExperimentConfig, *, timeout: float = 5.0) -> None:
    """Fail fast (DeeppertError naming it) when an explicit ``host:port`` / ``ray://host:port``
    Ray address does not accept connections: ``ray.init`` would retry for minutes."""
    import socket

    address = config.sweep.ray_address or os.environ.get("RAY_ADDRESS") or "local"
    if address.startswith(("http://", "https://")):
        raise DeeppertError(
            f"Ray address {address} is a dashboard (job submission) address, which a job "
            "cannot join: submit it with `deeppert cluster submit -- python ray_jobs/...` "
            "(or `ray job submit`), or `unset RAY_ADDRESS` to run it here on a private Ray"
        )
    if address in ("local", "auto") or ":" not in address:
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise DeeppertError(f"Ray cluster at {address} is unreachable: {exc}") from exc


def connect_ray(config: ExperimentConfig, *, num_cpus: int | None = None) -> None:
    """Join ``sweep.ray_address`` / ``$RAY_ADDRESS`` (set inside ``ray job submit``), else start
    a private local Ray: never attach silently to some other cluster running on the machine."""
    import ray

    if ray.is_initialized():
        return
    check_ray_address(config)
    address = config.sweep.ray_address or os.environ.get("RAY_ADDRESS") or "local"
    try:
        ray.init(address=address, num_cpus=num_cpus if address == "local" else None)
        rearm_terminate()  # ray.init replaced SIGTERM's handler with its own sys.exit
    except Exception as exc:  # ConnectionError, AuthenticationError, ...: Ray's own types
        reason = (str(exc).strip().splitlines() or [""])[0][:300]
        raise DeeppertError(
            f"cannot join Ray at {address!r} ({type(exc).__name__}: {reason}); start a head "
            "with `deeppert cluster start --dir DIR`, and give head and client the same "
            "RAY_AUTH_MODE"
        ) from exc


def _stop_ray() -> None:
    """Shut down this job's Ray connection so workers' forwarded log lines are flushed before,
    not after, the job's final error line."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def run_job(name: str, body: Callable[[], int]) -> int:
    """Run ``body`` with job logging; bad input becomes one ``<name>: error:`` line and exit 2.

    So does a failed tracking request: the line names its HTTP status and the server's own
    message (a 403 from a missing grant, a full or read-only store), or, for a server that
    stays unreachable past the client's retry budget (``tracking.http_max_retries``), says so
    (:func:`~deeppert.tracking.client.request_error`).
    """
    from mlflow.exceptions import MlflowException
    from requests import RequestException

    from deeppert.tracking.client import request_error

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        # SIGTERM raises Terminated, before and after Ray is joined (connect_ray re-arms it),
        # so the job closes its runs and exits 143.
        with terminate_raises():
            return body()
    except (KeyboardInterrupt, Terminated) as exc:
        _stop_ray()
        what, code = interrupt_exit(exc)
        print(f"{name}: {what}", file=sys.stderr)
        return code
    except DeeppertError as exc:
        _stop_ray()
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except (MlflowException, RequestException) as exc:
        _stop_ray()
        print(f"{name}: error: {request_error(exc)[0]}", file=sys.stderr)
        return 2
