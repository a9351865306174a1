"""MLflow tracking for deeppert: the only package that imports ``mlflow``.

``server`` starts and stops a tracking server process; ``client`` holds the helpers jobs use
to log and read runs, Parquet artifacts and registry aliases; ``contract`` names every tag,
param and artifact jobs exchange. Every helper takes the tracking URI explicitly. ``mlflow``
itself is imported lazily, inside the helpers. Importing the package changes no process
setting; :func:`configure_mlflow` does, where a job or client starts.
"""

from __future__ import annotations

from deeppert.tracking.client import (
    LoggedModelRef,
    ModelVersionRef,
    RunStatus,
    check_server,
    configure_mlflow,
    find_runs_by_tag,
    finish_run,
    get_or_create_experiment,
    load_parquet,
    load_torch_model,
    log_parquet,
    log_torch_model,
    mark_run_failed,
    register_logged_model,
    resolve_alias,
    set_alias,
    start_run,
    tracked_run,
    tracking_client,
)
from deeppert.tracking.server import ServerConfig, TrackingServer, ensure_database, free_port

__all__ = [
    "LoggedModelRef",
    "ModelVersionRef",
    "RunStatus",
    "ServerConfig",
    "TrackingServer",
    "check_server",
    "configure_mlflow",
    "ensure_database",
    "find_runs_by_tag",
    "finish_run",
    "free_port",
    "get_or_create_experiment",
    "load_parquet",
    "load_torch_model",
    "log_parquet",
    "log_torch_model",
    "mark_run_failed",
    "register_logged_model",
    "resolve_alias",
    "set_alias",
    "start_run",
    "tracked_run",
    "tracking_client",
]
