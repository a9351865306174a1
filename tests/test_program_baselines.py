"""Program baselines (PCA, FastICA, NMF on [X+, X-]) against planted truth and invariants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment

from deeppert.data.synthetic import SynthConfig, make_synthetic
from deeppert.ensemble.baselines import (
    ProgramBaselineConfig,
    compare_programs,
    comparison_figure,
    consensus_nmf,
    fit_programs,
    reconstruction_r2,
    split_half_stability,
)
from deeppert.errors import DeeppertError
from deeppert.preprocess import fit_pca

K, MODULE = 4, 25


@pytest.fixture(scope="module")
def world():
    data = make_synthetic(
        SynthConfig(
            n_samples=800,
            n_programs=K,
            module_size=MODULE,
            signal_fraction=0.8,
            activity="laplace",
            seed=3,
        )
    )
    pca = fit_pca(data.signatures.values, list(data.signatures.genes), 20)
    x = pca.transform(data.signatures.values)
    return data, pca, x


def _precision(member: np.ndarray, programs: np.ndarray) -> float:
    """Hungarian-matched top-k precision of |weight| against planted modules (rows)."""
    P = np.array([[m[np.argsort(-np.abs(w))[: m.sum()]].mean() for w in programs] for m in member])
    rows, cols = linear_sum_assignment(-P)
    return float(P[rows, cols].mean())


def test_ica_and_nmf_recover_sparse_planted_programs(world):
    data, pca, x = world
    member = data.membership.to_numpy().T
    assert _precision(member, fit_programs("FastICA", x, pca, K)) >= 0.95
    assert _precision(member, fit_programs("NMF", x, pca, K)) >= 0.9
    assert _precision(member, consensus_nmf(x, pca, K, n_runs=3, max_rows=400)) >= 0.9


def test_pca_is_the_best_rank_l_reconstruction(world):
    data, pca, x = world
    best = reconstruction_r2(x, fit_programs("PCA", x, pca, K), pca)
    rng = np.random.default_rng(0)
    others = [
        fit_programs("FastICA", x, pca, K),
        fit_programs("NMF", x, pca, K),
        data.loadings.to_numpy(),
        rng.normal(size=(K, len(pca.genes))),
    ]
    for programs in others:
        assert reconstruction_r2(x, programs, pca) <= best + 1e-10
    assert reconstruction_r2(x, others[-1], pca) < best - 0.2
    # On held-out rows PCA fitted on the other half is still (almost) the best.
    E = pd.DataFrame(data.loadings.to_numpy(), columns=pca.genes)
    t = compare_programs(x, pca, E, x_heldout=x[:100]).table.set_index("method")
    assert (t["heldout_r2"] <= t.loc["PCA", "heldout_r2"] + 0.01).all()


def test_comparison_table_verdict_and_determinism(world):
    data, pca, x = world
    truth = pd.DataFrame(data.loadings.to_numpy(), columns=pca.genes)
    cmp = compare_programs(x, pca, truth, ensemble_stability=0.95)
    t = cmp.table.set_index("method")
    assert list(t.index) == ["ensemble", "PCA", "FastICA", "NMF"]
    assert (t["L"] == K).all() and cmp.ensemble_in_sample
    assert t.loc["FastICA", "split_half_stability"] > 0.9
    assert t.loc["FastICA", "split_half_stability"] > t.loc["PCA", "split_half_stability"]
    assert not cmp.ensemble_worse and "PCA" in cmp.verdict
    again = compare_programs(x, pca, truth, ensemble_stability=0.95)
    cols = ["split_half_stability", "heldout_r2"]
    pd.testing.assert_frame_equal(again.table[cols], cmp.table[cols])
    noise = pd.DataFrame(np.random.default_rng(1).normal(size=truth.shape), columns=pca.genes)
    bad = compare_programs(x, pca, noise, config=ProgramBaselineConfig(methods=("PCA",)))
    assert bad.ensemble_worse and "worse than PCA" in bad.verdict
    assert bad.table["method"].tolist() == ["ensemble", "PCA"]
    fig = comparison_figure(cmp)
    assert len(fig.axes) == 2


def test_split_half_stability_ignores_order_and_sign():
    A = np.random.default_rng(0).normal(size=(5, 50))
    assert split_half_stability(A, -A[::-1]) == pytest.approx(1.0)


def test_bad_inputs_name_the_problem(world):
    data, pca, x = world
    truth = pd.DataFrame(data.loadings.to_numpy(), columns=pca.genes)
    with pytest.raises(DeeppertError, match="genes in order"):
        compare_programs(x, pca, truth.iloc[:, ::-1])
    with pytest.raises(DeeppertError, match="must be \\(n, 20\\)"):
        compare_programs(x[:, :5], pca, truth)
    with pytest.raises(DeeppertError, match="number of programs"):
        compare_programs(x[:20], pca, truth.iloc[[0] * 12].reset_index(drop=True))
    with pytest.raises(DeeppertError, match="NaN"):
        compare_programs(x, pca, truth * np.nan)
    with pytest.raises(DeeppertError, match="held-out"):
        compare_programs(x, pca, truth, x_heldout=x[:5, :3])
    with pytest.raises(DeeppertError, match="unknown or no methods"):
        ProgramBaselineConfig(methods=("SVD",))
    with pytest.raises(DeeppertError, match="unknown program method"):
        fit_programs("SVD", x, pca, K)
