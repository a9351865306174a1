"""Stability of gene weights: ensembles versus single models (DeepProfile's claim).

(a) Split the runs (seeds) into two disjoint sets, build an ensemble from each, match the
two sets of ensemble gene-weight vectors one-to-one (Hungarian on Pearson correlation) and
take the median correlation of the matched pairs. (b) The same for the gene-weight vectors
of single models with two different seeds (same architecture). DeepProfile's claim is that
(a) is much higher than (b).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from deeppert.ensemble import EnsembleConfig, build_ensemble, parse_variable_name
from deeppert.errors import DeeppertError

__all__ = [
    "Matching",
    "StabilityReport",
    "correlation_matrix",
    "match_rows",
    "split_runs",
    "stability_report",
]


def correlation_matrix(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row of ``A`` (a, f) with every row of ``B`` (b, f)."""
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.shape[1] != B.shape[1]:
        raise DeeppertError(f"rows of different lengths: {A.shape[1]} vs {B.shape[1]}")

    def z(M: np.ndarray) -> np.ndarray:
        M = M - M.mean(1, keepdims=True)
        norm = np.linalg.norm(M, axis=1, keepdims=True)
        return M / np.where(norm > 0, norm, 1.0)

    return z(A) @ z(B).T


@dataclass
class Matching:
    """One-to-one matching of rows: ``rows[i]`` of A with ``cols[i]`` of B at correlation ``corr[i]``."""

    rows: np.ndarray
    cols: np.ndarray
    corr: np.ndarray

    @property
    def median(self) -> float:
        return float(np.median(self.corr)) if self.corr.size else float("nan")


def match_rows(A: np.ndarray, B: np.ndarray, *, absolute: bool = False) -> Matching:
    """Hungarian matching maximising total correlation (``absolute``: of ``|corr|``, for signless latents).

    With unequal row counts only ``min(a, b)`` pairs are matched.
    """
    C = correlation_matrix(A, B)
    score = np.abs(C) if absolute else C
    rows, cols = linear_sum_assignment(-score)
    return Matching(rows, cols, score[rows, cols])


def split_runs(runs: list[int]) -> tuple[list[int], list[int]]:
    """Two disjoint halves of the sorted run numbers: even positions and odd positions."""
    runs = sorted(set(runs))
    if len(runs) < 2:
        raise DeeppertError(f"stability needs at least two runs, got {runs}")
    return runs[0::2], runs[1::2]


@dataclass
class StabilityReport:
    """Median matched correlations of (a) ensembles and (b) single models of disjoint seeds."""

    ensemble_median: float
    single_median: float
    runs_a: list[int]
    runs_b: list[int]
    n_clusters_a: int
    n_clusters_b: int
    ensemble_corr: list[float] = field(default_factory=list)
    single_corr: dict[str, list[float]] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def stability_report(
    latents: pd.DataFrame,
    gene_weights: pd.DataFrame,
    *,
    config: EnsembleConfig | None = None,
    runs_a: list[int] | None = None,
    runs_b: list[int] | None = None,
) -> StabilityReport:
    """Stability (a) and (b) from latents (samples x variables) and gene weights (genes x variables).

    Variables are named ``<model>_run<r>_z<k>``. ``runs_a`` / ``runs_b`` default to
    :func:`split_runs` of all runs. For (b) the ``i``-th run of A is compared with the
    ``i``-th run of B for every model; correlations of all matched node pairs are pooled.
    """
    config = config or EnsembleConfig()
    meta = pd.DataFrame(
        [parse_variable_name(v) for v in latents.columns],
        index=latents.columns,
        columns=["model", "run", "node"],
    )
    if runs_a is None or runs_b is None:
        runs_a, runs_b = split_runs(meta["run"].tolist())
    if set(runs_a) & set(runs_b):
        raise DeeppertError(f"seed sets overlap: {sorted(set(runs_a) & set(runs_b))}")
    ens = []
    for runs in (runs_a, runs_b):
        cols = meta.index[meta["run"].isin(runs)]
        if len(cols) == 0:
            raise DeeppertError(f"no latent variables for runs {runs}")
        ens.append(build_ensemble(latents[cols], gene_weights[cols], config=config))
    m = match_rows(ens[0].weights.to_numpy(), ens[1].weights.to_numpy())
    single: dict[str, list[float]] = {}
    for model, group in meta.groupby("model"):
        pairs = []
        for ra, rb in zip(runs_a, runs_b, strict=False):
            va = group.index[group["run"] == ra]
            vb = group.index[group["run"] == rb]
            if len(va) and len(vb):
                pm = match_rows(gene_weights[va].to_numpy().T, gene_weights[vb].to_numpy().T)
                pairs.extend(pm.corr.tolist())
        single[str(model)] = pairs
    pooled = [c for v in single.values() for c in v]
    return StabilityReport(
        ensemble_median=m.median,
        single_median=float(np.median(pooled)) if pooled else float("nan"),
        runs_a=list(runs_a),
        runs_b=list(runs_b),
        n_clusters_a=ens[0].n_clusters,
        n_clusters_b=ens[1].n_clusters,
        ensemble_corr=m.corr.tolist(),
        single_corr=single,
        config=config.to_dict(),
    )
