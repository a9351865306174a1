"""``make demo``: the whole platform end to end on this machine, then where to look.

1. ``deeppert synth``: synthetic signatures with planted gene programs + known target pairs.
2. An MLflow tracking server (embedded SQLite, served artifacts) under ``demo_out/mlflow``.
3. A local Ray head node; then, each with ``ray job submit``:
   the sweep (``ray_jobs/sweep.py``), the ensemble job, the target-combination job.
4. A summary table read back from MLflow; everything started is stopped again.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import requests
import yaml

from deeppert.config import load_config
from deeppert.data.synthetic import SynthConfig, make_synthetic, write_synthetic
from deeppert.errors import DeeppertError
from deeppert.tracking.client import tracking_client
from deeppert.tracking.server import ServerConfig, TrackingServer, free_port

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "demo_out"
CONFIG = REPO / "configs" / "demo.yaml"
DISEASE = SynthConfig().disease
_PORT_FLAGS = (
    "--port",
    "--object-manager-port",
    "--node-manager-port",
    "--ray-client-server-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)

log = logging.getLogger("deeppert.demo")


def _submit(cmd: list[str], *, env: dict, attempts: int = 20) -> None:
    """``ray job submit``, streamed; retried while the fresh head's job agent is not up yet."""
    for attempt in range(1, attempts + 1):
        log.info("$ %s", " ".join(cmd))
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        tail: list[str] = []
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail = (tail + [line])[-20:]
        if proc.wait() == 0:
            return
        if "No available agent" not in "".join(tail) or attempt == attempts:
            raise subprocess.CalledProcessError(proc.returncode, cmd)
        log.info("Ray's job agent is still starting; retrying in 5 s")
        time.sleep(5)


def _wait_for_dashboard(port: int, head: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if head.poll() is not None:
            raise DeeppertError(
                f"Ray head exited with code {head.returncode}; see {OUT / 'ray_head.log'}"
            )
        try:
            if requests.get(f"http://127.0.0.1:{port}/api/version", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise DeeppertError(f"Ray dashboard did not answer on port {port} within {timeout:.0f} s")


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (head, raylet, GCS, dashboard), SIGKILL it after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _summary(uri: str, experiment: str) -> pd.DataFrame:
    client = tracking_client(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs(
        [exp.experiment_id], "tags.`deeppert.role` = 'trial' and attributes.status = 'FINISHED'"
    )
    rows = [
        {
            "model": r.data.tags["deeppert.model"],
            "latent_dim": int(r.data.tags["deeppert.latent_dim"]),
            "run": int(r.data.tags["deeppert.run"]),
            "r2_pca": r.data.metrics.get("r2_pca"),
            "r2_genes": r.data.metrics.get("r2_genes"),
        }
        for r in runs
    ]
    return (
        pd.DataFrame(rows)
        .groupby(["model", "latent_dim"])
        .agg(runs=("run", "count"), r2_pca=("r2_pca", "mean"), r2_genes=("r2_genes", "mean"))
    )


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    start = time.time()
    # SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C, so the finally block stops what we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        # The demo's Ray head listens on 127.0.0.1 only. Token authentication (switched on by
        # default for local clusters once ~/.ray/auth_token exists) is turned off explicitly for
        # head and client alike, so the two agree; a shared cluster should use RAY_AUTH_MODE=token.
        "RAY_AUTH_MODE": "disabled",
    }
    config = load_config(CONFIG)
    shutil.rmtree(OUT, ignore_errors=True)

    log.info("step 1/5: synthetic data with planted programs -> %s", OUT / "synth")
    synth = make_synthetic(SynthConfig(n_samples=2000, n_programs=5, seed=0))
    write_synthetic(synth, OUT / "synth")
    # Jobs run in an uploaded copy of the repo without demo_out/ (.rayignore), so the config
    # they read names the data by absolute path (on a cluster: a shared file system).
    raw = yaml.safe_load(CONFIG.read_text())
    raw["datasets"][0]["path"] = str(OUT / "synth" / "signatures.parquet")
    job_config = OUT / "demo.yaml"
    job_config.write_text(yaml.safe_dump(raw, sort_keys=False))

    port = free_port()
    server = TrackingServer(ServerConfig(data_dir=str(OUT / "mlflow"), port=port))
    head: subprocess.Popen | None = None
    try:
        log.info("step 2/5: MLflow tracking server (SQLite, served artifacts)")
        server.start()
        uri = server.url
        dash_port = free_port()
        log.info("step 3/5: local Ray head node (dashboard on 127.0.0.1:%d)", dash_port)
        # --block keeps the head in the foreground of its own process group, so the demo stops
        # exactly the cluster it started (`ray stop` would stop every Ray on the machine).
        # Explicit ports: the GCS default, 6379, is Redis's, often taken on a dev machine.
        head_cmd = [
            "ray",
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            "2",
            "--include-dashboard",
            "true",
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dash_port),
            # Every other fixed default port too: a second Ray on the machine (a test run, a
            # notebook) would otherwise hold the job agent's port and submissions would hang.
            *[arg for flag in _PORT_FLAGS for arg in (flag, str(free_port()))],
            "--disable-usage-stats",
        ]
        log.info("$ %s", " ".join(head_cmd))
        head = subprocess.Popen(
            head_cmd,
            cwd=REPO,
            env=env,
            start_new_session=True,
            stdout=(OUT / "ray_head.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        _wait_for_dashboard(dash_port, head)
        submit = [
            "ray",
            "job",
            "submit",
            "--address",
            f"http://127.0.0.1:{dash_port}",
            "--working-dir",
            ".",
            "--",
        ]
        common = ["--config", str(job_config), "--tracking-uri", uri]
        log.info("step 4/5: sweep, ensemble and target-combination jobs via `ray job submit`")
        _submit([*submit, "python", "ray_jobs/sweep.py", *common], env=env)
        _submit([*submit, "python", "ray_jobs/ensemble.py", *common], env=env)
        _submit(
            [
                *submit,
                "python",
                "ray_jobs/targets.py",
                *common,
                "--disease",
                DISEASE,
                "--pairs-dir",
                str(OUT / "synth" / "target_pairs"),
                "--out",
                str(OUT / "targets"),
            ],
            env=env,
        )

        log.info("step 5/5: summary read back from MLflow")
        table = _summary(uri, config.tracking.experiment)
        stats = pd.read_csv(OUT / "targets" / "match_statistics.csv")
        significance = OUT / "targets" / "match_significance.csv"
        print("\n== held-out reconstruction R^2 per model (mean over runs) ==")
        print(table.round(3).to_string())
        print(f"\n== target combination for {DISEASE!r} (planted pairs) ==")
        print(stats.to_string(index=False))
        if significance.exists():
            print(pd.read_csv(significance).round(4).to_string(index=False))
    except (DeeppertError, subprocess.CalledProcessError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if head is not None:
            _stop_group(head)
        server.stop()
    print(f"\nDemo finished in {time.time() - start:.0f} s. Where to look:")
    print(
        f"  MLflow UI:        deeppert server --data-dir {OUT / 'mlflow'} --port {port}  then open http://127.0.0.1:{port}"
    )
    print(
        f"                    (runs under experiment '{config.tracking.experiment}'; models SYN1-encoder-<MODEL>-d<dim>@best, SYN1-ensemble@current)"
    )
    print(
        f"  target outputs:   {OUT / 'targets'} (target_combinations.csv, match_statistics.csv, heatmap, match-rate plot)"
    )
    print(f"  synthetic truth:  {OUT / 'synth' / 'ground_truth'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
