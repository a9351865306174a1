"""Tracking-server and database outages during a real sweep (real processes, no mocks).

- Beyond the retry budget (``tracking.http_max_retries`` set tiny): the driver ends with one
  ``sweep: error:`` line and exit 2, no traceback; after the server is back the same command
  resumes, the dead attempt is marked FAILED with its reason, one FINISHED run per point.
- Within it: a 20 s server outage and a PostgreSQL restart mid-sweep lose nothing: one
  FINISHED run per point with every epoch row. The PostgreSQL restarted is the test's own
  cluster (``private_postgres``), never the machine's.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from sweep_driver import (
    Driver,
    by_status,
    finished_per_key,
    sweep_runs,
    tiny_sweep,
    trial_training,
    wait_for,
)

from deeppert.config import parse_config
from deeppert.tracking.client import FAILURE_TAG, tracking_client
from deeppert.tracking.server import ServerConfig, TrackingServer, free_port
from deeppert.tracking.sweep import TAGS, grid_key, sweep_name

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow, pytest.mark.timeout(900)]


def write_config(tmp: Path, raw: dict) -> tuple[Path, str]:
    path = tmp / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, sweep_name(parse_config(raw))


def epoch_rows(uri: str, trials: list) -> dict[str, int]:
    client = tracking_client(uri)
    return {
        r.data.tags[TAGS.grid_key]: len(client.get_metric_history(r.info.run_id, "loss"))
        for r in trials
        if r.info.status == "FINISHED"
    }


def check_every_epoch_back(
    uri: str, experiment: str, sweep: str, driver: Driver, epochs: int, what: str
) -> None:
    """The driver of a 2-run sweep that lived through ``what`` exits 0, with one FINISHED run
    per grid point holding every epoch's loss row."""
    code = driver.wait(600)
    _, trials = sweep_runs(uri, experiment, sweep)
    rows = epoch_rows(uri, trials)
    print(f"\nMEASURE {what}: exit {code}; runs {by_status(trials)}; loss rows per point {rows}")
    assert code == 0, driver.output()
    keys = {grid_key("SYN1", "AE", 3, r) for r in range(2)}
    assert finished_per_key(trials) == {k: 1 for k in keys}
    assert rows == {k: epochs for k in keys}


def test_outage_beyond_the_retry_budget_ends_in_one_line_and_resumes(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "srv", free_port()
    server = TrackingServer(ServerConfig(data_dir=str(data_dir), port=port)).start()
    uri = server.url
    epochs = 60
    raw = tiny_sweep(
        uri,
        "outage",
        runs=1,
        epochs=epochs,
        sweep={"heartbeat_seconds": 2, "claim_stale_seconds": 10},
        tracking={"http_max_retries": 1, "http_backoff_factor": 1, "http_timeout": 5},
    )
    config_path, sweep = write_config(tmp_path, raw)
    driver = Driver(config_path, uri, tmp_path, "down")
    try:
        wait_for(
            lambda: trial_training(uri, "outage", sweep) or driver.proc.poll() is not None,
            300,
            "the trial to train",
        )
        assert driver.proc.poll() is None, driver.output()
        server.stop()  # and it stays down until the driver has given up
        t0 = time.monotonic()
        code = driver.wait(600)
        gave_up_s = time.monotonic() - t0
    finally:
        driver.kill()
    lines = driver.stderr_lines()
    server = TrackingServer(ServerConfig(data_dir=str(data_dir), port=port)).start()
    try:
        parents, trials = sweep_runs(uri, "outage", sweep)
        statuses_back = (parents[0].info.status, by_status(trials))
        resume = Driver(config_path, uri, tmp_path, "resume")
        resume_code = resume.wait(600)
        parents, trials = sweep_runs(uri, "outage", sweep)
        print(
            f"\nMEASURE outage beyond the budget: driver exit {code} {gave_up_s:.0f}s after the "
            f"server stopped; last line: {lines[-1] if lines else ''}\nMEASURE server back, "
            f"before resume: parent {statuses_back[0]}, trials {statuses_back[1]}\nMEASURE "
            f"after resume (exit {resume_code}): parent {parents[0].info.status} "
            f"({parents[0].data.tags.get(FAILURE_TAG)}), trials {by_status(trials)}, "
            f"reasons {[r.data.tags.get(FAILURE_TAG) for r in trials if r.info.status == 'FAILED']}"
        )
        assert code == 2, driver.output()
        assert lines[-1].startswith("sweep: error: sweep "), lines[-5:]
        assert "unreachable beyond the retry budget (tracking.http_max_retries=1" in lines[-1]
        assert not any("Traceback" in ln for ln in lines[-3:]), lines[-10:]
        assert resume_code == 0, resume.output()
        key = grid_key("SYN1", "AE", 3, 0)
        assert finished_per_key(trials) == {key: 1}
        assert epoch_rows(uri, trials) == {key: epochs}
        failed = [r for r in trials if r.info.status == "FAILED"]
        assert failed and all("superseded by a retry" in r.data.tags[FAILURE_TAG] for r in failed)
        assert not [r for r in trials if r.info.status == "RUNNING"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert "ended without closing the sweep" in parents[0].data.tags[FAILURE_TAG]
    finally:
        server.stop()


def test_server_down_20s_mid_sweep_loses_no_epoch(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "srv", free_port()
    server = TrackingServer(ServerConfig(data_dir=str(data_dir), port=port)).start()
    uri, epochs = server.url, 60
    config_path, sweep = write_config(tmp_path, tiny_sweep(uri, "blip", runs=2, epochs=epochs))
    driver = Driver(config_path, uri, tmp_path, "blip")
    try:
        wait_for(lambda: trial_training(uri, "blip", sweep), 300, "a trial to train")
        server.stop()
        time.sleep(20)
        server = TrackingServer(ServerConfig(data_dir=str(data_dir), port=port)).start()
        check_every_epoch_back(uri, "blip", sweep, driver, epochs, "20 s server outage")
    finally:
        driver.kill()
        server.stop()


@pytest.mark.postgres
def test_postgres_restart_mid_sweep_loses_no_epoch(private_postgres, tmp_path: Path) -> None:
    """Restarts the test's own PostgreSQL cluster (fast shutdown, start) while a trial trains."""
    backend = private_postgres.uri.rsplit("/", 1)[0] + "/deeppert_pgrestart"
    server = TrackingServer(
        ServerConfig(data_dir=str(tmp_path / "srv"), port=0, backend_store_uri=backend)
    ).start()
    uri, epochs = server.url, 60
    config_path, sweep = write_config(tmp_path, tiny_sweep(uri, "pgr", runs=2, epochs=epochs))
    driver = Driver(config_path, uri, tmp_path, "pgr")
    try:
        wait_for(lambda: trial_training(uri, "pgr", sweep), 300, "a trial to train")
        private_postgres.restart()
        check_every_epoch_back(uri, "pgr", sweep, driver, epochs, "PostgreSQL restart mid-sweep")
    finally:
        driver.kill()
        server.stop()
