"""The sweep report on the parent run: what a user asks first, answered in the MLflow UI.

Once a sweep finishes (and again on every resume) :func:`log_sweep_report` reads the
sweep's FINISHED trial runs back from the server and logs, on the parent run:

- summary metrics ``<name>/<dataset>/<MODEL>_d<dim>``, named for what they hold
  (:data:`METRICS`): held-out gene-space R^2 of the shape's best run, its mean and sd over
  runs, the seed agreement (best-match |r| of latent nodes between runs), the linear
  baselines' held-out R^2, and per dataset the best baseline's R^2 minus the best model's;
  ``heldout_r2_best_shape_mean`` with tag ``deeppert.best_shape`` for the best (dataset,
  model, dim) by mean R^2, and tag ``deeppert.baseline_beats_models`` (``true`` when a linear
  baseline beats every model on a dataset: said first in the summary too);
- figures under ``report/`` (R^2 against latent dim with error bars and baselines, final
  loss per trial, seed agreement per shape), each also logged as an MLflow image so the run's
  charts show it;
- ``report/summary.md`` and ``report/trials.csv`` (one row per trial), and the summary table
  as the run's description, which the run page renders;
- alias ``best`` on each shape's registered encoder (``<dataset>-encoder-<MODEL>-d<dim>``),
  pointing at the version of the run with the best held-out R^2 in this sweep.

The numbers come from :func:`summarise` and :func:`seed_agreement`, plain functions on
tables, so they are tested without a server.
"""

from __future__ import annotations

import io
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from deeppert.config import ExperimentConfig
from deeppert.ensemble.stability import standardised_rows
from deeppert.tracking.contract import (
    AGREEMENT_METRIC,
    BEST_ALIAS,
    ROLES,
    TAGS,
)

if TYPE_CHECKING:
    from deeppert.tracking.session import TrackingSession

__all__ = [
    "SweepReport",
    "trial_table",
    "summarise",
    "seed_agreement",
    "run_agreement",
    "baseline_table",
    "baseline_versus_models",
    "baseline_lines",
    "METRICS",
    "summary_markdown",
    "report_figures",
    "log_sweep_report",
    "log_figure_images",
    "set_best_aliases",
]

log = logging.getLogger(__name__)

BASELINES = ("PCA", "ICA")

#: Parent-run metric name prefixes (each chart in the MLflow UI is titled by its name).
METRICS = {
    "r2_genes_best": "heldout_r2_best_run",
    "r2_genes_mean": "heldout_r2_mean_over_runs",
    "r2_genes_sd": "heldout_r2_sd_over_runs",
    "seed_agreement": "seed_agreement_best_match_abs_r",
    "baseline": "heldout_r2_linear_baseline",
    "margin": "heldout_r2_best_baseline_minus_best_model",
    "best": "heldout_r2_best_shape_mean",
}


@dataclass
class SweepReport:
    """The tables behind the report: trials, per-shape summary, baselines, seed agreement."""

    trials: (
        pd.DataFrame
    )  # dataset, model, latent_dim, run, r2_genes, r2_pca, loss, val_loss, run_id
    summary: pd.DataFrame  # one row per (dataset, model, latent_dim)
    baselines: pd.DataFrame  # dataset, model (PCA/ICA), latent_dim, r2_genes
    # dataset, model, latent_dim, agreement and run (a run's mean over the runs its trial
    # trained) or run_a, run_b (one pair, :func:`seed_agreement`)
    agreement: pd.DataFrame

    @property
    def best(self) -> pd.Series:
        """The (dataset, model, dim) row with the highest mean held-out gene-space R^2."""
        return self.summary.loc[self.summary["r2_genes_mean"].idxmax()]

    def baseline_versus_models(self) -> pd.DataFrame:
        """:func:`baseline_versus_models` of this sweep's trials and baselines."""
        return baseline_versus_models(self.trials, self.baselines)


def baseline_versus_models(trials: pd.DataFrame, baselines: pd.DataFrame) -> pd.DataFrame:
    """Per dataset with baselines: the best model shape by mean held-out R^2 over its runs
    (``trials``: dataset, model, latent_dim, r2_genes, one row per run) against the best
    linear baseline (``baselines``: same columns); ``margin`` = baseline R^2 - model R^2 and
    ``wins`` when the baseline is at least as good."""
    keys = ["dataset", "model", "latent_dim"]
    models = trials.dropna(subset=["r2_genes"]).groupby(keys, as_index=False)
    models = models.agg(runs=("r2_genes", "count"), r2=("r2_genes", "mean"))
    rows = []
    for dataset, base in baselines.dropna(subset=["r2_genes"]).groupby("dataset"):
        shapes = models[models["dataset"] == dataset]
        if not len(shapes):
            continue
        m = shapes.loc[shapes["r2"].idxmax()]
        b = base.loc[base["r2_genes"].idxmax()]
        margin = float(b["r2_genes"] - m["r2"])
        rows.append(
            {
                "dataset": dataset,
                "model": f"{m['model']} d{m['latent_dim']}",
                "model_r2": float(m["r2"]),
                "runs": int(m["runs"]),
                "baseline": f"{b['model']} d{b['latent_dim']}",
                "baseline_r2": float(b["r2_genes"]),
                "margin": margin,
                "wins": margin >= 0,
            }
        )
    columns = ["dataset", "model", "model_r2", "runs", "baseline", "baseline_r2", "margin"]
    return pd.DataFrame(rows, columns=[*columns, "wins"])


def baseline_lines(versus: pd.DataFrame) -> list[str]:
    """One plain sentence per dataset of :func:`baseline_versus_models` where a linear
    baseline beats every model."""
    return [
        f"On {r.dataset}, the linear baseline {r.baseline} (held-out R² {r.baseline_r2:.3f}) "
        f"beats every model: the best, {r.model}, reaches {r.model_r2:.3f} (mean of {r.runs} "
        f"run{'s' if r.runs != 1 else ''})."
        for r in versus.itertuples()
        if r.wins
    ]


def trial_table(runs) -> pd.DataFrame:
    """One row per FINISHED trial run (MLflow ``Run`` objects): grid point and final metrics."""
    rows = []
    for r in runs:
        tags, metrics = r.data.tags, r.data.metrics
        rows.append(
            {
                "dataset": tags[TAGS.cell_line],
                "model": tags[TAGS.model],
                "latent_dim": int(tags[TAGS.latent_dim]),
                "run": int(tags[TAGS.run]),
                "r2_genes": metrics.get("r2_genes", np.nan),
                "r2_pca": metrics.get("r2_pca", np.nan),
                "loss": metrics.get("loss", np.nan),
                "val_loss": metrics.get("val_loss", np.nan),
                "seed_agreement": metrics.get(AGREEMENT_METRIC, np.nan),
                "run_id": r.info.run_id,
                "encoder_version": tags.get(TAGS.encoder_version),
            }
        )
    columns = ["dataset", "model", "latent_dim", "run", "r2_genes", "r2_pca", "loss", "val_loss"]
    columns.append("seed_agreement")
    frame = pd.DataFrame(rows, columns=[*columns, "run_id", "encoder_version"])
    return frame.sort_values(["dataset", "model", "latent_dim", "run"], ignore_index=True)


def seed_agreement(latents: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Agreement of every pair of runs of one shape: mean best-match |r| of their latent nodes.

    ``latents`` maps run -> (samples x nodes) frame on the same samples. Nodes are matched
    one to one (Hungarian, on |Pearson r|, since a latent node's sign is arbitrary); 1 means
    every node of one run has an exact (possibly sign-flipped) twin in the other.

    Each run's nodes are standardised once on the samples all runs share, so a pair costs one
    product and one matching: a trial of 100 runs has 4,950 pairs.
    """
    runs = sorted(latents)
    common = latents[runs[0]].index if runs else pd.Index([])
    for run in runs[1:]:
        if not latents[run].index.equals(common):
            common = common.intersection(latents[run].index)
    unit = {run: standardised_rows(latents[run].loc[common].to_numpy(np.float64).T) for run in runs}
    rows = []
    for a, b in itertools.combinations(runs, 2):
        score = np.abs(unit[a] @ unit[b].T)
        matched = score[linear_sum_assignment(-score)]
        rows.append({"run_a": a, "run_b": b, "agreement": float(np.mean(matched))})
    return pd.DataFrame(rows, columns=["run_a", "run_b", "agreement"])


def run_agreement(latents: dict[int, pd.DataFrame]) -> dict[int, float]:
    """Each run's mean :func:`seed_agreement` with the other runs of ``latents`` (run ->
    samples x nodes, one shape); empty for fewer than two runs. A trial logs it per run
    (``seed_agreement_in_trial``) from the latents it holds, so the report reads no latents."""
    pairs = seed_agreement(latents)
    return {
        run: float(pairs.loc[(pairs["run_a"] == run) | (pairs["run_b"] == run), "agreement"].mean())
        for run in latents
        if len(latents) > 1
    }


def summarise(trials: pd.DataFrame, agreement: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model, dim): runs, best / mean / sd of held-out gene R^2, seed agreement."""
    keys = ["dataset", "model", "latent_dim"]
    summary = trials.groupby(keys, as_index=False).agg(
        runs=("run", "count"),
        r2_genes_best=("r2_genes", "max"),
        r2_genes_mean=("r2_genes", "mean"),
        r2_genes_sd=("r2_genes", "std"),
    )
    if len(agreement):
        per_shape = agreement.groupby(keys, as_index=False).agg(
            seed_agreement=("agreement", "mean")
        )
        summary = summary.merge(per_shape, on=keys, how="left")
    else:
        summary["seed_agreement"] = np.nan
    return summary


def baseline_table(config: ExperimentConfig, datasets: list[str]) -> pd.DataFrame:
    """Held-out gene-space R^2 of the PCA and ICA baselines at the grid's latent dims.

    Same data, split and PCA as the trials (``grid.prepare`` is deterministic).
    Empty when ``grid.baselines`` is off.
    """
    from deeppert.grid import baseline_metrics, load_dataset, prepare

    frames = []
    if config.grid.baselines:
        for name in datasets:
            prepared = prepare(load_dataset(config.dataset(name)), config)
            if not len(prepared.val_idx):
                continue
            dims = [d for d in config.grid.latent_dims if d <= prepared.pca.n_components]
            table = baseline_metrics(prepared, BASELINES, dims)
            frames.append(table.assign(dataset=name))
    if not frames:
        return pd.DataFrame(columns=["dataset", "model", "latent_dim", "r2_genes"])
    return pd.concat(frames, ignore_index=True)[["dataset", "model", "latent_dim", "r2_genes"]]


def summary_markdown(report: SweepReport, title: str) -> str:
    """A short markdown summary: the best shape, then one table row per shape."""
    best = report.best
    verdict = [f"**{line}**" for line in baseline_lines(report.baseline_versus_models())]
    lines = [
        *[part for line in verdict for part in (line, "")],
        f"**{title}**: {len(report.trials)} trial runs. Best by mean held-out gene-space R^2: "
        f"**{best['model']} d{best['latent_dim']}** on {best['dataset']} "
        f"({best['r2_genes_mean']:.3f} ± {_fmt(best['r2_genes_sd'])} over {best['runs']} runs).",
        "",
        "| cell line | model | dim | runs | best R² | mean R² | sd | seed agreement |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report.summary.itertuples():
        lines.append(
            f"| {row.dataset} | {row.model} | {row.latent_dim} | {row.runs} | "
            f"{row.r2_genes_best:.3f} | {row.r2_genes_mean:.3f} | {_fmt(row.r2_genes_sd)} | "
            f"{_fmt(row.seed_agreement)} |"
        )
    for row in report.baselines.itertuples():
        lines.append(
            f"| {row.dataset} | {row.model} (baseline) | {row.latent_dim} | 1 | "
            f"{row.r2_genes:.3f} | {row.r2_genes:.3f} | - | - |"
        )
    lines += [
        "",
        "R² is gene-space reconstruction of the held-out signatures; seed agreement is the mean "
        "best-match |r| of latent nodes between runs trained in the same trial (1 = the same "
        "nodes). Figures: `report/`. "
        f"Metrics: `{METRICS['r2_genes_mean']}/<cell line>/<MODEL>_d<dim>` and alike, "
        f"`{METRICS['baseline']}/...` for the baselines, "
        f"`{METRICS['margin']}/<cell line>` (> 0: a baseline wins).",
    ]
    return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.3f}"


def report_figures(report: SweepReport) -> dict:
    """The report's figures by artifact file name: :class:`matplotlib.figure.Figure` objects,
    outside pyplot's state (no backend is chosen, nothing needs closing)."""
    shapes = list(dict.fromkeys(_shape_labels(report.trials.sort_values(["model", "latent_dim"]))))
    return {
        "r2_vs_latent_dim.png": _r2_figure(report),
        "final_loss_per_trial.png": _final_loss_figure(report.trials, shapes),
        "seed_agreement.png": _agreement_figure(report.agreement, shapes),
    }


def _shape_labels(table: pd.DataFrame) -> pd.Series:
    """``<MODEL> d<dim>`` per row: a shape's label on the x axis."""
    return table["model"] + " d" + table["latent_dim"].astype(str)


def _r2_figure(report: SweepReport):
    """Held-out R^2 against latent dim, one line per model (error bars over runs) and one per
    linear baseline; one panel per dataset.

    Every line stays visible where two coincide (ICA reconstructs exactly as PCA does, being
    a rotation of it; two models can tie): each line has its own marker and dash, the lines
    are shifted slightly sideways about each latent dim, and a line equal to an earlier one
    says so in its legend label.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    datasets = sorted(report.trials["dataset"].unique())
    models = sorted(report.trials["model"].unique())
    colours = dict(zip(models, colormaps["tab10"].colors))
    dims = sorted(report.trials["latent_dim"].unique())
    fig = Figure(figsize=(5.5 * len(datasets), 4))
    axes = fig.subplots(1, len(datasets), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        series = _r2_series(report, dataset, models, colours)
        span = (max(dims) - min(dims)) if len(dims) > 1 else 1.0
        step = 0.015 * span
        drawn: list[tuple[str, pd.Series]] = []
        for i, (name, values, sd, colour) in enumerate(series):
            shift = (i - (len(series) - 1) / 2) * step
            same = [n for n, v in drawn if _same_values(v, values)]
            label = name if not same else f"{name}: same R² as {same[0].split(' (')[0]}"
            marker, dash = _R2_MARKERS[i % len(_R2_MARKERS)], _R2_DASHES[i % len(_R2_DASHES)]
            x = values.index.to_numpy(dtype=float) + shift
            if sd is None:  # a baseline: grey
                ax.plot(
                    x, values, linestyle=dash, marker=marker, color=colour, label=label,
                    markerfacecolor="none", markersize=7,
                )  # fmt: skip
            else:
                ax.errorbar(
                    x, values, yerr=sd, marker=marker, linestyle=dash, capsize=4,
                    color=colour, label=label,
                )  # fmt: skip
            drawn.append((name, values))
        ax.set_xticks(dims)
        ax.set_xlabel("latent dimension (lines shifted sideways so none hides another)")
        ax.set_ylabel("held-out gene-space R²")
        ax.set_title(f"{dataset}: reconstruction by latent size")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


_R2_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_R2_DASHES = ("-", "--", "-.", ":")
_BASELINE_GREYS = {"PCA": "0.3", "ICA": "0.55"}


def _r2_series(
    report: SweepReport, dataset: str, models: list[str], colours: dict
) -> list[tuple[str, pd.Series, pd.Series | None, object]]:
    """``(label, mean R^2 by latent dim, sd or None, colour)`` of each model, then each
    baseline (in grey)."""
    summary = report.summary[report.summary["dataset"] == dataset]
    out: list[tuple[str, pd.Series, pd.Series | None, object]] = []
    for model in models:
        s = summary[summary["model"] == model].sort_values("latent_dim").set_index("latent_dim")
        sd = s["r2_genes_sd"].fillna(0)
        out.append((f"{model} (mean ± sd)", s["r2_genes_mean"], sd, colours[model]))
    base = report.baselines[report.baselines["dataset"] == dataset]
    order = {kind: i for i, kind in enumerate(_BASELINE_GREYS)}  # PCA first: ICA rotates it
    for kind in sorted(base["model"].unique(), key=lambda k: (order.get(k, len(order)), k)):
        b = base[base["model"] == kind].sort_values("latent_dim").set_index("latent_dim")
        out.append((f"{kind} baseline", b["r2_genes"], None, _BASELINE_GREYS.get(kind, "0.5")))
    return out


def _same_values(a: pd.Series, b: pd.Series) -> bool:
    """Whether two R^2 lines would be drawn on top of each other (same dims, values within
    0.001, a tenth of a line's width on the usual scale)."""
    return (
        len(a) > 0
        and list(a.index) == list(b.index)
        and np.allclose(a.to_numpy(float), b.to_numpy(float), rtol=0, atol=1e-3)
    )


def _final_loss_figure(trials: pd.DataFrame, shapes: list[str]):
    """Final training and held-out loss per trial, one point per run, grouped by shape."""
    from matplotlib.figure import Figure

    trials = trials.assign(shape=_shape_labels(trials))
    fig = Figure(figsize=(max(5.0, 0.9 * len(shapes) + 2), 4))
    ax = fig.subplots()
    x = {s: i for i, s in enumerate(shapes)}
    jitter = np.linspace(-0.15, 0.15, max(2, trials["run"].nunique()))
    run_pos = {r: jitter[i] for i, r in enumerate(sorted(trials["run"].unique()))}
    for column, marker, label in (
        ("loss", "o", "training loss"),
        ("val_loss", "x", "held-out loss"),
    ):
        if trials[column].notna().any():
            pos = [x[s] + run_pos[r] for s, r in zip(trials["shape"], trials["run"])]
            ax.scatter(pos, trials[column], marker=marker, label=label, alpha=0.8)
    ax.set_xticks(range(len(shapes)), shapes, rotation=30 if len(shapes) > 6 else 0)
    ax.set_ylabel("final-epoch loss")
    ax.set_title("final loss per trial (one point per run)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _agreement_figure(agreement: pd.DataFrame, shapes: list[str]):
    """Seed agreement per shape: the mean over run pairs as bars, each pair as a point."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 0.9 * len(shapes) + 2), 4))
    ax = fig.subplots()
    if len(agreement):
        x = {s: i for i, s in enumerate(shapes)}
        agreement = agreement.assign(shape=_shape_labels(agreement))
        means = agreement.groupby("shape")["agreement"].mean().reindex(shapes)
        ax.bar(range(len(shapes)), means.to_numpy(), color="0.8", label="mean over runs")
        ax.scatter(
            [x[s] for s in agreement["shape"]], agreement["agreement"], color="C3", zorder=3,
            s=14, label="one run, mean over the runs its trial trained",
        )  # fmt: skip
        for i, value in enumerate(means.to_numpy()):
            if not np.isfinite(value):
                ax.text(
                    i, 0.5, "runs trained\nalone: no pair", ha="center", fontsize=8, color="0.4"
                )
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    else:
        ax.text(
            0.5, 0.5, "no two runs trained in one trial: nothing to compare", ha="center",
            transform=ax.transAxes,
        )  # fmt: skip
    ax.set_xticks(range(len(shapes)), shapes, rotation=30 if len(shapes) > 6 else 0)
    ax.set_ylim(0, 1.02)
    ax.set_xlim(-0.6, len(shapes) - 0.4)
    ax.set_ylabel("best-match |r| of latent nodes\n(1 = runs learn the same nodes)")
    ax.set_title("seed agreement per shape")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def build_report(runs, config: ExperimentConfig) -> SweepReport:
    """Tables of the report from the sweep's FINISHED trial runs (their metrics only: the seed
    agreement is each run's ``seed_agreement_in_trial``, none for a run trained alone)."""
    trials = trial_table(runs)
    paired = trials.dropna(subset=["seed_agreement"])
    agreement = paired.rename(columns={"seed_agreement": "agreement"}).reset_index(drop=True)[
        ["dataset", "model", "latent_dim", "run", "agreement"]
    ]
    summary = summarise(trials, agreement)
    baselines = baseline_table(config, sorted(trials["dataset"].unique()))
    return SweepReport(trials, summary, baselines, agreement)


def log_sweep_report(ctx, config: ExperimentConfig) -> SweepReport | None:
    """Compute the report of sweep ``ctx`` and log it on its parent run (None: no trials yet)."""
    from mlflow.entities import Metric
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    from deeppert.tracking.client import find_runs_by_tag, ui_url

    session = ctx.session
    runs = [
        r
        for r in find_runs_by_tag(
            session,
            TAGS.sweep,
            ctx.sweep,
            status="FINISHED",
            parent_run_id=ctx.parent_run_id,
        )  # fmt: skip
        if r.data.tags.get(TAGS.role) == ROLES.trial
        and r.data.tags.get(TAGS.config_sha) == ctx.config_sha
    ]
    if not runs:
        log.info("sweep %s: no finished trials yet; no report", ctx.sweep)
        return None
    report = build_report(runs, config)
    client = session.client
    run_id = ctx.parent_run_id
    stamp = pd.Timestamp.now().value // 1_000_000
    metrics = []
    for row in report.summary.itertuples():
        shape = f"{row.dataset}/{row.model}_d{row.latent_dim}"
        for stat in ("r2_genes_best", "r2_genes_mean", "r2_genes_sd", "seed_agreement"):
            value = getattr(row, stat)
            if value is not None and np.isfinite(value):
                metrics.append(Metric(f"{METRICS[stat]}/{shape}", float(value), stamp, 0))
    for row in report.baselines.itertuples():
        shape = f"{row.dataset}/{row.model}_d{row.latent_dim}"
        metrics.append(Metric(f"{METRICS['baseline']}/{shape}", float(row.r2_genes), stamp, 0))
    versus = report.baseline_versus_models()
    for row in versus.itertuples():
        metrics.append(Metric(f"{METRICS['margin']}/{row.dataset}", row.margin, stamp, 0))
    best = report.best
    metrics.append(Metric(METRICS["best"], float(best["r2_genes_mean"]), stamp, 0))
    metrics.append(Metric("finished_trials", float(len(report.trials)), stamp, 0))
    for start in range(0, len(metrics), 1000):  # log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    client.set_tag(
        run_id, TAGS.best_shape, f"{best['dataset']}/{best['model']}/d{best['latent_dim']}"
    )
    if len(versus):
        client.set_tag(run_id, TAGS.baseline_beats_models, str(bool(versus["wins"].any())).lower())
    markdown = summary_markdown(report, f"Sweep {ctx.sweep}")
    client.set_tag(run_id, MLFLOW_RUN_NOTE, markdown)
    client.log_text(run_id, markdown, "report/summary.md")
    buffer = io.StringIO()
    report.trials.drop(columns=["run_id", "encoder_version"]).to_csv(buffer, index=False)
    client.log_text(run_id, buffer.getvalue(), "report/trials.csv")
    set_best_aliases(session, report)
    for name, fig in report_figures(report).items():
        client.log_figure(run_id, fig, f"report/{name}")
        client.log_image(run_id, _as_image(fig), key=f"report/{name.removesuffix('.png')}", step=0)
    log.info(
        "sweep %s: report on parent run %s (best %s d%d, R^2 %.3f); %s",
        ctx.sweep, run_id, best["model"], best["latent_dim"], best["r2_genes_mean"],
        ui_url(session.uri, session.experiment_id, run_id),
    )  # fmt: skip
    for line in baseline_lines(versus):
        log.warning("sweep %s: %s", ctx.sweep, line)
    return report


def set_best_aliases(session: TrackingSession, report: SweepReport) -> None:
    """Point ``<dataset>-encoder-<MODEL>-d<dim>@best`` at the shape's best run of this sweep."""
    from deeppert.tracking.client import set_alias
    from deeppert.tracking.contract import encoder_model_name

    trials = report.trials.dropna(subset=["r2_genes", "encoder_version"])
    for (dataset, model, dim), group in trials.groupby(["dataset", "model", "latent_dim"]):
        best = group.loc[group["r2_genes"].idxmax()]
        set_alias(
            session,
            encoder_model_name(dataset, model, int(dim)),
            BEST_ALIAS,
            best["encoder_version"],
        )


def _as_image(fig):
    """``fig`` rendered to a PIL image (what ``MlflowClient.log_image`` takes for a keyed image)."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def log_figure_images(session: TrackingSession, run_id: str, folder: Path) -> None:
    """Each ``*.png`` of ``folder`` (already logged as a file) also as a keyed image, for the
    run's image panel."""
    from PIL import Image

    client = session.client
    for path in sorted(Path(folder).glob("*.png")):
        with Image.open(path) as image:
            client.log_image(run_id, image.convert("RGB"), key=path.stem, step=0)
