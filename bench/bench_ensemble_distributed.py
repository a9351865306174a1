"""The ensemble step distributed and streamed: speed-up over CPUs, peak memory against runs.

Synthetic planted programs (``--samples`` x 978 genes, PCA to 100 components); each model run's
code is a random mixture of the programs plus noise, at latent dims 5, 10, 25, 50.

* Speed-up: the per-run rotations and loadings (:func:`deeppert.ensemble.modes.components_by_run`)
  in process, then as Ray tasks (``ray_jobs/_distributed.py``) on a local Ray of 1 and of 2
  CPUs; then the rest of the step with those components (``ensemble_step(precomputed=)``:
  density filter, L scan, loadings, embedding, split-half stability, baselines) in process
  and with its independent pieces as Ray tasks (``mapper=ray_map``), as the ensemble job runs it.
* Memory: the whole step (stability included) in a fresh process per point, over the same
  per-run Parquet files read into one DataFrame (what ``deeppert ensemble`` and the ensemble
  job do) or through a :class:`~deeppert.latent_store.LatentStore` (one run at a time); peak
  RSS from ``getrusage`` of that process.

Usage::

    python bench/bench_ensemble_distributed.py --samples 5000 --speedup-runs 15 \
        --memory-runs 5 15 30 --out bench/results/ensemble_distributed.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# One BLAS thread here as in each Ray task (set before numpy loads BLAS): the in-process
# baseline is one CPU's work, and its FastICA sees the same arithmetic as the tasks'. With
# another thread count the rotations of a run's Gaussian (unidentifiable) directions differ.
THREADS = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
os.environ.update(THREADS)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local bench cluster: no token

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DIMS = (5, 10, 25, 50)


def write_case(folder: Path, samples: int, runs: int, programs: int = 10, seed: int = 0) -> None:
    """Planted programs -> PCA scores + model; one Parquet file of latents per model run."""
    from deeppert.preprocess import fit_pca

    rng = np.random.default_rng(seed)
    genes = 978
    member = np.zeros((programs, genes), bool)
    for k in range(programs):
        member[k, k * 40 : (k + 1) * 40] = True
    load = np.where(member, rng.uniform(0.8, 1.2, member.shape), rng.normal(0, 0.1, member.shape))
    A = rng.laplace(size=(samples, programs))
    X = A @ load + rng.normal(size=(samples, genes))
    pca = fit_pca(X, [f"g{j}" for j in range(genes)], 100)
    folder.mkdir(parents=True)
    pca.save(folder / "pca")
    np.save(folder / "x_pca.npy", pca.transform(X))
    index = pd.Index([f"s{i}" for i in range(samples)], name="sample_id")
    (folder / "latents").mkdir()
    for run in range(runs):
        for d in DIMS:
            code = A @ rng.normal(size=(programs, d)) + 0.3 * rng.normal(size=(samples, d))
            cols = [f"AE_d{d}_run{run}_z{k:02d}" for k in range(d)]
            pd.DataFrame(code, index=index, columns=cols).to_parquet(
                folder / "latents" / f"AE_d{d}_run{run}.parquet"
            )


def load_case(folder: Path, mode: str):
    from deeppert.latent_store import LatentStore
    from deeppert.preprocess import PCAModel

    files = {p.stem: p for p in sorted((folder / "latents").glob("*.parquet"))}
    if mode == "store":
        latents = LatentStore.from_files(files)
    else:
        latents = pd.concat([pd.read_parquet(p) for p in files.values()], axis=1)
    return latents, np.load(folder / "x_pca.npy"), PCAModel.load(folder / "pca")


def memory_point(folder: str, mode: str) -> None:
    """In a fresh process: the whole step; prints wall s and peak RSS MiB as JSON."""
    from deeppert.ensemble.modes import EnsembleConfig
    from deeppert.ensemble.stability import ensemble_step

    t0 = time.perf_counter()
    latents, x, pca = load_case(Path(folder), mode)
    step = ensemble_step(latents, None, config=EnsembleConfig(seed=0), x_pca=x, pca=pca)
    print(
        json.dumps(
            {
                "wall_s": round(time.perf_counter() - t0, 1),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "clusters": step.ensemble.n_clusters,
            }
        )
    )


def _warm() -> int:
    import deeppert.ensemble.modes  # noqa: F401  what every task imports once per worker

    time.sleep(1.0)
    return os.getpid()


def speedup(folder: Path, cpus: list[int]) -> dict:
    import ray

    from deeppert.ensemble.modes import EnsembleConfig, components_by_run
    from deeppert.ensemble.stability import ensemble_step
    from ray_jobs._distributed import distributed_components, ray_map

    config = EnsembleConfig(seed=0)
    latents, x, pca = load_case(folder, "frame")
    t0 = time.perf_counter()
    local = components_by_run(latents, x, pca, config)
    out = {"model_runs": len(local), "in_process_components_s": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    step = ensemble_step(latents, None, config=config, x_pca=x, pca=pca, precomputed=local)
    out["rest_of_step_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out), flush=True)  # each step as it ends: a run cut short keeps them
    for n in cpus:
        ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": THREADS})  # fmt: skip
        try:
            # every worker up, its imports done, before timing (sleeps spread them out)
            warm = ray.remote(num_cpus=1)(_warm)
            ray.get([warm.remote() for _ in range(n)])
            t0 = time.perf_counter()
            found = distributed_components(latents, x, pca, config)
            wall = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = ensemble_step(
                latents, None, config=config, x_pca=x, pca=pca, precomputed=found, mapper=ray_map
            )
            rest = time.perf_counter() - t0
        finally:
            ray.shutdown()
        same = all(np.array_equal(found[k].rotation, local[k].rotation) for k in local)
        out[f"ray_{n}cpu_components_s"] = round(wall, 1)
        out[f"ray_{n}cpu_rest_of_step_s"] = round(rest, 1)
        out[f"ray_{n}cpu_same_rotations"] = bool(same)
        out[f"ray_{n}cpu_same_weights"] = bool(
            np.allclose(again.ensemble.weights.to_numpy(), step.ensemble.weights.to_numpy())
        )
        out[f"ray_{n}cpu_same_stability"] = again.stability == step.stability
        print(json.dumps({k: v for k, v in out.items() if k.startswith(f"ray_{n}cpu")}), flush=True)
    for part in ("components", "rest_of_step"):
        base = out[f"ray_{cpus[0]}cpu_{part}_s"]
        out[f"speedup_{part}"] = {n: round(base / out[f"ray_{n}cpu_{part}_s"], 2) for n in cpus}
    whole = {n: out[f"ray_{n}cpu_components_s"] + out[f"ray_{n}cpu_rest_of_step_s"] for n in cpus}
    out["speedup_step"] = {n: round(whole[cpus[0]] / whole[n], 2) for n in cpus}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--speedup-runs", type=int, default=15, help="runs per latent dim")
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--memory-runs", type=int, nargs="*", default=[5, 15, 30])
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench/results/ensemble_distributed.json"
    )
    parser.add_argument(
        "--memory-point", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.memory_point:
        memory_point(*args.memory_point)
        return 0
    result = {
        "command": "python bench/bench_ensemble_distributed.py " + " ".join(sys.argv[1:]),
        "samples": args.samples,
        "dims": DIMS,
        "load_before": round(os.getloadavg()[0], 1),
    }
    with tempfile.TemporaryDirectory(prefix="deeppert-ensdist-") as tmp:
        case = Path(tmp) / f"r{args.speedup_runs}"
        write_case(case, args.samples, args.speedup_runs)
        result["speedup"] = speedup(case, args.cpus)
        print(json.dumps(result["speedup"]), flush=True)
        memory = []
        for runs in args.memory_runs:
            folder = Path(tmp) / f"m{runs}"
            write_case(folder, args.samples, runs)
            for mode in ("frame", "store"):
                done = subprocess.run(
                    [sys.executable, __file__, "--memory-point", str(folder), mode],
                    capture_output=True, text=True, check=True,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                )  # fmt: skip
                row = {"model_runs": runs * len(DIMS), "mode": mode,
                       **json.loads(done.stdout.strip().splitlines()[-1])}  # fmt: skip
                memory.append(row)
                print(json.dumps(row), flush=True)
        result["memory"] = memory
    result["load_after"] = round(os.getloadavg()[0], 1)
    result["notes"] = (
        "speedup_components: Ray tasks at 1 CPU over each CPU count (the per-run rotations and "
        "loadings); speedup_rest_of_step: the rest of the step (density filter, L scan, "
        "loadings, embedding, split-half stability, baselines) with its independent pieces as "
        "Ray tasks (ray_map), at 1 CPU over each count (rest_of_step_s: all in process); "
        "speedup_step: both; "
        "memory: peak RSS of a fresh process running the whole step (stability included) "
        "from per-run Parquet files, 'frame' = all latents read into one DataFrame, 'store' = "
        "LatentStore (one run at a time); measured on a shared 2-core machine (load above)"
    )
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
