"""Normalised 200 ms segments from a feature cache (layout: README, "Feature cache").

    CACHE/manifest.json, mean.npy, std.npy
    CACHE/<split>/frames.npy (n_frames, 200) float32, utterances.csv, segments.npy (n_segments, 2) int64

`SegmentDataset` is a torch Dataset (item i -> (T, D) float32 tensor of (frames - mean) / std) and also
gathers whole batches with one vectorised read (`batch`), which is what the trainer uses: on two cores a
DataLoader with workers only costs. `write_synthetic_cache` writes a tiny cache in the same layout for tests.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import torch

UTTERANCE_COLUMNS = ["index", "speaker", "utterance", "path", "frame_start", "n_frames"]


class CacheError(ValueError):
    """A feature cache is missing a file or is inconsistent; the message names the file."""


def read_manifest(cache_dir: str | os.PathLike) -> dict:
    path = Path(cache_dir) / "manifest.json"
    if not path.is_file():
        raise CacheError(f"{path}: no such file (is {cache_dir} a feature cache written by vc-features?)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or "feature_config" not in manifest:
        raise CacheError(f"{path}: no 'feature_config' entry")
    return manifest


def _load_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    if not path.is_file():
        raise CacheError(f"{path}: no such file")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: cannot read ({exc})") from None


def read_normalisation(cache_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    cache_dir = Path(cache_dir)
    mean = _load_npy(cache_dir / "mean.npy").astype(np.float32)
    std = _load_npy(cache_dir / "std.npy").astype(np.float32)
    if mean.ndim != 1 or std.shape != mean.shape:
        raise CacheError(f"{cache_dir}: mean.npy {mean.shape} and std.npy {std.shape} must be equal 1-D shapes")
    if not np.all(np.isfinite(mean)) or not np.all(std > 0):
        raise CacheError(f"{cache_dir / 'std.npy'}: std must be finite and > 0, mean finite")
    return mean, std


def read_utterances(path: Path) -> list[dict]:
    if not path.is_file():
        raise CacheError(f"{path}: no such file")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("index", "speaker", "frame_start", "n_frames") if c not in (reader.fieldnames or [])]
        if missing:
            raise CacheError(f"{path}: missing column(s) {missing}")
        rows = list(reader)
    for i, row in enumerate(rows):
        try:
            for key in ("index", "frame_start", "n_frames"):
                row[key] = int(row[key])
        except ValueError:
            raise CacheError(f"{path}: row {i + 2} has a non-integer index/frame_start/n_frames") from None
        if row["index"] != i:
            raise CacheError(f"{path}: row {i + 2} has index {row['index']}, expected {i}")
    return rows


class SegmentDataset(torch.utils.data.Dataset):
    """Segments of one split of a feature cache, normalised with the cache's train-split mean/std."""

    def __init__(self, cache_dir: str | os.PathLike, split: str, *, speakers: list[str] | None = None):
        self.cache_dir = Path(cache_dir)
        self.split = split
        self.manifest = read_manifest(self.cache_dir)
        self.segment_length = int(self.manifest.get("segment_length", 20))
        self.mean, self.std = read_normalisation(self.cache_dir)
        split_dir = self.cache_dir / split
        if not split_dir.is_dir():
            raise CacheError(f"{split_dir}: no such split directory")
        self.frames = _load_npy(split_dir / "frames.npy", mmap=True)
        if self.frames.ndim != 2 or self.frames.shape[1] != self.mean.shape[0]:
            raise CacheError(f"{split_dir / 'frames.npy'}: shape {self.frames.shape}, expected (n, {self.mean.shape[0]})")
        if self.frames.dtype != np.float32:
            raise CacheError(f"{split_dir / 'frames.npy'}: dtype {self.frames.dtype}, expected float32")
        segments = _load_npy(split_dir / "segments.npy")
        if segments.ndim != 2 or segments.shape[1] != 2 or not np.issubdtype(segments.dtype, np.integer):
            raise CacheError(f"{split_dir / 'segments.npy'}: expected an integer array of shape (n, 2)")
        self.utterances = read_utterances(split_dir / "utterances.csv")
        if len(segments) == 0:
            raise CacheError(f"{split_dir / 'segments.npy'}: no segments")
        utt = segments[:, 0].astype(np.int64)
        start = segments[:, 1].astype(np.int64)
        if utt.min() < 0 or utt.max() >= len(self.utterances):
            raise CacheError(f"{split_dir / 'segments.npy'}: utterance index out of range")
        utt_start = np.array([u["frame_start"] for u in self.utterances], dtype=np.int64)
        utt_len = np.array([u["n_frames"] for u in self.utterances], dtype=np.int64)
        if np.any(start < utt_start[utt]) or np.any(start + self.segment_length > utt_start[utt] + utt_len[utt]):
            raise CacheError(f"{split_dir / 'segments.npy'}: a segment runs outside its utterance")
        if start.max() + self.segment_length > len(self.frames):
            raise CacheError(f"{split_dir / 'segments.npy'}: a segment runs past the end of frames.npy")
        self.segment_utterance = utt
        self.segment_start = start

        names = [u["speaker"] for u in self.utterances]
        # Speaker indices follow the given list (the train split's) so that dev indices mean the same;
        # speakers absent from it get -1 (fine for the adversary: dev is never fed to it).
        self.speakers = sorted(set(names)) if speakers is None else list(speakers)
        lookup = {s: i for i, s in enumerate(self.speakers)}
        utt_speaker = np.array([lookup.get(s, -1) for s in names], dtype=np.int64)
        self.segment_speaker = utt_speaker[utt]
        # Grouping by the split's own speaker names (not by hash(), which changes between processes) keeps
        # partner choices reproducible, which exact resumption needs.
        _, name_ids = np.unique(np.array(names, dtype=object).astype(str), return_inverse=True)
        self._partner_index = self._index_by_speaker(name_ids.astype(np.int64)[utt], utt)
        self._offsets = np.arange(self.segment_length, dtype=np.int64)

    @staticmethod
    def _index_by_speaker(speaker: np.ndarray, utterance: np.ndarray):
        """Segments sorted by (speaker, utterance), with each segment's speaker block and utterance block."""
        order = np.lexsort((utterance, speaker))
        spk, utt = speaker[order], utterance[order]
        key = spk * (int(utterance.max()) + 1) + utt
        blocks = {}
        for name, k in (("speaker", spk), ("utterance", key)):
            start = np.empty(len(order), dtype=np.int64)
            size = np.empty(len(order), dtype=np.int64)
            start[order] = np.searchsorted(k, k, side="left")
            size[order] = np.searchsorted(k, k, side="right") - start[order]
            blocks[name] = (start, size)
        return order, blocks["speaker"], blocks["utterance"]

    def __len__(self) -> int:
        return len(self.segment_start)

    @property
    def feature_dim(self) -> int:
        return int(self.frames.shape[1])

    def batch(self, indices) -> np.ndarray:
        """(B, T, D) float32 normalised segments for the given segment indices."""
        rows = self.segment_start[np.asarray(indices)][:, None] + self._offsets
        return (self.frames[rows.ravel()].reshape(len(rows), self.segment_length, -1) - self.mean) / self.std

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.batch([i])[0])

    def grouped_order(self, rng: np.random.Generator, group_size: int) -> np.ndarray:
        """A random order of segments in which each consecutive run of group_size shares a speaker
        (groups themselves in random order; a speaker's leftover segments, fewer than a group, are left out
        of this epoch)."""
        order, (spk_start, spk_size), _ = self._partner_index
        groups = []
        starts = np.unique(spk_start[order])
        for start in starts:
            members = order[start:start + spk_size[order[start]]]
            members = members[rng.permutation(len(members))]
            usable = len(members) - len(members) % group_size
            groups.append(members[:usable].reshape(-1, group_size))
        groups = np.concatenate(groups)
        return groups[rng.permutation(len(groups))].ravel()

    def partners(self, indices, rng: np.random.Generator) -> np.ndarray:
        """For each segment, a random segment of the same speaker from another utterance (from the same
        utterance only when the speaker has no other)."""
        indices = np.asarray(indices, dtype=np.int64)
        order, (spk_start, spk_size), (utt_start, utt_size) = self._partner_index
        gs, gn = spk_start[indices], spk_size[indices]
        us, un = utt_start[indices], utt_size[indices]
        others = gn - un
        has_other = others > 0
        r = rng.integers(0, np.where(has_other, others, gn))
        pos = gs + r
        pos = np.where(has_other & (pos >= us), pos + un, pos)
        return order[pos]


# ----------------------------------------------------------------------------- synthetic caches for tests

def write_synthetic_cache(cache_dir: str | os.PathLike, *, n_speakers: int = 4, utterances_per_speaker: int = 3,
                          frames_per_utterance: int = 60, segment_length: int = 20, segment_hop: int = 10,
                          feature_dim: int = 200, splits=("train", "dev"), seed: int = 0) -> Path:
    """A tiny cache in the README layout: each speaker is a fixed spectral envelope, the content a
    speaker-independent sequence of moving bumps, so a working DSAE can separate the two."""
    cache_dir = Path(cache_dir)
    rng = np.random.default_rng(seed)
    bins = np.arange(feature_dim)
    envelopes = [rng.normal(0, 1.0, 8) for _ in range(n_speakers)]
    basis = np.stack([np.cos(np.pi * k * bins / feature_dim) for k in range(8)])
    feature_config = {"sr": 16000, "n_fft": 2 * feature_dim, "hop_length": 160, "win_length": 2 * feature_dim,
                      "window": "hann", "center": True, "drop_dc": True, "log_floor": 1e-5}
    counts = {}
    all_train = []
    for split_i, split in enumerate(splits):
        split_dir = cache_dir / split
        split_dir.mkdir(parents=True, exist_ok=True)
        frames, utterances, segments = [], [], []
        row = 0
        for s in range(n_speakers):
            for u in range(utterances_per_speaker):
                t = np.arange(frames_per_utterance)[:, None]
                centre = (feature_dim / 2) * (1 + np.sin(t / (5 + 3 * rng.random()) + rng.random() * 6))
                content = 3.0 * np.exp(-0.5 * ((bins[None, :] - centre) / 8.0) ** 2)
                x = -4.0 + envelopes[s] @ basis + content + 0.3 * rng.normal(size=(frames_per_utterance, feature_dim))
                idx = len(utterances)
                utterances.append([idx, f"spk{s:02d}", f"{split}_{s}_{u}", f"/synthetic/{split}/{s}/{u}.wav",
                                   row, frames_per_utterance])
                for start in range(0, frames_per_utterance - segment_length + 1, segment_hop):
                    segments.append((idx, row + start))
                frames.append(x.astype(np.float32))
                row += frames_per_utterance
        frames = np.concatenate(frames)
        np.save(split_dir / "frames.npy", frames)
        np.save(split_dir / "segments.npy", np.array(segments, dtype=np.int64))
        with open(split_dir / "utterances.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(UTTERANCE_COLUMNS)
            writer.writerows(utterances)
        counts[split] = {"utterances": len(utterances), "segments": len(segments), "frames": len(frames)}
        if split_i == 0:
            all_train = frames
    np.save(cache_dir / "mean.npy", all_train.mean(0).astype(np.float32))
    np.save(cache_dir / "std.npy", (all_train.std(0) + 1e-3).astype(np.float32))
    manifest = {"format": 1, "feature_config": feature_config, "config_hash": "synthetic",
                "segment_length": segment_length, "segment_hop": segment_hop, "corpus": "synthetic",
                "counts": counts, "skipped": []}
    (cache_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return cache_dir
