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
modification times), feature config and segmenting are unchanged. :class:`FeatureCache`
(training.data.cache, the one reader; its names are importable from here too) reads it::

    cache = FeatureCache("cache/open")
    train = cache.split("train")
    x = cache.normalise(train.segment(0))          # (20, 200), zero mean / unit std per dim
    who = train.speakers[train.segment_speakers[0]]

Features come from training.data.extract (worker processes started with the "forkserver" method,
which re-imports the main script: scripts that call :func:`build_feature_cache` need the usual
``if __name__ == "__main__":`` guard).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from numpy.lib import format as npy_format

from training.data.cache import (FORMAT, SEGMENT_LENGTH, UTTERANCE_COLUMNS, CachedUtterance, CacheSplit,
                                 FeatureCache, FeatureCacheError)
from training.data.corpora import SPLITS, Corpus, Utterance
from training.data.extract import FeatureExtractor, extract_features
from vc.dsp import FeatureConfig

__all__ = ["FeatureCache", "CacheSplit", "CachedUtterance", "FeatureCacheError", "BuildReport",
           "FeatureExtractor", "extract_features", "build_feature_cache", "FORMAT",
           "SEGMENT_LENGTH", "STD_FLOOR"]

# Bins that never rise above the log floor have zero variance; dividing by this instead keeps
# normalised features finite without amplifying numerical noise.
STD_FLOOR = 1e-3


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
    jobs = _checked_options(out, segment_length, segment_hop, jobs)
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
    try:
        manifest = _write_cache(tmp, corpus, by_split, key, config, jobs, progress, log)
        manifest["build_seconds"] = round(time.perf_counter() - started, 3)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return BuildReport(out, False, manifest, time.perf_counter() - started)


def _checked_options(out: Path, segment_length, segment_hop, jobs) -> int:
    """The number of worker processes, after checking the segmenting options."""
    if isinstance(segment_length, bool) or not isinstance(segment_length, int) or segment_length < 1:
        raise FeatureCacheError(f"{out}: segment_length must be a positive integer, got {segment_length!r}")
    if isinstance(segment_hop, bool) or not isinstance(segment_hop, int) or segment_hop < 1:
        raise FeatureCacheError(f"{out}: segment_hop must be a positive integer, got {segment_hop!r}")
    jobs = _default_jobs() if jobs is None else int(jobs)
    if jobs < 1:
        raise FeatureCacheError(f"{out}: jobs must be at least 1, got {jobs}")
    return jobs


def _write_cache(tmp: Path, corpus: Corpus, by_split: dict, key: dict, config: FeatureConfig, jobs: int,
                 progress: bool, log) -> dict:
    """Every split and the train statistics into the build directory; the manifest (not yet written)."""
    segment_length, segment_hop = key["segment_length"], key["segment_hop"]
    extractor = FeatureExtractor(config, jobs=jobs, min_frames=segment_length,
                                 scratch=_scratch_dir(tmp) if jobs > 1 else None)
    try:
        moments = _RunningMoments(config.n_features)
        counts: dict[str, dict] = {}
        skipped: list[dict] = []
        for split, utts in by_split.items():
            counts[split] = _build_split(tmp / split, split, utts, extractor, config,
                                         segment_length, segment_hop, progress, log, skipped,
                                         moments if split == "train" else None)
    finally:
        extractor.close()
    if moments.n == 0:
        raise FeatureCacheError(f"{corpus.root}: no usable audio in the train split "
                                f"({counts['train']['skipped']} file(s) skipped)")
    np.save(tmp / "mean.npy", moments.mean.astype(np.float32), allow_pickle=False)
    np.save(tmp / "std.npy", np.maximum(moments.std(), STD_FLOOR).astype(np.float32), allow_pickle=False)
    shutil.rmtree(tmp / ".scratch", ignore_errors=True)
    return {
        **key,
        "counts": counts,
        "skipped": skipped,
        "stats": {"split": "train", "frames": int(moments.n), "std_floor": STD_FLOOR},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": None,
        "jobs": jobs,
    }


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
