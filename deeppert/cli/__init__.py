"""The ``deeppert`` command-line tool: one subcommand per pipeline step.

Each ``deeppert/cli/_<name>.py`` module exposes ``register(subparsers)``, which adds its
subcommand(s) with ``set_defaults(func=...)``; ``func(args)`` returns an exit code.
Bad input (:class:`~deeppert.errors.DeeppertError`) and file-system refusals (``OSError``:
read-only folder, disk full) become one line on stderr and exit 2; SIGINT and SIGTERM one
line and exit 130 / 143, after the command's temporary output is removed.

Only the module of the command being run is imported: the others appear in ``deeppert
--help`` through :data:`COMMANDS`, so ``--help`` and input errors answer without importing
torch, pandas or MLflow (a test checks the table against the modules' own help lines).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from deeppert.errors import DeeppertError
from deeppert.interrupts import Terminated, interrupt_exit, terminate_raises

__all__ = ["main", "build_parser", "COMMANDS"]

# command -> (module under deeppert/cli that registers it, its one-line help), in help order.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": (
        "_data",
        "write a synthetic L1000-like matrix with planted modules and its ground truth",
    ),
    "info": ("_data", "describe a signature file (rows, genes, ids, value range, metadata fields)"),
    "train": (
        "_train",
        "train the AE/DAE/VAE x latent dim x run grid; writes one run folder per dataset",
    ),
    "attribute": ("_attribution", "Integrated Gradients gene weights of every trained latent node"),
    "ensemble": (
        "_ensemble",
        "ensemble of all latent variables (consensus, or the GMeans reference), with stability",
    ),
    "server": ("_server", "run an MLflow tracking server (served artifacts) until Ctrl-C"),
    "targets": (
        "_targets",
        "predict target-gene combinations from ensemble gene weights (docs/method.md section 5)",
    ),
    "downstream": ("_downstream", "drug synergy and toxicity tasks against raw/PCA baselines"),
    "export": (
        "_export",
        "write signatures + ensemble embedding and gene weights as an AnnData .h5ad",
    ),
    "cluster": (
        "_cluster",
        "start/stop a local Ray head + MLflow server on free ports; submit jobs to it",
    ),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the full subparser of the command named in ``argv`` only."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    wanted = COMMANDS[command][0] if command in COMMANDS else None
    parser = argparse.ArgumentParser(
        prog="deeppert",
        description="Interpretable drug-perturbation embeddings: train, attribute, ensemble, analyse.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_line) in COMMANDS.items():
        if name in sub.choices:
            continue
        if module == wanted:
            importlib.import_module(f"deeppert.cli.{module}").register(sub)
        else:
            sub.add_parser(name, help=help_line, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        with terminate_raises():
            return int(args.func(args) or 0)
    except (KeyboardInterrupt, Terminated) as exc:
        # Atomic writes removed their temporary output on the way out (deeppert.atomic).
        what, code = interrupt_exit(exc)
        print(f"deeppert {args.command}: {what}; partial output removed", file=sys.stderr)
        return code
    except DeeppertError as exc:
        print(f"deeppert {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # The file system refused (read-only, full, a file where a folder should be): the
        # user's environment, not a bug; say which path in one line.
        where = f": {exc.filename}" if exc.filename else ""
        print(
            f"deeppert {args.command}: error: {exc.strerror or exc}{where}",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
