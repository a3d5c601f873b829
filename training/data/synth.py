"""An open multi-speaker corpus synthesised with Debian's speech synthesisers.

Voices come from espeak-ng (its stock variants plus variants generated here, each with its own formant
scaling, pitch, breathiness, tone, roughness, flutter and speed, i.e. a different "vocal tract"), flite
and festival.  Many nominal voices sound alike, so every candidate voice first reads the two shared
sentences; a long-term average spectral envelope plus pitch statistics describe it, and a candidate is
kept only when it is at least `threshold` away from every voice already kept (greedy, in a fixed
priority order).  Kept voices then read their own sentences.

Layout of OUT:
    OUT/<speaker>/<utterance>.wav   16 kHz mono 16-bit PCM, 2-5 s, ~100 ms silence at each end
    OUT/metadata.csv                speaker,utterance,path,text,engine,voice,gender,split
    OUT/summary.json                counts, splits, durations, the distinctness check and its figures
    OUT/.work/                      probes, per-utterance records and the private espeak-ng data;
                                    lets an interrupted build resume without redoing finished files
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from training.data.sentences import SHARED_SENTENCES, sentence_for, vocabulary_size, word_count

FORMAT_VERSION = 1
SAMPLE_RATE = 16000
MIN_SECONDS = 2.0
MAX_SECONDS = 5.0
EDGE_SILENCE_SECONDS = 0.1
TARGET_RMS_DBFS = -20.0
MAX_ATTEMPTS = 12
METADATA_COLUMNS = ("speaker", "utterance", "path", "text", "engine", "voice", "gender", "split")
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

# Distinctness: distance = sqrt((envelope_rms_db / 2.5)^2 + (median_pitch_st / 6)^2
#                               + (pitch_iqr_st / 4)^2).
# Fixed scales (not pool statistics) standardise the parts, so a distance means the same in a tiny
# test pool and in the default one.  Calibrated on 306 candidates: flite kal16 / festival kal (one
# person) are 0.69 apart, flite / festival slt 1.04, espeak's near-duplicate groups {m2, m4, m5, max,
# ...} and {adam, caleb, klatt, ...} have median distances 0.87 and 0.63, and shifting one voice's
# pitch alone by 6 semitones moves it by only ~1: at the threshold 1.2 none of these counts as a new
# speaker.
ENVELOPE_SCALE_DB = 2.5
PITCH_SCALE_ST = 6.0
SPREAD_SCALE_ST = 4.0
DEFAULT_THRESHOLD = 1.2


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
            _atomic_write_text(path, text)
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


def _frame_db(y: np.ndarray, frame: int, hop: int) -> np.ndarray:
    if len(y) < frame:
        y = np.pad(y, (0, frame - len(y)))
    frames = np.lib.stride_tricks.sliding_window_view(y, frame)[::hop]
    power = np.mean(frames.astype(np.float64) ** 2, axis=1)
    return 10.0 * np.log10(power + 1e-12)


def postprocess(raw_path: Path) -> np.ndarray:
    """Read, mix to mono, resample to 16 kHz, trim edge silence to 100 ms and level to -20 dBFS."""
    y, sr = sf.read(str(raw_path), dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != SAMPLE_RATE:
        y = soxr.resample(y, sr, SAMPLE_RATE, quality="HQ").astype(np.float32)
    frame, hop = 400, 160
    db = _frame_db(y, frame, hop)
    active = np.flatnonzero(db > db.max() - 40.0)
    if len(active) == 0 or db.max() < -80:
        return np.zeros(0, dtype=np.float32)
    start = active[0] * hop
    end = min(len(y), active[-1] * hop + frame)
    speech = y[start:end]
    level_db = 10.0 * np.log10(np.mean(10.0 ** (db[active] / 10.0)))
    speech = speech * 10.0 ** ((TARGET_RMS_DBFS - level_db) / 20.0)
    peak = float(np.max(np.abs(speech)))
    if peak > 0.97:
        speech = speech * (0.97 / peak)
    edge = np.zeros(int(EDGE_SILENCE_SECONDS * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([edge, speech.astype(np.float32), edge])


def write_wav_atomic(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(str(tmp), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def duration_ok(audio: np.ndarray) -> bool:
    return MIN_SECONDS <= len(audio) / SAMPLE_RATE <= MAX_SECONDS


# ----------------------------------------------------------------------------------------------
# Voice description and the distinctness check

def yin_pitch(y: np.ndarray, fmin: float = 50.0, fmax: float = 500.0, frame_length: int = 1024,
              hop_length: int = 160, trough_threshold: float = 0.1):
    """YIN (de Cheveigne & Kawahara 2002), vectorised with numpy.

    Returns (f0 in Hz, aperiodicity = the normalised difference at the chosen lag) per frame.
    librosa.yin would do, but its numba kernels compile for ~10 s in every fresh worker process
    and it does not expose the aperiodicity that makes a cheap voicing decision.
    """
    tau_min = max(2, int(SAMPLE_RATE / fmax))
    tau_max = min(frame_length // 2, int(math.ceil(SAMPLE_RATE / fmin)))
    window = frame_length - tau_max
    padded = np.pad(y.astype(np.float64), (frame_length // 2, frame_length // 2))
    if len(padded) < frame_length:
        padded = np.pad(padded, (0, frame_length - len(padded)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length]
    n_fft = 2 * frame_length
    spectrum = np.fft.rfft(frames, n_fft)
    head = np.fft.rfft(frames[:, :window], n_fft)
    cross = np.fft.irfft(spectrum * np.conj(head), n_fft)[:, :tau_max + 1]
    energy = np.cumsum(np.pad(frames ** 2, ((0, 0), (1, 0))), axis=1)
    lags = np.arange(tau_max + 1)
    shifted_energy = energy[:, lags + window] - energy[:, lags]
    difference = np.maximum(energy[:, [window]] + shifted_energy - 2.0 * cross, 0.0)
    cumulative = np.cumsum(difference[:, 1:], axis=1)
    normalised = np.ones_like(difference)
    normalised[:, 1:] = difference[:, 1:] * lags[1:] / np.maximum(cumulative, 1e-12)
    search = normalised[:, tau_min:tau_max]
    is_trough = np.zeros_like(search, dtype=bool)
    is_trough[:, 1:-1] = (search[:, 1:-1] <= search[:, :-2]) & (search[:, 1:-1] <= search[:, 2:])
    below = is_trough & (search < trough_threshold)
    first = np.where(below.any(axis=1), below.argmax(axis=1), search.argmin(axis=1))
    rows = np.arange(len(search))
    # Parabolic interpolation around the chosen lag for sub-sample resolution.
    left = search[rows, np.maximum(first - 1, 0)]
    mid = search[rows, first]
    right = search[rows, np.minimum(first + 1, search.shape[1] - 1)]
    curvature = left - 2.0 * mid + right
    offset = np.where(np.abs(curvature) > 1e-12, 0.5 * (left - right) / np.where(
        np.abs(curvature) > 1e-12, curvature, 1.0), 0.0)
    tau = tau_min + first + np.clip(offset, -1.0, 1.0)
    return SAMPLE_RATE / tau, mid


def _voiced_pitch(y: np.ndarray) -> np.ndarray:
    """Pitch of loud, periodic, pitch-stable frames (octave jumps and creak fall out)."""
    from scipy.ndimage import median_filter

    hop = 160
    f0, aperiodicity = yin_pitch(y, hop_length=hop)
    db = _frame_db(np.pad(y, (512, 512)), 1024, hop)[:len(f0)]
    semitones = 12.0 * np.log2(f0 / 100.0)
    smooth = median_filter(semitones, size=7, mode="nearest")
    voiced = (db > db.max() - 25.0) & (aperiodicity < 0.35) & (np.abs(semitones - smooth) < 1.0)
    voiced &= (f0 > 52.0) & (f0 < 490.0)
    return f0[voiced]


def mel_filterbank(n_fft: int = 1024, n_mels: int = 40, fmin: float = 60.0,
                   fmax: float = 7600.0) -> np.ndarray:
    """Triangular filters equally spaced on the HTK mel scale, (n_mels, n_fft // 2 + 1).

    Built here because librosa's first call in each worker process spends seconds in numba.
    """
    def to_mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    edges_hz = 700.0 * (10.0 ** (np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2) / 2595.0) - 1.0)
    bins_hz = np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bins_hz[None, :]) / (upper - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    # Unit-sum rows: each band measures power density, so narrow low bands are not penalised.
    return filters / np.maximum(filters.sum(axis=1, keepdims=True), 1e-12)


def describe_audio(clips) -> dict:
    """Long-term average spectral envelope (40 mel bands, dB, level removed) and pitch statistics."""
    n_fft, hop = 1024, 160
    filters = mel_filterbank(n_fft)
    window = np.hanning(n_fft + 1)[:-1]
    band_power = []
    f0_all = []
    for y in clips:
        padded = np.pad(y.astype(np.float64), (n_fft // 2, n_fft // 2))
        frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop] * window
        mel = filters @ (np.abs(np.fft.rfft(frames, axis=1)) ** 2).T
        frame_db = 10.0 * np.log10(mel.sum(axis=0) + 1e-12)
        active = frame_db > frame_db.max() - 35.0
        band_power.append(mel[:, active])
        f0_all.append(_voiced_pitch(y))
    envelope = 10.0 * np.log10(np.concatenate(band_power, axis=1).mean(axis=1) + 1e-12)
    envelope -= envelope.mean()
    f0 = np.concatenate(f0_all)
    if len(f0) < 10:
        return {"envelope_db": envelope.round(3).tolist(), "pitch_median_st": None,
                "pitch_iqr_st": None, "voiced_frames": int(len(f0))}
    semitones = 12.0 * np.log2(f0 / 100.0)
    p25, p50, p75 = np.percentile(semitones, [25, 50, 75])
    return {"envelope_db": envelope.round(3).tolist(), "pitch_median_st": round(float(p50), 3),
            "pitch_iqr_st": round(float(p75 - p25), 3), "voiced_frames": int(len(f0))}


def voice_distance(a: dict, b: dict) -> float:
    envelope = np.sqrt(np.mean((np.asarray(a["envelope_db"]) - np.asarray(b["envelope_db"])) ** 2))
    pitch = a["pitch_median_st"] - b["pitch_median_st"]
    spread = a["pitch_iqr_st"] - b["pitch_iqr_st"]
    return float(math.sqrt((envelope / ENVELOPE_SCALE_DB) ** 2 + (pitch / PITCH_SCALE_ST) ** 2
                           + (spread / SPREAD_SCALE_ST) ** 2))


def select_distinct(descriptions, wanted: int, threshold: float = DEFAULT_THRESHOLD):
    """Greedy selection in the given order: keep a voice iff it is >= threshold from all kept ones.

    Returns (kept indices, {rejected index: (nearest kept index, distance)}).
    """
    kept, rejected = [], {}
    for index, description in enumerate(descriptions):
        if len(kept) >= wanted:
            break
        nearest, nearest_distance = None, math.inf
        for other in kept:
            d = voice_distance(description, descriptions[other])
            if d < nearest_distance:
                nearest, nearest_distance = other, d
        if nearest_distance >= threshold:
            kept.append(index)
        else:
            rejected[index] = (nearest, nearest_distance)
    return kept, rejected


def pairwise_distances(descriptions) -> np.ndarray:
    n = len(descriptions)
    out = []
    for i in range(n):
        for j in range(i + 1, n):
            out.append(voice_distance(descriptions[i], descriptions[j]))
    return np.asarray(out, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# Workers (run in a process pool; every result lands on disk atomically)

def _probe_worker(voice: Voice, work: str, espeak_data: str | None) -> dict:
    """Synthesise the shared sentences with one candidate voice and describe it (cached)."""
    work_dir = Path(work)
    probe_dir = work_dir / "probes" / voice.speaker
    record_path = probe_dir / "probe.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("voice") == voice.describe() and (
                record.get("rejected") or all((probe_dir / f"sa{i + 1}.wav").is_file()
                                              for i in range(len(SHARED_SENTENCES)))):
            return record
    with tempfile.TemporaryDirectory(dir=work_dir / "tmp") as raw:
        try:
            raws = synthesise_raw(voice, SHARED_SENTENCES, Path(raw),
                                  Path(espeak_data) if espeak_data else None)
            clips = [postprocess(p) for p in raws]
        except CorpusError as error:
            # Not cached: a failure may be passing (a timeout on a busy machine); retry on resume.
            return {"voice": voice.describe(), "rejected": f"synthesis failed: {error}"}
    durations = [round(len(c) / SAMPLE_RATE, 3) for c in clips]
    record = {"voice": voice.describe(), "durations": durations}
    if not all(duration_ok(c) for c in clips):
        record["rejected"] = f"shared sentences last {durations} s, outside {MIN_SECONDS}-{MAX_SECONDS} s"
    else:
        description = describe_audio(clips)
        record["description"] = description
        if description["pitch_median_st"] is None:
            record["rejected"] = "too few voiced frames to measure pitch"
        else:
            for i, clip in enumerate(clips):
                write_wav_atomic(probe_dir / f"sa{i + 1}.wav", clip)
            words = sum(word_count(s) for s in SHARED_SENTENCES)
            record["seconds_per_word"] = round(
                (sum(durations) - 2 * EDGE_SILENCE_SECONDS * len(clips)) / words, 4)
    _atomic_write_text(record_path, json.dumps(record))
    return record


def _utterance_ids(utterances: int) -> list[str]:
    return [f"u{i:03d}" for i in range(utterances)]


def _word_range(seconds_per_word: float) -> tuple[int, int]:
    speech_min = MIN_SECONDS + 0.35 - 2 * EDGE_SILENCE_SECONDS
    speech_max = MAX_SECONDS - 0.45 - 2 * EDGE_SILENCE_SECONDS
    low = max(3, math.ceil(speech_min / seconds_per_word))
    high = max(low, math.floor(speech_max / seconds_per_word))
    return low, high


def _speaker_worker(voice: Voice, out: str, work: str, espeak_data: str | None, seed: int,
                    utterances: int, seconds_per_word: float) -> dict:
    """Synthesise all missing utterances of one speaker; returns how many were (re)made."""
    out_dir, work_dir = Path(out), Path(work)
    speaker_dir = out_dir / voice.speaker
    record_dir = work_dir / "utterances" / voice.speaker
    ids = _utterance_ids(utterances)
    made = 0
    # The shared sentences were already recorded by the probe.
    for i in range(min(len(SHARED_SENTENCES), utterances)):
        wav, record = speaker_dir / f"{ids[i]}.wav", record_dir / f"{ids[i]}.json"
        if wav.is_file() and record.is_file():
            continue
        audio, _ = sf.read(str(work_dir / "probes" / voice.speaker / f"sa{i + 1}.wav"),
                           dtype="float32")
        write_wav_atomic(wav, audio)
        _atomic_write_text(record, json.dumps({"text": SHARED_SENTENCES[i], "attempt": 0,
                                               "seconds": round(len(audio) / SAMPLE_RATE, 3)}))
        made += 1
    pending = {i: 0 for i in range(len(SHARED_SENTENCES), utterances)
               if not ((speaker_dir / f"{ids[i]}.wav").is_file()
                       and (record_dir / f"{ids[i]}.json").is_file())}
    low, high = _word_range(seconds_per_word)
    bounds = {i: [low, high] for i in pending}
    while pending:
        order = sorted(pending)
        texts = [sentence_for(seed, voice.speaker, i, pending[i], *bounds[i]) for i in order]
        with tempfile.TemporaryDirectory(dir=work_dir / "tmp") as raw:
            raws = synthesise_raw(voice, texts, Path(raw), Path(espeak_data) if espeak_data else None)
            for i, text, raw_path in zip(order, texts, raws):
                audio = postprocess(raw_path)
                seconds = len(audio) / SAMPLE_RATE
                if duration_ok(audio):
                    write_wav_atomic(speaker_dir / f"{ids[i]}.wav", audio)
                    _atomic_write_text(record_dir / f"{ids[i]}.json", json.dumps(
                        {"text": text, "attempt": pending[i], "seconds": round(seconds, 3)}))
                    made += 1
                    del pending[i]
                    continue
                pending[i] += 1
                if pending[i] >= MAX_ATTEMPTS:
                    raise CorpusError(f"{voice.describe()}: no sentence for {ids[i]} lasted "
                                      f"{MIN_SECONDS}-{MAX_SECONDS} s after {MAX_ATTEMPTS} attempts")
                # Steer the next sentence's length towards the range.
                if seconds < MIN_SECONDS:
                    bounds[i][0] += 1
                    bounds[i][1] = max(bounds[i][1], bounds[i][0])
                else:
                    bounds[i][1] = max(2, bounds[i][1] - 1)
                    bounds[i][0] = min(bounds[i][0], bounds[i][1])
    return {"speaker": voice.speaker, "made": made}


# ----------------------------------------------------------------------------------------------
# Splits and the build

def assign_splits(voices, seed: int) -> dict[str, str]:
    """Split by speaker, balanced across genders: test >= 16 and dev >= 8 speakers for big corpora."""
    n = len(voices)
    if n < 3:
        raise CorpusError(f"need at least 3 speakers for train/dev/test splits, got {n}")
    if n >= 48:
        n_test, n_dev = max(16, round(0.2 * n)), max(8, round(0.1 * n))
    else:
        n_test, n_dev = max(1, round(0.2 * n)), max(1, round(0.1 * n))
    rng = random.Random(f"split:{seed}")
    groups = {}
    for voice in sorted(voices, key=lambda v: v.speaker):
        groups.setdefault(voice.gender, []).append(voice.speaker)
    for members in groups.values():
        rng.shuffle(members)
    interleaved = []
    queues = [groups[g] for g in sorted(groups)]
    while any(queues):
        for queue in queues:
            if queue:
                interleaved.append(queue.pop(0))
    splits = {}
    for position, speaker in enumerate(interleaved):
        splits[speaker] = "test" if position < n_test else "dev" if position < n_test + n_dev else "train"
    return splits


@dataclass
class BuildConfig:
    speakers: int = 80
    utterances: int = 40
    seed: int = 0
    engines: tuple = ENGINES
    generated: int = 120
    stock: bool = True
    threshold: float = DEFAULT_THRESHOLD

    def key(self) -> dict:
        d = asdict(self)
        d["engines"] = list(self.engines)
        d["format_version"] = FORMAT_VERSION
        return d


def _clean_stray_temporaries(out: Path) -> int:
    removed = 0
    for path in list(out.glob("*/.*.tmp")) + list(out.glob(".work/**/.*.tmp")):
        path.unlink(missing_ok=True)
        removed += 1
    tmp_dir = out / ".work" / "tmp"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    return removed


def _progress(iterable, total, desc, enabled):
    """A tqdm bar over iterable (or a manual one when iterable is None); None/iterable if disabled."""
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit="voice", file=sys.stderr)


def build_corpus(out, config: BuildConfig = BuildConfig(), jobs: int | None = None,
                 candidates: list[Voice] | None = None, progress: bool = True) -> dict:
    """Build (or finish) the corpus in OUT; returns the summary that is also written to summary.json."""
    started = time.time()
    out = Path(out)
    if config.utterances < len(SHARED_SENTENCES):
        raise CorpusError(f"--utterances must be >= {len(SHARED_SENTENCES)} (the shared sentences)")
    if config.speakers < 3:
        raise CorpusError("--speakers must be >= 3 (train, dev and test need one each)")
    jobs = jobs or os.cpu_count() or 1
    if candidates is None:
        check_engines(config.engines)
        candidates = candidate_voices(config.seed, config.engines, config.generated, config.stock)
    else:
        check_engines(sorted({v.engine for v in candidates}))
    if len({v.speaker for v in candidates}) != len(candidates):
        # Equal voices under different ids are fine (the distinctness check rejects them); equal ids
        # would share a directory.
        raise CorpusError("candidate speaker ids are not unique")

    out.mkdir(parents=True, exist_ok=True)
    work = out / ".work"
    work.mkdir(exist_ok=True)
    config_key = dict(config.key(), candidates=[v.describe() for v in candidates])
    config_path = work / "config.json"
    if config_path.is_file():
        previous = json.loads(config_path.read_text())
        if previous != config_key:
            raise CorpusError(f"{out} holds a build with other settings; use a new directory "
                              f"or delete it")
    else:
        _atomic_write_text(config_path, json.dumps(config_key, indent=1))
    stray = _clean_stray_temporaries(out)
    (work / "tmp").mkdir()

    espeak_data = None
    if any(v.engine == "espeak-ng" for v in candidates):
        espeak_data = str(prepare_espeak_data(work, candidates))

    # 1. Probe candidates, in priority order and in chunks, until enough distinct voices are found.
    # Greedy selection over a prefix gives the same voices as over the whole pool once it has
    # `speakers` of them, so stopping early changes nothing but the time.
    probe_started = time.time()
    records: dict[int, dict] = {}
    kept, rejected_local, usable = [], {}, []
    bar = _progress(None, len(candidates), "probing voices", progress)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        next_index = 0
        while next_index < len(candidates):
            chunk = max(4 * jobs, int(1.5 * (config.speakers - len(kept))))
            indices = range(next_index, min(len(candidates), next_index + chunk))
            next_index = indices.stop
            futures = {pool.submit(_probe_worker, candidates[i], str(work), espeak_data): i
                       for i in indices}
            for future in as_completed(futures):
                records[futures[future]] = future.result()
                if bar is not None:
                    bar.update(1)
            usable = [i for i in range(next_index) if "rejected" not in records[i]]
            kept_local, rejected_local = select_distinct(
                [records[i]["description"] for i in usable], config.speakers, config.threshold)
            kept = [usable[k] for k in kept_local]
            if len(kept) >= config.speakers:
                break
    if bar is not None:
        bar.close()
    probe_seconds = time.time() - probe_started
    if len(kept) < config.speakers:
        raise CorpusError(f"only {len(kept)} of {len(candidates)} candidate voices are distinct "
                          f"(threshold {config.threshold}); wanted {config.speakers}: raise "
                          f"--candidates or lower --speakers")
    voices = [candidates[i] for i in kept]

    # 2. Synthesise every kept speaker's sentences.
    synth_started = time.time()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_speaker_worker, v, str(out), str(work), espeak_data, config.seed,
                               config.utterances, records[i]["seconds_per_word"])
                   for v, i in zip(voices, kept)]
        made = 0
        for future in _progress(as_completed(futures), len(futures), "synthesising speakers",
                                progress):
            made += future.result()["made"]
    synth_seconds = time.time() - synth_started
    shutil.rmtree(work / "tmp", ignore_errors=True)

    # 3. Metadata and summary, each written atomically at the end.
    splits = assign_splits(voices, config.seed)
    rows, seconds = [], []
    ids = _utterance_ids(config.utterances)
    for voice in sorted(voices, key=lambda v: v.speaker):
        for utterance in ids:
            record = json.loads((work / "utterances" / voice.speaker / f"{utterance}.json").read_text())
            rows.append({"speaker": voice.speaker, "utterance": utterance,
                         "path": f"{voice.speaker}/{utterance}.wav", "text": record["text"],
                         "engine": voice.engine, "voice": voice.describe(), "gender": voice.gender,
                         "split": splits[voice.speaker]})
            seconds.append(record["seconds"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METADATA_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write_text(out / "metadata.csv", buffer.getvalue())

    kept_descriptions = [records[i]["description"] for i in kept]
    pairwise = pairwise_distances(kept_descriptions)
    rejected_summary = []
    for local, (nearest, distance) in sorted(rejected_local.items()):
        rejected_summary.append({"voice": candidates[usable[local]].speaker,
                                 "nearest": candidates[usable[nearest]].speaker,
                                 "distance": round(distance, 4)})
    for i in sorted(records):
        if "rejected" in records[i]:
            rejected_summary.append({"voice": candidates[i].speaker, "reason": records[i]["rejected"]})
    seconds_arr = np.asarray(seconds)
    summary = {
        "format_version": FORMAT_VERSION,
        "sample_rate": SAMPLE_RATE,
        "config": config.key(),
        "speakers": len(voices),
        "utterances_per_speaker": config.utterances,
        "files": len(rows),
        "hours": round(float(seconds_arr.sum()) / 3600, 4),
        "seconds": {"min": round(float(seconds_arr.min()), 3),
                    "median": round(float(np.median(seconds_arr)), 3),
                    "max": round(float(seconds_arr.max()), 3)},
        "speakers_per_engine": {e: sum(v.engine == e for v in voices) for e in ENGINES},
        "speakers_per_gender": {g: sum(v.gender == g for v in voices) for g in ("m", "f", "unknown")},
        "splits": {s: sorted(k for k, v in splits.items() if v == s) for s in ("train", "dev", "test")},
        "split_sizes": {s: sum(v == s for v in splits.values()) for s in ("train", "dev", "test")},
        "shared_sentences": {ids[i]: SHARED_SENTENCES[i] for i in range(len(SHARED_SENTENCES))},
        "vocabulary_size": vocabulary_size(),
        "distinctness": {
            "method": ("each candidate reads the shared sentences; description = long-term average "
                       "log mel spectrum (40 bands, 60-7600 Hz, level removed, dB) + YIN pitch median "
                       "and interquartile range in semitones (loud, pitch-stable frames); distance = "
                       f"sqrt((envelope RMS dB / {ENVELOPE_SCALE_DB})^2 + (median pitch st / "
                       f"{PITCH_SCALE_ST})^2 + (pitch IQR st / {SPREAD_SCALE_ST})^2); greedy over the "
                       "candidates in priority order (flite, festival, then a seeded mix of espeak-ng "
                       "stock and generated variants), keeping a voice iff its distance to every kept "
                       "voice >= threshold"),
            "threshold": config.threshold,
            "candidates": len(candidates),
            "probed": len(records),
            "usable_probed": len(usable),
            "kept": len(voices),
            "kept_min_pairwise": round(float(pairwise.min()), 4) if len(pairwise) else None,
            "kept_median_pairwise": round(float(np.median(pairwise)), 4) if len(pairwise) else None,
            "rejected": rejected_summary,
        },
        "voices": {v.speaker: {"engine": v.engine, "voice": v.describe(), "gender": v.gender,
                               "split": splits[v.speaker], "description": records[i]["description"]}
                   for v, i in zip(voices, kept)},
        "build": {"jobs": jobs, "files_made_this_run": made, "stray_temporaries_removed": stray,
                  "probe_seconds": round(probe_seconds, 1), "synthesis_seconds": round(synth_seconds, 1),
                  "wall_seconds": round(time.time() - started, 1)},
    }
    _atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary
