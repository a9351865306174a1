"""Benchmark: intra-op threads on small data (the 196-signature HA1E file), as ratios.

``deeppert train`` trains with one torch / BLAS thread unless ``--threads`` says otherwise.
This times :func:`deeppert.train.fit` of one shape per model (d=50, 5 runs) on the real
Renal_HA1E signatures (176 training rows: one minibatch per epoch) with 1 thread and with
``--threads`` (default: every core), in the same process on the same data, alternating, and
reports wall and process-CPU seconds and their ratios (many threads / one), with the machine's
load average, after one untimed warm-up epoch. Both thread counts train the same models (final
losses agree to float noise).

Run: ``.venv/bin/python bench/bench_train_small.py [--epochs 10] [--threads 2]``; results go
to ``bench/results/train_small.json``. Skips (exit 0, one line) when the real data is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from deeppert.config import DataConfig, ExperimentConfig
from deeppert.grid import load_dataset, prepare
from deeppert.train import fit

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared/data/deeppert-seed/downstream/toxicity/Renal_HA1E.csv"


def timed_fit(prepared, config: ExperimentConfig, kind: str, threads: int) -> dict:
    """Wall and process-CPU seconds of one fit with ``threads`` torch and BLAS threads."""
    model = config.model.build(kind, 50, prepared.pca.n_components)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            cpu, wall = time.process_time(), time.perf_counter()
            trained = fit(prepared.x_train, model, config.train, range(5), x_val=prepared.x_val)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        torch.set_num_threads(before)
    last = trained.history[trained.history["epoch"] == config.train.epochs - 1]["loss"]
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "final_loss": last.tolist()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--models", default="AE,DAE,VAE")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/train_small.json")
    args = parser.parse_args()
    if not DATA.is_file():
        print(f"skipped: {DATA} not found (real data is not part of a fresh clone)")
        return 0
    config = ExperimentConfig()
    config = dataclasses.replace(
        config, train=dataclasses.replace(config.train, epochs=args.epochs)
    )
    prepared = prepare(load_dataset(DataConfig(name="Renal_HA1E", path=str(DATA))), config)
    warm = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=1))
    timed_fit(prepared, warm, "AE", 1)  # torch's one-time set-up, outside the timings
    shapes, loads = [], [os.getloadavg()[0]]
    for kind in args.models.split(","):
        one = timed_fit(prepared, config, kind, 1)
        many = timed_fit(prepared, config, kind, args.threads)
        loads.append(os.getloadavg()[0])
        diff = float(np.max(np.abs(np.subtract(one["final_loss"], many["final_loss"]))))
        shapes.append(
            {
                "model": f"{kind}_d50",
                "one_thread": one,
                f"{args.threads}_threads": many,
                "wall_ratio_many_over_one": round(many["wall_s"] / one["wall_s"], 2),
                "cpu_ratio_many_over_one": round(many["cpu_s"] / one["cpu_s"], 2),
                "max_abs_final_loss_diff": diff,
            }
        )
        print(json.dumps(shapes[-1]), flush=True)
    result = {
        "benchmark": "deeppert train on 196 real signatures: 1 thread vs many, same process",
        "data": str(DATA.relative_to(REPO.parent)),
        "n_train_rows": int(prepared.x_train.shape[0]),
        "epochs": args.epochs,
        "runs": 5,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "load_average_1min": [round(x, 2) for x in loads],
        "shapes": shapes,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
