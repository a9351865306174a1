"""Target-combination job: resolve an ensemble by registry alias and predict target pairs.

    ray job submit --working-dir . -- python ray_jobs/targets.py --config configs/demo.yaml \
        --disease "Synthetic Disease" --pairs-dir demo_out/synth/target_pairs

Reads ``ensemble_weights.parquet`` (the gene importances, non-negative) of
``<dataset>-ensemble@current`` (or ``--ensemble NAME@ALIAS``), runs docs/method.md section 5
(:func:`deeppert.tl.targets`, what ``deeppert targets`` runs) with the config's ``targets``
section, and logs a run holding the output tables and plots, tagged with the model version it
consumed, with metrics per reported TOP_N (``match_rate_top_<N>``, ``known_pairs_in_top_<N>``,
``perm_p_top_<N>``) and a description that says how to read them.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ray_jobs._common import job_config, job_parser, run_job


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument(
        "--ensemble", help="registry alias NAME@ALIAS (default <first dataset>-ensemble@current)"
    )
    parser.add_argument("--disease", required=True, help="disease name in the known-pair tables")
    parser.add_argument(
        "--pairs-dir", required=True, type=Path, help="folder with the three known-pair tables"
    )
    parser.add_argument("--out", type=Path, help="also write the outputs to this local folder")
    args = parser.parse_args(argv)
    return run_job("targets", lambda: _predict(args))


def _predict(args) -> int:
    from deeppert import tl
    from deeppert.targets import load_known_pairs, write_target_outputs
    from deeppert.tracking.client import tracked_run
    from deeppert.tracking.contract import ARTIFACTS, ENSEMBLE_ALIAS, ROLES, TAGS
    from deeppert.tracking.notes import targets_description, targets_metrics
    from deeppert.tracking.registry import ensemble_model_name, lineage_tags, load_ensemble_outputs
    from deeppert.tracking.session import TrackingSession

    config = job_config(args)
    session = TrackingSession(config.tracking).connect()
    ref = args.ensemble or f"{ensemble_model_name(config.datasets[0].name)}@{ENSEMBLE_ALIAS}"
    known = load_known_pairs(args.pairs_dir)
    outputs = load_ensemble_outputs(session, ref)
    result = tl.targets(outputs.weights, config=config.targets, known=known, disease=args.disease)
    version = f"{outputs.version.name}/{outputs.version.version}"
    with tracked_run(
        session,
        run_name=f"targets {args.disease}",
        tags={TAGS.role: ROLES.targets, TAGS.disease: args.disease, **lineage_tags(outputs)},
        params={f"targets.{k}": v for k, v in config.targets.to_dict().items()},
        description=targets_description(result, ensemble=ref, version=version),
    ) as run_id:
        client = session.client
        extra = {"ensemble": ref, "model_version": outputs.version.version}
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_target_outputs(
                result, args.out or Path(tmp) / ARTIFACTS.targets, extra=extra
            )
            client.log_artifacts(run_id, str(folder), ARTIFACTS.targets)
        for name, value in targets_metrics(result).items():
            client.log_metric(run_id, name, value)
    print(f"ensemble {ref} (version {outputs.version.version}); disease {args.disease!r}")
    print(result.pairs.head(10).to_string(index=False))
    print(result.match_tables()[0].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
