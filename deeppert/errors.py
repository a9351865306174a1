"""The one exception type for bad user input.

Every check on user-supplied data, files or configs raises :class:`DeeppertError` with a
message that names the offending file, row, column or key. The CLI turns it into one line
on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["DeeppertError"]


class DeeppertError(ValueError):
    """Bad input: a missing file, wrong shape, non-finite value, unknown name, unreachable server."""
