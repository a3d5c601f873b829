"""Reading the feature cache: the one reader of the format, used by vc-train (training.dataset) and
vc-eer (training.eval.sources); training.data.features builds it.

Layout (README, "Feature cache")::

    CACHE/manifest.json            format, feature_config, config_hash, segment_length, segment_hop,
                                   corpus, corpus_info, counts (per split), skipped, inputs_hash
    CACHE/mean.npy, std.npy        float32 (n_features,), from the train split only
    CACHE/<split>/frames.npy       float32 (n_frames, n_features), raw features of all utterances
    CACHE/<split>/utterances.csv   index,speaker,utterance,path,frame_start,n_frames
    CACHE/<split>/segments.npy     int64 (n_segments, 2): (utterance index, first frame row)

Every check a reader needs is made here, once: the manifest's format and feature-config hash, the
normalisation's shape and values, each split's array types, its utterance rows and that every segment
lies inside its own utterance.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from vc.dsp import FeatureConfig

FORMAT = "dsae-vc-features/1"
SEGMENT_LENGTH = 20  # frames: 200 ms at a 10 ms hop, the DSAE's sequence length
UTTERANCE_COLUMNS = ("index", "speaker", "utterance", "path", "frame_start", "n_frames")


class FeatureCacheError(ValueError):
    """A cache that cannot be built or read; ``str()`` is one line naming the path."""


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
        self._check_rows(directory, segment_length)
        self.speakers = sorted({u.speaker for u in self.utterances})
        index = {s: i for i, s in enumerate(self.speakers)}
        self.utterance_speakers = np.array([index[u.speaker] for u in self.utterances], dtype=np.int64)
        self.segment_speakers = (self.utterance_speakers[self.segments[:, 0]] if len(self.segments)
                                 else np.zeros(0, dtype=np.int64))

    def _check_rows(self, directory: Path, segment_length: int):
        """Utterances numbered in order inside frames.npy; every segment inside its own utterance."""
        starts = np.array([u.frame_start for u in self.utterances], dtype=np.int64)
        lengths = np.array([u.n_frames for u in self.utterances], dtype=np.int64)
        for row, u in enumerate(self.utterances):
            if u.index != row:
                raise FeatureCacheError(f"{directory / 'utterances.csv'}: row {row + 2} has index {u.index}, "
                                        f"expected {row}")
        if len(starts) and (starts.min() < 0 or (starts + lengths).max() > len(self.frames)):
            raise FeatureCacheError(f"{directory / 'utterances.csv'}: an utterance runs past the end of frames.npy")
        if not len(self.segments):
            return
        owner, first = self.segments[:, 0], self.segments[:, 1]
        if owner.min() < 0 or owner.max() >= len(self.utterances) or first.min() < 0 \
                or first.max() + segment_length > len(self.frames):
            raise FeatureCacheError(f"{directory / 'segments.npy'}: segments point outside the split")
        if np.any(first < starts[owner]) or np.any(first + segment_length > starts[owner] + lengths[owner]):
            raise FeatureCacheError(f"{directory / 'segments.npy'}: a segment runs outside its utterance")

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
