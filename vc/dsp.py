"""Signal processing for the voice converter: the Python face of the C++ kernel `vc._dsp`.

Parameter names follow librosa (n_fft, hop_length, win_length, window, center, n_iter, momentum).
Spectrograms are (bins, frames) like librosa's; the kernel works frame-major, so the arrays returned
here are transposed views (Fortran-ordered), which numpy treats like any other array.

As in librosa, the signal (or spectrogram) is the one positional argument; every parameter after it is
keyword-only: `stft(y, n_fft=512, hop_length=128)`.

Every function accepts float32 or float64 input of any memory layout and raises ValueError with a
one-line message for empty input, NaN/inf, values beyond +-1e30 (`MAX_VALUE`: beyond it float32 transforms
overflow), a wrong number of dimensions, or a signal shorter than one frame (n_fft samples); streaming
pushes may be short or empty. The range checks of parameters and values (n_fft even, hop_length positive,
log_floor, n_iter, momentum, look-ahead, finite values) are the kernel's own (csrc/checks.hpp), made by its
constructors and entry points; this module checks only types and what the kernel never sees (win_length,
window names). The kernels release the GIL and may be called from several threads at once; a streaming
object serialises calls on itself.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import lru_cache

import numpy as np

try:
    from vc import _dsp
except ImportError as exc:  # the C++ extension is built in place, not shipped prebuilt
    raise ImportError("the DSP kernel vc._dsp is not built: run `python setup.py build_ext --inplace` "
                      f"(or tools/setup.sh) in the repository ({exc})") from exc

__all__ = [
    "FeatureConfig", "stft", "istft", "log_magnitude", "magnitude_from_features",
    "griffinlim", "pghi", "spectral_convergence_db", "StreamingLogMagnitude", "StreamingGriffinLim",
]

WINDOWS = ("hann", "hamming", "blackman", "boxcar")
MAX_VALUE = float(_dsp.MAX_VALUE)


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """The model's features: log(max(|STFT|, log_floor)), DC bin dropped when drop_dc."""

    sr: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    win_length: int = 400
    window: str = "hann"
    center: bool = True
    drop_dc: bool = True
    log_floor: float = 1e-5

    def __post_init__(self):
        for name in ("sr", "n_fft", "hop_length", "win_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"FeatureConfig.{name} must be a positive integer, got {value!r}")
        if self.win_length > self.n_fft:
            raise ValueError(f"FeatureConfig.win_length ({self.win_length}) exceeds n_fft ({self.n_fft})")
        if self.window not in WINDOWS:
            raise ValueError(f"FeatureConfig.window must be one of {WINDOWS}, got {self.window!r}")
        for name in ("center", "drop_dc"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"FeatureConfig.{name} must be true or false, got {getattr(self, name)!r}")
        floor = self.log_floor
        if isinstance(floor, bool) or not isinstance(floor, (int, float)):
            raise ValueError(f"FeatureConfig.log_floor must be a number, got {floor!r}")
        try:  # the kernel's rules, so that a config is accepted exactly when the kernel will run it
            _dsp.check_n_fft(self.n_fft)
            _dsp.check_hop_length(self.hop_length)
            _dsp.check_log_floor(float(floor))
        except ValueError as exc:
            raise ValueError(f"FeatureConfig: {exc}") from None
        object.__setattr__(self, "log_floor", float(floor))

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def n_features(self) -> int:
        return self.n_bins - int(self.drop_dc)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        if not isinstance(d, dict):
            raise ValueError(f"feature config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        missing = sorted(names - set(d))
        if unknown:
            raise ValueError(f"feature config has unknown keys: {', '.join(map(str, unknown))}")
        if missing:
            raise ValueError(f"feature config lacks keys: {', '.join(missing)}")
        return cls(**d)

    def hash(self) -> str:
        """16 hex digits of sha256 over canonical JSON: equal configs hash equally in any process."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --- windows and kernels ----------------------------------------------------------------------

def _window_samples(window, win_length: int) -> np.ndarray:
    """Periodic ("fftbins") window like scipy.signal.get_window, or a given array."""
    if isinstance(window, str):
        n = np.arange(win_length)
        phase = 2.0 * np.pi * n / win_length
        if window == "hann":
            return 0.5 - 0.5 * np.cos(phase)
        if window == "hamming":
            return 0.54 - 0.46 * np.cos(phase)
        if window == "blackman":
            return 0.42 - 0.5 * np.cos(phase) + 0.08 * np.cos(2 * phase)
        if window == "boxcar":
            return np.ones(win_length)
        raise ValueError(f"window must be one of {WINDOWS} or an array, got {window!r}")
    w = np.asarray(window, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != win_length:
        raise ValueError(f"window array must have shape ({win_length},), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("window array contains NaN or infinity")
    return w


def _integer(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _check_sizes(n_fft, hop_length, win_length):
    """Types here; ranges of n_fft and hop_length are the kernel's (`_dsp.check_*`). win_length is this
    module's: the kernel sees its window zero-padded to n_fft."""
    n_fft, hop_length, win_length = (_integer(v, name) for v, name in
                                     ((n_fft, "n_fft"), (hop_length, "hop_length"), (win_length, "win_length")))
    _dsp.check_n_fft(n_fft)
    _dsp.check_hop_length(hop_length)
    if not 1 <= win_length <= n_fft:
        raise ValueError(f"win_length must be from 1 to n_fft ({n_fft}), got {win_length}")


def _padded_window(window, n_fft: int, win_length: int) -> np.ndarray:
    w = np.zeros(n_fft, dtype=np.float32)
    left = (n_fft - win_length) // 2
    w[left:left + win_length] = _window_samples(window, win_length)
    return w


@lru_cache(maxsize=64)
def _cached_kernel(n_fft, hop_length, win_length, window, center):
    # Kernels are immutable and safe to share between threads (FFTW plans are made under a lock).
    return _dsp.StftKernel(_padded_window(window, n_fft, win_length), hop_length, center)


def _kernel(n_fft, hop_length, win_length, window, center) -> "_dsp.StftKernel":
    win_length = n_fft if win_length is None else win_length
    hop_length = win_length // 4 if hop_length is None else hop_length
    _check_sizes(n_fft, hop_length, win_length)
    if isinstance(window, str):
        return _cached_kernel(int(n_fft), int(hop_length), int(win_length), window, bool(center))
    return _dsp.StftKernel(_padded_window(window, n_fft, win_length), int(hop_length), bool(center))


def _signal(y, who: str) -> np.ndarray:
    a = np.asarray(y)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{who}: expected a real signal, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{who}: expected a 1-D signal, got shape {a.shape}")
    return a  # the kernel converts to contiguous float32 and checks length and finiteness


def _spectrogram(S, who: str, what: str, complex_: bool) -> np.ndarray:
    a = np.asarray(S)
    if complex_:
        if a.dtype.kind not in "fciu":
            raise ValueError(f"{who}: expected a complex {what}, got dtype {a.dtype}")
    elif a.dtype.kind not in "fiu":
        raise ValueError(f"{who}: expected a real {what}, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{who}: expected a 2-D {what} (bins, frames), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{who}: the {what} is empty, shape {a.shape}")
    return a


def _infer_n_fft(bins: int, n_fft) -> int:
    if n_fft is None:
        return 2 * (bins - 1)
    if n_fft // 2 + 1 != bins:
        raise ValueError(f"the spectrogram has {bins} bins but n_fft={n_fft} gives {n_fft // 2 + 1}")
    return n_fft


# --- STFT and features --------------------------------------------------------------------------

def stft(y, *, n_fft: int = 400, hop_length: int | None = 160, win_length: int | None = None,
         window="hann", center: bool = True) -> np.ndarray:
    """complex64 (n_fft//2+1, frames), like librosa.stft with pad_mode="constant"."""
    kernel = _kernel(n_fft, hop_length, win_length, window, center)
    return kernel.stft(_signal(y, "stft")).T


def istft(S, *, hop_length: int | None = 160, win_length: int | None = None, n_fft: int | None = None,
          window="hann", center: bool = True, length: int | None = None) -> np.ndarray:
    """float32 signal from a (bins, frames) spectrogram, like librosa.istft (window-sum normalised)."""
    S = _spectrogram(S, "istft", "spectrogram", complex_=True)
    n_fft = _infer_n_fft(S.shape[0], n_fft)
    if length is not None and (not isinstance(length, (int, np.integer)) or length < 0):
        raise ValueError(f"istft: length must be a non-negative integer, got {length!r}")
    kernel = _kernel(n_fft, hop_length, win_length, window, center)
    return kernel.istft(S.T, -1 if length is None else int(length))


def log_magnitude(y, *, cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """float32 (frames, cfg.n_features): log(max(|STFT|, log_floor)), DC bin dropped if cfg.drop_dc."""
    if not isinstance(cfg, FeatureConfig):
        raise ValueError(f"log_magnitude: cfg must be a FeatureConfig, got {type(cfg).__name__}")
    kernel = _cached_kernel(cfg.n_fft, cfg.hop_length, cfg.win_length, cfg.window, cfg.center)
    return kernel.log_magnitude(_signal(y, "log_magnitude"), cfg.log_floor, int(cfg.drop_dc))


def magnitude_from_features(X, *, cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """float32 magnitude (n_fft//2+1, frames) from features (frames, n_features).

    The dropped DC bin comes back at the log floor: the features carry no information about it. Features
    above log(MAX_VALUE) (69.1) are refused: their magnitude is beyond what the kernel transforms.
    """
    if not isinstance(cfg, FeatureConfig):
        raise ValueError(f"magnitude_from_features: cfg must be a FeatureConfig, got {type(cfg).__name__}")
    X = np.asarray(X)
    if X.dtype.kind not in "fiu":
        raise ValueError(f"magnitude_from_features: expected real features, got dtype {X.dtype}")
    if X.ndim != 2 or X.shape[1] != cfg.n_features:
        raise ValueError(f"magnitude_from_features: expected shape (frames, {cfg.n_features}), got {X.shape}")
    if X.shape[0] == 0:
        raise ValueError("magnitude_from_features: no frames")
    if not np.all(np.isfinite(X)):
        raise ValueError("magnitude_from_features: the features contain NaN or infinity")
    if np.max(X) > np.log(MAX_VALUE):
        raise ValueError(f"magnitude_from_features: features reach {np.max(X):.4g}, above log(1e30) = 69.08")
    mag = np.empty((cfg.n_bins, X.shape[0]), dtype=np.float32)
    first = int(cfg.drop_dc)
    if first:
        mag[0] = cfg.log_floor
    np.exp(X.T, out=mag[first:], casting="unsafe")
    return mag


# --- phase reconstruction -----------------------------------------------------------------------

def _magnitude(mag, who: str) -> np.ndarray:
    mag = _spectrogram(mag, who, "magnitude", complex_=False)
    if mag.shape[0] < 2:
        raise ValueError(f"{who}: the magnitude needs at least 2 frequency bins, got shape {mag.shape}")
    return mag


def _gamma(window, win_length: int, who: str) -> float:
    gamma = _dsp.pghi_gamma(window, win_length) if isinstance(window, str) else 0.0
    if gamma <= 0:
        raise ValueError(f"{who}: PGHI needs a hann, hamming or blackman window, got {window!r}")
    return gamma


def pghi(mag, *, hop_length: int = 160, win_length: int | None = None, n_fft: int | None = None,
         window="hann", tolerance: float = 1e-5) -> np.ndarray:
    """Phase (radians, float32, shape of mag) by Phase Gradient Heap Integration (Prusa et al. 2017).

    The phase gradient comes from the log-magnitude as if the window were its Gaussian equivalent;
    bins more than `tolerance` (relative) below the loudest one get phase 0.
    """
    mag = _magnitude(mag, "pghi")
    n_fft = _infer_n_fft(mag.shape[0], n_fft)
    win_length = n_fft if win_length is None else win_length
    _check_sizes(n_fft, hop_length, win_length)
    frames = np.ascontiguousarray(mag.T, dtype=np.float32)
    _dsp.check_magnitude(frames, "pghi")
    logmag = np.log(np.maximum(frames, np.finfo(np.float32).tiny))
    return _dsp.pghi(logmag, n_fft, hop_length, _gamma(window, win_length, "pghi"),
                     _number(tolerance, "tolerance")).T


def griffinlim(mag, *, n_iter: int = 32, momentum: float = 0.99, init="random", seed=None,
               hop_length: int = 160, win_length: int | None = None, n_fft: int | None = None,
               window="hann", center: bool = True, length: int | None = None) -> np.ndarray:
    """float32 signal whose STFT magnitude approaches `mag` (bins, frames): fast Griffin-Lim.

    init: "random" (uniform phase; an int seed draws the same phases as librosa's random_state),
    "pghi" (Phase Gradient Heap Integration: fewer iterations for the same convergence), None (zero
    phase) or an array of the magnitude's shape, complex (its angle is used) or real (radians).
    The whole iteration runs in C++.
    """
    mag = _magnitude(mag, "griffinlim")
    n_fft = _infer_n_fft(mag.shape[0], n_fft)
    n_iter, momentum = _integer(n_iter, "griffinlim: n_iter"), _number(momentum, "griffinlim: momentum")
    if length is not None and (not isinstance(length, (int, np.integer)) or length < 0):
        raise ValueError(f"griffinlim: length must be a non-negative integer, got {length!r}")
    kernel = _kernel(n_fft, hop_length, win_length, window, center)
    frames = np.ascontiguousarray(mag.T, dtype=np.float32)
    _dsp.check_magnitude(frames, "griffinlim")  # before an initial phase is integrated from it
    try:
        _dsp.check_griffinlim(n_iter, momentum)
    except ValueError as exc:
        raise ValueError(f"griffinlim: {exc}") from None
    angles = _initial_phase(mag, init, seed, hop_length, win_length, n_fft, window)
    return kernel.griffinlim(frames, angles.T, n_iter, momentum, -1 if length is None else int(length))


def _initial_phase(mag, init, seed, hop_length, win_length, n_fft, window) -> np.ndarray:
    if isinstance(init, str) and init == "random":
        if seed is None or isinstance(seed, (int, np.integer)):
            # librosa.griffinlim draws from RandomState(int) for an int random_state.
            rng = np.random.default_rng() if seed is None else np.random.RandomState(int(seed))
        elif isinstance(seed, (np.random.Generator, np.random.RandomState)):
            rng = seed
        else:
            raise ValueError(f"griffinlim: seed must be None, an int or a numpy generator, got {seed!r}")
        return np.exp(2j * np.pi * rng.random(size=mag.shape)).astype(np.complex64)
    if isinstance(init, str) and init == "pghi":
        phase = pghi(mag, hop_length=hop_length, win_length=win_length, n_fft=n_fft, window=window)
        return np.exp(1j * phase).astype(np.complex64)
    if init is None:
        return np.ones(mag.shape, dtype=np.complex64)
    if isinstance(init, str):
        raise ValueError(f'griffinlim: init must be "random", "pghi", None or an array, got {init!r}')
    init = np.asarray(init)
    if init.shape != mag.shape:
        raise ValueError(f"griffinlim: the initial phase has shape {init.shape}, the magnitude {mag.shape}")
    if init.dtype.kind not in "fciu":
        raise ValueError(f"griffinlim: the initial phase must be numbers, got dtype {init.dtype}")
    if np.iscomplexobj(init):
        return init.astype(np.complex64)  # the kernel checks it and scales each phasor to length one
    if not np.all(np.isfinite(init)):
        raise ValueError("griffinlim: the initial phase contains NaN or infinity")
    return np.exp(1j * init).astype(np.complex64)


def spectral_convergence_db(mag, y, *, hop_length: int = 160, win_length: int | None = None,
                            n_fft: int | None = None, window="hann", center: bool = True) -> float:
    """20*log10(||mag - |STFT(y)||| / ||mag||): how well a signal matches a target magnitude."""
    mag = _magnitude(mag, "spectral_convergence_db")
    _dsp.check_magnitude(np.ascontiguousarray(mag.T, dtype=np.float32), "spectral_convergence_db")
    n_fft = _infer_n_fft(mag.shape[0], n_fft)
    rebuilt = np.abs(stft(y, n_fft=n_fft, hop_length=hop_length, win_length=win_length, window=window,
                          center=center))
    if rebuilt.shape != mag.shape:
        raise ValueError(f"spectral_convergence_db: the signal gives {rebuilt.shape[1]} frames, "
                         f"the magnitude has {mag.shape[1]}")
    target = mag.astype(np.float64)
    if not np.any(target):
        raise ValueError("spectral_convergence_db: the magnitude is all zeros")
    return float(20 * np.log10(np.linalg.norm(target - rebuilt) / np.linalg.norm(target)))


# --- streaming ----------------------------------------------------------------------------------

class StreamingLogMagnitude:
    """log_magnitude block by block: the frames of all pushes and of flush(), concatenated, equal
    log_magnitude(whole signal, cfg=cfg) exactly.

    With cfg.center the signal is taken as preceded by n_fft//2 zeros, as in the whole-signal
    transform, so frame t (centred on sample t*hop_length) comes out of the push that delivers
    sample t*hop_length + n_fft//2 - 1: a latency of `latency_samples` (n_fft//2) after the frame
    centre. flush() pads the end with zeros, returns the last frames and starts a new stream.
    Unlike log_magnitude, pushes may be shorter than a frame, or empty.
    """

    def __init__(self, cfg: FeatureConfig = FeatureConfig()):
        self.cfg = cfg
        window = _padded_window(cfg.window, cfg.n_fft, cfg.win_length)
        self._stream = _dsp.StreamingLogMagnitude(window, cfg.hop_length, cfg.center, cfg.log_floor,
                                                  int(cfg.drop_dc))

    @property
    def latency_samples(self) -> int:
        """Samples needed after a frame's window centre before the frame comes out (n_fft//2)."""
        return self.cfg.n_fft // 2

    @property
    def samples_pushed(self) -> int:
        return self._stream.samples_pushed

    @property
    def frames_emitted(self) -> int:
        return self._stream.frames_emitted

    def push(self, samples) -> np.ndarray:
        """float32 (frames, n_features): the frames completed by these samples (possibly none)."""
        return self._stream.push(_signal(samples, "StreamingLogMagnitude.push"))

    def flush(self) -> np.ndarray:
        return self._stream.flush()

    def reset(self) -> None:
        self._stream.reset()


class StreamingGriffinLim:
    """Griffin-Lim block by block (RTISI-LA with fast Griffin-Lim updates and PGHI-started frames).

    push(mag) takes magnitude frames (bins, k) and returns the samples that became final. Each new
    frame starts from a phase integrated (PGHI) from the frame before it; then the newest
    `lookahead`+1 frames are re-estimated n_iter times with the phases of older (committed) frames
    held fixed, and the oldest frame beyond the look-ahead is committed.

    Sample mapping (center=True, hop = hop_length): output sample i is signal sample i of
    whole-utterance griffinlim/istft, i.e. frame t is centred on sample t*hop. After F frames have
    been pushed in total, samples [0, final_samples_after(F)) = [0, (F - lookahead)*hop - n_fft//2)
    have been returned, so sample i is returned by the push that delivers frame
    lookahead + (i + n_fft//2) // hop. flush() returns the rest, up to hop*(F-1) samples in all
    (librosa.istft's length), and starts a new stream.
    """

    def __init__(self, *, n_fft: int = 400, hop_length: int = 160, win_length: int | None = None,
                 n_iter: int = 32, momentum: float = 0.99, lookahead: int = 3, window="hann",
                 center: bool = True):
        win_length = n_fft if win_length is None else win_length
        _check_sizes(n_fft, hop_length, win_length)
        n_iter, lookahead = _integer(n_iter, "n_iter"), _integer(lookahead, "lookahead")
        momentum = _number(momentum, "momentum")
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.n_iter, self.momentum, self.center = n_iter, momentum, center
        try:
            self._stream = _dsp.StreamingGriffinLim(
                _padded_window(window, n_fft, win_length), hop_length, center, n_iter, momentum, lookahead,
                _gamma(window, win_length, "StreamingGriffinLim"))
        except ValueError as exc:
            raise ValueError(f"StreamingGriffinLim: {exc}") from None

    @property
    def lookahead(self) -> int:
        """Frames held back and still re-estimated after they arrive."""
        return self._stream.lookahead

    @property
    def latency_samples(self) -> int:
        """Output sample i is final once every frame whose window is centred at or before sample
        i + latency_samples has been pushed: lookahead*hop_length + n_fft//2 (frame t's window is
        centred on sample t*hop_length with center=True, t*hop_length + n_fft//2 without)."""
        return self.lookahead * self.hop_length + self.n_fft // 2

    @property
    def frames_pushed(self) -> int:
        return self._stream.frames_pushed

    @property
    def samples_emitted(self) -> int:
        return self._stream.samples_emitted

    def final_samples_after(self, frames: int) -> int:
        """How many output samples are final once `frames` frames have been pushed in total."""
        return self._stream.final_samples_after(frames)

    def push(self, mag) -> np.ndarray:
        mag = np.asarray(mag)
        if mag.dtype.kind not in "fiu":
            raise ValueError(f"StreamingGriffinLim.push: expected a real magnitude, got dtype {mag.dtype}")
        if mag.ndim != 2 or mag.shape[0] != self.n_fft // 2 + 1:
            raise ValueError(f"StreamingGriffinLim.push: expected shape ({self.n_fft // 2 + 1}, frames), "
                             f"got {mag.shape}")
        return self._stream.push(mag.T)

    def flush(self) -> np.ndarray:
        return self._stream.flush()

    def reset(self) -> None:
        self._stream.reset()
