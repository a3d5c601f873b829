"""Audio in and out for the runtime: the one check every entrance runs on audio it is handed
(`check_audio`), reading any soundfile format, rate and channel count as mono float32 at any rate, and
WAV written atomically."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from vc.files import atomic_write

# Formats libsndfile reads that need no side information (RAW needs a rate and a sample type). The one list
# of audio file names: the corpus readers in `training.data.corpora` add NIST SPHERE, which they read
# themselves.
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".snd",
                              ".caf", ".w64", ".rf64"})
READ_BLOCK = 4096  # frames per read: a truncated compressed file loses at most its last block


class AudioError(ValueError):
    """Audio that cannot be used: the message names the file (or argument) and the problem in one line."""


class TruncatedAudioWarning(UserWarning):
    """A file holds fewer samples than its header promises; what is there was used."""


def _pcm_scale(dtype: np.dtype) -> tuple[float, float]:
    """(offset, scale) mapping integer PCM of this dtype onto [-1, 1): signed types divide by 2**(bits-1),
    unsigned ones (8-bit WAV) are centred on 2**(bits-1) first."""
    half = float(2 ** (8 * dtype.itemsize - 1))
    return (half if dtype.kind == "u" else 0.0), half


def check_audio(audio, *, name: str = "audio", mono: bool = True) -> np.ndarray:
    """The audio check at every entrance (`vc.convert`, `StreamingConverter.push`, the file readers), in the
    spirit of librosa's `valid_audio`. Returns float32: (n,) with channels averaged when `mono`, else (n, ch).

    - dtype: floating point (taken as it is, nominally within [-1, 1]), or integer PCM, which is scaled by
      its dtype's range: int16 / 32768, int32 / 2**31, uint8 as (x - 128) / 128. Anything else (bool,
      complex, object) is refused.
    - layout: (n,) mono, or (n, ch) with samples along the first axis, as soundfile reads them. A 2-D array
      whose first axis is the shorter one is (ch, n), as librosa and torchaudio give it, and is refused with
      a message to pass `audio.T`; so is any other number of dimensions.
    - values: finite (no NaN, no infinity).
    Raises AudioError naming `name`. An empty array passes (callers decide whether that is an error).
    """
    a = np.asarray(audio)
    if a.dtype.kind in "iu":
        offset, scale = _pcm_scale(a.dtype)
        a = ((a.astype(np.float64) - offset) / scale).astype(np.float32)
    elif a.dtype.kind != "f":
        raise AudioError(f"{name}: audio must be floating point or integer PCM samples, not {a.dtype}")
    if a.ndim == 2:
        if a.shape[0] < a.shape[1]:
            raise AudioError(f"{name}: shape {a.shape} looks like (channels, samples); audio is (samples,) or "
                             f"(samples, channels): pass audio.T, or one channel as audio[0]")
    elif a.ndim != 1:
        raise AudioError(f"{name}: audio must be (samples,) or (samples, channels), not shape {a.shape}")
    a = a.astype(np.float32, copy=False)
    if not np.all(np.isfinite(a)):
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    if mono and a.ndim == 2:
        a = a.mean(axis=1, dtype=np.float32) if a.shape[1] > 1 else a[:, 0]
    return np.ascontiguousarray(a)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Mono float32 resampling with soxr (high quality); identity when the rates match."""
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if int(sr_in) == int(sr_out) or audio.size == 0:
        return audio
    return soxr.resample(audio, int(sr_in), int(sr_out), quality="HQ").astype(np.float32, copy=False)


_SHORT_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_AIFF_FRAMES = re.compile(r"^\s*Frames\s*:\s*(\d+)", re.MULTILINE)


def _promised_frames(f: sf.SoundFile) -> int:
    """Frames the file's header promises. libsndfile shortens a WAV's or AIFF's count to what the file
    holds and says so only in its log ("data : 96000 (should be 12)"): read the promise back from there."""
    log = f.extra_info
    frames = _AIFF_FRAMES.search(log)
    if frames:
        return max(int(frames.group(1)), f.frames)
    chunk = _SHORT_CHUNK.search(log)
    if chunk and int(chunk.group(2)) > 0 and f.frames > 0:
        return max(f.frames, int(round(f.frames * int(chunk.group(1)) / int(chunk.group(2)))))
    return f.frames


def _read_all(path: Path) -> tuple[np.ndarray, int, int]:
    """(samples (n, ch), rate, frames the header promises). A truncated compressed file fails part-way
    through one whole read; it is then read again block by block and what came before the failure kept."""
    with sf.SoundFile(str(path)) as f:
        file_sr, promised = int(f.samplerate), _promised_frames(f)
        try:
            return f.read(dtype="float32", always_2d=True), file_sr, promised
        except (sf.LibsndfileError, RuntimeError):
            pass
    with sf.SoundFile(str(path)) as f:
        return _read_blocks(f), file_sr, promised


def _read_blocks(f: sf.SoundFile) -> np.ndarray:
    blocks = []
    try:
        while True:
            block = f.read(READ_BLOCK, dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                break
            blocks.append(block)
    except (sf.LibsndfileError, RuntimeError) as exc:
        if not blocks:
            raise exc
    return np.concatenate(blocks) if blocks else np.zeros((0, f.channels), np.float32)


def _cannot_read(path: Path, exc: Exception) -> AudioError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    reason = reason.replace(f"Error opening {str(path)!r}: ", "")  # libsndfile repeats the path
    return AudioError(f"{path}: cannot read audio: {reason}")


def read_audio(path, sr: int | None = 16000) -> tuple[np.ndarray, int]:
    """Read any soundfile-readable file -> (mono float32 at `sr`, the file's own sample rate).

    `sr=None` keeps the file's rate. Errors are AudioError with the file name and one-line reason. A file
    that holds fewer samples than its header promises is read as far as it goes, with a
    TruncatedAudioWarning that gives both lengths.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    try:
        data, file_sr, promised = _read_all(path)
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as exc:
        raise _cannot_read(path, exc) from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: no audio samples")
    if data.shape[0] < promised:
        warnings.warn(f"{path}: truncated: the header promises {promised} samples ({promised / file_sr:.2f} s), "
                      f"the file holds {data.shape[0]} ({data.shape[0] / file_sr:.2f} s); using what is there",
                      TruncatedAudioWarning, stacklevel=2)
    mono = check_audio(data, name=str(path))
    if sr is not None:
        mono = resample(mono, file_sr, sr)
    return mono, file_sr


def write_wav(path, audio: np.ndarray, sr: int, subtype: str = "PCM_16") -> None:
    """Write a WAV file atomically (see `vc.files.atomic_write`)."""
    audio = np.asarray(audio, dtype=np.float32)
    if subtype.startswith("PCM"):
        audio = np.clip(audio, -1.0, 1.0)
    with atomic_write(path) as fh:
        sf.write(fh, audio, int(sr), format="WAV", subtype=subtype)
