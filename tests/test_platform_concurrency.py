"""Two identical sweeps submitted at once, and one started while the other trains.

Each scenario runs two real ``ray_jobs/sweep.py`` drivers (each with its own local Ray, its
own ``RAY_TMPDIR``) against one real MLflow server, on a 2-point grid. Afterwards the store
must hold what one sweep would have written: one parent run, exactly one FINISHED trial run
per grid point, no run marked FAILED (nobody died), one encoder version per point, and the
ensemble job must build from them. Before grid-point claims (heartbeat tag) and the
oldest-parent election, on this machine: submitted together -> 2 parent runs and one driver
crashed (exit 1); staggered -> 2 FINISHED runs per point, 4 encoder versions, the ensemble job
exit 1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sweep_driver import (
    Driver,
    by_status,
    encoder_versions,
    finished_per_key,
    sweep_runs,
    tiny_sweep,
    wait_for,
)

from deeppert.config import parse_config
from deeppert.tracking.client import tracking_client
from deeppert.tracking.server import ServerConfig, TrackingServer
from deeppert.tracking.sweep import TAGS, grid_key, sweep_name

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 60
KEYS = {grid_key("SYN1", "AE", 3, r) for r in range(2)}
WAIT_LINE = "trained by a live attempt elsewhere; waiting"


def training_run(uri: str, experiment: str, sweep: str):
    """A RUNNING trial run of ``sweep`` that has logged an epoch, or ``None``."""
    client = tracking_client(uri)
    for run in sweep_runs(uri, experiment, sweep)[1]:
        if run.info.status == "RUNNING" and client.get_metric_history(run.info.run_id, "loss"):
            return run
    return None


def run_ensemble(config_path: Path, uri: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "ray_jobs/ensemble.py", "--config", str(config_path), "--tracking-uri", uri],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with TrackingServer(
        ServerConfig(data_dir=str(tmp_path_factory.mktemp("mlflow")), port=0)
    ) as srv:
        yield srv


def scenario(server: TrackingServer, tmp: Path, experiment: str, *, staggered: bool) -> dict:
    # claim_stale_seconds is long so that pausing the first sweep's worker (below) keeps its
    # claim live; sweep settings are outside the config hash, so both drivers run one sweep.
    # heartbeat_seconds 2 (default 10): a driver waiting on the other's live run polls every
    # 2 s instead of 5 s, so it sees that run finish sooner.
    raw = tiny_sweep(
        server.url,
        experiment,
        runs=2,
        epochs=EPOCHS,
        sweep={"max_concurrent_trials": 1, "claim_stale_seconds": 400, "heartbeat_seconds": 2},
    )
    raw["name"] = f"concurrent-{experiment}"  # its own sweep tag in the server-wide registry
    sweep = sweep_name(parse_config(raw))
    config_path = tmp / f"{experiment}.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    t0 = time.perf_counter()
    first = Driver(config_path, server.url, tmp, "a")
    second = None
    try:
        if not staggered:
            second = Driver(config_path, server.url, tmp, "b")
        else:
            # Start the second sweep while the first trains. On a loaded machine the second
            # driver needs minutes to get its trials going; the first one's worker is paused
            # (SIGSTOP) meanwhile, so the overlap is certain, not a race: it resumes once the
            # second sweep has met its live run (waits, or, before claims, took it over).
            victim = wait_for(
                lambda: training_run(server.url, experiment, sweep) or first.proc.poll(),
                300,
                "the first sweep to train",
            )
            assert first.proc.poll() is None, first.output()
            pid = int(victim.data.tags[TAGS.worker].rsplit(":", 1)[1])
            key = victim.data.tags[TAGS.grid_key]
            os.kill(pid, signal.SIGSTOP)
            try:
                # --verbose: the wait line is a trial's INFO line, out of a quiet driver's log
                second = Driver(config_path, server.url, tmp, "b", verbose=True)
                wait_for(
                    lambda: (
                        WAIT_LINE in second.output(10**7)
                        or len([r for r in sweep_runs(server.url, experiment, sweep)[1]
                                if r.data.tags[TAGS.grid_key] == key]) > 1
                        or tracking_client(server.url).get_run(victim.info.run_id).info.status
                        != "RUNNING"
                        or second.proc.poll() is not None
                    ),
                    360,
                    "the second sweep to meet the first one's live run",
                )  # fmt: skip
            finally:
                os.kill(pid, signal.SIGCONT)
        codes = (first.wait(600), second.wait(600))
    finally:
        for d in (first, second):
            if d is not None:
                d.kill()
    parents, trials = sweep_runs(server.url, experiment, sweep)
    return {
        "parents": parents,
        "trials": trials,
        "by_status": by_status(trials),
        "finished": finished_per_key(trials),
        "versions": encoder_versions(server.url, "SYN1", sweep),
        "codes": codes,
        "seconds": time.perf_counter() - t0,
        "logs": (first.output(), second.output()),
        "waited": WAIT_LINE in second.output(10**7),
        "ensemble": run_ensemble(config_path, server.url),
    }


def check(result: dict, label: str) -> None:
    print(
        f"\nMEASURE {label}: drivers exit {result['codes']} in {result['seconds']:.0f}s; parents "
        f"{len(result['parents'])}; runs per (grid point, status) {result['by_status']}; encoder "
        f"versions {result['versions']}; ensemble exit {result['ensemble'].returncode}; second "
        f"driver waited for a live run: {result['waited']}"
    )
    assert result["codes"] == (0, 0), result["logs"]
    assert len(result["parents"]) == 1
    assert result["finished"] == {k: 1 for k in KEYS}
    assert not [r for r in result["trials"] if r.info.status != "FINISHED"], result["by_status"]
    assert len(result["versions"]) == len(KEYS)
    ens = result["ensemble"]
    assert ens.returncode == 0, (ens.stdout + ens.stderr)[-3000:]


def test_two_sweeps_submitted_together_leave_one_run_per_point(server, tmp_path) -> None:
    check(scenario(server, tmp_path, "together", staggered=False), "submitted together")


def test_sweep_started_while_another_trains_waits_and_marks_nothing_failed(
    server, tmp_path
) -> None:
    result = scenario(server, tmp_path, "staggered", staggered=True)
    check(result, "staggered")
    assert result["waited"], "the second sweep should have waited for the first one's live run"
