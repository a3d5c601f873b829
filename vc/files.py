"""Atomic file writes: every output appears whole or not at all."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path, mode: str = "wb", encoding: str | None = None):
    """Yield a file open on a temporary sibling of `path` (`.NAME.XXXXXXXX.part`); when the block ends
    without an error it replaces `path` in one rename, otherwise it is removed. An interrupted write
    therefore leaves the old file or none, never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_figure(figure, path, dpi: int = 110, **kwargs) -> None:
    """matplotlib figure -> image file (format from the suffix), atomically."""
    path = Path(path)
    with atomic_write(path) as fh:
        figure.savefig(fh, format=path.suffix.lstrip(".").lower() or "png", dpi=dpi, **kwargs)
