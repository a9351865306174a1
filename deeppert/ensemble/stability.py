"""Stability of gene weights: ensembles versus single models (DeepProfile's claim), and the
ensemble step as the command line and the Ray job both run it (:func:`ensemble_step`).

(a) Split the runs (seeds) into two disjoint sets, build an ensemble from each with the same
config (mode, ``cluster_on``, every knob), match the two sets of ensemble gene vectors
one-to-one (Hungarian on Pearson correlation) and take the median correlation of the matched
pairs. (b) The same for the gene vectors of single models with two different seeds (same
architecture). Both sides compare the same kind of vector: in the reference mode the IG
gene importances (:attr:`Ensemble.weights` and the nodes' IG weights), in the consensus mode
the signed loadings (:attr:`Ensemble.loadings` and the rotated components' loadings), which
carry an arbitrary sign per component and are matched on ``|correlation|``. DeepProfile's
claim is that (a) is much higher than (b).

:func:`ensemble_step` also says when the result should not be trusted
(:func:`ensemble_warnings`): each warning is logged, kept in :attr:`EnsembleStep.warnings`
and shown by the command line and on the MLflow ensemble run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from deeppert.ensemble.baselines import ProgramComparison, compare_programs
from deeppert.ensemble.modes import (
    Ensemble,
    EnsembleConfig,
    Mapper,
    RunComponents,
    build_ensemble,
    components_by_run,
    consensus_programs,
    model_components,
    parse_variable_name,
    run_groups,
)
from deeppert.errors import DeeppertError
from deeppert.preprocess import PCAModel

log = logging.getLogger(__name__)

# Kaufman & Rousseeuw's reading of an average silhouette: 0.26-0.50 "weak structure, could
# be artificial", <= 0.25 "no substantial structure"; above 0.5 a reasonable one. The default
# consensus gives 0.65-0.78 on world seed 1 of bench/bench_programs.py (programs_seed1.md).
SILHOUETTE_FLOOR = 0.5
# A matched correlation below 0.5 shares under a quarter of the variance: the two halves of
# the runs did not find the same programs.
STABILITY_FLOOR = 0.5
# Warn when the density filter dropped more than this fraction of the components. Under the
# pooled rotations one of the two can be arbitrary in a whole world (ICA on Gaussian
# activities), so about half may drop with every program recovered: on world seed 1 of
# bench/bench_programs.py the default drops 0.20-0.57 (gaussian6 0.57, laplace12 0.56).
DROPPED_CEILING = 0.75

__all__ = [
    "Matching",
    "StabilityReport",
    "correlation_matrix",
    "standardised_rows",
    "match_rows",
    "split_runs",
    "stability_report",
    "EnsembleStep",
    "ensemble_step",
    "ensemble_warnings",
    "SILHOUETTE_FLOOR",
    "STABILITY_FLOOR",
    "DROPPED_CEILING",
    "plot_selection",
]


def correlation_matrix(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row of ``A`` (a, f) with every row of ``B`` (b, f)."""
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.shape[1] != B.shape[1]:
        raise DeeppertError(f"rows of different lengths: {A.shape[1]} vs {B.shape[1]}")
    return standardised_rows(A) @ standardised_rows(B).T


def standardised_rows(M: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm (a constant row stays zero): the product of two
    such rows is their Pearson correlation. Standardise once, multiply many times."""
    M = M - M.mean(1, keepdims=True)
    norm = np.linalg.norm(M, axis=1, keepdims=True)
    return M / np.where(norm > 0, norm, 1.0)


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
    gene_weights: pd.DataFrame | None,
    *,
    config: EnsembleConfig | None = None,
    runs_a: list[int] | None = None,
    runs_b: list[int] | None = None,
    x_pca: np.ndarray | None = None,
    pca: PCAModel | None = None,
    precomputed: Mapping[str, RunComponents] | None = None,
    mapper: Mapper = map,
) -> StabilityReport:
    """Stability (a) and (b) from latents (samples x variables) and gene weights (genes x variables).

    Variables are named ``<model>_run<r>_z<k>``. ``runs_a`` / ``runs_b`` default to
    :func:`split_runs` of all runs. For (b) the ``i``-th run of A is compared with the
    ``i``-th run of B for every model; correlations of all matched node pairs are pooled.
    ``x_pca`` and ``pca`` are needed by the consensus mode (as for :func:`build_ensemble`),
    which uses the model runs' ``precomputed`` components where given and runs its
    independent work with ``mapper`` (:data:`~deeppert.ensemble.modes.Mapper`).
    """
    config = config or EnsembleConfig()
    consensus = config.method == "consensus"
    meta = pd.DataFrame(
        [parse_variable_name(v) for v in latents.columns],
        index=latents.columns,
        columns=["model", "run", "node"],
    )
    if runs_a is None or runs_b is None:
        runs_a, runs_b = split_runs(meta["run"].tolist())
    if set(runs_a) & set(runs_b):
        raise DeeppertError(f"seed sets overlap: {sorted(set(runs_a) & set(runs_b))}")
    if consensus:
        comp = model_components(latents, x_pca, pca, config, precomputed=precomputed)

        def run_profiles(key: str) -> np.ndarray:  # one run's gene loadings, made when compared
            return comp.run_gene_loadings(key, pca) if key in comp.rotations else np.empty((0, 0))

    else:
        if gene_weights is None:
            raise DeeppertError("stability of the gmeans mode needs IG gene weights")
        columns = run_groups(latents.columns)

        def run_profiles(key: str) -> np.ndarray:
            cols = columns.get(key, [])
            return gene_weights[cols].to_numpy().T if cols else np.empty((0, 0))

    tables, n_clusters = [], []
    for runs in (runs_a, runs_b):
        cols = meta.index[meta["run"].isin(runs)]
        if len(cols) == 0:
            raise DeeppertError(f"no latent variables for runs {runs}")
        if consensus:  # the programs alone: a half's embedding is never compared
            found = consensus_programs(
                latents[cols], x_pca, pca, config=config, precomputed=precomputed, mapper=mapper
            )
            tables.append(found.loadings)
            n_clusters.append(found.n_clusters)
        else:
            ens = build_ensemble(
                latents[cols],
                None if gene_weights is None else gene_weights[cols],
                config=config,
                x_pca=x_pca,
                pca=pca,
            )
            tables.append(ens.weights.to_numpy())
            n_clusters.append(ens.n_clusters)
    m = match_rows(tables[0], tables[1], absolute=consensus)
    single: dict[str, list[float]] = {}
    for model in sorted(meta["model"].unique()):
        pairs = []
        for ra, rb in zip(runs_a, runs_b, strict=False):
            pa, pb = run_profiles(f"{model}_run{ra}"), run_profiles(f"{model}_run{rb}")
            if len(pa) and len(pb):
                pairs.extend(match_rows(pa, pb, absolute=consensus).corr.tolist())
        single[str(model)] = pairs
    pooled = [c for v in single.values() for c in v]
    return StabilityReport(
        ensemble_median=m.median,
        single_median=float(np.median(pooled)) if pooled else float("nan"),
        runs_a=list(runs_a),
        runs_b=list(runs_b),
        n_clusters_a=n_clusters[0],
        n_clusters_b=n_clusters[1],
        ensemble_corr=m.corr.tolist(),
        single_corr=single,
        config=config.to_dict(),
    )


@dataclass
class EnsembleStep:
    """What the ensemble step produces: the ensemble, its stability (a dict for JSON) and
    the warnings that say when not to trust it (:func:`ensemble_warnings`)."""

    ensemble: Ensemble
    stability: dict
    warnings: list[str] = field(default_factory=list)
    baselines: ProgramComparison | None = None

    @property
    def selection(self) -> pd.DataFrame | None:
        """The consensus mode's L-selection curve (None in the reference mode)."""
        return self.ensemble.selection

    def tables(self) -> dict[str, pd.DataFrame]:
        """The step's tables by role, those that exist: ``labels``, ``weights`` (gene
        importances, the downstream input), ``loadings`` (signed), ``embedding``. Writers
        (``deeppert ensemble``, :func:`deeppert.tracking.registry.log_ensemble`) store each
        under its artifact name (:data:`deeppert.tracking.contract.ENSEMBLE_TABLES`)."""
        ens = self.ensemble
        tables = {
            "labels": ens.labels,
            "weights": ens.weights,
            "loadings": ens.loadings,
            "embedding": ens.embedding,
            "baselines": None if self.baselines is None else self.baselines.table,
        }
        return {k: v for k, v in tables.items() if v is not None}

    def summary(self) -> dict:
        """Small JSON-able summary: L, what chose it, sizes, the density filter, warnings."""
        ens = self.ensemble
        chosen = None
        if ens.selection is not None:
            row = ens.selection.loc[ens.selection["chosen"]].iloc[0]
            chosen = {
                "L": int(row["L"]),
                "clusters": int(row["distinct"]),
                "silhouette": float(row["distinct_stability"]),
            }
        return {
            "method": ens.config.method,
            "n_clusters": ens.n_clusters,
            "gmeans_n_clusters": ens.gmeans_n_clusters,
            "chosen": chosen,
            "n_variables": len(ens.labels) + ens.n_dropped,
            "n_dropped": ens.n_dropped,
            "density_filter": ens.density_filter,
            "stability": {
                k: self.stability.get(k) for k in ("ensemble_median", "single_median", "skipped")
            },
            "warnings": list(self.warnings),
            "baselines": None
            if self.baselines is None
            else self.baselines.table.to_dict(orient="records"),
            "cluster_sizes": ens.sizes.to_dict(),
            "config": ens.config.to_dict(),
        }

    def report(self) -> list[str]:
        """A few lines for people: L, components used and dropped, stability, warnings."""
        ens, lines = self.ensemble, []
        summary = self.summary()
        if ens.selection is not None:
            c = summary["chosen"]
            Ls = ens.selection["L"]
            how = (
                "fixed by n_clusters"
                if ens.config.n_clusters is not None
                else f"the most stable of L = {Ls.min()}..{Ls.max()} up to the last L whose "
                "clusters explain more than noise"
            )
            if c["clusters"] < c["L"]:
                how += f"; {c['L']} clusters, near-copies joined"
            lines.append(f"L = {ens.n_clusters} clusters ({how}; silhouette {c['silhouette']:.2f})")
        else:
            how = "fixed" if ens.gmeans_n_clusters is None else "chosen by GMeans"
            lines.append(f"L = {ens.n_clusters} clusters ({how})")
        if ens.density_filter is not None:
            f = ens.density_filter
            lines.append(
                f"components: {f['kept']} of {f['components']} used, {f['dropped']} dropped "
                f"by the density filter ({f['reason']})"
            )
        else:
            lines.append(f"latent variables: {len(ens.labels)}")
        st = self.stability
        if "ensemble_median" in st:
            lines.append(
                f"split-half stability (median matched correlation): ensemble "
                f"{st['ensemble_median']:.2f}, single models {st['single_median']:.2f}"
            )
        else:
            lines.append(f"stability: skipped ({st.get('skipped', 'not computed')})")
        if self.baselines is not None:
            for row in self.baselines.table.itertuples():
                stab = row.split_half_stability
                lines.append(
                    f"{row.method:>8} at L = {row.L}: held-out R^2 {row.heldout_r2:.3f}, "
                    f"split-half stability {'n/a' if stab is None or stab != stab else f'{stab:.2f}'}"
                )
        lines += [f"WARNING: {w}" for w in self.warnings]
        return lines


def ensemble_warnings(ensemble: Ensemble, stability: dict) -> list[str]:
    """Why the ensemble should not be trusted, one sentence each (empty when nothing is wrong).

    - the density filter dropped more than :data:`DROPPED_CEILING` of the components;
    - the silhouette of the chosen clusters is below :data:`SILHOUETTE_FLOOR`, or no L of the
      curve explains more than noise (consensus mode), or GMeans kept a single cluster: no
      structure recurs across runs;
    - the split-half stability of the ensemble is below :data:`STABILITY_FLOOR`, or below that
      of single models, or could not be computed because a half's ensemble failed.
    """
    out = []
    f = ensemble.density_filter
    if f is not None and f["dropped"] > DROPPED_CEILING * f["components"]:
        out.append(
            f"the density filter dropped {f['dropped']} of {f['components']} components: most "
            "do not recur across runs (too few runs, undertrained models, or no sparse or "
            "non-Gaussian programs in the data)"
        )
    if ensemble.selection is not None:
        s = float(
            ensemble.selection.loc[ensemble.selection["chosen"], "distinct_stability"].iloc[0]
        )
        if not s >= SILHOUETTE_FLOOR:
            out.append(
                f"the chosen L = {ensemble.n_clusters} has silhouette {s:.2f} < "
                f"{SILHOUETTE_FLOOR}: weak clusters, little structure recurs across runs "
                "(more runs or epochs may help; program_baselines says whether PCA, FastICA "
                "or NMF programs do better on these data)"
            )
        if ensemble.config.n_clusters is None and not ensemble.selection["explains"].any():
            out.append(
                "no L of the curve explains more of the data than as many average residual "
                f"directions x {ensemble.config.gain_factor}: no program stands out from noise"
            )
    elif ensemble.n_clusters == 1:
        out.append("the ensemble has a single cluster: no structure separates the latents")
    if stability.get("failed"):
        out.append(f"split-half stability could not be computed ({stability['skipped']})")
    ens_med, single_med = stability.get("ensemble_median"), stability.get("single_median")
    if ens_med is not None and not ens_med >= STABILITY_FLOOR:
        out.append(
            f"split-half stability of the ensemble is {ens_med:.2f} < {STABILITY_FLOOR}: "
            "ensembles of two halves of the runs disagree"
        )
    elif ens_med is not None and single_med is not None and ens_med < single_med:
        out.append(
            f"the ensemble is less stable ({ens_med:.2f}) than single models ({single_med:.2f})"
        )
    return out


def ensemble_step(
    latents: pd.DataFrame,
    gene_weights: pd.DataFrame | None,
    *,
    config: EnsembleConfig,
    x_pca: np.ndarray | None = None,
    pca: PCAModel | None = None,
    stability: bool = True,
    precomputed: Mapping[str, RunComponents] | None = None,
    mapper: Mapper = map,
) -> EnsembleStep:
    """The ensemble step: :func:`build_ensemble` and, on the same config, :func:`stability_report`.

    The command line (``deeppert ensemble``) and the Ray job (``ray_jobs/ensemble.py``) both call
    this and only read inputs and write outputs. Stability needs at least two runs; with fewer,
    or with ``stability=False``, the dict says why it was skipped (and, when the ensemble of a
    half of the runs fails, why, with a warning). Every warning of
    :func:`ensemble_warnings` is logged (``logging.WARNING``) and kept in the result.

    ``latents`` may be a :class:`~deeppert.latent_store.LatentStore` (one model run's code read
    at a time). In the consensus mode each model run is rotated once
    (:func:`~deeppert.ensemble.modes.components_by_run`, or ``precomputed``, e.g. by Ray tasks) and
    the ensemble and both halves of the stability report reuse it; ``mapper``
    (:data:`~deeppert.ensemble.modes.Mapper`) runs the consensus's independent work (in
    process by default; Ray tasks in the ensemble job).
    """
    if config.method == "consensus" and precomputed is None and x_pca is not None and pca:
        precomputed = components_by_run(latents, x_pca, pca, config)
    inputs = {"config": config, "x_pca": x_pca, "pca": pca, "precomputed": precomputed}
    ens = build_ensemble(latents, gene_weights, **inputs, mapper=mapper)
    parsed = [parse_variable_name(c) for c in latents.columns]
    runs = sorted({run for _, run, _ in parsed})
    half_models = min(
        len({(model, run) for model, run, _ in parsed if run in half})
        for half in (split_runs(runs) if len(runs) >= 2 else ([], []))
    )
    if not stability:
        report: dict = {"skipped": "stability not requested"}
    elif len(runs) < 2:
        report = {"skipped": f"needs at least two runs, found {runs}"}
    elif config.method == "consensus" and half_models < 2:
        report = {
            "skipped": f"a consensus of half the runs needs >= 2 model runs, a half has "
            f"{half_models}: train more runs or shapes"
        }
    else:
        try:
            report = stability_report(latents, gene_weights, **inputs, mapper=mapper).to_dict()
        except DeeppertError as exc:  # the ensemble of a half failed: nothing recurs there
            report = {"skipped": f"no ensemble of half the runs: {exc}", "failed": True}
    warnings = ensemble_warnings(ens, report)
    comparison = None
    if x_pca is not None and pca is not None and ens.loadings is not None:
        comparison = compare_programs(
            x_pca, pca, ens.loadings, ensemble_stability=report.get("ensemble_median")
        )
        if comparison.ensemble_worse:
            warnings.append(comparison.verdict)
    for w in warnings:
        log.warning("ensemble: %s", w)
    return EnsembleStep(ens, report, warnings, comparison)


def plot_selection(curve: pd.DataFrame, path: str | Path) -> Path:
    """Stability and error per L (the consensus mode's selection curve), chosen L marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(curve["L"], curve["stability"], "o-", color="C0", label="stability (silhouette)")
    ax.set_xlabel("L (clusters)")
    ax.set_ylabel("stability (silhouette)", color="C0")
    ax2 = ax.twinx()
    ax2.plot(curve["L"], curve["error"], "s--", color="C1", label="error")
    ax2.set_ylabel("unexplained PCA variance", color="C1")
    chosen = curve.loc[curve["chosen"], "L"]
    for L in chosen:
        ax.axvline(L, color="grey", lw=1, ls=":")
    ax.set_title(f"consensus L selection (chosen L = {', '.join(map(str, chosen))})", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
