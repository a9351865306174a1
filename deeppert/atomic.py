"""Atomic file writes: write to a temporary sibling, then rename into place.

A reader never sees a half-written file, and a failed step leaves no output behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from deeppert.errors import DeeppertError

__all__ = [
    "atomic_path",
    "atomic_dir",
    "write_parquet",
    "write_json",
    "read_parquet",
    "read_json",
]


def _process_umask() -> int:
    """The process's umask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp / mkdtemp create 0600 / 0700; outputs get the modes a plain open / mkdir would give
# (readable by the group and others under the usual umask 022).
_UMASK = _process_umask()
_FILE_MODE = 0o666 & ~_UMASK
_DIR_MODE = 0o777 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    with _parents(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        tmp_path.chmod(_FILE_MODE)
        try:
            yield tmp_path
            os.replace(tmp_path, path)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; move it onto ``path`` only on success.

    An existing ``path`` is replaced whole, so a folder of outputs is either all old or all new.
    """
    path = Path(path)
    with _parents(path):
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        tmp.chmod(_DIR_MODE)
        try:
            yield tmp
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _parents(path: Path) -> Iterator[None]:
    """Create ``path``'s missing parent folders; if the block fails, remove those it created
    that are still empty, so a failed or interrupted step leaves no empty output folder."""
    created = []
    for folder in reversed([path.parent, *path.parent.parents]):
        if not folder.exists():
            created.append(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:  # not empty (another writer's output), or gone already
                break
        raise


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``frame`` (index kept) to Parquet atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=True)
    return Path(path)


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """``pd.read_parquet`` for files a step wrote: a missing, truncated or corrupt file is a
    :class:`~deeppert.errors.DeeppertError` naming it, not a pyarrow traceback."""
    with parquet_errors(path):
        return pd.read_parquet(path, columns=columns)


@contextlib.contextmanager
def parquet_errors(path: str | os.PathLike) -> Iterator[None]:
    """Around a read of the Parquet file ``path``: a missing, truncated or corrupt file raises
    a :class:`~deeppert.errors.DeeppertError` naming it."""
    import pyarrow as pa

    path = Path(path)
    if not path.is_file():
        raise DeeppertError(f"{path}: file missing")
    try:
        yield
    except (pa.ArrowException, OSError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeeppertError(
            f"{path}: not a readable Parquet file ({detail}); the folder is damaged, "
            "rerun the step that wrote it"
        ) from exc


def read_json(path: str | os.PathLike) -> Any:
    """``json.loads`` of a file a step wrote: a missing, truncated or non-JSON file is a
    :class:`~deeppert.errors.DeeppertError` naming it, not a traceback."""
    path = Path(path)
    if not path.is_file():
        raise DeeppertError(f"{path}: file missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DeeppertError(
            f"{path}: not a readable JSON file ({exc}); the folder is damaged, "
            "rerun the step that wrote it"
        ) from exc


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    return Path(path)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
