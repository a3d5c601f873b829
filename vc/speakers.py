"""Target speakers: enrol (average the posterior mean of f over speech segments, measure the pitch
register and the statistics of z) and save or load speaker.npy.

speaker.npy holds one record, readable with `np.load(path, allow_pickle=False)`: `f` (float32, f_dim),
the DSAE speaker code; `log_f0_mean`, `log_f0_std` (float32), the speaker's pitch register (median and
spread of natural-log F0 over voiced frames); `z_mean`, `z_std` (float32, z_dim), the mean and standard
deviation of the dynamic code z over the speaker's speech frames (`vc.z_statistics`); `envelopes` (float16,
(n, 48)), an unordered set of the speaker's own spectral envelopes; `voiced_envelopes`, `voiced_f0`,
`voiced_fine` (float16, (m, 48), (m,), (m, n_features)), an unordered set of the speaker's voiced frames,
each as its envelope, F0 (Hz) and harmonic fine structure (`vc.exemplars`); `envelope_z` (float16,
(n, z_dim)), what was said at each kept envelope: the posterior mean of z at that frame, by which a
converted frame finds the target's envelopes of the same sound. The decoder rebuilds a smooth
spectral envelope only, so the register is what puts the converted voice at the target's pitch (see
`vc.pitch`); z's statistics take out the part of the source speaker that z still carries; the exemplars
give back the detail of the target's own spectra that the decoder averages away. A record may leave out
any group after f (a whispered enrolment has no register or voiced frames; files written by earlier
versions lack the later groups), and a plain float32 (f_dim,) array is a target as well: conversion then
keeps what it cannot move (the source's pitch, z as encoded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vc.audio import AUDIO_EXTENSIONS, AudioError, read_audio
from vc.levels import speech_frame_flags, speech_segment_flags
from vc.exemplars import (MAX_VOICED, N_COEFFS, VoicedExemplars, envelope_coefficients, evenly_spaced, exemplar_set,
                          voiced_exemplar_set)
from vc.files import atomic_write
from vc.model import Model
from vc.pitch import Register, yin
from vc.z_statistics import CodeStats, RunningCodeStats

ENCODE_BATCH = 256


class SpeakerError(ValueError):
    """A speaker file or enrolment input that cannot be used; the message names the file and problem."""


@dataclass(frozen=True)
class Speaker:
    """A conversion target: the speaker code f and, when known, the pitch register."""

    f: np.ndarray                   # float32 (f_dim,)
    register: Register | None = None
    z_stats: CodeStats | None = None
    envelopes: np.ndarray | None = None   # float16 (n, vc.exemplars.N_COEFFS): the speaker's own envelopes
    voiced: VoicedExemplars | None = None  # the speaker's own voiced frames: F0, envelope, fine structure
    envelope_z: np.ndarray | None = None   # float16 (n, z_dim): z at each of `envelopes`' frames
    envelope_phones: np.ndarray | None = None  # float16 (n, phones): phone keys (vc.phones) of those frames

    def describe(self) -> str:
        if self.register is None:
            return "no pitch register (the source's pitch is kept)"
        return f"median F0 {np.exp(self.register.log_mean):.0f} Hz"


@dataclass
class Enrolment:
    embedding: np.ndarray  # float32 (f_dim,)
    register: Register | None
    z_stats: CodeStats | None
    envelopes: np.ndarray | None
    voiced: VoicedExemplars | None
    files: int
    segments: int
    speech_seconds: float
    audio_seconds: float
    skipped_segments: int
    failures: list = field(default_factory=list)  # (path, reason) of files that could not be read
    envelope_z: np.ndarray | None = None
    envelope_phones: np.ndarray | None = None

    def summary(self) -> str:
        text = (f"enrolled {self.speech_seconds:.1f} s of speech in {self.segments} segments of "
                f"{self.files} file(s) ({self.audio_seconds:.1f} s read, {self.skipped_segments} silent "
                f"segments skipped)")
        if self.failures:
            text += f"; {len(self.failures)} file(s) unreadable"
        if self.envelopes is not None:
            text += f"; {self.envelopes.shape[0]} envelopes kept"
        if self.voiced is not None:
            text += f", {self.voiced.f0.shape[0]} voiced frames"
        return f"{text}; {self.speaker.describe()}"

    @property
    def speaker(self) -> Speaker:
        return Speaker(self.embedding, self.register, self.z_stats, self.envelopes, self.voiced, self.envelope_z,
                       self.envelope_phones)


def audio_files(paths) -> list[Path]:
    """Files and folders (searched recursively, hidden entries skipped) -> sorted audio files."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                        found.append(Path(root) / name)
        elif p.is_file():
            found.append(p)
        else:
            raise SpeakerError(f"{p}: no such file or folder")
    return found


def speech_segments(audio: np.ndarray, model: Model, frames: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 at the model's rate -> (raw feature segments (n, L, n_features) that hold speech,
    number of silent segments dropped). Segments do not overlap. `frames`: the audio's log-magnitude
    frames when the caller has them already."""
    from vc.dsp import log_magnitude

    L = model.segment_length
    cfg = model.feature_config
    speech = speech_segment_flags(audio, segment_samples=L * cfg.hop_length, n_fft=cfg.n_fft)
    if speech.size == 0:
        return np.zeros((0, L, model.n_features), np.float32), 0
    if frames is None:
        frames = log_magnitude(audio, cfg=model.feature_config)  # centred frames: at least n_seg * L of them
    segments = frames[: speech.size * L].reshape(speech.size, L, -1)[speech]
    return np.ascontiguousarray(segments, dtype=np.float32), int(speech.size - speech.sum())


def posterior_f(segments: np.ndarray, model: Model) -> np.ndarray:
    """Raw feature segments (n, L, n_features) -> posterior means of f, (n, f_dim)."""
    return posterior_codes(segments, model)[0]


def posterior_codes(segments: np.ndarray, model: Model) -> tuple[np.ndarray, np.ndarray]:
    """Raw feature segments (n, L, n_features) -> posterior means of f (n, f_dim) and of z (n, L, z_dim)."""
    fs, zs = [], []
    for start in range(0, segments.shape[0], ENCODE_BATCH):
        f_mean, _, z_mean, _ = model.encode(model.normalise(segments[start:start + ENCODE_BATCH]))
        fs.append(f_mean)
        zs.append(z_mean)
    if not fs:
        return (np.zeros((0, model.f_dim), np.float32),
                np.zeros((0, model.segment_length, model.z_dim), np.float32))
    return np.concatenate(fs, axis=0), np.concatenate(zs, axis=0)


def enroll(paths, model: Model, on_error: str = "raise") -> Enrolment:
    """Average the posterior mean of f over every speech segment of the given files/folders.

    on_error: "raise" stops at the first unreadable file; "skip" records it in Enrolment.failures.
    """
    from vc.dsp import log_magnitude

    files = audio_files(paths)
    if not files:
        raise SpeakerError("no audio files found in " + ", ".join(str(p) for p in paths))
    sr = model.feature_config.sr
    seg_seconds = model.segment_length * model.feature_config.hop_length / sr
    total = np.zeros(model.f_dim, np.float64)
    z_stats = RunningCodeStats(model.z_dim)
    envelopes, envelope_z, envelope_phones, voiced_frames, voiced_f0 = [], [], [], [], []
    f0s, voiced_flags = [], []
    n_segments = skipped = used_files = 0
    audio_seconds = 0.0
    failures = []
    for path in files:
        try:
            audio, _ = read_audio(path, sr=sr)
        except AudioError as exc:
            if on_error == "raise":
                raise SpeakerError(str(exc)) from None
            failures.append((path, str(exc)))
            continue
        audio_seconds += audio.size / sr
        frames = log_magnitude(audio, cfg=model.feature_config) if audio.size >= model.feature_config.n_fft else None
        segments, silent = speech_segments(audio, model, frames)
        skipped += silent
        if segments.shape[0] == 0:
            continue
        f, z = posterior_codes(segments, model)
        total += f.astype(np.float64).sum(axis=0)
        speech = speech_frame_flags(segments, model.feature_config)
        z_stats.update(z[speech])
        envelopes.append(envelope_coefficients(segments[speech]))
        envelope_z.append(z[speech])
        if model.phones is not None:   # the keys of the same frames, cut into the same segments
            envelope_phones.append(speech_segments(audio, model, model.phones.keys(frames))[0][speech])
        f0, voiced = yin(audio, sr, model.feature_config.hop_length)
        f0s.append(f0)
        voiced_flags.append(voiced)
        n = min(frames.shape[0], f0.shape[0])
        # At most the final count from each file, so hours of enrolment do not pile up in memory.
        keep = evenly_spaced(np.flatnonzero(voiced[:n] & speech_frame_flags(frames[:n], model.feature_config)),
                             MAX_VOICED)
        voiced_frames.append(frames[keep])
        voiced_f0.append(f0[keep])
        n_segments += f.shape[0]
        used_files += 1
    if n_segments == 0:
        raise SpeakerError(f"no speech found: {len(files)} file(s), {audio_seconds:.1f} s, every "
                           f"{seg_seconds * 1000:.0f} ms segment below the energy gate or files too short")
    embedding = (total / n_segments).astype(np.float32)
    register = Register.of(np.concatenate(f0s), np.concatenate(voiced_flags))
    exemplars = exemplar_set(np.concatenate(envelopes))
    exemplar_z = exemplar_set(np.concatenate(envelope_z))   # the same rows in the same order
    exemplar_phones = exemplar_set(np.concatenate(envelope_phones)) if envelope_phones else None
    voiced_set = voiced_exemplar_set(np.concatenate(voiced_frames), np.concatenate(voiced_f0))
    kept = exemplars.shape[0] > 0
    return Enrolment(embedding, register, z_stats.estimate(), exemplars if kept else None, voiced_set,
                     used_files, n_segments, n_segments * seg_seconds,
                     audio_seconds, skipped, failures, exemplar_z if kept else None,
                     exemplar_phones if kept else None)


REGISTER_FIELDS = ("log_f0_mean", "log_f0_std")
CODE_STATS_FIELDS = ("z_mean", "z_std")
ENVELOPE_FIELDS = ("envelopes",)
VOICED_FIELDS = ("voiced_envelopes", "voiced_f0", "voiced_fine")
ENVELOPE_CODE_FIELDS = ("envelope_z",)
ENVELOPE_PHONE_FIELDS = ("envelope_phones",)
# each all or nothing, in this order
OPTIONAL_GROUPS = (REGISTER_FIELDS, CODE_STATS_FIELDS, ENVELOPE_FIELDS, VOICED_FIELDS, ENVELOPE_CODE_FIELDS,
                   ENVELOPE_PHONE_FIELDS)
F0_RANGE_HZ = (20.0, 2000.0)
LOG_F0_RANGE = (np.log(F0_RANGE_HZ[0]), np.log(F0_RANGE_HZ[1]))


def _record_dtype(speaker: Speaker) -> np.dtype:
    fields = [("f", "<f4", (speaker.f.shape[0],))]
    if speaker.register is not None:
        fields += [(name, "<f4") for name in REGISTER_FIELDS]
    if speaker.z_stats is not None:
        fields += [(name, "<f4", (speaker.z_stats.mean.shape[0],)) for name in CODE_STATS_FIELDS]
    if speaker.envelopes is not None:
        fields += [("envelopes", "<f2", speaker.envelopes.shape)]
    if speaker.voiced is not None:
        fields += [(name, "<f2", getattr(speaker.voiced, name[len("voiced_"):]).shape) for name in VOICED_FIELDS]
    if speaker.envelope_z is not None:
        fields += [("envelope_z", "<f2", speaker.envelope_z.shape)]
    if speaker.envelope_phones is not None:
        fields += [("envelope_phones", "<f2", speaker.envelope_phones.shape)]
    return np.dtype(fields)


def save_speaker(path, speaker) -> None:
    """Write a Speaker (or a bare f vector) as .npy atomically: a record holding what the speaker has (f,
    the register, z's statistics, envelopes, voiced frames), the plain float32 (f_dim,) code when it has
    only f."""
    if not isinstance(speaker, Speaker):
        speaker = Speaker(np.asarray(speaker))
    f = np.asarray(speaker.f)
    if f.ndim != 1 or not np.all(np.isfinite(f)):
        raise SpeakerError(f"{path}: refusing to write a speaker that is not a finite 1-D vector")
    if speaker.register is None and speaker.z_stats is None and speaker.envelopes is None and speaker.voiced is None:
        data = f.astype(np.float32)
    else:
        data = np.zeros((), _record_dtype(speaker))
        data["f"] = f
        if speaker.register is not None:
            data["log_f0_mean"] = speaker.register.log_mean
            data["log_f0_std"] = speaker.register.log_std
        if speaker.z_stats is not None:
            data["z_mean"] = speaker.z_stats.mean
            data["z_std"] = speaker.z_stats.std
        if speaker.envelopes is not None:
            data["envelopes"] = speaker.envelopes
        if speaker.voiced is not None:
            for name in VOICED_FIELDS:
                data[name] = getattr(speaker.voiced, name[len("voiced_"):])
        if speaker.envelope_z is not None:
            data["envelope_z"] = speaker.envelope_z
        if speaker.envelope_phones is not None:
            data["envelope_phones"] = speaker.envelope_phones
    with atomic_write(path) as fh:
        np.save(fh, data, allow_pickle=False)


def check_speaker(embedding, f_dim: int | None = None, name: str = "target", z_dim: int | None = None,
                  n_features: int | None = None, n_phones: int | None = None) -> Speaker:
    """Validate an in-memory target (a Speaker, a speaker record or a bare f vector) -> Speaker. Sizes
    given are checked: f against f_dim, z's statistics against z_dim, voiced frames against n_features."""
    if isinstance(embedding, Speaker):
        register, z_stats, envelopes, voiced, envelope_z, envelope_phones = (
            embedding.register, embedding.z_stats, embedding.envelopes, embedding.voiced, embedding.envelope_z,
            embedding.envelope_phones)
        arr = np.asarray(embedding.f)
    else:
        arr = np.asarray(embedding)
        register = z_stats = envelopes = voiced = envelope_z = envelope_phones = None
        if arr.dtype.names is not None:
            arr, register, z_stats, envelopes, voiced, envelope_z, envelope_phones = _unpack_record(arr, name)
    if arr.dtype != np.float32:
        if np.issubdtype(arr.dtype, np.floating):
            raise SpeakerError(f"{name}: dtype is {arr.dtype}, expected float32")
        raise SpeakerError(f"{name}: dtype is {arr.dtype}, expected float32 numbers")
    if arr.ndim != 1:
        raise SpeakerError(f"{name}: shape is {arr.shape}, expected a 1-D vector (f_dim,)")
    if f_dim is not None and arr.shape[0] != f_dim:
        raise SpeakerError(f"{name}: size {arr.shape[0]} does not match the model's f_dim {f_dim}")
    if not np.all(np.isfinite(arr)):
        raise SpeakerError(f"{name}: contains NaN or infinite values")
    if z_stats is not None:
        _check_code_stats(z_stats, z_dim, name)
    if envelopes is not None:
        _check_envelopes(envelopes, name)
    if voiced is not None:
        _check_voiced(voiced, n_features, name)
    if envelope_z is not None:
        _check_envelope_keys(envelope_z, envelopes, z_dim, "envelope_z", "z_dim", name)
    if envelope_phones is not None:
        _check_envelope_keys(envelope_phones, envelopes, n_phones, "envelope_phones", "phone count", name)
    return Speaker(arr, register, z_stats, envelopes, voiced, envelope_z, envelope_phones)


def _check_code_stats(stats: CodeStats, z_dim: int | None, name: str) -> None:
    mean, std = np.asarray(stats.mean), np.asarray(stats.std)
    if mean.dtype != np.float32 or std.dtype != np.float32 or mean.ndim != 1 or mean.shape != std.shape:
        raise SpeakerError(f"{name}: z_mean and z_std must be float32 vectors of one size, not "
                           f"{mean.dtype} {mean.shape} and {std.dtype} {std.shape}")
    if z_dim is not None and mean.shape[0] != z_dim:
        raise SpeakerError(f"{name}: z statistics of size {mean.shape[0]} do not match the model's z_dim {z_dim}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise SpeakerError(f"{name}: z_mean must be finite and z_std finite and positive")


def _check_envelopes(envelopes: np.ndarray, name: str) -> None:
    envelopes = np.asarray(envelopes)
    if envelopes.dtype != np.float16 or envelopes.ndim != 2 or envelopes.shape[0] < 1 \
            or envelopes.shape[1] != N_COEFFS:
        raise SpeakerError(f"{name}: envelopes must be float16 of shape (n, {N_COEFFS}), not "
                           f"{envelopes.dtype} {envelopes.shape}")
    if not np.all(np.isfinite(envelopes)):
        raise SpeakerError(f"{name}: envelopes contain NaN or infinite values")


def _check_envelope_keys(keys: np.ndarray, envelopes: np.ndarray | None, width: int | None, field: str,
                         what: str, name: str) -> None:
    """A key per envelope (envelope_z, envelope_phones): float16, one finite row per envelope, `width` wide."""
    keys = np.asarray(keys)
    if envelopes is None:
        raise SpeakerError(f"{name}: {field} without envelopes")
    n = np.asarray(envelopes).shape[0]
    if keys.dtype != np.float16 or keys.ndim != 2 or keys.shape[0] != n:
        raise SpeakerError(f"{name}: {field} must be float16 of shape ({n}, {what}), one row per envelope, "
                           f"not {keys.dtype} {keys.shape}")
    if width is not None and keys.shape[1] != width:
        raise SpeakerError(f"{name}: {field} has {keys.shape[1]} values per row, the model's {what} is {width}")
    if not np.all(np.isfinite(keys)):
        raise SpeakerError(f"{name}: {field} contains NaN or infinite values")


def _check_voiced(voiced: VoicedExemplars, n_features: int | None, name: str) -> None:
    envelopes, f0, fine = (np.asarray(a) for a in (voiced.envelopes, voiced.f0, voiced.fine))
    m = f0.shape[0] if f0.ndim == 1 else -1
    if any(a.dtype != np.float16 for a in (envelopes, f0, fine)) or m < 1 or envelopes.shape != (m, N_COEFFS) \
            or fine.ndim != 2 or fine.shape[0] != m:
        raise SpeakerError(f"{name}: voiced_envelopes, voiced_f0 and voiced_fine must be float16 of shapes "
                           f"(m, {N_COEFFS}), (m,) and (m, n_features), not {envelopes.dtype} {envelopes.shape}, "
                           f"{f0.dtype} {f0.shape} and {fine.dtype} {fine.shape}")
    if n_features is not None and fine.shape[1] != n_features:
        raise SpeakerError(f"{name}: voiced_fine has {fine.shape[1]} frequency bins, the model has {n_features}")
    if not (np.all(np.isfinite(envelopes)) and np.all(np.isfinite(fine))):
        raise SpeakerError(f"{name}: voiced_envelopes or voiced_fine contain NaN or infinite values")
    low, high = F0_RANGE_HZ
    if not np.all((f0 >= low) & (f0 <= high)):
        raise SpeakerError(f"{name}: voiced_f0 holds values outside {low:g} to {high:g} Hz")


def _known_layouts() -> list[tuple[str, ...]]:
    layouts = []
    for mask in range(2 ** len(OPTIONAL_GROUPS)):
        layouts.append(("f",) + sum((g for i, g in enumerate(OPTIONAL_GROUPS) if mask >> i & 1), ()))
    return layouts


def _unpack_record(arr: np.ndarray, name: str):
    """A speaker record -> (f, Register or None, CodeStats or None, envelopes or None, VoicedExemplars or
    None, envelope_z or None, envelope_phones or None), values unchecked."""
    names = arr.dtype.names
    if names not in _known_layouts() or arr.shape != ():
        raise SpeakerError(f"{name}: a record with fields {names} and shape {arr.shape}, expected one record "
                           f"with fields {_known_layouts()[-1]} (any of the groups after f may be left out)")
    if arr.dtype["f"].base != np.float32:
        raise SpeakerError(f"{name}: field f has dtype {arr.dtype['f'].base}, expected float32")
    register = z_stats = envelopes = voiced = envelope_z = envelope_phones = None
    if REGISTER_FIELDS[0] in names:
        log_mean, log_std = (float(arr[k]) for k in REGISTER_FIELDS)
        if not (LOG_F0_RANGE[0] <= log_mean <= LOG_F0_RANGE[1]):
            raise SpeakerError(f"{name}: log_f0_mean {log_mean!r} is not the log of a pitch between 20 and 2000 Hz")
        if not (0.0 < log_std < 2.0):
            raise SpeakerError(f"{name}: log_f0_std {log_std!r} is outside (0, 2)")
        register = Register(log_mean, log_std)
    if CODE_STATS_FIELDS[0] in names:
        z_stats = CodeStats(np.array(arr["z_mean"]), np.array(arr["z_std"]))
    if ENVELOPE_FIELDS[0] in names:
        envelopes = np.array(arr["envelopes"])
    if VOICED_FIELDS[0] in names:
        voiced = VoicedExemplars(*(np.array(arr[k]) for k in VOICED_FIELDS))
    if ENVELOPE_CODE_FIELDS[0] in names:
        envelope_z = np.array(arr["envelope_z"])
    if ENVELOPE_PHONE_FIELDS[0] in names:
        envelope_phones = np.array(arr["envelope_phones"])
    return np.array(arr["f"]), register, z_stats, envelopes, voiced, envelope_z, envelope_phones


def load_speaker(path, model: Model | None = None, f_dim: int | None = None) -> Speaker:
    """Load and validate speaker.npy (never unpickles). Sizes are checked against the model's f_dim and
    z_dim."""
    path = Path(path)
    z_dim = n_features = n_phones = None
    if model is not None:
        f_dim, z_dim, n_features = model.f_dim, model.z_dim, model.n_features
        n_phones = model.phones.n_phones if getattr(model, "phones", None) is not None else None
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise SpeakerError(f"{path}: no such file") from None
    except ValueError as exc:  # object arrays refuse to load without pickle
        raise SpeakerError(f"{path}: not a plain numeric .npy file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise SpeakerError(f"{path}: not a .npy file ({exc})") from None
    if not isinstance(arr, np.ndarray):  # .npz archives load as NpzFile
        raise SpeakerError(f"{path}: an .npz archive, expected a .npy array")
    return check_speaker(arr, f_dim, name=str(path), z_dim=z_dim, n_features=n_features, n_phones=n_phones)
