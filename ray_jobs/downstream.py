"""Downstream job: synergy and toxicity x feature sets, scored against raw genes and PCA.

    ray job submit --working-dir . -- python ray_jobs/downstream.py \
        --config configs/seed_pooled.yaml --ensemble seed-pooled-ensemble@current \
        --data-dir ../shared/data/deeppert-seed

Resolves ``--ensemble NAME@ALIAS`` in the registry (lineage), loads its pyfunc model pinned
to the resolved version, and builds four feature sets: (a) raw 978 genes, (b) PCA refitted
per fold, (c) one trained model of the ensemble (largest member group, replica 0), (d) the
ensemble embedding. PCA runs in both featurizer settings (inductive: fitted on the training
fold's signatures; transductive: on all of the task's signatures); the two embeddings are
transductive only (refitting an ensemble per fold is not done: see docs/evaluation.md).
Synergy (A375, HT29, VCAP) and toxicity (renal, npc, neu) x feature sets
run in parallel as Ray tasks; each is logged as an MLflow run (role ``downstream``, tagged
with the ensemble version) holding scores and predictions as Parquet and summary metrics.

``--build-pooled OUT.parquet`` instead writes the 446 pooled signatures the
``seed-pooled`` ensemble is trained on (no labels read). Full flow (configs/seed_pooled.yaml):
build-pooled -> ray_jobs/sweep.py -> ray_jobs/ensemble.py -> this job. That ensemble is
unsupervised but transductive: it was trained on the same signatures the tasks embed.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from deeppert.downstream_config import TaskConfig, add_downstream_flags, downstream_configs
from deeppert.errors import DeeppertError
from deeppert.schema import add_flags, given
from ray_jobs._common import connect_ray, job_config, job_parser, run_job

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("deeppert.downstream_job")

TRANSDUCTIVE_NOTE = (
    "note: the ensemble is unsupervised (no synergy/toxicity label was used to train it) but "
    "transductive when it is seed-pooled-ensemble: trained on the same 446 signatures the "
    "tasks embed; compare it with the transductive PCA row."
)


def run_one(
    kind: str, which: str, featurizer, data_dir: str, eval_config, splits=None
) -> tuple[str, str, object]:
    """One task x one feature set (a Ray task): returns (task kind, name, EvaluationResult)."""
    import torch

    from deeppert import downstream as ds

    torch.set_num_threads(1)
    if kind == "synergy":
        task = ds.load_synergy(data_dir, which)
        res = ds.evaluate_synergy(
            task, [featurizer], config=eval_config, splits=splits or ds.SYNERGY_SPLITS
        )
    else:
        task = ds.load_toxicity(data_dir, which)
        res = ds.evaluate_toxicity(
            task, [featurizer], config=eval_config, splits=splits or ds.TOXICITY_SPLITS
        )
    return kind, which, res


def log_downstream_run(session, outputs, kind, which, featurizer, result, eval_config):
    """One MLflow run per task x feature set in the connected ``session``'s experiment: lineage
    tags, Parquet scores, summary metrics."""
    from deeppert.downstream import summarize
    from deeppert.tracking.client import log_parquet, tracked_run
    from deeppert.tracking.contract import ARTIFACTS, ROLES, TAGS
    from deeppert.tracking.registry import lineage_tags

    with tracked_run(
        session,
        run_name=f"downstream {kind} {which} {featurizer.name}",
        tags={
            TAGS.role: ROLES.downstream,
            TAGS.task: f"{kind}_{which}",
            TAGS.feature_set: featurizer.name,
            **lineage_tags(outputs),
        },
        params={
            **{f"eval.{k}": v for k, v in eval_config.to_dict().items()},
            **{f"features.{k}": v for k, v in featurizer.to_dict().items()},
        },
    ) as run_id:
        log_parquet(session, run_id, result.scores, ARTIFACTS.scores)
        log_parquet(session, run_id, result.predictions, ARTIFACTS.predictions)
        summary = summarize(result.scores)
        client = session.client
        for r in summary.itertuples(index=False):
            key = f"{r.target}.{r.split}.{r.setting}.{r.model}.{r.metric}"
            client.log_metric(run_id, f"{key}.mean", float(r.mean))
            if r.sd == r.sd:  # not NaN
                client.log_metric(run_id, f"{key}.sd", float(r.sd))
            client.log_metric(run_id, f"{key}.n", float(r.n))
    return run_id


def log_task_figures(session, summary: pd.DataFrame, runs_of_task: dict[str, list[str]]) -> None:
    """Each task's bars (every feature set, split and model) on each of that task's runs.

    A run holds one feature set; the chart beside its metrics shows it against the others
    (raw genes, PCA, one model, the ensemble) on the honest and the leaky splits alike.
    """
    import tempfile

    from deeppert.downstream._plots import plot_summary_figures

    client = session.client
    for task, run_ids in runs_of_task.items():
        with tempfile.TemporaryDirectory() as tmp:
            plot_summary_figures(summary[summary["task"] == task], tmp)
            for run_id in run_ids:
                client.log_artifacts(run_id, tmp, "figures")


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__, config_required=False)
    parser.add_argument("--ensemble", help="registry alias NAME@ALIAS")
    parser.add_argument("--data-dir", required=True, type=Path, help="the deeppert-seed folder")
    parser.add_argument(
        "--build-pooled", type=Path, metavar="OUT.parquet", help="write the pooled signatures"
    )
    add_flags(parser, TaskConfig, ("synergy", "toxicity"))
    add_downstream_flags(parser)  # EvalConfig and FeatureConfig, as `deeppert downstream`
    parser.add_argument("--num-cpus", default=2, type=int, help="local Ray size when no cluster")
    parser.add_argument("--out", type=Path, help="also write scores/summary here")
    args = parser.parse_args(argv)
    return run_job(
        "downstream", lambda: _build_pooled(args) if args.build_pooled else _evaluate(args)
    )


def _build_pooled(args) -> int:
    from deeppert.data._io import save_signatures
    from deeppert.downstream import pooled_signatures

    sig = pooled_signatures(args.data_dir)
    save_signatures(sig, args.build_pooled)
    counts = sig.metadata["cell_line"].value_counts().to_dict()
    print(f"wrote {args.build_pooled}: {sig.n_samples} signatures x {sig.n_genes} genes")
    print(f"cell lines: {counts}; no labels read")
    return 0


def _evaluate(args) -> int:
    from deeppert import downstream as ds
    from deeppert.downstream._pooled import ensemble_feature_sets
    from deeppert.tracking.registry import load_ensemble_model, load_ensemble_outputs
    from deeppert.tracking.session import TrackingSession

    if not args.config or not args.ensemble:
        raise DeeppertError("--config and --ensemble are required (or --build-pooled)")
    config = job_config(args)
    session = TrackingSession(config.tracking).connect()
    outputs = load_ensemble_outputs(session, args.ensemble)
    model = load_ensemble_model(session, outputs.version)
    log.info(
        "ensemble %s -> %s (run %s)", args.ensemble, outputs.version.uri, outputs.version.run_id
    )
    eval_config, features = downstream_configs(args)
    tasks = TaskConfig(**given(args, TaskConfig, ("synergy", "toxicity")))
    feats = ensemble_feature_sets(
        model, pca_components=features.pca_components, group=features.member
    )
    jobs = [("synergy", c) for c in tasks.synergy] + [("toxicity", t) for t in tasks.toxicity]
    if not jobs:
        raise DeeppertError("no task: --synergy and --toxicity are both empty")
    import ray

    connect_ray(config, num_cpus=args.num_cpus)
    task = ray.remote(num_cpus=1)(run_one)
    data_dir = str(args.data_dir.resolve())
    feats_ref = {f.name: ray.put(f) for f in feats}
    pending = {
        task.remote(kind, which, feats_ref[f.name], data_dir, eval_config): (kind, which, f)
        for kind, which in jobs
        for f in feats
    }
    results = []
    runs_of_task: dict[str, list[str]] = {}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        kind, which, feat = pending.pop(done[0])
        _, _, res = ray.get(done[0])
        run_id = log_downstream_run(session, outputs, kind, which, feat, res, eval_config)
        log.info("%s %s %s: logged run %s", kind, which, feat.name, run_id)
        results.append(res)
        runs_of_task.setdefault(f"{kind}_{which}", []).append(run_id)
    merged = ds.merge_results(results)
    summary = ds.summarize(merged.scores)
    log_task_figures(session, summary, runs_of_task)
    if args.out:
        ds.write_results(
            merged,
            args.out,
            plots=False,
            config={
                "ensemble": args.ensemble,
                "model_version": outputs.version.uri,
                "eval": eval_config.to_dict(),
            },
        )
    order = {f.name: i for i, f in enumerate(feats)}
    summary = summary.sort_values(
        ["task", "target", "split", "metric", "model", "feature_set", "setting"],
        key=lambda s: s.map(order) if s.name == "feature_set" else s,
        kind="stable",
    )
    print(f"ensemble {args.ensemble} -> {outputs.version.uri}; {TRANSDUCTIVE_NOTE}")
    print(
        f"eval: models {eval_config.models}, {eval_config.n_estimators} trees, "
        f"seeds {list(eval_config.seeds)}, {eval_config.n_folds} folds"
    )
    print(ds.markdown_table(summary), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
