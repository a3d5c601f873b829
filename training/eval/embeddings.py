"""Utterance-level embeddings from the model: f and z averaged over the segments that tile an utterance."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from training.eval.metrics import EvaluationError


def segment_starts(n_frames: int, segment_length: int, hop: int | None = None) -> np.ndarray:
    """First frames of the segments that tile an utterance: every ``hop`` frames (default: back to
    back), plus one flush with the end so the last frames are not lost. Empty when too short."""
    hop = segment_length if hop is None else hop
    if n_frames < segment_length:
        return np.zeros(0, dtype=np.int64)
    starts = np.arange(0, n_frames - segment_length + 1, hop, dtype=np.int64)
    if starts[-1] != n_frames - segment_length:
        starts = np.append(starts, n_frames - segment_length)
    return starts


def model_embeddings(
    model,
    utterance_frames: Sequence[np.ndarray],
    mc: int = 0,
    segment_hop: int | None = None,
    seed: int | np.random.Generator = 0,
    batch_segments: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Utterance-level ``f`` (U, f_dim) and ``z`` (U, z_dim) from raw log-magnitude frames.

    ``model`` follows :class:`vc.model.Model` (``normalise``, ``encode``, ``segment_length``). Every
    utterance needs at least one segment. With ``mc > 0`` the f of each segment is the mean of ``mc``
    samples from its posterior instead of the posterior mean.
    """
    length = int(model.segment_length)
    rng = np.random.default_rng(seed)
    segments, owners = [], []
    for index, frames in enumerate(utterance_frames):
        starts = segment_starts(len(frames), length, segment_hop)
        if starts.size == 0:
            raise EvaluationError(f"utterance {index} has {len(frames)} frames, fewer than one segment ({length})")
        segments.extend((index, int(s)) for s in starts)
        owners.extend([index] * len(starts))
    owners = np.asarray(owners)
    f_sum = None
    z_sum = None
    for start in range(0, len(segments), batch_segments):
        batch = segments[start : start + batch_segments]
        x = np.stack([utterance_frames[i][s : s + length] for i, s in batch])
        f_mean, f_logvar, z_mean, _ = model.encode(model.normalise(x))
        f_mean = np.asarray(f_mean, dtype=np.float64)
        if mc > 0:
            noise = rng.standard_normal((mc,) + f_mean.shape).mean(axis=0)
            f_value = f_mean + np.exp(0.5 * np.asarray(f_logvar, dtype=np.float64)) * noise
        else:
            f_value = f_mean
        z_value = np.asarray(z_mean, dtype=np.float64).mean(axis=1)
        if f_sum is None:
            f_sum = np.zeros((len(utterance_frames), f_value.shape[1]))
            z_sum = np.zeros((len(utterance_frames), z_value.shape[1]))
        who = owners[start : start + len(batch)]
        np.add.at(f_sum, who, f_value)
        np.add.at(z_sum, who, z_value)
    counts = np.bincount(owners, minlength=len(utterance_frames))[:, None]
    # Every segment has the same number of frames, so the mean of segment means is the mean over time.
    return (f_sum / counts).astype(np.float32), (z_sum / counts).astype(np.float32)
