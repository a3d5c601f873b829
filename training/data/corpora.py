"""Corpus readers: one entrance, :func:`open_corpus`, that picks the reader from the directory layout.

Every reader is a :class:`Corpus`: ``utterances(split)`` lists :class:`Utterance` records (speaker,
utterance id, audio path, split, optional text, gender, age), ``speakers(split)`` the sorted speaker ids,
``name`` names the corpus. Published corpora (TIMIT, VCTK, LibriSpeech, speechocean762) are read by
:mod:`training.data.published`; this module reads folder-per-speaker trees and the project's open corpus
(``metadata.csv``, also written by ``vc-corpus assemble``), and recognises layouts.

Splits are always speaker-disjoint, so evaluation measures unseen voices: the open corpus's ``split``
column; folder trees by :func:`speaker_split`, a deterministic split by speaker id; the published corpora
as :mod:`training.data.published` says.
"""
from __future__ import annotations

import csv
import inspect
import os
from pathlib import Path

from training.data.corpus import (AUDIO_EXTENSIONS, SPLITS, Corpus, CorpusError, Utterance, _child,
                                  _subdirs, speaker_split)
from training.data.published import (_LIBRI_NAME, _TIMIT_REGION, TIMIT_CORE_TEST_SPEAKERS,
                                     TIMIT_DEV_SPEAKERS, LibriSpeechCorpus, SpeechOceanCorpus,
                                     TimitCorpus, VctkCorpus, _libri_tree_agrees,
                                     read_librispeech_speakers, read_timit_segments)

__all__ = [
    "Utterance", "Corpus", "CorpusError", "TimitCorpus", "VctkCorpus", "LibriSpeechCorpus",
    "FolderCorpus", "OpenCorpus", "SpeechOceanCorpus", "open_corpus", "detect_layout", "speaker_split",
    "read_timit_segments", "read_librispeech_speakers", "TIMIT_CORE_TEST_SPEAKERS", "TIMIT_DEV_SPEAKERS",
    "SPLITS", "KINDS", "AUDIO_EXTENSIONS",
]


# ------------------------------------------------------------------------------- Folder trees

class FolderCorpus(Corpus):
    """Any ``root/<speaker>/.../<file>.<audio ext>`` tree: the first directory level names the
    speaker; utterance ids are the paths below it without extension. A ``.txt`` or ``.lab`` file with
    the same stem supplies the text. Splits: :func:`speaker_split`."""

    kind = "folder"

    def __init__(self, root: os.PathLike | str, dev_fraction: float = 0.1,
                 test_fraction: float = 0.1):
        super().__init__(root)
        self.dev_fraction, self.test_fraction = dev_fraction, test_fraction

    @property
    def name(self) -> str:
        return self.root.name

    def options(self) -> dict:
        return {"dev_fraction": self.dev_fraction, "test_fraction": self.test_fraction}

    def _scan(self) -> list[Utterance]:
        found = []
        for speaker_dir in _subdirs(self.root):
            for directory, dirnames, filenames in os.walk(speaker_dir):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                names = set(filenames)
                for name in sorted(filenames):
                    stem, ext = os.path.splitext(name)
                    if ext.lower() not in AUDIO_EXTENSIONS or name.startswith("."):
                        continue
                    path = Path(directory) / name
                    utt = path.relative_to(speaker_dir).with_suffix("").as_posix()
                    text = None
                    for side in (stem + ".txt", stem + ".lab"):
                        if side in names:
                            text = (Path(directory) / side).read_text(
                                encoding="utf-8", errors="replace").strip() or None
                            break
                    found.append((speaker_dir.name, utt, path, text))
        splits = speaker_split({s for s, *_ in found}, self.dev_fraction, self.test_fraction)
        return [Utterance(s, u, p, splits[s], t) for s, u, p, t in found]


# -------------------------------------------------------------------------------- Open corpus

OPEN_CORPUS_COLUMNS = ("speaker", "utterance", "path", "text", "engine", "voice", "gender", "split")
# Optional columns of assembled corpora (training.data.assemble): where each speaker came from, age.
_OPEN_OPTIONAL = ("source", "age")
_OPEN_REQUIRED = ("speaker", "utterance", "path", "split")


class OpenCorpus(Corpus):
    """The project's open corpus: ``metadata.csv`` with columns
    ``speaker,utterance,path,text,engine,voice,gender,split``; ``path`` is relative to the root.
    Assembled corpora (``vc-corpus assemble``) use the same file with ``source`` and ``age`` columns."""

    kind = "open"

    def __init__(self, root: os.PathLike | str):
        super().__init__(root)
        self.metadata = self.root / "metadata.csv"
        if not self.metadata.is_file():
            raise CorpusError(f"{self.root}: no metadata.csv (not an open-corpus directory)")

    @property
    def name(self) -> str:
        return self.root.name

    def _scan(self) -> list[Utterance]:
        out = []
        with open(self.metadata, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in _OPEN_REQUIRED if c not in (reader.fieldnames or ())]
            if missing:
                raise CorpusError(f"{self.metadata}: missing column(s) {', '.join(missing)}")
            for row in reader:
                line = reader.line_num
                values = {c: (row.get(c) or "").strip() for c in OPEN_CORPUS_COLUMNS + _OPEN_OPTIONAL}
                empty = [c for c in _OPEN_REQUIRED if not values[c]]
                if empty:
                    raise CorpusError(f"{self.metadata}:{line}: empty {', '.join(empty)}")
                if values["split"] not in SPLITS:
                    raise CorpusError(f"{self.metadata}:{line}: split {values['split']!r} is not one "
                                      f"of {', '.join(SPLITS)}")
                rel = Path(values["path"])
                if rel.is_absolute():
                    raise CorpusError(f"{self.metadata}:{line}: path must be relative to the corpus")
                out.append(Utterance(values["speaker"], values["utterance"], self.root / rel,
                                     values["split"], values["text"] or None,
                                     values["gender"] or None,
                                     int(values["age"]) if values["age"].isdigit() else None))
        return out


# ---------------------------------------------------------------------------------- Detection

KINDS = {"timit": TimitCorpus, "vctk": VctkCorpus, "librispeech": LibriSpeechCorpus,
         "speechocean762": SpeechOceanCorpus, "folder": FolderCorpus, "open": OpenCorpus}


def _looks_timit(d: Path) -> bool:
    for split in ("TRAIN", "TEST"):
        top = _child(d, split)
        if top is not None and any(_TIMIT_REGION.match(r.name) for r in _subdirs(top)):
            return True
    return False


def _looks_vctk(d: Path) -> bool:
    return (_child(d, "wav48_silence_trimmed") or _child(d, "wav48")) is not None


def _looks_librispeech(d: Path) -> bool:
    # speaker/chapter/*.trans.txt, directly or below one subset directory (train-clean-100 ...).
    for depth in (2, 3):
        for hit in d.glob("/".join(["*"] * depth) + "/*.trans.txt"):
            parts = hit.name[: -len(".trans.txt")].split("-")
            if len(parts) == 2 and parts == [hit.parent.parent.name, hit.parent.name]:
                return True
    # Excerpts: speaker-chapter-utt.flac files directly in a folder, one or two levels down.
    for depth in (0, 1, 2):
        for hit in d.glob("/".join(["*"] * depth + ["*-*-*.flac"])):
            m = _LIBRI_NAME.match(hit.stem)
            if m and _libri_tree_agrees(hit.parent, m):
                return True
    return False


def _looks_speechocean(d: Path) -> bool:
    return (d / "WAVE").is_dir() and (d / "train" / "wav.scp").is_file()


def _looks_folder(d: Path) -> bool:
    for speaker_dir in _subdirs(d):
        for _, _, filenames in os.walk(speaker_dir):
            if any(os.path.splitext(n)[1].lower() in AUDIO_EXTENSIONS for n in filenames):
                return True
    return False


def detect_layout(path: os.PathLike | str) -> tuple[str, Path]:
    """Return ``(kind, root)`` for a corpus directory; ``root`` may be one level below ``path``
    (archives often unpack into ``TIMIT/`` or ``VCTK-Corpus-0.92/``)."""
    path = Path(path)
    if not path.is_dir():
        raise CorpusError(f"{path}: no such directory")
    candidates = [path] + _subdirs(path)
    checks = (("open", lambda d: (d / "metadata.csv").is_file()), ("timit", _looks_timit),
              ("vctk", _looks_vctk), ("speechocean762", _looks_speechocean),
              ("librispeech", _looks_librispeech))
    for kind, check in checks:
        for d in candidates:
            if check(d):
                return kind, d
    if _looks_folder(path):
        return "folder", path
    raise CorpusError(f"{path}: unknown corpus layout (expected metadata.csv, TIMIT TRAIN/TEST, VCTK "
                      "wav48*, speechocean762 WAVE + train/wav.scp, LibriSpeech speaker-chapter-utt.flac, "
                      "or one folder of audio per speaker)")


def open_corpus(path: os.PathLike | str, kind: str = "auto", **options) -> Corpus:
    """Open a corpus directory; ``kind`` is "auto" or one of :data:`KINDS`. ``options`` go to the
    reader (``include_sa`` for TIMIT, ``mic`` for VCTK, ``dev_fraction``/``test_fraction`` for
    split-by-speaker corpora)."""
    if kind == "auto":
        kind, root = detect_layout(path)
    else:
        root = Path(path)
    if kind not in KINDS:
        raise CorpusError(f"{path}: unknown corpus kind {kind!r} (known: auto, {', '.join(KINDS)})")
    accepted = [p for p in inspect.signature(KINDS[kind].__init__).parameters if p not in ("self", "root")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise CorpusError(f"{path}: {', '.join(unknown)} does not apply to a {kind} corpus "
                          f"(its options: {', '.join(accepted) or 'none'})")
    return KINDS[kind](root, **options)
