"""Log-magnitude features of many audio files, in this process or in a pool of worker processes.

`FeatureExtractor.map` yields ``(features, seconds)`` or ``(None, reason)`` per file, in order; the
feature cache's builder (training.data.features) is its main user. Worker processes are started with the
"forkserver" method, which re-imports the main script: scripts that use several jobs need the usual
``if __name__ == "__main__":`` guard.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
from typing import Iterator, Sequence

import numpy as np

from training.data.audio import AudioError, load_audio
from training.data.cache import SEGMENT_LENGTH, FeatureCacheError
from vc.dsp import FeatureConfig, log_magnitude


# Worker-process state, set once per process by _init_worker.
_worker_config: FeatureConfig | None = None
_worker_min_frames = SEGMENT_LENGTH
_worker_scratch: str | None = None
_worker_shard: list | None = None  # [fd, name, bytes written]
_worker_shard_bytes = 0

# Workers hand features to the parent through files in a scratch directory rather than through the
# result pipe: on two cores, pickling and piping every (frames, 200) array cost nearly as much
# CPU as extracting it.
# A worker starts a new shard file after this many bytes so the parent can delete consumed ones.
SHARD_BYTES = 64 << 20


def _init_worker(config_dict: dict, min_frames: int, scratch: str | None = None,
                 shard_bytes: int = 0) -> None:
    global _worker_config, _worker_min_frames, _worker_scratch, _worker_shard, _worker_shard_bytes
    _worker_config = FeatureConfig.from_dict(config_dict)
    _worker_min_frames = min_frames
    _worker_scratch = scratch
    _worker_shard = None
    _worker_shard_bytes = shard_bytes


def extract_features(path: os.PathLike | str, config: FeatureConfig,
                     min_frames: int = SEGMENT_LENGTH) -> tuple[np.ndarray, float]:
    """Features (frames, n_features) and audio duration in seconds of one file.

    Raises :class:`AudioError` (one line, naming the file) for anything that makes the file unusable,
    including fewer than ``min_frames`` frames.
    """
    y = load_audio(path, sr=config.sr)
    if len(y) < config.n_fft:
        raise AudioError(path, f"too short: {len(y) / config.sr * 1000:.0f} ms, less than one "
                               f"{config.n_fft}-sample analysis window")
    try:
        features = log_magnitude(y, cfg=config)
    except ValueError as exc:
        raise AudioError(path, f"feature extraction failed ({exc})") from None
    if features.shape[0] < min_frames:
        raise AudioError(path, f"too short for one segment: {features.shape[0]} frames, "
                               f"need {min_frames}")
    return np.ascontiguousarray(features, dtype=np.float32), len(y) / config.sr


def _safe_extract(path: str, config: FeatureConfig, min_frames: int):
    """``(features, seconds)`` or ``(None, reason)``: problems are reported, never raised."""
    try:
        return extract_features(path, config, min_frames)
    except AudioError as exc:
        return None, exc.reason
    except Exception as exc:  # noqa: BLE001 - the run goes on without this file
        return None, f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())}"


def _extract_to_shard(path: str):
    """Like :func:`_safe_extract` in a worker, but the features go to this worker's shard file:
    returns ``((shard name, byte offset, frames), seconds)`` or ``(None, reason)``."""
    global _worker_shard
    features, info = _safe_extract(path, _worker_config, _worker_min_frames)
    if features is None:
        return None, info
    if _worker_shard is None or _worker_shard[2] >= _worker_shard_bytes:
        serial = 0
        if _worker_shard is not None:
            os.close(_worker_shard[0])
            serial = int(_worker_shard[1].rsplit("-", 1)[1]) + 1
        name = f"{os.getpid()}-{serial}"
        fd = os.open(os.path.join(_worker_scratch, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        _worker_shard = [fd, name, 0]
    fd, name, offset = _worker_shard
    view = memoryview(features).cast("B")
    while view:
        view = view[os.write(fd, view):]
    _worker_shard[2] += features.nbytes
    return (name, offset, features.shape[0]), info


class FeatureExtractor:
    """Features of many files, in input order, computed by ``jobs`` processes.

    ``map(paths)`` yields ``(features, seconds)`` or ``(None, reason)`` per path. With ``jobs > 1``
    the workers (forkserver processes, safe to start from a program that already runs threads)
    write features to shard files in ``scratch`` (a private temporary directory when None) and the
    parent reads them back; shards are deleted as soon as they have been read. Use as a context
    manager, or call ``close()``.
    """

    def __init__(self, config: FeatureConfig = FeatureConfig(), *, jobs: int = 1,
                 min_frames: int = SEGMENT_LENGTH, scratch: os.PathLike | str | None = None,
                 shard_bytes: int = SHARD_BYTES):
        import tempfile
        from concurrent.futures import ProcessPoolExecutor

        self.config, self.jobs, self.min_frames = config, int(jobs), min_frames
        self.executor = None
        self._own_scratch = None
        self._open: dict[str, int] = {}               # shard name -> file descriptor
        self._latest: dict[str, str] = {}             # worker pid -> newest shard name seen
        if self.jobs <= 1:
            return
        if scratch is None:
            scratch = self._own_scratch = tempfile.mkdtemp(prefix="vc-features-")
        self.scratch = str(scratch)
        context = multiprocessing.get_context("forkserver")
        # Workers import this module once at start-up rather than per task.
        context.set_forkserver_preload([__name__])
        self.executor = ProcessPoolExecutor(self.jobs, mp_context=context, initializer=_init_worker,
                                            initargs=(config.to_dict(), min_frames, self.scratch,
                                                      shard_bytes))

    def __enter__(self) -> "FeatureExtractor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()
        if self._own_scratch is not None:
            shutil.rmtree(self._own_scratch, ignore_errors=True)
            self._own_scratch = None

    def _read(self, name: str, offset: int, frames: int) -> np.ndarray:
        pid = name.rsplit("-", 1)[0]
        if name not in self._open:
            self._open[name] = os.open(os.path.join(self.scratch, name), os.O_RDONLY)
            # A worker takes tasks in input order and results are consumed in input order, so once
            # its next shard appears, everything in its older shards has been read.
            older = self._latest.get(pid)
            if older is not None and older in self._open:
                os.close(self._open.pop(older))
                os.unlink(os.path.join(self.scratch, older))
            self._latest[pid] = name
        nbytes = frames * self.config.n_features * 4
        data = os.pread(self._open[name], nbytes, offset)
        if len(data) != nbytes:
            raise FeatureCacheError(f"{self.scratch}/{name}: shard shorter than announced")
        return np.frombuffer(data, dtype=np.float32).reshape(frames, self.config.n_features)

    def map(self, paths: Sequence[str]) -> Iterator[tuple[np.ndarray | None, object]]:
        from concurrent.futures.process import BrokenProcessPool

        paths = [str(p) for p in paths]
        if self.executor is None:
            for path in paths:
                yield _safe_extract(path, self.config, self.min_frames)
            return
        # Small chunks keep every worker busy to the end; larger ones cut scheduling overhead.
        chunk = max(1, min(32, len(paths) // (8 * self.jobs)))
        try:
            for ref, info in self.executor.map(_extract_to_shard, paths, chunksize=chunk):
                yield (None, info) if ref is None else (self._read(*ref), info)
        except BrokenProcessPool:
            raise FeatureCacheError("a feature worker process died (out of memory, or a crash in a "
                                    "decoder); rerun with --jobs 1 to see which file") from None
