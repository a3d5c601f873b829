"""The speech synthesisers of the open corpus and their candidate voices.

espeak-ng (its stock variants plus variants generated here, each with its own formant scaling, pitch,
breathiness, tone, roughness, flutter and speed, i.e. a different "vocal tract"), flite and festival.
`candidate_voices` lists them in the greedy priority order of the distinctness check
(training.data.distinct); `synthesise_raw` runs an engine.
"""
from __future__ import annotations

import math
import random
import re
import shutil
import subprocess
import tempfile
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vc.files import atomic_write

ENGINES = ("espeak-ng", "flite", "festival")

APT_PACKAGES = {
    "espeak-ng": "espeak-ng",
    "flite": "flite",
    "festival": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
}
SYSTEM_ESPEAK_DATA = Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data")

# Speakers recorded from real people come first in the greedy selection: they are the most natural.
FLITE_VOICES = (("slt", "f"), ("awb", "m"), ("rms", "m"), ("kal16", "m"))
FESTIVAL_VOICES = (
    ("ked", "voice_ked_diphone", "m", "english/ked_diphone"),
    ("kal", "voice_kal_diphone", "m", "english/kal_diphone"),
    ("slt_hts", "voice_cmu_us_slt_arctic_hts", "f", "us/cmu_us_slt_arctic_hts"),
)
FESTIVAL_VOICE_DIR = Path("/usr/share/festival/voices")
ESPEAK_ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                  "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# Unvoiced variants have no pitch to describe or convert.
ESPEAK_EXCLUDED_VARIANTS = {"whisper", "whisperf"}

class CorpusError(Exception):
    """A problem the user can fix; the CLI prints it as one line."""


@dataclass(frozen=True)
class Voice:
    speaker: str            # directory name and metadata speaker id
    engine: str             # espeak-ng | flite | festival
    name: str               # what the engine is asked for
    gender: str             # m | f | unknown
    params: tuple = ()      # (key, value) pairs describing the voice, for the metadata
    speed_wpm: int = 0      # espeak-ng only
    variant_file: str = ""  # espeak-ng generated variants: the file written into the private data

    def describe(self) -> str:
        parts = [f"{self.engine}:{self.name}"]
        parts += [f"{k}={v}" for k, v in self.params]
        return ";".join(parts)


# ----------------------------------------------------------------------------------------------
# Tools

def check_engines(engines) -> None:
    """Raise CorpusError with the apt-get line when a synthesiser or one of its voices is missing."""
    for engine in engines:
        if engine not in ENGINES:
            raise CorpusError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
        if shutil.which(engine) is None:
            raise CorpusError(f"{engine} not found on PATH; install it with: "
                              f"sudo apt-get install -y {APT_PACKAGES[engine]}")
    if "espeak-ng" in engines and not (SYSTEM_ESPEAK_DATA / "phontab").is_file():
        raise CorpusError(f"espeak-ng data missing in {SYSTEM_ESPEAK_DATA}; install it with: "
                          "sudo apt-get install -y espeak-ng-data")
    if "festival" in engines:
        for _, _, _, sub in FESTIVAL_VOICES:
            if not (FESTIVAL_VOICE_DIR / sub).is_dir():
                raise CorpusError(f"festival voice {FESTIVAL_VOICE_DIR / sub} missing; install it "
                                  f"with: sudo apt-get install -y {APT_PACKAGES['festival']}")
    if "flite" in engines:
        listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout.split()
        missing = [v for v, _ in FLITE_VOICES if v not in listed]
        if missing:
            raise CorpusError(f"flite lacks voices {missing}; install it with: "
                              "sudo apt-get install -y flite")


def prepare_espeak_data(destination: Path, voices) -> Path:
    """A private, pruned copy of espeak-ng-data with the generated variant files.

    Only English is copied: with hundreds of variants espeak-ng's voice scan of every language slows
    each call down, and the system installation is never touched.
    """
    data = destination / "espeak-ng-data"
    marker = data / ".complete"
    generated = {v.name.split("+", 1)[1]: v.variant_file for v in voices
                 if v.engine == "espeak-ng" and v.variant_file}
    if not marker.is_file():
        staging = Path(tempfile.mkdtemp(prefix=".espeak-", dir=destination))
        for item in ("phondata", "phondata-manifest", "phonindex", "phontab", "intonations",
                     "en_dict"):
            shutil.copy2(SYSTEM_ESPEAK_DATA / item, staging / item)
        (staging / "lang" / "gmw").mkdir(parents=True)
        for path in (SYSTEM_ESPEAK_DATA / "lang" / "gmw").glob("en*"):
            shutil.copy2(path, staging / "lang" / "gmw" / path.name)
        shutil.copytree(SYSTEM_ESPEAK_DATA / "voices" / "!v", staging / "voices" / "!v")
        (staging / ".complete").write_text("ok\n")
        if data.exists():
            shutil.rmtree(data)
        os.replace(staging, data)
    variant_dir = data / "voices" / "!v"
    for name, text in generated.items():
        path = variant_dir / name
        if not path.is_file() or path.read_text() != text:
            with atomic_write(path, "w", encoding="utf-8") as fh:
                fh.write(text)
    return data


# ----------------------------------------------------------------------------------------------
# Candidate voices

def _speaker_id(prefix: str, name: str) -> str:
    return prefix + "_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _variant_gender(path: Path) -> str:
    for line in path.read_text(errors="replace").splitlines():
        tokens = line.split()
        if len(tokens) >= 2 and tokens[0] == "gender":
            return {"female": "f", "male": "m"}.get(tokens[1].lower(), "unknown")
    return "unknown"


def stock_espeak_voices() -> list[Voice]:
    voices = []
    variant_dir = SYSTEM_ESPEAK_DATA / "voices" / "!v"
    for path in sorted(variant_dir.iterdir()):
        if path.name in ESPEAK_EXCLUDED_VARIANTS or not path.is_file():
            continue
        voices.append(Voice(speaker=_speaker_id("espeak", path.name), engine="espeak-ng",
                            name=f"en-us+{path.name}", gender=_variant_gender(path),
                            params=(("speed", 165),), speed_wpm=165))
    return voices


def generated_espeak_voice(seed: int, index: int) -> Voice:
    """A generated espeak-ng variant: a physically different vocal tract and voice source.

    Formants scale together (0.78-1.30, a long to a short vocal tract) and the pitch follows the
    scale, as it does between people; breathiness, spectral tone, roughness, flutter, formant
    bandwidths and speaking rate vary independently.
    """
    rng = random.Random(f"voice:{seed}:{index}")
    name = f"gen{index:03d}"
    scale = rng.uniform(0.78, 1.30)
    pitch_base = int(np.clip(105.0 * (scale / 0.95) ** 2.6 * math.exp(rng.gauss(0.0, 0.12)),
                             60, 300))
    pitch_top = int(pitch_base * rng.uniform(1.15, 1.9))
    accent = rng.choice(ESPEAK_ACCENTS)
    speed = rng.randrange(135, 186, 5)
    lines = ["language variant", f"name {name}"]
    if scale >= 1.08 and pitch_base >= 150:
        gender = "f"
    elif scale <= 0.98 and pitch_base <= 140:
        gender = "m"
    else:
        gender = "unknown"
    lines.append("gender " + {"f": "female", "m": "male", "unknown": "neutral"}[gender])
    lines.append(f"pitch {pitch_base} {pitch_top}")
    height_tilt = rng.uniform(-25, 25)
    width = rng.uniform(70, 160)
    for formant in range(0, 9):
        freq = 100 if formant == 0 else int(round(100 * scale * rng.uniform(0.96, 1.04)))
        height = int(round(np.clip(100 + height_tilt * (formant - 2) / 3 + rng.uniform(-10, 10),
                                   40, 160)))
        lines.append(f"formant {formant} {freq} {height} {int(round(width * rng.uniform(0.9, 1.1)))}")
    params = [("fs", f"{scale:.2f}"), ("p", f"{pitch_base}-{pitch_top}"), ("acc", accent),
              ("s", speed)]
    if rng.random() < 0.4:
        level = rng.randint(1, 6)
        lines.append("breath 0 " + " ".join(str(max(0, level - rng.randint(0, 2))) for _ in range(7)))
        params.append(("br", level))
    if rng.random() < 0.5:
        tone = [rng.randint(300, 900), rng.randint(100, 250), rng.randint(1000, 1800),
                rng.randint(60, 200), rng.randint(2000, 3500), rng.randint(30, 160)]
        lines.append("tone " + " ".join(map(str, tone)))
        params.append(("tone", "/".join(map(str, tone[1::2]))))
    if rng.random() < 0.4:
        roughness = rng.randint(1, 7)
        lines.append(f"roughness {roughness}")
        params.append(("rough", roughness))
    if rng.random() < 0.5:
        flutter = rng.randint(0, 80)
        lines.append(f"flutter {flutter}")
        params.append(("flut", flutter))
    if rng.random() < 0.3:
        voicing = rng.randint(70, 130)
        lines.append(f"voicing {voicing}")
        params.append(("voic", voicing))
    return Voice(speaker=_speaker_id("espeak", name), engine="espeak-ng", name=f"{accent}+{name}",
                 gender=gender, params=tuple(params), speed_wpm=speed,
                 variant_file="\n".join(lines) + "\n")


def candidate_voices(seed: int, engines=ENGINES, generated: int = 120,
                     stock: bool = True) -> list[Voice]:
    """All candidate voices in greedy priority order: real-person voices, then a seeded mix."""
    first = []
    if "flite" in engines:
        first += [Voice(speaker=_speaker_id("flite", v), engine="flite", name=v, gender=g,
                        params=(("voice", v),)) for v, g in FLITE_VOICES]
    if "festival" in engines:
        first += [Voice(speaker=_speaker_id("festival", short), engine="festival", name=func,
                        gender=g, params=(("voice", short),))
                  for short, func, g, _ in FESTIVAL_VOICES]
    rest = []
    if "espeak-ng" in engines:
        if stock:
            rest += stock_espeak_voices()
        rest += [generated_espeak_voice(seed, i) for i in range(generated)]
        random.Random(f"order:{seed}").shuffle(rest)
    return first + rest


# ----------------------------------------------------------------------------------------------
# Synthesis

def _run(command, what: str, timeout: float = 300) -> None:
    try:
        result = subprocess.run(command, capture_output=True, timeout=timeout)
    except FileNotFoundError as error:
        raise CorpusError(f"{what}: {error}") from None
    except subprocess.TimeoutExpired:
        raise CorpusError(f"{what}: timed out after {timeout:.0f} s") from None
    if result.returncode < 0:
        raise CorpusError(f"{what} was stopped by signal {-result.returncode}; rerun to resume")
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise CorpusError(f"{what} failed ({result.returncode}): "
                          f"{message[-1] if message else 'no message'}")


def _festival_string(text: str) -> str:
    return '"' + text.encode("ascii", "replace").decode().replace("\\", "\\\\").replace('"', '\\"') + '"'


def synthesise_raw(voice: Voice, texts, raw_dir: Path, espeak_data: Path | None) -> list[Path]:
    """Synthesise texts with the voice's engine into raw WAVs at the engine's native rate."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    paths = [raw_dir / f"raw{i:03d}.wav" for i in range(len(texts))]
    if voice.engine == "espeak-ng" and "+" in voice.name:
        # espeak-ng silently falls back to its default voice when a variant is missing.
        variant = voice.name.split("+", 1)[1]
        if espeak_data is None or not (espeak_data / "voices" / "!v" / variant).is_file():
            raise CorpusError(f"espeak-ng variant {variant!r} missing from {espeak_data}")
    if voice.engine == "festival":
        script = [f"({voice.name})"]
        script += [f"(utt.save.wave (utt.synth (Utterance Text {_festival_string(t)})) "
                   f"{_festival_string(str(p))} 'riff)" for t, p in zip(texts, paths)]
        script_path = raw_dir / "batch.scm"
        script_path.write_text("\n".join(script) + "\n")
        _run(["festival", "-b", str(script_path)], f"festival {voice.name}",
             timeout=60 + 10 * len(texts))
    else:
        for text, path in zip(texts, paths):
            if voice.engine == "espeak-ng":
                command = ["espeak-ng", "--path=" + str(espeak_data.parent), "-v", voice.name,
                           "-s", str(voice.speed_wpm), "-w", str(path), text]
            else:
                command = ["flite", "-voice", voice.name, "-t", text, "-o", str(path)]
            _run(command, f"{voice.engine} {voice.name}")
    for path in paths:
        if not path.is_file() or path.stat().st_size <= 44:
            raise CorpusError(f"{voice.engine} {voice.name} wrote no audio to {path}")
    return paths
