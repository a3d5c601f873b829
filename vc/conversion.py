"""Whole-utterance voice conversion: `vc.convert` (an array), `convert_file` (a file); `vc.batch` drives
many files. The stages are `vc.stages.convert_frames`, as in the streaming engine; here they see the
whole utterance at once: the source is measured over all of it, the windows overlap by half and are
cross-faded, and Griffin-Lim runs once over the whole utterance, so no block edges are audible.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from vc.audio import AudioError, check_audio, read_audio, resample, write_wav
from vc.levels import speech_frame_flags, speech_segment_flags
from vc.model import Model, default_model_dir, load_model
from vc.settings import ConversionSettings
from vc.source import SourceEstimate
from vc.speakers import Speaker, SpeakerError, check_speaker, load_speaker
from vc.stages import convert_frames, decode_windows, encode_windows, source_prior, synthesise

OUTPUT_PEAK = 0.99  # louder output is scaled down as a whole: clipping stays rare, ordinary speech untouched


def convert(audio, sr: int, target, model=None, *, settings: ConversionSettings | None = None,
            source=None, out_sr: int | None = None, **knobs) -> np.ndarray:
    """Convert `audio` at rate `sr` to the `target` speaker.

    audio: (samples,) or (samples, channels), floating point or integer PCM (scaled by its dtype's range);
    `vc.audio.check_audio` says exactly what is accepted. A (channels, samples) array is refused: pass
    `audio.T`. target: a speaker.npy path, a `vc.speakers.Speaker` or a float32 (f_dim,) code. model: a
    Model, a model directory or None (the default model). source: the speaker who talks, enrolled with
    vc-enroll (a path or a Speaker): what it holds is used instead of what is measured on `audio`.
    settings and knobs: a `vc.settings.ConversionSettings` and/or its fields by name (strength=1.5, ...).
    Returns mono float32 at `out_sr` (default: `sr`).
    """
    if not isinstance(model, Model):
        model = _cached_model(model)
    settings, target, source = resolve_request(model, target, source, settings, knobs)
    mono = check_audio(audio)
    if mono.size == 0:
        raise AudioError("audio: is empty")
    if isinstance(sr, bool) or not isinstance(sr, (int, float, np.number)) or not (sr > 0 and math.isfinite(sr) and sr == int(sr)):
        raise ValueError(f"sr must be a positive whole number of samples per second, not {sr!r}")
    return _convert_to(resample(mono, int(sr), model.feature_config.sr), out_sr or int(sr), target, model,
                       settings, source)


def convert_file(in_path, out_path, target, model: Model, *, settings: ConversionSettings | None = None,
                 source=None, out_sr: int | None = None, **knobs) -> float:
    """Read, convert (`convert`), write atomically; returns the input's duration in seconds."""
    settings, target, source = resolve_request(model, target, source, settings, knobs)
    audio, file_sr = read_audio(in_path, sr=model.feature_config.sr)   # checked as it is read
    write_wav(out_path, _convert_to(audio, out_sr or file_sr, target, model, settings, source), out_sr or file_sr)
    return audio.size / model.feature_config.sr


def convert_at_model_rate(audio: np.ndarray, target, model: Model, *, settings: ConversionSettings | None = None,
                          source: Speaker | None = None, **knobs) -> np.ndarray:
    """Mono float32 at the model's rate -> converted audio of the same length and rate, not peak-limited
    (what `convert` does after resampling; for evaluations that score the model's own output)."""
    audio = check_audio(audio)
    settings, target, source = resolve_request(model, target, source, settings, knobs)
    return _convert(audio, target, model, settings, source)


def _convert_to(audio: np.ndarray, out_sr: int, target: Speaker, model: Model, settings: ConversionSettings,
                source: Speaker | None) -> np.ndarray:
    """Checked audio at the model's rate -> converted, at out_sr, scaled down as a whole if it would clip."""
    out = resample(_convert(audio, target, model, settings, source), model.feature_config.sr, out_sr)
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > OUTPUT_PEAK:
        out = out * (OUTPUT_PEAK / peak)
    return out.astype(np.float32, copy=False)


def _convert(audio: np.ndarray, target: Speaker, model: Model, settings: ConversionSettings,
             enrolled: Speaker | None) -> np.ndarray:
    from vc.dsp import log_magnitude
    from vc.excitation import fine_structure_at_ratio
    from vc.pitch import yin

    cfg = model.feature_config
    n = audio.shape[0]
    if n < cfg.n_fft:  # the STFT needs one full frame; pad with silence and cut back afterwards
        audio = np.pad(audio, (0, cfg.n_fft - n))
    frames = log_magnitude(audio, cfg=cfg)
    windows = encode_windows(frames, model)
    speech = speech_frame_flags(frames, cfg)
    segments = speech_segment_flags(audio[:n], segment_samples=model.segment_length * cfg.hop_length,
                                    n_fft=cfg.n_fft)
    pitch = None
    if settings.harmonics:
        f0, voiced = yin(audio, cfg.sr, cfg.hop_length)
        pitch = (f0[:frames.shape[0]], voiced[:frames.shape[0]])
    source = SourceEstimate.of_utterance(windows.speech_f(segments), windows.speech_z(speech),
                                         *(pitch or (None, None)), prior=source_prior(model, target.z_stats),
                                         enrolled=enrolled)
    phone_keys = model.phones.keys(frames) if settings.matches_by_phones else None
    converted, _ = convert_frames(windows.z_mean, windows, model=model, target=target, source=source,
                                  settings=settings, speech=speech, pitch=pitch, source_frames=frames,
                                  phone_keys=phone_keys,
                                  source_at_pitch=lambda rows, ratio: fine_structure_at_ratio(audio, rows, ratio, cfg))
    return synthesise(converted, cfg, length=audio.shape[0], n_iter=settings.n_iter,
                      momentum=settings.momentum)[:n]


def reconstruct_features(frames: np.ndarray, code: np.ndarray, model: Model, window_hop: int | None = None) -> np.ndarray:
    """Raw log-magnitude frames (T, n_features) -> the decoder's frames with every window's f replaced by
    `code` and z as encoded: the plain DSAE swap (or, with the source's own code, its reconstruction)."""
    return decode_windows(encode_windows(frames, model, window_hop), code, model)


def resolve_request(model: Model, target, source, settings: ConversionSettings | None,
                    knobs: dict) -> tuple[ConversionSettings, Speaker, Speaker | None]:
    """What every entrance checks once: the settings with the named knobs, the target and the enrolled
    source (None: measured on the audio), each against the model."""
    settings = ConversionSettings.of(settings, **knobs)
    speaker = resolve_speaker(target, model)
    named = f"{target}: " if isinstance(target, (str, os.PathLike)) else "the target: "
    # asked for by name or by default: never fall back to another match unsaid
    if settings.exemplar_match == "z" and speaker.envelopes is not None and speaker.envelope_z is None:
        raise SpeakerError(f"{named}its envelopes have no z (envelope_z) to match by what is said; enrol it "
                           f"again (vc-enroll) with this model, or match by envelope (exemplar_match='envelope', "
                           f"--exemplar-match envelope)")
    if settings.matches_by_phones:
        if model.phones is None:
            raise SpeakerError(f"exemplar_match {settings.exemplar_match!r} needs a phone recogniser: "
                               f"{model.model_dir} has no phones.onnx (python -m training.phones export)")
        if speaker.envelope_phones is None:
            raise SpeakerError(f"{named}exemplar_match {settings.exemplar_match!r}: no phone keys; "
                               f"enrol it again (vc-enroll) with this model")
    return settings, speaker, None if source is None else resolve_speaker(source, model, name="source")


def resolve_speaker(speaker, model: Model, *, name: str = "target") -> Speaker:
    """A speaker.npy path, a Speaker or a bare float32 code -> a Speaker checked against the model."""
    if isinstance(speaker, (str, os.PathLike)):
        return load_speaker(speaker, model)
    return check_speaker(speaker, model.f_dim, name=name, z_dim=model.z_dim, n_features=model.n_features,
                         n_phones=model.phones.n_phones if model.phones is not None else None)


_loaded_models: dict = {}


def _cached_model(model_dir) -> Model:
    # Python users call vc.convert in loops; load each model directory once per process.
    path = Path(model_dir) if model_dir is not None else default_model_dir()
    key = str(path.resolve())
    if key not in _loaded_models:
        _loaded_models[key] = load_model(path)
    return _loaded_models[key]
