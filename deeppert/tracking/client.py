"""Thin helpers over ``mlflow.MlflowClient`` for the artifact contract.

Every helper that talks to the server takes a :class:`~deeppert.tracking.session.TrackingSession`
(server, experiment, one client) explicitly, so nothing global leaks between jobs, threads or
tests; only the primitives below it (:func:`tracking_client`, :func:`check_server`,
:func:`global_uris`, :func:`ui_url`) take the URI itself. They add only what the pipeline needs on top
of MLflow: a fast reachability check, idempotent lookups by tag, Parquet artifacts that
round-trip exactly (never ``log_table``, which writes JSON), and registry aliases that fail
with a message listing what does exist.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import hashlib
import logging
import os
import posixpath
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import requests

from deeppert.errors import DeeppertError
from deeppert.tracking.contract import TAGS

if TYPE_CHECKING:
    import numpy as np
    import torch
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from deeppert.config import TrackingConfig
    from deeppert.tracking.session import TrackingSession

log = logging.getLogger(__name__)

__all__ = [
    "RunStatus",
    "LoggedModelRef",
    "ModelVersionRef",
    "MLFLOW_DEFAULTS",
    "configure_mlflow",
    "quiet_mlflow",
    "tracking_client",
    "global_uris",
    "REQUEST_THREADS",
    "check_server",
    "ServerUnreachable",
    "request_error",
    "first_line",
    "get_or_create_experiment",
    "EXPERIMENT_KIND",
    "git_commit",
    "code_version",
    "source_tags",
    "ui_url",
    "start_run",
    "tracked_run",
    "find_runs_by_tag",
    "finish_run",
    "mark_run_failed",
    "log_parquet",
    "load_parquet",
    "dataset_entity",
    "log_torch_model",
    "load_torch_model",
    "register_logged_model",
    "set_alias",
    "resolve_alias",
]

RunStatus = Literal["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]
_RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
FAILURE_TAG = TAGS.failure

# MLflow 3's UI picks the experiment page (model training vs GenAI "Evaluations") from this tag;
# the value is the UI's ExperimentKind.CUSTOM_MODEL_DEVELOPMENT.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# Set on the job's environment (e.g. `ray job submit --runtime-env-json`) when the code runs
# from a copy without .git, such as Ray's uploaded working directory.
GIT_COMMIT_ENV = "DEEPPERT_GIT_COMMIT"
_REPO_ROOT = Path(__file__).resolve().parents[2]

#: MLflow settings every deeppert process runs with, unless its environment says otherwise.
#: MLflow reads them from the environment at each call; :func:`configure_mlflow` sets them.
MLFLOW_DEFAULTS = {
    # Artifact downloads in batch jobs print tqdm bars per file; keep job logs readable.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow's telemetry thread sets and unsets an environment variable that concurrent REST
    # calls read, which raised KeyError('_MLFLOW_TELEMETRY_SESSION_ID'); it also phones home.
    # MLflow checks it before each recorded call, so setting it before the first call suffices.
    "MLFLOW_DISABLE_TELEMETRY": "true",
}

# MLflow's fluent API (mlflow.start_run, pytorch/pyfunc log_model and load_model, the models:/
# downloader) reads the tracking and registry URIs from process-global state; this lock keeps
# threads from seeing each other's URIs.
_GLOBAL_URIS_LOCK = threading.Lock()

#: Requests a process keeps in flight at once where its items are independent (a trial
#: claiming, tagging and logging its runs; the ensemble job loading encoder versions): each is
#: mostly a wait on the server. MLflow moves a model's files two at a time and keeps 10
#: connections a host: at 8 threads urllib3 discarded connections (and said so once per model).
REQUEST_THREADS = 4


@contextlib.contextmanager
def global_uris(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's process-global tracking and registry URIs at ``tracking_uri``, then restore.

    For MLflow's fluent calls that take no tracking URI (``mlflow.pyfunc.load_model``,
    ``mlflow.start_run(run_id=...)``, ``mlflow.pytorch.log_model``); held under one lock, so
    concurrent threads each see their own URI. The only place deeppert switches them.
    """
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _GLOBAL_URIS_LOCK:
        old_tracking = tracking_utils._tracking_uri
        old_registry = registry_utils._registry_uri
        # MLflow's setters also export these for subprocesses; put them back exactly.
        old_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        tracking_utils.set_tracking_uri(tracking_uri)
        registry_utils.set_registry_uri(tracking_uri)
        try:
            yield
        finally:
            tracking_utils.set_tracking_uri(old_tracking)
            registry_utils._registry_uri = old_registry
            for key, value in old_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@dataclass(frozen=True)
class LoggedModelRef:
    """A model logged with :func:`log_torch_model` (``model_uri`` is ``models:/<model_id>``)."""

    model_uri: str
    model_id: str
    run_id: str
    name: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelVersionRef:
    """One registered model version, as resolved from ``name@alias`` or just registered."""

    name: str
    version: str
    run_id: str | None
    source: str
    model_id: str | None = None
    alias: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``, a URI that does not move when the alias does."""
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tags"] = dict(self.tags)
        return out


#: What the server's database says when two clients insert the same tag or param of one run
#: at once (SQLite, PostgreSQL): MLflow's store reads, misses, and both insert.
_WRITE_RACE_MARKERS = ("UNIQUE constraint failed", "duplicate key value violates unique")


def is_write_race(exc: BaseException) -> bool:
    """Whether ``exc`` is the server losing a first-write race on a tag or param key."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and any(m in str(exc) for m in _WRITE_RACE_MARKERS)


def configure_mlflow(tracking: TrackingConfig | None = None) -> None:
    """Set this process's MLflow client settings (environment variables MLflow reads per call).

    :data:`MLFLOW_DEFAULTS` where the environment does not set them, and, given ``tracking``,
    its retry budget ``tracking.http_*`` as ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` /
    ``_BACKOFF_FACTOR`` / ``_TIMEOUT``. Jobs and Ray trials call it with their config (``ray job
    submit`` does not hand the driver's environment to workers); :func:`tracking_client` calls
    it without one. Importing deeppert changes no setting.
    """
    for key, value in MLFLOW_DEFAULTS.items():
        os.environ.setdefault(key, value)
    _keep_last_response()
    if tracking is not None:
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(tracking.http_max_retries)
        os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(tracking.http_backoff_factor)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(tracking.http_timeout)


def quiet_mlflow(verbose: bool = False) -> None:
    """Keep MLflow's per-run prints and warnings out of this process's log unless ``verbose``.

    Quiet: no "View run ... at" / "View experiment at" lines (MLflow's
    ``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``), MLflow's loggers at ERROR (its "Waiting up to
    300 seconds ..." notes and "Saving pytorch model by Pickle ..." warnings) and no Python
    warnings raised from MLflow's modules. Verbose: MLflow's own defaults. A sweep prints three
    such lines per grid point; the driver prints one line per trial instead.
    """
    import warnings

    if verbose:
        os.environ.pop("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", None)
        logging.getLogger("mlflow").setLevel(logging.INFO)  # MLflow's own default
        warnings.filterwarnings("default", module=r"mlflow(\.|$)")
        return
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")


def _keep_last_response() -> None:
    """Make MLflow's retrying HTTP client hand back the server's last answer once its retries
    on 5xx run out, instead of urllib3's "too many 500 error responses", which drops it.

    MLflow then raises with the server's own error text (``RestException``, or an
    ``HTTPError`` carrying the body for artifact uploads), so a full disk or a read-only
    artifact store is named by what the server said. The retries themselves are unchanged.
    """
    from mlflow.utils import rest_utils

    retrying = rest_utils._get_http_response_with_retries
    if getattr(retrying, "keeps_last_response", False):
        return

    def keep_last(method, url, max_retries, backoff_factor, backoff_jitter, retry_codes,
                  raise_on_status=True, *args, **kwargs):  # fmt: skip
        return retrying(method, url, max_retries, backoff_factor, backoff_jitter, retry_codes,
                        False, *args, **kwargs)  # fmt: skip

    keep_last.keeps_last_response = True
    rest_utils._get_http_response_with_retries = keep_last


#: What a server error says when its disk is full or read-only: retrying cannot help.
_STORAGE_FAULTS = (
    "Errno 28",
    "Errno 30",
    "No space left on device",
    "Read-only file system",
    "database or disk is full",
    "readonly database",
)
_HTTP_STATUS = re.compile(r"(?:error code|HTTP) (\d{3})|^(\d{3}) (?:Client|Server) Error")
_TOO_MANY = re.compile(r"too many (\d{3}) error responses")


def request_error(exc: BaseException) -> tuple[str, bool] | None:
    """``(one line naming the cause, retryable)`` for a failed tracking request; ``None``
    when ``exc`` is not one (MLflow's ``MlflowException`` or a ``requests`` error).

    The line gives the HTTP status and the server's own message (HTML reduced to its text).
    Not retryable: a 4xx but 408/429 (refused: a wrong grant, a bad request) and any answer
    naming a full or read-only disk; they fail the same way on every retry.
    """
    from mlflow.exceptions import MlflowException, RestException

    if not isinstance(exc, (MlflowException, requests.RequestException)):
        return None
    text = exc.message if isinstance(exc, MlflowException) else str(exc)
    status: int | None = None
    if isinstance(exc, RestException):
        status = exc.get_http_status_code()
        body = text  # "ERROR_CODE: message"
    elif isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        body = exc.response.text
    else:
        found = _HTTP_STATUS.search(text)
        status = int(next(g for g in found.groups() if g)) if found else None
        body = text.split("Response body:", 1)[1].strip()[1:-1] if "Response body:" in text else ""
    many = _TOO_MANY.search(text)
    body = " ".join(re.sub(r"<[^>]+>", " ", str(body)).split())[:400]
    storage = next((m for m in _STORAGE_FAULTS if m in text or m in body), None)
    if status is None and many is None:
        budget = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "?")
        line = (
            f"MLflow tracking request failed after the retry budget "
            f"(tracking.http_max_retries={budget}): {type(exc).__name__}: "
            f"{(text.strip().splitlines() or [''])[0][:300]}"
        )
        return line, True
    if status is None:
        status = int(many.group(1))
        body = body or "the server gave no error text"
    line = f"the MLflow tracking server answered HTTP {status}: {body or 'no error text'}"
    refused = 400 <= status < 500 and status not in (408, 429)
    if storage:
        line += f" (its storage is full or read-only: {storage})"
    return line, not (refused or storage)


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for one-line reports."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def tracking_client(tracking_uri: str) -> MlflowClient:
    """An ``MlflowClient`` bound to ``tracking_uri`` for both tracking and registry.

    The one client factory: a :class:`~deeppert.tracking.session.TrackingSession` makes its
    client here, so the process gets :data:`MLFLOW_DEFAULTS` (:func:`configure_mlflow`) before
    its first request.

    Tag, param and batch writes are retried when they lose a first-write race: two sweep
    drivers writing the same tag of their shared parent run at the same moment make MLflow's
    store insert one key twice (a 400 "UNIQUE constraint failed"); the retry finds the row
    and updates it, which is what one writer would have got.
    """
    configure_mlflow()
    return _race_safe_client_class()(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@functools.cache
def _race_safe_client_class() -> type[MlflowClient]:
    from mlflow import MlflowClient

    class RaceSafeClient(MlflowClient):
        def set_tag(self, *args, **kwargs):
            return _retry_write_race(super().set_tag, *args, **kwargs)

        def log_param(self, *args, **kwargs):
            return _retry_write_race(super().log_param, *args, **kwargs)

        def log_batch(self, *args, **kwargs):
            return _retry_write_race(super().log_batch, *args, **kwargs)

    return RaceSafeClient


def _retry_write_race(write: Callable[..., Any], *args: Any, attempts: int = 4, **kwargs: Any):
    for attempt in range(attempts):
        try:
            return write(*args, **kwargs)
        except Exception as exc:
            if attempt == attempts - 1 or not is_write_race(exc):
                raise
            log.info("tracking write lost a race with another writer; retrying: %s", exc)
            time.sleep(0.05 * (attempt + 1))


class ServerUnreachable(DeeppertError):
    """No tracking server answers at the address (refused, timed out): worth retrying later,
    unlike a server that answers and says it is unhealthy or refuses the credentials."""


def check_server(tracking_uri: str, *, timeout: float = 5.0) -> None:
    """Raise :class:`DeeppertError` naming ``tracking_uri`` unless a server answers there.

    One request to ``/health`` (no retries, ``timeout`` seconds) and one authenticated API
    call with the client credentials MLflow itself uses (``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD``), so a wrong password fails here, not mid-sweep. MLflow's own
    client would retry an unreachable host for minutes; call this first.
    """
    base = tracking_uri.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise DeeppertError(
            f"tracking URI {tracking_uri!r} is not a tracking server address (http://host:port); "
            "jobs must log through a server, never to a database file directly"
        )
    try:
        health = requests.get(f"{base}/health", timeout=timeout)
    except requests.RequestException as exc:
        raise ServerUnreachable(
            f"MLflow tracking server at {tracking_uri} is unreachable "
            f"({type(exc).__name__}); start it with `deeppert server`"
        ) from exc
    if health.status_code != 200:
        said = " ".join(re.sub(r"<[^>]+>", " ", health.text).split())[:300]
        raise DeeppertError(
            f"MLflow tracking server at {tracking_uri} is unhealthy: /health returned "
            f"HTTP {health.status_code}" + (f": {said}" if said else "")
        )
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    auth = (user, password) if user and password else None
    try:
        api = requests.get(
            f"{base}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=auth,
            timeout=timeout,
        )
    except requests.RequestException as exc:
        raise ServerUnreachable(
            f"MLflow tracking server at {tracking_uri} stopped answering ({type(exc).__name__})"
        ) from exc
    if api.status_code in (401, 403):
        who = f"user {user!r}" if auth else "no credentials"
        raise DeeppertError(
            f"MLflow tracking server at {tracking_uri} refused {who} (HTTP {api.status_code}); "
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    if api.status_code != 200:
        raise DeeppertError(
            f"MLflow tracking server at {tracking_uri} answered HTTP {api.status_code} "
            f"to an experiment search: {api.text[:200]}"
        )


def ui_url(tracking_uri: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """A browser link to the MLflow UI that opens in the model-training view.

    MLflow 3.17's UI keeps one global GenAI / model-training switch per browser (GenAI until
    changed); the ``workflowType`` query parameter selects model training for the link.
    """
    route = "/experiments"
    if experiment_id is not None:
        route += f"/{experiment_id}" + (f"/runs/{run_id}" if run_id else "/runs")
    return f"{tracking_uri.rstrip('/')}/#{route}?workflowType=machine_learning"


def get_or_create_experiment(session: TrackingSession, name: str) -> str:
    """Id of the experiment called ``name``, created when missing (safe under races).

    The experiment carries tag ``mlflow.experimentKind = custom_model_development``, so the
    MLflow UI opens it in the model-training view (runs, metrics, models), not the GenAI one.
    """
    from mlflow.exceptions import MlflowException

    client = session.client
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise DeeppertError(
                f"experiment {name!r} at {session.uri} is deleted; restore it or pick another name"
            )
        if EXPERIMENT_KIND_TAG not in (found.tags or {}):
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return found.experiment_id
    try:
        return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        # Another job created it between our lookup and create.
        return client.get_experiment_by_name(name).experiment_id


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout this code runs from (``+dirty`` with local changes), or None.

    ``$DEEPPERT_GIT_COMMIT`` wins: Ray uploads the working directory without ``.git``.
    """
    if os.environ.get(GIT_COMMIT_ENV):
        return os.environ[GIT_COMMIT_ENV]
    try:
        head = subprocess.run(
            ["git", "-C", str(_REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(_REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head


@functools.cache
def code_version() -> str:
    """What identifies the code that ran: the git commit, else a hash of the package sources.

    ``<package version>+g<commit[:12]>`` from a checkout; ``<package version>+src<sha[:12]>``
    (SHA-256 over every ``.py`` of ``deeppert/`` and ``ray_jobs/``) from a copy without git.
    """
    import deeppert

    commit = git_commit()
    if commit:
        return (
            f"{deeppert.__version__}+g{commit[:12]}{'.dirty' if commit.endswith('+dirty') else ''}"
        )
    h = hashlib.sha256()
    for folder in ("deeppert", "ray_jobs"):
        for path in sorted((_REPO_ROOT / folder).rglob("*.py")):
            h.update(path.relative_to(_REPO_ROOT).as_posix().encode() + b"\x00")
            h.update(path.read_bytes())
    return f"{deeppert.__version__}+src{h.hexdigest()[:12]}"


def source_tags() -> dict[str, str]:
    """MLflow's standard source tags for a run started by this process.

    ``mlflow.source.name`` (the entry script), ``mlflow.source.type`` (JOB),
    ``mlflow.user`` and, from a git checkout, ``mlflow.source.git.commit``; the UI shows them
    as the run's Source, User and Git commit.
    """
    from mlflow.utils import mlflow_tags as t

    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    try:
        name = script.resolve().relative_to(_REPO_ROOT).as_posix() if script else "python"
    except ValueError:
        name = script.name if script else "python"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    tags = {t.MLFLOW_SOURCE_NAME: name, t.MLFLOW_SOURCE_TYPE: "JOB", t.MLFLOW_USER: user}
    commit = git_commit()
    if commit:
        tags[t.MLFLOW_GIT_COMMIT] = commit.removesuffix("+dirty")
    return tags


def start_run(
    session: TrackingSession,
    *,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
    description: str | None = None,
) -> str:
    """Create a RUNNING run in the session's experiment (a child of ``parent_run_id`` when
    given); returns its id.

    The run carries :func:`source_tags` and, when given, ``description`` as its MLflow
    description (``mlflow.note.content``). It stays RUNNING until :func:`finish_run` or
    :func:`mark_run_failed`; no fluent "active run" is involved, so any thread or process can
    finish it.
    """
    from mlflow.entities import Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE

    client = session.client
    all_tags = {**source_tags(), **{str(k): str(v) for k, v in (tags or {}).items()}}
    if description:
        all_tags[MLFLOW_RUN_NOTE] = description
    if parent_run_id is not None:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run = client.create_run(session.experiment_id, run_name=run_name, tags=all_tags)
    run_id = run.info.run_id
    if params:
        client.log_batch(run_id, params=[Param(str(k), str(v)) for k, v in params.items()])
    return run_id


@contextlib.contextmanager
def tracked_run(
    session: TrackingSession,
    *,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
    description: str | None = None,
) -> Iterator[str]:
    """The run lifecycle: start a run (as :func:`start_run`), yield its id, mark it FINISHED.

    On any exception in the block (``KeyboardInterrupt`` included) the run is marked FAILED
    with the exception as the reason (:func:`mark_run_failed`) and the exception re-raised.
    """
    run_id = start_run(
        session,
        run_name=run_name,
        tags=tags,
        params=params,
        parent_run_id=parent_run_id,
        description=description,
    )
    try:
        yield run_id
        finish_run(session, run_id)
    except BaseException as exc:
        mark_run_failed(session, run_id, reason=f"{type(exc).__name__}: {exc}")
        raise


def find_runs_by_tag(
    session: TrackingSession,
    key: str,
    value: str,
    *,
    status: RunStatus | None = None,
    parent_run_id: str | None = None,
) -> list[Run]:
    """All active (not deleted) runs of the session's experiment with tag ``key == value``,
    newest first.

    ``status`` and ``parent_run_id`` narrow the search. Used to make retried or resumed
    trials idempotent: look the grid key up before starting a run.
    """
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    if status is not None and status not in _RUN_STATUSES:
        raise DeeppertError(f"unknown run status {status!r}; expected one of {_RUN_STATUSES}")
    clauses = [f"tags.`{_filter_safe('tag key', key)}` = '{_filter_safe('tag value', value)}'"]
    if status is not None:
        clauses.append(f"attributes.status = '{status}'")
    if parent_run_id is not None:
        clauses.append(
            f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{_filter_safe('parent run id', parent_run_id)}'"
        )
    runs: list[Run] = []
    token = None
    while True:
        page = session.client.search_runs(
            [session.experiment_id],
            filter_string=" and ".join(clauses),
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def finish_run(session: TrackingSession, run_id: str) -> None:
    """Mark ``run_id`` FINISHED."""
    session.client.set_terminated(run_id, status="FINISHED")


def mark_run_failed(session: TrackingSession, run_id: str, *, reason: str | None = None) -> None:
    """Mark ``run_id`` FAILED, recording ``reason`` (truncated) in tag ``deeppert.failure``."""
    client = session.client
    if reason:
        client.set_tag(run_id, FAILURE_TAG, reason[:4000])
    client.set_terminated(run_id, status="FAILED")


def log_parquet(
    session: TrackingSession, run_id: str, frame: pd.DataFrame, artifact_path: str
) -> str:
    """Write ``frame`` (index included) as Parquet and log it at ``artifact_path``.

    ``artifact_path`` is the file's path inside the run, e.g. ``"latents.parquet"`` or
    ``"ensemble/labels.parquet"``. Column names must be unique strings (Parquet's rule), so
    :func:`load_parquet` returns an identical frame. Returns ``artifact_path``.
    """
    directory, filename = _split_artifact_path(artifact_path)
    if not all(isinstance(c, str) for c in frame.columns):
        bad = [c for c in frame.columns if not isinstance(c, str)][:5]
        raise DeeppertError(
            f"cannot log {artifact_path}: Parquet needs string column names, got {bad!r}"
        )
    if frame.columns.has_duplicates:
        dup = frame.columns[frame.columns.duplicated()].unique().tolist()[:5]
        raise DeeppertError(f"cannot log {artifact_path}: duplicate column names {dup!r}")
    with tempfile.TemporaryDirectory(prefix="deeppert-parquet-") as tmp:
        local = Path(tmp) / filename
        frame.to_parquet(local, index=True)
        session.client.log_artifact(run_id, str(local), directory or None)
    return artifact_path


def load_parquet(session: TrackingSession, run_id: str, artifact_path: str) -> pd.DataFrame:
    """Download the Parquet artifact ``artifact_path`` of ``run_id`` and read it back."""
    directory, filename = _split_artifact_path(artifact_path)
    client = session.client
    present = [a.path for a in client.list_artifacts(run_id, directory or None)]
    if artifact_path not in present:
        raise DeeppertError(
            f"run {run_id} at {session.uri} has no artifact {artifact_path!r}; "
            f"found in {directory or 'the run root'}: {sorted(present) or 'nothing'}"
        )
    with tempfile.TemporaryDirectory(prefix="deeppert-parquet-") as tmp:
        local = client.download_artifacts(run_id, artifact_path, dst_path=tmp)
        return pd.read_parquet(local)


def dataset_entity(dataset: Any) -> Any:
    """The ``mlflow.entities.Dataset`` of an ``mlflow.data`` dataset (e.g. ``from_pandas``),
    for :meth:`MlflowClient.log_inputs`, built from its public ``to_dict()``."""
    from mlflow.entities import Dataset

    d = dataset.to_dict()
    return Dataset(
        name=d["name"],
        digest=d["digest"],
        source_type=d["source_type"],
        source=d["source"],
        schema=d.get("schema"),
        profile=d.get("profile"),
    )


def log_torch_model(
    session: TrackingSession,
    run_id: str,
    model: torch.nn.Module,
    *,
    name: str,
    input_example: np.ndarray,
    pip_requirements: Sequence[str] | None = None,
    tags: Mapping[str, Any] | None = None,
    run: Any = None,
) -> LoggedModelRef:
    """Log ``model`` as an MLflow PyTorch model of ``run_id``, in that run's experiment.

    The signature is inferred from ``input_example`` (a float32 array of a few samples); the
    example itself is not stored (two files per model that a sweep would upload for each of
    its 1,200 encoders). ``pip_requirements`` defaults to the running torch and numpy
    versions, which skips MLflow's slow requirement inference. ``run``: the run's entity when
    the caller already holds it (saves a ``runs/get``). Safe to call from several threads at
    once (a trial logs its runs in parallel). Register the result with
    :func:`register_logged_model`.
    """
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model, infer_signature
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    if pip_requirements is None:
        pip_requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]
    client = session.client
    run = run if run is not None and run.info.run_id == run_id else client.get_run(run_id)
    with torch.no_grad():
        output = model(torch.as_tensor(input_example, dtype=next(model.parameters()).dtype))
    signature = infer_signature(input_example, output.cpu().numpy())
    # What mlflow.pytorch.log_model does, without its reads of the process-global tracking URI
    # (threads would take turns under global_uris) and of the model just created: create the
    # logged model in the run's experiment, save it locally, upload it to the model's own
    # artifact location, mark it READY (FAILED when the upload raises).
    pending = client.create_logged_model(
        experiment_id=run.info.experiment_id,
        name=name,
        source_run_id=run_id,
        tags={str(k): str(v) for k, v in (tags or {}).items()} or None,
        params=dict(run.data.params) or None,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="deeppert-model-") as tmp:
            local = os.path.join(tmp, name)
            mlflow.pytorch.save_model(
                model,
                local,
                mlflow_model=Model(
                    artifact_path=pending.artifact_location,
                    model_uuid=pending.model_id,
                    model_id=pending.model_id,
                ),
                signature=signature,
                pip_requirements=list(pip_requirements),
                # pickle keeps the module's own class (the ensemble job restacks replicas);
                # MLflow 3's default, torch.export's pt2, reloads as an anonymous GraphModule.
                serialization_format="pickle",
            )
            repository = get_artifact_repository(
                pending.artifact_location, tracking_uri=session.uri
            )
            repository.log_artifacts(local)
    except Exception:
        client.finalize_logged_model(pending.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(pending.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, models=[LoggedModelOutput(pending.model_id, step=0)])
    return LoggedModelRef(
        model_uri=f"models:/{pending.model_id}", model_id=pending.model_id, run_id=run_id, name=name
    )


def load_torch_model(
    session: TrackingSession, model_uri: str, *, map_location: str | None = None
) -> torch.nn.Module:
    """Download and load the PyTorch model at ``model_uri`` (e.g. a sweep's encoder).

    Accepts ``models:/m-...`` (a logged model), ``models:/name/version`` and
    ``models:/name@alias``; the files come from the logged model's artifact location with the
    session's tracking URI passed along (no process-global URI, no lock), so threads may load
    models side by side. ``map_location`` (e.g. ``"cpu"``) is torch's, for a model logged
    from a GPU.
    """
    import mlflow.artifacts
    import mlflow.pytorch
    import yaml

    source = _logged_model_source(session, model_uri)
    model_id = source.removeprefix("models:/").split("/", 1)[0]
    if not model_id.startswith("m-"):
        raise DeeppertError(f"{model_uri!r} resolves to {source!r}, not a logged model")
    # Only what loading reads: MLmodel and the flavor's data folder (not the environment
    # files, input example and signature files beside them): about half the requests.
    location = session.client.get_logged_model(model_id).artifact_location.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="deeppert-model-") as tmp:

        def fetch(path: str) -> None:
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"{location}/{path}", dst_path=tmp, tracking_uri=session.uri
            )

        fetch("MLmodel")
        flavor = yaml.safe_load(Path(tmp, "MLmodel").read_text())["flavors"]["pytorch"]
        fetch(flavor["model_data"])
        return mlflow.pytorch.load_model(tmp, map_location=map_location)


def _logged_model_source(session: TrackingSession, model_uri: str) -> str:
    if not model_uri.startswith("models:/"):
        raise DeeppertError(
            f"model URI {model_uri!r} must be models:/m-<id>, models:/<name>/<version> "
            "or models:/<name>@<alias>"
        )
    rest = model_uri.removeprefix("models:/")
    if rest.startswith("m-"):
        return model_uri
    if "@" in rest:
        return resolve_alias(session, rest).source
    name, sep, version = rest.rpartition("/")
    if not sep or not version.isdigit():
        raise DeeppertError(f"model URI {model_uri!r} names no version or alias")
    return session.client.get_model_version(name, version).source


def register_logged_model(
    session: TrackingSession,
    model_uri: str,
    name: str,
    *,
    tags: Mapping[str, Any] | None = None,
    run_id: str | None = None,
) -> ModelVersionRef:
    """Register the logged model ``model_uri`` (``models:/m-...``) as a new version of ``name``.

    Creates the registered model on its first use in this process (safe under races; later
    versions skip the call, which a sweep made, and had refused, once per grid point).
    ``run_id``: the logged model's source run when the caller knows it (else read from the
    logged model).
    """
    from mlflow.exceptions import MlflowException

    if not model_uri.startswith("models:/m-"):
        raise DeeppertError(
            f"cannot register {model_uri!r}: expected a logged model URI models:/m-... "
            "(as returned by log_torch_model)"
        )
    model_id = model_uri.removeprefix("models:/").split("/", 1)[0]
    client = session.client
    if run_id is None:
        run_id = client.get_logged_model(model_id).source_run_id

    def create_model() -> None:
        # Before the version, not after one is refused: with auth on, a version of a model
        # that does not exist is refused as 403, not as RESOURCE_DOES_NOT_EXIST.
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        _REGISTERED_NAMES.add((session.uri, name))

    def create_version():
        return client.create_model_version(
            name,
            source=model_uri,
            run_id=run_id,
            tags={str(k): str(v) for k, v in (tags or {}).items()},
            model_id=model_id,
        )

    if (session.uri, name) not in _REGISTERED_NAMES:
        create_model()
        return _version_ref(create_version())
    try:
        return _version_ref(create_version())
    except MlflowException as exc:  # deleted since, or another server on the same address
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    create_model()
    return _version_ref(create_version())


#: (tracking URI, registered model name) that this process created or found existing.
_REGISTERED_NAMES: set[tuple[str, str]] = set()


def set_alias(session: TrackingSession, name: str, alias: str, version: str | int) -> None:
    """Point ``name@alias`` at ``version`` (moving it if it pointed elsewhere)."""
    if alias == "latest":
        raise DeeppertError("alias 'latest' is reserved by MLflow; use e.g. 'current'")
    session.client.set_registered_model_alias(name, alias, str(version))


def resolve_alias(session: TrackingSession, ref: str) -> ModelVersionRef:
    """The model version ``ref`` (``"name@alias"``) points at.

    Raises :class:`DeeppertError` naming ``ref`` and listing the model's aliases, or the
    registered models, when either is missing.
    """
    from mlflow.exceptions import MlflowException

    name, sep, alias = ref.rpartition("@")
    if not sep or not name or not alias:
        raise DeeppertError(f"model reference {ref!r} is not of the form 'name@alias'")
    client = session.client
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        names = sorted(m.name for m in client.search_registered_models(max_results=100))
        raise DeeppertError(
            f"no registered model {name!r} (from {ref!r}) at {session.uri}; "
            f"registered models: {names or 'none'}"
        ) from exc
    aliases = dict(model.aliases or {})
    if alias not in aliases:
        listing = ", ".join(f"{a}->v{v}" for a, v in sorted(aliases.items())) or "none"
        raise DeeppertError(
            f"registered model {name!r} has no alias {alias!r} (from {ref!r}) at "
            f"{session.uri}; its aliases: {listing}"
        )
    return _version_ref(client.get_model_version_by_alias(name, alias), alias=alias)


def _version_ref(version: Any, alias: str | None = None) -> ModelVersionRef:
    return ModelVersionRef(
        name=version.name,
        version=str(version.version),
        run_id=version.run_id or None,
        source=version.source,
        model_id=getattr(version, "model_id", None) or _model_id_from_source(version.source),
        alias=alias,
        tags=dict(version.tags or {}),
    )


def _model_id_from_source(source: str | None) -> str | None:
    if source and source.startswith("models:/m-"):
        return source.removeprefix("models:/").split("/", 1)[0]
    return None


def _split_artifact_path(artifact_path: str) -> tuple[str, str]:
    norm = posixpath.normpath(artifact_path)
    if (
        not artifact_path.endswith(".parquet")
        or norm != artifact_path
        or norm.startswith(("/", ".."))
    ):
        raise DeeppertError(
            f"artifact path {artifact_path!r} must be a relative path ending in .parquet "
            "(e.g. 'latents.parquet')"
        )
    return posixpath.split(norm)


def _filter_safe(what: str, value: str) -> str:
    if "'" in value or "`" in value:
        raise DeeppertError(f"{what} {value!r} may not contain quotes or backticks")
    return value
