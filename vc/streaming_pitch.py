"""Pitch for a stream: YIN block by block (`StreamingPitch`) and the speaker's running register
(`RunningRegister`), for the streaming engine (`vc.engine`), which cannot see the whole file.

`StreamingPitch` analyses exactly the frames `vc.pitch.yin` analyses, with the same numbers (the same
YIN core, `vc.pitch._yin_frames`, on the same sample spans), as soon as
their last sample arrives: frame t reads the signal up to sample t*hop_length + span - span//2 - 1, which
is `latency_samples` after its centre (25 ms at 16 kHz with the default 60 Hz floor, 12.5 ms more than
the STFT's half window). Three decisions of the whole-file tracker look further:
- the loudness floor is 40 dB under the loudest frame of the file; here, of the frames so far, with the
  peak decaying by `PEAK_DECAY_DB_PER_S` so one loud bang does not mute quiet speech for good;
- voiced runs shorter than 3 frames are dropped, and F0 is the median over 5 voiced neighbours: `take(n)`
  decides its n frames seeing `lookahead_frames` frames beyond the last of them (and never more, so the
  answer does not depend on how the signal was cut into blocks); the newest frames of a take see fewer
  neighbours than the whole-file tracker does, frames further back get its exact answer. With
  `lookahead_frames` >= WHOLE_FILE_REACH every frame does, at 10 ms of latency per frame, unless the
  frames wait that long anyway (`held_lookahead`).
"""
from __future__ import annotations

import math

import numpy as np

from vc.levels import may_be_voiced, power_db
from vc.pitch import (FMAX, FMIN, MIN_VOICED_RUN, THRESHOLD, Register,
                      _drop_short_runs, _geometry, _median_within_runs, _yin_frames)

PEAK_DECAY_DB_PER_S = 1.0
HISTORY_FRAMES = 8     # frames kept behind the next one to hand out: runs and medians look 2 back
WHOLE_FILE_REACH = 4   # look-ahead (frames) past which `take` gives the whole-file tracker's answers


def held_lookahead(held_frames: int, hop_length: int, beyond_stft_samples: int) -> int:
    """The look-ahead a tracker gets for nothing when each frame is used `held_frames` frames after the
    STFT completes it (a streaming cross-fade holds frames that long): as much as fits in the wait beyond
    the tracker's own reach past the STFT's, up to WHOLE_FILE_REACH."""
    spare = held_frames - math.ceil(max(0, beyond_stft_samples) / hop_length)
    return min(WHOLE_FILE_REACH, max(0, spare))


class StreamingPitch:
    """push(samples) in any block sizes; take(n) -> (f0, voiced) of the next n frames (n <= ready)."""

    def __init__(self, sr: int, hop_length: int, *, fmin: float = FMIN, fmax: float = FMAX,
                 threshold: float = THRESHOLD, lookahead_frames: int = 0):
        self.sr, self.hop_length, self.threshold = int(sr), int(hop_length), float(threshold)
        self.lookahead_frames = int(lookahead_frames)
        self.min_lag, self.max_lag, self.width, self.span = _geometry(sr, fmin, fmax, None)
        self._decay_per_frame = PEAK_DECAY_DB_PER_S * hop_length / sr
        self.reset()

    @property
    def latency_samples(self) -> int:
        """Samples needed after a frame's centre before `take` can hand it out."""
        return self.span - self.span // 2 + self.lookahead_frames * self.hop_length

    @property
    def ready(self) -> int:
        """Frames `take` can hand out now."""
        return max(0, self._n_complete - self.lookahead_frames - self._n_taken)

    @property
    def _n_complete(self) -> int:
        """Frames whose samples have all arrived (analysed lazily, a take's worth at once)."""
        return max(0, (self._n_pushed - (self.span - self.span // 2)) // self.hop_length + 1)

    def reset(self) -> None:
        self._buffer = np.zeros(self.span // 2, np.float64)   # the whole-file tracker's left padding
        self._buffer_first = -(self.span // 2)                 # sample index of _buffer[0]
        self._n_pushed = 0
        self._pieces: list[np.ndarray] = []                    # pushed, not yet in _buffer
        self._n_analysed = 0
        self._n_taken = 0
        self._peak_db = -math.inf
        self._history_first = 0                                # frame index of the history's first entry
        self._raw_f0 = np.zeros(0)
        self._raw_voiced = np.zeros(0, bool)
        self.last_f0 = 0.0                                     # F0 of the newest frame taken (0: unvoiced)

    def push(self, samples) -> int:
        """Append samples. Returns `ready`."""
        x = np.asarray(samples, np.float64).reshape(-1)
        self._pieces.append(x)
        self._n_pushed += x.shape[0]
        return self.ready

    def _analyse(self, first: int, stop: int) -> None:
        hop, span = self.hop_length, self.span
        self._buffer = np.concatenate([self._buffer] + self._pieces)
        self._pieces = []
        starts = np.arange(first, stop) * hop - self.span // 2 - self._buffer_first
        frames = self._buffer[starts[:, None] + np.arange(span)[None, :]]
        period, dip, energy = _yin_frames(frames, self.width, self.min_lag, self.max_lag, self.threshold)
        level = power_db(energy / self.width)
        # peak[i] = max(peak before - d*(i+1), max over j <= i of level[j] - d*(i-j)): a decaying maximum
        decay = self._decay_per_frame * np.arange(level.shape[0])
        peak = np.maximum(self._peak_db - decay - self._decay_per_frame,
                          np.maximum.accumulate(level + decay) - decay)
        self._peak_db = float(peak[-1])
        loud = may_be_voiced(level, peak)
        voiced = (dip < self.threshold) & loud
        self._raw_f0 = np.concatenate([self._raw_f0, np.where(voiced, self.sr / period, 0.0)])
        self._raw_voiced = np.concatenate([self._raw_voiced, voiced])
        self._n_analysed = stop
        keep_from = stop * hop - self.span // 2 - self._buffer_first   # the next frame's first sample
        self._buffer = self._buffer[keep_from:]
        self._buffer_first += keep_from

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """F0 (Hz, 0 unvoiced) and voiced flags of the next n frames, final from now on."""
        if not 0 <= n <= self.ready:
            raise ValueError(f"take({n}): only {self.ready} frames are ready")
        if self._n_complete > self._n_analysed:
            self._analyse(self._n_analysed, self._n_complete)
        visible = self._n_taken + n + self.lookahead_frames - self._history_first
        voiced = _drop_short_runs(self._raw_voiced[:visible], MIN_VOICED_RUN, open_end=True)
        raw = np.where(voiced, self._raw_f0[:visible], 0.0)
        f0 = _median_within_runs(raw, voiced)
        # The newest frames lack future neighbours; a median of past ones would lag a moving contour, so
        # they take the median of as many neighbours on each side as there are after them.
        for ahead in range(min(2, visible)):
            t = visible - 1 - ahead
            if voiced[t]:
                near = slice(max(0, t - ahead), t + ahead + 1)
                around = raw[near][voiced[near]]
                f0[t] = np.exp(np.median(np.log(around)))
        lo = self._n_taken - self._history_first
        out_f0, out_voiced = f0[lo:lo + n], voiced[lo:lo + n]
        self._n_taken += n
        if n:
            self.last_f0 = float(out_f0[-1])
        drop = max(0, self._n_taken - HISTORY_FRAMES - self._history_first)
        self._raw_f0, self._raw_voiced = self._raw_f0[drop:], self._raw_voiced[drop:]
        self._history_first += drop
        return out_f0, out_voiced


class RunningRegister:
    """A speaker's pitch register from the voiced frames of the recent past: the median and spread of
    log F0 over the last `capacity` voiced frames (4 s of voicing by default), so it settles within a
    few seconds of speech and follows a new speaker after about half that much of their voicing.

    With few frames the spread is pulled towards `prior_log_std` (`prior_frames` frames' worth): the
    spread of a tenth of a second of voicing says little, and a tiny one would exaggerate the contour when
    it is stretched to the target's spread."""

    def __init__(self, capacity: int = 400, min_frames: int = 10, prior_log_std: float = 0.12,
                 prior_frames: int = 50):
        self.capacity, self.min_frames = int(capacity), int(min_frames)
        self.prior_log_std, self.prior_frames = float(prior_log_std), int(prior_frames)
        self.reset()

    def reset(self) -> None:
        self._logs = np.zeros(self.capacity)
        self._count = 0   # voiced frames seen (the ring holds the newest min(count, capacity))

    def update(self, f0: np.ndarray, voiced: np.ndarray) -> None:
        logs = np.log(f0[voiced])[-self.capacity:]
        slots = (self._count + np.arange(logs.shape[0])) % self.capacity
        self._logs[slots] = logs
        self._count += logs.shape[0]

    @property
    def frames(self) -> int:
        return min(self._count, self.capacity)

    def current(self) -> Register | None:
        """None until `min_frames` voiced frames have been seen."""
        n = self.frames
        if n < self.min_frames:
            return None
        logs = self._logs[:n]
        weight = n / (n + self.prior_frames)
        variance = weight * np.var(logs) + (1.0 - weight) * self.prior_log_std ** 2
        return Register(float(np.median(logs)), float(max(np.sqrt(variance), 0.02)))
