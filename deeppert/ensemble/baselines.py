"""Linear program baselines on the user's own matrix: does the deep ensemble earn its cost?

Given the training matrix as PCA scores ``x_pca`` (n, p) with its :class:`PCAModel` (what the
ensemble step already holds) and a number of programs ``L``, fit L programs with

``PCA``      the top-L principal axes (the optimal rank-L linear reconstruction);
``FastICA``  sklearn FastICA (``whiten="unit-variance"``, logcosh), programs = its mixing
             columns (each component's covariance with the PCA scores, as the consensus
             ensemble's loadings);
``NMF``      sklearn NMF on ``[X+, X-]``, the positive and negative parts of the centred gene
             values side by side, folded back to signed gene loadings ``H+ - H-``.

Everything lives in the PCA's ``p`` coordinates except NMF, which needs gene space: it runs
on the genes the PCA keeps, ``x_pca @ components`` (centred; the PCA's scale vector is not
applied, as for every gene weight in this project). Programs are returned as gene loadings
(L x genes); in the p coordinates they are ``G @ components.T`` (an isometry of the kept gene
space), so reconstruction is scored the same way for every method and for the ensemble.

Two scores per method (:func:`compare_programs`):

split-half stability
    The training rows are split into two seeded disjoint halves; the method is fitted on
    each, the two sets of gene loadings matched one-to-one (Hungarian on ``|Pearson r|``:
    signed programs carry an arbitrary sign) and the median matched ``|r|`` reported. The
    ensemble's value is the caller's (its own split over runs), or None.
held-out reconstruction
    R^2 = 1 - SS_res / SS_tot of held-out rows reconstructed by least-squares usages of the
    programs (centred with the fitting rows' mean). With ``x_heldout`` every method is scored
    on those rows (each baseline fitted on each half, averaged). Without it the halves
    cross-fit (fit on one, score on the other) and the ensemble, fitted by the caller on all
    rows, is scored on all rows: in-sample, which flatters it (``ensemble_in_sample``).

PCA's subspace maximises the variance captured by any L programs on the rows it was fitted
on, so on held-out rows it is an (almost) upper bound: the verdict compares the ensemble
with PCA by a ratio of R^2 (``r2_ratio_floor``) and by stability, not by "beats PCA".

Cost: two fits per method, each on at most ``max_rows`` rows of its half (a seeded sample)
with capped iterations, so the cost does not grow with n; NMF (on 2 x genes columns)
dominates.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF, PCA, FastICA
from sklearn.exceptions import ConvergenceWarning

from deeppert.errors import DeeppertError
from deeppert.preprocess import PCAModel

__all__ = [
    "ProgramMethod",
    "PROGRAM_METHODS",
    "ProgramBaselineConfig",
    "ProgramComparison",
    "fit_programs",
    "consensus_nmf",
    "reconstruction_r2",
    "split_half_stability",
    "compare_programs",
    "comparison_figure",
]

ProgramMethod = Literal["PCA", "FastICA", "NMF"]
PROGRAM_METHODS: tuple[str, ...] = ("PCA", "FastICA", "NMF")
ENSEMBLE = "ensemble"


@dataclass(frozen=True)
class ProgramBaselineConfig:
    """Knobs of the baselines and of the comparison.

    Attributes
    ----------
    methods
        Baselines to fit, from :data:`PROGRAM_METHODS`.
    seed
        Seeds the split into halves, the row samples and every fit.
    max_rows
        Rows one fit uses at most (a seeded sample of its half): bounds the cost whatever n.
    ica_max_iter, nmf_max_iter
        Iteration caps (FastICA tol 1e-4; NMF coordinate descent tol 1e-4, nndsvd start).
    r2_ratio_floor
        The ensemble is flagged when its held-out R^2 is below this fraction of PCA's.
    """

    methods: tuple[str, ...] = PROGRAM_METHODS
    seed: int = 0
    max_rows: int = 2000
    ica_max_iter: int = 200
    nmf_max_iter: int = 100
    r2_ratio_floor: float = 0.9

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in PROGRAM_METHODS]
        if unknown or not self.methods:
            raise DeeppertError(
                f"program baselines: unknown or no methods {unknown or list(self.methods)}; "
                f"valid: {list(PROGRAM_METHODS)}"
            )
        if self.max_rows < 10:
            raise DeeppertError(f"program baselines: max_rows must be >= 10, got {self.max_rows}")
        if self.ica_max_iter < 1 or self.nmf_max_iter < 1:
            raise DeeppertError("program baselines: iteration caps must be >= 1")
        if not 0 < self.r2_ratio_floor <= 1:
            raise DeeppertError(
                f"program baselines: r2_ratio_floor must lie in (0, 1], got {self.r2_ratio_floor}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProgramComparison:
    """Baselines versus the ensemble on one matrix.

    Attributes
    ----------
    table
        One row per method (the ensemble first): ``method, L, split_half_stability,
        heldout_r2, fit_seconds`` (the ensemble's fit_seconds is NaN: the caller timed it).
    ensemble_worse
        True when the ensemble's held-out R^2 is below ``r2_ratio_floor`` x PCA's, or its
        split-half stability (when given) is below PCA's.
    verdict
        One line for a log or an MLflow tag.
    ensemble_in_sample
        True when no held-out rows were given: the ensemble was scored on rows it was fit on.
    programs
        Method -> programs (L x genes): each baseline's fit on the first half, and the
        ensemble's own (for figures and export).
    config
        The :class:`ProgramBaselineConfig` as a dict.
    """

    table: pd.DataFrame
    ensemble_worse: bool
    verdict: str
    ensemble_in_sample: bool
    programs: dict[str, pd.DataFrame] = field(default_factory=dict)
    config: dict = field(default_factory=dict)


# -- fitting -------------------------------------------------------------------------------
def _check_inputs(x_pca: np.ndarray, pca: PCAModel, n_programs: int) -> np.ndarray:
    x = np.asarray(x_pca, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != pca.n_components:
        raise DeeppertError(
            f"PCA scores must be (n, {pca.n_components}) for this PCA, got shape {x.shape}"
        )
    if not np.isfinite(x).all():
        raise DeeppertError("PCA scores contain NaN or infinity")
    if not 1 <= n_programs <= min(x.shape[1], len(x) // 2 - 1):
        raise DeeppertError(
            f"number of programs L = {n_programs} must lie in [1, min(p = {x.shape[1]}, "
            f"n / 2 - 1 = {len(x) // 2 - 1})]"
        )
    return x


def _sample(n: int, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= max_rows else np.sort(rng.choice(n, max_rows, replace=False))


def fit_programs(
    method: str,
    x_pca: np.ndarray,
    pca: PCAModel,
    n_programs: int,
    *,
    seed: int = 0,
    max_iter: int = 200,
) -> np.ndarray:
    """Programs ``(n_programs, genes)``: signed gene loadings of ``method`` fitted on all rows
    of ``x_pca`` (subsample first to bound the cost)."""
    if method not in PROGRAM_METHODS:
        raise DeeppertError(f"unknown program method {method!r}; valid: {list(PROGRAM_METHODS)}")
    x = np.asarray(x_pca, dtype=np.float64)
    xc = x - x.mean(0)
    comps = pca.components
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if method == "PCA":
            return PCA(n_programs, svd_solver="full").fit(xc).components_ @ comps
        if method == "FastICA":
            ica = FastICA(
                n_programs, whiten="unit-variance", random_state=seed, max_iter=max_iter
            ).fit(xc)
            return ica.mixing_.T @ comps
        genes = xc @ comps
        nmf = NMF(n_programs, init="nndsvd", solver="cd", max_iter=max_iter, random_state=seed).fit(
            np.hstack([np.maximum(genes, 0), np.maximum(-genes, 0)])
        )
    g = comps.shape[1]
    return nmf.components_[:, :g] - nmf.components_[:, g:]


def consensus_nmf(
    x_pca: np.ndarray,
    pca: PCAModel,
    n_programs: int,
    *,
    n_runs: int = 10,
    seed: int = 0,
    max_rows: int = 3000,
    max_iter: int = 200,
) -> np.ndarray:
    """cNMF-style consensus ``(n_programs, genes)``: ``n_runs`` NMF fits on ``[X+, X-]`` (random
    starts seeded ``seed + r``, each on a seeded sample of at most ``max_rows`` rows), their
    unit-normalised programs clustered by KMeans(``n_programs``), each cluster's median.

    No density filter (cNMF's is tuned per data set); programs are signed ``H+ - H-``.
    """
    x = _check_inputs(x_pca, pca, n_programs)
    if n_runs < 2:
        raise DeeppertError(f"consensus NMF needs at least 2 runs, got {n_runs}")
    comps = pca.components
    g = comps.shape[1]
    rng = np.random.default_rng(seed)
    parts = []
    for r in range(n_runs):
        rows = _sample(len(x), max_rows, rng)
        genes = (x[rows] - x[rows].mean(0)) @ comps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            H = (
                NMF(
                    n_programs, init="random", solver="cd", max_iter=max_iter, random_state=seed + r
                )
                .fit(np.hstack([np.maximum(genes, 0), np.maximum(-genes, 0)]))
                .components_
            )
        parts.append(H)
    H = np.vstack(parts)
    norm = np.linalg.norm(H, axis=1, keepdims=True)
    H = H / np.where(norm > 0, norm, 1.0)
    labels = KMeans(n_programs, n_init=10, random_state=seed).fit_predict(H)
    med = np.stack(
        [
            np.median(H[labels == c], axis=0) if (labels == c).any() else np.zeros(2 * g)
            for c in range(n_programs)
        ]
    )
    return med[:, :g] - med[:, g:]


# -- scoring -------------------------------------------------------------------------------
def reconstruction_r2(
    x_pca: np.ndarray, programs: np.ndarray, pca: PCAModel, *, center: np.ndarray | None = None
) -> float:
    """R^2 of rows ``x_pca`` reconstructed by least-squares usages of ``programs`` (L x genes).

    Programs are projected to the PCA's coordinates (``programs @ components.T``); rows are
    centred with ``center`` (the fitting rows' mean; default their own mean).
    """
    x = np.asarray(x_pca, dtype=np.float64)
    P = np.atleast_2d(np.asarray(programs, dtype=np.float64)) @ pca.components.T  # (L, p)
    xc = x - (x.mean(0) if center is None else center)
    coef, *_ = np.linalg.lstsq(P.T, xc.T, rcond=None)
    resid = xc - coef.T @ P
    return float(1 - (resid**2).sum() / max((xc**2).sum(), np.finfo(float).tiny))


def _abs_corr(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    def z(M: np.ndarray) -> np.ndarray:
        M = M - M.mean(1, keepdims=True)
        norm = np.linalg.norm(M, axis=1, keepdims=True)
        return M / np.where(norm > 0, norm, 1.0)

    return np.abs(z(A) @ z(B).T)


def split_half_stability(A: np.ndarray, B: np.ndarray) -> float:
    """Median ``|Pearson r|`` of programs (rows of A, B) matched one-to-one (Hungarian)."""
    C = _abs_corr(np.atleast_2d(A), np.atleast_2d(B))
    rows, cols = linear_sum_assignment(-C)
    return float(np.median(C[rows, cols]))


def _halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def compare_programs(
    x_pca: np.ndarray,
    pca: PCAModel,
    ensemble_programs: pd.DataFrame,
    *,
    ensemble_stability: float | None = None,
    x_heldout: np.ndarray | None = None,
    config: ProgramBaselineConfig | None = None,
) -> ProgramComparison:
    """Fit the baselines at the ensemble's L on ``x_pca`` and compare them with the ensemble.

    Parameters
    ----------
    x_pca
        ``(n, p)`` PCA scores of the rows the ensemble was built from.
    pca
        The :class:`PCAModel` of those scores (its genes name the programs' columns).
    ensemble_programs
        ``L x genes`` signed gene loadings of the ensemble (columns = ``pca.genes``).
    ensemble_stability
        The ensemble's own split-half stability (over runs), or None.
    x_heldout
        ``(m, p)`` rows none of the fits saw (e.g. the PCA's validation rows), or None.
    config
        :class:`ProgramBaselineConfig`.
    """
    config = config or ProgramBaselineConfig()
    if not isinstance(ensemble_programs, pd.DataFrame) or ensemble_programs.ndim != 2:
        raise DeeppertError("ensemble programs must be a programs x genes DataFrame")
    if list(ensemble_programs.columns) != list(pca.genes):
        raise DeeppertError(
            f"ensemble programs have {ensemble_programs.shape[1]} columns that are not the "
            f"PCA's {len(pca.genes)} genes in order"
        )
    E = ensemble_programs.to_numpy(dtype=np.float64)
    if not np.isfinite(E).all():
        raise DeeppertError("ensemble programs contain NaN or infinity")
    L = len(E)
    x = _check_inputs(x_pca, pca, L)
    held = None
    if x_heldout is not None:
        held = np.asarray(x_heldout, dtype=np.float64)
        if held.ndim != 2 or held.shape[1] != x.shape[1] or len(held) < 2:
            raise DeeppertError(
                f"held-out PCA scores must be (m >= 2, {x.shape[1]}), got shape {held.shape}"
            )
    rng = np.random.default_rng(config.seed)
    halves = _halves(len(x), config.seed)
    rows = []
    programs: dict[str, pd.DataFrame] = {}
    for method in config.methods:
        t0 = time.perf_counter()
        max_iter = config.nmf_max_iter if method == "NMF" else config.ica_max_iter
        fits, r2 = [], []
        for h, half in enumerate(halves):
            fit_rows = half[_sample(len(half), config.max_rows, rng)]
            P = fit_programs(method, x[fit_rows], pca, L, seed=config.seed, max_iter=max_iter)
            fits.append(P)
            score_rows = held if held is not None else x[halves[1 - h]]
            r2.append(reconstruction_r2(score_rows, P, pca, center=x[fit_rows].mean(0)))
        seconds = time.perf_counter() - t0
        programs[method] = pd.DataFrame(
            fits[0],
            index=[f"{method}_{k:02d}" for k in range(L)],
            columns=pca.genes,
        )
        rows.append(
            {
                "method": method,
                "L": L,
                "split_half_stability": split_half_stability(*fits),
                "heldout_r2": float(np.mean(r2)),
                "fit_seconds": seconds,
            }
        )
    ens_rows = held if held is not None else x
    ens = {
        "method": ENSEMBLE,
        "L": L,
        "split_half_stability": np.nan if ensemble_stability is None else ensemble_stability,
        "heldout_r2": reconstruction_r2(ens_rows, E, pca, center=x.mean(0)),
        "fit_seconds": np.nan,
    }
    programs[ENSEMBLE] = ensemble_programs
    table = pd.DataFrame([ens, *rows])
    worse, verdict = _verdict(table, config)
    return ProgramComparison(table, worse, verdict, held is None, programs, config.to_dict())


def _verdict(table: pd.DataFrame, config: ProgramBaselineConfig) -> tuple[bool, str]:
    by = table.set_index("method")
    e = by.loc[ENSEMBLE]
    if "PCA" not in by.index:
        return False, "no PCA baseline fitted: nothing to compare the ensemble with"
    pca = by.loc["PCA"]
    reasons = []
    ratio = e["heldout_r2"] / pca["heldout_r2"] if pca["heldout_r2"] > 0 else np.inf
    if ratio < config.r2_ratio_floor:
        reasons.append(
            f"held-out R^2 {e['heldout_r2']:.3f} < {config.r2_ratio_floor:g} x PCA's "
            f"{pca['heldout_r2']:.3f}"
        )
    if np.isfinite(e["split_half_stability"]) and (
        e["split_half_stability"] < pca["split_half_stability"]
    ):
        reasons.append(
            f"split-half stability {e['split_half_stability']:.3f} < PCA's "
            f"{pca['split_half_stability']:.3f}"
        )
    L = int(e["L"])
    if reasons:
        return True, f"the ensemble's {L} programs are worse than PCA's: " + "; ".join(reasons)
    return False, (
        f"the ensemble's {L} programs reach {ratio:.2f} of PCA's held-out R^2"
        + (
            f" at split-half stability {e['split_half_stability']:.3f} (PCA "
            f"{pca['split_half_stability']:.3f})"
            if np.isfinite(e["split_half_stability"])
            else " (ensemble stability not given)"
        )
    )


def comparison_figure(comparison: ProgramComparison):
    """A :class:`matplotlib.figure.Figure`: split-half stability and held-out R^2 per method
    (no pyplot state; the caller saves or logs it)."""
    from matplotlib.figure import Figure

    t = comparison.table
    fig = Figure(figsize=(7, 3))
    axes = fig.subplots(1, 2)
    colors = ["C3" if m == ENSEMBLE else "C0" for m in t["method"]]
    for ax, col, label in zip(
        axes,
        ("split_half_stability", "heldout_r2"),
        ("split-half stability (median |r|)", "held-out R^2"),
        strict=True,
    ):
        vals = t[col].to_numpy(dtype=float)
        ax.bar(t["method"], np.nan_to_num(vals), color=colors)
        for i, v in enumerate(vals):
            ax.text(
                i,
                np.nan_to_num(v),
                "n/a" if np.isnan(v) else f"{v:.2f}",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_ylabel(label)
        ax.set_ylim(0, 1.05)
    L = int(t["L"].iloc[0])
    fig.suptitle(
        f"L = {L} programs: ensemble vs linear baselines"
        + (" (ensemble R^2 in-sample)" if comparison.ensemble_in_sample else ""),
        fontsize=9,
    )
    fig.tight_layout()
    return fig
