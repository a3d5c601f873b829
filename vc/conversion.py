"""Whole-utterance voice conversion (`vc.convert`, `convert_file`); `vc.batch` drives many files.

Quality path: the utterance's log-magnitude frames are cut into overlapping windows of the model's
segment length (half-window hop), each window is encoded, its f replaced by the target's, its z moved from
the source's statistics to the target's (`vc.code_stats`) and decoded; the decoded windows are blended
with weights that sum to one across the overlaps, and each speech frame's envelope is drawn onto the
nearest of the target's own envelopes (`vc.exemplars`). That is the target's spectral envelope; the
harmonics come back at the source's F0 contour moved to the target's pitch register (`vc.pitch`), each
voiced frame's taken from the target's own voiced frame of the nearest pitch (`vc.exemplars`).
Griffin-Lim (PGHI start) runs once over the whole utterance, so no block edges are audible.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vc.audio import AudioError, check_audio, read_audio, resample, write_wav
from vc.code_stats import CodeStats, RunningCodeStats, frame_level_db, move_codes, speech_frames
from vc.exemplars import VoicedExemplars, draw_onto_exemplars, stretch_along_frequency, voiced_fine_structure
from vc.model import Model, default_model_dir, load_model
from vc.speakers import Speaker, check_speaker, load_speaker, speech_flags

DEFAULT_N_ITER = 32
# f = f_source + strength * (f_target - f_source). 1 is the plain DSAE swap (and the full moves of z's
# statistics and of the envelopes); beyond 1, f goes past the target, which cancels more of the source that
# z still carries. Chosen on the human dev speakers (docs/experiments.md).
DEFAULT_STRENGTH = 2.0
MAX_STRENGTH = 3.0
# Beyond strength 1 the moves of z's statistics and of the envelopes go on past the target too, more
# gently than f (docs/experiments.md).
MOVE_PAST_TARGET = 0.2
# How much of that move the envelopes make towards the target's own (`envelope_amount`).
ENVELOPE_SHARE = 1.0
# Which of the target's envelopes a frame is drawn onto: the nearest by "envelope", or by "z", what is said
# (needs a speaker file with envelope_z). With the default model's 16-dimensional z, "z" did not keep more
# words than "envelope" (README, "Conversion quality"); it is for models whose z carries the phones.
EXEMPLAR_MATCHES = ("envelope", "z")
EXEMPLAR_MATCH = "envelope"
DEFAULT_FINE_STRUCTURE = "target"
MODEL_BATCH = 256


def _window_weights(length: int, hop: int) -> np.ndarray:
    """Blend weights: flat in the middle, raised-cosine ramps over the (length - hop) frames shared with
    each neighbour, so two overlapping windows cross-fade and sum to one. Never zero (every frame of a
    window counts a little, which keeps the normalisation defined at the utterance's ends)."""
    overlap = length - hop
    w = np.ones(length, np.float64)
    if overlap > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        w[:overlap] = ramp
        w[length - overlap:] = np.minimum(w[length - overlap:], ramp[::-1])
    return w.astype(np.float32)


@dataclass
class EncodedWindows:
    """An utterance's overlapping model windows, encoded: window k covers frames starts[k] to starts[k] + L - 1
    of the silence-padded utterance."""

    starts: np.ndarray     # (n,) first frame of each window
    f_mean: np.ndarray     # (n, f_dim)
    z_mean: np.ndarray     # (n, L, z_dim)
    hop: int
    n_frames: int          # T, before padding


def encode_windows(frames: np.ndarray, model: Model, window_hop: int | None = None) -> EncodedWindows:
    """Raw log-magnitude frames (T, n_features) -> the posterior means of windows of the model's segment
    length that start every `window_hop` frames (default: half a segment)."""
    L = model.segment_length
    T = frames.shape[0]
    hop = max(1, L // 2) if window_hop is None else int(window_hop)
    if not 1 <= hop <= L:
        raise ValueError(f"window_hop must be between 1 and the segment length {L}, not {window_hop}")
    n_windows = 1 if T <= L else int(np.ceil((T - L) / hop)) + 1
    floor = np.float32(np.log(model.feature_config.log_floor))
    x = np.full(((n_windows - 1) * hop + L, frames.shape[1]), floor, np.float32)  # padding is silence
    x[:T] = frames
    x = model.normalise(x)
    starts = np.arange(n_windows) * hop
    idx = starts[:, None] + np.arange(L)[None, :]
    f_means, z_means = [], []
    for b in range(0, n_windows, MODEL_BATCH):
        f_mean, _, z_mean, _ = model.encode(x[idx[b:b + MODEL_BATCH]])
        f_means.append(f_mean)
        z_means.append(z_mean)
    return EncodedWindows(starts, np.concatenate(f_means), np.concatenate(z_means), hop, T)


def decode_windows(windows: EncodedWindows, code: np.ndarray, model: Model) -> np.ndarray:
    """Decode every window with speaker code `code` and blend the overlaps -> raw frames (T, n_features)."""
    def decoded():
        for b in range(0, windows.starts.shape[0], MODEL_BATCH):
            z_mean = windows.z_mean[b:b + MODEL_BATCH]
            f = np.broadcast_to(code, (z_mean.shape[0], code.shape[0]))
            yield model.denormalise(model.decode(f, z_mean))

    return _blend(windows, model.segment_length, decoded())


def frame_codes(windows: EncodedWindows, model: Model) -> np.ndarray:
    """The windows' z blended into one per frame, (T, z_dim), as `decode_windows` blends the decoded frames."""
    return _blend(windows, model.segment_length, iter([windows.z_mean]))


def _blend(windows: EncodedWindows, L: int, batches) -> np.ndarray:
    """Per-window values, (n_windows, L, D) given as consecutive batches, cross-faded into one row per frame
    (T, D) with `_window_weights`; batches keep a long file from holding every decoded window at once."""
    n_windows = windows.starts.shape[0]
    weights = _window_weights(L, windows.hop) if n_windows > 1 else np.ones(L, np.float32)
    padded_T = int(windows.starts[-1]) + L
    acc = wsum = None
    done = 0
    for values in batches:
        if acc is None:
            acc = np.zeros((padded_T, values.shape[-1]), np.float32)
            wsum = np.zeros(padded_T, np.float32)
        for start, window in zip(windows.starts[done:done + values.shape[0]], values * weights[None, :, None]):
            acc[start:start + L] += window
            wsum[start:start + L] += weights
        done += values.shape[0]
    T = windows.n_frames
    return acc[:T] / wsum[:T, None]


def convert_features(frames: np.ndarray, target: np.ndarray, model: Model, window_hop: int | None = None) -> np.ndarray:
    """Raw log-magnitude frames (T, n_features) -> converted raw frames (T, n_features), every window
    decoded with the speaker code `target`."""
    return decode_windows(encode_windows(frames, model, window_hop), target, model)


def with_harmonics(envelope: np.ndarray, audio: np.ndarray, target: Speaker, model: Model,
                   strength: float = 1.0, source_frames: np.ndarray | None = None,
                   fine_structure: str = DEFAULT_FINE_STRUCTURE) -> np.ndarray:
    """Converted frames (T, n_features) -> the same envelope carrying harmonics at the source's F0 contour
    in the target's register (the source's own register when the target has none; `register_amount` of
    the way there at strengths below 1). Unvoiced sources (whisper) come back unchanged.
    fine_structure: see `FINE_STRUCTURES`; "source" needs the source's own raw frames."""
    from vc.pitch import Register, yin

    cfg = model.feature_config
    f0, voiced = yin(audio, cfg.sr, cfg.hop_length)
    T = envelope.shape[0]
    f0, voiced = f0[:T], voiced[:T]
    return rebuild_harmonics(envelope, f0, voiced, Register.of(f0, voiced), target.register, cfg,
                             voiced_exemplars=target.voiced if fine_structure == "target" else None,
                             amount=register_amount(strength),
                             source_fine=source_fine_structure(source_frames, fine_structure, T))[0]


def source_fine_structure(source_frames: np.ndarray | None, fine_structure: str, n: int) -> np.ndarray | None:
    """The source's own fine structure (log spectrum less its envelope) of its first n frames when
    `fine_structure` is "source", else None."""
    from vc.pitch import smooth_across_frequency

    if fine_structure != "source":
        return None
    frames = np.asarray(source_frames[:n], np.float32)
    return frames - smooth_across_frequency(frames)


# --- the conversion itself: the file path above and the streaming engine (vc.engine) both use these two --

# What is laid over the converted envelope: "target", the target's own voiced frames (pulse train without
# them); "source", the source's own fine structure, stretched along frequency to the converted pitch in
# voiced frames and as it is in the others (its breath, jitter and noise, which real speech has and a
# frame-by-frame choice of exemplars does not keep from one frame to the next); "pulse", a pulse train.
FINE_STRUCTURES = ("target", "source", "pulse")


def rebuild_harmonics(envelope: np.ndarray, f0: np.ndarray, voiced: np.ndarray, source, target, cfg,
                      phase: float = 0.0, voiced_exemplars: VoicedExemplars | None = None, *,
                      amount: float = 1.0, source_fine: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Decoded frames (T, n_features) and the source's F0 track of the same frames -> (frames with the
    harmonics of that contour moved `amount` of the way from the `source` register to the `target` register
    (the source's own when target is None), the pulse train's phase after the last frame). The harmonics
    are the target's own fine structure when `voiced_exemplars` holds it
    (`vc.exemplars.voiced_fine_structure`) and amount > 0, else a pulse train's. A source register of None
    (no voiced speech yet) leaves the envelope as it is. `phase` continues a stream. `source_fine`, the
    source's own fine structure of the same frames, replaces both: stretched to the moved F0 in voiced
    frames, unchanged in the others."""
    from vc.pitch import Register, harmonic_fine_structure, smooth_across_frequency, transpose

    if source is None:
        return envelope, phase
    goal = target or source
    if amount != 1.0:
        goal = Register(source.log_mean + amount * (goal.log_mean - source.log_mean),
                        source.log_std * (goal.log_std / source.log_std) ** amount)
    moved = transpose(f0, voiced, source, goal)
    smooth = smooth_across_frequency(envelope)
    if source_fine is not None:
        fine = np.array(source_fine, np.float32, copy=True)
        fine[voiced] = stretch_along_frequency(fine[voiced], moved[voiced] / f0[voiced], cfg)
    elif voiced_exemplars is not None and amount > 0:
        fine = voiced_fine_structure(smooth, moved, voiced, voiced_exemplars, cfg)
    else:
        fine, phase = harmonic_fine_structure(moved, voiced, cfg, phase)
    return smooth + fine, phase


def mixed_code(source_f, target_f: np.ndarray, strength: float) -> np.ndarray:
    """The f the decoder gets: f_source + strength * (target_f - f_source); the target alone when the
    source's code is unknown (None: no speech yet) or strength is 1."""
    if source_f is None or strength == 1.0:
        return target_f
    source_f = np.asarray(source_f, np.float64)
    return (source_f + strength * (target_f - source_f)).astype(np.float32)


def check_fine_structure(fine_structure) -> str:
    if fine_structure not in FINE_STRUCTURES:
        raise ValueError(f"fine_structure must be one of {FINE_STRUCTURES}, not {fine_structure!r}")
    return fine_structure


def check_strength(strength) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= MAX_STRENGTH:
        raise ValueError(f"strength must be a number from 0 to {MAX_STRENGTH:g}, not {strength!r}")
    return float(strength)


def conversion_code(windows: EncodedWindows, speech: np.ndarray, target_f: np.ndarray, model: Model,
                    strength: float) -> np.ndarray:
    """`mixed_code` with f_source measured as vc-enroll measures a target: the mean f of the whole segments
    flagged as speech (`vc.speakers.speech_flags`), which are the windows starting at multiples of the
    segment length."""
    on_speech = np.isin(windows.starts, np.flatnonzero(speech) * model.segment_length)
    source_f = windows.f_mean[on_speech].astype(np.float64).mean(axis=0) if on_speech.any() else None
    return mixed_code(source_f, target_f, strength)


def speech_frame_flags(frames: np.ndarray, model: Model) -> np.ndarray:
    """Raw frames (T, n_features) -> True for the utterance's speech frames (`vc.code_stats.speech_frames`)."""
    levels = frame_level_db(frames, model.feature_config)
    return speech_frames(levels, float(levels.max()))


def source_code_stats(windows: EncodedWindows, speech: np.ndarray, model: Model,
                      prior: CodeStats | None = None) -> CodeStats | None:
    """z's statistics over the utterance's speech frames (flags from `speech_frame_flags`), each frame
    counted once in every window that holds it; `prior` as in `RunningCodeStats.estimate`."""
    t = windows.starts[:, None] + np.arange(model.segment_length)[None, :]
    inside = t < windows.n_frames
    stats = RunningCodeStats(model.z_dim)
    stats.update(windows.z_mean[inside & speech[np.minimum(t, windows.n_frames - 1)]])
    return stats.estimate(prior)


def source_prior(model: Model, target: CodeStats) -> CodeStats:
    """Where the estimate of the source's z statistics starts: the training speakers' statistics when the
    model file carries them (an unheard source is an average speaker), else the target's own (no move
    until the source has spoken)."""
    return model.z_population or target


def code_stats_amount(strength: float) -> float:
    """How much of the moves towards the target's statistics and envelopes goes with a strength: none at 0
    (the source's own voice), proportionally more up to all of it at 1 (the plain swap), and past the
    target beyond 1 at MOVE_PAST_TARGET of f's rate (1.2 at the default strength, 2.0)."""
    if strength <= 1.0:
        return strength
    return 1.0 + MOVE_PAST_TARGET * (strength - 1.0)


def register_amount(strength: float) -> float:
    """How far the pitch register moves and whether the target's fine structure is used: in proportion up
    to all of it at strength 1 (never past the target: a pitch beyond the target's is not the target's
    voice); none at 0, the source's own voice."""
    return min(strength, 1.0)


def matching_codes(envelope_z) -> bool:
    """Whether envelopes are matched by z: EXEMPLAR_MATCH says "z" and the speaker file has envelope_z."""
    if EXEMPLAR_MATCH not in EXEMPLAR_MATCHES:
        raise ValueError(f"EXEMPLAR_MATCH must be one of {EXEMPLAR_MATCHES}, not {EXEMPLAR_MATCH!r}")
    return EXEMPLAR_MATCH == "z" and envelope_z is not None


def envelope_amount(strength: float) -> float:
    """How far each speech frame's envelope is drawn onto the target's own: ENVELOPE_SHARE of the moves of
    z's statistics (`code_stats_amount`)."""
    return ENVELOPE_SHARE * code_stats_amount(strength)


def convert_audio16k(audio: np.ndarray, target, model: Model, *, n_iter: int = DEFAULT_N_ITER,
                     harmonics: bool = True, strength: float = DEFAULT_STRENGTH,
                     fine_structure: str = DEFAULT_FINE_STRUCTURE) -> np.ndarray:
    """Mono float32 at the model's rate -> converted audio of the same length and rate.

    target: a Speaker or a float32 (f_dim,) code; a Speaker's z statistics move the source's z to the
    target's (`vc.code_stats`). harmonics=False returns the DSAE's envelope alone
    (breathy, pitchless: what the model itself reconstructs). strength: how far f moves from the source's
    code towards the target's and beyond (0: the source's own voice, 1: the target's code, default 2.0).
    fine_structure: what carries the harmonics over the converted envelope (`FINE_STRUCTURES`)."""
    from vc.dsp import log_magnitude

    audio = check_audio(audio)
    target = check_speaker(target, model.f_dim, z_dim=model.z_dim, n_features=model.n_features)
    strength = check_strength(strength)
    fine_structure = check_fine_structure(fine_structure)
    cfg = model.feature_config
    n = audio.shape[0]
    if n < cfg.n_fft:  # the STFT needs one full frame; pad with silence and cut back afterwards
        audio = np.pad(audio, (0, cfg.n_fft - n))
    frames = log_magnitude(audio, cfg=cfg)
    windows = encode_windows(frames, model)
    code = conversion_code(windows, speech_flags(audio[:n], model), target.f, model, strength)
    speech = speech_frame_flags(frames, model)
    if target.z_stats is not None:
        source = source_code_stats(windows, speech, model, prior=source_prior(model, target.z_stats))
        windows.z_mean = move_codes(windows.z_mean, source, target.z_stats, code_stats_amount(strength))
    converted = decode_windows(windows, code, model)
    if target.envelopes is not None:
        codes = frame_codes(windows, model) if matching_codes(target.envelope_z) else None
        converted = draw_onto_exemplars(converted, target.envelopes, speech, amount=envelope_amount(strength),
                                        codes=codes, exemplar_codes=target.envelope_z)
    if harmonics:
        converted = with_harmonics(converted, audio, target, model, strength, frames, fine_structure)
    return synthesise(converted, cfg, length=audio.shape[0], n_iter=n_iter)[:n]


def synthesise(frames: np.ndarray, cfg, *, length: int, n_iter: int = DEFAULT_N_ITER) -> np.ndarray:
    """Raw log-magnitude frames (T, n_features) -> float32 audio of `length` samples: the magnitude
    (DC restored) through fast Griffin-Lim from a PGHI start, once over the whole utterance."""
    from vc.dsp import griffinlim, magnitude_from_features

    mag = magnitude_from_features(frames, cfg=cfg)
    y = griffinlim(mag, n_iter=n_iter, momentum=0.99, init="pghi", hop_length=cfg.hop_length,
                   win_length=cfg.win_length, n_fft=cfg.n_fft, window=cfg.window, center=cfg.center,
                   length=length)
    return np.asarray(y, dtype=np.float32)


def resolve_target(target, model: Model) -> Speaker:
    if isinstance(target, (str, os.PathLike)):
        return load_speaker(target, model)
    return check_speaker(target, model.f_dim, z_dim=model.z_dim, n_features=model.n_features)


_loaded_models: dict = {}


def _cached_model(model_dir) -> Model:
    # Python users call vc.convert in loops; load each model directory once per process.
    path = Path(model_dir) if model_dir is not None else default_model_dir()
    key = str(path.resolve())
    if key not in _loaded_models:
        _loaded_models[key] = load_model(path)
    return _loaded_models[key]


def convert(audio, sr: int, target, model=None, *, n_iter: int = DEFAULT_N_ITER, out_sr: int | None = None,
            harmonics: bool = True, strength: float = DEFAULT_STRENGTH,
            fine_structure: str = DEFAULT_FINE_STRUCTURE) -> np.ndarray:
    """Convert `audio` at rate `sr` to the `target` speaker.

    audio: (samples,) or (samples, channels), floating point or integer PCM (scaled by its dtype's range);
    `vc.audio.check_audio` says exactly what is accepted. A (channels, samples) array is refused: pass
    `audio.T`. target: a speaker.npy path, a `vc.speakers.Speaker` or a float32 (f_dim,) code; model: a Model, a
    model directory or None (the default model). Returns mono float32 at `out_sr` (default: `sr`).
    harmonics, strength, fine_structure: see `convert_audio16k`.
    """
    if not isinstance(model, Model):
        model = _cached_model(model)
    target = resolve_target(target, model)
    mono = check_audio(audio)
    if mono.size == 0:
        raise AudioError("audio: is empty")
    if isinstance(sr, bool) or not isinstance(sr, (int, float, np.number)) or not (sr > 0 and math.isfinite(sr) and sr == int(sr)):
        raise ValueError(f"sr must be a positive whole number of samples per second, not {sr!r}")
    sr = int(sr)
    model_sr = model.feature_config.sr
    converted = convert_audio16k(resample(mono, sr, model_sr), target, model, n_iter=n_iter, harmonics=harmonics,
                                 strength=strength, fine_structure=fine_structure)
    out = resample(converted, model_sr, out_sr or sr)
    # Keep clipping rare without changing loudness of ordinary speech.
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 0.99:
        out = out * (0.99 / peak)
    return out.astype(np.float32, copy=False)


def convert_file(in_path, out_path, target, model: Model, *, n_iter: int = DEFAULT_N_ITER,
                 out_sr: int | None = None, harmonics: bool = True, strength: float = DEFAULT_STRENGTH) -> float:
    """Read, convert, write atomically; returns the input's duration in seconds."""
    audio, file_sr = read_audio(in_path, sr=model.feature_config.sr)
    converted = convert(audio, model.feature_config.sr, target, model, n_iter=n_iter, out_sr=out_sr or file_sr,
                        harmonics=harmonics, strength=strength)
    write_wav(out_path, converted, out_sr or file_sr)
    return audio.size / model.feature_config.sr
