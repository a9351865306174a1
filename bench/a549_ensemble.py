"""GMeans / KMeans on the reference's real A549 VAE latents (../shared/data/deeppert-seed/a549_vae).

Six latent matrices (5 runs of d=5, one of d=10: 35 variables over 15,166 signatures, rows
aligned by position, repeated ids). They were saved from the VAE's sampling layer, not the
posterior mean. Reports L, cluster sizes, the ARI of labels across 5 GMeans seeds and the
best-match correlation of latent variables between runs; writes bench/results/a549_ensemble.json.

The consensus mode (``ensemble.method = consensus``) needs the PCA scores the latents came
from; the folder holds no signatures, so here the "PCA" is that of the 35 standardised latent
variables themselves: components are compared by their covariance with every principal axis
of all latents (an honest stand-in, not the gene-space loadings the mode gives on a run folder).
Reported: L per seed, components dropped as unreproduced, the selection curve of seed 0, and the
median matched |correlation| of the consensus profiles from runs {0, 2, 4} vs {1, 3}.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from deeppert.ensemble.modes import EnsembleConfig, build_ensemble, gmeans, prepare_variables
from deeppert.ensemble.stability import correlation_matrix, match_rows
from deeppert.errors import DeeppertError
from deeppert.preprocess import fit_pca

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "deeppert-seed" / "a549_vae"


def main() -> dict:
    if not DATA.is_dir():
        sys.exit(f"real data not found at {DATA}")
    frames = []
    for path in sorted(DATA.glob("latent_*L_run*.tsv")):
        dim, run = path.stem.split("_")[1][:-1], int(path.stem.split("run")[1])
        f = pd.read_csv(path, sep="\t", index_col=0)
        f.columns = [f"VAE_d{dim}_run{run}_z{int(c)}" for c in f.columns]
        frames.append(f)
    ids = frames[0].index
    assert all((f.index == ids).all() for f in frames), "row order differs between files"
    latents = pd.concat([f.set_axis(ids, axis=0) for f in frames], axis=1)
    V = prepare_variables(latents)
    out: dict = {
        "n_variables": V.shape[0],
        "n_samples": V.shape[1],
        "duplicate_row_ids": int(ids.duplicated().sum()),
    }
    for sa in ("none", "centroid"):
        runs = {}
        for seed in range(5):
            e = build_ensemble(
                latents, config=EnsembleConfig(method="gmeans", seed=seed, sign_alignment=sa)
            )
            runs[seed] = e
        labels = [runs[s].labels["cluster"].to_numpy() for s in runs]
        out[f"sign_{sa}"] = {
            "L_per_seed": [runs[s].n_clusters for s in runs],
            "cluster_sizes_seed0": runs[0].sizes.tolist(),
            "ari_pairs_min": min(
                adjusted_rand_score(a, b) for a, b in itertools.combinations(labels, 2)
            ),
            "ari_pairs_mean": float(
                np.mean([adjusted_rand_score(a, b) for a, b in itertools.combinations(labels, 2)])
            ),
        }
    gm = [gmeans(V, seed=s) for s in range(5)]
    out["gmeans_leaves_per_seed"] = [g.n_clusters for g in gm]
    # best-match |correlation| of latent variables between runs of d=5
    d5 = [c for c in latents.columns if c.startswith("VAE_d5_")]
    by_run = {r: [c for c in d5 if f"_run{r}_" in c] for r in range(5)}
    best = []
    for a, b in itertools.combinations(range(5), 2):
        m = match_rows(
            latents[by_run[a]].to_numpy().T, latents[by_run[b]].to_numpy().T, absolute=True
        )
        best.extend(m.corr.tolist())
    C = np.abs(correlation_matrix(V, V))
    np.fill_diagonal(C, np.nan)
    out["best_match_abs_corr_between_d5_runs"] = {
        "median": float(np.median(best)),
        "max": float(np.max(best)),
        "min": float(np.min(best)),
    }
    out["max_abs_corr_any_other_variable"] = {
        "median": float(np.nanmedian(np.nanmax(C, 1))),
        "max": float(np.nanmax(C)),
    }
    out["variable_std"] = {"min": float(latents.std().min()), "max": float(latents.std().max())}
    out["consensus"] = consensus(latents, V)
    print(json.dumps(out, indent=2))
    dest = ROOT / "bench" / "results" / "a549_ensemble.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    return out


def consensus(latents: pd.DataFrame, V: np.ndarray) -> dict:
    """The consensus mode over the latents, in the principal axes of all latents (see above)."""
    names = list(latents.columns)
    pca = fit_pca(V.T, names, min(V.shape))
    x = pca.transform(V.T)
    res: dict = {"L_per_seed": [], "dropped_per_seed": []}
    for seed in range(5):
        config = EnsembleConfig(method="consensus", seed=seed, l_max=15)
        try:
            e = build_ensemble(latents, config=config, x_pca=x, pca=pca)
        except DeeppertError as exc:
            res["L_per_seed"].append(None)
            res["dropped_per_seed"].append(str(exc))
            continue
        res["L_per_seed"].append(e.n_clusters)
        res["dropped_per_seed"].append(e.n_dropped)
        if seed == 0:
            res["selection_seed0"] = e.selection.reset_index(drop=True).to_dict(orient="list")
            res["cluster_sizes_seed0"] = e.sizes.tolist()
    halves = []
    for runs in ((0, 2, 4), (1, 3)):
        cols = [c for c in names if int(c.split("_run")[1].split("_")[0]) in runs]
        try:
            halves.append(
                build_ensemble(
                    latents[cols],
                    config=EnsembleConfig(method="consensus", l_max=15),
                    x_pca=x,
                    pca=pca,
                )
            )
        except DeeppertError as exc:
            res["split_half"] = f"failed: {exc}"
            return res
    m = match_rows(halves[0].weights.to_numpy(), halves[1].weights.to_numpy(), absolute=True)
    res["split_half"] = {
        "L": [h.n_clusters for h in halves],
        "matched_abs_corr": m.corr.tolist(),
        "median": m.median,
    }
    return res


if __name__ == "__main__":
    main()
