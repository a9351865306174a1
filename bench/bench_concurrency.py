"""Benchmark: N concurrent sweep trials (fractional CPUs) logging to one tracking server.

Starts a real ``mlflow server`` (PostgreSQL at 127.0.0.1:5432 in a fresh database, or
SQLite), a private local Ray with ``--cpus`` CPUs (2) and runs a sweep of N one-seed trials at
``cpus / N`` CPU each, all allowed at once. Reports:

* every per-epoch metric row counted back (N x 5 metrics x epochs), server 5xx and tracebacks;
* how many trial runs were open at once (overlap of their start/end times);
* requests per trial, from the server's access log (uvicorn logs one line per request),
  by endpoint;
* request latency p50 / p95 / max as the trials see it: each Ray worker process times
  MLflow's ``http_request`` (``worker_process_setup_hook``) into a JSON-lines file.

Per-epoch metrics go out as one ``log_batch`` per run and epoch (5 metrics per request).

Usage::

    python bench/bench_concurrency.py --trials 32 --backend postgres --epochs 5
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TIMING_ENV = "DEEPPERT_BENCH_TIMING_DIR"
PER_EPOCH = ("loss", "reconstruction", "kl", "beta", "lr")


def endpoint(path: str) -> str:
    """A request path with run / model / artifact ids folded, so requests group by kind."""
    path = re.sub(r"(/mlflow-artifacts/artifacts)/.*", r"\1/*", path)
    return re.sub(r"/m-[0-9a-f]{32}", "/<model>", path)


def install_timer() -> None:
    """Ray worker setup hook: time every MLflow REST call into ``$DEEPPERT_BENCH_TIMING_DIR``."""
    directory = os.environ.get(TIMING_ENV)
    if not directory:
        return
    from mlflow.utils import rest_utils

    original = rest_utils.http_request
    path = Path(directory) / f"{os.getpid()}.jsonl"

    def timed(host_creds, endpoint, method, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(host_creds, endpoint, method, *args, **kwargs)
        finally:
            with path.open("a") as f:
                f.write(json.dumps({"endpoint": endpoint, "method": method,
                                    "s": time.perf_counter() - t0}) + "\n")  # fmt: skip

    rest_utils.http_request = timed


@dataclass
class SweepRecord:
    """What one sweep left behind: its wall time, the server's access log over the sweep,
    its trial runs and how many per-epoch metric rows the server holds."""

    wall: float
    log_text: str
    trials: list
    rows: int


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's flags: trial count, epochs, tracking backend and results path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--out", default=str(RESULTS / "concurrency.json"))
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the private Ray")
    parser.add_argument("--server-workers", type=int, default=2, help="tracking server workers")
    return parser.parse_args(argv)


def sweep_grid(n: int) -> tuple[int, list[int]]:
    """Runs per shape and latent dims of an AE + VAE grid of exactly ``n`` one-seed trials."""
    runs = max(1, n // 8)
    dims = list(range(2, 2 + n // (2 * runs)))
    assert 2 * len(dims) * runs == n, "--trials must be a multiple of 8 (or 2, 4)"
    return runs, dims


def sweep_config(n: int, epochs: int, grid: tuple[int, list[int]], url: str, cpus: int = 2):
    """A sweep of ``n`` one-seed trials at ``cpus / n`` CPU each, all allowed at once, on a
    small synthetic data set, tracked at ``url``."""
    from deeppert.config import parse_config

    runs, dims = grid
    raw = {
        "name": f"conc{n}",
        "datasets": [{"name": "SYN1", "synthetic": {"n_samples": 300, "seed": 0}}],
        "preprocess": {"n_components": 10, "val_fraction": 0.1},
        "grid": {"models": ["AE", "VAE"], "latent_dims": dims, "runs": runs,
                 "baselines": False},
        "train": {"epochs": epochs, "batch_size": 128},
        "attribution": {"n_steps": 8},
        "sweep": {"cpus_per_trial": cpus / n, "seeds_per_trial": 1,
                  "max_concurrent_trials": n, "max_failures": 1},
        "tracking": {"uri": url, "experiment": f"conc{n}"},
    }  # fmt: skip
    return parse_config(raw)


def run_timed_sweep(server, config, tmp: Path, timing: Path, cpus: int = 2) -> SweepRecord:
    """Run the sweep on a private ``cpus``-CPU Ray whose workers time every MLflow request, then
    read back the server log written meanwhile and the trials' per-epoch metric rows."""
    import ray

    from deeppert.tracking.client import tracking_client
    from deeppert.tracking.sweep import TAGS, sweep_name
    from ray_jobs.sweep import run_sweep

    ray.init(
        num_cpus=cpus,
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "worker_process_setup_hook": "bench.bench_concurrency.install_timer",
            "env_vars": {TIMING_ENV: str(timing)},
        },
    )
    log_start = server.log_path.stat().st_size
    t0 = time.perf_counter()
    try:
        run_sweep(config, storage_path=str(tmp / "tune"))
    finally:
        wall = time.perf_counter() - t0
        ray.shutdown()
    with open(server.log_path, "rb") as f:
        f.seek(log_start)
        log_text = f.read().decode(errors="replace")
    client = tracking_client(server.url)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    all_runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{TAGS.sweep}` = '{sweep_name(config)}'",
    )
    trials = [r for r in all_runs if r.data.tags.get(TAGS.role) == "trial"]
    rows = sum(len(client.get_metric_history(r.info.run_id, m)) for r in trials for m in PER_EPOCH)
    return SweepRecord(wall=wall, log_text=log_text, trials=trials, rows=rows)


def sweep_against_server(
    args: argparse.Namespace, grid: tuple[int, list[int]], tmp: Path, timing: Path
) -> SweepRecord:
    """Start the tracking server (PostgreSQL in a fresh database, dropped afterwards, or
    SQLite) and run the sweep against it."""
    from deeppert.tracking.server import ServerConfig, TrackingServer, ensure_database

    db_name = f"deeppert_bench_{uuid.uuid4().hex[:8]}"
    backend = None
    if args.backend == "postgres":
        backend = args.postgres.rsplit("/", 1)[0] + f"/{db_name}"
        ensure_database(backend)
    try:
        with TrackingServer(
            ServerConfig(
                data_dir=str(tmp / "server"),
                backend_store_uri=backend,
                port=0,
                workers=args.server_workers,
            )
        ) as server:
            config = sweep_config(args.trials, args.epochs, grid, server.url, args.cpus)
            return run_timed_sweep(server, config, tmp, timing, args.cpus)
    finally:
        if backend is not None:
            import psycopg2

            conn = psycopg2.connect(args.postgres)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            conn.close()


def max_open_at_once(trials: list) -> int:
    """How many trial runs were open at once: the peak overlap of their start/end times."""
    events = sorted(
        [(r.info.start_time, 1) for r in trials] + [(r.info.end_time, -1) for r in trials]
    )
    live = overlap = 0
    for _, step in events:
        live += step
        overlap = max(overlap, live)
    return overlap


def summarise(args: argparse.Namespace, sweep: SweepRecord, timing: Path) -> dict:
    """The results JSON: rows counted back, server requests and errors from its access log,
    and the request latencies the trials timed."""
    import numpy as np

    n = args.trials
    requests = re.findall(
        r'"(GET|POST|PATCH|DELETE|PUT) (\S+?)(?:\?\S*)? HTTP/1\.1" (\d{3})', sweep.log_text
    )
    by_endpoint = collections.Counter(endpoint(path) for _, path, _ in requests)
    errors_5xx = sum(1 for *_, code in requests if code.startswith("5"))
    durations, timed_by_endpoint = [], collections.defaultdict(list)
    for file in timing.glob("*.jsonl"):
        for line in file.read_text().splitlines():
            rec = json.loads(line)
            durations.append(rec["s"])
            timed_by_endpoint[endpoint(rec["endpoint"])].append(rec["s"])
    ms = np.asarray(durations) * 1000
    return {
        "benchmark": f"{n} concurrent sweep trials logging to one MLflow server",
        "backend": args.backend,
        "machine": f"{os.cpu_count()}-core CPU, load average {os.getloadavg()[0]:.1f}",
        "trials": n,
        "cpus_per_trial": args.cpus / n,
        "epochs": args.epochs,
        "wall_s": round(sweep.wall, 1),
        "trial_runs": len(sweep.trials),
        "finished": sum(r.info.status == "FINISHED" for r in sweep.trials),
        "max_open_at_once": max_open_at_once(sweep.trials),
        "per_epoch_metric_rows": sweep.rows,
        "per_epoch_metric_rows_expected": n * len(PER_EPOCH) * args.epochs,
        "server_requests": len(requests),
        "server_5xx": errors_5xx,
        "server_tracebacks": sweep.log_text.count("Traceback"),
        "requests_per_trial_server_log": round(len(requests) / n, 1),
        "requests_per_trial_timed_in_trials": round(len(durations) / n, 1),
        "per_epoch_log_batch_requests_per_trial": args.epochs,
        "per_metric_requests_per_trial_if_unbatched": args.epochs * len(PER_EPOCH),
        "latency_ms": {
            "count": int(ms.size),
            "p50": round(float(np.percentile(ms, 50)), 1) if ms.size else None,
            "p95": round(float(np.percentile(ms, 95)), 1) if ms.size else None,
            "max": round(float(ms.max()), 1) if ms.size else None,
        },
        "latency_p95_ms_by_endpoint": {
            k: round(float(np.percentile(np.asarray(v) * 1000, 95)), 1)
            for k, v in sorted(timed_by_endpoint.items())
        },
        "requests_by_endpoint": dict(by_endpoint.most_common()),
    }


def main(argv: list[str] | None = None) -> int:
    """Run N concurrent trials against one tracking server; write the results; 0 when every
    metric row arrived, no request failed with 5xx and every trial finished."""
    args = parse_args(argv)
    grid = sweep_grid(args.trials)
    tmp = Path(tempfile.mkdtemp(prefix="deeppert-conc-"))
    timing = tmp / "timing"
    timing.mkdir()
    sweep = sweep_against_server(args, grid, tmp, timing)
    result = summarise(args, sweep, timing)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "requests_by_endpoint"}, indent=2))
    ok = (
        result["per_epoch_metric_rows"] == result["per_epoch_metric_rows_expected"]
        and result["server_5xx"] == 0
        and result["finished"] == args.trials
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
