"""The feature cache: log-magnitude frames of a corpus, cut into fixed-length segments.

Layout (README, "Feature cache"; binding for vc-train and vc-eer)::

    CACHE/manifest.json            format, feature_config, config_hash, segment_length, segment_hop,
                                   corpus (its name, a string; corpus_info: kind, root, reader
                                   options), counts (per split), skipped (file, reason), inputs_hash
    CACHE/mean.npy, std.npy        float32 (n_features,), from the train split only
    CACHE/<split>/frames.npy       float32 (n_frames, n_features), raw features of all utterances
    CACHE/<split>/utterances.csv   index,speaker,utterance,path,frame_start,n_frames
    CACHE/<split>/segments.npy     int64 (n_segments, 2): (utterance index, first frame row)

:func:`build_feature_cache` writes it (processes over utterances, the whole cache built in a
temporary directory and renamed into place) or reuses an existing one whose inputs (paths, sizes,
modification times), feature config and segmenting are unchanged. :class:`FeatureCache` reads it::

    cache = FeatureCache("cache/open")
    train = cache.split("train")
    x = cache.normalise(train.segment(0))          # (20, 200), zero mean / unit std per dim
    who = train.speakers[train.segment_speakers[0]]

Worker processes are started with the "forkserver" method, which re-imports the main script:
scripts that call :func:`build_feature_cache` need the usual ``if __name__ == "__main__":`` guard.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from numpy.lib import format as npy_format

from training.data.audio import AudioError, load_audio
from training.data.corpora import SPLITS, Corpus, Utterance
from vc.dsp import FeatureConfig, log_magnitude

__all__ = ["FeatureCache", "CacheSplit", "CachedUtterance", "FeatureCacheError", "BuildReport",
           "FeatureExtractor", "extract_features", "build_feature_cache", "FORMAT",
           "SEGMENT_LENGTH", "STD_FLOOR"]

FORMAT = "dsae-vc-features/1"
SEGMENT_LENGTH = 20  # frames: 200 ms at a 10 ms hop, the DSAE's sequence length
# Bins that never rise above the log floor have zero variance; dividing by this instead keeps
# normalised features finite without amplifying numerical noise.
STD_FLOOR = 1e-3
UTTERANCE_COLUMNS = ("index", "speaker", "utterance", "path", "frame_start", "n_frames")


class FeatureCacheError(ValueError):
    """A cache that cannot be built or read; ``str()`` is one line naming the path."""


# ------------------------------------------------------------------------------------- reading

@dataclasses.dataclass(frozen=True)
class CachedUtterance:
    index: int
    speaker: str
    utterance: str
    path: str
    frame_start: int
    n_frames: int


class CacheSplit:
    """One split of a cache.

    ``frames``: read-only memmap (n_frames, n_features) of raw features; ``segments``: int64
    (n_segments, 2) of (utterance index, first frame row); ``utterances``: list of
    :class:`CachedUtterance`; ``speakers``: sorted speaker names; ``segment_speakers`` and
    ``utterance_speakers``: int64 indices into ``speakers``. ``segment(i)`` is the raw
    (segment_length, n_features) block of segment ``i``.
    """

    def __init__(self, directory: Path, segment_length: int, n_features: int):
        self.name = directory.name
        self.segment_length = segment_length
        try:
            self.frames = np.load(directory / "frames.npy", mmap_mode="r", allow_pickle=False)
            self.segments = np.load(directory / "segments.npy", allow_pickle=False)
            with open(directory / "utterances.csv", newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if tuple(reader.fieldnames or ()) != UTTERANCE_COLUMNS:
                    raise FeatureCacheError(f"{directory / 'utterances.csv'}: columns must be "
                                            f"{','.join(UTTERANCE_COLUMNS)}")
                self.utterances = [
                    CachedUtterance(int(r["index"]), r["speaker"], r["utterance"], r["path"],
                                    int(r["frame_start"]), int(r["n_frames"])) for r in reader]
        except FeatureCacheError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FeatureCacheError(f"{directory}: unreadable cache split ({exc})") from None
        if self.frames.ndim != 2 or self.frames.shape[1] != n_features or self.frames.dtype != np.float32:
            raise FeatureCacheError(f"{directory / 'frames.npy'}: expected float32 (n, {n_features}), "
                                    f"got {self.frames.dtype} {self.frames.shape}")
        if self.segments.ndim != 2 or self.segments.shape[1] != 2 or self.segments.dtype != np.int64:
            raise FeatureCacheError(f"{directory / 'segments.npy'}: expected int64 (n, 2), "
                                    f"got {self.segments.dtype} {self.segments.shape}")
        if len(self.segments) and (self.segments[:, 0].min() < 0
                                   or self.segments[:, 0].max() >= len(self.utterances)
                                   or self.segments[:, 1].min() < 0
                                   or self.segments[:, 1].max() + segment_length > len(self.frames)):
            raise FeatureCacheError(f"{directory / 'segments.npy'}: segments point outside the split")
        self.speakers = sorted({u.speaker for u in self.utterances})
        index = {s: i for i, s in enumerate(self.speakers)}
        self.utterance_speakers = np.array([index[u.speaker] for u in self.utterances], dtype=np.int64)
        self.segment_speakers = (self.utterance_speakers[self.segments[:, 0]] if len(self.segments)
                                 else np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.segments)

    def segment(self, i: int) -> np.ndarray:
        start = int(self.segments[i, 1])
        return self.frames[start:start + self.segment_length]

    def utterance_frames(self, i: int) -> np.ndarray:
        u = self.utterances[i]
        return self.frames[u.frame_start:u.frame_start + u.n_frames]


class FeatureCache:
    """Open a cache written by :func:`build_feature_cache`.

    ``config`` (:class:`vc.dsp.FeatureConfig`), ``mean``/``std`` (float32, train split),
    ``segment_length``, ``segment_hop``, ``manifest`` (the parsed JSON), ``splits`` (the names of
    the non-empty splits; an empty split has counts in the manifest but no directory) and
    ``split(name)`` (a :class:`CacheSplit`, opened once). ``normalise(x)`` applies mean/std.
    """

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FeatureCacheError(f"{self.path}: not a feature cache (no manifest.json)") from None
        except (OSError, ValueError) as exc:
            raise FeatureCacheError(f"{manifest_path}: unreadable manifest ({exc})") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT:
            found = self.manifest.get("format") if isinstance(self.manifest, dict) else None
            raise FeatureCacheError(f"{manifest_path}: format {found!r} is not {FORMAT!r}")
        try:
            self.config = FeatureConfig.from_dict(self.manifest["feature_config"])
            self.segment_length = int(self.manifest["segment_length"])
            self.segment_hop = int(self.manifest["segment_hop"])
            self.splits = [name for name, c in self.manifest["counts"].items() if c["utterances"] > 0]
            self.mean = np.load(self.path / "mean.npy", allow_pickle=False)
            self.std = np.load(self.path / "std.npy", allow_pickle=False)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise FeatureCacheError(f"{self.path}: incomplete feature cache ({exc})") from None
        if self.config.hash() != self.manifest.get("config_hash"):
            raise FeatureCacheError(f"{manifest_path}: config_hash does not match feature_config")
        n = self.config.n_features
        for name, a in (("mean", self.mean), ("std", self.std)):
            if a.shape != (n,) or a.dtype != np.float32 or not np.isfinite(a).all():
                raise FeatureCacheError(f"{self.path / (name + '.npy')}: expected finite float32 ({n},)")
        if (self.std <= 0).any():
            raise FeatureCacheError(f"{self.path / 'std.npy'}: non-positive standard deviation")
        self.corpus = self.manifest.get("corpus", "")
        self._splits: dict[str, CacheSplit] = {}

    def split(self, name: str) -> CacheSplit:
        if name not in self.splits:
            raise FeatureCacheError(f"{self.path}: no split {name!r} in this cache "
                                    f"(has: {', '.join(self.splits) or 'none'})")
        if name not in self._splits:
            self._splits[name] = CacheSplit(self.path / name, self.segment_length,
                                            self.config.n_features)
        return self._splits[name]

    def normalise(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) - self.mean) / self.std

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.path)!r})"


# -------------------------------------------------------------------------------------- building

@dataclasses.dataclass
class BuildReport:
    path: Path
    reused: bool
    manifest: dict
    seconds: float  # wall time of this call

    @property
    def skipped(self) -> list[dict]:
        return self.manifest["skipped"]

    def summary(self) -> str:
        head = (f"reused feature cache {self.path} (same inputs, feature config and segmenting)"
                if self.reused else f"built feature cache {self.path} in {self.seconds:.1f} s")
        parts = []
        for split, c in self.manifest["counts"].items():
            audio = c["audio_seconds"]
            audio = f"{audio / 3600:.2f} h" if audio >= 3600 else f"{audio / 60:.1f} min"
            parts.append(f"{split}: {c['utterances']} utterances, {c['speakers']} speakers, "
                         f"{c['segments']} segments, {audio}")
        skipped = len(self.manifest["skipped"])
        return f"{head}; " + "; ".join(parts) + f"; {skipped} file(s) skipped"


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


def _fingerprint(splits: dict[str, list[Utterance]]) -> str:
    """Hash of every input: split, speaker, utterance, path, size and mtime (ns) of the audio file."""
    h = hashlib.sha256()
    for split, utts in splits.items():
        for u in utts:
            try:
                st = os.stat(u.path)
                stamp = (st.st_size, st.st_mtime_ns)
            except OSError:
                stamp = (-1, -1)
            h.update(json.dumps([split, u.speaker, u.utterance, str(u.path), *stamp]).encode())
            h.update(b"\n")
    return h.hexdigest()


class _NpyRowWriter:
    """Append rows to a .npy file whose length is unknown until the end.

    numpy pads version-1 headers so that the first dimension can grow to 21 digits in place
    (``GROWTH_AXIS_MAX_DIGITS``), which lets the header be rewritten once the row count is known.
    """

    def __init__(self, path: Path, n_columns: int, dtype=np.float32):
        self.path, self.n_columns, self.dtype = path, n_columns, np.dtype(dtype)
        self.rows = 0
        self.file = open(path, "wb")
        npy_format.write_array_header_1_0(self.file, self._header(0))
        self.data_offset = self.file.tell()

    def _header(self, rows: int) -> dict:
        return {"descr": npy_format.dtype_to_descr(self.dtype), "fortran_order": False,
                "shape": (rows, self.n_columns)}

    def append(self, block: np.ndarray) -> int:
        start = self.rows
        self.file.write(memoryview(np.ascontiguousarray(block, dtype=self.dtype)).cast("B"))
        self.rows += block.shape[0]
        return start

    def close(self) -> None:
        self.file.seek(0)
        npy_format.write_array_header_1_0(self.file, self._header(self.rows))
        if self.file.tell() != self.data_offset:
            raise FeatureCacheError(f"{self.path}: .npy header grew while rewriting it")
        self.file.close()


class _RunningMoments:
    """Per-dimension mean and variance, merged per utterance (Chan et al.) in float64."""

    def __init__(self, dim: int):
        self.n = 0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros(dim)

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float64)
        n_b = x.shape[0]
        mean_b = x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * (n_b / n)
        self.m2 += m2_b + delta ** 2 * (self.n * n_b / n)
        self.n = n

    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.n, 1))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(out: Path) -> None:
    """Remove build directories left by killed runs (their process id is no longer alive)."""
    prefix = f".{out.name}.tmp-"
    for entry in out.parent.glob(prefix + "*"):
        pid = entry.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _reusable(out: Path, key: dict) -> bool:
    try:
        cache = FeatureCache(out)
    except FeatureCacheError:
        return False
    if any(cache.manifest.get(k) != v for k, v in key.items()):
        return False
    try:
        for split in cache.splits:
            cache.split(split)
    except FeatureCacheError:
        return False
    return True


def _default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def build_feature_cache(corpus: Corpus, out: os.PathLike | str, *,
                        splits: Sequence[str] = SPLITS,
                        config: FeatureConfig = FeatureConfig(),
                        segment_length: int = SEGMENT_LENGTH,
                        segment_hop: int = 10,
                        jobs: int | None = None,
                        progress: bool = True,
                        force: bool = False,
                        log: Callable[[str], None] | None = None) -> BuildReport:
    """Build (or reuse) the feature cache of ``corpus`` at ``out``; see the module docstring.

    ``splits`` always gains "train" (the normalisation statistics come from it). Unusable files are
    skipped with a logged line naming file and reason, and listed in the manifest. ``jobs``
    processes extract features (default: the CPUs this process may use). ``force`` rebuilds even
    when the cache matches.
    """
    started = time.perf_counter()
    out = Path(out)
    if log is None:
        def log(message: str) -> None:
            print(message, file=sys.stderr, flush=True)
    if isinstance(segment_length, bool) or not isinstance(segment_length, int) or segment_length < 1:
        raise FeatureCacheError(f"{out}: segment_length must be a positive integer, got {segment_length!r}")
    if isinstance(segment_hop, bool) or not isinstance(segment_hop, int) or segment_hop < 1:
        raise FeatureCacheError(f"{out}: segment_hop must be a positive integer, got {segment_hop!r}")
    jobs = _default_jobs() if jobs is None else int(jobs)
    if jobs < 1:
        raise FeatureCacheError(f"{out}: jobs must be at least 1, got {jobs}")
    wanted = list(dict.fromkeys(["train", *splits]))
    if "train" not in splits:
        log("including the train split: the normalisation statistics come from it")

    by_split = {s: corpus.utterances(s) for s in wanted}
    if not by_split["train"]:
        raise FeatureCacheError(f"{corpus.root}: the train split of {corpus.name} has no utterances")
    key = {
        "format": FORMAT,
        "config_hash": config.hash(),
        "feature_config": config.to_dict(),
        "segment_length": segment_length,
        "segment_hop": segment_hop,
        "split_names": wanted,
        "corpus": corpus.name,
        "corpus_info": corpus.describe(),
        "inputs_hash": _fingerprint(by_split),
    }

    if out.exists() and not force and _reusable(out, key):
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        return BuildReport(out, True, manifest, time.perf_counter() - started)
    if out.exists():
        if not out.is_dir():
            raise FeatureCacheError(f"{out}: exists and is not a directory")
        if any(out.iterdir()) and not (out / "manifest.json").is_file():
            raise FeatureCacheError(f"{out}: exists and is not a feature cache; refusing to replace it")

    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    extractor = None
    try:
        extractor = FeatureExtractor(config, jobs=jobs, min_frames=segment_length,
                                     scratch=_scratch_dir(tmp) if jobs > 1 else None)
        moments = _RunningMoments(config.n_features)
        counts: dict[str, dict] = {}
        skipped: list[dict] = []
        for split in wanted:
            counts[split] = _build_split(tmp / split, split, by_split[split], extractor, config,
                                         segment_length, segment_hop, progress, log, skipped,
                                         moments if split == "train" else None)
        extractor.close()
        if moments.n == 0:
            raise FeatureCacheError(f"{corpus.root}: no usable audio in the train split "
                                    f"({counts['train']['skipped']} file(s) skipped)")
        mean = moments.mean.astype(np.float32)
        std = np.maximum(moments.std(), STD_FLOOR).astype(np.float32)
        np.save(tmp / "mean.npy", mean, allow_pickle=False)
        np.save(tmp / "std.npy", std, allow_pickle=False)
        manifest = {
            **key,
            "counts": counts,
            "skipped": skipped,
            "stats": {"split": "train", "frames": int(moments.n), "std_floor": STD_FLOOR},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.perf_counter() - started, 3),
            "jobs": jobs,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(tmp / ".scratch", ignore_errors=True)
        _swap_into_place(tmp, out)
    finally:
        if extractor is not None:
            extractor.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return BuildReport(out, False, manifest, time.perf_counter() - started)


def _scratch_dir(tmp: Path) -> Path:
    # Inside the build directory: same file system as the output, removed with it.
    scratch = tmp / ".scratch"
    scratch.mkdir()
    return scratch


def _swap_into_place(tmp: Path, out: Path) -> None:
    # A directory cannot atomically replace a non-empty one: move the old cache aside first, so
    # readers see either the old complete cache, briefly none, or the new complete cache.
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _build_split(directory: Path, split: str, utts: list[Utterance],
                 extractor: FeatureExtractor, config: FeatureConfig,
                 segment_length: int, segment_hop: int, progress: bool, log, skipped: list,
                 moments: _RunningMoments | None) -> dict:
    from tqdm import tqdm

    directory.mkdir()
    writer = _NpyRowWriter(directory / "frames.npy", config.n_features)
    rows: list[tuple] = []
    segments: list[np.ndarray] = []
    seconds_total = 0.0
    n_skipped = 0
    results = extractor.map([str(u.path) for u in utts])
    bar = tqdm(total=len(utts), desc=f"features {split}", unit="utt", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        for u, (features, info) in zip(utts, results):
            bar.update(1)
            if features is None:
                n_skipped += 1
                skipped.append({"split": split, "speaker": u.speaker, "utterance": u.utterance,
                                "path": str(u.path), "reason": info})
                message = f"skipped {u.path}: {info}"
                if progress:
                    bar.write(message, file=sys.stderr)
                else:
                    log(message)
                continue
            index = len(rows)
            start = writer.append(features)
            n = features.shape[0]
            rows.append((index, u.speaker, u.utterance, str(u.path), start, n))
            firsts = start + np.arange(0, n - segment_length + 1, segment_hop, dtype=np.int64)
            segments.append(np.stack([np.full_like(firsts, index), firsts], axis=1))
            seconds_total += info
            if moments is not None:
                moments.add(features)
    finally:
        bar.close()
        writer.close()
    with open(directory / "utterances.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(UTTERANCE_COLUMNS)
        w.writerows(rows)
    segment_array = np.concatenate(segments) if segments else np.zeros((0, 2), dtype=np.int64)
    np.save(directory / "segments.npy", segment_array.astype(np.int64), allow_pickle=False)
    if not rows:
        # No directory rather than an empty one: readers treat a present split as usable.
        shutil.rmtree(directory)
        log(f"warning: split {split!r} has no usable utterances; it is not in the cache")
    return {"utterances": len(rows), "speakers": len({r[1] for r in rows}),
            "frames": int(writer.rows), "segments": int(len(segment_array)),
            "audio_seconds": round(seconds_total, 3), "skipped": n_skipped}
