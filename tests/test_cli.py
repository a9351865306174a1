"""The ``deeppert`` entry point: --help and input errors answer without the heavy imports."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from deeppert.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pandas", "numpy", "mlflow", "sklearn", "ray")


def _modules_after(argv: list[str]) -> tuple[set[str], subprocess.CompletedProcess]:
    """Top-level modules imported by ``deeppert argv`` in a fresh interpreter, and the result."""
    code = (
        "import sys\n"
        "from deeppert.cli import main\n"
        "try:\n"
        f"    rc = main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    rc = exc.code\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}), file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    loaded = set(eval(proc.stderr.strip().splitlines()[-1]))  # noqa: S307 - our own print
    return loaded, proc


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["train", "--data", "/no/such/file.csv", "--out", "/tmp/unused"],
        ["attribute", "/no/such/run_dir"],
        ["ensemble", "/no/such/run_dir"],
    ],
)
def test_help_and_input_errors_import_nothing_heavy(argv: list[str]) -> None:
    loaded, proc = _modules_after(argv)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    if argv != ["--help"]:
        assert proc.returncode == 2
        assert "/no/such/" in proc.stderr.splitlines()[0]
        assert proc.stderr.splitlines()[0].startswith(f"deeppert {argv[0]}: error: ")


def test_command_table_matches_the_modules_own_help() -> None:
    """``deeppert --help`` lists COMMANDS; each module registers exactly its commands, same help."""
    registered = {}
    for module in dict.fromkeys(m for m, _ in COMMANDS.values()):
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"deeppert.cli.{module}").register(sub)
        for action in sub._choices_actions:
            registered[action.dest] = (module, action.help)
    assert registered == COMMANDS


def test_each_command_parses_its_own_flags(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    assert "--epochs" in capsys.readouterr().out
