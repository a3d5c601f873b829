"""Per-file results of the judges (Resemblyzer embeddings, Whisper transcripts, DNSMOS scores), computed
once and kept on disk.

The evaluation protocols judge the same enrolment and source recordings for every model and setting;
only the conversions are new. Each file's result is stored under a key made of its resolved path, size
and modification time (and the judge's `salt`: its model and settings), so an edited or replaced
recording is judged again, never mistaken for the old one, and another judge never reads this one's
results. Arrays are plain .npy files (read with allow_pickle=False); anything else (a transcript, a dict
of scores) is a .json file. Nothing is ever unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

KINDS = ("npy", "json")


class FileCache:
    def __init__(self, compute, directory: os.PathLike | str | None, *, sr: int, read_audio,
                 kind: str = "npy", salt: str = ""):
        """compute: audio (float32, sr) -> result; directory None keeps results in memory only.

        kind "npy": the result is an array, stored as float32 .npy; "json": anything json.dumps takes
        (str, numbers, lists, dicts), stored as .json. salt: what else the result depends on (the
        judge's model and settings); "" keeps the keys of caches written before salts existed."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self._compute, self._read, self.sr = compute, read_audio, sr
        self.kind, self.salt = kind, salt
        self.directory = Path(directory) if directory is not None else None
        self._memory: dict[str, object] = {}
        self.hits = self.misses = 0

    def key(self, path: os.PathLike | str) -> str:
        path = Path(path)
        st = path.stat()
        ident = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{self.sr}"
        if self.salt:
            ident += f"\0{self.salt}"
        return hashlib.sha256(ident.encode("utf-8")).hexdigest()[:32]

    def _load(self, stored: Path):
        if self.kind == "npy":
            return np.load(stored, allow_pickle=False)
        with open(stored, encoding="utf-8") as fh:
            return json.load(fh)

    def _store(self, stored: Path, value) -> None:
        from vc.files import atomic_write

        if self.kind == "npy":
            with atomic_write(stored) as fh:
                np.save(fh, value, allow_pickle=False)
        else:
            with atomic_write(stored) as fh:
                fh.write(json.dumps(value, ensure_ascii=False).encode("utf-8"))

    def file(self, path: os.PathLike | str):
        """The result for one recording, from memory, disk or computed."""
        key = self.key(path)
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        stored = self.directory / f"{key}.{self.kind}" if self.directory is not None else None
        value = None
        if stored is not None and stored.is_file():
            try:
                value = self._load(stored)
                self.hits += 1
            except (OSError, ValueError):   # a damaged entry (json.JSONDecodeError is a ValueError): redo it
                value = None
        if value is None:
            value = self._compute(self._read(path))
            value = np.asarray(value, dtype=np.float32) if self.kind == "npy" else value
            self.misses += 1
            if stored is not None:
                self._store(stored, value)
        self._memory[key] = value
        return value


class EmbeddingCache(FileCache):
    """Speaker embeddings (float32 vectors) of corpus files; see FileCache."""

    def __init__(self, embed, directory: os.PathLike | str | None, *, sr: int, read_audio):
        super().__init__(embed, directory, sr=sr, read_audio=read_audio, kind="npy")
