"""The pure compute path at DeepProfile scale on one device: train -> IG -> ensemble.

15,000 x 978 synthetic signatures, PCA to 100 components, VAE and AE at latent dims
5, 10, 25, 50, 75, 100, 100 runs each (1,200 models: every shape's 100 runs trained in one
vectorised pass), Integrated Gradients gene weights for every latent node, then one ensemble
of all latent variables. Reports each stage's wall time and peak device memory
(``torch.cuda.max_memory_allocated``; on CPU the sampled process RSS) against the issue's
target of 10 minutes in total on one H100.

No Ray, MLflow, captum or anndata (the GPU image has none of them): captum is only needed
for its Gauss-Legendre quadrature nodes, which :func:`_quadrature_shim` provides with numpy
when captum is absent (the same formula captum uses).

It stays inside ``--budget-s`` (default 480 s): before each shape it projects the shape's
training time from the time per (epoch x run) measured so far; when the rest would not fit,
that shape trains ``--probe-epochs`` epochs only and its full time is extrapolated (flagged
``"extrapolated": true``; its IG and latents still come from the probe-trained models).
Results are rewritten to ``--out`` after every stage, so a cut-off run still leaves them.

Usage::

    python bench/gpu_pipeline.py --out bench/results/gpu_pipeline_h100.json            # full, GPU
    python bench/gpu_pipeline.py --scale 0.05 --device cpu --out /tmp/rehearsal.json   # rehearsal
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

MIB = 2**20


def _quadrature_shim() -> None:
    """Provide ``captum.attr._utils.approximation_methods.approximation_parameters`` with numpy
    when captum is not installed (Gauss-Legendre only: what deeppert's IG uses by default)."""
    try:
        import captum.attr._utils.approximation_methods  # noqa: F401

        return
    except ImportError:
        pass

    def approximation_parameters(method: str):
        if method != "gausslegendre":
            raise ValueError(f"captum missing: only gausslegendre is available, not {method!r}")

        def step_sizes(n: int) -> list[float]:
            return list(0.5 * np.polynomial.legendre.leggauss(n)[1])

        def alphas(n: int) -> list[float]:
            return list(0.5 * (1 + np.polynomial.legendre.leggauss(n)[0]))

        return step_sizes, alphas

    names = [
        "captum",
        "captum.attr",
        "captum.attr._utils",
        "captum.attr._utils.approximation_methods",
    ]
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[names[-1]].approximation_parameters = approximation_parameters


_quadrature_shim()

from deeppert.attribution import IGConfig, attribute_genes  # noqa: E402
from deeppert.data.synthetic import SynthConfig, make_synthetic  # noqa: E402
from deeppert.models import ModelConfig  # noqa: E402
from deeppert.preprocess import PCAModel, fit_pca, split_indices  # noqa: E402
from deeppert.train import TrainConfig, fit  # noqa: E402

DIMS = (5, 10, 25, 50, 75, 100)
MODELS = ("VAE", "AE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Stage:
    """Wall time and peak memory of one block of work (device peak on CUDA, RSS on CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> Stage:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.rss_peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.rss_peak = max(self.rss_peak, _rss())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.rss_peak = max(self.rss_peak, _rss())
        self.gpu_peak_mib = (
            torch.cuda.max_memory_allocated() / MIB if self.device.type == "cuda" else 0.0
        )

    def record(self) -> dict:
        return {
            "seconds": round(self.seconds, 3),
            "gpu_peak_allocated_mib": round(self.gpu_peak_mib, 1),
            "process_peak_rss_mib": round(self.rss_peak / MIB, 1),
        }


def _write(path: Path, results: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The pipeline's flags: output, scale, device, epochs, time budget, IG and ensemble knobs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON results file")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of samples and runs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--probe-epochs", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=480.0)
    parser.add_argument("--ig-steps", type=int, default=50)
    parser.add_argument("--ig-samples", type=int, default=0, help="0 = all training samples")
    parser.add_argument("--cluster-on", choices=["gene_weights", "latents"], default="gene_weights")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    return parser.parse_args(argv)


def results_header(
    args: argparse.Namespace, device: torch.device, n_samples: int, runs: int
) -> dict:
    """The results JSON before any stage ran: machine, sizes and settings, empty stages."""
    return {
        "benchmark": "pure compute path at DeepProfile scale: train -> IG -> ensemble",
        "target": "10 minutes in total on one H100",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "scale": args.scale,
        "n_samples": n_samples,
        "n_genes": 978,
        "n_components": 100,
        "models": list(MODELS),
        "latent_dims": list(DIMS),
        "runs_per_shape": runs,
        "epochs": args.epochs,
        "budget_s": args.budget_s,
        "ig": {"n_steps": args.ig_steps, "method": "gausslegendre"},
        "ensemble": {"cluster_on": args.cluster_on},
        "stages": {},
        "shapes": [],
    }


def build_inputs(
    args: argparse.Namespace, device: torch.device, n_samples: int, results: dict
) -> tuple[np.ndarray, np.ndarray, PCAModel]:
    """Synthetic signatures -> PCA training scores (the ``data_pca`` stage) and the rows IG
    attributes; returns ``(x_train, x_ig, pca)`` and records the stage and row counts."""
    with Stage(device) as st:
        signatures = make_synthetic(SynthConfig(n_samples=n_samples, seed=0)).signatures
        train_idx, _ = split_indices(signatures.n_samples, 0.1, 0)
        pca = fit_pca(signatures.values[train_idx], signatures.genes, 100)
        x_train = pca.transform(signatures.values[train_idx])
    results["stages"]["data_pca"] = st.record()
    ig_rows = slice(None) if not args.ig_samples else slice(0, args.ig_samples)
    x_ig = x_train[ig_rows]
    results["n_train_rows"] = int(len(train_idx))
    results["n_ig_rows"] = int(len(x_ig))
    return x_train, x_ig, pca


def epochs_within_budget(
    args: argparse.Namespace,
    left: float,
    rest: list[tuple[str, int]],
    runs: int,
    per_unit: list[float],
    ig_unit: list[float],
) -> int:
    """All epochs when the remaining shapes' projected train + IG time fits in ``left``
    seconds, else the probe epochs (the shape's full time is then extrapolated)."""
    projected = (np.mean(per_unit) * args.epochs * runs * len(rest)) if per_unit else 0.0
    projected += np.mean(ig_unit) * sum(d for _, d in rest) if ig_unit else 0.0
    if per_unit and projected > left:
        return min(args.probe_epochs, args.epochs)
    return args.epochs


@dataclass
class ShapeRun:
    """One shape's timed training and IG, and the latent and gene-weight frames it adds."""

    train: dict
    train_seconds: float
    ig: dict
    ig_seconds: float
    latents: list[pd.DataFrame]
    weights: list[pd.DataFrame]
    max_rel_completeness_error: float


def train_and_attribute(
    kind: str,
    dim: int,
    epochs: int,
    runs: int,
    inputs: tuple[np.ndarray, np.ndarray, PCAModel],
    args: argparse.Namespace,
    device: torch.device,
) -> ShapeRun:
    """Train one shape's runs vectorised, then its IG gene weights, each a timed stage."""
    x_train, x_ig, pca = inputs
    model_config = ModelConfig(kind=kind, latent_dim=dim, n_inputs=100)
    train_config = TrainConfig(epochs=epochs, batch_size=256, device=str(device))
    with Stage(device) as train_stage:
        trained = fit(x_train, model_config, train_config, list(range(runs)))
    with Stage(device) as ig_stage:
        attribution = attribute_genes(trained, x_ig, pca, config=IGConfig(n_steps=args.ig_steps))
    latents = trained.latents_frames(x_train, [str(j) for j in range(len(x_train))])
    weights = [attribution.frame(r) for r in range(runs)]
    del trained
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return ShapeRun(
        train=train_stage.record(),
        train_seconds=train_stage.seconds,
        ig=ig_stage.record(),
        ig_seconds=ig_stage.seconds,
        latents=latents,
        weights=weights,
        max_rel_completeness_error=float(np.max(attribution.relative_delta)),
    )


def run_shapes(
    args: argparse.Namespace,
    device: torch.device,
    runs: int,
    inputs: tuple[np.ndarray, np.ndarray, PCAModel],
    results: dict,
    out: Path,
    start: float,
) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """Train and attribute every (model, dim) within the budget, recording the ``train`` and
    ``ig`` stages after each shape; returns all latent and gene-weight frames."""
    stages = results["stages"]
    latents, weights = [], []
    train_total = ig_total = 0.0
    gpu_train = gpu_ig = 0.0
    per_unit: list[float] = []  # training seconds per (epoch x run) measured so far
    ig_unit: list[float] = []  # IG seconds per latent dimension measured so far
    shapes = [(m, d) for m in MODELS for d in DIMS]
    reserve = 0.15 * args.budget_s  # kept for IG of the rest + the ensemble
    for i, (kind, dim) in enumerate(shapes):
        left = args.budget_s - (time.perf_counter() - start) - reserve
        epochs = epochs_within_budget(args, left, shapes[i:], runs, per_unit, ig_unit)
        shape = train_and_attribute(kind, dim, epochs, runs, inputs, args, device)
        unit = shape.train_seconds / (epochs * runs)
        if epochs == args.epochs:
            per_unit.append(unit)
        full_train_s = unit * args.epochs * runs
        ig_unit.append(shape.ig_seconds / dim)
        latents.extend(shape.latents)
        weights.extend(shape.weights)
        train_total += full_train_s
        ig_total += shape.ig_seconds
        gpu_train = max(gpu_train, shape.train["gpu_peak_allocated_mib"])
        gpu_ig = max(gpu_ig, shape.ig["gpu_peak_allocated_mib"])
        results["shapes"].append(
            {
                "model": kind,
                "latent_dim": dim,
                "runs": runs,
                "epochs_run": epochs,
                "extrapolated": epochs != args.epochs,
                "train": shape.train,
                "train_seconds_full_epochs": round(full_train_s, 3),
                "ig": shape.ig,
                "ig_max_rel_completeness_error": shape.max_rel_completeness_error,
            }
        )
        stages["train"] = {
            "seconds": round(train_total, 3),
            "gpu_peak_allocated_mib": gpu_train,
            "extrapolated_shapes": sum(s["extrapolated"] for s in results["shapes"]),
        }
        stages["ig"] = {"seconds": round(ig_total, 3), "gpu_peak_allocated_mib": gpu_ig}
        note = f", extrapolated to {full_train_s:.1f}s" if epochs != args.epochs else ""
        print(
            f"{kind} d{dim} x{runs}: train {shape.train['seconds']:.1f}s ({epochs} epochs{note}), "
            f"IG {shape.ig['seconds']:.1f}s, elapsed {time.perf_counter() - start:.0f}s",
            flush=True,
        )
        _write(out, results)
    return latents, weights


def run_ensemble(
    latents: list[pd.DataFrame],
    weights: list[pd.DataFrame],
    args: argparse.Namespace,
    device: torch.device,
    results: dict,
    out: Path,
) -> bool:
    """One G-means ensemble of all latent variables (the ``ensemble`` stage); False when
    scikit-learn / scipy are missing, keeping the train and IG figures."""
    stages = results["stages"]
    try:
        from deeppert.ensemble.modes import EnsembleConfig, build_ensemble
    except ImportError as exc:
        stages["ensemble"] = {"skipped": f"{type(exc).__name__}: {exc}", "seconds": 0.0}
        _write(out, results)
        print(f"ensemble skipped: {exc}")
        return False
    with Stage(device) as st:
        latent_frame = pd.concat(latents, axis=1)
        weight_frame = pd.concat(weights, axis=1)
        ensemble = build_ensemble(
            latent_frame,
            weight_frame,
            config=EnsembleConfig(method="gmeans"),
            cluster_on=args.cluster_on,
        )
    stages["ensemble"] = {
        **st.record(),
        "latent_variables": int(latent_frame.shape[1]),
        "clusters": int(ensemble.n_clusters),
        "gmeans_clusters": ensemble.gmeans_n_clusters,
    }
    return True


def main(argv: list[str] | None = None) -> int:
    """Run data + PCA, train + IG of every shape and the ensemble; write the stage times."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    device = torch.device(args.device)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n_samples = max(200, int(round(15000 * args.scale)))
    runs = max(2, int(round(100 * args.scale)))
    results = results_header(args, device, n_samples, runs)
    inputs = build_inputs(args, device, n_samples, results)
    _write(out, results)
    latents, weights = run_shapes(args, device, runs, inputs, results, out, start)
    if not run_ensemble(latents, weights, args, device, results, out):
        return 1
    stages = results["stages"]
    total = sum(stages[s]["seconds"] for s in ("data_pca", "train", "ig", "ensemble"))
    results["total_seconds"] = round(total, 3)
    results["wall_seconds_this_run"] = round(time.perf_counter() - start, 3)
    results["within_target_600s"] = total <= 600
    _write(out, results)
    print(
        f"total {total:.1f}s (train {stages['train']['seconds']:.1f}, IG {stages['ig']['seconds']:.1f}, "
        f"ensemble {stages['ensemble']['seconds']:.1f}, data+PCA {stages['data_pca']['seconds']:.1f}); "
        f"{stages['ensemble']['latent_variables']} latent variables -> "
        f"{stages['ensemble']['clusters']} clusters; wrote {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
