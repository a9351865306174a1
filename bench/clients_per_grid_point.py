"""MLflow clients made per grid point of a sweep trial, and per sweep set-up.

    python bench/clients_per_grid_point.py [--runs 4] [--epochs 2]

A fresh SQLite tracking server; smoke.yaml's dataset, one shape (AE d3) x ``--runs`` runs, one
trial training them all, through the sweep job's own steps without Ray (``open_sweep``,
``prepare_sweep_data``, ``run_planned_trial``, ``log_sweep_report``). Counts the clients deeppert
makes (its ``RaceSafeClient``, what ``tracking_client`` returns) and every ``MlflowClient``
(MLflow's own internal ones included), per phase.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)

    from mlflow import MlflowClient

    from deeppert.config import parse_config
    from deeppert.tracking.client import _race_safe_client_class
    from deeppert.tracking.report import log_sweep_report
    from deeppert.tracking.server import ServerConfig, TrackingServer
    from deeppert.tracking.sweep import finished_grid_keys, open_sweep, trial_plan
    from ray_jobs.sweep import prepare_sweep_data, run_planned_trial

    made: Counter[str] = Counter()
    phase = ["setup"]
    ours = _race_safe_client_class()
    base_init = MlflowClient.__init__

    def counting_init(self, *a, **k):
        made[(phase[0], "deeppert" if isinstance(self, ours) else "mlflow")] += 1
        base_init(self, *a, **k)

    MlflowClient.__init__ = counting_init
    with tempfile.TemporaryDirectory(prefix="bench-clients-") as tmp:
        server = TrackingServer(ServerConfig(data_dir=str(Path(tmp) / "mlflow"), port=0))
        server.start()
        try:
            raw = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
            raw["grid"] = {"models": ["AE"], "latent_dims": [3], "runs": args.runs,
                           "baselines": False}  # fmt: skip
            raw["train"] = {**raw.get("train", {}), "epochs": args.epochs}
            raw["sweep"] = {"seeds_per_trial": args.runs, "max_failures": 0}
            raw["tracking"] = {"uri": server.url, "experiment": "bench-clients"}
            config = parse_config(raw)
            ctx = open_sweep(config)
            plan = trial_plan(config, finished_grid_keys(ctx))
            data = prepare_sweep_data(ctx, config, plan)
            phase[0] = "trial"
            for trial in plan:
                run_planned_trial(ctx, config, data, trial)
            phase[0] = "report"
            log_sweep_report(ctx, config)
        finally:
            MlflowClient.__init__ = base_init
            server.stop()
    points = args.runs
    out = {
        "grid_points": points,
        **{f"{p}_{who}": n for (p, who), n in sorted(made.items())},
        "deeppert_clients_per_grid_point": made[("trial", "deeppert")] / points,
        "all_clients_per_grid_point": (made[("trial", "deeppert")] + made[("trial", "mlflow")])
        / points,
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
