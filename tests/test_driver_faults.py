"""The sweep driver at its edges: every run it opens ends FINISHED or FAILED with a reason,
and a failed tracking request is named by its HTTP status and the server's own words.

Driver failures run ``ray_jobs/sweep.py``'s :func:`run_sweep` in-process against a real
tracking server; they fail before Ray is joined, so no Ray starts. Request failures use a
stub HTTP server that answers every request with one fixed error.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from sweep_driver import SMOKE, Driver, sweep_runs, tiny_sweep

from deeppert.config import parse_config
from deeppert.errors import DeeppertError
from deeppert.tracking.client import (
    FAILURE_TAG,
    find_runs_by_tag,
    request_error,
    start_run,
    tracking_client,
)
from deeppert.tracking.contract import ROLES, TAGS
from deeppert.tracking.session import TrackingSession
from deeppert.tracking.sweep import SweepContext, close_sweep, open_sweep, sweep_name
from ray_jobs import sweep as sweep_job
from ray_jobs._common import run_job

pytestmark = [pytest.mark.mlflow, pytest.mark.timeout(300)]


def smoke_raw(uri: str, name: str, **sections) -> dict:
    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(name=name, tracking={"uri": uri, "experiment": name}, **sections)
    return raw


def parents(uri: str, experiment: str) -> list:
    client = tracking_client(uri)
    exp = client.get_experiment_by_name(experiment)
    return [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get(TAGS.role) == ROLES.sweep
    ]


def ended_pid() -> str:
    """``host:pid`` of a process of this host that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}"


@pytest.mark.parametrize(
    ("case", "sections", "says"),
    [
        (
            "badpath",
            {"datasets": [{"name": "X", "path": "/nonexistent/x.parquet"}]},
            "/nonexistent/x.parquet: file not found",
        ),
        ("pca", {"preprocess": {"n_components": 5000}}, "cannot fit 5000 PCA components"),
    ],
)
def test_driver_error_after_the_parent_exists_fails_it(sqlite_server, capsys, case, sections, says):
    """The driver fails after opening the parent (data loading, PCA): the parent ends FAILED
    with the driver's one-line error as its reason, and the job exits 2 with that line."""
    uri = sqlite_server.url
    config = parse_config(smoke_raw(uri, f"drv-{case}", **sections))
    rc = run_job("sweep", lambda: sweep_job.run_sweep(config) is None)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("sweep: error: ") and says in err[-1]
    (parent,) = parents(uri, f"drv-{case}")
    assert parent.info.status == "FAILED"
    assert says in parent.data.tags[FAILURE_TAG]


def test_open_sweep_closes_runs_of_ended_processes(sqlite_server):
    """Runs left RUNNING by a driver or worker of this host that no longer exists, in the
    same experiment and under another config (another sweep name), are closed FAILED with a
    reason when the next sweep opens; runs of a live process stay RUNNING."""
    uri = sqlite_server.url
    session = TrackingSession.for_uri(uri, "drv-resume").connect()
    dead, alive = ended_pid(), f"{socket.gethostname()}:{os.getpid()}"
    old_parent = start_run(
        session, tags={TAGS.role: ROLES.sweep, TAGS.sweep: "drv-resume-old", TAGS.driver: dead}
    )
    old_trial = start_run(
        session, tags={TAGS.role: ROLES.trial, TAGS.sweep: "drv-resume-old", TAGS.worker: dead}
    )
    live_trial = start_run(
        session, tags={TAGS.role: ROLES.trial, TAGS.sweep: "drv-resume-old", TAGS.worker: alive}
    )
    ctx = open_sweep(parse_config(smoke_raw(uri, "drv-resume")))
    client = tracking_client(uri)
    for run_id, owner in ((old_parent, "driver"), (old_trial, "worker")):
        run = client.get_run(run_id)
        assert run.info.status == "FAILED"
        assert f"its {owner} {dead} ended without closing it" in run.data.tags[FAILURE_TAG]
    assert client.get_run(live_trial).info.status == "RUNNING"
    assert client.get_run(ctx.parent_run_id).info.status == "RUNNING"
    client.set_terminated(live_trial)
    client.set_terminated(ctx.parent_run_id)


def test_close_sweep_closes_only_this_drivers_trials(sqlite_server):
    """A failed driver closes its parent and the trial runs its own trials left RUNNING (a
    worker killed on its last retry); a second driver's live trial run is left alone."""
    uri = sqlite_server.url
    config = parse_config(smoke_raw(uri, "drv-close"))
    ctx = open_sweep(config)
    other = SweepContext(**{**ctx.to_dict(), "driver": "elsewhere:1"})

    def trial(owner: SweepContext) -> str:
        return start_run(
            ctx.session,
            parent_run_id=ctx.parent_run_id,
            tags={TAGS.role: ROLES.trial, TAGS.sweep: ctx.sweep, TAGS.driver: owner.driver},
        )

    mine, theirs = trial(ctx), trial(other)
    close_sweep(ctx, "1 trial(s) failed after retries; last error: worker died")
    client = tracking_client(uri)
    parent = client.get_run(ctx.parent_run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags[FAILURE_TAG].endswith("last error: worker died")
    assert client.get_run(mine).info.status == "FAILED"
    assert "sweep driver ended" in client.get_run(mine).data.tags[FAILURE_TAG]
    assert client.get_run(theirs).info.status == "RUNNING"
    assert find_runs_by_tag(ctx.session, TAGS.driver, ctx.driver, status="RUNNING") == []


# --- a stub server that answers every request with one error -------------------------------

ANSWERS = {
    "forbidden": (403, "text/plain", "Permission denied"),
    "read-only": (
        500,
        "text/html",
        "<html><title>500</title><p>[Errno 30] Read-only file system: '/srv/a/1'</p></html>",
    ),
    "db-full": (
        503,
        "application/json",
        json.dumps(
            {
                "error_code": "TEMPORARILY_UNAVAILABLE",
                "message": "(sqlite3.OperationalError) database or disk is full",
            }
        ),
    ),
    "flaky": (503, "text/plain", "upstream restarting"),
}


@pytest.fixture(scope="module")
def stub() -> Iterator[ThreadingHTTPServer]:
    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.server.hits += 1
            code, kind, body = ANSWERS[self.server.mode]
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        do_GET = do_POST = do_PUT = answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("mode", "requests", "says", "retryable"),
    [
        ("forbidden", 1, "HTTP 403: Permission denied", False),
        ("read-only", 3, "HTTP 500: 500 [Errno 30] Read-only file system: '/srv/a/1'", False),
        (
            "db-full",
            3,
            "HTTP 503: TEMPORARILY_UNAVAILABLE: (sqlite3.OperationalError) database "
            "or disk is full (its storage is full or read-only",
            False,
        ),  # fmt: skip
        ("flaky", 3, "HTTP 503: upstream restarting", True),
    ],
)
def test_refused_request_is_named_by_status_and_server_text(
    stub, monkeypatch, capsys, mode, requests, says, retryable
):
    """A 4xx is not retried; a 5xx is retried (tracking.http_max_retries=2), then the job's one
    line gives the HTTP status and the server's own error text, never "after the retry
    budget"; refusals and full or read-only stores are marked not retryable (a trial that
    meets one does not spend Tune's retries)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    stub.mode, stub.hits = mode, 0
    url = f"http://127.0.0.1:{stub.server_port}"
    rc = run_job("sweep", lambda: tracking_client(url).get_experiment_by_name("x") and 0)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"sweep: error: the MLflow tracking server answered {says}")
    assert "retry budget" not in err[0]
    assert stub.hits == requests
    with pytest.raises(Exception) as caught:
        tracking_client(url).get_experiment_by_name("x")
    assert request_error(caught.value)[1] is retryable
    assert (
        sweep_job._non_retryable(caught.value, TrackingSession.for_uri(url)) is None
    ) is retryable


def test_unreachable_server_is_retryable_and_says_so():
    """No server at all: the line says the retry budget ran out (worth a resume), and a
    trial meeting it is retried; bad input in a trial is never retried."""
    from mlflow.exceptions import MlflowException

    line, retryable = request_error(
        MlflowException("API request to http://h:1/x failed with exception Max retries exceeded")
    )
    assert retryable and "after the retry budget" in line
    assert (
        sweep_job._non_retryable(DeeppertError("bad input"), TrackingSession.for_uri("http://h:1"))
        == "bad input"
    )
    assert request_error(ValueError("not a request")) is None


@pytest.mark.ray
@pytest.mark.slow
def test_a_trial_that_cannot_succeed_is_not_retried(sqlite_server, tmp_path):
    """A trial failing with bad input (here: training diverges at a huge learning rate) fails
    the same way on every retry: the sweep stops after one attempt per point instead of
    spending sweep.max_failures=2 retries, with one line naming the cause, and every run it
    opened ends FAILED with that cause. (Both points may start together, on 2 CPUs.)"""
    uri = sqlite_server.url
    raw = tiny_sweep(uri, "drv-fatal", runs=2, epochs=5, sweep={"max_failures": 2})
    raw["train"]["lr_max"] = 1.0e30
    (tmp_path / "fatal.yaml").write_text(yaml.safe_dump(raw))
    driver = Driver(tmp_path / "fatal.yaml", uri, tmp_path, "fatal")
    code = driver.wait(240)
    lines = driver.stderr_lines()
    parents, trials = sweep_runs(uri, "drv-fatal", sweep_name(parse_config(raw)))
    print(f"\nMEASURE diverging trial: exit {code}, {len(trials)} trial run(s), {lines[-1]}")
    assert code == 2, driver.output()
    assert lines[-1].startswith("sweep: error: sweep drv-fatal-"), lines[-5:]
    assert "a trial failed: " in lines[-1] and "loss became non-finite" in lines[-1]
    keys = Counter(r.data.tags[TAGS.grid_key] for r in trials)
    assert keys and set(keys.values()) == {1}  # no point retried (max_failures=2 allows 3 tries)
    assert [r.info.status for r in parents] == ["FAILED"]
    assert "loss became non-finite" in parents[0].data.tags[FAILURE_TAG]
    for trial in trials:
        assert trial.info.status == "FAILED"
        assert "loss became non-finite" in trial.data.tags[FAILURE_TAG]


@pytest.mark.ray
@pytest.mark.slow
def test_sigterm_after_ray_is_joined_fails_the_parent_and_its_trials(sqlite_server, tmp_path):
    """`ray job stop` sends SIGTERM to a driver that is running Tune: it ends with one line and
    exit 143, and the parent and the trial it was training end FAILED naming the signal
    (``ray.init`` installs a handler that would abort the driver mid-Tune; ours is re-armed)."""
    import signal
    import time

    from sweep_driver import trial_training

    uri = sqlite_server.url
    raw = tiny_sweep(uri, "drv-term", runs=1, epochs=100000)
    (tmp_path / "term.yaml").write_text(yaml.safe_dump(raw))
    sweep = sweep_name(parse_config(raw))
    driver = Driver(tmp_path / "term.yaml", uri, tmp_path, "term")
    try:
        deadline = time.monotonic() + 200
        while not trial_training(uri, "drv-term", sweep):
            assert driver.proc.poll() is None, driver.output()
            assert time.monotonic() < deadline, driver.output()
            time.sleep(1)
        driver.proc.send_signal(signal.SIGTERM)
        code = driver.proc.wait(120)
    finally:
        driver.kill()
    parents, trials = sweep_runs(uri, "drv-term", sweep)
    lines = driver.stderr_lines()
    print(f"\nMEASURE SIGTERM mid-Tune: exit {code}, last line {lines[-1] if lines else None!r}")
    assert code == 143, driver.output()
    assert lines[-1] == "sweep: terminated (SIGTERM)", lines[-5:]
    assert [r.info.status for r in parents] == ["FAILED"]
    assert parents[0].data.tags[FAILURE_TAG] == "sweep driver terminated (SIGTERM)"
    assert trials and {t.info.status for t in trials} == {"FAILED"}
    # the default log is the driver's own lines: no Tune console box, no torch warning
    output = driver.output(10**6)
    assert "Configuration for experiment" not in output and "TensorBoard" not in output
    assert "not writable" not in output
