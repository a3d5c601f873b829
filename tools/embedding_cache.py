"""Resemblyzer embeddings of corpus files, computed once and kept on disk.

The evaluation protocols embed the same enrolment and source recordings for every model and setting;
only the conversions are new. Each file's embedding is stored under a key made of its resolved path,
size and modification time, so an edited or replaced recording is embedded again, never mistaken for
the old one. Embeddings are plain float32 .npy files (read with allow_pickle=False).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


class EmbeddingCache:
    def __init__(self, embed, directory: os.PathLike | str | None, *, sr: int, read_audio):
        """embed: audio (float32, sr) -> embedding; directory None keeps embeddings in memory only."""
        self._embed, self._read, self.sr = embed, read_audio, sr
        self.directory = Path(directory) if directory is not None else None
        self._memory: dict[str, np.ndarray] = {}
        self.hits = self.misses = 0

    def _key(self, path: Path) -> str:
        st = path.stat()
        ident = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{self.sr}"
        return hashlib.sha256(ident.encode("utf-8")).hexdigest()[:32]

    def file(self, path: os.PathLike | str) -> np.ndarray:
        """The embedding of one recording, from memory, disk or computed."""
        key = self._key(Path(path))
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        stored = self.directory / f"{key}.npy" if self.directory is not None else None
        if stored is not None and stored.is_file():
            vector = np.load(stored, allow_pickle=False)
            self.hits += 1
        else:
            vector = np.asarray(self._embed(self._read(path)), dtype=np.float32)
            self.misses += 1
            if stored is not None:
                from vc.files import atomic_write
                with atomic_write(stored) as fh:
                    np.save(fh, vector, allow_pickle=False)
        self._memory[key] = vector
        return vector
