"""``make demo``: the whole platform end to end on this machine, then where to look.

1. ``deeppert synth``: synthetic signatures with planted gene programs + known target pairs.
2. An MLflow tracking server (embedded SQLite, served artifacts) under ``demo_out/mlflow``.
3. A local Ray head node; then, each with ``ray job submit``:
   the sweep (``ray_jobs/sweep.py``), the ensemble job, the target-combination job.
4. A summary table read back from MLflow; everything started is stopped again.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from deeppert.cluster import job_env, start_ray_head, stop_group, submit_command
from deeppert.config import load_config
from deeppert.data.synthetic import SynthConfig, make_synthetic, write_synthetic
from deeppert.errors import DeeppertError
from deeppert.tracking.client import tracking_client, ui_url
from deeppert.tracking.contract import ROLES, TAGS
from deeppert.tracking.server import ServerConfig, TrackingServer, free_port

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "demo_out"
CONFIG = REPO / "configs" / "demo.yaml"
DISEASE = SynthConfig().disease

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


def _summary(uri: str, experiment: str) -> pd.DataFrame:
    client = tracking_client(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs(
        [exp.experiment_id],
        f"tags.`{TAGS.role}` = '{ROLES.trial}' and attributes.status = 'FINISHED'",
    )
    rows = [
        {
            "model": r.data.tags[TAGS.model],
            "latent_dim": int(r.data.tags[TAGS.latent_dim]),
            "run": int(r.data.tags[TAGS.run]),
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
    # Venv first on PATH (the jobs' `python`), Ray token auth off for head and client alike
    # (the head listens on 127.0.0.1 only); see deeppert.cluster.
    env = job_env()
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
        log.info("step 3/5: local Ray head node on free ports (deeppert.cluster)")
        head, address = start_ray_head(OUT, num_cpus=2, cwd=REPO)
        log.info("Ray job server at %s", address)

        def submit(*entrypoint: str) -> list[str]:
            return submit_command(address, list(entrypoint))

        common = ["--config", str(job_config), "--tracking-uri", uri]
        log.info("step 4/5: sweep, ensemble and target-combination jobs via `ray job submit`")
        _submit(submit("python", "ray_jobs/sweep.py", *common), env=env)
        _submit(submit("python", "ray_jobs/ensemble.py", *common), env=env)
        _submit(
            submit(
                "python",
                "ray_jobs/targets.py",
                *common,
                "--disease",
                DISEASE,
                "--pairs-dir",
                str(OUT / "synth" / "target_pairs"),
                "--out",
                str(OUT / "targets"),
            ),
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
            stop_group(head.pid)
        server.stop()
    print(f"\nDemo finished in {time.time() - start:.0f} s. Where to look:")
    print(
        f"  MLflow UI:        deeppert server --data-dir {OUT / 'mlflow'} --port {port}  then open "
        f"{ui_url(f'http://127.0.0.1:{port}')}"
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
