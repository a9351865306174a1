"""Planted-module recovery: do ensembles find the programs hidden in a signature matrix?

Four seeded worlds over the 978 landmark genes, each with K = 6 planted modules of 30 genes:

``linear``     :func:`deeppert.data.synthetic.make_synthetic`: 3,000 signatures, disjoint
               modules, Laplace programs, signal fraction 0.6 (the issue's world).
``overlap``    as linear, but consecutive modules share 10 genes (a gene driven by two programs).
``nonlinear``  disjoint modules; programs 1-2 act through ``tanh(2a)`` (saturating), 3-4 through
               ``max(a - 0.5, 0)`` (threshold), 5 linearly, and module 6 responds to the product
               ``a5 * a6`` (one multiplicative interaction); responses scaled to unit variance.
``few``        as linear with 500 signatures.

For every world: PCA (100 components, all rows) -> AE and VAE x d in ``--dims`` x ``--runs``
seeds (``deeppert.train.fit``) -> IG gene weights (``attribute_genes``) -> every ensemble mode,
and the baselines on the same PCA input (PCA, FastICA through ``fit_baseline``; NMF on the
positive and negative parts of the matrix). Each planted module is matched one-to-one
(Hungarian) to a component; scores are the top-k precision (k = module size) and AUROC of
the matched component's ``|gene weight|``, each metric matched on its own, mean and worst
module. ``L`` is the number of components a mode chose (true K = 6). Stability is the
adjusted Rand index between the gene partitions (a gene labelled with the component whose top
k it is in, else background) of ensembles built from two disjoint halves of the seeds
(even / odd runs).

    PYTHONPATH=. .venv/bin/python bench/bench_recovery.py           # writes bench/results/recovery.md
    PYTHONPATH=. .venv/bin/python bench/bench_recovery.py --quick   # one world, 2 runs: a smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import NMF
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from deeppert.attribution import IGConfig, attribute_genes, attribute_rotated_components
from deeppert.baselines import fit_baseline
from deeppert.data import landmark_genes
from deeppert.data.synthetic import SynthConfig, make_synthetic
from deeppert.ensemble.modes import (
    EnsembleConfig,
    build_ensemble,
    configured_rotation,
    parse_variable_name,
)
from deeppert.models import ModelConfig
from deeppert.preprocess import PCAModel, fit_pca
from deeppert.train import TrainConfig, TrainedModels, fit

ROOT = Path(__file__).resolve().parents[1]
K, MODULE = 6, 30


@dataclass
class World:
    name: str
    X: np.ndarray  # samples x genes
    member: np.ndarray  # K x genes, bool
    genes: list[str]


# -- worlds -------------------------------------------------------------------------------
def _with_noise(signal: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise so that trace cov(signal) / trace cov(X) = ``fraction`` on the draw."""
    noise = rng.standard_normal(signal.shape)
    sc, ec = signal - signal.mean(0), noise - noise.mean(0)
    v_s, v_e, cross = (sc * sc).sum(), (ec * ec).sum(), (sc * ec).sum()
    sigma = (-cross + math.sqrt(cross * cross + v_e * (v_s / fraction - v_s))) / v_e
    x = signal + sigma * noise
    return x / x.std(0).mean()


def _loadings(rng: np.random.Generator, member: np.ndarray) -> np.ndarray:
    """Module genes |loading| ~ U(0.8, 1.2) with random sign, dense background N(0, 0.15^2)."""
    load = rng.normal(0.0, 0.15, size=member.shape)
    mag = rng.uniform(0.8, 1.2, size=member.shape) * rng.choice([-1.0, 1.0], size=member.shape)
    return np.where(member, mag, load)


def world_linear(seed: int, n: int = 3000, name: str = "linear") -> World:
    data = make_synthetic(
        SynthConfig(
            n_samples=n,
            n_programs=K,
            module_size=MODULE,
            signal_fraction=0.6,
            activity="laplace",
            seed=seed,
        )
    )
    member = data.membership.to_numpy().T
    return World(name, data.signatures.values, member, list(data.signatures.genes))


def world_overlap(seed: int, n: int = 3000) -> World:
    rng = np.random.default_rng(seed)
    genes = landmark_genes()
    order = rng.permutation(len(genes))
    member = np.zeros((K, len(genes)), bool)
    for k in range(K):  # module k = 30 consecutive genes of a permutation, step 20: 10 shared
        member[k, order[20 * k : 20 * k + MODULE]] = True
    act = rng.laplace(scale=1 / math.sqrt(2), size=(n, K))
    X = _with_noise(act @ _loadings(rng, member), 0.6, rng)
    return World("overlap", X, member, genes)


def world_nonlinear(seed: int, n: int = 3000) -> World:
    rng = np.random.default_rng(seed)
    genes = landmark_genes()
    order = rng.permutation(len(genes))
    member = np.zeros((K, len(genes)), bool)
    for k in range(K):
        member[k, order[MODULE * k : MODULE * (k + 1)]] = True
    a = rng.laplace(scale=1 / math.sqrt(2), size=(n, K))
    resp = np.stack(
        [
            np.tanh(2 * a[:, 0]),
            np.tanh(2 * a[:, 1]),
            np.maximum(a[:, 2] - 0.5, 0),
            np.maximum(a[:, 3] - 0.5, 0),
            a[:, 4],
            a[:, 4] * a[:, 5],
        ],
        axis=1,
    )
    resp = (resp - resp.mean(0)) / resp.std(0)
    X = _with_noise(resp @ _loadings(rng, member), 0.6, rng)
    return World("nonlinear", X, member, genes)


WORLDS: dict[str, Callable[[int], World]] = {
    "linear": world_linear,
    "overlap": world_overlap,
    "nonlinear": world_nonlinear,
    "few": lambda seed: world_linear(seed, n=500, name="few"),
}


# -- scoring ------------------------------------------------------------------------------
def _top(w: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-np.abs(w), kind="stable")[:k]


def score(member: np.ndarray, weights: np.ndarray) -> dict:
    """Hungarian-matched top-k precision and AUROC of components (rows of ``weights``)."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    prec = np.zeros((len(member), len(weights)))
    auc = np.zeros_like(prec)
    for m, mem in enumerate(member):
        k = int(mem.sum())
        for c, w in enumerate(weights):
            prec[m, c] = mem[_top(w, k)].mean()
            auc[m, c] = roc_auc_score(mem, np.abs(w))

    def matched(s: np.ndarray) -> np.ndarray:
        rows, cols = linear_sum_assignment(-s)
        out = np.zeros(len(member))  # a module left without a component scores 0 (0.5 AUROC)
        out[rows] = s[rows, cols]
        return out

    p = matched(prec)
    a = matched(auc)
    a[~np.isin(np.arange(len(member)), linear_sum_assignment(-auc)[0])] = 0.5
    return {
        "prec_mean": float(p.mean()),
        "prec_worst": float(p.min()),
        "auroc_mean": float(a.mean()),
        "auroc_worst": float(a.min()),
        "L": len(weights),
    }


def gene_partition(weights: np.ndarray, k: int = MODULE) -> np.ndarray:
    """Gene labels: 1 + the component whose top ``k`` holds the gene (highest |z| wins), else 0."""
    W = np.abs(np.atleast_2d(weights))
    z = (W - W.mean(1, keepdims=True)) / np.where(
        W.std(1, keepdims=True) > 0, W.std(1, keepdims=True), 1
    )
    labels = np.zeros(W.shape[1], dtype=np.int64)
    best = np.full(W.shape[1], -np.inf)
    for c, w in enumerate(W):
        top = _top(w, k)
        better = z[c, top] > best[top]
        labels[top[better]] = c + 1
        best[top[better]] = z[c, top[better]]
    return labels


# -- training -----------------------------------------------------------------------------
@dataclass
class Grid:
    pca: PCAModel
    x: np.ndarray  # PCA scores (n, p)
    latents: pd.DataFrame  # samples x variables
    gene_weights: pd.DataFrame  # genes x variables
    seconds: float
    # genes x rotated components (``<model>_run<r>_ic<k>``): IG of each run's code rotated as
    # the default consensus rotates it; only when ``args.rotated_ig`` is set
    rotated_weights: pd.DataFrame | None = None
    # the same, IG taken with respect to the genes the PCA keeps (``space="genes"``)
    rotated_gene_space: pd.DataFrame | None = None


def _rotation_maps(z: np.ndarray, x: np.ndarray, pca: PCAModel) -> list[np.ndarray]:
    """Each run's map to its components, exactly as the default consensus rotates codes."""
    return [configured_rotation(zr, x, pca, EnsembleConfig())[1:] for zr in z]


def _rotated_ig(
    models: list[TrainedModels], x: np.ndarray, pca: PCAModel, args: argparse.Namespace
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """IG of every run's components under the default rotation (PCA space, gene space)."""
    rows = np.sort(np.random.default_rng(0).choice(len(x), min(args.ig_rows, len(x)), False))
    ig = IGConfig(n_steps=args.ig_steps)
    rw, rg = [], []
    for tm in models:
        maps = _rotation_maps(tm.embed(x).astype(np.float64), x.astype(np.float64), pca)
        rw += attribute_rotated_components(tm, x[rows], pca, maps, config=ig).frames
        rg += attribute_rotated_components(tm, x[rows], pca, maps, config=ig, space="genes").frames
    return pd.concat(rw, axis=1), pd.concat(rg, axis=1)


def train_grid(world: World, args: argparse.Namespace) -> Grid:
    """Train and attribute the grid; with ``--cache`` reuse a grid trained with the same settings.

    With ``args.rotated_ig`` also the IG gene weights of every run's components under the
    default rotation (cached per rotation; the cached models are reused for it)."""
    rotated = getattr(args, "rotated_ig", False)
    t0 = time.perf_counter()
    pca = fit_pca(world.X, world.genes, args.pca)
    x = pca.transform(world.X).astype(np.float32)
    key = f"{world.name}_s{args.seed}_{'-'.join(args.models)}_d{'-'.join(map(str, args.dims))}"
    key += f"_r{args.runs}_e{args.epochs}_p{args.pca}_ig{args.ig_steps}x{args.ig_rows}"
    cached = args.cache / key if args.cache else None
    rotation = EnsembleConfig().rotation
    rot_files = [f"rotated_weights_{rotation}", f"rotated_gene_space_{rotation}"]
    if cached is not None and (cached / "seconds.json").is_file():
        grid = Grid(
            pca,
            x.astype(np.float64),
            pd.read_parquet(cached / "latents.parquet"),
            pd.read_parquet(cached / "gene_weights.parquet"),
            json.loads((cached / "seconds.json").read_text())["seconds"],
        )
        if rotated:
            if not (cached / f"{rot_files[1]}.parquet").is_file():
                models = [TrainedModels.load(p) for p in sorted((cached / "models").iterdir())]
                for name, frame in zip(rot_files, _rotated_ig(models, x, pca, args), strict=True):
                    frame.to_parquet(cached / f"{name}.parquet")
            grid.rotated_weights = pd.read_parquet(cached / f"{rot_files[0]}.parquet")
            grid.rotated_gene_space = pd.read_parquet(cached / f"{rot_files[1]}.parquet")
        return grid
    lat, gw, models = [], [], []
    for kind in args.models:
        for d in args.dims:
            tm = fit(
                x,
                ModelConfig(kind=kind, latent_dim=d, n_inputs=args.pca),
                TrainConfig(epochs=args.epochs),
                runs=range(args.runs),
            )
            models.append(tm)
            z = tm.embed(x)
            rows = np.random.default_rng(0).choice(len(x), min(args.ig_rows, len(x)), replace=False)
            ig = IGConfig(n_steps=args.ig_steps)
            ga = attribute_genes(tm, x[np.sort(rows)], pca, config=ig)
            for r in range(args.runs):
                lat.append(pd.DataFrame(z[r], columns=tm.node_names(r)))
                gw.append(ga.frame(r))
    rw, rg = _rotated_ig(models, x, pca, args) if rotated else (None, None)
    grid = Grid(
        pca,
        x.astype(np.float64),
        pd.concat(lat, axis=1),
        pd.concat(gw, axis=1),
        time.perf_counter() - t0,
        rw,
        rg,
    )
    if cached is not None:
        cached.mkdir(parents=True, exist_ok=True)
        grid.latents.to_parquet(cached / "latents.parquet")
        grid.gene_weights.to_parquet(cached / "gene_weights.parquet")
        for tm in models:
            tm.save(cached / "models" / tm.name)
        if rotated:
            grid.rotated_weights.to_parquet(cached / f"{rot_files[0]}.parquet")
            grid.rotated_gene_space.to_parquet(cached / f"{rot_files[1]}.parquet")
        (cached / "seconds.json").write_text(json.dumps({"seconds": grid.seconds}))
    return grid


# -- methods ------------------------------------------------------------------------------
def ensemble_modes() -> dict[str, tuple[EnsembleConfig, str]]:
    """Mode name -> (config, cluster_on)."""
    ref = EnsembleConfig(method="gmeans")
    return {
        "ensemble GMeans latents (reference)": (ref, "latents"),
        "ensemble GMeans latents, sign-aligned": (
            EnsembleConfig(method="gmeans", sign_alignment="centroid"),
            "latents",
        ),
        "ensemble GMeans gene weights": (ref, "gene_weights"),
        "ensemble KMeans(K) latents, sign-aligned (oracle L)": (
            EnsembleConfig(method="gmeans", n_clusters=K, sign_alignment="centroid"),
            "latents",
        ),
        "consensus, default rotation": (EnsembleConfig(method="consensus"), "latents"),
        "consensus, no rotation": (
            EnsembleConfig(method="consensus", rotation="none"),
            "latents",
        ),
    }


def run_world(world: World, args: argparse.Namespace) -> list[dict]:
    grid = train_grid(world, args)
    print(f"[{world.name}] trained + attributed in {grid.seconds:.0f} s", flush=True)
    rows: list[dict] = []
    runs = sorted({parse_variable_name(v)[1] for v in grid.latents.columns})
    halves = (runs[0::2], runs[1::2])
    run_of = np.array([parse_variable_name(v)[1] for v in grid.latents.columns])
    for mode, (config, cluster_on) in ensemble_modes().items():
        t0 = time.perf_counter()
        ens = build_ensemble(
            grid.latents,
            grid.gene_weights,
            config=config,
            cluster_on=cluster_on,
            x_pca=grid.x,
            pca=grid.pca,
        )
        seconds = time.perf_counter() - t0
        parts = []
        for half in halves:
            cols = grid.latents.columns[np.isin(run_of, half)]
            e = build_ensemble(
                grid.latents[cols],
                grid.gene_weights[cols],
                config=config,
                cluster_on=cluster_on,
                x_pca=grid.x,
                pca=grid.pca,
            )
            parts.append(gene_partition(e.weights.to_numpy()))
        rows.append(
            {
                "method": mode,
                **score(world.member, ens.weights.to_numpy()),
                "stability_ari": adjusted_rand_score(*parts),
                "seconds": seconds,
            }
        )
        print(f"[{world.name}] {mode}: {rows[-1]}", flush=True)
    singles = []
    models = sorted({parse_variable_name(v)[0] for v in grid.latents.columns})
    for model in models:
        for r in runs:
            cols = [c for c in grid.gene_weights.columns if c.startswith(f"{model}_run{r}_")]
            singles.append(
                {
                    "model": f"{model}_run{r}",
                    **score(world.member, grid.gene_weights[cols].to_numpy().T),
                }
            )
    single = pd.DataFrame(singles)
    med = single.drop(columns="model").median(numeric_only=True).to_dict()
    best = single.sort_values("prec_mean", ascending=False).iloc[0]
    rows.append({"method": "single model, median over models", **med})
    rows.append({"method": f"single model, best ({best['model']})", **best.drop("model").to_dict()})
    d = max(args.dims)
    ids = [str(i) for i in range(len(grid.x))]
    for kind in ("PCA", "ICA"):
        b = fit_baseline(kind, grid.x, grid.pca, d, sample_ids=ids, seed=0)
        rows.append({"method": f"{kind} d{d}", **score(world.member, b.gene_weights.to_numpy().T)})
    Xc = world.X - world.X.mean(0)
    nmf = NMF(n_components=d, init="nndsvd", max_iter=500, random_state=0).fit(
        np.hstack([np.maximum(Xc, 0), np.maximum(-Xc, 0)])
    )
    H = nmf.components_
    g = world.X.shape[1]
    rows.append({"method": f"NMF d{d} (X+, X-)", **score(world.member, H[:, :g] + H[:, g:])})
    for r in rows:
        r["world"] = world.name
    return rows


def run_scale(args: argparse.Namespace) -> dict:
    """DeepProfile-sized consensus, end to end: dims 5,10,25,50,75,100 x ``--scale-runs`` runs
    over 15,000 samples (26,500 latent variables at 100 runs), latents float32, no training:
    each model's code is a random linear map of the PCA scores of a planted world plus noise.
    ``build_ensemble`` runs with the default consensus config (default rotation of every run, the
    selection curve over l_min..l_max); the ICA of one run per dim is also timed on its own."""
    import resource

    from deeppert.ensemble.modes import rotate_code

    def rss_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rng = np.random.default_rng(args.seed)
    n, p, dims = 15_000, args.pca, (5, 10, 25, 50, 75, 100)
    world = world_linear(args.seed, n=n)
    pca = fit_pca(world.X, world.genes, p)
    x = pca.transform(world.X)
    del world
    values = np.empty((n, sum(dims) * args.scale_runs), dtype=np.float32)  # filled in place
    cols: list[str] = []
    for d in dims:
        for r in range(args.scale_runs):
            z = x @ rng.normal(size=(p, d)) + 0.1 * rng.normal(size=(n, d))
            values[:, len(cols) : len(cols) + d] = z
            cols += [f"AE_d{d}_run{r}_z{k:02d}" for k in range(d)]
    latents = pd.DataFrame(values, columns=cols, copy=False)
    config = EnsembleConfig(method="consensus")
    out = {
        "n_variables": latents.shape[1],
        "n_models": len(dims) * args.scale_runs,
        "n_samples": n,
        "latents_gib_float32": latents.memory_usage(index=False).sum() / 2**30,
        "config": config.to_dict(),
        "peak_rss_mib_after_inputs": rss_mib(),
    }
    ica_seconds = {}
    for d in dims:
        z = latents[[c for c in cols if c.startswith(f"AE_d{d}_run0_")]].to_numpy(np.float64)
        t0 = time.perf_counter()
        rotate_code(z, "ica", seed=0, max_iter=config.ica_max_iter, max_rows=config.ica_max_rows)
        ica_seconds[d] = time.perf_counter() - t0
    out["ica_seconds_one_run_per_dim"] = ica_seconds
    out["ica_seconds_all_runs_estimate"] = sum(ica_seconds.values()) * args.scale_runs
    print(json.dumps(out, indent=1, default=float), flush=True)
    t0 = time.perf_counter()
    ens = build_ensemble(latents, config=config, x_pca=x, pca=pca)
    out["consensus_end_to_end"] = {
        "seconds": time.perf_counter() - t0,
        "L": ens.n_clusters,
        "kept": len(ens.labels),
        "dropped": ens.n_dropped,
        "selection": ens.selection.reset_index().to_dict(orient="records"),
    }
    out["peak_rss_mib"] = rss_mib()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["process_cpu_seconds"] = usage.ru_utime + usage.ru_stime
    print(json.dumps(out, indent=1, default=float))
    dest = args.out.with_name(args.out.stem + "_scale.json")
    dest.write_text(json.dumps(out, indent=1, default=float) + "\n")
    return out


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--worlds", default="linear,overlap,nonlinear,few")
    p.add_argument("--models", default="AE,VAE")
    p.add_argument("--dims", default="5,10")
    p.add_argument("--runs", type=int, default=6)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--pca", type=int, default=100)
    p.add_argument("--ig-steps", type=int, default=50)
    p.add_argument("--ig-rows", type=int, default=500, help="rows (seeded sample) IG averages over")
    p.add_argument("--seed", type=int, default=11, help="seed of the world generators")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="linear world, 2 runs, 5 epochs")
    p.add_argument("--cache", type=Path, help="reuse trained grids stored here (same settings)")
    p.add_argument(
        "--train-only", action="store_true", help="train and cache the grids, no scoring"
    )
    p.add_argument("--scale", action="store_true", help="DeepProfile-sized consensus: time, RSS")
    p.add_argument("--scale-runs", type=int, default=100)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "recovery.md")
    args = p.parse_args(argv)
    if args.quick:
        args.worlds, args.runs, args.epochs = "linear", 2, 5
    args.models = args.models.split(",")
    args.dims = [int(d) for d in args.dims.split(",")]
    torch.set_num_threads(args.threads)
    if args.scale:
        run_scale(args)
        return pd.DataFrame()
    t0 = time.perf_counter()
    rows = []
    for name in args.worlds.split(","):
        world = WORLDS[name](args.seed)
        if args.train_only:
            t_w = time.perf_counter()
            grid = train_grid(world, args)
            print(
                f"[{name}] trained in {grid.seconds:.0f} s ({time.perf_counter() - t_w:.0f} s)",
                flush=True,
            )
            continue
        rows.extend(run_world(world, args))
    if args.train_only:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    total = time.perf_counter() - t0
    write_report(table, args, total, argv)
    return table


def _markdown(frame: pd.DataFrame) -> str:
    def cell(v) -> str:
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:.3f}"
        return str(v)

    out = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.shape[1]]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(out)


def write_report(table: pd.DataFrame, args: argparse.Namespace, total: float, argv) -> None:
    cols = ["method", "prec_mean", "prec_worst", "auroc_mean", "auroc_worst", "L", "stability_ari"]
    lines = [
        "# Planted-module recovery (bench/bench_recovery.py)",
        "",
        "Command: `PYTHONPATH=. .venv/bin/python bench/bench_recovery.py "
        + " ".join(argv if argv is not None else __import__("sys").argv[1:])
        + "`",
        "",
        f"Settings: models {','.join(args.models)} x dims {args.dims} x {args.runs} runs, "
        f"{args.epochs} epochs, PCA {args.pca}, IG {args.ig_steps} steps averaged over "
        f"{args.ig_rows} sampled rows, world seed {args.seed}, "
        f"{args.threads} torch threads. True K = {K} modules of {MODULE} genes. "
        f"Total {total / 60:.1f} min on a 2-core CPU shared with other helpers.",
        "",
        "prec = Hungarian-matched top-30 precision, auroc = matched AUROC of |weight| (mean / worst "
        "module); L = components; stability_ari = ARI of the gene partitions of ensembles from "
        "even vs odd runs.",
        "",
    ]
    for world, group in table.groupby("world", sort=False):
        lines += [f"## {world}", "", _markdown(group.reindex(columns=cols)), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    (args.out.with_suffix(".json")).write_text(table.to_json(orient="records", indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
