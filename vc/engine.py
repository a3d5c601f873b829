"""Streaming voice conversion: `StreamingConverter` takes microphone audio at the model's rate in blocks
of any size and returns converted audio; it knows nothing about devices (see `vc.live`).

Signal path per hop
-------------------
Samples go into a streaming log-magnitude STFT (`vc.dsp`) whose state carries across blocks, so frames
come out exactly as the whole-file STFT would compute them. Each time `hop` new frames are complete:

1. the encoder sees the newest `segment_length` frames (the model's 200 ms window; silence before the
   start), normalised as the model was trained;
2. its `f` is replaced by the target speaker's code, the decoder reconstructs the window, and only the
   newest `hop` frames are used (each frame is decoded once, with the most context it will ever get);
3. those frames (denormalised, exp, DC restored) go to `StreamingGriffinLim`, which keeps the phases of
   committed frames fixed and iterates the `lookahead` newest frames together with the new ones, then
   commits all but `lookahead` frames and returns the samples no uncommitted frame can change any more.

Because frames are computed, processed and committed on fixed positions of the sample stream, the output
does not depend on how the input was cut into blocks.

Timing (what "latency" is)
--------------------------
Output sample s reconstructs input sample s (frame t is centred on sample t*hop_length, as in librosa's
`center=True`, and Griffin-Lim's output keeps that time line). What delays it:

- the STFT: frame t is complete once sample t*hop_length + n_fft/2 - 1 has arrived (n_fft/2 = 12.5 ms);
- the hop: frames are only processed in groups of H/hop_length, so a frame waits up to H - hop_length for
  the rest of its hop (and the sample that completes it up to hop_length - 1 for its frame);
- Griffin-Lim: after F frames, samples before (F - L)*hop_length - n_fft/2 are final, i.e. L look-ahead
  frames plus half a window (the later frames that overlap a sample).

Just before a hop completes these add up to the worst case, and the engine makes that its constant delay:
every `push` returns exactly as many samples as it was given, the conversion delayed by

    latency = H + L*hop_length + n_fft - hop_length - 1 samples
            = hop + look-ahead + 14.9 ms (half a window twice, less one frame hop, less one sample)

so nothing ever waits for output that is not final yet, whatever the block size. At 16 kHz, H = 200 ms and
L = 3 give 244.9 ms; H = 40 ms and L = 3 give 84.9 ms. `algorithmic_latency_ms` reports this number, and
a test measures it with clicks through an identity model. A live set-up adds the device buffers, the
resamplers and a safety margin for the compute time of a hop, which comes in one burst when the hop
completes (`vc.live` adds them to its estimate).

Noise gate and pass-through
---------------------------
The gate works on the analysis frames: a frame's level (dBFS, RMS over its window, from the spectrum by
Parseval) opens the gate; it stays open for `gate_hold_ms` after the last loud frame and its gain moves by
at most 1/3 per frame (a 30 ms release, and a 10 ms attack that, thanks to the output delay, finishes
before the loud frame arrives). Gains are interpolated per sample between frame centres, so there are no
clicks. Pass-through outputs the input delayed by the same latency, so A/B switching stays in time; it
crossfades over 10 ms. Conversion keeps running underneath, so switching back is seamless too.
"""

from __future__ import annotations

import math
import time

import numpy as np

from vc import dsp
from vc.audio import AudioError, check_audio

MODES = {
    # The model's segment per hop: every frame is decoded with a full window of its own.
    "default": {"hop_ms": 200.0, "lookahead_ms": 30.0},
    # A 40 ms hop with the same 200 ms encoder window; costs five times the model calls per second.
    "lowlat": {"hop_ms": 40.0, "lookahead_ms": 30.0},
}
DEFAULT_N_ITER = 32
DEFAULT_MOMENTUM = 0.99
DEFAULT_GATE_DB = -50.0
DEFAULT_GATE_HOLD_MS = 150.0
GATE_STEP_PER_FRAME = 1.0 / 3.0
CROSSFADE_MS = 10.0


class EngineError(ValueError):
    """Settings the engine cannot run with; the message says which and why."""


class _SampleQueue:
    """A growable FIFO of float32 samples (append at the end, take from the front) without per-call
    reallocation in the steady state."""

    def __init__(self, capacity: int = 4096):
        self._buf = np.zeros(max(16, capacity), np.float32)
        self._start = 0
        self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    def clear(self) -> None:
        self._start = self._end = 0

    def put(self, samples: np.ndarray) -> None:
        n = samples.shape[0]
        if self._end + n > self._buf.shape[0]:
            live = self._end - self._start
            if live + n > self._buf.shape[0] // 2:
                grown = np.zeros(max(2 * self._buf.shape[0], 2 * (live + n)), np.float32)
                grown[:live] = self._buf[self._start:self._end]
                self._buf = grown
            else:
                self._buf[:live] = self._buf[self._start:self._end]
            self._start, self._end = 0, live
        self._buf[self._end:self._end + n] = samples
        self._end += n

    def take(self, n: int) -> np.ndarray:
        if n > len(self):
            raise RuntimeError(f"internal timing error: {n} samples requested, {len(self)} queued")
        out = self._buf[self._start:self._start + n].copy()
        self._start += n
        return out

    def peek_all(self) -> np.ndarray:
        return self._buf[self._start:self._end]


def _window_energy(window: str, win_length: int) -> float:
    """Sum of the squared analysis window (periodic, as vc.dsp builds it)."""
    phase = 2.0 * np.pi * np.arange(win_length) / win_length
    shapes = {"hann": 0.5 - 0.5 * np.cos(phase), "hamming": 0.54 - 0.46 * np.cos(phase),
              "blackman": 0.42 - 0.5 * np.cos(phase) + 0.08 * np.cos(2 * phase), "boxcar": np.ones(win_length)}
    if window not in shapes:
        raise EngineError(f"the noise gate does not know the window {window!r}")
    return float(np.sum(shapes[window] ** 2))


def frame_level_db(frames: np.ndarray, cfg) -> np.ndarray:
    """Raw log-magnitude frames (T, n_features) -> each frame's windowed RMS level in dBFS (Parseval)."""
    power = np.exp(2.0 * frames.astype(np.float64))
    first = int(cfg.drop_dc)
    weights = np.full(frames.shape[1], 2.0)
    nyquist = cfg.n_fft // 2 - first  # the Nyquist bin (even n_fft) appears once in the full spectrum
    if cfg.n_fft % 2 == 0 and 0 <= nyquist < frames.shape[1]:
        weights[nyquist] = 1.0
    window_energy = _window_energy(cfg.window, cfg.win_length)
    mean_square = (power @ weights) / (cfg.n_fft * window_energy)
    return 10.0 * np.log10(np.maximum(mean_square, 1e-20))


class StreamingConverter:
    """Block in, block out voice conversion; see the module docstring for the timing.

    model: a `vc.model.Model`; target: a `vc.speakers.Speaker` or its float32 (f_dim,) code. The engine
    uses the code only: harmonics at the target's pitch are rebuilt on the file path (`vc.conversion`),
    which sees whole utterances; here the output is the DSAE's own envelope.
    hop_ms: how much audio each model call adds (a multiple of the frame hop, at most the model's segment).
    lookahead_ms: frames Griffin-Lim keeps open for the next hop (rounded to whole frames).
    gate_db: frames below this level fade to silence; None disables the gate.
    """

    def __init__(self, model, target, hop_ms: float = MODES["default"]["hop_ms"],
                 lookahead_ms: float = MODES["default"]["lookahead_ms"], n_iter: int = DEFAULT_N_ITER,
                 momentum: float = DEFAULT_MOMENTUM, gate_db: float | None = DEFAULT_GATE_DB,
                 gate_hold_ms: float = DEFAULT_GATE_HOLD_MS, passthrough: bool = False):
        cfg = model.feature_config
        self.model = model
        self.cfg = cfg
        self.sr = cfg.sr
        frame_ms = 1000.0 * cfg.hop_length / cfg.sr
        hop_frames = hop_ms / frame_ms
        if not (hop_ms > 0) or abs(hop_frames - round(hop_frames)) > 1e-6:
            raise EngineError(f"hop {hop_ms:g} ms is not a positive multiple of the {frame_ms:g} ms frame hop")
        self.hop_frames = int(round(hop_frames))
        self.window_frames = int(model.segment_length)
        if self.hop_frames > self.window_frames:
            raise EngineError(f"hop {hop_ms:g} ms is longer than the model's {self.window_frames * frame_ms:g} ms "
                              "window; use at most that")
        if not (lookahead_ms >= 0):
            raise EngineError(f"look-ahead must be >= 0 ms, not {lookahead_ms!r}")
        self.lookahead_frames = int(round(lookahead_ms / frame_ms))
        if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
            raise EngineError(f"n_iter must be a non-negative integer, not {n_iter!r}")
        if not (0.0 <= momentum < 1.0):
            raise EngineError(f"momentum must be in [0, 1), not {momentum!r}")
        if gate_db is not None and (not math.isfinite(gate_db) or gate_db > 0):
            raise EngineError(f"gate level must be a finite dBFS value <= 0 (or off), not {gate_db!r}")
        self.n_iter = n_iter
        self.momentum = float(momentum)
        self.gate_db = gate_db
        self.gate_hold_frames = int(round(gate_hold_ms / frame_ms))
        target = getattr(target, "f", target)  # a vc.speakers.Speaker or a bare code
        self.target = np.ascontiguousarray(np.asarray(target, np.float32).reshape(1, -1))
        if self.target.shape[1] != model.f_dim:
            raise EngineError(f"target code has {self.target.shape[1]} values, the model's f has {model.f_dim}")
        if not np.all(np.isfinite(self.target)):
            raise EngineError("target code contains NaN or infinity")

        self.hop_samples = self.hop_frames * cfg.hop_length
        self._silence = np.float32(np.log(cfg.log_floor))
        self._make_streams()  # reset() makes fresh ones; these tell the latencies
        # Worst case just before a hop completes: the hop's first frame waits H - hop_length samples
        # for the rest of the hop and hop_length - 1 for its own last sample beyond the STFT's latency.
        self.latency_samples = (self.hop_samples - 1 + self._features.latency_samples
                                + self._griffinlim.latency_samples - cfg.hop_length)
        self._crossfade = max(1, int(round(CROSSFADE_MS * self.sr / 1000)))
        self._passthrough_wanted = bool(passthrough)
        self.reset()

    # --- settings and state -----------------------------------------------------------------------------
    @property
    def algorithmic_latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / self.sr

    @property
    def hop_ms(self) -> float:
        return 1000.0 * self.hop_samples / self.sr

    @property
    def lookahead_ms(self) -> float:
        return 1000.0 * self.lookahead_frames * self.cfg.hop_length / self.sr

    @property
    def passthrough(self) -> bool:
        return self._passthrough_wanted

    @passthrough.setter
    def passthrough(self, value: bool) -> None:
        self._passthrough_wanted = bool(value)

    def describe(self) -> str:
        return (f"hop {self.hop_ms:g} ms, look-ahead {self.lookahead_ms:g} ms, window "
                f"{1000.0 * self.window_frames * self.cfg.hop_length / self.sr:g} ms, {self.n_iter} Griffin-Lim "
                f"iterations, algorithmic latency {self.algorithmic_latency_ms:.1f} ms")

    def _make_streams(self) -> None:
        cfg = self.cfg
        self._features = dsp.StreamingLogMagnitude(cfg)
        self._griffinlim = dsp.StreamingGriffinLim(
            n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length, n_iter=self.n_iter,
            momentum=self.momentum, lookahead=self.lookahead_frames, window=cfg.window, center=cfg.center)

    def reset(self) -> None:
        """Forget all audio: the next push starts like a fresh engine (same settings)."""
        cfg = self.cfg
        self._make_streams()
        # Encoder context: the newest window_frames raw frames, silence before the first.
        self._context = np.full((self.window_frames, cfg.n_features), self._silence, np.float32)
        self._pending_frames: list[np.ndarray] = []
        self._n_pending = 0
        # Output = D zeros, then the Griffin-Lim signal: one constant delay whatever the block size.
        self._converted = _SampleQueue()
        self._converted.put(np.zeros(self.latency_samples, np.float32))
        self._dry = _SampleQueue()
        self._dry.put(np.zeros(self.latency_samples, np.float32))
        # Gate: smoothed gain per frame, indexed by absolute frame number.
        self._frame_gain = _SampleQueue()
        self._gain_origin = 0  # absolute frame number of _frame_gain's first entry
        self._gain_state = 0.0 if self.gate_db is not None else 1.0
        self._frames_since_loud = self.gate_hold_frames + 1
        self._gl_emitted = 0  # output samples Griffin-Lim has produced so far
        self._wet_mix = 0.0 if self._passthrough_wanted else 1.0
        # Statistics for a status display.
        self.last_compute_s = 0.0
        self.compute_s_total = 0.0
        self.hops = 0
        self.input_level_db = -math.inf
        self.samples_in = 0

    # --- processing -------------------------------------------------------------------------------------
    def push(self, samples) -> np.ndarray:
        """Input samples at the model's rate (any count; (n,) or (n, channels), float or integer PCM: see
        `vc.audio.check_audio`) -> the same number of output samples, mono."""
        try:
            x = check_audio(samples, name="input block")
        except AudioError as exc:
            raise EngineError(str(exc)) from None
        if x.size == 0:
            return np.zeros(0, np.float32)
        started = time.perf_counter()
        self.samples_in += x.size
        self._dry.put(x)
        frames = self._features.push(x)
        if frames.shape[0]:
            self._pending_frames.append(frames)
            self._n_pending += frames.shape[0]
        while self._n_pending >= self.hop_frames:
            self._process_hop(self._take_pending(self.hop_frames))
        out = self._mix(x.size)
        self.last_compute_s = time.perf_counter() - started
        self.compute_s_total += self.last_compute_s
        return out

    def flush(self) -> np.ndarray:
        """The last `latency_samples` of output (pushes that much silence); for converting files."""
        return self.push(np.zeros(self.latency_samples, np.float32))

    def convert(self, audio, block: int | None = None) -> np.ndarray:
        """A whole signal through `push` (in blocks of `block` samples, default one hop), delay removed."""
        try:
            audio = check_audio(audio)
        except AudioError as exc:
            raise EngineError(str(exc)) from None
        block = block or self.hop_samples
        pieces = [self.push(audio[i:i + block]) for i in range(0, audio.size, block)]
        pieces.append(self.flush())
        out = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        return out[self.latency_samples:self.latency_samples + audio.size]

    def _take_pending(self, n: int) -> np.ndarray:
        frames = np.concatenate(self._pending_frames, axis=0) if len(self._pending_frames) > 1 \
            else self._pending_frames[0]
        taken, rest = frames[:n], frames[n:]
        self._pending_frames = [rest] if rest.shape[0] else []
        self._n_pending = rest.shape[0]
        return taken

    def _process_hop(self, new_frames: np.ndarray) -> None:
        model = self.model
        h = new_frames.shape[0]
        self._context = np.concatenate([self._context[h:], new_frames], axis=0)
        _, _, z_mean, _ = model.encode(model.normalise(self._context)[None])
        decoded = model.denormalise(model.decode(self.target, z_mean)[0, -h:])
        magnitude = dsp.magnitude_from_features(decoded, cfg=self.cfg)
        samples = self._griffinlim.push(magnitude)
        self._update_gate(new_frames)
        if samples.shape[0]:
            self._converted.put(self._apply_gate(np.asarray(samples, np.float32)))
        self.hops += 1

    def _update_gate(self, frames: np.ndarray) -> None:
        levels = frame_level_db(frames, self.cfg)
        self.input_level_db = float(np.max(levels))
        if self.gate_db is None:
            return
        gains = np.empty(frames.shape[0], np.float32)
        g = self._gain_state
        for i, level in enumerate(levels):
            if level >= self.gate_db:
                self._frames_since_loud = 0
            else:
                self._frames_since_loud += 1
            target = 1.0 if self._frames_since_loud <= self.gate_hold_frames else 0.0
            g = min(target, g + GATE_STEP_PER_FRAME) if target > g else max(target, g - GATE_STEP_PER_FRAME)
            gains[i] = g
        self._gain_state = g
        self._frame_gain.put(gains)

    def _apply_gate(self, samples: np.ndarray) -> np.ndarray:
        if self.gate_db is None:
            self._gl_emitted += samples.shape[0]
            return samples
        hop = self.cfg.hop_length
        start = self._gl_emitted
        positions = np.arange(start, start + samples.shape[0], dtype=np.float64) / hop
        known = self._frame_gain.peek_all()
        frame_numbers = self._gain_origin + np.arange(known.shape[0])
        gain = np.interp(positions, frame_numbers, known).astype(np.float32)
        self._gl_emitted += samples.shape[0]
        # Frames whose centre lies before the next output sample are only needed as interpolation anchors.
        drop = max(0, int(self._gl_emitted // hop) - self._gain_origin - 1)
        if drop:
            self._frame_gain.take(drop)
            self._gain_origin += drop
        return samples * gain

    def _mix(self, n: int) -> np.ndarray:
        wet = self._converted.take(n)
        dry = self._dry.take(n)
        target = 0.0 if self._passthrough_wanted else 1.0
        if self._wet_mix == target:
            return wet if target == 1.0 else dry
        step = 1.0 / self._crossfade
        ramp = self._wet_mix + (step if target > self._wet_mix else -step) * np.arange(1, n + 1)
        ramp = np.clip(ramp, 0.0, 1.0).astype(np.float32)
        self._wet_mix = float(ramp[-1])
        return ramp * wet + (1.0 - ramp) * dry


def engine_for_mode(model, target, mode: str = "default", **overrides) -> StreamingConverter:
    if mode not in MODES:
        raise EngineError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    settings = dict(MODES[mode])
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return StreamingConverter(model, target, **settings)
