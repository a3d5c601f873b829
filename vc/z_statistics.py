"""A speaker's statistics of the dynamic code z, and moving z from the source's statistics to the target's.

The DSAE puts who speaks in f, but not all of it: the per-dimension mean and spread of z over a speaker's
speech still tell speakers apart (docs/experiments.md), so a decoder given the target's f still hears some
of the source. Conversion therefore also moves every z dimension from the source's mean and standard deviation to the target's (an
instance normalisation of z), both measured over speech frames: enrolment stores the target's, files
measure the whole source utterance, the streaming engine keeps a running estimate that starts from the
training speakers' statistics (stored in the model file by vc-export).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The source's estimate is counted together with this many frames at the training speakers' statistics
# (the model file's, else the target's own: `vc.stages.source_prior`). A file measures a whole utterance.
PRIOR_FRAMES = 20
# A stream measures its first seconds, in which a few sounds fill the statistics and the move from them
# shifts what is said: counted with 2 s of the population's (every frame counts once per window, so this is
# about 1 s of speech's worth), the dev stream kept 0.49 of the words wrong (capped) against 0.55 with
# PRIOR_FRAMES, the enrolled source's 0.48, at the same margin (docs/experiments.md, stop 30).
STREAM_PRIOR_FRAMES = 200
MIN_STD = 1e-3


@dataclass(frozen=True)
class CodeStats:
    """Per-dimension mean and standard deviation of z over a speaker's speech frames."""

    mean: np.ndarray  # float32 (z_dim,)
    std: np.ndarray   # float32 (z_dim,), > 0


class RunningCodeStats:
    """Sums of z and z**2 over the speech frames seen so far."""

    def __init__(self, z_dim: int):
        self.frames = 0
        self._sum = np.zeros(z_dim, np.float64)
        self._sum_sq = np.zeros(z_dim, np.float64)

    def update(self, z: np.ndarray) -> None:
        """z: (n, z_dim) posterior means of speech frames."""
        z = np.asarray(z, np.float64).reshape(-1, self._sum.shape[0])
        self.frames += z.shape[0]
        self._sum += z.sum(axis=0)
        self._sum_sq += np.square(z).sum(axis=0)

    def estimate(self, prior: CodeStats | None = None, prior_frames: int = PRIOR_FRAMES) -> CodeStats | None:
        """Mean and standard deviation of the frames seen, counted together with `prior_frames` frames at
        `prior`'s statistics (none without a prior). None when there is nothing to count."""
        n, total, total_sq = float(self.frames), self._sum.copy(), self._sum_sq.copy()
        if prior is not None and prior_frames > 0:
            mean, std = np.asarray(prior.mean, np.float64), np.asarray(prior.std, np.float64)
            n += prior_frames
            total += prior_frames * mean
            total_sq += prior_frames * (np.square(std) + np.square(mean))
        if n == 0:
            return None
        mean = total / n
        std = np.sqrt(np.maximum(total_sq / n - np.square(mean), MIN_STD ** 2))
        return CodeStats(mean.astype(np.float32), std.astype(np.float32))


def move_codes(z: np.ndarray, source: CodeStats | None, target: CodeStats | None, amount: float = 1.0) -> np.ndarray:
    """z (..., z_dim) -> z moved `amount` of the way (0: unchanged, 1: all of it, beyond 1: past the
    target) from the source's statistics to the target's: target.mean + (z - source.mean) * target.std /
    source.std. Unchanged when either is unknown."""
    if source is None or target is None or amount == 0.0:
        return z
    moved = target.mean + (z - source.mean) * (target.std / source.std)
    if amount != 1.0:
        moved = z + amount * (moved - z)
    return moved.astype(np.float32)
