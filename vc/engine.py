"""Streaming voice conversion: `StreamingConverter` takes microphone audio at the model's rate in blocks
of any size and returns converted audio; it knows nothing about devices (see `vc.live`).

Signal path per hop
-------------------
Samples go into a streaming log-magnitude STFT (`vc.dsp`) whose state carries across blocks, so frames
come out exactly as the whole-file STFT computes them, and into a streaming YIN tracker
(`vc.streaming_pitch`). Each time `hop` new frames are complete, and their F0 known, the encoder sees the
newest `segment_length` frames (the model's 200 ms window; silence before the start). By default the hop
is half a window and the windows are cross-faded exactly as the file path blends its windows
(`vc.stages.BlendedFrames`): every frame is decoded in two windows, with past and future context, and
comes out once no later window holds it, so the stream decodes what a file decodes and no window's edge
is heard (a window decoded on its own loses words at its edges). With `crossfade=False` (the low-latency
preset) each hop's window gives its newest `hop` frames, decoded once. The stages of the file path
(`vc.stages.convert_frames`) run on the frames that are final. The source's f, z statistics and register are running estimates
(`vc.source.SourceEstimate`), rough in the first seconds, unless the speaker enrolled themselves
(`source=`). The frames then go to `StreamingGriffinLim`, which keeps the phases of committed frames fixed,
iterates the `lookahead` newest frames with the new ones, and returns the samples no uncommitted frame
can change any more. Frames are computed and committed on fixed positions of the sample stream, so the
output does not depend on how the input was cut into blocks.

Timing (what "latency" is)
--------------------------
Output sample s reconstructs input sample s (frame t is centred on sample t*hop_length, as in librosa's
`center=True`). What delays it:

- the STFT: frame t is complete once sample t*hop_length + n_fft/2 - 1 has arrived (n_fft/2 = 12.5 ms);
- the pitch tracker (with harmonics): YIN's frame for frame t reads 401 samples past its centre (two
  periods of 60 Hz plus one lag range), 201 samples (12.6 ms) beyond the STFT's, and its decisions (runs,
  medians) look `pitch_lookahead_frames` further; what of this a frame waits for after its hop is P;
- the hop: frames are processed in groups of H/hop_length, so a frame waits up to H - hop_length for the
  rest of its hop (and the sample that completes it up to hop_length - 1 for its frame);
- the cross-fade: a frame is final C = segment_length - H/hop_length frames after its hop (0 without);
- Griffin-Lim: after F frames, samples before (F - L)*hop_length - n_fft/2 are final, i.e. L look-ahead
  frames plus half a window.

Just before a hop completes these add up to the worst case, and the engine makes that its constant delay:
every `push` returns exactly as many samples as it was given, the conversion delayed by

    latency = H + (C + L)*hop_length + n_fft - hop_length - 1 + P samples

so nothing waits for output that is not final yet, whatever the block size. At 16 kHz, the default
(H = 100 ms, C = 10 frames, L = 3) gives 244.9 ms; the low-latency preset (H = 40 ms, no cross-fade,
L = 3) 97.5 ms (84.9 ms without harmonics). A cross-faded frame is converted C frames after its hop, so the
tracker decides it seeing 4 frames of its future, as much as the whole-file tracker's runs and medians
reach, and still has its answer before the hop (P = 0): the stream's voicing and F0 are the whole file's
but for the loudness floor. Without a cross-fade the tracker takes no look-ahead beyond the hop: a hop's
newest frames have their voicing decided without the 2-4 frames the whole-file tracker also sees, and
P = 201 samples. A live set-up adds the device buffers, the resamplers and a margin for a
hop's compute time (`vc.live` adds them to its estimate).

Noise gate and pass-through (`vc.engine_output`): with a gate level set (`gate_db`, vc-live --gate-db), a
frame's level (dBFS, from its spectrum) opens the gate; it is off by default, as the file path has none;
pass-through outputs the input delayed by the same latency, so A/B switching stays in time, while
conversion keeps running underneath.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from vc import dsp
from vc.audio import AudioError, check_audio
from vc.conversion import resolve_request
from vc.engine_output import FrameDelay, NoiseGate, PassThroughMix, SampleQueue
from vc.excitation import RecentAudio
from vc.levels import SILENCE_DBFS, RunningSpeech, frame_level_db, power_db
from vc.phones import StreamingPhones
from vc.settings import ConversionSettings
from vc.source import SourceEstimate
from vc.speakers import Speaker, SpeakerError
from vc.stages import BlendedFrames, NewestFrames, convert_frames, source_prior, target_envelope_map
from vc.streaming_pitch import StreamingPitch, held_lookahead
from vc.z_statistics import STREAM_PRIOR_FRAMES

MODES = {
    # Windows of the model's segment every half segment, cross-faded as the file path does: each frame is
    # decoded twice, with past and future context, and no window's edge is heard.
    "default": {"hop_ms": 100.0, "lookahead_ms": 30.0, "crossfade": True},
    # A 40 ms hop with the same 200 ms encoder window, of which the newest frames are kept as they come.
    "lowlat": {"hop_ms": 40.0, "lookahead_ms": 30.0, "crossfade": False},
}
# No gate by default: fading the pauses to digital silence while the room's noise stays under the words cost
# the stream sound (DNSMOS -0.055 human test, -0.015 open corpus, -0.03 dev) and gained no words or voice
# (docs/experiments.md, stop 38). SILENCE_DBFS (-50) is the level to give it where the pauses must be silent.
DEFAULT_GATE_DB: float | None = None
DEFAULT_GATE_HOLD_MS = 150.0


class EngineError(ValueError):
    """Settings the engine cannot run with; the message says which and why."""


class StreamingConverter:
    """Block in, block out voice conversion; see the module docstring for the timing.

    model: a `vc.model.Model`; target: a `vc.speakers.Speaker` or a bare float32 (f_dim,) code (nothing to
    move but f: the source's pitch is kept). settings and knobs: a `vc.settings.ConversionSettings` and/or
    its fields by name, as `vc.convert` takes them. hop_ms: audio per model call (a multiple of the frame
    hop, at most the model's segment). crossfade: overlapping windows cross-faded as the file path does (a
    frame comes out once no later window holds it: the segment less the hop later); else each hop keeps the
    newest frames of its window. lookahead_ms: frames Griffin-Lim keeps open for the next hop.
    gate_db: frames below this level fade to silence; None disables the gate. source: the enrolled speaker
    who will talk: what the file holds is used from the first word instead of running estimates.
    """

    def __init__(self, model, target, *, settings: ConversionSettings | None = None,
                 hop_ms: float = MODES["default"]["hop_ms"], lookahead_ms: float = MODES["default"]["lookahead_ms"],
                 crossfade: bool = MODES["default"]["crossfade"],
                 gate_db: float | None = DEFAULT_GATE_DB, gate_hold_ms: float = DEFAULT_GATE_HOLD_MS,
                 passthrough: bool = False, source: Speaker | None = None, **knobs):
        cfg = model.feature_config
        self.model, self.cfg, self.sr = model, cfg, cfg.sr
        try:
            if source is not None and not isinstance(source, Speaker):
                raise EngineError(f"source must be an enrolled speaker (vc.speakers.Speaker), not {type(source).__name__}")
            self.settings, self.target, self.source = resolve_request(model, target, source, settings, knobs)
        except (SpeakerError, ValueError, TypeError) as exc:
            raise EngineError(str(exc)) from None
        frame_ms = 1000.0 * cfg.hop_length / cfg.sr
        self.hop_frames = _hop_frames(hop_ms, frame_ms, model.segment_length)
        self.crossfade = bool(crossfade)
        # A cross-faded frame waits for the windows after it: as many frames as two windows share.
        self.crossfade_frames = model.segment_length - self.hop_frames if self.crossfade else 0
        if not (lookahead_ms >= 0):
            raise EngineError(f"look-ahead must be >= 0 ms, not {lookahead_ms!r}")
        self.lookahead_frames = int(round(lookahead_ms / frame_ms))
        if gate_db is not None and (not math.isfinite(gate_db) or gate_db > 0):
            raise EngineError(f"gate level must be a finite dBFS value <= 0 (or off), not {gate_db!r}")
        self.gate_db = gate_db
        self.gate_hold_frames = int(round(gate_hold_ms / frame_ms))
        self.hop_samples = self.hop_frames * cfg.hop_length
        self.pitch_lookahead_frames = pitch_lookahead(cfg, self.crossfade_frames)
        self._passthrough = bool(passthrough)
        # The exemplar sets as float32 once, not on every hop (speaker files keep them as float16).
        self._hop_target = dataclasses.replace(self.target, **{
            name: np.asarray(getattr(self.target, name), np.float32)
            for name in ("envelopes", "envelope_z", "envelope_phones") if getattr(self.target, name) is not None})
        if self.settings.envelope_prediction:
            target_envelope_map(model, self._hop_target)   # fitted now, not in the first hop's time
        self._make_streams()  # reset() makes fresh ones; these tell the latencies
        # A hop's frames go on once the F0 of the frames it converts is known too (with a cross-fade those
        # are `crossfade_frames` older); YIN's frames reach further than the STFT's.
        self.pitch_latency_samples = (max(0, self._pitch.latency_samples - self._features.latency_samples
                                          - self.crossfade_frames * cfg.hop_length) if self.harmonics else 0)
        # Worst case just before a hop completes: the hop's first frame waits H - hop_length samples for the
        # rest of the hop and hop_length - 1 for its own last sample beyond the STFT's latency.
        self.latency_samples = (self.hop_samples - 1 + self._features.latency_samples + self.pitch_latency_samples
                                + self._griffinlim.latency_samples - cfg.hop_length
                                + self.crossfade_frames * cfg.hop_length)
        self.reset()

    # --- settings and state -----------------------------------------------------------------------------
    strength = property(lambda self: self.settings.strength)
    harmonics = property(lambda self: self.settings.harmonics)
    n_iter = property(lambda self: self.settings.n_iter)
    window_frames = property(lambda self: self.model.segment_length)
    algorithmic_latency_ms = property(lambda self: 1000.0 * self.latency_samples / self.sr)
    hop_ms = property(lambda self: 1000.0 * self.hop_samples / self.sr)
    lookahead_ms = property(lambda self: 1000.0 * self.lookahead_frames * self.cfg.hop_length / self.sr)
    pitch_latency_ms = property(lambda self: 1000.0 * self.pitch_latency_samples / self.sr,
                                doc="What the pitch tracker adds to the latency (0 without harmonics).")
    source_register = property(lambda self: self._source.register,
                               doc="The source's pitch register: enrolled, else running (None until voiced speech).")
    source_code_stats = property(lambda self: self._source.z_stats,
                                 doc="z's statistics of the source: enrolled, else over its speech so far.")

    @property
    def passthrough(self) -> bool:
        return self._passthrough

    @passthrough.setter
    def passthrough(self, value: bool) -> None:
        self._passthrough = self._mix.passthrough = bool(value)

    @property
    def current_f0(self) -> float:
        """F0 (Hz) of the newest frame converted, 0 when unvoiced or without harmonics."""
        return self._pitch.last_f0 if self.harmonics else 0.0

    def describe(self) -> str:
        pitch = (f"harmonics on (pitch tracker +{self.pitch_latency_ms:.1f} ms, "
                 f"{self.pitch_lookahead_frames} frames look-ahead)" if self.harmonics else "harmonics off")
        source = ", source enrolled" if self.source is not None else ""
        return (f"hop {self.hop_ms:g} ms, look-ahead {self.lookahead_ms:g} ms, window "
                f"{1000.0 * self.window_frames * self.cfg.hop_length / self.sr:g} ms"
                f"{' cross-faded' if self.crossfade else ''}, {self.n_iter} Griffin-Lim "
                f"iterations, strength {self.strength:g}, {pitch}{source}, algorithmic latency "
                f"{self.algorithmic_latency_ms:.1f} ms")

    def _make_streams(self) -> None:
        cfg = self.cfg
        self._features = dsp.StreamingLogMagnitude(cfg)
        self._griffinlim = dsp.StreamingGriffinLim(
            n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length, n_iter=self.settings.n_iter,
            momentum=self.settings.momentum, lookahead=self.lookahead_frames, window=cfg.window, center=cfg.center)
        self._pitch = StreamingPitch(cfg.sr, cfg.hop_length, lookahead_frames=self.pitch_lookahead_frames)
        # Phone keys of the frames a hop converts, which with a cross-fade have their future in the window.
        self._phones = (StreamingPhones(self.model.phones, float(np.log(cfg.log_floor)), delay=self.crossfade_frames)
                        if self.settings.matches_by_phones else None)

    def reset(self) -> None:
        """Forget all audio: the next push starts like a fresh engine (same settings)."""
        cfg, model = self.cfg, self.model
        self._make_streams()
        self._source = SourceEstimate(f_dim=model.f_dim, z_dim=model.z_dim, enrolled=self.source,
                                      prior=source_prior(model, self.target.z_stats),
                                      prior_frames=STREAM_PRIOR_FRAMES)
        self._speech_windows, self._speech_frames = RunningSpeech(), RunningSpeech()
        # Encoder context: the newest raw frames, silence before the first, and each one's mean square.
        silence = np.float32(np.log(cfg.log_floor))
        self._context = np.full((model.segment_length, cfg.n_features), silence, np.float32)
        self._context_power = np.zeros(model.segment_length)
        self._context_speech = np.zeros(model.segment_length, bool)
        self._pending, self._n_pending = [], 0
        self._layout = BlendedFrames(model.segment_length, self.hop_frames) if self.crossfade else None
        # What a hop's frames need once they are converted, held as long as the cross-fade holds them
        # (their pitch and phone keys are decided then, seeing their future).
        self._held = FrameDelay(self.crossfade_frames, {"frames": silence, "levels": SILENCE_DBFS, "speech": False})
        self._frames_in = 0
        self._harmonic_phase = 0.0
        # The source's own samples, where its excitation is analysed again at the moved pitch.
        self._recent = (RecentAudio(cfg) if self.harmonics and self.settings.fine_structure == "source" else None)
        # Output = D zeros, then the converted signal: one constant delay whatever the block size.
        delay = np.zeros(self.latency_samples, np.float32)
        self._converted, self._dry = SampleQueue(), SampleQueue()
        self._converted.put(delay)
        self._dry.put(delay)
        self._gate = NoiseGate(self.gate_db, self.gate_hold_frames, cfg.hop_length)
        self._mix = PassThroughMix(self.sr, self._passthrough)
        # For a status display.
        self.last_compute_s = self.compute_s_total = 0.0
        self.hops = self.samples_in = 0
        self.input_level_db = -math.inf

    # --- processing -------------------------------------------------------------------------------------
    def push(self, samples) -> np.ndarray:
        """Input samples at the model's rate (any count; (n,) or (n, channels), float or integer PCM: see
        `vc.audio.check_audio`) -> the same number of output samples, mono."""
        try:
            x = check_audio(samples, name="input block")
        except AudioError as exc:
            raise EngineError(str(exc)) from None
        return self._push(x)

    def _push(self, x: np.ndarray) -> np.ndarray:
        if x.size == 0:
            return np.zeros(0, np.float32)
        started = time.perf_counter()
        self.samples_in += x.size
        self._dry.put(x)
        if self._recent is not None:
            self._recent.push(x)
        frames = self._features.push(x)
        if frames.shape[0]:
            self._pending.append(frames)
            self._n_pending += frames.shape[0]
        if self.harmonics:
            self._pitch.push(x)
        while self._n_pending >= self.hop_frames and (not self.harmonics
                                                      or self._pitch.ready >= self._stream_frames_of_next_hop()):
            self._process_hop(self._take_pending(self.hop_frames))
        out = self._mix.mix(self._converted.take(x.size), self._dry.take(x.size))
        self.last_compute_s = time.perf_counter() - started
        self.compute_s_total += self.last_compute_s
        return out

    def flush(self) -> np.ndarray:
        """The last `latency_samples` of output (pushes that much silence); for converting files."""
        return self._push(np.zeros(self.latency_samples, np.float32))

    def convert(self, audio, block: int | None = None) -> np.ndarray:
        """A whole signal through `push` (in blocks of `block` samples, default one hop), delay removed."""
        try:
            audio = check_audio(audio)
        except AudioError as exc:
            raise EngineError(str(exc)) from None
        block = block or self.hop_samples
        pieces = [self._push(audio[i:i + block]) for i in range(0, audio.size, block)]
        pieces.append(self.flush())
        return np.concatenate(pieces)[self.latency_samples:self.latency_samples + audio.size]

    def _stream_frames_of_next_hop(self) -> int:
        """Frames the next hop converts that are the stream's, not the padding before its first."""
        return min(self.hop_frames, max(0, self._frames_in + self.hop_frames - self.crossfade_frames))

    def _take_pending(self, n: int) -> np.ndarray:
        frames = np.concatenate(self._pending, axis=0) if len(self._pending) > 1 else self._pending[0]
        taken, rest = frames[:n], frames[n:]
        self._pending = [rest] if rest.shape[0] else []
        self._n_pending = rest.shape[0]
        return taken

    def _process_hop(self, new_frames: np.ndarray) -> None:
        model, h = self.model, new_frames.shape[0]
        levels = frame_level_db(new_frames, self.cfg)
        self._context = np.concatenate([self._context[h:], new_frames], axis=0)
        self._context_power = np.concatenate([self._context_power[h:], np.power(10.0, levels / 10.0)])
        f_mean, _, z_mean, _ = model.encode(model.normalise(self._context)[None])
        self._frames_in += h
        speech = self._learn_source(f_mean, z_mean[0], levels)
        # The frames converted now: the newest, or with a cross-fade the window's oldest, which no later
        # window holds; `first` is the stream's frame number of the first (below 0: the window's padding).
        first = self._frames_in - self.crossfade_frames - h
        padding = max(0, -first)
        held = self._held.push(frames=new_frames, levels=levels, speech=speech)
        pitch = self._take_pitch(h, padding) if self.harmonics else None
        phone_keys = self._phones.push(new_frames) if self._phones is not None else None
        layout = NewestFrames(h, f_mean[0]) if self._layout is None else self._layout.next_window(f_mean[0])
        recent = self._recent
        at_pitch = None if recent is None else (lambda rows, ratio: recent.fine_structure_at_ratio(first + rows, ratio))
        frames, self._harmonic_phase = convert_frames(
            z_mean, layout, model=model, target=self._hop_target, source=self._source, settings=self.settings,
            speech=held["speech"], pitch=pitch, source_frames=held["frames"], phone_keys=phone_keys,
            source_at_pitch=at_pitch,
            phase=self._harmonic_phase)
        if recent is not None:
            recent.keep_from_frame(first + h)
        if padding < h:
            samples = self._griffinlim.push(dsp.magnitude_from_features(frames[padding:], cfg=self.cfg))
            self._gate.add_frames(held["levels"][padding:])
            if samples.shape[0]:
                self._converted.put(self._gate.apply(np.asarray(samples, np.float32)))
        self.input_level_db = float(np.max(levels))
        self.hops += 1

    def _take_pitch(self, h: int, padding: int) -> tuple[np.ndarray, np.ndarray]:
        """F0 and voicing of the h frames converted now, of which the first `padding` precede the stream."""
        f0, voiced = self._pitch.take(max(0, h - padding))
        self._source.add_pitch(f0, voiced)
        unvoiced = h - f0.shape[0]
        return (np.concatenate([np.zeros(unvoiced), f0]), np.concatenate([np.zeros(unvoiced, bool), voiced]))

    def _learn_source(self, f_mean: np.ndarray, z: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """The source as a file measures it: f over windows of speech (with a cross-fade only the windows that
        are the file's segments), z's statistics over frames of speech (with a cross-fade every frame of the
        window, as the file counts each frame in every window that holds it; else the new frames), each
        judged against the loudest so far. z: the window's (segment_length, z_dim). Returns the new frames'
        speech flags."""
        if not self.crossfade or self._frames_in % self.model.segment_length == 0:
            if self._speech_windows.update(power_db(float(np.mean(self._context_power)))):
                self._source.add_windows(f_mean)
        speech = self._speech_frames.update(levels)
        h = speech.shape[0]
        self._context_speech = np.concatenate([self._context_speech[h:], speech])
        self._source.add_frames(z[self._context_speech] if self.crossfade else z[-h:][speech])
        return speech


def _hop_frames(hop_ms: float, frame_ms: float, window_frames: int) -> int:
    hop_frames = hop_ms / frame_ms
    if not (hop_ms > 0) or abs(hop_frames - round(hop_frames)) > 1e-6:
        raise EngineError(f"hop {hop_ms:g} ms is not a positive multiple of the {frame_ms:g} ms frame hop")
    if round(hop_frames) > window_frames:
        raise EngineError(f"hop {hop_ms:g} ms is longer than the model's {window_frames * frame_ms:g} ms window; "
                          "use at most that")
    return int(round(hop_frames))


def pitch_lookahead(cfg, crossfade_frames: int) -> int:
    """The frames a cross-fade holds see their future: the pitch tracker may look as far ahead as fits in
    the wait without holding up a hop."""
    beyond_stft = StreamingPitch(cfg.sr, cfg.hop_length).latency_samples - dsp.StreamingLogMagnitude(cfg).latency_samples
    return held_lookahead(crossfade_frames, cfg.hop_length, beyond_stft)


def engine_for_mode(model, target, mode: str = "default", **overrides) -> StreamingConverter:
    if mode not in MODES:
        raise EngineError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    settings = dict(MODES[mode])
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return StreamingConverter(model, target, **settings)
