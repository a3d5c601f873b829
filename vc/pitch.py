"""Pitch: track F0, move it to another voice's register, and rebuild the harmonics the DSAE cannot.

The decoder returns the conditional mean of a log-magnitude frame given (f, z). Where the harmonics fall
depends on the exact F0, which z is trained to forget (the voice-change invariance) and f cannot know, so
the mean is the smooth spectral envelope: Griffin-Lim turns it into breathy, pitchless speech. A converted
voice therefore needs its fine structure back. It is rebuilt from the source's own F0 contour, keeping
the intonation (what is said) and moving its mean and spread of log F0 to the target's (who says it), as
classic voice conversion does. The target's register is measured at enrolment and kept in speaker.npy
(`vc.speakers`); f alone predicts it poorly (about a quarter of an octave off on held-out speakers), as the
decoder never needed to know it.

F0 tracking is YIN (de Cheveigné & Kawahara 2002): the cumulative-mean-normalised difference function,
first dip under a threshold, parabolic refinement, on frames centred like the STFT's so F0 frame t belongs
to feature frame t.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vc.levels import may_be_voiced, power_db

FMIN = 60.0
FMAX = 450.0
THRESHOLD = 0.25       # YIN's absolute threshold on the normalised difference
MIN_VOICED_RUN = 3     # shorter voiced runs are tracking noise (10 ms frames)
FRAMES_PER_BLOCK = 2048  # frames analysed at once: memory stays near 60 MB for files of any length


def _geometry(sr: int, fmin: float, fmax: float, frame_length: int | None) -> tuple[int, int, int, int]:
    """(min_lag, max_lag, width, span): lags searched, the integration window, samples one frame reads."""
    if not 0 < fmin < fmax < sr / 2:
        raise ValueError(f"yin: need 0 < fmin < fmax < sr/2, got fmin={fmin}, fmax={fmax}, sr={sr}")
    min_lag = max(2, int(np.floor(sr / fmax)))
    max_lag = int(np.ceil(sr / fmin))
    width = frame_length or 2 * max_lag        # integration window: two periods of the lowest voice
    return min_lag, max_lag, width, width + max_lag + 1


def yin_periodicity(y: np.ndarray, sr: int, hop_length: int, fmin: float = FMIN, fmax: float = FMAX,
                    frame_length: int | None = None, threshold: float = THRESHOLD):
    """YIN per frame, before any voicing decision: (F0 in Hz, aperiodicity (the normalised difference at the
    chosen period: near 0 for periodic frames), level in dBFS of the integration window). Frames are
    centred at t * hop_length like a centred STFT (1 + len(y) // hop_length frames). This is the project's
    one YIN: `yin` decides voicing from it, the corpus synthesiser describes its voices with it."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"yin: expected a mono signal, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("yin: the signal contains NaN or infinity")
    min_lag, max_lag, width, span = _geometry(sr, fmin, fmax, frame_length)
    n_frames = 1 + y.shape[0] // hop_length
    padded = np.pad(y, (span // 2, span))
    period = np.empty(n_frames)
    dip = np.empty(n_frames)
    energy = np.empty(n_frames)
    for first in range(0, n_frames, FRAMES_PER_BLOCK):
        starts = np.arange(first, min(first + FRAMES_PER_BLOCK, n_frames)) * hop_length
        frames = padded[starts[:, None] + np.arange(span)[None, :]]
        block = slice(first, first + starts.shape[0])
        period[block], dip[block], energy[block] = _yin_frames(frames, width, min_lag, max_lag, threshold)
    return sr / period, dip, power_db(energy / width)


def yin(y: np.ndarray, sr: int, hop_length: int, fmin: float = FMIN, fmax: float = FMAX,
        frame_length: int | None = None, threshold: float = THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """F0 in Hz and a voiced flag per frame, frames centred at t * hop_length like a centred STFT
    (1 + len(y) // hop_length frames). Unvoiced frames have F0 0."""
    f0, dip, level = yin_periodicity(y, sr, hop_length, fmin, fmax, frame_length, threshold)
    loud = may_be_voiced(level, level.max())
    voiced = _drop_short_runs((dip < threshold) & loud, MIN_VOICED_RUN)
    return _median_within_runs(np.where(voiced, f0, 0.0), voiced), voiced


def _yin_frames(frames: np.ndarray, width: int, min_lag: int, max_lag: int, threshold: float):
    """(n, span) frames -> period in samples, the normalised difference at it, energy of the first `width`."""
    n_frames, span = frames.shape
    # d(tau) = sum_j (x_j - x_{j+tau})^2 over j < width, from an FFT cross-correlation and running energies;
    # j + tau < span for every lag used, so a circular correlation of length >= span has no wrap-around.
    n = 1 << int(np.ceil(np.log2(span)))
    spectrum_all = np.fft.rfft(frames, n)
    spectrum_head = np.fft.rfft(frames[:, :width], n)
    corr = np.fft.irfft(spectrum_all * np.conj(spectrum_head), n)[:, : max_lag + 1]
    sq = np.concatenate([np.zeros((n_frames, 1)), np.cumsum(frames ** 2, axis=1)], axis=1)
    energy_head = sq[:, width]
    lags = np.arange(max_lag + 1)
    energy_shifted = sq[:, lags + width] - sq[:, lags]
    diff = np.maximum(energy_head[:, None] + energy_shifted - 2.0 * corr, 0.0)
    cumulative = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] * lags[1:] / np.maximum(cumulative, 1e-12)

    # first dip under the threshold, followed down to its bottom (the first point not above its successor;
    # points on the way down stay under the threshold), else the global minimum
    search = cmnd[:, min_lag:max_lag]
    bottom = np.ones_like(search, dtype=bool)
    bottom[:, :-1] = search[:, :-1] <= search[:, 1:]
    candidates = (search < threshold) & bottom
    tau = np.where(candidates.any(axis=1), candidates.argmax(axis=1), search.argmin(axis=1))
    rows = np.arange(n_frames)
    best = search[rows, tau]
    lag = tau + min_lag
    left = cmnd[rows, np.maximum(lag - 1, 1)]
    right = cmnd[rows, np.minimum(lag + 1, max_lag)]
    curvature = left - 2.0 * best + right
    shift = np.where(curvature > 1e-12, 0.5 * (left - right) / np.maximum(curvature, 1e-12), 0.0)
    return lag + np.clip(shift, -1.0, 1.0), best, energy_head


def _median_within_runs(f0: np.ndarray, voiced: np.ndarray, width: int = 5) -> np.ndarray:
    """Median of log F0 over `width` frames, voiced neighbours only: removes single-frame octave slips."""
    logs = np.where(voiced, np.log(np.where(voiced, f0, 1.0)), np.nan)
    half = width // 2
    padded = np.pad(logs, half, constant_values=np.nan)
    rows = np.flatnonzero(voiced)
    out = np.zeros_like(f0)
    if rows.size:
        # np.nanmedian, written out: a sort puts the NaNs last, the median of the n valid values follows.
        windows = np.sort(padded[rows[:, None] + np.arange(width)[None, :]], axis=1)
        n = np.sum(~np.isnan(windows), axis=1)
        lower = windows[np.arange(rows.size), (n - 1) // 2]
        upper = windows[np.arange(rows.size), n // 2]
        out[rows] = np.exp(0.5 * (lower + upper))
    return out


def _drop_short_runs(flags: np.ndarray, min_run: int, open_end: bool = False) -> np.ndarray:
    """Clear voiced runs shorter than min_run. open_end: the signal goes on after the last flag, so a run
    that reaches it may still grow and is kept."""
    flags = flags.copy()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2]):
        if stop - start < min_run and not (open_end and stop == flags.shape[0]):
            flags[start:stop] = False
    return flags


@dataclass(frozen=True)
class Register:
    """A voice's pitch register: mean and standard deviation of natural-log F0 over voiced frames."""

    log_mean: float
    log_std: float

    @classmethod
    def of(cls, f0: np.ndarray, voiced: np.ndarray, min_frames: int = 10) -> "Register | None":
        """None when too few frames are voiced to say."""
        logs = np.log(f0[voiced])
        if logs.size < min_frames:
            return None
        return cls(float(np.median(logs)), float(max(np.std(logs), 0.02)))


def transpose(f0: np.ndarray, voiced: np.ndarray, source: Register, target: Register) -> np.ndarray:
    """Keep the contour, move its mean and spread of log F0 from the source's register to the target's."""
    out = np.zeros_like(f0)
    logs = np.log(f0[voiced])
    out[voiced] = np.exp(target.log_mean + (logs - source.log_mean) * (target.log_std / source.log_std))
    return out


SPLIT_BINS = 9   # the envelope / fine structure split: wider than the harmonic spacing of low voices


def smooth_across_frequency(frames: np.ndarray, bins: int = SPLIT_BINS) -> np.ndarray:
    """(T, D) log-magnitude -> its envelope: a Hann-weighted moving average across `bins` frequency bins
    (by default the split every fine structure is cut with, the same as training.augment's)."""
    return (np.asarray(frames, np.float32) @ _smoothing_matrix(frames.shape[1], bins)).astype(np.float32)


@lru_cache(maxsize=8)
def _analysis_window(window: str, n_fft: int, win_length: int) -> np.ndarray:
    from vc.dsp import _padded_window

    return _padded_window(window, n_fft, win_length).astype(np.float32)


@lru_cache(maxsize=8)
def _smoothing_matrix(n_bins: int, bins: int) -> np.ndarray:
    """The moving average as one (n_bins, n_bins) matrix: a stream smooths a few frames at a time, where a
    loop over the kernel's taps would cost more than the arithmetic. Edge bins repeat past the ends."""
    kernel = np.hanning(bins + 2)[1:-1]
    kernel /= kernel.sum()
    half = bins // 2
    matrix = np.zeros((n_bins, n_bins), np.float64)
    columns = np.arange(n_bins)
    for k, weight in enumerate(kernel):
        np.add.at(matrix, (np.clip(columns + k - half, 0, n_bins - 1), columns), weight)
    return matrix.astype(np.float32)


def harmonic_fine_structure(f0: np.ndarray, voiced: np.ndarray, cfg, phase: float = 0.0) -> tuple[np.ndarray, float]:
    """(T, cfg.n_features) log-magnitude fine structure of a pulse train that follows `f0`: the harmonic
    peaks and valleys around a zero envelope, zero in unvoiced frames; and the pulse train's phase (in
    cycles) at the frame after the last, to continue it.

    Each frame is the model's window over pulses at that frame's own F0, placed from the phase at its
    centre: frame t needs nothing after F0[t], so a stream can build frames as soon as their F0 is known
    and gets the same frames, cut anywhere, as one call over the whole signal."""
    T = f0.shape[0]
    hz = np.where(voiced, f0, 0.0).astype(np.float64)
    step = hz * (cfg.hop_length / cfg.sr)                    # cycles from one frame centre to the next
    centre_phase = phase + np.concatenate([[0.0], np.cumsum(step)[:-1]])
    offsets = np.arange(cfg.n_fft) - cfg.n_fft // 2           # window samples around the centre
    cycles = centre_phase[:, None] + offsets[None, :] * (hz[:, None] / cfg.sr)
    whole = np.floor(cycles)
    pulses = np.zeros((T, cfg.n_fft), np.float32)
    pulses[:, 1:] = whole[:, 1:] > whole[:, :-1]              # a pulse where a new cycle starts
    window = _analysis_window(cfg.window, cfg.n_fft, cfg.win_length)
    magnitude = np.abs(np.fft.rfft(pulses * window, axis=1))
    spectrum = np.log(np.maximum(magnitude, cfg.log_floor)).astype(np.float32)[:, int(cfg.drop_dc):]
    fine = spectrum - smooth_across_frequency(spectrum)
    fine[~voiced] = 0.0
    next_phase = float(phase + step.sum()) % 1.0 if T else float(phase)
    return fine, next_phase
