"""Normalised 200 ms segments from a feature cache, for training (layout: README, "Feature cache").

The cache is read and checked by training.data.features.FeatureCache, the one reader of the format (vc-eer
uses it too); this module adds what training needs on top: normalised batches, training-speaker indices,
same-speaker partners and groups.

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

from training.data.cache import FORMAT, UTTERANCE_COLUMNS, FeatureCache
from training.data.cache import FeatureCacheError as CacheError
from training.data.content import load_content_targets

__all__ = ["CacheError", "SegmentDataset", "write_synthetic_cache"]


class SegmentDataset(torch.utils.data.Dataset):
    """Segments of one split of a feature cache, normalised with the cache's train-split mean/std."""

    def __init__(self, cache_dir: str | os.PathLike, split: str, *, speakers: list[str] | None = None):
        self.cache_dir = Path(cache_dir)
        self.split = split
        cache = FeatureCache(self.cache_dir)
        data = cache.split(split)
        if len(data) == 0:
            raise CacheError(f"{self.cache_dir / split / 'segments.npy'}: no segments")
        self.manifest = cache.manifest
        self.segment_length = cache.segment_length
        self.mean, self.std = cache.mean, cache.std
        self.frames = data.frames
        self.segment_utterance = data.segments[:, 0]
        self.segment_start = data.segments[:, 1]

        names = [u.speaker for u in data.utterances]
        # Speaker indices follow the given list (the train split's) so that dev indices mean the same;
        # speakers absent from it get -1 (fine for the adversary: dev is never fed to it).
        self.speakers = sorted(set(names)) if speakers is None else list(speakers)
        lookup = {s: i for i, s in enumerate(self.speakers)}
        utt_speaker = np.array([lookup.get(s, -1) for s in names], dtype=np.int64)
        self.segment_speaker = utt_speaker[self.segment_utterance]
        # Grouping by the split's own speaker names (not by hash(), which changes between processes) keeps
        # partner choices reproducible, which exact resumption needs.
        self._partner_index = self._index_by_speaker(data.utterance_speakers[self.segment_utterance],
                                                     self.segment_utterance)
        self._offsets = np.arange(self.segment_length, dtype=np.int64)
        # Frame-level targets of what is said (training.data.content), when the cache has them.
        self.content = load_content_targets(self.cache_dir, split, self.frames.shape[0])

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
        rows = self._rows(indices)
        return (self.frames[rows.ravel()].reshape(len(rows), self.segment_length, -1) - self.mean) / self.std

    def _rows(self, indices) -> np.ndarray:
        """(B, T) cache rows of the given segments' frames."""
        return self.segment_start[np.asarray(indices)][:, None] + self._offsets

    def content_batch(self, indices) -> np.ndarray:
        """(B, T, content_dim) float32 content targets of the given segments."""
        if self.content is None:
            raise CacheError(f"{self.cache_dir / self.split}: no content targets (training.data.content)")
        rows = self._rows(indices)
        return self.content[rows.ravel()].astype(np.float32).reshape(len(rows), self.segment_length, -1)

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
    from vc.dsp import FeatureConfig
    feature_config = FeatureConfig(n_fft=2 * feature_dim, win_length=2 * feature_dim)
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
    manifest = {"format": FORMAT, "feature_config": feature_config.to_dict(), "config_hash": feature_config.hash(),
                "segment_length": segment_length, "segment_hop": segment_hop, "corpus": "synthetic",
                "counts": counts, "skipped": []}
    (cache_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return cache_dir
