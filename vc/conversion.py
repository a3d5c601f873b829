"""Whole-utterance voice conversion (`vc.convert`) and the batch driver behind `vc-batch`.

Quality path: the utterance's log-magnitude frames are cut into overlapping windows of the model's
segment length (half-window hop), each window is encoded, its f replaced by the target's and decoded; the
decoded windows are blended with weights that sum to one across the overlaps. The blend is the target's
spectral envelope; the harmonics come back from the source's F0 contour moved to the target's pitch register
(`vc.pitch`). Griffin-Lim (PGHI start) runs once over the whole utterance, so no block edges are audible.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vc.audio import AUDIO_EXTENSIONS, AudioError, read_audio, resample, to_mono, write_wav
from vc.model import Model, default_model_dir, load_model
from vc.speakers import Speaker, SpeakerError, check_speaker, load_speaker, speech_flags

DEFAULT_N_ITER = 32
# f = f_source + strength * (f_target - f_source). 1 is the plain DSAE swap; z still carries some of the
# source speaker (its speaker-verification EER is about 31 %, chance is 50 %), and going half as far again
# past the target cancels that part: measured on held-out speakers, the embedding distance to the target
# stays the same and the distance to the source grows (README, "Conversion quality").
DEFAULT_STRENGTH = 1.5
MAX_STRENGTH = 3.0
MODEL_BATCH = 256


class BatchError(ValueError):
    """A batch run that must not start (e.g. output folder inside the input folder)."""


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
    L = model.segment_length
    n_windows = windows.starts.shape[0]
    padded_T = int(windows.starts[-1]) + L
    weights = _window_weights(L, windows.hop) if n_windows > 1 else np.ones(L, np.float32)
    acc = np.zeros((padded_T, model.n_features), np.float32)
    wsum = np.zeros(padded_T, np.float32)
    for b in range(0, n_windows, MODEL_BATCH):
        z_mean = windows.z_mean[b:b + MODEL_BATCH]
        f = np.broadcast_to(code, (z_mean.shape[0], code.shape[0]))
        decoded = model.denormalise(model.decode(f, z_mean)) * weights[None, :, None]
        for start, window in zip(windows.starts[b:b + MODEL_BATCH], decoded):
            acc[start:start + L] += window
            wsum[start:start + L] += weights
    T = windows.n_frames
    return acc[:T] / wsum[:T, None]


def convert_features(frames: np.ndarray, target: np.ndarray, model: Model, window_hop: int | None = None) -> np.ndarray:
    """Raw log-magnitude frames (T, n_features) -> converted raw frames (T, n_features), every window
    decoded with the speaker code `target`."""
    return decode_windows(encode_windows(frames, model, window_hop), target, model)


def with_harmonics(envelope: np.ndarray, audio: np.ndarray, target: Speaker, model: Model) -> np.ndarray:
    """Converted frames (T, n_features) -> the same envelope carrying harmonics at the source's F0 contour
    in the target's register (the source's own register when the target has none). Unvoiced sources
    (whisper) come back unchanged."""
    from vc.pitch import Register, yin

    cfg = model.feature_config
    f0, voiced = yin(audio, cfg.sr, cfg.hop_length)
    T = envelope.shape[0]
    f0, voiced = f0[:T], voiced[:T]
    return rebuild_harmonics(envelope, f0, voiced, Register.of(f0, voiced), target.register, cfg)[0]


# --- the conversion itself: the file path above and the streaming engine (vc.engine) both use these two --

def rebuild_harmonics(envelope: np.ndarray, f0: np.ndarray, voiced: np.ndarray, source, target, cfg,
                      phase: float = 0.0) -> tuple[np.ndarray, float]:
    """Decoded frames (T, n_features) and the source's F0 track of the same frames -> (frames with the
    harmonics of that contour moved from the `source` register to the `target` register (the source's own
    when target is None), the pulse train's phase after the last frame). A source register of None (no
    voiced speech yet) leaves the envelope as it is. `phase` continues a stream."""
    from vc.pitch import harmonic_fine_structure, smooth_across_frequency, transpose

    if source is None:
        return envelope, phase
    moved = transpose(f0, voiced, source, target or source)
    fine, phase = harmonic_fine_structure(moved, voiced, cfg, phase)
    return smooth_across_frequency(envelope) + fine, phase


def mixed_code(source_f, target_f: np.ndarray, strength: float) -> np.ndarray:
    """The f the decoder gets: f_source + strength * (target_f - f_source); the target alone when the
    source's code is unknown (None: no speech yet) or strength is 1."""
    if source_f is None or strength == 1.0:
        return target_f
    source_f = np.asarray(source_f, np.float64)
    return (source_f + strength * (target_f - source_f)).astype(np.float32)


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


def convert_audio16k(audio: np.ndarray, target, model: Model, n_iter: int = DEFAULT_N_ITER,
                     harmonics: bool = True, strength: float = DEFAULT_STRENGTH) -> np.ndarray:
    """Mono float32 at the model's rate -> converted audio of the same length and rate.

    target: a Speaker or a float32 (f_dim,) code. harmonics=False returns the DSAE's envelope alone
    (breathy, pitchless: what the model itself reconstructs). strength: how far f moves from the source's
    code towards the target's and beyond (0: the source's own voice, 1: the target's code, default 1.5)."""
    from vc.dsp import griffinlim, log_magnitude, magnitude_from_features

    target = target if isinstance(target, Speaker) else check_speaker(target, model.f_dim)
    strength = check_strength(strength)
    cfg = model.feature_config
    n = audio.shape[0]
    if n < cfg.n_fft:  # the STFT needs one full frame; pad with silence and cut back afterwards
        audio = np.pad(audio, (0, cfg.n_fft - n))
    frames = log_magnitude(audio, cfg)
    windows = encode_windows(frames, model)
    code = conversion_code(windows, speech_flags(audio[:n], model), target.f, model, strength)
    converted = decode_windows(windows, code, model)
    if harmonics:
        converted = with_harmonics(converted, audio, target, model)
    mag = magnitude_from_features(converted, cfg)
    y = griffinlim(mag, n_iter=n_iter, momentum=0.99, init="pghi", hop_length=cfg.hop_length,
                   win_length=cfg.win_length, n_fft=cfg.n_fft, window=cfg.window, center=cfg.center,
                   length=audio.shape[0])
    return np.asarray(y[:n], dtype=np.float32)


def _resolve_target(target, model: Model) -> Speaker:
    if isinstance(target, (str, os.PathLike)):
        return load_speaker(target, model)
    return check_speaker(target, model.f_dim)


_loaded_models: dict = {}


def _cached_model(model_dir) -> Model:
    # Python users call vc.convert in loops; load each model directory once per process.
    path = Path(model_dir) if model_dir is not None else default_model_dir()
    key = str(path.resolve())
    if key not in _loaded_models:
        _loaded_models[key] = load_model(path)
    return _loaded_models[key]


def convert(audio, sr: int, target, model=None, n_iter: int = DEFAULT_N_ITER, out_sr: int | None = None,
            harmonics: bool = True, strength: float = DEFAULT_STRENGTH) -> np.ndarray:
    """Convert `audio` (samples,) or (samples, channels) at rate `sr` to the `target` speaker.

    target: a speaker.npy path, a `vc.speakers.Speaker` or a float32 (f_dim,) code; model: a Model, a
    model directory or None (the default model). Returns mono float32 at `out_sr` (default: `sr`).
    harmonics, strength: see `convert_audio16k`.
    """
    if not isinstance(model, Model):
        model = _cached_model(model)
    target = _resolve_target(target, model)
    mono = to_mono(audio)
    if mono.size == 0:
        raise ValueError("audio is empty")
    if not np.all(np.isfinite(mono)):
        raise ValueError("audio contains NaN or infinite samples")
    model_sr = model.feature_config.sr
    converted = convert_audio16k(resample(mono, sr, model_sr), target, model, n_iter=n_iter, harmonics=harmonics,
                                 strength=strength)
    out = resample(converted, model_sr, out_sr or sr)
    # Keep clipping rare without changing loudness of ordinary speech.
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 0.99:
        out = out * (0.99 / peak)
    return out.astype(np.float32, copy=False)


def convert_file(in_path, out_path, target, model: Model, n_iter: int = DEFAULT_N_ITER,
                 out_sr: int | None = None, harmonics: bool = True, strength: float = DEFAULT_STRENGTH) -> float:
    """Read, convert, write atomically; returns the input's duration in seconds."""
    audio, file_sr = read_audio(in_path, sr=model.feature_config.sr)
    converted = convert(audio, model.feature_config.sr, target, model, n_iter=n_iter, out_sr=out_sr or file_sr,
                        harmonics=harmonics, strength=strength)
    write_wav(out_path, converted, out_sr or file_sr)
    return audio.size / model.feature_config.sr


# --- batch ----------------------------------------------------------------------------------------------

@dataclass
class BatchSummary:
    files: int = 0           # found
    converted: int = 0
    skipped: int = 0         # outputs already present
    failed: list = field(default_factory=list)  # (relative path, reason)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def x_realtime(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def text(self) -> str:
        rtf = self.wall_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0
        return (f"{self.files} file(s): {self.converted} converted, {self.skipped} skipped (output exists), "
                f"{len(self.failed)} failed; {self.audio_seconds:.1f} s of audio in {self.wall_seconds:.1f} s "
                f"(real-time factor {rtf:.3f}, {self.x_realtime:.1f}x real time)")


def check_batch_dirs(in_dir, out_dir) -> tuple[Path, Path]:
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise BatchError(f"{in_dir}: input folder not found")
    in_real, out_real = in_dir.resolve(), out_dir.resolve()
    if out_real == in_real:
        raise BatchError(f"{out_dir}: output folder is the input folder; choose another")
    if in_real in out_real.parents:
        raise BatchError(f"{out_dir}: output folder is inside the input folder {in_dir}; choose another")
    if out_dir.exists() and not out_dir.is_dir():
        raise BatchError(f"{out_dir}: exists and is not a folder")
    return in_dir, out_dir


_TEMP_NAME = re.compile(r"^\..+\.wav\.[A-Za-z0-9_]{8}\.part$")  # vc.audio.write_wav's temporary files


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete temporary files a killed run (SIGKILL, power loss) left behind; returns how many."""
    removed = 0
    if out_dir.is_dir():
        for root, _, files in os.walk(out_dir):
            for name in files:
                if _TEMP_NAME.match(name):
                    try:
                        os.unlink(os.path.join(root, name))
                        removed += 1
                    except FileNotFoundError:
                        pass
    return removed


def plan_batch(in_dir: Path, out_dir: Path) -> tuple[list[tuple[Path, Path, str]], list]:
    """-> [(input, output, relative name)], [(relative name, reason)] for inputs whose output names collide."""
    jobs, clashes, seen = [], [], {}
    in_real = in_dir.resolve()
    # Only possible when in_dir lies inside out_dir: an output path that is itself an input.
    check_inputs = in_real.is_relative_to(out_dir.resolve())
    for root, dirs, files in os.walk(in_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or Path(name).suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            src = Path(root) / name
            rel = src.relative_to(in_dir)
            out_rel = rel.with_suffix(".wav")
            if out_rel in seen:
                clashes.append((str(rel), f"output {out_rel} would also be written from {seen[out_rel]}"))
                continue
            if check_inputs and (out_dir / out_rel).resolve().is_relative_to(in_real):
                clashes.append((str(rel), f"output {out_dir / out_rel} would be inside the input folder"))
                continue
            seen[out_rel] = rel
            jobs.append((src, out_dir / out_rel, str(rel)))
    return jobs, clashes


# Worker state: one model per process, loaded once.
_worker: dict = {}


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def _worker_init(model_dir, device, threads, target, n_iter, out_sr, harmonics, strength):
    import signal

    # Ctrl-C goes to the whole process group: the parent alone decides, then terminates the pool with
    # SIGTERM, which becomes SystemExit here so a half-written temporary file is removed on the way out.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_exit)
    _worker["model"] = load_model(model_dir, device=device, threads=threads)
    _worker.update(target=target, n_iter=n_iter, out_sr=out_sr, harmonics=harmonics, strength=strength)


def _worker_convert(job):
    src, dst, rel = job
    w = _worker
    try:
        seconds = convert_file(src, dst, w["target"], w["model"], n_iter=w["n_iter"], out_sr=w["out_sr"],
                               harmonics=w["harmonics"], strength=w["strength"])
        return rel, seconds, None
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch; it is reported
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, (AudioError, SpeakerError, ValueError, OSError)):
            message = f"{type(exc).__name__}: {message}"
        return rel, 0.0, message


def _size_or_zero(job) -> int:
    try:
        return job[0].stat().st_size
    except OSError:
        return 0   # the worker reports the problem with this file


def default_threads_per_job(jobs: int) -> int:
    from vc.model import default_threads

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(default_threads(), cores // max(1, jobs)))


def batch_convert(in_dir, out_dir, target, model_dir=None, n_iter: int = DEFAULT_N_ITER, jobs: int = 1,
                  overwrite: bool = False, out_sr: int | None = None, device: str = "auto",
                  threads: int | None = None, progress: bool = True, log=None, describe=None,
                  harmonics: bool = True, strength: float = DEFAULT_STRENGTH) -> BatchSummary:
    """Convert every audio file under in_dir into out_dir (same relative paths, .wav).

    Existing outputs are skipped unless overwrite; one bad file is reported and the rest go on.
    `log(line)` receives one line per failure and `describe(line)` the model/provider line (default:
    nothing; the CLI prints them).
    """
    from tqdm import tqdm

    if jobs < 1:
        raise BatchError(f"--jobs must be at least 1, not {jobs}")
    if n_iter < 0:
        raise BatchError(f"--n-iter must be >= 0, not {n_iter}")
    if out_sr is not None and out_sr <= 0:
        raise BatchError(f"--sr must be positive, not {out_sr}")
    try:
        strength = check_strength(strength)
    except ValueError as exc:
        raise BatchError(f"--{exc}") from None
    in_dir, out_dir = check_batch_dirs(in_dir, out_dir)
    threads = threads or default_threads_per_job(jobs)
    # Validate model and target before any work; the workers load their own copies.
    model = load_model(model_dir, device=device, threads=threads)
    target = _resolve_target(target, model)
    model_dir = model.model_dir
    if describe is not None:
        extra = f", {jobs} jobs" if jobs > 1 else ""
        describe(model.describe() + extra)

    remove_stale_temporaries(out_dir)
    planned, clashes = plan_batch(in_dir, out_dir)
    summary = BatchSummary(files=len(planned) + len(clashes))
    summary.failed.extend(clashes)
    todo = []
    for src, dst, rel in planned:
        if dst.exists() and not overwrite:
            summary.skipped += 1
        else:
            todo.append((src, dst, rel))
    log = log or (lambda line: None)
    for rel, reason in clashes:
        log(f"FAILED {rel}: {reason}")

    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="file", disable=not progress or not todo, dynamic_ncols=True)

    def record(result):
        rel, seconds, error = result
        if error is None:
            summary.converted += 1
            summary.audio_seconds += seconds
        else:
            summary.failed.append((rel, error))
            log(f"FAILED {rel}: {error}")
        bar.update(1)

    try:
        if jobs == 1 or len(todo) <= 1:
            _worker.update(model=model, target=target, n_iter=n_iter, out_sr=out_sr, harmonics=harmonics,
                           strength=strength)
            for job in todo:
                record(_worker_convert(job))
        else:
            # The parent's sessions are dropped before forking so no ONNX Runtime threads exist at fork.
            del model
            _worker.clear()
            # Longest files first: the last busy worker then finishes a short file while the others idle.
            todo.sort(key=_size_or_zero, reverse=True)
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ctx.Pool(min(jobs, len(todo)), initializer=_worker_init,
                          initargs=(model_dir, device, threads, target, n_iter, out_sr, harmonics,
                                    strength)) as pool:
                for result in pool.imap_unordered(_worker_convert, todo):
                    record(result)
    finally:
        bar.close()
        _worker.clear()
        summary.wall_seconds = time.perf_counter() - start
    return summary

