"""``deeppert server``: run an MLflow tracking server in the foreground.

Stops cleanly (whole process group) on SIGINT or SIGTERM; exits non-zero if the server dies.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType

from deeppert.cli._flags import apply_flags
from deeppert.schema import add_flags
from deeppert.tracking.server import (
    ADMIN_PASSWORD_ENV,
    SECRET_KEY_ENV,
    ServerConfig,
    TrackingServer,
    redact_uri,
)

__all__ = ["register"]

#: ServerConfig fields with a flag (``--startup-timeout`` for ``startup_timeout``); help and
#: defaults come from the dataclass.
_FLAGS = ("data_dir", "host", "port", "workers", "default_permission", "auth_cache_ttl",
          "startup_timeout")  # fmt: skip

_log = logging.getLogger("deeppert.server")

#: Environment variable read for ``--backend-store-uri`` (keeps a password off argv).
BACKEND_URI_ENV = "DEEPPERT_BACKEND_STORE_URI"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "server",
        help="run an MLflow tracking server (served artifacts) until Ctrl-C",
        description=(
            "Run an MLflow tracking server with served artifacts in the foreground. "
            "Default backend: SQLite file DATA_DIR/mlflow.db. With --auth, the admin password "
            f"comes from {ADMIN_PASSWORD_ENV} and the session key from {SECRET_KEY_ENV} "
            "(both 12+ characters)."
        ),
    )
    p.add_argument(
        "--backend-store-uri",
        default=os.environ.get(BACKEND_URI_ENV),
        help="SQLAlchemy URI, e.g. postgresql://postgres@127.0.0.1:5432/deeppert "
        f"(default: ${BACKEND_URI_ENV}, else sqlite:///DATA_DIR/mlflow.db; a missing "
        "PostgreSQL database is created). Put a URI with a password in "
        f"${BACKEND_URI_ENV}, not on the command line, where `ps` shows it",
    )
    add_flags(p, ServerConfig, _FLAGS)
    p.add_argument(
        "--artifacts-dir",
        default=None,
        help="served artifacts folder (default: DATA_DIR/artifacts)",
    )
    p.add_argument("--auth", action="store_true", help="enable MLflow basic authentication")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    uri = args.backend_store_uri
    if (
        uri
        and redact_uri(uri) != uri
        and any(a.startswith("--backend-store-uri") for a in sys.argv)
    ):
        _log.warning(
            "the backend store URI on the command line carries a password, which `ps` shows to "
            "every local user; pass it in $%s instead",
            BACKEND_URI_ENV,
        )
    config = apply_flags(
        ServerConfig(
            backend_store_uri=args.backend_store_uri,
            artifacts_dir=args.artifacts_dir,
            auth=args.auth,
        ),
        args,
        _FLAGS,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        _log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    server = TrackingServer(config)
    try:
        server.start()
        _log.info(
            "MLflow tracking server at %s (backend %s, artifacts %s, auth %s) up in %.1f s; log %s",
            server.url,
            redact_uri(config.resolved_backend_store_uri),
            config.resolved_artifacts_dir,
            "on" if config.auth else "off",
            server.startup_seconds or 0.0,
            server.log_path,
        )
        print(f"MLFLOW_TRACKING_URI={server.url}", flush=True)
        while not stop.wait(1.0):
            if not server.running:
                _log.error("tracking server exited unexpectedly; log tail:\n%s", server.log_tail())
                return 1
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
