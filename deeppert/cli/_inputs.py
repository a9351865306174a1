"""Checks of command-line inputs that run before the heavy imports (torch, pandas, MLflow)."""

from __future__ import annotations

from pathlib import Path

from deeppert.errors import DeeppertError

__all__ = ["require_file", "require_dir"]


def require_file(path: str | Path | None, what: str) -> None:
    """Raise :class:`DeeppertError` naming ``what`` unless ``path`` is None or an existing file."""
    if path is not None and not Path(path).is_file():
        state = "is a folder, not a file" if Path(path).is_dir() else "file not found"
        raise DeeppertError(f"{what} {path}: {state}")


def require_dir(path: str | Path, what: str) -> None:
    """Raise :class:`DeeppertError` naming ``what`` unless ``path`` is an existing folder."""
    if not Path(path).is_dir():
        state = "is a file, not a folder" if Path(path).is_file() else "folder not found"
        raise DeeppertError(f"{what} {path}: {state}")
