"""Damaged run folders and unwritable outputs: one line, exit 2, never a traceback or a silent
partial result (a truncated Parquet, a deleted latent file, ``--out`` on a file, a read-only
output folder)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from deeppert.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = """\
name: tiny
datasets:
  - name: s
    synthetic: {n_samples: 200}
preprocess: {n_components: 10}
"""
pytestmark = pytest.mark.usefixtures("one_torch_thread")
TRAIN = ["--models", "AE", "--dims", "3", "--runs", "3", "--epochs", "2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run folder with 3 runs, attributed (latents and gene weights for each)."""
    tmp = tmp_path_factory.mktemp("bad-run")
    (tmp / "tiny.yaml").write_text(CONFIG)
    assert (
        main(["train", "--config", str(tmp / "tiny.yaml"), "--out", str(tmp / "out"), *TRAIN]) == 0
    )
    run_dir = tmp / "out" / "s"
    assert main(["attribute", str(run_dir), "--steps", "4"]) == 0
    return run_dir


@pytest.fixture
def run_copy(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "s"))


def one_line_error(capsys, argv: list[str], command: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    print(f"\nMEASURE bad input `deeppert {' '.join(argv[:1])} ...` -> exit {rc}: {err.strip()}")
    assert rc == 2, err
    assert err.startswith(f"deeppert {command}: error: ")
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_truncated_latent_parquet_is_named(run_copy: Path, capsys) -> None:
    victim = run_copy / "latents" / "AE_d3_run1.parquet"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    err = one_line_error(capsys, ["ensemble", str(run_copy), "--no-stability"], "ensemble")
    assert str(victim) in err and "not a readable Parquet file" in err
    assert not (run_copy / "ensemble").exists()


def test_ensemble_with_a_deleted_latent_file_names_it(run_copy: Path, capsys) -> None:
    victim = run_copy / "latents" / "AE_d3_run2.parquet"
    victim.unlink()
    err = one_line_error(capsys, ["ensemble", str(run_copy), "--no-stability"], "ensemble")
    assert "1 of 3 latent files missing" in err and str(victim) in err
    assert not (run_copy / "ensemble").exists()


def test_truncated_signatures_parquet_is_named(run_copy: Path, capsys) -> None:
    victim = run_copy / "signatures.parquet"
    victim.write_bytes(victim.read_bytes()[:100])
    err = one_line_error(capsys, ["attribute", str(run_copy), "--steps", "4"], "attribute")
    assert str(victim) in err


def test_train_out_on_an_existing_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    out = tmp_path / "results.txt"
    out.write_text("keep me\n")
    argv = ["train", "--config", str(tmp_path / "tiny.yaml"), "--out", str(out), *TRAIN]
    err = one_line_error(capsys, argv, "train")
    assert f"{out} exists and is a file" in err
    assert out.read_text() == "keep me\n"


def test_train_into_a_read_only_folder(tmp_path: Path) -> None:
    """As an unprivileged user (root ignores folder modes): exit 2, one line, nothing written."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not available to drop privileges")
    base = Path(tempfile.mkdtemp(prefix="deeppert-ro-", dir="/tmp"))
    try:
        base.chmod(0o755)
        (base / "tiny.yaml").write_text(CONFIG)
        (base / "home").mkdir()
        (base / "home").chmod(0o777)
        locked = base / "locked"
        locked.mkdir()
        locked.chmod(
            stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
        )
        drop = (
            []
            if os.geteuid() != 0
            else ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        )
        env = {**os.environ, "HOME": str(base / "home"), "MPLCONFIGDIR": str(base / "home")}
        argv = ["train", "--config", str(base / "tiny.yaml"), "--out", str(locked / "out"), *TRAIN]
        proc = subprocess.run(
            [*drop, sys.executable, "-m", "deeppert", *argv],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        print(f"\nMEASURE read-only --out -> exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.startswith("deeppert train: error: "), proc.stderr[-2000:]
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
        assert "not writable" in proc.stderr and str(locked) in proc.stderr
        assert list(locked.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)
