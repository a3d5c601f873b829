"""Streaming voice conversion: `StreamingConverter` takes microphone audio at the model's rate in blocks
of any size and returns converted audio; it knows nothing about devices (see `vc.live`).

Signal path per hop
-------------------
Samples go into a streaming log-magnitude STFT (`vc.dsp`) whose state carries across blocks, so frames
come out exactly as the whole-file STFT would compute them, and into a streaming YIN tracker
(`vc.streaming_pitch`), which analyses the frames the whole-file tracker analyses. Each time `hop` new
frames are complete, and their F0 known, the encoder sees the newest `segment_length` frames (the model's
200 ms window; silence before the start), and the stages of the file path follow on the newest `hop`
frames only (README, "How a voice is converted": each frame is decoded once, with the most context it
will ever get), the source's f, z statistics and register being running estimates; the frames then go to
`StreamingGriffinLim`, which keeps the phases of committed frames fixed, iterates the `lookahead` newest
frames together with the new ones, and returns the samples no uncommitted frame can change any more.

The running estimates of the source (its f, z statistics and register) are made from the speech heard so
far, so the first seconds are converted with rough ones; this is why streaming scores below whole files on
short utterances. A speaker who enrolled themselves (`source=`, `vc-live --source me.npy`) is known from
the first word instead.

Because frames are computed, processed and committed on fixed positions of the sample stream, the output
does not depend on how the input was cut into blocks.

Timing (what "latency" is)
--------------------------
Output sample s reconstructs input sample s (frame t is centred on sample t*hop_length, as in librosa's
`center=True`, and Griffin-Lim's output keeps that time line). What delays it:

- the STFT: frame t is complete once sample t*hop_length + n_fft/2 - 1 has arrived (n_fft/2 = 12.5 ms);
- the pitch tracker (with harmonics): YIN's frame for frame t reads 401 samples past its centre (two
  periods of 60 Hz plus one lag range: 802 samples), P = 201 samples (12.6 ms) beyond the STFT's;
- the hop: frames are only processed in groups of H/hop_length, so a frame waits up to H - hop_length for
  the rest of its hop (and the sample that completes it up to hop_length - 1 for its frame);
- Griffin-Lim: after F frames, samples before (F - L)*hop_length - n_fft/2 are final, i.e. L look-ahead
  frames plus half a window (the later frames that overlap a sample).

Just before a hop completes these add up to the worst case, and the engine makes that its constant delay:
every `push` returns exactly as many samples as it was given, the conversion delayed by

    latency = H + L*hop_length + n_fft - hop_length - 1 + P samples
            = hop + look-ahead + 14.9 ms (half a window twice, less one frame hop, less one sample)
              + 12.6 ms for the pitch tracker (0 with harmonics=False)

so nothing ever waits for output that is not final yet, whatever the block size. At 16 kHz, H = 200 ms and
L = 3 give 257.5 ms (244.9 ms without harmonics); H = 40 ms and L = 3 give 97.5 ms (84.9 ms).
The tracker takes no frames of look-ahead beyond the hop: the newest frames of a hop have their voicing
and median smoothing decided without the 2-4 frames the whole-file tracker would also see (on the open
corpus's test speakers the tracks still agree on nearly every frame; tools/eval_conversion.py --path stream).
`algorithmic_latency_ms` reports this number, and
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
from vc.conversion import (DEFAULT_FINE_STRUCTURE, DEFAULT_N_ITER, DEFAULT_STRENGTH, check_fine_structure,
                           check_strength, code_stats_amount, envelope_amount, matching_codes, mixed_code,
                           rebuild_harmonics, register_amount, source_fine_structure, source_prior)
from vc.exemplars import draw_onto_exemplars
from vc.code_stats import RunningCodeStats, frame_level_db, move_codes, speech_frames
from vc.speakers import Speaker, SpeakerError, check_speaker
from vc.streaming_pitch import RunningRegister, StreamingPitch

MODES = {
    # The model's segment per hop: every frame is decoded with a full window of its own.
    "default": {"hop_ms": 200.0, "lookahead_ms": 30.0},
    # A 40 ms hop with the same 200 ms encoder window; costs five times the model calls per second.
    "lowlat": {"hop_ms": 40.0, "lookahead_ms": 30.0},
}
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


class StreamingConverter:
    """Block in, block out voice conversion; see the module docstring for the timing.

    model: a `vc.model.Model`; target: a `vc.speakers.Speaker` (code and pitch register) or a bare float32
    (f_dim,) code (no register: the source's pitch is kept).
    strength: f = f_source + strength * (f_target - f_source), f_source averaged over the speech so far.
    harmonics: rebuild the harmonics at the source's F0 moved to the target's register (False: the DSAE's
    envelope alone, and no pitch tracker in the latency).
    hop_ms: how much audio each model call adds (a multiple of the frame hop, at most the model's segment).
    lookahead_ms: frames Griffin-Lim keeps open for the next hop (rounded to whole frames).
    gate_db: frames below this level fade to silence; None disables the gate.
    source: the speaker who will talk, enrolled with vc-enroll (a Speaker): their code, pitch register and
    z statistics are used from the first word instead of the estimates made as they speak (each one the
    speaker file has; the others are still estimated).
    """

    def __init__(self, model, target, *, hop_ms: float = MODES["default"]["hop_ms"],
                 lookahead_ms: float = MODES["default"]["lookahead_ms"], n_iter: int = DEFAULT_N_ITER,
                 momentum: float = DEFAULT_MOMENTUM, gate_db: float | None = DEFAULT_GATE_DB,
                 gate_hold_ms: float = DEFAULT_GATE_HOLD_MS, passthrough: bool = False,
                 strength: float = DEFAULT_STRENGTH, harmonics: bool = True, source: Speaker | None = None,
                 fine_structure: str = DEFAULT_FINE_STRUCTURE):
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
        try:
            self.strength = check_strength(strength)
            self.fine_structure = check_fine_structure(fine_structure)
        except ValueError as exc:
            raise EngineError(str(exc)) from None
        self.harmonics = bool(harmonics)
        if isinstance(target, Speaker):  # its z statistics and exemplars, checked as a speaker file's are
            try:
                check_speaker(Speaker(np.asarray(target.f, np.float32), None, target.z_stats, target.envelopes,
                                      target.voiced, target.envelope_z), z_dim=model.z_dim,
                              n_features=model.n_features)
            except SpeakerError as exc:
                raise EngineError(str(exc)) from None
        if source is not None and not isinstance(source, Speaker):
            raise EngineError(f"source must be an enrolled speaker (vc.speakers.Speaker), not {type(source).__name__}")
        try:
            self.source = None if source is None else check_speaker(
                source, model.f_dim, name="source", z_dim=model.z_dim, n_features=model.n_features)
        except SpeakerError as exc:
            raise EngineError(str(exc)) from None
        self.target_register = getattr(target, "register", None)
        self.target_z_stats = getattr(target, "z_stats", None)
        envelopes = getattr(target, "envelopes", None)
        self.target_envelopes = None if envelopes is None else np.asarray(envelopes, np.float32)
        self.target_voiced = getattr(target, "voiced", None)
        envelope_z = getattr(target, "envelope_z", None)
        self.target_envelope_z = None if envelope_z is None else np.asarray(envelope_z, np.float32)
        target = getattr(target, "f", target)  # a vc.speakers.Speaker or a bare code
        self.target = np.ascontiguousarray(np.asarray(target, np.float32).reshape(1, -1))
        if self.target.shape[1] != model.f_dim:
            raise EngineError(f"target code has {self.target.shape[1]} values, the model's f has {model.f_dim}")
        if not np.all(np.isfinite(self.target)):
            raise EngineError("target code contains NaN or infinity")

        self.hop_samples = self.hop_frames * cfg.hop_length
        self._silence = np.float32(np.log(cfg.log_floor))
        self._make_streams()  # reset() makes fresh ones; these tell the latencies
        # A hop's frames go on once their F0 is known too; YIN's frames reach further than the STFT's.
        self.pitch_latency_samples = (max(0, self._pitch.latency_samples - self._features.latency_samples)
                                      if self.harmonics else 0)
        # Worst case just before a hop completes: the hop's first frame waits H - hop_length samples
        # for the rest of the hop and hop_length - 1 for its own last sample beyond the STFT's latency.
        self.latency_samples = (self.hop_samples - 1 + self._features.latency_samples
                                + self.pitch_latency_samples + self._griffinlim.latency_samples
                                - cfg.hop_length)
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

    @property
    def pitch_latency_ms(self) -> float:
        """What the pitch tracker adds to the latency (0 without harmonics)."""
        return 1000.0 * self.pitch_latency_samples / self.sr

    @property
    def source_register(self):
        """The source speaker's pitch register: the enrolled source's, else the running estimate (None
        until enough voiced speech)."""
        if self.source is not None and self.source.register is not None:
            return self.source.register
        return self._register.current()

    @property
    def source_code_stats(self):
        """z's statistics over the source's speech frames so far (None before the first; only counted when
        the target has z statistics); the enrolled source's when it has them."""
        if self.source is not None and self.source.z_stats is not None:
            return self.source.z_stats
        return self._source_z.estimate()

    @property
    def current_f0(self) -> float:
        """F0 (Hz) of the newest frame converted, 0 when unvoiced or without harmonics."""
        return self._pitch.last_f0 if self.harmonics else 0.0

    def describe(self) -> str:
        pitch = (f"harmonics on (pitch tracker +{self.pitch_latency_ms:.1f} ms)" if self.harmonics
                 else "harmonics off")
        source = ", source enrolled" if self.source is not None else ""
        return (f"hop {self.hop_ms:g} ms, look-ahead {self.lookahead_ms:g} ms, window "
                f"{1000.0 * self.window_frames * self.cfg.hop_length / self.sr:g} ms, {self.n_iter} Griffin-Lim "
                f"iterations, strength {self.strength:g}, {pitch}{source}, algorithmic latency "
                f"{self.algorithmic_latency_ms:.1f} ms")

    def _make_streams(self) -> None:
        cfg = self.cfg
        self._features = dsp.StreamingLogMagnitude(cfg)
        self._griffinlim = dsp.StreamingGriffinLim(
            n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length, n_iter=self.n_iter,
            momentum=self.momentum, lookahead=self.lookahead_frames, window=cfg.window, center=cfg.center)
        self._pitch = StreamingPitch(cfg.sr, cfg.hop_length)
        self._register = RunningRegister()

    def reset(self) -> None:
        """Forget all audio: the next push starts like a fresh engine (same settings)."""
        cfg = self.cfg
        self._make_streams()
        # Encoder context: the newest window_frames raw frames, silence before the first.
        self._context = np.full((self.window_frames, cfg.n_features), self._silence, np.float32)
        self._context_power = np.zeros(self.window_frames)     # mean square of each context frame
        self._pending_frames: list[np.ndarray] = []
        self._n_pending = 0
        # The source speaker so far: f summed over speech windows (for strength), the pulse train's phase.
        self._source_f_sum = np.zeros(self.model.f_dim, np.float64)
        self._source_windows = 0
        self._loudest_window_db = -math.inf
        # ... and z's statistics over its speech frames (moved to the target's before decoding).
        self._source_z = RunningCodeStats(self.model.z_dim)
        self._loudest_frame_db = -math.inf
        self._harmonic_phase = 0.0
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
        pitch_ready = self._pitch.push(x) if self.harmonics else self._n_pending
        while self._n_pending >= self.hop_frames and pitch_ready >= self.hop_frames:
            self._process_hop(self._take_pending(self.hop_frames))
            pitch_ready -= self.hop_frames
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
        levels = frame_level_db(new_frames, self.cfg)
        self._context_power = np.concatenate([self._context_power[h:], np.power(10.0, levels / 10.0)])
        f_mean, _, z_mean, _ = model.encode(model.normalise(self._context)[None])
        code = mixed_code(self._source_code(f_mean[0]), self.target[0], self.strength)
        self._loudest_frame_db = max(self._loudest_frame_db, float(levels.max()))
        speech = speech_frames(levels, self._loudest_frame_db)
        if self.target_z_stats is not None:
            z_mean = self._move_codes(z_mean, speech)
        decoded = model.denormalise(model.decode(code[None], z_mean)[0, -h:])
        if self.target_envelopes is not None:
            decoded = draw_onto_exemplars(decoded, self.target_envelopes, speech,
                                          amount=envelope_amount(self.strength),
                                          codes=z_mean[0, -h:] if matching_codes(self.target_envelope_z)
                                          else None,
                                          exemplar_codes=self.target_envelope_z)
        if self.harmonics:
            f0, voiced = self._pitch.take(h)
            self._register.update(f0, voiced)
            decoded, self._harmonic_phase = rebuild_harmonics(
                decoded, f0, voiced, self.source_register, self.target_register, self.cfg,
                self._harmonic_phase, self.target_voiced if self.fine_structure == "target" else None,
                amount=register_amount(self.strength),
                source_fine=source_fine_structure(new_frames, self.fine_structure, h))
        magnitude = dsp.magnitude_from_features(decoded, cfg=self.cfg)
        samples = self._griffinlim.push(magnitude)
        self._update_gate(levels)
        if samples.shape[0]:
            self._converted.put(self._apply_gate(np.asarray(samples, np.float32)))
        self.hops += 1

    def _source_code(self, window_f: np.ndarray):
        """The running mean of f over the encoder windows that hold speech, this one included; None before
        the first. Speech as `vc.speakers.speech_flags` decides it for a file, the loudest window so far
        standing in for the file's loudest segment. The enrolled source's code when there is one."""
        if self.source is not None:
            return self.source.f
        if self.strength != 1.0:
            level = 10.0 * math.log10(max(float(np.mean(self._context_power)), 1e-20))
            self._loudest_window_db = max(self._loudest_window_db, level)
            if speech_frames(np.array(level), self._loudest_window_db):
                self._source_f_sum += window_f
                self._source_windows += 1
        return self._source_f_sum / self._source_windows if self._source_windows else None

    def _move_codes(self, z_mean: np.ndarray, speech: np.ndarray) -> np.ndarray:
        """Count the new frames that hold speech into the source's z statistics, then move the window's z
        from those statistics (so far) to the target's, as `vc.conversion` moves a whole file's."""
        if self.source is not None and self.source.z_stats is not None:
            source = self.source.z_stats
        else:
            self._source_z.update(z_mean[0, -speech.shape[0]:][speech])
            source = self._source_z.estimate(prior=source_prior(self.model, self.target_z_stats))
        return move_codes(z_mean, source, self.target_z_stats, code_stats_amount(self.strength))

    def _update_gate(self, levels: np.ndarray) -> None:
        self.input_level_db = float(np.max(levels))
        if self.gate_db is None:
            return
        gains = np.empty(levels.shape[0], np.float32)
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
