"""Audio file input and output for the runtime: any soundfile format, rate and channel count in;
16 kHz (or any rate) mono float32 out; WAV written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from vc.files import atomic_write

# Formats read by libsndfile that need no side information (RAW needs a rate and a sample type).
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"})


class AudioError(ValueError):
    """An audio file that cannot be read or written; the message names the file and the problem."""


def to_mono(audio: np.ndarray) -> np.ndarray:
    """(n,) or (n, channels) -> (n,) float32, channels averaged."""
    audio = np.asarray(audio)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    elif audio.ndim != 1:
        raise ValueError(f"audio must be (samples,) or (samples, channels), got shape {audio.shape}")
    return np.ascontiguousarray(audio, dtype=np.float32)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Mono float32 resampling with soxr (high quality); identity when the rates match."""
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if int(sr_in) == int(sr_out) or audio.size == 0:
        return audio
    return soxr.resample(audio, int(sr_in), int(sr_out), quality="HQ").astype(np.float32, copy=False)


def read_audio(path, sr: int | None = 16000) -> tuple[np.ndarray, int]:
    """Read any soundfile-readable file -> (mono float32 at `sr`, the file's own sample rate).

    `sr=None` keeps the file's rate. Errors are AudioError with the file name and one-line reason.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # libsndfile repeats the path inside its messages; keep only the reason.
        reason = reason.replace(f"Error opening {str(path)!r}: ", "")
        raise AudioError(f"{path}: cannot read audio: {reason}") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: no audio samples")
    mono = to_mono(data)
    if not np.all(np.isfinite(mono)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    if sr is not None:
        mono = resample(mono, file_sr, sr)
    return mono, int(file_sr)


def write_wav(path, audio: np.ndarray, sr: int, subtype: str = "PCM_16") -> None:
    """Write a WAV file atomically (see `vc.files.atomic_write`)."""
    audio = np.asarray(audio, dtype=np.float32)
    if subtype.startswith("PCM"):
        audio = np.clip(audio, -1.0, 1.0)
    with atomic_write(path) as fh:
        sf.write(fh, audio, int(sr), format="WAV", subtype=subtype)
