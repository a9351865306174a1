"""The sweep report's numbers and figures, on planted tables (no server)."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest

from deeppert.tracking.report import (
    SweepReport,
    baseline_lines,
    baseline_versus_models,
    report_figures,
    run_agreement,
    seed_agreement,
    summarise,
    summary_markdown,
    trial_table,
)

matplotlib.use("Agg")


def _latents(rng: np.random.Generator, n: int = 200, d: int = 4) -> pd.DataFrame:
    index = pd.Index([f"s{i}" for i in range(n)], name="sample_id")
    return pd.DataFrame(rng.normal(size=(n, d)), index=index)


def test_seed_agreement_finds_permuted_sign_flipped_twins_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    a = _latents(rng)
    # Run 1: the same nodes, permuted, sign-flipped and rescaled: agreement exactly 1.
    twin = -3.0 * a.iloc[:, [2, 0, 3, 1]].set_axis(range(4), axis=1)
    noise = _latents(rng)  # independent nodes: |r| of chance, about 1/sqrt(n) scale
    table = seed_agreement({0: a, 1: twin, 2: noise})
    by_pair = table.set_index(["run_a", "run_b"])["agreement"]
    assert by_pair[(0, 1)] == pytest.approx(1.0, abs=1e-12)
    assert by_pair[(0, 2)] < 0.2 and by_pair[(1, 2)] < 0.2
    assert len(table) == 3


def test_seed_agreement_is_the_pairwise_matching_of_the_shared_samples() -> None:
    """Each run standardised once: the same numbers as matching each pair's correlations
    (stability.match_rows), also when runs hold different samples or node counts."""
    from deeppert.ensemble.stability import match_rows

    rng = np.random.default_rng(3)
    base = rng.normal(size=(300, 3))
    runs = {
        run: pd.DataFrame(
            base @ rng.normal(size=(3, d)) + 0.5 * rng.normal(size=(300, d)),
            index=pd.Index([f"s{i}" for i in range(300)], name="sample_id"),
        )
        for run, d in enumerate((3, 4, 4, 5))
    }
    runs[2] = runs[2].iloc[20:]  # a run missing some samples: pairs use the shared ones
    table = seed_agreement(runs).set_index(["run_a", "run_b"])["agreement"]
    common = runs[2].index
    for (a, b), value in table.items():
        za, zb = runs[a].loc[common].to_numpy().T, runs[b].loc[common].to_numpy().T
        expected = np.mean(match_rows(za, zb, absolute=True).corr)
        assert value == pytest.approx(expected, abs=1e-12)
    assert len(table) == 6 and table.between(0.3, 1.0).all()


def _run(model: str, dim: int, run: int, r2: float, loss: float) -> SimpleNamespace:
    return SimpleNamespace(
        data=SimpleNamespace(
            tags={
                "deeppert.cell_line": "SYN1",
                "deeppert.model": model,
                "deeppert.latent_dim": str(dim),
                "deeppert.run": str(run),
            },
            metrics={"r2_genes": r2, "r2_pca": r2 + 0.1, "loss": loss, "val_loss": loss * 1.1},
        ),
        info=SimpleNamespace(run_id=f"{model}{dim}{run}"),
    )


def _report() -> SweepReport:
    runs = [
        _run("AE", 5, 0, 0.30, 1.0),
        _run("AE", 5, 1, 0.34, 0.9),
        _run("VAE", 5, 0, 0.50, 0.8),
        _run("VAE", 5, 1, 0.40, 0.7),
        _run("VAE", 10, 0, 0.60, 0.5),
    ]
    trials = trial_table(runs)
    agreement = pd.DataFrame(
        {
            "run_a": [0, 0],
            "run_b": [1, 1],
            "agreement": [0.9, 0.7],
            "dataset": "SYN1",
            "model": ["AE", "VAE"],
            "latent_dim": [5, 5],
        }
    )
    baselines = pd.DataFrame(
        {"dataset": "SYN1", "model": ["PCA", "PCA", "ICA"], "latent_dim": [5, 10, 5],
         "r2_genes": [0.45, 0.65, 0.44]}
    )  # fmt: skip
    return SweepReport(trials, summarise(trials, agreement), baselines, agreement)


def test_run_agreement_is_each_runs_mean_over_its_pairs() -> None:
    rng = np.random.default_rng(1)
    a = _latents(rng)
    twin = -3.0 * a[a.columns[::-1]]
    noise = _latents(rng)
    pairs = seed_agreement({0: a, 1: twin, 2: noise}).set_index(["run_a", "run_b"])["agreement"]
    per_run = run_agreement({0: a, 1: twin, 2: noise})
    assert per_run[0] == pytest.approx((pairs[(0, 1)] + pairs[(0, 2)]) / 2)
    assert per_run[2] == pytest.approx((pairs[(0, 2)] + pairs[(1, 2)]) / 2) and per_run[2] < 0.2
    assert run_agreement({0: a}) == {}


def test_summary_is_best_mean_sd_per_shape_and_picks_the_best_mean() -> None:
    report = _report()
    s = report.summary.set_index(["model", "latent_dim"])
    assert s.loc[("AE", 5), "r2_genes_best"] == pytest.approx(0.34)
    assert s.loc[("AE", 5), "r2_genes_mean"] == pytest.approx(0.32)
    assert s.loc[("VAE", 5), "r2_genes_sd"] == pytest.approx(np.std([0.5, 0.4], ddof=1))
    assert s.loc[("VAE", 5), "seed_agreement"] == pytest.approx(0.7)
    assert np.isnan(s.loc[("VAE", 10), "r2_genes_sd"])  # one run: no spread, not zero
    assert np.isnan(s.loc[("VAE", 10), "seed_agreement"])
    assert (report.best["model"], report.best["latent_dim"]) == ("VAE", 10)
    markdown = summary_markdown(report, "Sweep t")
    assert "**VAE d10** on SYN1 (0.600 ± - over 1 runs)" in markdown
    assert "| SYN1 | AE | 5 | 2 | 0.340 | 0.320 | 0.028 | 0.900 |" in markdown
    assert "| SYN1 | PCA (baseline) | 10 | 1 | 0.650 |" in markdown


def test_a_baseline_that_beats_every_model_is_said_first() -> None:
    """Planted: PCA d10 0.650 against the best model, VAE d10 at 0.600 (one run)."""
    report = _report()
    versus = report.baseline_versus_models()
    row = versus.iloc[0]
    assert (row["model"], row["baseline"], bool(row["wins"])) == ("VAE d10", "PCA d10", True)
    assert row["margin"] == pytest.approx(0.05)
    line = (
        "On SYN1, the linear baseline PCA d10 (held-out R² 0.650) beats every model: "
        "the best, VAE d10, reaches 0.600 (mean of 1 run)."
    )
    assert baseline_lines(versus) == [line]
    assert summary_markdown(report, "Sweep t").startswith(f"**{line}**\n\n**Sweep t**")
    # a model above every baseline: nothing to say
    lower = report.baselines.assign(r2_genes=lambda b: b["r2_genes"] - 0.1)
    versus = baseline_versus_models(report.trials, lower)
    assert not versus["wins"].any() and versus["margin"].iloc[0] == pytest.approx(-0.05)
    assert baseline_lines(versus) == []
    assert not summary_markdown(
        SweepReport(report.trials, report.summary, lower, report.agreement), "Sweep t"
    ).startswith("**On ")


def test_report_figures_have_the_planted_lines(tmp_path) -> None:
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    figures = report_figures(_report())
    assert plt.get_fignums() == open_before  # Figure objects: nothing registered with pyplot
    assert set(figures) == {
        "r2_vs_latent_dim.png",
        "final_loss_per_trial.png",
        "seed_agreement.png",
    }
    ax = figures["r2_vs_latent_dim.png"].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(labels) == ["AE (mean ± sd)", "ICA baseline", "PCA baseline", "VAE (mean ± sd)"]
    pca_line = next(line for line in ax.get_lines() if line.get_label() == "PCA baseline")
    np.testing.assert_allclose(pca_line.get_ydata(), [0.45, 0.65])
    for name, fig in figures.items():
        fig.savefig(tmp_path / name, dpi=100)
        assert (tmp_path / name).stat().st_size > 5000


def test_r2_figure_keeps_equal_lines_visible_and_says_they_are_equal(tmp_path) -> None:
    """ICA = PCA and DAE = AE (as on the demo): each line is drawn apart and labelled equal."""
    runs = [
        _run(m, d, r, 0.3 + d / 100, 1.0) for m in ("AE", "DAE") for d in (5, 10) for r in (0, 1)
    ]
    trials = trial_table(runs)
    baselines = pd.DataFrame(
        {"dataset": "SYN1", "model": ["ICA", "ICA", "PCA", "PCA"], "latent_dim": [5, 10, 5, 10],
         "r2_genes": [0.5, 0.6, 0.5, 0.6]}
    )  # fmt: skip
    agreement = _report().agreement.assign(model=["AE", "DAE"])
    report = SweepReport(trials, summarise(trials, agreement), baselines, agreement)
    fig = report_figures(report)["r2_vs_latent_dim.png"]
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "ICA baseline: same R² as PCA baseline" in labels and "PCA baseline" in labels
    assert "DAE (mean ± sd): same R² as AE" in labels and "AE (mean ± sd)" in labels
    lines = {
        line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")
    }
    lines.update({c.get_label(): c.lines[0] for c in ax.containers})  # errorbar: its data line
    assert len(lines) == 4
    pca, ica = lines["PCA baseline"], lines["ICA baseline: same R² as PCA baseline"]
    np.testing.assert_allclose(pca.get_ydata(), ica.get_ydata())
    assert np.abs(np.asarray(pca.get_xdata()) - np.asarray(ica.get_xdata())).min() > 0.02
    xs = [tuple(np.round(np.asarray(line.get_xdata(), float), 6)) for line in lines.values()]
    assert len(set(xs)) == 4  # no two lines at the same x
    assert len({line.get_marker() for line in lines.values()}) == 4
    assert len({line.get_linestyle() for line in lines.values()}) >= 3
    fig.savefig(tmp_path / "r2.png", dpi=100)
    assert (tmp_path / "r2.png").stat().st_size > 5000


def test_ensemble_top_genes_and_figures_show_the_planted_programs(tmp_path) -> None:
    import matplotlib.pyplot as plt

    from deeppert.ensemble.figures import ensemble_figures, top_genes
    from deeppert.ensemble.modes import EnsembleConfig, build_ensemble

    rng = np.random.default_rng(0)
    n, genes = 300, [f"G{j}" for j in range(30)]
    programs = rng.normal(size=(n, 2))
    columns, latents, weights = [], [], []
    for run in range(4):
        for k in range(2):  # node k of every run follows program k; program k drives genes 3k..3k+2
            columns.append(f"AE_d2_run{run}_z{k}")
            latents.append(programs[:, k] + 0.05 * rng.normal(size=n))
            w = 0.01 * rng.normal(size=len(genes))
            w[3 * k : 3 * k + 3] = [3.0, -2.0, 1.0]
            weights.append(w)
    latents = pd.DataFrame(np.array(latents).T, columns=columns)
    weights = pd.DataFrame(np.array(weights).T, index=genes, columns=columns)
    ens = build_ensemble(latents, weights, config=EnsembleConfig(method="gmeans", n_clusters=2))
    table = top_genes(ens, 3)
    assert len(table) == 6 and list(table["rank"]) == [1, 2, 3] * 2
    tops = {frozenset(t["gene"]) for _, t in table.groupby("cluster")}
    assert tops == {frozenset({"G0", "G1", "G2"}), frozenset({"G3", "G4", "G5"})}
    signs = table.groupby("cluster")["importance"].apply(lambda w: tuple(np.sign(w).abs()))
    assert all(s == (1.0, 1.0, 1.0) for s in signs)
    stability = {"ensemble_corr": [0.9, 0.95], "single_corr": {"AE_d2": [0.5, 0.7]},
                 "ensemble_median": 0.925, "single_median": 0.6}  # fmt: skip
    figures = ensemble_figures(ens, stability)
    assert set(figures) == {"cluster_sizes.png", "stability.png", "top_genes_heatmap.png"}
    heat = figures["top_genes_heatmap.png"].axes[0]
    shown = [t.get_text() for t in heat.get_xticklabels()]  # top 5 of each cluster
    assert set(shown) >= {f"G{j}" for j in range(6)} and len(shown) <= 10
    bars = [p.get_height() for p in figures["cluster_sizes.png"].axes[0].patches]
    assert sorted(bars) == [4, 4]
    for name, fig in figures.items():
        fig.savefig(tmp_path / name, dpi=100)
        plt.close(fig)
    assert "stability.png" not in ensemble_figures(ens, None)


def test_ensemble_run_description_and_stability_metrics_say_what_they_are() -> None:
    """The ensemble run's metrics are named for what they hold and its description explains
    them and names its inputs."""
    from deeppert.ensemble.modes import EnsembleConfig, build_ensemble
    from deeppert.ensemble.stability import EnsembleStep
    from deeppert.tracking.notes import ensemble_description, stability_metrics

    rng = np.random.default_rng(1)
    latents = pd.DataFrame(
        rng.normal(size=(100, 4)), columns=[f"AE_d2_run{r}_z{k}" for r in (0, 1) for k in (0, 1)]
    )
    weights = pd.DataFrame(rng.normal(size=(6, 4)), columns=latents.columns)
    ens = build_ensemble(latents, weights, config=EnsembleConfig(method="gmeans", n_clusters=2))
    stability = {"ensemble_median": 0.47, "single_median": 0.3, "n_clusters_a": 2,
                 "n_clusters_b": 3, "runs_a": [0], "ensemble_corr": [0.4, 0.5]}  # fmt: skip
    metrics = stability_metrics(stability)
    assert metrics == {
        "stability_ensemble_median": 0.47,
        "stability_single_model_median": 0.3,
        "stability_half_a_n_programs": 2.0,
        "stability_half_b_n_programs": 3.0,
    }
    step = EnsembleStep(ensemble=ens, stability=stability)
    note = ensemble_description(
        step, dataset="SYN1", sweep="demo", versions=["E/1", "E/2"], parent_run_id="p1"
    )
    assert note.startswith("**Ensemble of SYN1**: 2 gene programs") and "`demo`" in note
    assert "E/1 ... E/2" in note and "`p1`" in note and "ensemble 0.47" in note
    assert all(f"`{name}`" in note for name in metrics)
