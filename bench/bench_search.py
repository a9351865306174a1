"""Benchmark: ASHA model search vs the full budget (FIFO: every sampled trial to its end).

Same process, same Ray (2 CPUs), same tracking server, same sampled configurations (same
``search.seed``): runs the search of ``--config`` twice, once with ``scheduler: asha`` and
once with ``fifo``, and reports trials stopped early, epochs trained, wall time, the ratio
and the best held-out R^2 of each. Results go to ``bench/results/search_asha.json``.

Usage::

    python bench/bench_search.py [--config configs/search_demo.yaml]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "search_demo.yaml"))
    parser.add_argument("--out", default=str(RESULTS / "search_asha.json"))
    args = parser.parse_args(argv)

    import ray

    from deeppert.config import load_config
    from deeppert.tracking.server import ServerConfig, TrackingServer
    from ray_jobs.search import run_search

    base = load_config(args.config)
    tmp = Path(tempfile.mkdtemp(prefix="deeppert-search-bench-"))
    out: dict = {"config": args.config, "machine": f"{os.cpu_count()}-core CPU"}
    with TrackingServer(ServerConfig(data_dir=str(tmp / "server"), port=0)) as server:
        ray.init(num_cpus=2, address="local", include_dashboard=False, log_to_driver=False)
        try:
            for scheduler in ("fifo", "asha"):
                config = dataclasses.replace(
                    base,
                    search=dataclasses.replace(base.search, scheduler=scheduler),
                    tracking=dataclasses.replace(base.tracking, uri=server.url),
                )
                table = run_search(config, storage_path=str(tmp / "tune"))
                out[scheduler] = {**table.attrs["summary"], "best": table.attrs["best"]}
                print(scheduler, out[scheduler], flush=True)
        finally:
            ray.shutdown()
    out["load_average_1min"] = os.getloadavg()[0]
    out["wall_ratio_asha_over_fifo"] = round(out["asha"]["wall_s"] / out["fifo"]["wall_s"], 3)
    out["epochs_ratio_asha_over_fifo"] = round(
        out["asha"]["epochs_trained"] / out["fifo"]["epochs_trained"], 3
    )
    Path(args.out).write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
