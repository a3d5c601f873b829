"""Readers of published speech corpora: TIMIT, VCTK, LibriSpeech (and its excerpts), speechocean762.

Splits (always speaker-disjoint):

* TIMIT: ``train`` is the TRAIN directory. The TEST directory is divided as usual in the literature:
  ``dev`` is the 50-speaker development set, ``test`` the other 118 TEST speakers (they include the
  24-speaker core test set). ``core-test`` (24 speakers) and ``full-test`` (all 168 TEST speakers, which
  overlaps ``dev``) can be asked for by name. SA sentences (read by every speaker) are left out unless
  ``include_sa=True``, because they would let a model match speakers by shared text.
* VCTK, LibriSpeech: :func:`training.data.corpus.speaker_split`, a deterministic split by speaker id.
* speechocean762: its own test speakers are ``test``; its train speakers split into dev and train.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from training.data.corpus import (AUDIO_EXTENSIONS, Corpus, CorpusError, Utterance, _child, _subdirs,
                                  speaker_split)

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
