"""Audio loading shared by the corpus readers, the feature cache and the evaluations.

Every file goes the same way: read (libsndfile through soundfile, or this module's own NIST SPHERE
reader, because TIMIT's SPHERE files are not always readable by libsndfile builds), downmix to mono,
check, resample with soxr. Problems raise :class:`AudioError`, whose text is one line naming the file.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

__all__ = ["AudioError", "read_sphere", "read_audio", "load_audio", "SPHERE_MAGIC"]

SPHERE_MAGIC = b"NIST_1A"

# A downmix of more channels than this is rarely meaningful (microphone arrays, surround mixes);
# such files are treated as a different kind of recording rather than silently averaged.
DEFAULT_MAX_CHANNELS = 2


class AudioError(ValueError):
    """A file that cannot be used as speech audio; ``str()`` is one line naming the file."""

    def __init__(self, path: os.PathLike | str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


_FIELD = re.compile(r"^(\S+)\s+-(i|r|s(\d+))\s?(.*)$")


def _parse_sphere_header(path: Path, head: bytes) -> tuple[int, dict[str, object]]:
    lines = head.split(b"\n")
    if len(lines) < 2 or lines[0].strip() != SPHERE_MAGIC:
        raise AudioError(path, "not a NIST SPHERE file (no NIST_1A magic)")
    try:
        header_size = int(lines[1].strip())
    except ValueError:
        raise AudioError(path, "SPHERE header size is not a number") from None
    if header_size < 16:
        raise AudioError(path, f"SPHERE header size {header_size} is too small")
    fields: dict[str, object] = {}
    text = head[:header_size].decode("latin-1")
    for line in text.split("\n")[2:]:
        line = line.rstrip("\r")
        if line.strip() == "end_head":
            return header_size, fields
        if not line.strip() or line.startswith(";"):
            continue
        m = _FIELD.match(line)
        if not m:
            raise AudioError(path, f"malformed SPHERE header line {line.strip()!r}")
        key, kind, strlen, value = m.group(1), m.group(2), m.group(3), m.group(4)
        try:
            if kind == "i":
                fields[key] = int(value.strip())
            elif kind == "r":
                fields[key] = float(value.strip())
            else:
                # -sN values are exactly N characters and may contain spaces.
                fields[key] = value[: int(strlen)]
        except ValueError:
            raise AudioError(path, f"bad value in SPHERE header line {line.strip()!r}") from None
    raise AudioError(path, "SPHERE header has no end_head within its declared size")


def _ulaw_to_float(codes: np.ndarray) -> np.ndarray:
    # G.711 mu-law expansion to the 16-bit scale (largest magnitude 32124), as audioop.ulaw2lin.
    u = ~codes.astype(np.uint8)
    sign = (u & 0x80) != 0
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa.astype(np.int32) << 3) + 0x84) << exponent.astype(np.int32)
    magnitude -= 0x84
    out = np.where(sign, -magnitude, magnitude).astype(np.float32)
    return out / 32768.0


def read_sphere(path: os.PathLike | str) -> tuple[np.ndarray, int]:
    """Read a NIST SPHERE (NIST_1A) file: returns float32 ``(frames, channels)`` in [-1, 1) and the rate.

    Supports uncompressed PCM of 1, 2 or 4 bytes in either byte order and 8-bit mu-law; shorten
    ("embedded-shorten") files are refused with a message pointing at ``sph2pipe``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
            if not head.startswith(SPHERE_MAGIC):
                raise AudioError(path, "not a NIST SPHERE file (no NIST_1A magic)")
            lines = head.split(b"\n", 2)
            try:
                header_size = int(lines[1].strip()) if len(lines) > 1 else 0
            except ValueError:
                header_size = 0
            if header_size > len(head):
                head += f.read(header_size - len(head))
            header_size, fields = _parse_sphere_header(path, head)
            f.seek(header_size)
            payload = f.read()
    except OSError as exc:
        raise AudioError(path, f"cannot read ({exc.strerror or exc})") from None

    coding = str(fields.get("sample_coding", "pcm")).strip().lower()
    if "shorten" in coding or "wavpack" in coding or "shortpack" in coding:
        raise AudioError(path, f"compressed SPHERE ({coding}) is not supported; "
                               "decompress it first, e.g. sph2pipe -f wav")
    channels = int(fields.get("channel_count", 1))
    rate = fields.get("sample_rate")
    if not isinstance(rate, (int, float)) or rate <= 0:
        raise AudioError(path, "SPHERE header has no valid sample_rate")
    if channels < 1:
        raise AudioError(path, f"SPHERE header has channel_count {channels}")

    if coding in ("ulaw", "mu-law", "mulaw"):
        width = 1
    elif coding == "pcm":
        width = int(fields.get("sample_n_bytes", 2))
    else:
        raise AudioError(path, f"unsupported SPHERE sample_coding {coding!r}")
    if width not in (1, 2, 4):
        raise AudioError(path, f"unsupported SPHERE sample_n_bytes {width}")

    byte_format = str(fields.get("sample_byte_format", "01" if width > 1 else "1")).strip()
    if width == 1:
        order = "|"
    elif byte_format in ("01", "0123"):
        order = "<"
    elif byte_format in ("10", "3210"):
        order = ">"
    else:
        raise AudioError(path, f"unsupported SPHERE sample_byte_format {byte_format!r}")

    frame_bytes = width * channels
    available = len(payload) // frame_bytes
    count = fields.get("sample_count")
    if count is None:
        count = available
    count = int(count)
    if count < 0:
        raise AudioError(path, f"SPHERE header has sample_count {count}")
    if count > available:
        raise AudioError(path, f"truncated: header says {count} samples, file holds {available}")
    payload = payload[: count * frame_bytes]

    if coding == "pcm" and width == 1:
        # 8-bit SPHERE PCM is signed, unlike 8-bit RIFF WAV.
        data = np.frombuffer(payload, dtype=np.int8).astype(np.float32) / 128.0
    elif width == 1:
        data = _ulaw_to_float(np.frombuffer(payload, dtype=np.uint8))
    else:
        ints = np.frombuffer(payload, dtype=f"{order}i{width}")
        data = ints.astype(np.float32) / float(2 ** (8 * width - 1))
    return data.reshape(count, channels), int(rate)


# Integer PCM is read as integers and scaled by numpy: one vectorised pass, cheaper than
# libsndfile's own conversion, and integer samples need no NaN/inf check afterwards.
_INTEGER_READS = {"PCM_16": ("int16", 1 / 32768), "PCM_24": ("int32", 1 / 2147483648),
                  "PCM_32": ("int32", 1 / 2147483648)}


def _unreadable(path: Path, exc: Exception) -> AudioError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    # libsndfile repeats the path, which the message already starts with.
    reason = reason.replace(f"Error opening {str(path)!r}: ", "")
    return AudioError(path, f"unreadable audio ({reason})")


def _read(path: Path) -> tuple[np.ndarray, int, bool]:
    """``(float32 (frames, channels), rate, whether the samples can be non-finite)``."""
    try:
        with open(path, "rb") as f:
            magic = f.read(len(SPHERE_MAGIC))
    except OSError as exc:
        raise AudioError(path, f"cannot open ({exc.strerror or exc})") from None
    if magic == SPHERE_MAGIC:
        data, rate = read_sphere(path)
        return data, rate, False
    try:
        with sf.SoundFile(str(path)) as f:
            rate = f.samplerate
            integer = _INTEGER_READS.get(f.subtype)
            if integer is None:
                return f.read(dtype="float32", always_2d=True), int(rate), True
            raw = f.read(dtype=integer[0], always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise _unreadable(path, exc) from None
    return np.multiply(raw, np.float32(integer[1]), dtype=np.float32), int(rate), False


def read_audio(path: os.PathLike | str) -> tuple[np.ndarray, int]:
    """Read any supported file as float32 ``(frames, channels)`` plus its sample rate, unchecked."""
    data, rate, _ = _read(Path(path))
    return data, rate


def load_audio(path: os.PathLike | str, sr: int = 16000, *,
               max_channels: int = DEFAULT_MAX_CHANNELS, quality: str = "HQ") -> np.ndarray:
    """Load ``path`` as mono float32 at ``sr`` Hz (downmix by averaging, soxr resampling).

    Raises :class:`AudioError` for unreadable, empty or non-finite audio, for more than
    ``max_channels`` channels, and for a zero or negative rate.
    """
    data, rate, may_be_nonfinite = _read(Path(path))
    if rate <= 0:
        raise AudioError(path, f"invalid sample rate {rate}")
    frames, channels = data.shape
    if channels < 1 or channels > max_channels:
        raise AudioError(path, f"has {channels} channels; expected 1 to {max_channels}")
    if frames == 0:
        raise AudioError(path, "is empty (no samples)")
    y = data[:, 0] if channels == 1 else data.mean(axis=1, dtype=np.float32)
    if may_be_nonfinite and not np.isfinite(y).all():
        raise AudioError(path, "contains NaN or infinite samples")
    if rate != sr:
        y = soxr.resample(y, rate, sr, quality=quality)
    return np.ascontiguousarray(y, dtype=np.float32)
