"""Is a candidate voice a new speaker? A description of how it sounds and a distance between two.

Every candidate voice reads the two shared sentences; a long-term average spectral envelope plus pitch
statistics describe it, and a candidate is kept only when it is at least `threshold` away from every
voice already kept (greedy, in a fixed priority order: `select_distinct`).
"""
from __future__ import annotations

import math

import numpy as np

from vc.pitch import yin

SAMPLE_RATE = 16000
# YIN's voicing threshold for the pitch statistics: vc.pitch's default (0.25) leaves a few breathy
# generated voices with too few voiced frames to describe; 0.35 is close to the aperiodicity limit the
# descriptions were first calibrated with.
PITCH_THRESHOLD = 0.35

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


def frame_db(y: np.ndarray, frame: int, hop: int) -> np.ndarray:
    if len(y) < frame:
        y = np.pad(y, (0, frame - len(y)))
    frames = np.lib.stride_tricks.sliding_window_view(y, frame)[::hop]
    power = np.mean(frames.astype(np.float64) ** 2, axis=1)
    return 10.0 * np.log10(power + 1e-12)


# ----------------------------------------------------------------------------------------------
# Voice description and the distinctness check

def _voiced_pitch(y: np.ndarray) -> np.ndarray:
    """F0 (Hz) of the voiced frames, by the one YIN of the project (vc.pitch): loud, periodic frames,
    short runs dropped, octave jumps smoothed within runs."""
    f0, voiced = yin(y, SAMPLE_RATE, hop_length=160, fmin=50.0, fmax=500.0, threshold=PITCH_THRESHOLD)
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
