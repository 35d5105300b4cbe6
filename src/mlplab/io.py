"""Atomic file writes, shared by figures, records, checkpoints and tables."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[Any]], object], mode: str = "wb"
) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it into place.

    A reader (or a run killed half-way) never sees a half-written file: the temporary file lives in
    the target folder, so ``os.replace`` is a rename on one file system; on failure it is removed.

    Args:
        path: Destination file; its folder is created if missing.
        write: Writes the content to the open handle.
        mode: ``"wb"`` for bytes, ``"w"`` for text.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; results are for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
