"""IG gene weights from a sample subset (``IGConfig.max_samples``) against all samples.

Reads a run folder that ``deeppert train`` wrote (e.g. the pure path of
``bench_platform_scale.py --keep``), attributes the first 3 runs of each of ``--models`` on
every training sample and on ``--max-samples`` of them, and reports, per latent node, the
correlation of the two gene weight vectors and the overlap of their top 50 genes, with the CPU
seconds of each.

Usage::

    python bench/bench_ig_subset.py RUN_FOLDER --models AE_d50 VAE_d50 --max-samples 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deeppert.attribution import IGConfig, attribute_genes  # noqa: E402
from deeppert.train import TrainedModels  # noqa: E402
from deeppert.workspace import load_pca, load_trained, training_inputs  # noqa: E402


def compare(tm: TrainedModels, x: np.ndarray, pca, steps: int, max_samples: int) -> dict:
    sub = TrainedModels.from_replicas(
        [tm.module.replica(r) for r in range(3)], tm.runs[:3], tm.train_config
    )
    t = time.process_time()
    full = attribute_genes(sub, x, pca, config=IGConfig(n_steps=steps)).weights
    cpu_all = time.process_time() - t
    t = time.process_time()
    part = attribute_genes(sub, x, pca, config=IGConfig(n_steps=steps, max_samples=max_samples))
    cpu_part = time.process_time() - t
    corr, top = [], []
    for r in range(full.shape[0]):
        for k in range(full.shape[2]):
            a, b = full[r, :, k], part.weights[r, :, k]
            corr.append(float(np.corrcoef(a, b)[0, 1]))
            top.append(len(set(np.argsort(-a)[:50]) & set(np.argsort(-b)[:50])) / 50)
    return {
        "samples": len(x),
        "max_samples": max_samples,
        "nodes": len(corr),
        "corr_min": round(min(corr), 4),
        "corr_median": round(float(np.median(corr)), 4),
        "top50_overlap_min": min(top),
        "top50_overlap_median": float(np.median(top)),
        "cpu_s_all": round(cpu_all, 1),
        "cpu_s_subset": round(cpu_part, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_folder", type=Path)
    parser.add_argument("--models", nargs="+", default=["AE_d50", "VAE_d50"])
    parser.add_argument("--max-samples", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/ig_subset.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pca = load_pca(args.run_folder)
    x, _ = training_inputs(args.run_folder)
    result = {"command": "python bench/bench_ig_subset.py " + " ".join(sys.argv[1:])}
    for tm in load_trained(args.run_folder):
        if tm.name in args.models:
            result[tm.name] = compare(tm, x, pca, args.steps, args.max_samples)
            print(tm.name, result[tm.name], flush=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
