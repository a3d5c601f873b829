"""What every corpus reader shares: :class:`Utterance`, the :class:`Corpus` base, :func:`speaker_split`.

The readers themselves live in :mod:`training.data.published` (TIMIT, VCTK, LibriSpeech, speechocean762)
and :mod:`training.data.corpora` (folder trees, the open corpus, layout detection, ``open_corpus``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable, Iterator, Mapping

from vc.audio import AUDIO_EXTENSIONS as VC_AUDIO_EXTENSIONS

SPLITS = ("train", "dev", "test")

# The runtime's list (vc.audio) plus SPHERE, which training.data.audio reads itself, and two more
# libsndfile formats (.snd, .rf64) that vc.audio's list does not name yet.
AUDIO_EXTENSIONS = VC_AUDIO_EXTENSIONS | {".sph", ".nist", ".snd", ".rf64"}


class CorpusError(ValueError):
    """A corpus that cannot be read as asked; ``str()`` is one line naming the path."""


@dataclass(frozen=True)
class Utterance:
    """One recording. ``annotations`` maps kinds such as ``"phn"`` or ``"wrd"`` to side files."""

    speaker: str
    utterance: str
    path: Path
    split: str
    text: str | None = None
    gender: str | None = None
    age: int | None = None
    annotations: Mapping[str, Path] = field(default_factory=dict, compare=False, hash=False)


def speaker_split(speakers: Iterable[str], dev_fraction: float = 0.1,
                  test_fraction: float = 0.1) -> dict[str, str]:
    """Assign each speaker to train/dev/test, deterministically and independent of input order.

    Speakers are ranked by the SHA-256 of their id (UTF-8); the first ``round(n * test_fraction)``
    go to test, the next ``round(n * dev_fraction)`` to dev, the rest to train. With 3 or more
    speakers dev and test get at least one each; with fewer, everyone is in train. The result depends
    only on the set of ids, so the same corpus always splits the same way on every machine.
    """
    unique = sorted(set(speakers), key=lambda s: (hashlib.sha256(s.encode("utf-8")).hexdigest(), s))
    n = len(unique)
    if n < 3:
        return {s: "train" for s in unique}
    n_test = max(1, round(n * test_fraction))
    n_dev = max(1, round(n * dev_fraction))
    if n_test + n_dev >= n:
        n_test, n_dev = 1, 1
    out = {}
    for rank, s in enumerate(unique):
        out[s] = "test" if rank < n_test else "dev" if rank < n_test + n_dev else "train"
    return out


class Corpus:
    """Base of all readers. Subclasses implement ``_scan`` (all utterances, any order)."""

    kind: ClassVar[str] = "corpus"
    split_names: ClassVar[tuple[str, ...]] = SPLITS

    def __init__(self, root: os.PathLike | str):
        root = Path(root)
        if not root.is_dir():
            raise CorpusError(f"{root}: no such directory")
        self.root = root.resolve()
        self._all: list[Utterance] | None = None

    @property
    def name(self) -> str:
        return self.kind

    def options(self) -> dict:
        """Reader options that change the utterance list (recorded in the feature cache)."""
        return {}

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "root": str(self.root), **self.options()}

    def _scan(self) -> list[Utterance]:
        raise NotImplementedError

    def _all_utterances(self) -> list[Utterance]:
        if self._all is None:
            items = sorted(self._scan(), key=lambda u: (u.speaker, u.utterance, str(u.path)))
            seen = set()
            for u in items:
                if (u.speaker, u.utterance) in seen:
                    raise CorpusError(f"{u.path}: duplicate utterance {u.utterance!r} of speaker "
                                      f"{u.speaker!r} in {self.root}")
                seen.add((u.speaker, u.utterance))
            self._all = items
        return self._all

    def _in_split(self, utt: Utterance, split: str) -> bool:
        return utt.split == split

    def utterances(self, split: str | None = None) -> list[Utterance]:
        """Utterances sorted by (speaker, utterance); all of them when ``split`` is None."""
        if split is None:
            return list(self._all_utterances())
        if split not in self.split_names:
            raise CorpusError(f"{self.root}: {self.name} has no split {split!r} "
                              f"(known: {', '.join(self.split_names)})")
        return [u for u in self._all_utterances() if self._in_split(u, split)]

    def speakers(self, split: str | None = None) -> list[str]:
        return sorted({u.speaker for u in self.utterances(split)})

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances())

    def __len__(self) -> int:
        return len(self._all_utterances())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"


def _child(directory: Path, name: str) -> Path | None:
    """``directory/name`` matched case-insensitively (TIMIT copies come in either case)."""
    exact = directory / name
    if exact.is_dir():
        return exact
    try:
        for entry in os.scandir(directory):
            if entry.name.lower() == name.lower() and entry.is_dir():
                return Path(entry.path)
    except OSError:
        pass
    return None


def _subdirs(directory: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(directory)
                      if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []
