"""``deeppert ensemble``: cluster a run folder's latent variables into an ensemble.

``ensemble RUN_DIR`` reads the latents of ``deeppert train`` (the gmeans mode also the IG gene
weights of ``deeppert attribute``) and writes ``RUN_DIR/ensemble/``:
``labels.parquet``, ``ensemble_weights.parquet`` (clusters x genes: non-negative gene
importances, what ``deeppert targets`` reads), ``ensemble_loadings.parquet`` (clusters x
genes: signed loadings), ``ensemble_embedding.parquet`` (samples x clusters),
``members.json``, ``summary.json`` (L, the density filter's counts and reason, stability,
warnings), ``stability.json``, ``model/`` (an :class:`EnsembleModel` that embeds new
signatures) and plots; the consensus mode adds its L-selection curve, ``selection.csv`` and
``selection.png``. It prints a short report (L, components used and dropped, stability,
warnings). The ensemble config is the run's (``config.json``, section ``ensemble``) with the
command-line flags on top; flags and their defaults come from
:class:`~deeppert.ensemble.config.EnsembleConfig`. The step is
:func:`deeppert.tl.ensemble` (:func:`deeppert.ensemble.stability.ensemble_step`, then the one writer
:func:`deeppert.ensemble.outputs.write_ensemble_outputs`). The output folder is written
atomically; an ensemble of another method already there is replaced only with ``--force``
(rerunning the same method replaces it).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from deeppert.cli._inputs import require_dir
from deeppert.ensemble.config import EnsembleConfig
from deeppert.schema import add_flags, given

__all__ = ["register", "run_ensemble", "ensemble_config"]

log = logging.getLogger(__name__)

# EnsembleConfig fields with a flag (``--n-clusters`` for ``n_clusters``); help and defaults
# come from EnsembleConfig.
_FLAGS = ("method", "seed", "n_clusters", "labelling", "scaling", "sign_alignment", "cluster_on",
          "rotation", "l_min", "l_max", "density_threshold", "merge_threshold",
          "gain_factor")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "ensemble",
        help="ensemble of all latent variables (consensus, or the GMeans reference), with stability",
        description="Write RUN_DIR/ensemble/ (labels, weights, embedding, model, stability). "
        "Flags override the run's ensemble config; unset flags keep it.",
    )
    e.add_argument("run_dir", type=Path)
    add_flags(e, EnsembleConfig, _FLAGS)
    e.add_argument("--no-stability", action="store_true", help="skip the stability report")
    e.add_argument(
        "--force",
        action="store_true",
        help="replace RUN_DIR/ensemble/ even when it holds an ensemble of another method",
    )
    e.set_defaults(func=run_ensemble)


def ensemble_config(run_dir: Path, args: argparse.Namespace) -> EnsembleConfig:
    """The run's ``ensemble`` config section with the flags that were given on top."""
    from deeppert.config import build_dataclass
    from deeppert.workspace import ensemble_section

    raw = ensemble_section(run_dir)
    raw.update(given(args, EnsembleConfig, _FLAGS))
    return build_dataclass(EnsembleConfig, raw, "ensemble")


def run_ensemble(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir
    require_dir(run_dir, "run folder")
    from deeppert import tl

    config = ensemble_config(run_dir, args)
    # Minutes pass before the report on a run of many models: say what is running.
    stability = "" if args.no_stability else " and its split-half stability"
    print(f"deeppert ensemble: the {config.method} ensemble of {run_dir}{stability}", flush=True)
    step = tl.ensemble(run_dir, config=config, stability=not args.no_stability, force=args.force)
    print(f"wrote {run_dir / 'ensemble'} ({config.method})")
    for line in step.report():
        print(f"  {line}")
    return 0
