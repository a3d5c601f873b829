"""The source's own excitation at a moved pitch, as the model's STFT would show it.

Stretching a frame's log fine structure along frequency (`vc.exemplars.stretch_along_frequency`) fails for
low voices: a 25 ms window barely resolves their harmonics, so the stretched ripple has peaks wider than
any windowed sinusoid makes, and Griffin-Lim turns it into noise (docs/experiments.md). Here each frame is
analysed again instead: the STFT of the source resampled by the frame's pitch ratio r (y_r(t) = y(r t))
at the same moment. That is the source under a window r times as long, read on an FFT r times as long, so
bin k holds the source at frequency k / r: every harmonic lands where the moved pitch puts it, with the
width of the model's own window. No resampling and no aliasing: nothing above the source's Nyquist is read.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from vc.pitch import smooth_across_frequency

# Ratios are rounded so that the FFT length n_fft * r is a whole number: an error of at most half a bin
# in n_fft * r (0.13 % of the pitch at n_fft 400), far below what anyone hears. Beyond MAX_RATIO the rest
# of the move is a stretch along frequency: the stretched window would read further ahead than a stream's
# pitch tracker already waits for (n_fft samples past the frame's centre), and so would add latency.
MIN_RATIO, MAX_RATIO = 0.5, 2.0


@lru_cache(maxsize=64)
def _stretched_window(window: str, length: int) -> np.ndarray:
    from vc.dsp import _window_samples

    # The model's window over `length` samples instead of win_length: the same shape, r times longer.
    return _window_samples(window, length).astype(np.float64)


def fine_structure_at_ratio(audio: np.ndarray, frames: np.ndarray, ratio: np.ndarray, cfg, *,
                            first_sample: int = 0) -> np.ndarray:
    """The fine structure (log magnitude less its `smooth_across_frequency` envelope, (n, cfg.n_features))
    of the source `audio` pitch-shifted by `ratio` (n,) at STFT frames `frames` (n,) (frame t centred on
    sample t * hop_length, as the model's centred STFT has it; audio[0] is sample `first_sample`, so a
    stream passes only its newest samples). Bins past the source's Nyquist (ratio < 1) are left flat."""
    from vc.exemplars import stretch_along_frequency

    ratio = np.asarray(ratio, np.float64)
    analysed = np.clip(ratio, MIN_RATIO, MAX_RATIO)
    fine = _analysed(np.asarray(audio, np.float32), np.asarray(frames, np.int64), analysed, cfg, first_sample)
    rest = ratio / analysed
    beyond = np.flatnonzero(rest != 1.0)
    if beyond.size:
        fine[beyond] = stretch_along_frequency(fine[beyond], rest[beyond], cfg)
    return fine


def _analysed(audio: np.ndarray, frames: np.ndarray, ratio: np.ndarray, cfg, first_sample: int) -> np.ndarray:
    n_features, first_bin = cfg.n_features, int(cfg.drop_dc)
    out = np.zeros((frames.size, n_features), np.float32)
    if frames.size == 0:
        return out
    sizes = np.maximum(np.rint(cfg.n_fft * ratio).astype(np.int64), 2)
    for size in np.unique(sizes):
        rows = np.flatnonzero(sizes == size)
        length = max(1, int(round(cfg.win_length * size / cfg.n_fft)))
        window = _stretched_window(cfg.window, length)
        start = frames[rows] * cfg.hop_length - length // 2 - first_sample
        index = start[:, None] + np.arange(length)[None, :]
        inside = (index >= 0) & (index < audio.shape[0])
        segments = np.where(inside, audio[np.clip(index, 0, max(audio.shape[0] - 1, 0))], 0.0) * window
        magnitude = np.abs(np.fft.rfft(segments, n=int(size), axis=1))
        usable = min(n_features, magnitude.shape[1] - first_bin)
        logmag = np.full((rows.size, n_features), np.nan, np.float64)
        logmag[:, :usable] = np.log(np.maximum(magnitude[:, first_bin:first_bin + usable], cfg.log_floor))
        if usable < n_features:  # past the source's Nyquist: repeat the last bin, so the ripple is flat there
            logmag[:, usable:] = logmag[:, usable - 1:usable]
        logmag = logmag.astype(np.float32)
        fine = logmag - smooth_across_frequency(logmag)
        if usable < n_features:
            fine[:, usable:] = 0.0
        out[rows] = fine
    return out


class RecentAudio:
    """A stream's newest samples, enough for `fine_structure_at_ratio` of the frames still to come."""

    def __init__(self, cfg):
        self.cfg = cfg
        self._samples = np.zeros(0, np.float32)
        self._first = 0        # stream index of _samples[0]
        # what the longest analysis window reaches back from a frame's centre
        self._reach = int(np.ceil(0.5 * cfg.win_length * MAX_RATIO)) + 1

    def push(self, samples: np.ndarray) -> None:
        self._samples = np.concatenate([self._samples, np.asarray(samples, np.float32)])

    def fine_structure_at_ratio(self, frames: np.ndarray, ratio: np.ndarray) -> np.ndarray:
        """As the module function, `frames` counted from the stream's first frame."""
        return fine_structure_at_ratio(self._samples, frames, ratio, self.cfg, first_sample=self._first)

    def keep_from_frame(self, frame: int) -> None:
        """Forget the samples no analysis of frame `frame` or later reads."""
        drop = int(np.clip(frame * self.cfg.hop_length - self._reach - self._first, 0, self._samples.shape[0]))
        self._samples = self._samples[drop:]
        self._first += drop
