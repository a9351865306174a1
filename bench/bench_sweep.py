"""Trials per minute: a 12-trial grid through Ray Tune vs the same trials in a plain loop.

Usage: ``.venv/bin/python bench/bench_sweep.py [--epochs 5] [--cpus-per-trial 1.0]
[--tracking-uri http://...] [--out bench/results/sweep.json]``.

Both modes log to the same MLflow tracking server (a fresh SQLite one unless
``--tracking-uri`` is given) and do the same work per trial: train one seed, attribute,
log params, per-epoch metrics, Parquet artifacts and the registered encoder
(:func:`deeppert.tracking.sweep.run_trial`). Both set up as the sweep job does
(``ray_jobs/sweep.py``: ``prepare_sweep_data``, ``run_planned_trial``). Tune runs the trials
on a local Ray with 2 CPUs (``cpus_per_trial`` each); the loop runs them one after another in
this process.
The grid is smoke.yaml's dataset x (AE, DAE, VAE) x latent dims (3, 4) x 2 runs, one seed per
trial: 12 trials. The two sweeps differ only in their name, so neither skips the other's work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bench_config(name: str, uri: str, epochs: int, cpus_per_trial: float):
    from deeppert.config import parse_config

    raw = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    raw["name"] = name
    raw["grid"] = {
        "models": ["AE", "DAE", "VAE"],
        "latent_dims": [3, 4],
        "runs": 2,
        "baselines": False,
    }
    raw["train"] = {**raw.get("train", {}), "epochs": epochs}
    raw["sweep"] = {"cpus_per_trial": cpus_per_trial, "seeds_per_trial": 1, "max_failures": 0}
    raw["tracking"] = {"uri": uri, "experiment": "bench-sweep"}
    return parse_config(raw)


def child_runs(uri: str, experiment_id: str, parent_run_id: str) -> dict:
    """Median child-run duration and how many worker processes logged them."""
    from deeppert.tracking.client import tracking_client
    from deeppert.tracking.sweep import TAGS

    runs = tracking_client(uri).search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    )
    assert all(r.info.status == "FINISHED" for r in runs), [r.info.status for r in runs]
    return {
        "child_runs": len(runs),
        "child_run_median_s": statistics.median(
            (r.info.end_time - r.info.start_time) / 1000 for r in runs
        ),
        "worker_processes": len({r.data.tags[TAGS.worker] for r in runs}),
    }


def run_loop(config) -> dict:
    """The same trials, no Ray: the sweep job's own set-up, then each trial in turn."""
    from deeppert.tracking.client import finish_run
    from deeppert.tracking.sweep import finished_grid_keys, open_sweep, trial_plan
    from ray_jobs.sweep import prepare_sweep_data, run_planned_trial

    t0 = time.perf_counter()
    ctx = open_sweep(config)
    plan = trial_plan(config, finished_grid_keys(ctx))
    data = prepare_sweep_data(ctx, config, plan)
    setup_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    for trial in plan:
        run_planned_trial(ctx, config, data, trial)
    trials_s = time.perf_counter() - t1
    finish_run(ctx.session, ctx.parent_run_id)
    return {
        "trials": len(plan),
        "setup_s": setup_s,
        "trials_s": trials_s,
        "wall_s": setup_s + trials_s,
        **child_runs(ctx.session.uri, ctx.session.experiment_id, ctx.parent_run_id),
    }


def run_tune(config, storage: str) -> dict:
    import ray

    from deeppert.tracking.sweep import open_sweep
    from ray_jobs.sweep import run_sweep

    t0 = time.perf_counter()
    ray.init(num_cpus=2, address="local", include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        table = run_sweep(config, storage_path=storage)
        sweep_s = time.perf_counter() - t1
    finally:
        ray.shutdown()
    ctx = open_sweep(config)  # same parent again, to read its children
    from deeppert.tracking.client import finish_run

    finish_run(ctx.session, ctx.parent_run_id)
    return {
        "trials": len(table),
        "ray_init_s": init_s,
        "wall_s": sweep_s,
        **child_runs(ctx.session.uri, ctx.session.experiment_id, ctx.parent_run_id),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--tracking-uri", help="an existing server (default: a fresh SQLite one)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sweep.json")
    args = parser.parse_args(argv)

    from deeppert.tracking.server import ServerConfig, TrackingServer

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        server = None
        uri = args.tracking_uri
        if uri is None:
            server = TrackingServer(ServerConfig(data_dir=str(Path(tmp) / "mlflow"), port=0))
            server.start()
            uri = server.url
        try:
            stamp = time.strftime("%Y%m%d%H%M%S")
            loop = run_loop(
                bench_config(f"bench-loop-{stamp}", uri, args.epochs, args.cpus_per_trial)
            )
            print(f"plain loop: {loop['trials']} trials in {loop['wall_s']:.1f}s", flush=True)
            tune = run_tune(
                bench_config(f"bench-tune-{stamp}", uri, args.epochs, args.cpus_per_trial),
                str(Path(tmp) / "tune"),
            )
            print(f"ray tune: {tune['trials']} trials in {tune['wall_s']:.1f}s", flush=True)
        finally:
            if server is not None:
                server.stop()

    n = loop["trials"]
    assert n == tune["trials"] == 12, (loop["trials"], tune["trials"])
    tpm_loop = 60 * n / loop["wall_s"]
    tpm_tune = 60 * n / tune["wall_s"]
    tpm_tune_with_init = 60 * n / (tune["wall_s"] + tune["ray_init_s"])
    result = {
        "benchmark": "sweep: 12 small trials through Ray Tune vs a plain loop (same server)",
        "command": "python bench/bench_sweep.py " + " ".join(argv or sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "grid": "SYN1 x (AE, DAE, VAE) x d(3, 4) x runs 2, seeds_per_trial 1",
        "epochs": args.epochs,
        "tracking": "SQLite server (fresh)" if args.tracking_uri is None else "given server",
        "ray": {"num_cpus": 2, "cpus_per_trial": args.cpus_per_trial},
        "loop": {k: round(v, 3) if isinstance(v, float) else v for k, v in loop.items()},
        "tune": {k: round(v, 3) if isinstance(v, float) else v for k, v in tune.items()},
        "trials_per_minute": {
            "loop": round(tpm_loop, 2),
            "tune": round(tpm_tune, 2),
            "tune_including_ray_init": round(tpm_tune_with_init, 2),
        },
        "ratio_tune_over_loop": round(tpm_tune / tpm_loop, 3),
        "overhead_per_trial_s": round((tune["wall_s"] - loop["wall_s"]) / n, 3),
        "notes": (
            "overhead_per_trial_s = (tune wall - loop wall) / trials, ray.init excluded "
            "(reported as tune.ray_init_s); child_run_median_s is the median MLflow child-run "
            "duration (start to FINISHED) inside each mode; worker_processes counts the distinct "
            "host:pid that logged the child runs (each new process pays ~4 CPU-s importing "
            "torch + mlflow; ray_jobs/sweep.py reuses Tune actors, so Tune uses one per "
            "concurrent slot)"
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
