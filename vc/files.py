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


class AtomicFile:
    """A file written under a temporary sibling name (`.NAME.XXXXXXXX.part`) and renamed to `path` by
    `commit()` in one step, or removed by `discard()`. For writers that outlive one block of code (a live
    recording); `atomic_write` is the usual way in."""

    def __init__(self, path, mode: str = "wb", encoding: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
        self.handle = os.fdopen(fd, mode, encoding=encoding)

    def commit(self) -> None:
        try:
            self.handle.close()
            os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get ordinary permissions
            os.replace(self.tmp, self.path)
        except BaseException:
            Path(self.tmp).unlink(missing_ok=True)
            raise

    def discard(self) -> None:
        self.handle.close()
        Path(self.tmp).unlink(missing_ok=True)


@contextmanager
def atomic_write(path, mode: str = "wb", encoding: str | None = None):
    """Yield a file open on a temporary sibling of `path`; when the block ends without an error it replaces
    `path` in one rename, otherwise it is removed. An interrupted write therefore leaves the old file or
    none, never half a file."""
    target = AtomicFile(path, mode, encoding)
    try:
        yield target.handle
    except BaseException:
        target.discard()
        raise
    target.commit()


def save_figure(figure, path, dpi: int = 110, **kwargs) -> None:
    """matplotlib figure -> image file (format from the suffix), atomically."""
    path = Path(path)
    with atomic_write(path) as fh:
        figure.savefig(fh, format=path.suffix.lstrip(".").lower() or "png", dpi=dpi, **kwargs)
