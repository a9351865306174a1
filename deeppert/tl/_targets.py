"""``dp.tl.targets`` and ``dp.tl.all_diseases``: target-gene pairs from ensemble gene importances
(docs/method.md section 5)."""

from __future__ import annotations

import os
import time

import pandas as pd

from deeppert.ensemble.modes import Ensemble
from deeppert.ensemble.stability import EnsembleStep
from deeppert.target_config import TargetConfig
from deeppert.targets import (
    TargetResult,
    load_known_pairs,
    load_weights,
    predict_targets,
    run_all_diseases,
    write_all_diseases,
    write_target_outputs,
)
from deeppert.targets._outputs import check_out_dir
from deeppert.tracking.contract import ARTIFACTS
from deeppert.workspace import TrainedRun

__all__ = ["targets", "all_diseases"]

#: What the target steps accept as ensemble gene importances (clusters x genes, >= 0).
Weights = pd.DataFrame | EnsembleStep | Ensemble | TrainedRun | str | os.PathLike
#: Known pairs: the merged table (:func:`deeppert.targets.load_known_pairs`) or its folder.
Known = pd.DataFrame | str | os.PathLike


def targets(
    weights: Weights,
    *,
    config: TargetConfig | None = None,
    known: Known | None = None,
    disease: str | None = None,
    genes: list[str] | None = None,
    out: str | os.PathLike | None = None,
    inputs: dict | None = None,
) -> TargetResult:
    """Place the candidate genes (a disease's known-pair genes, or ``genes``) in the gene
    clusters of the ensemble's top genes and rank their correlated pairs.

    Parameters
    ----------
    weights
        Gene importances: a frame, an :class:`EnsembleStep` or :class:`Ensemble`, a
        :class:`TrainedRun` with ``ensemble/``, or a weights file (TSV/CSV/Parquet).
    config
        Clustering, threshold, pairs and null (``TargetConfig()``: the reference's evaluation).
    known, disease
        Known pairs (the table or the folder of the three tables) and the disease whose genes
        are the candidates and whose pairs score the prediction.
    genes
        Candidate genes instead of a disease's.
    out
        When given, the folder the outputs are written to, atomically
        (:func:`deeppert.targets.write_target_outputs`); ``inputs`` goes into its
        ``summary.json`` beside the seconds taken.
    """
    config = config or TargetConfig()
    if out is not None:
        check_out_dir(out)
    start = time.perf_counter()
    table = _weights_frame(weights)
    pairs = _known_frame(known)
    result = predict_targets(table, config=config, known=pairs, disease=disease, genes=genes)
    seconds = time.perf_counter() - start
    if out is not None:
        extra = {"inputs": inputs or {}, "seconds": round(seconds, 3)}
        write_target_outputs(result, out, extra=extra)
    return result


def all_diseases(
    weights: Weights,
    known: Known,
    *,
    config: TargetConfig | None = None,
    min_pairs: int = 20,
    out: str | os.PathLike | None = None,
    inputs: dict | None = None,
) -> pd.DataFrame:
    """:func:`targets` for every disease with at least ``min_pairs`` known pairs: one row each.

    With ``out``, writes ``all_diseases.csv`` and ``summary.json`` (config, ``inputs``,
    counts, seconds) into it atomically (:func:`deeppert.targets.write_all_diseases`).
    """
    config = config or TargetConfig()
    if out is not None:
        check_out_dir(out)
    start = time.perf_counter()
    table = run_all_diseases(
        _weights_frame(weights), _known_frame(known), config=config, min_pairs=min_pairs
    )
    seconds = time.perf_counter() - start
    if out is not None:
        summary = {
            "config": config.to_dict(),
            "inputs": inputs or {},
            "min_pairs": min_pairs,
            "diseases": int(len(table)),
            "ok": int((table["status"] == "ok").sum()),
            "seconds": round(seconds, 3),
        }
        write_all_diseases(table, out, summary=summary)
    return table


def _weights_frame(weights: Weights) -> pd.DataFrame:
    if isinstance(weights, pd.DataFrame):
        return weights
    if isinstance(weights, EnsembleStep):
        return weights.tables()["weights"]
    if isinstance(weights, Ensemble):
        return weights.weights
    if isinstance(weights, TrainedRun):
        return load_weights(weights.path / "ensemble" / ARTIFACTS.ensemble_weights)
    return load_weights(weights)


def _known_frame(known: Known | None) -> pd.DataFrame | None:
    if known is None or isinstance(known, pd.DataFrame):
        return known
    return load_known_pairs(known)
