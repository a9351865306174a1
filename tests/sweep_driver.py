"""Helpers for tests that run real ``ray_jobs/sweep.py`` drivers against a real MLflow server.

Imported by the reliability tests (``from sweep_driver import ...``; pytest puts ``tests/``
on ``sys.path``). Each driver runs as its own process group with a private local Ray
(``RAY_TMPDIR``), so tests can start several at once and clean each one up alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

from deeppert.tracking.client import find_runs_by_tag, tracking_client
from deeppert.tracking.contract import TAGS, VERSION_TAGS, encoder_model_prefix
from deeppert.tracking.session import TrackingSession

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


def tiny_sweep(uri: str, experiment: str, *, runs: int, epochs: int, **sections) -> dict:
    """A 1-model x 1-dim x ``runs`` grid on the smoke data; ``sections`` update the raw config
    (``sweep={...}``, ``tracking={...}`` merge into the defaults given here)."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw["name"] = experiment
    raw["grid"] = {"models": ["AE"], "latent_dims": [3], "runs": runs, "baselines": False}
    raw["train"] = {**raw.get("train", {}), "epochs": epochs}
    raw["sweep"] = {"cpus_per_trial": 0.5, "seeds_per_trial": 1, "max_failures": 1}
    raw["sweep"].update(sections.pop("sweep", {}))
    raw["tracking"] = {"uri": uri, "experiment": experiment, **sections.pop("tracking", {})}
    # the default ensemble (consensus): on the smoke data's Gaussian programs its varimax
    # components recur across the two runs of one shape
    raw["ensemble"] = sections.pop("ensemble", {})
    raw.update(sections)
    return raw


class Driver:
    """One ``ray_jobs/sweep.py`` process (own session, own local Ray)."""

    def __init__(
        self, config_path: Path, uri: str, tmp: Path, name: str, *, verbose: bool = False
    ) -> None:
        """``verbose``: ``--verbose``, so the trials' INFO lines (a claim waited for) reach
        the driver's log."""
        self.ray_tmp = tempfile.mkdtemp(prefix=f"ray{name}", dir="/tmp")  # short socket paths
        self.log = tmp / f"{name}.log"
        env = {**os.environ, "RAY_ADDRESS": "local", "RAY_TMPDIR": self.ray_tmp}
        command = [sys.executable, "ray_jobs/sweep.py", "--config", str(config_path)]
        command += ["--tracking-uri", uri, "--storage-path", str(tmp / f"tune-{name}")]
        command += ["--verbose"] * verbose
        with self.log.open("w") as out, (tmp / f"{name}.err").open("w") as err:
            self.proc = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True
            )
        self.err = tmp / f"{name}.err"

    def wait(self, timeout: float) -> int:
        """Exit code; on timeout (or after exit) the driver's group and Ray are killed."""
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        for pid, _ in ray_processes(self.ray_tmp):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.ray_tmp, ignore_errors=True)

    def output(self, chars: int = 3000) -> str:
        return (self.log.read_text() + self.err.read_text())[-chars:]

    def stderr_lines(self) -> list[str]:
        return [ln for ln in self.err.read_text().splitlines() if ln.strip()]


def ray_processes(marker: str) -> list[tuple[int, str]]:
    """Live (pid, cmdline) of processes whose command line mentions ``marker`` (a driver's
    private RAY_TMPDIR)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z":
            found.append((int(entry.name), cmd[:120]))
    return found


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def sweep_runs(uri: str, experiment: str, sweep: str) -> tuple[list, list]:
    """(parent runs, trial runs) of ``sweep``, any status; empty before the experiment exists."""
    exp = tracking_client(uri).get_experiment_by_name(experiment)
    if exp is None:
        return [], []
    session = TrackingSession.for_uri(uri, experiment_id=exp.experiment_id)
    runs = find_runs_by_tag(session, TAGS.sweep, sweep)
    return (
        [r for r in runs if r.data.tags.get(TAGS.role) == "sweep"],
        [r for r in runs if r.data.tags.get(TAGS.role) == "trial"],
    )


def trial_training(uri: str, experiment: str, sweep: str) -> bool:
    """Whether some RUNNING trial of ``sweep`` has logged at least one epoch."""
    client = tracking_client(uri)
    for run in sweep_runs(uri, experiment, sweep)[1]:
        if run.info.status == "RUNNING" and client.get_metric_history(run.info.run_id, "loss"):
            return True
    return False


def by_status(trials: list) -> dict:
    """``{(grid key, status): count}``, sorted: the closing note's runs-per-point table."""
    return dict(
        sorted(Counter((r.data.tags[TAGS.grid_key], r.info.status) for r in trials).items())
    )


def finished_per_key(trials: list) -> Counter:
    return Counter(r.data.tags[TAGS.grid_key] for r in trials if r.info.status == "FINISHED")


def encoder_versions(uri: str, dataset: str, sweep: str) -> list[str]:
    """The sweep's registered encoder versions, as ``<name>/<version>`` (one name per shape)."""
    client = tracking_client(uri)
    prefix = encoder_model_prefix(dataset)
    return sorted(
        f"{v.name}/{v.version}"
        for v in client.search_model_versions(f"name LIKE '{prefix}%'")
        if v.name.startswith(prefix) and v.tags.get(VERSION_TAGS.sweep) == sweep
    )
