"""The bouncing-balls cache (training.data.balls) as a training set for `training.train` (`vc-train --data balls`).

`BallsDataset` offers what the trainer asks of a speech `SegmentDataset`: `len`, `batch(indices)` (float32
(B, 40, 1024) of 0 and 1: flattened frames), `segment_speaker` / `speakers` (unused: no adversary and no f
swap; one "speaker"), `feature_dim`, `mean` / `std` (zeros and ones: pixels are not normalised) and the
`manifest` a run directory keeps.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.data import balls

# The models of the dynamics experiment: small (one CPU thread, ten minutes each), Bernoulli pixels, the
# same architecture under each `dynamics`. z_dim 8 is ample for a position and a velocity; f (8) can carry
# the radius. The factorised q(z_t | x_t): in a probe (batch 32, lr 2e-3) the full q was still at the blank
# frame (reconstruction 5570 nats per video, what the pixels' marginal frequencies give) after 175 steps,
# the factorised one at 550 nats after 225; ten minutes of training has no steps to wait.
BALLS_MODEL = dict(
    feature_dim=balls.FRAME_PIXELS, f_dim=8, z_dim=8, hidden_dim=128, frame_hidden=256, variant="factorised",
    frame_coder="mlp", likelihood="bernoulli", x_logvar=0.0, dynamics="stochastic",
)
BALLS_OBJECTIVE = dict(kl_warmup_steps=200, free_bits_z=0.0, f_swap_prob=0.0, adv_weight=0.0, adv_group_size=1)
DEFAULT_CACHE = "data/balls"


class BallsDataset:
    """One split of the bouncing-balls cache (the test split stands in for a dev set)."""

    def __init__(self, cache_dir: str, split: str):
        frames, self.radii = balls.load_split(cache_dir, split)
        self.split = split
        self.frames = frames.reshape(frames.shape[0], frames.shape[1], -1)
        self.speakers = ["ball"]
        self.segment_speaker = np.zeros(len(self.frames), dtype=np.int64)
        self.feature_dim = balls.FRAME_PIXELS
        self.mean = np.zeros(self.feature_dim, dtype=np.float32)
        self.std = np.ones(self.feature_dim, dtype=np.float32)
        spec = json.loads((Path(cache_dir) / "manifest.json").read_text())
        self.manifest = {**spec, "image_shape": [balls.SIZE, balls.SIZE], "segment_length": int(frames.shape[1]),
                         "pixel_scale": "binary 0/1, row-major, flattened", "feature_config": {},
                         "cache": str(cache_dir)}

    def __len__(self) -> int:
        return len(self.frames)

    def batch(self, indices) -> np.ndarray:
        return self.frames[np.asarray(indices, dtype=np.int64)].astype(np.float32)


def open_balls(cache_dir: str) -> tuple[BallsDataset, BallsDataset]:
    """(train, test) of the cache at cache_dir (default data/balls), written there first when absent."""
    root = balls.open_or_make(cache_dir or DEFAULT_CACHE)
    return BallsDataset(root, "train"), BallsDataset(root, "test")
