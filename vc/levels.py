"""Levels and speech: how loud a frame or a stretch of audio is, and whether it holds speech.

Every stage that asks "is this speech?" asks it here, with one rule: the level is above SILENCE_DBFS and
within SPEECH_RANGE_DB of the loudest level of the same recording (of the stream so far, when streaming),
so room noise in a quiet recording does not count either. The pitch tracker's voicing gate takes a wider
range (VOICING_RANGE_DB): a quiet voiced consonant still has a pitch worth following.
"""

from __future__ import annotations

import functools
import math

import numpy as np

SILENCE_DBFS = -50.0      # below this nothing is speech, and the engine's noise gate closes by default
SPEECH_RANGE_DB = 35.0    # speech lies within this many dB of the loudest frame or segment
VOICING_RANGE_DB = 40.0   # the pitch tracker's frames, within this many dB of the loudest, may be voiced


def is_speech(levels_db, loudest_db: float) -> np.ndarray:
    """Levels (dBFS) -> True where they hold speech, judged against the loudest level of the recording."""
    levels_db = np.asarray(levels_db)
    return (levels_db > SILENCE_DBFS) & (levels_db > loudest_db - SPEECH_RANGE_DB)


def may_be_voiced(levels_db: np.ndarray, loudest_db) -> np.ndarray:
    """The pitch tracker's gate: levels (dBFS) loud enough to carry a pitch. `loudest_db` may be a running
    peak per frame."""
    return (levels_db > SILENCE_DBFS) & (levels_db > loudest_db - VOICING_RANGE_DB)


def power_db(mean_square) -> np.ndarray:
    """Mean square (full scale 1) -> dBFS, with silence floored at -200 dB."""
    return 10.0 * np.log10(np.maximum(mean_square, 1e-20))


@functools.lru_cache(maxsize=8)
def window_energy(window: str, win_length: int) -> float:
    """Sum of the squared analysis window (periodic, as vc.dsp builds it)."""
    phase = 2.0 * np.pi * np.arange(win_length) / win_length
    shapes = {"hann": 0.5 - 0.5 * np.cos(phase), "hamming": 0.54 - 0.46 * np.cos(phase),
              "blackman": 0.42 - 0.5 * np.cos(phase) + 0.08 * np.cos(2 * phase), "boxcar": np.ones(win_length)}
    if window not in shapes:
        raise ValueError(f"frame levels: unknown analysis window {window!r}")
    return float(np.sum(shapes[window] ** 2))


def frame_power(frames: np.ndarray, cfg) -> np.ndarray:
    """Raw log-magnitude frames (..., n_features) -> each frame's windowed mean square (Parseval)."""
    power = np.exp(2.0 * frames.astype(np.float64))
    first = int(cfg.drop_dc)
    weights = np.full(frames.shape[-1], 2.0)
    nyquist = cfg.n_fft // 2 - first  # the Nyquist bin (even n_fft) appears once in the full spectrum
    if cfg.n_fft % 2 == 0 and 0 <= nyquist < frames.shape[-1]:
        weights[nyquist] = 1.0
    return (power @ weights) / (cfg.n_fft * window_energy(cfg.window, cfg.win_length))


def frame_level_db(frames: np.ndarray, cfg) -> np.ndarray:
    """Raw log-magnitude frames (..., n_features) -> each frame's windowed RMS level in dBFS."""
    return power_db(frame_power(frames, cfg))


def speech_frame_flags(frames: np.ndarray, cfg) -> np.ndarray:
    """A recording's raw frames (T, n_features) -> True for its speech frames."""
    levels = frame_level_db(frames, cfg)
    return is_speech(levels, float(levels.max()))


def speech_segment_flags(audio: np.ndarray, *, segment_samples: int, n_fft: int) -> np.ndarray:
    """Mono audio -> one flag per whole segment of `segment_samples` (segment k holds samples k*S to
    k*S + S - 1): True where its RMS level holds speech. A partial tail is not a segment; audio shorter
    than one STFT frame has none."""
    n_seg = audio.shape[0] // segment_samples
    if n_seg == 0 or audio.shape[0] < n_fft:
        return np.zeros(0, bool)
    blocks = audio[: n_seg * segment_samples].reshape(n_seg, segment_samples).astype(np.float64)
    levels = power_db(np.mean(blocks ** 2, axis=1))
    return is_speech(levels, float(levels.max()))


class RunningSpeech:
    """`is_speech` for a stream: each level is judged against the loudest one so far, itself included."""

    def __init__(self):
        self.loudest_db = -math.inf

    def update(self, levels_db) -> np.ndarray:
        levels_db = np.asarray(levels_db, np.float64)
        if levels_db.size:
            self.loudest_db = max(self.loudest_db, float(levels_db.max()))
        return is_speech(levels_db, self.loudest_db)
