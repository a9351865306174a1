"""``deeppert downstream synergy|toxicity|summarize``: downstream tasks on local files."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from deeppert.cli._inputs import require_dir, require_file
from deeppert.downstream_config import TaskConfig, add_downstream_flags, downstream_configs
from deeppert.errors import DeeppertError
from deeppert.schema import add_flags, given

if TYPE_CHECKING:
    import numpy as np

    from deeppert.downstream_config import FeatureConfig

__all__ = ["register"]

log = logging.getLogger(__name__)


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", required=True, type=Path, help="the deeppert-seed folder (holds downstream/)"
    )
    p.add_argument(
        "--features",
        default="raw,pca",
        type=_csv_list,
        help="comma list of raw, pca, embedding (the --embedding table), single, ensemble "
        "(single/ensemble need --ensemble or --ensemble-dir)",
    )
    p.add_argument(
        "--embedding",
        type=Path,
        help="CSV/TSV: first column SMILES, then one column per latent "
        "variable; looked up by structure (needed for --features embedding)",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--ensemble", metavar="NAME@ALIAS", help="registered ensemble (needs --tracking-uri)"
    )
    src.add_argument(
        "--ensemble-dir",
        type=Path,
        help="a saved EnsembleModel folder, e.g. RUN_DIR/ensemble/model",
    )
    p.add_argument("--tracking-uri", help="MLflow server holding --ensemble")
    add_downstream_flags(p)  # EvalConfig and FeatureConfig: --models, --seeds, --member, ...
    p.add_argument("--splits", type=_csv_list, help="comma list of splits (default: all)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "--out", required=True, type=Path, help="output folder (replaced whole, atomically)"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "downstream", help="drug synergy and toxicity tasks against raw/PCA baselines"
    )
    sub = parser.add_subparsers(dest="downstream_command", required=True, metavar="TASK")
    syn = sub.add_parser(
        "synergy", help="O'Neil Loewe synergy (regression + label), drug-disjoint folds"
    )
    add_flags(syn, TaskConfig, {"synergy": "--cell-lines"})
    _add_common(syn)
    syn.set_defaults(func=_run_synergy)
    tox = sub.add_parser(
        "toxicity", help="HA1E renal / NPC / NEU toxicity, structure and scaffold splits"
    )
    add_flags(tox, TaskConfig, {"toxicity": "--sets"})
    _add_common(tox)
    tox.set_defaults(func=_run_toxicity)
    mrg = sub.add_parser("summarize", help="merge the scores of several runs into one table")
    mrg.add_argument("runs", nargs="+", type=Path, help="output folders of earlier runs")
    mrg.add_argument("--out", required=True, type=Path)
    mrg.add_argument("--no-plots", action="store_true")
    mrg.set_defaults(func=_run_summarize)


def _embedding_lookup(path: Path, keyed_values: dict[str, np.ndarray]):
    """An embed_fn that returns the table's row for each signature, found by its structure."""
    import numpy as np
    import pandas as pd

    from deeppert.downstream import structure_keys

    table = pd.read_csv(path, sep="\t" if path.suffix.lower() in {".tsv", ".txt"} else ",")
    keys = structure_keys(table.iloc[:, 0].astype(str), source=f"{path}:{table.columns[0]}")
    emb = table.iloc[:, 1:].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    if emb.shape[1] == 0 or not np.isfinite(emb).all():
        raise DeeppertError(f"{path}: expected SMILES then finite numeric embedding columns")
    by_key = {k: emb[i] for i, k in enumerate(keys) if k is not None}
    missing = sorted(k for k in keyed_values if k not in by_key)
    if missing:
        raise DeeppertError(
            f"{path}: {len(missing)} task structure(s) have no embedding row, e.g. {missing[:3]}"
        )
    by_row = {v.tobytes(): by_key[k] for k, v in keyed_values.items()}

    def embed(values: np.ndarray) -> np.ndarray:
        rows = [by_row.get(np.ascontiguousarray(v).tobytes()) for v in values]
        if any(r is None for r in rows):
            raise DeeppertError(
                f"{path}: {sum(r is None for r in rows)} signature(s) not in the task"
            )
        return np.vstack(rows)

    return embed


def load_ensemble_source(ensemble: str | None, ensemble_dir: Path | None, tracking_uri: str | None):
    """The EnsembleModel named by ``--ensemble NAME@ALIAS`` or ``--ensemble-dir``, or None."""
    from deeppert.ensemble.modes import EnsembleModel

    if ensemble_dir is not None:
        return EnsembleModel.load(ensemble_dir)
    if ensemble is None:
        return None
    if not tracking_uri:
        raise DeeppertError("--ensemble NAME@ALIAS needs --tracking-uri URI")
    from deeppert.tracking.registry import load_ensemble_model
    from deeppert.tracking.session import TrackingSession

    session = TrackingSession.for_uri(tracking_uri).connect(experiment=False)
    return load_ensemble_model(session, ensemble)


def _ensemble_model(args: argparse.Namespace):
    if not hasattr(args, "_ensemble_model"):
        args._ensemble_model = load_ensemble_source(
            args.ensemble, args.ensemble_dir, args.tracking_uri
        )
    return args._ensemble_model


def _featurizers(
    args: argparse.Namespace, features: FeatureConfig, keyed_values: dict[str, np.ndarray]
):
    from deeppert.downstream import embedding_featurizer, pca_featurizer, raw_featurizer
    from deeppert.downstream._pooled import (
        default_member_group,
        ensemble_embed_fn,
        member_embed_fn,
    )

    out = []
    for name in args.features:
        if name == "raw":
            out.append(raw_featurizer())
        elif name == "pca":
            out.append(pca_featurizer(features.pca_components))
        elif name == "embedding":
            if args.embedding is None:
                raise DeeppertError("--features embedding needs --embedding FILE")
            # a given table: how its model saw these signatures is not known here
            out.append(
                embedding_featurizer(
                    _embedding_lookup(args.embedding, keyed_values), setting="given"
                )
            )
        elif name in ("single", "ensemble"):
            model = _ensemble_model(args)
            if model is None:
                raise DeeppertError(f"--features {name} needs --ensemble or --ensemble-dir")
            if name == "ensemble":
                out.append(embedding_featurizer(ensemble_embed_fn(model), name="ensemble"))
            else:
                group = features.member or default_member_group(model)
                out.append(
                    embedding_featurizer(
                        member_embed_fn(model, group, 0), name=f"single_{group}_run0"
                    )
                )
        else:
            raise DeeppertError(
                f"--features: unknown feature set {name!r} (raw, pca, embedding, single, ensemble)"
            )
    if not out:
        raise DeeppertError("--features: empty list")
    return out


def _finish(results, args: argparse.Namespace, config, features: FeatureConfig) -> int:
    from deeppert.downstream import markdown_table, merge_results, summarize, write_results

    merged = merge_results(results)
    write_results(
        merged,
        args.out,
        plots=not args.no_plots,
        config={
            "eval": config.to_dict(),
            "features": args.features,
            "pca_components": features.pca_components,
            "embedding": args.embedding,
            "ensemble": args.ensemble,
            "ensemble_dir": args.ensemble_dir,
            "data_dir": args.data_dir,
        },
    )
    print(markdown_table(summarize(merged.scores)), end="")
    print(f"wrote {args.out}")
    return 0


def _check_inputs(args: argparse.Namespace) -> None:
    """The given folders and files exist: answered before the heavy imports."""
    require_dir(args.data_dir, "--data-dir")
    require_file(args.embedding, "--embedding")
    if args.ensemble_dir is not None:
        require_dir(args.ensemble_dir, "--ensemble-dir")


def _run_tasks(args: argparse.Namespace, load, evaluate, default_splits, names) -> int:
    """Load each named task, evaluate every feature set on it, write the merged results."""
    config, features = downstream_configs(args)
    splits = tuple(args.splits or default_splits)
    from deeppert.progress import Progress

    results = []
    with Progress(len(names), f"downstream {args.downstream_command}", unit="task") as bar:
        for name in names:
            task = load(args.data_dir, name)
            keyed = dict(zip(task.keys, task.values, strict=True))
            feats = _featurizers(args, features, keyed)
            results.append(evaluate(task, feats, config=config, splits=splits))
            bar.update(1, task=name)
    return _finish(results, args, config, features)


def _tasks(args: argparse.Namespace, field: str) -> TaskConfig:
    """The subcommand's tasks (``--cell-lines`` / ``--sets``, else the defaults)."""
    return TaskConfig(**given(args, TaskConfig, [field]))


def _run_synergy(args: argparse.Namespace) -> int:
    _check_inputs(args)
    from deeppert.downstream import SYNERGY_SPLITS, evaluate_synergy, load_synergy

    names = _tasks(args, "synergy").synergy
    return _run_tasks(args, load_synergy, evaluate_synergy, SYNERGY_SPLITS, names)


def _run_toxicity(args: argparse.Namespace) -> int:
    _check_inputs(args)
    from deeppert.downstream import TOXICITY_SPLITS, evaluate_toxicity, load_toxicity

    names = _tasks(args, "toxicity").toxicity
    return _run_tasks(args, load_toxicity, evaluate_toxicity, TOXICITY_SPLITS, names)


def _run_summarize(args: argparse.Namespace) -> int:
    for run in args.runs:
        for name in ("scores.csv", "predictions.csv", "folds.csv"):
            if not (run / name).is_file():
                raise DeeppertError(f"{run}: no {name} (not a downstream output folder)")
    import pandas as pd

    from deeppert.downstream import (
        EvaluationResult,
        markdown_table,
        merge_results,
        summarize,
        write_results,
    )

    results = [
        EvaluationResult(
            *(pd.read_csv(run / f"{n}.csv") for n in ("scores", "predictions", "folds"))
        )
        for run in args.runs
    ]
    merged = merge_results(results)
    write_results(merged, args.out, plots=not args.no_plots)
    print(markdown_table(summarize(merged.scores)), end="")
    return 0
