"""Corpus readers: TIMIT, VCTK, LibriSpeech, the project's open corpus, and folder-per-speaker trees.

Every reader is a :class:`Corpus`: ``utterances(split)`` lists :class:`Utterance` records (speaker,
utterance id, audio path, split, optional text), ``speakers(split)`` the sorted speaker ids, ``name``
names the corpus. :func:`open_corpus` picks the reader from the directory layout.

Splits are always speaker-disjoint, so evaluation measures unseen voices:

* TIMIT: ``train`` is the TRAIN directory. The TEST directory is divided as usual in the literature:
  ``dev`` is the 50-speaker development set, ``test`` the other 118 TEST speakers (they include the
  24-speaker core test set). ``core-test`` (24 speakers) and ``full-test`` (all 168 TEST speakers, which
  overlaps ``dev``) can be asked for by name. SA sentences (read by every speaker) are left out unless
  ``include_sa=True``, because they would let a model match speakers by shared text.
* Open corpus: the ``split`` column of ``metadata.csv``.
* VCTK, LibriSpeech, folder trees: :func:`speaker_split`, a deterministic split by speaker id (below).
"""
from __future__ import annotations

import csv
import hashlib
import inspect
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable, Iterator, Mapping

from vc.audio import AUDIO_EXTENSIONS as VC_AUDIO_EXTENSIONS

__all__ = [
    "Utterance", "Corpus", "CorpusError", "TimitCorpus", "VctkCorpus", "LibriSpeechCorpus",
    "FolderCorpus", "OpenCorpus", "SpeechOceanCorpus", "open_corpus", "detect_layout", "speaker_split",
    "read_timit_segments", "TIMIT_CORE_TEST_SPEAKERS", "TIMIT_DEV_SPEAKERS", "SPLITS", "KINDS",
]

SPLITS = ("train", "dev", "test")

# The runtime's list (vc.audio) plus SPHERE, which training.data.audio reads itself, and two more
# libsndfile formats (.snd, .rf64) that vc.audio's list does not name yet.
AUDIO_EXTENSIONS = VC_AUDIO_EXTENSIONS | {".sph", ".nist", ".snd", ".rf64"}

# The standard TIMIT core test set: 2 men and 1 woman from each of the 8 dialect regions.
TIMIT_CORE_TEST_SPEAKERS = frozenset("""
    MDAB0 MWBT0 FELC0  MTAS1 MWEW0 FPAS0  MJMP0 MLNT0 FPKT0  MLLL0 MTLS0 FJLM0
    MBPM0 MKLT0 FNLP0  MCMJ0 MJDH0 FMGD0  MGRT0 MNJM0 FDHC0  MJLN0 MPAM0 FMLD0
""".split())

# The 50-speaker development set drawn from TIMIT's TEST directory (disjoint from the core test set),
# as used by the Kaldi and most phone-recognition recipes.
TIMIT_DEV_SPEAKERS = frozenset("""
    FAKS0 FDAC1 FJEM0 MGWT0 MJAR0 MMDB1 MMDM2 MPDF0 FCMH0 FKMS0 MBDG0 MBWM0 MCSH0 FADG0 FDMS0
    FEDW0 MGJF0 MGLB0 MRTK0 MTAA0 MTDT0 MTHC0 MWJG0 FNMR0 FREW0 FSEM0 MBNS0 MMJR0 MDLS0 MDLF0
    MDVC0 MERS0 FMAH0 FDRW0 MRCS0 MRJM4 FCAL1 MMWH0 FJSJ0 MAJC0 MJSW0 MREB0 FGJD0 FJMG0 MROA0
    MTEB0 MJFC0 MRJR0 FMML0 MRWS1
""".split())


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


# --------------------------------------------------------------------------------------- TIMIT

_TIMIT_REGION = re.compile(r"^dr\d$", re.IGNORECASE)
_TIMIT_SPEAKER = re.compile(r"^[mf][a-z]{3}\d$", re.IGNORECASE)


def read_timit_segments(path: os.PathLike | str) -> list[tuple[int, int, str]]:
    """Read a TIMIT .PHN or .WRD file: ``(first sample, end sample, label)`` per line."""
    out = []
    with open(path, encoding="latin-1") as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise CorpusError(f"{path}:{number}: expected 'start end label', got {line.strip()!r}")
            try:
                out.append((int(parts[0]), int(parts[1]), parts[2]))
            except ValueError:
                raise CorpusError(f"{path}:{number}: sample positions are not integers") from None
    return out


def _timit_text(path: Path) -> str | None:
    try:
        line = path.read_text(encoding="latin-1").strip()
    except OSError:
        return None
    parts = line.split(maxsplit=2)
    # .TXT lines are "<first sample> <end sample> <sentence>".
    if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
        return parts[2].strip()
    return line or None


class TimitCorpus(Corpus):
    """TIMIT in its original layout: ``TRAIN|TEST/DRn/<sex><initials><digit>/<utt>.WAV``.

    Audio may be NIST SPHERE (the LDC original) or RIFF WAV; both go through
    :func:`training.data.audio.load_audio`. Where a copy holds both ``SX1.WAV`` and ``SX1.WAV.wav``
    (a common conversion), one file per utterance is kept, the one named plainly ``<utt>.wav``.
    """

    kind = "timit"
    split_names = ("train", "dev", "test", "core-test", "full-test")

    def __init__(self, root: os.PathLike | str, include_sa: bool = False):
        super().__init__(root)
        self.include_sa = include_sa
        self.train_dir = _child(self.root, "TRAIN")
        self.test_dir = _child(self.root, "TEST")
        if self.train_dir is None and self.test_dir is None:
            raise CorpusError(f"{self.root}: not a TIMIT tree (no TRAIN or TEST directory)")

    def options(self) -> dict:
        return {"include_sa": self.include_sa}

    def _in_split(self, utt: Utterance, split: str) -> bool:
        if split == "core-test":
            return utt.speaker in TIMIT_CORE_TEST_SPEAKERS
        if split == "full-test":
            return utt.split in ("dev", "test")
        return utt.split == split

    def _scan(self) -> list[Utterance]:
        out = []
        for top, is_train in ((self.train_dir, True), (self.test_dir, False)):
            if top is None:
                continue
            for region in _subdirs(top):
                if not _TIMIT_REGION.match(region.name):
                    continue
                for speaker_dir in _subdirs(region):
                    if not _TIMIT_SPEAKER.match(speaker_dir.name):
                        continue
                    out.extend(self._speaker(speaker_dir, is_train))
        return out

    def _speaker(self, speaker_dir: Path, is_train: bool) -> list[Utterance]:
        speaker = speaker_dir.name.upper()
        if is_train:
            split = "train"
        else:
            split = "dev" if speaker in TIMIT_DEV_SPEAKERS else "test"
        files: dict[str, dict[str, Path]] = {}
        audio: dict[str, Path] = {}
        for entry in sorted(os.scandir(speaker_dir), key=lambda e: e.name):
            if not entry.is_file():
                continue
            stem, _, rest = entry.name.partition(".")
            stem = stem.upper()
            rest = rest.lower()
            if rest == "wav" or rest == "wav.wav":
                # Prefer the plain "<utt>.wav" over converted "<utt>.WAV.wav" copies.
                if stem not in audio or rest == "wav":
                    audio[stem] = Path(entry.path)
            elif rest in ("txt", "wrd", "phn"):
                files.setdefault(stem, {})[rest] = Path(entry.path)
        out = []
        for stem, path in audio.items():
            if stem.startswith("SA") and not self.include_sa:
                continue
            side = files.get(stem, {})
            text = _timit_text(side["txt"]) if "txt" in side else None
            out.append(Utterance(speaker=speaker, utterance=f"{speaker}_{stem}", path=path,
                                 split=split, text=text, gender=speaker[0].lower(),
                                 annotations=dict(side)))
        return out


# ---------------------------------------------------------------------------------------- VCTK

class VctkCorpus(Corpus):
    """VCTK 0.92 (``wav48_silence_trimmed/pNNN/pNNN_MMM_mic1.flac``) or the older release
    (``wav48/pNNN/pNNN_MMM.wav``); transcripts from ``txt/pNNN/pNNN_MMM.txt`` when present.

    0.92 recorded every sentence with two microphones; ``mic`` picks one ("mic1", the default,
    or "mic2"). Splits: :func:`speaker_split`.
    """

    kind = "vctk"

    def __init__(self, root: os.PathLike | str, mic: str = "mic1",
                 dev_fraction: float = 0.1, test_fraction: float = 0.1):
        super().__init__(root)
        if mic not in ("mic1", "mic2"):
            raise CorpusError(f"{self.root}: VCTK mic must be 'mic1' or 'mic2', not {mic!r}")
        self.mic = mic
        self.dev_fraction, self.test_fraction = dev_fraction, test_fraction
        self.audio_dir = _child(self.root, "wav48_silence_trimmed") or _child(self.root, "wav48")
        if self.audio_dir is None:
            raise CorpusError(f"{self.root}: not a VCTK tree (no wav48_silence_trimmed or wav48)")
        self.text_dir = _child(self.root, "txt")

    def options(self) -> dict:
        return {"mic": self.mic, "dev_fraction": self.dev_fraction,
                "test_fraction": self.test_fraction}

    def _scan(self) -> list[Utterance]:
        trimmed = self.audio_dir.name.lower() == "wav48_silence_trimmed"
        found = []
        for speaker_dir in _subdirs(self.audio_dir):
            speaker = speaker_dir.name
            for entry in os.scandir(speaker_dir):
                name = entry.name
                if not entry.is_file() or Path(name).suffix.lower() not in AUDIO_EXTENSIONS:
                    continue
                stem = Path(name).stem
                if trimmed:
                    base, _, mic = stem.rpartition("_")
                    if mic != self.mic:
                        continue
                    stem = base
                found.append((speaker, stem, Path(entry.path)))
        splits = speaker_split({s for s, _, _ in found}, self.dev_fraction, self.test_fraction)
        out = []
        for speaker, stem, path in found:
            text = None
            if self.text_dir is not None:
                txt = self.text_dir / speaker / f"{stem}.txt"
                if txt.is_file():
                    text = txt.read_text(encoding="utf-8", errors="replace").strip() or None
            out.append(Utterance(speaker, stem, path, splits[speaker], text))
        return out


# --------------------------------------------------------------------------------- LibriSpeech

_LIBRI_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def read_librispeech_speakers(path: Path) -> dict[str, str]:
    """SPEAKERS.TXT (``id | sex | subset | minutes | name``) -> {speaker id: "f" | "m"}."""
    genders = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(";"):
                continue
            fields = [x.strip() for x in line.split("|")]
            if len(fields) >= 2 and fields[0].isdigit() and fields[1].upper() in ("F", "M"):
                genders[fields[0]] = fields[1].lower()
    return genders


class LibriSpeechCorpus(Corpus):
    """LibriSpeech: ``[subset/]speaker/chapter/speaker-chapter-NNNN.flac`` with
    ``speaker-chapter.trans.txt`` beside them, or the flat layouts of excerpts
    (``folder/speaker-chapter-NNNN.flac``, ``speaker/speaker-chapter-NNNN.flac``): the file name
    names the speaker. A ``SPEAKERS.TXT`` anywhere under the root gives the readers' sex. All subsets
    under the root are read together and split by :func:`speaker_split` (the official subsets are
    speaker-disjoint, but a copy often holds only one of them)."""

    kind = "librispeech"

    def __init__(self, root: os.PathLike | str, dev_fraction: float = 0.1,
                 test_fraction: float = 0.1):
        super().__init__(root)
        self.dev_fraction, self.test_fraction = dev_fraction, test_fraction

    def options(self) -> dict:
        return {"dev_fraction": self.dev_fraction, "test_fraction": self.test_fraction}

    def _scan(self) -> list[Utterance]:
        found = []
        texts: dict[str, str] = {}
        genders: dict[str, str] = {}
        for directory, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.upper() == "SPEAKERS.TXT":
                    genders.update(read_librispeech_speakers(Path(directory) / name))
                    continue
                if name.endswith(".trans.txt"):
                    with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as f:
                        for line in f:
                            key, _, text = line.strip().partition(" ")
                            if key:
                                texts[key] = text.strip()
                    continue
                stem, ext = os.path.splitext(name)
                m = _LIBRI_NAME.match(stem)
                if m and ext.lower() == ".flac" and _libri_tree_agrees(Path(directory), m):
                    found.append((m.group(1), stem, Path(directory) / name))
        splits = speaker_split({s for s, _, _ in found}, self.dev_fraction, self.test_fraction)
        return [Utterance(s, stem, p, splits[s], texts.get(stem), genders.get(s))
                for s, stem, p in found]


def _libri_tree_agrees(directory: Path, name: re.Match) -> bool:
    """The file name repeats its speaker/chapter directories where there are any; a numeric folder
    that names another speaker or chapter means some other tree, not LibriSpeech."""
    speaker, chapter = name.group(1), name.group(2)
    if directory.name == chapter:
        return directory.parent.name == speaker
    return directory.name == speaker or not directory.name.isdigit()


# ---------------------------------------------------------------------------- speechocean762

def _read_kaldi_map(path: Path) -> dict[str, str]:
    """A Kaldi list (``key value...`` per line, space or tab separated) as a dict; {} if absent."""
    if not path.is_file():
        return {}
    out = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split(None, 1)
            if parts:
                out[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return out


class SpeechOceanCorpus(Corpus):
    """speechocean762: ``WAVE/SPEAKERnnnn/<utt>.WAV`` with Kaldi lists in ``train/`` and ``test/``
    (``wav.scp``, ``text``, ``utt2spk``, ``spk2gender``, ``spk2age``). Speakers come from ``utt2spk``,
    gender and age are kept. Splits: the corpus's own ``test`` speakers are ``test``; its ``train``
    speakers are divided by :func:`speaker_split` into ``dev`` (``dev_fraction``) and ``train``."""

    kind = "speechocean762"

    def __init__(self, root: os.PathLike | str, dev_fraction: float = 0.1):
        super().__init__(root)
        self.dev_fraction = dev_fraction

    @property
    def name(self) -> str:
        return "speechocean762"

    def options(self) -> dict:
        return {"dev_fraction": self.dev_fraction}

    def _scan(self) -> list[Utterance]:
        found = []
        for part in ("train", "test"):
            lists = self.root / part
            wavs = _read_kaldi_map(lists / "wav.scp")
            if not wavs:
                raise CorpusError(f"{lists / 'wav.scp'}: missing or empty")
            speakers = _read_kaldi_map(lists / "utt2spk")
            texts = _read_kaldi_map(lists / "text")
            genders = _read_kaldi_map(lists / "spk2gender")
            ages = _read_kaldi_map(lists / "spk2age")
            for utt, rel in wavs.items():
                speaker = speakers.get(utt)
                if speaker is None:
                    raise CorpusError(f"{lists / 'utt2spk'}: no speaker for utterance {utt}")
                age = ages.get(speaker, "")
                found.append((part, speaker, utt, self.root / rel, texts.get(utt) or None,
                              (genders.get(speaker) or "").lower() or None,
                              int(age) if age.isdigit() else None))
        found += self._unlisted(found)
        dev = speaker_split({s for part, s, *_ in found if part == "train"}, self.dev_fraction, 0.0)
        return [Utterance(s, u, p, "test" if part == "test" else dev[s], t, g, a)
                for part, s, u, p, t, g, a in found]

    def _unlisted(self, listed: list[tuple]) -> list[tuple]:
        """WAVs under WAVE/SPEAKERnnnn/ that the lists leave out (245 in the public release: prompts
        without scores) still are that speaker's speech; they join the speaker's part, without text."""
        known = {p for _, _, _, p, *_ in listed}
        speaker_info = {s: (part, g, a) for part, s, _, _, _, g, a in listed}
        extra = []
        for speaker_dir in _subdirs(self.root / "WAVE"):
            speaker = speaker_dir.name[len("SPEAKER"):] if speaker_dir.name.startswith("SPEAKER") else ""
            for path in sorted(speaker_dir.iterdir()):
                if path.suffix.lower() != ".wav" or path in known:
                    continue
                part, gender, age = speaker_info.get(speaker, ("train", None, None))
                extra.append((part, speaker or speaker_dir.name, path.stem, path, None, gender, age))
        return extra


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
