"""The ``deeppert`` entry point: --help and input errors answer without the heavy imports."""

from __future__ import annotations

import argparse
import importlib
import json
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


def test_train_threads_below_one_is_one_line_before_torch() -> None:
    argv = ["train", "--data", "README.md", "--out", "/tmp/unused", "--threads", "0"]
    loaded, proc = _modules_after(argv)
    assert proc.returncode == 2
    assert (
        proc.stderr.splitlines()[0] == "deeppert train: error: --threads must be at least 1, got 0"
    )
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


# One bad input per command and sub-command (a missing file or folder, a value out of range,
# no server): each must end in one line and exit 2 before torch, pandas or numpy load.
BAD_INPUTS = {
    "synth": ["synth", "--out", "/no/such/synth", "--n-samples", "0"],
    "info": ["info", "/no/such/file.csv"],
    "train": ["train", "--data", "/no/such/file.csv", "--out", "/no/such/out"],
    "attribute": ["attribute", "/no/such/run"],
    "ensemble": ["ensemble", "/no/such/run"],
    "server": ["server", "--backend-store-uri", "nosuch://x", "--port", "0"],
    "targets": ["targets", "--weights", "/no/such/weights.parquet", "--out", "/no/such/out"],
    "downstream synergy": ["downstream", "synergy", "--data-dir", "/no/such", "--out", "/x"],
    "downstream toxicity": ["downstream", "toxicity", "--data-dir", "/no/such", "--out", "/x"],
    "downstream summarize": ["downstream", "summarize", "/no/such", "--out", "/no/such/out"],
    "export": ["export", "/no/such/run", "--h5ad", "/no/such/x.h5ad"],
    "cluster start": ["cluster", "start", "--dir", "/proc/no/such"],
    "cluster stop": ["cluster", "stop", "--dir", "/no/such"],
    "cluster submit": ["cluster", "submit", "--address", "http://127.0.0.1:9", "--", "true"],
}


def test_every_help_and_bad_input_imports_neither_torch_nor_pandas() -> None:
    """``--help`` of every command and sub-command the parser lists, and a bad input of each,
    answer before torch, pandas or numpy load (one interpreter; each step's new imports)."""
    code = f"""
import argparse, json, sys, time
from deeppert.cli import COMMANDS, build_parser, main

def run(argv):
    before = set(sys.modules)
    t0 = time.perf_counter()
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    new = {{m.split('.')[0] for m in set(sys.modules) - before}}
    return {{"argv": argv, "rc": rc, "s": time.perf_counter() - t0,
            "heavy": sorted(new & {{'torch', 'pandas', 'numpy'}})}}

steps = [run(["--help"])]
for name in COMMANDS:
    steps.append(run([name, "--help"]))
    sub = next(a for a in build_parser([name])._actions if isinstance(a, argparse._SubParsersAction))
    nested = [a for a in sub.choices[name]._actions if isinstance(a, argparse._SubParsersAction)]
    for action in nested:
        steps += [run([name, child, "--help"]) for child in action.choices]
steps += [run(argv) for argv in {list(BAD_INPUTS.values())!r}]
print(json.dumps(steps), file=sys.stderr)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    steps = json.loads(proc.stderr.strip().splitlines()[-1])
    helped = {" ".join(s["argv"][:-1]) for s in steps if s["argv"][-1] == "--help"}
    assert set(COMMANDS) | {"downstream synergy", "cluster start"} <= helped, sorted(helped)
    commands = {c for c in helped if c and c not in ("downstream", "cluster")}
    assert commands == set(BAD_INPUTS), sorted(commands ^ set(BAD_INPUTS))
    for step in steps:
        print(f"MEASURE deeppert {' '.join(step['argv'])}: exit {step['rc']}, {step['s']:.2f} s")
    heavy = {" ".join(s["argv"]): s["heavy"] for s in steps if s["heavy"]}
    assert not heavy, heavy
    for step in steps:
        assert step["rc"] == (0 if step["argv"][-1] == "--help" else 2), step


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


def test_the_demo_prints_a_deeppert_command_that_runs_as_pasted() -> None:
    """``make demo`` ends with a UI command; pasted in the same folder it must run (the
    venv's ``deeppert`` is usually not on PATH)."""
    code = "from deeppert.demo import _deeppert_command; print(_deeppert_command())"
    command = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    proc = subprocess.run(
        f"{command} server --help", shell=True, cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0 and "--data-dir" in proc.stdout, (command, proc.stderr[-500:])


def test_every_ray_job_help_imports_neither_torch_nor_pandas() -> None:
    """``python ray_jobs/<job>.py --help`` of every entry point answers before torch, pandas,
    numpy, MLflow or Ray load (its flags come from the config schema; one interpreter, each
    job's new imports)."""
    jobs = sorted(p.name for p in (REPO / "ray_jobs").glob("*.py") if not p.name.startswith("_"))
    code = """
import json, runpy, sys
heavy, jobs = set(sys.argv[1].split(",")), sys.argv[2:]
steps = []
for job in jobs:
    before = set(sys.modules)
    sys.argv = [f"ray_jobs/{job}", "--help"]
    try:
        runpy.run_path(f"ray_jobs/{job}", run_name="__main__")
        rc = None
    except SystemExit as exc:
        rc = exc.code
    new = {m.split('.')[0] for m in set(sys.modules) - before}
    steps.append({"job": job, "rc": rc, "heavy": sorted(new & heavy)})
print(json.dumps(steps), file=sys.stderr)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code, ",".join(HEAVY), *jobs],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    steps = json.loads(proc.stderr.strip().splitlines()[-1])
    assert [s["job"] for s in steps] == jobs and len(jobs) >= 5
    assert all(s["rc"] == 0 for s in steps), steps
    assert {s["job"]: s["heavy"] for s in steps if s["heavy"]} == {}
