"""Benchmark: R seeds of one shape trained vectorised vs one by one.

Same process, same data, same epochs. For each model shape (default VAE d=50 and AE d=50 on
p=100 PCA inputs of a synthetic 15,000 x 978 matrix) it times

* ``sequential``: ``fit(x, cfg, train, runs=[r])`` for r in 0..R-1, one after the other;
* ``vectorised``: ``fit(x, cfg, train, runs=range(R))``, all R replicas in one pass;

and reports the speed-up (sequential / vectorised) and memory. Memory is measured three ways:

* ``process_peak_rss_mib``: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at the end, the
  high-water mark of the whole process (Python, torch, the 15,000 x 978 matrix, PCA and
  both trainings): the number to hold against the 2 GiB target;
* per phase ``peak_rss_delta_mib``: a background thread samples RSS (/proc/self/statm) every
  2 ms and records the phase's peak above its starting RSS. ``ru_maxrss`` deltas cannot do
  this (a phase below an earlier peak shows 0), and ``tracemalloc`` would see numpy's
  buffers but not torch's CPU allocator, so RSS sampling is what covers both;
* on CUDA, ``torch.cuda.max_memory_allocated`` per phase.

Few epochs (default 3) are enough: every epoch does the same work, so the ratio does not
depend on the count. The results go to ``bench/results/training.json`` (CPU) or
``bench/results/training_cuda.json`` and a table is printed.

Usage::

    python bench/bench_training.py [--epochs 3] [--n-samples 15000] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import threading
import time
from pathlib import Path

import numpy as np
import torch

from deeppert.data.synthetic import SynthConfig, make_synthetic
from deeppert.models import ModelConfig
from deeppert.preprocess import fit_pca, split_indices
from deeppert.train import TrainConfig, fit

RESULTS = Path(__file__).resolve().parent / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 2**20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Phase:
    """Wall time, peak RSS above the start (sampled), and CUDA peak of one block of work."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> Phase:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.start_rss = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())
        self.peak_rss_delta_mib = (self.peak - self.start_rss) / MIB
        self.cuda_peak_mib = (
            torch.cuda.max_memory_allocated() / MIB if self.device.type == "cuda" else None
        )

    def record(self) -> dict:
        out = {
            "seconds": round(self.seconds, 3),
            "peak_rss_delta_mib": round(self.peak_rss_delta_mib, 1),
        }
        if self.cuda_peak_mib is not None:
            out["cuda_peak_allocated_mib"] = round(self.cuda_peak_mib, 1)
        return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-samples", type=int, default=15000)
    parser.add_argument("--runs", type=int, default=10, help="seeds per shape")
    parser.add_argument("--dim", type=int, default=50, help="latent dim")
    parser.add_argument("--n-components", type=int, default=100, help="PCA inputs p")
    parser.add_argument("--models", default="VAE,AE")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/...)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out_path = args.out or RESULTS / (
        "training.json" if device.type == "cpu" else f"training_{device.type}.json"
    )

    rss0 = _rss()
    with Phase(device) as data_phase:
        syn = make_synthetic(SynthConfig(n_samples=args.n_samples, seed=0))
        sig = syn.signatures
    with Phase(device) as pca_phase:
        train_idx, _ = split_indices(sig.n_samples, 0.1, 0)
        pca = fit_pca(sig.values[train_idx], sig.genes, args.n_components)
        x = pca.transform(sig.values[train_idx])
    train = TrainConfig(epochs=args.epochs, device=args.device)
    runs = list(range(args.runs))

    # warm-up: lazy library initialisation must not be charged to whichever mode runs first
    for kind in args.models.split(","):
        cfg = ModelConfig(kind=kind, latent_dim=args.dim, n_inputs=args.n_components)
        fit(x[:512], cfg, TrainConfig(epochs=1, device=args.device), [0, 1])
        fit(x[:512], cfg, TrainConfig(epochs=1, device=args.device), [0])

    shapes = []
    for kind in args.models.split(","):
        cfg = ModelConfig(kind=kind, latent_dim=args.dim, n_inputs=args.n_components)
        with Phase(device) as seq:
            singles = [fit(x, cfg, train, [r]) for r in runs]
        with Phase(device) as vec:
            group = fit(x, cfg, train, runs)
        probe = x[:2000]
        z_vec = group.embed(probe)
        z_seq = np.stack([s.embed(probe)[0] for s in singles])
        shapes.append(
            {
                "model": kind,
                "latent_dim": args.dim,
                "runs": args.runs,
                "sequential": seq.record(),
                "vectorised": vec.record(),
                "speedup": round(seq.seconds / vec.seconds, 3),
                "max_abs_embedding_diff_vs_sequential": float(np.abs(z_vec - z_seq).max()),
                "embedding_scale": float(np.abs(z_seq).max()),
            }
        )
        del singles, group

    result = {
        "benchmark": "training: R seeds vectorised vs one by one",
        "input": {
            "n_samples": args.n_samples,
            "n_train_rows": int(len(train_idx)),
            "n_genes": sig.n_genes,
            "n_components": args.n_components,
        },
        "train": {"epochs": args.epochs, "batch_size": train.batch_size, "dtype": train.dtype},
        "device": args.device,
        "device_name": torch.cuda.get_device_name()
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "data": data_phase.record(),
        "pca": pca_phase.record(),
        "shapes": shapes,
        "rss_at_start_mib": round(rss0 / MIB, 1),
        "process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "memory_target_mib": 2048,
        "speedup_target": 1.5,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"{args.n_samples} x {sig.n_genes} -> PCA {args.n_components}; {args.runs} seeds, "
        f"{args.epochs} epochs, batch {train.batch_size}, {args.device} "
        f"({result['torch_threads']} torch threads, load {result['load_average_1min']})"
    )
    print(f"data {data_phase.seconds:.1f} s, PCA {pca_phase.seconds:.1f} s")
    header = (
        f"{'shape':<8} {'sequential s':>12} {'vectorised s':>12} {'speedup':>8} "
        f"{'seq +RSS MiB':>12} {'vec +RSS MiB':>12}"
    )
    if device.type == "cuda":
        header += f" {'seq cuda MiB':>12} {'vec cuda MiB':>12}"
    print(header)
    for s in shapes:
        line = (
            f"{s['model'] + '_d' + str(s['latent_dim']):<8} {s['sequential']['seconds']:>12.2f} "
            f"{s['vectorised']['seconds']:>12.2f} {s['speedup']:>7.2f}x "
            f"{s['sequential']['peak_rss_delta_mib']:>12.1f} {s['vectorised']['peak_rss_delta_mib']:>12.1f}"
        )
        if device.type == "cuda":
            line += (
                f" {s['sequential']['cuda_peak_allocated_mib']:>12.1f}"
                f" {s['vectorised']['cuda_peak_allocated_mib']:>12.1f}"
            )
        print(line)
    print(
        f"process peak RSS {result['process_peak_rss_mib']:.0f} MiB (target < 2048 MiB); "
        f"wrote {out_path}"
    )
    return result


if __name__ == "__main__":
    main()
