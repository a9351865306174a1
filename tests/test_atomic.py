"""Atomic outputs get the modes a plain write would: the process's umask, not mkstemp's 0600."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CODE = """
import os, stat, sys
os.umask(int(sys.argv[2], 8))
from pathlib import Path
from deeppert.atomic import atomic_dir, atomic_path
out = Path(sys.argv[1])
with atomic_dir(out / "folder") as tmp:
    (tmp / "inner.txt").write_text("x")
with atomic_path(out / "file.txt") as tmp:
    tmp.write_text("x")
print(oct(stat.S_IMODE((out / "folder").stat().st_mode)),
      oct(stat.S_IMODE((out / "file.txt").stat().st_mode)))
"""


@pytest.mark.parametrize(("umask", "modes"), [("022", "0o755 0o644"), ("027", "0o750 0o640")])
def test_atomic_outputs_follow_the_umask(tmp_path: Path, umask: str, modes: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CODE, str(tmp_path), umask],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert proc.stdout.strip() == modes
