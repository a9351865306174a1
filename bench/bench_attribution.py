"""Benchmark: fast exact Integrated Gradients versus captum looped over latent nodes.

Same process, same encoder (VAE, p=100, hidden 250/100, d=50), same inputs, 50 steps,
Gauss-Legendre. Prints the speed ratio, the agreement of the gene weights, and the time of
the fast path (IG + gene mapping) for one d=50 encoder over 15,000 samples; writes
``bench/results/attribution.json`` (or ``--out``).

    .venv/bin/python bench/bench_attribution.py [--device cuda] [--samples 2000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from deeppert.attribution import (
    IGConfig,
    attribute_genes,
    gene_weights,
    integrated_gradients,
)
from deeppert.models import ModelConfig
from deeppert.train import TrainConfig, fit


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--full-samples", type=int, default=15000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--genes", type=int, default=978)
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "attribution.json")
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    rng = np.random.default_rng(0)
    p, d = 100, 50
    scale = np.linspace(3.0, 0.3, p)
    x_train = (rng.normal(size=(4000, p)) * scale).astype(np.float32)
    trained = fit(
        x_train,
        ModelConfig(kind="VAE", latent_dim=d, n_inputs=p),
        TrainConfig(epochs=args.train_epochs),
        runs=[0],
    )  # brief: BN stats non-trivial
    module = trained.module.to(device).eval()
    comps = np.linalg.qr(rng.normal(size=(args.genes, p)))[0].T  # orthonormal (p, genes)
    x = torch.as_tensor(
        (rng.normal(size=(args.samples, p)) * scale).astype(np.float32), device=device
    )

    integrated_gradients(module, x[:64], n_steps=args.steps)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    fast = integrated_gradients(module, x, n_steps=args.steps)
    _sync(device)
    t_fast = time.perf_counter() - t0

    t0 = time.perf_counter()
    cap = integrated_gradients(module, x, n_steps=args.steps, algorithm="captum")
    _sync(device)
    t_captum = time.perf_counter() - t0

    gw_fast, gw_cap = gene_weights(fast, comps), gene_weights(cap, comps)
    rel_gw = float((np.abs(gw_fast - gw_cap) / gw_cap.max(0, keepdims=True)).max())
    rel_ig = float(((fast - cap).abs().max() / cap.abs().max()).item())

    x_full = torch.as_tensor(
        (rng.normal(size=(args.full_samples, p)) * scale).astype(np.float32), device=device
    )
    _sync(device)
    t0 = time.perf_counter()
    result = attribute_genes(module, x_full, comps, config=IGConfig(n_steps=args.steps))
    _sync(device)
    t_full = time.perf_counter() - t0

    out = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "encoder": "VAE p=100 h=250/100 d=50",
        "samples": args.samples,
        "n_steps": args.steps,
        "method": "gausslegendre",
        "fast_s": t_fast,
        "captum_loop_s": t_captum,
        "speedup": t_captum / t_fast,
        "max_rel_diff_gene_weights": rel_gw,
        "max_rel_diff_ig": rel_ig,
        "full_samples": args.full_samples,
        "genes": args.genes,
        "full_attribute_genes_s": t_full,
        "full_max_relative_completeness_delta_50_steps": float(result.relative_delta.max()),
    }
    print(json.dumps(out, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
