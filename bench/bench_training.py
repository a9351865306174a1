"""Benchmark: R seeds of one shape trained vectorised vs one by one.

Same process, same data, same epochs. For each model shape (default AE, DAE and VAE at d=50 on
p=100 PCA inputs of a synthetic 15,000 x 978 matrix) it times

* ``sequential``: ``fit(x, cfg, train, runs=[r])`` for r in 0..R-1, one after the other;
* ``vectorised``: ``fit(x, cfg, train, runs=range(R))``, all R replicas in one pass;

and reports the speed-up (sequential / vectorised), the throughput in training samples x
replicas per second, and memory. Memory is measured three ways:

* ``process_peak_rss_mib``: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at the end, the
  high-water mark of the whole process (Python, torch, the 15,000 x 978 matrix, PCA and
  all trainings): the number to hold against the 2 GiB target;
* per phase ``peak_rss_delta_mib``: a background thread samples RSS (/proc/self/statm) every
  2 ms and records the phase's peak above its starting RSS. ``ru_maxrss`` deltas cannot do
  this (a phase below an earlier peak shows 0), and ``tracemalloc`` would see numpy's
  buffers but not torch's CPU allocator, so RSS sampling is what covers both;
* on CUDA, ``torch.cuda.max_memory_allocated`` per phase.

The physical reference (``matmul_reference``) is the same step's batched matmuls alone
(forward, input and weight gradients of every layer, all R replicas, plain ``torch.bmm`` on
preallocated operands): ``share_of_matmul`` is the training throughput over that one.
``--grid`` times the DeepProfile grid (AE and VAE x dims 5, 10, 25, 50, 75, 100, 100 runs
each trained vectorised) over a few measured epochs (on ``--grid-rows`` rows; every step
costs the same) and extrapolates to 100 epochs on all training rows. ``--profile`` adds the
torch profiler's top 10 operations of one vectorised epoch per shape.

Few epochs (default 3) are enough: every epoch does the same work, so the ratio does not
depend on the count. The results go to ``bench/results/training.json`` (CPU) or
``bench/results/training_cuda.json`` and a table is printed.

Usage::

    python bench/bench_training.py [--epochs 3] [--n-samples 15000] [--device cpu|cuda]
        [--models AE,DAE,VAE] [--grid --grid-epochs 1 --grid-rows 1280] [--profile]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deeppert.data.synthetic import SynthConfig, make_synthetic
from deeppert.models import ModelConfig, PerturbationAutoencoder, StackedLinear
from deeppert.preprocess import fit_pca, split_indices
from deeppert.rng import random_bits, replica_keys
from deeppert.train import TrainConfig, fit

RESULTS = Path(__file__).resolve().parent / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 2**20
GRID_DIMS = (5, 10, 25, 50, 75, 100)


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
        self.c0 = time.process_time()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0
        self.cpu_seconds = time.process_time() - self.c0
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
            "process_cpu_seconds": round(self.cpu_seconds, 3),
            "peak_rss_delta_mib": round(self.peak_rss_delta_mib, 1),
        }
        if self.cuda_peak_mib is not None:
            out["cuda_peak_allocated_mib"] = round(self.cuda_peak_mib, 1)
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_reference(cfg: ModelConfig, replicas: int, batch: int, steps: int, device) -> dict:
    """Samples x replicas / s if a training step cost only its batched matmuls (float32)."""
    module = PerturbationAutoencoder(cfg, replicas=replicas)
    shapes = [tuple(m.weight.shape[1:]) for m in module.modules() if isinstance(m, StackedLinear)]
    ops = []  # (a, b) operand pairs of one step: forward, weight gradient, input gradient
    for i, (n_in, n_out) in enumerate(shapes):
        x = torch.randn(replicas, batch, n_in, device=device)
        w = torch.randn(replicas, n_in, n_out, device=device)
        g = torch.randn(replicas, batch, n_out, device=device)
        ops += [(x, w), (x.transpose(1, 2), g)]
        if i > 0:  # the input of the first layer needs no gradient
            ops.append((g, w.transpose(1, 2)))
    flops = sum(2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2] for a, b in ops)
    for a, b in ops:  # warm-up
        torch.bmm(a, b)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        for a, b in ops:
            torch.bmm(a, b)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {
        "samples_x_replicas_per_s": replicas * batch * steps / seconds,
        "matmul_tflops": flops * steps / seconds / 1e12,
        "flops_per_step": flops,
    }


def profile_table(x: np.ndarray, cfg: ModelConfig, runs: list[int], device) -> str:
    """Top 10 operations (self time) of one vectorised epoch over ``x``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fit(x, cfg, TrainConfig(epochs=1, device=device.type), runs)
        _sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=10, max_name_column_width=40)


def grid_estimate(x: np.ndarray, n_train: int, args, device) -> dict:
    """Time the DeepProfile grid's shapes over a few epochs; extrapolate to the full grid."""
    rows = x[: args.grid_rows] if args.grid_rows else x
    B = TrainConfig().batch_size
    measured_steps = args.grid_epochs * math.ceil(len(rows) / B)
    full_steps = args.grid_full_epochs * math.ceil(n_train / B)
    runs = list(range(args.grid_runs))
    shapes, total, total_single, total_cpu, total_single_cpu = [], 0.0, 0.0, 0.0, 0.0
    for kind in ("AE", "VAE"):
        for d in GRID_DIMS:
            cfg = ModelConfig(kind=kind, latent_dim=d, n_inputs=args.n_components)
            fit(rows[:512], cfg, TrainConfig(epochs=1, device=args.device), runs)  # warm-up
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fit(rows, cfg, TrainConfig(epochs=args.grid_epochs, device=args.device), runs)
            _sync(device)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            t0, c0 = time.perf_counter(), time.process_time()  # one run alone: one by one
            fit(rows, cfg, TrainConfig(epochs=args.grid_epochs, device=args.device), runs[:1])
            _sync(device)
            single, single_cpu = time.perf_counter() - t0, time.process_time() - c0
            scale = full_steps / measured_steps
            estimate, one_by_one = seconds * scale, single * len(runs) * scale
            total += estimate
            total_single += one_by_one
            total_cpu += cpu * scale
            total_single_cpu += single_cpu * len(runs) * scale
            shapes.append(
                {
                    "model": kind,
                    "latent_dim": d,
                    "measured_seconds": round(seconds, 3),
                    "measured_single_run_seconds": round(single, 3),
                    "measured_process_cpu_seconds": round(cpu, 3),
                    "measured_single_run_process_cpu_seconds": round(single_cpu, 3),
                    "measured_steps": measured_steps,
                    "estimated_full_seconds": round(estimate, 1),
                    "estimated_one_by_one_seconds": round(one_by_one, 1),
                }
            )
            print(
                f"  grid {kind}_d{d}: {seconds:.2f} s for {measured_steps} steps x {len(runs)} runs"
                f" (one run {single:.2f} s) -> {estimate / 60:.1f} min for {full_steps} steps"
                f" ({one_by_one / 60:.1f} min one by one)",
                flush=True,
            )
    return {
        "runs_per_shape": args.grid_runs,
        "epochs_full": args.grid_full_epochs,
        "n_train_rows": n_train,
        "measured_rows": len(rows),
        "measured_epochs": args.grid_epochs,
        "measured_fraction_of_grid": round(measured_steps / full_steps, 4),
        "measured_seconds": round(sum(s["measured_seconds"] for s in shapes), 1),
        "shapes": shapes,
        "estimated_full_grid_hours": round(total / 3600, 3),
        "estimated_one_by_one_grid_hours": round(total_single / 3600, 3),
        "estimated_full_grid_process_cpu_hours": round(total_cpu / 3600, 3),
        "estimated_one_by_one_grid_process_cpu_hours": round(total_single_cpu / 3600, 3),
    }


def equality_check(device: torch.device) -> dict:
    """float64, AE/DAE/VAE, 3 epochs: replica r of a group of 3 vs run r alone, on ``device``."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((131, 3)) @ rng.standard_normal((3, 12)) * 2
    x += 0.3 * rng.standard_normal(x.shape)
    train = TrainConfig(epochs=3, batch_size=32, dtype="float64", device=device.type)
    out = {}
    for kind in ("AE", "DAE", "VAE"):
        cfg = ModelConfig(kind=kind, latent_dim=5, n_inputs=12)
        group = fit(x, cfg, train, [0, 1, 2]).embed(x)
        alone = np.stack([fit(x, cfg, train, [r]).embed(x)[0] for r in range(3)])
        out[kind] = {
            "max_abs_embedding_diff": float(np.abs(group - alone).max()),
            "embedding_scale": float(np.abs(alone).max()),
        }
    # the counter-based streams are the same numbers on every device
    keys = replica_keys([0, 123456, 246912])
    bits = random_bits(keys.to(device), 5, 3, 100_000).cpu()
    out["random_bits_equal_to_cpu"] = bool(torch.equal(bits, random_bits(keys, 5, 3, 100_000)))
    return out


@dataclass
class Inputs:
    """The PCA training matrix every shape is timed on, and the phases that built it."""

    x: np.ndarray
    n_train: int
    n_genes: int
    rss0: int
    data_phase: Phase
    pca_phase: Phase


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's flags: the shapes timed, the input size, the device and the grid."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-samples", type=int, default=15000)
    parser.add_argument("--runs", type=int, default=10, help="seeds per shape")
    parser.add_argument("--dim", type=int, default=50, help="latent dim")
    parser.add_argument("--n-components", type=int, default=100, help="PCA inputs p")
    parser.add_argument("--models", default="AE,DAE,VAE")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--profile", action="store_true", help="top-10 op table per shape")
    parser.add_argument("--grid", action="store_true", help="DeepProfile grid estimate")
    parser.add_argument("--grid-runs", type=int, default=100)
    parser.add_argument("--grid-epochs", type=int, default=1, help="measured epochs per shape")
    parser.add_argument("--grid-rows", type=int, default=0, help="rows timed (0: all)")
    parser.add_argument("--grid-full-epochs", type=int, default=100)
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/...)")
    return parser.parse_args(argv)


def build_inputs(args: argparse.Namespace, device: torch.device) -> Inputs:
    """Synthetic signatures and their PCA scores, each step timed: the data every shape trains on."""
    rss0 = _rss()
    with Phase(device) as data_phase:
        syn = make_synthetic(SynthConfig(n_samples=args.n_samples, seed=0))
        sig = syn.signatures
    with Phase(device) as pca_phase:
        train_idx, _ = split_indices(sig.n_samples, 0.1, 0)
        pca = fit_pca(sig.values[train_idx], sig.genes, args.n_components)
        x = pca.transform(sig.values[train_idx])
    return Inputs(x, int(len(train_idx)), sig.n_genes, rss0, data_phase, pca_phase)


def warm_up(x: np.ndarray, kinds: list[str], runs: list[int], args: argparse.Namespace) -> None:
    """One short fit per shape and mode, so lazy library initialisation is not charged to
    whichever mode is timed first."""
    for kind in kinds:
        cfg = ModelConfig(kind=kind, latent_dim=args.dim, n_inputs=args.n_components)
        fit(x[:512], cfg, TrainConfig(epochs=1, device=args.device), runs)
        fit(x[:512], cfg, TrainConfig(epochs=1, device=args.device), [0])


def measure_shape(
    kind: str,
    x: np.ndarray,
    train: TrainConfig,
    runs: list[int],
    args: argparse.Namespace,
    device: torch.device,
    load: list[float],
) -> dict:
    """Time one shape's R seeds one by one and vectorised, check they embed alike, and
    compare the throughput with the batched-matmul reference; appends the load average."""
    cfg = ModelConfig(kind=kind, latent_dim=args.dim, n_inputs=args.n_components)
    steps = args.epochs * math.ceil(len(x) / train.batch_size)
    with Phase(device) as seq:
        singles = [fit(x, cfg, train, [r]) for r in runs]
    with Phase(device) as vec:
        group = fit(x, cfg, train, runs)
    load.append(os.getloadavg()[0])
    probe = x[:2000]
    z_vec = group.embed(probe)
    z_seq = np.stack([s.embed(probe)[0] for s in singles])
    work = len(x) * args.epochs * args.runs  # samples x replicas
    ref = matmul_reference(cfg, args.runs, train.batch_size, steps, device)
    shape = {
        "model": kind,
        "latent_dim": args.dim,
        "runs": args.runs,
        "sequential": seq.record(),
        "vectorised": vec.record(),
        "speedup": round(seq.seconds / vec.seconds, 3),
        # CPU time the process used: on a shared machine this sees less of the other
        # processes' load than wall time does (with 1 thread it is the work done)
        "speedup_process_cpu_time": round(seq.cpu_seconds / vec.cpu_seconds, 3),
        "samples_x_replicas_per_s": {
            "sequential": round(work / seq.seconds),
            "vectorised": round(work / vec.seconds),
            "matmul_reference": round(ref["samples_x_replicas_per_s"]),
        },
        "matmul_reference_tflops": round(ref["matmul_tflops"], 3),
        "share_of_matmul": round(work / vec.seconds / ref["samples_x_replicas_per_s"], 4),
        "max_abs_embedding_diff_vs_sequential": float(np.abs(z_vec - z_seq).max()),
        "embedding_scale": float(np.abs(z_seq).max()),
    }
    if args.profile:
        try:  # a profiler hiccup must not cost the timings above
            shape["profile_top10"] = profile_table(x[: 10 * train.batch_size], cfg, runs, device)
        except Exception as exc:  # noqa: BLE001 - recorded in the results, not hidden
            shape["profile_error"] = repr(exc)
    print(
        f"{kind}_d{args.dim}: sequential {seq.seconds:.2f} s, vectorised {vec.seconds:.2f} s, "
        f"{shape['speedup']:.2f}x; process CPU time {seq.cpu_seconds:.2f} s vs "
        f"{vec.cpu_seconds:.2f} s, {shape['speedup_process_cpu_time']:.2f}x (load {load[-1]:.1f})",
        flush=True,
    )
    return shape


def result_record(
    args: argparse.Namespace,
    device: torch.device,
    inputs: Inputs,
    train: TrainConfig,
    shapes: list[dict],
    load: list[float],
) -> dict:
    """The results JSON of the timed shapes: input sizes, machine, phases and memory."""
    return {
        "benchmark": "training: R seeds vectorised vs one by one",
        "input": {
            "n_samples": args.n_samples,
            "n_train_rows": inputs.n_train,
            "n_genes": inputs.n_genes,
            "n_components": args.n_components,
        },
        "train": {"epochs": args.epochs, "batch_size": train.batch_size, "dtype": train.dtype},
        "device": args.device,
        "device_name": torch.cuda.get_device_name()
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": [round(v, 2) for v in load],
        "torch": torch.__version__,
        "data": inputs.data_phase.record(),
        "pca": inputs.pca_phase.record(),
        "shapes": shapes,
        "rss_at_start_mib": round(inputs.rss0 / MIB, 1),
        "process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "memory_target_mib": 2048,
        "speedup_target": 3.0 if device.type == "cpu" else 10.0,
    }


def print_report(
    result: dict, args: argparse.Namespace, inputs: Inputs, train: TrainConfig, out_path: Path
) -> None:
    """The results as a table: per shape, the grid estimate and the float64 equality check."""
    shapes = result["shapes"]
    print(
        f"{args.n_samples} x {inputs.n_genes} -> PCA {args.n_components}; {args.runs} seeds, "
        f"{args.epochs} epochs, batch {train.batch_size}, {args.device} "
        f"({result['torch_threads']} torch threads, load {result['load_average_1min']})"
    )
    print(f"data {inputs.data_phase.seconds:.1f} s, PCA {inputs.pca_phase.seconds:.1f} s")
    mem = "cuda_peak_allocated_mib" if args.device == "cuda" else "peak_rss_delta_mib"
    print(
        f"{'shape':<8} {'seq s':>8} {'vec s':>8} {'speedup':>8} {'seq smp*R/s':>12} "
        f"{'vec smp*R/s':>12} {'matmul smp*R/s':>14} {'share':>6} {'seq MiB':>8} {'vec MiB':>8}"
    )
    for s in shapes:
        t = s["samples_x_replicas_per_s"]
        print(
            f"{s['model'] + '_d' + str(s['latent_dim']):<8} {s['sequential']['seconds']:>8.2f} "
            f"{s['vectorised']['seconds']:>8.2f} {s['speedup']:>7.2f}x {t['sequential']:>12,} "
            f"{t['vectorised']:>12,} {t['matmul_reference']:>14,} {s['share_of_matmul']:>6.3f} "
            f"{s['sequential'][mem]:>8.1f} {s['vectorised'][mem]:>8.1f}"
        )
        if "profile_top10" in s:
            print(s["profile_top10"])
    if args.grid:
        g = result["deepprofile_grid"]
        print(
            f"DeepProfile grid (AE+VAE x {len(GRID_DIMS)} dims x {g['runs_per_shape']} runs x "
            f"{g['epochs_full']} epochs, {g['n_train_rows']} rows): measured "
            f"{g['measured_fraction_of_grid']:.2%} in {g['measured_seconds']} s -> "
            f"{g['estimated_full_grid_hours']:.2f} h vectorised, "
            f"{g['estimated_one_by_one_grid_hours']:.2f} h one by one (process CPU time: "
            f"{g['estimated_full_grid_process_cpu_hours']:.2f} h vs "
            f"{g['estimated_one_by_one_grid_process_cpu_hours']:.2f} h)"
        )
    for kind, v in result["float64_equality_group_vs_alone"].items():
        if not isinstance(v, dict):
            print(f"{kind}: {v}")
            continue
        print(
            f"float64 {kind}: group of 3 vs alone, max |embedding diff| "
            f"{v['max_abs_embedding_diff']:.1e} (scale {v['embedding_scale']:.1f})"
        )
    print(
        f"process peak RSS {result['process_peak_rss_mib']:.0f} MiB (target < 2048 MiB); "
        f"wrote {out_path}"
    )


def main(argv: list[str] | None = None) -> dict:
    """Time each shape's seeds vectorised vs one by one; write and print the results."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out_path = args.out or RESULTS / (
        "training.json" if device.type == "cpu" else f"training_{device.type}.json"
    )
    t_start = time.perf_counter()
    inputs = build_inputs(args, device)
    train = TrainConfig(epochs=args.epochs, device=args.device)
    runs = list(range(args.runs))
    kinds = args.models.split(",")
    load = [os.getloadavg()[0]]
    warm_up(inputs.x, kinds, runs, args)
    shapes = [measure_shape(kind, inputs.x, train, runs, args, device, load) for kind in kinds]
    result = result_record(args, device, inputs, train, shapes, load)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")  # kept if the grid overruns
    result["float64_equality_group_vs_alone"] = equality_check(device)
    if args.grid:
        result["deepprofile_grid"] = grid_estimate(inputs.x, inputs.n_train, args, device)
        result["load_average_1min"].append(round(os.getloadavg()[0], 2))
    result["bench_seconds"] = round(time.perf_counter() - t_start, 1)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print_report(result, args, inputs, train, out_path)
    return result


if __name__ == "__main__":
    main()
