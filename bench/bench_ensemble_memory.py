"""Peak memory of the ensemble step against the number of model runs, the step alone.

Each ``--runs`` value runs in a fresh process: the 12 shapes (AE, VAE x 5-100) x runs random
encoders stacked as the ensemble job holds them, and planted per-run components (each a noisy
copy of one of 40 programs, so the density filter keeps them; no rotation is computed, that is
the Ray tasks' part) over ``--samples`` PCA scores; then the consensus step with its split-half
stability (:func:`deeppert.tl.ensemble_of`, as the job calls it) and the ensemble model's save.
Peak RSS is the process's own (``getrusage``), as in bench_ensemble_distributed.py's memory
points, which run the step from Parquet files with its rotations (4 dims, too slow for these
sizes). Per grid point = the difference between the two largest sizes over their difference
in points.

    python bench/bench_ensemble_memory.py --runs 10 40 --samples 2000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    """This process's peak RSS so far (as bench_ensemble_distributed's memory points read it)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def one(runs: int, samples: int) -> dict:
    """The step at ``runs`` runs a shape, in this process; returns its peak RSS."""
    import numpy as np
    import pandas as pd
    import torch

    from deeppert import tl
    from deeppert.ensemble.config import EnsembleConfig
    from deeppert.ensemble.modes import RunComponents
    from deeppert.latent_store import LatentStore
    from deeppert.models import PerturbationAutoencoder, ReplicaEncoder
    from deeppert.preprocess import fit_pca
    from deeppert.train import HISTORY_COLUMNS, TrainedModels, init_parameters
    from deeppert.train_config import ModelConfig, TrainConfig

    rng = np.random.default_rng(0)
    x = rng.standard_normal((samples, 978))
    pca = fit_pca(x, [f"g{i}" for i in range(978)], 100)
    x_pca = pca.transform(x)
    programs = np.linalg.qr(rng.standard_normal((100, 40)))[0]
    groups, codes, components = [], {}, {}
    for kind in ("AE", "VAE"):
        for d in (5, 10, 25, 50, 75, 100):
            cfg = ModelConfig(kind=kind, latent_dim=d, n_inputs=100)
            module = PerturbationAutoencoder(cfg, replicas=runs)
            init_parameters(module, [torch.Generator().manual_seed(r) for r in range(runs)])
            history = pd.DataFrame(columns=list(HISTORY_COLUMNS))
            group = TrainedModels(module.eval(), cfg, TrainConfig(), list(range(runs)), history)
            groups.append(group)
            for r in range(runs):
                key = f"{group.name}_run{r}"
                codes[key] = (group.node_names(r), ReplicaEncoder(module, r))
                k = 2 * d  # the default ica+varimax gives 2 components a node
                loadings = programs[:, rng.integers(0, 40, k)] * rng.choice([-1, 1], k)
                components[key] = RunComponents(
                    rng.standard_normal((d + 1, k)) / np.sqrt(d),
                    loadings + 0.01 * rng.standard_normal((100, k)),
                )
    store = LatentStore.from_encoders(x_pca, [f"s{i}" for i in range(samples)], codes)
    before = peak_rss_mib()
    t0 = time.perf_counter()
    step, model = tl.ensemble_of(
        store, None, x_pca=x_pca, pca=pca, members=groups, config=EnsembleConfig(),
        precomputed=components,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "model")
    return {
        "grid_points": 12 * runs,
        "components": sum(c.rotation.shape[1] for c in components.values()),
        "clusters": step.ensemble.n_clusters,
        "wall_s": round(time.perf_counter() - t0, 1),
        "peak_rss_mib_before_step": round(before),
        "peak_rss_mib": round(peak_rss_mib()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[10, 40], help="runs per shape")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/ensemble_memory.json")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process's size
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.samples)))
        return 0
    rows = []
    for runs in args.runs:
        cmd = [sys.executable, __file__, "--one", str(runs), "--samples", str(args.samples)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    result = {"command": " ".join(["python", "bench/bench_ensemble_memory.py", *sys.argv[1:]]),
              "samples": args.samples, "sizes": rows}  # fmt: skip
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        result["peak_rss_mib_per_grid_point"] = round(
            (b["peak_rss_mib"] - a["peak_rss_mib"]) / (b["grid_points"] - a["grid_points"]), 3
        )
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "sizes"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
