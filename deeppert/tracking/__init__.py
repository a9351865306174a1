"""MLflow tracking for deeppert: the only package that imports ``mlflow``.

``server`` starts and stops a tracking server process; ``client`` holds the helpers jobs use
to log and read runs, Parquet artifacts and registry aliases; ``contract`` names every tag,
param and artifact jobs exchange; ``session`` holds :class:`TrackingSession` (server,
experiment, one client), which every helper that talks to the server takes. ``mlflow``
itself is imported lazily, inside the helpers. Importing the package changes no process
setting; :func:`configure_mlflow` does, where a job or client starts.
"""

from __future__ import annotations

import importlib

# name -> submodule; imported on first use (PEP 562), so ``import deeppert.tracking.server``
# (``deeppert server --help``) loads neither pandas nor the client helpers.
_EXPORTS = {
    "LoggedModelRef": "client",
    "ModelVersionRef": "client",
    "RunStatus": "client",
    "check_server": "client",
    "configure_mlflow": "client",
    "find_runs_by_tag": "client",
    "finish_run": "client",
    "get_or_create_experiment": "client",
    "load_parquet": "client",
    "load_torch_model": "client",
    "log_parquet": "client",
    "log_torch_model": "client",
    "mark_run_failed": "client",
    "register_logged_model": "client",
    "resolve_alias": "client",
    "set_alias": "client",
    "start_run": "client",
    "tracked_run": "client",
    "tracking_client": "client",
    "ServerUnreachable": "client",
    "TrackingSession": "session",
    "ServerConfig": "server",
    "TrackingServer": "server",
    "ensure_database": "server",
    "free_port": "server",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"deeppert.tracking.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'deeppert.tracking' has no attribute {name!r}")


__all__ = [
    "LoggedModelRef",
    "ModelVersionRef",
    "RunStatus",
    "ServerConfig",
    "ServerUnreachable",
    "TrackingServer",
    "TrackingSession",
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
