"""Bouncing balls: binary 32x32 videos of one ball moving in a box, for the paper's dynamics experiment.

The DSAE paper compares its stochastic prior with deterministic transition models by predicting missing
frames and counting incorrect pixels, the measure Fraccaro et al. (2017, KVAE) defined for binary
bouncing-ball videos; the paper's figure shows such a video (a ball bouncing in a box). This module makes
that kind of data, deterministically from a seed:

* a frame is 32x32 binary: a pixel is on when its centre lies within the ball's radius of the ball's centre;
* a sequence: radius uniform in [2.5, 4.0] pixels (fixed within the sequence: the static code f has
  something to carry), start uniform where the ball fits, speed uniform in [1.0, 2.0] pixels per frame in
  a uniform direction; the ball reflects elastically off the walls (position folded back, velocity
  component negated), so it always stays inside;
* 40 frames per sequence: enough to observe 15 and predict the last 25.

The cache is `train.npz` / `test.npz` (frames bit-packed along the row, radii) and `manifest.json`; it is
written on first use (`open_or_make`) or by `python -m training.data.balls --out DIR`.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SIZE = 32
FRAME_PIXELS = SIZE * SIZE
SPLIT_SEEDS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class BallsSpec:
    """What a cache holds: how many sequences of each split and how they move."""
    n_train: int = 3000
    n_test: int = 300
    length: int = 40
    radius: tuple[float, float] = (2.5, 4.0)
    speed: tuple[float, float] = (1.0, 2.0)
    seed: int = 2018


def trajectories(n: int, *, length: int, radius, speed, rng: np.random.Generator):
    """Ball centres (n, length, 2) in pixel units (0..SIZE) and radii (n,), reflecting off the walls."""
    r = rng.uniform(*radius, size=n)
    low, high = r[:, None], SIZE - r[:, None]          # where the centre may be: the ball stays inside
    pos = rng.uniform(low, high, size=(n, 2))
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    vel = rng.uniform(*speed, size=n)[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    centres = np.empty((n, length, 2))
    for t in range(length):
        centres[:, t] = pos
        pos = pos + vel
        # One fold per wall suffices: a step (at most 2 px) is shorter than the free range (at least 24 px).
        over, under = pos > high, pos < low
        pos = np.where(over, 2 * high - pos, np.where(under, 2 * low - pos, pos))
        vel = np.where(over | under, -vel, vel)
    return centres, r


def render(centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """(n, T, 2) centres and (n,) radii -> (n, T, SIZE, SIZE) uint8 frames of 0 and 1 (row = y, column = x)."""
    grid = np.arange(SIZE) + 0.5                       # pixel centres
    dx = grid[None, None, None, :] - centres[..., 0, None, None]
    dy = grid[None, None, :, None] - centres[..., 1, None, None]
    return (dx ** 2 + dy ** 2 <= radii[:, None, None, None] ** 2).astype(np.uint8)


def make_split(spec: BallsSpec, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(frames (n, T, 32, 32) uint8, radii (n,)) of a split; the same spec and split give the same arrays."""
    n = spec.n_train if split == "train" else spec.n_test
    rng = np.random.default_rng([spec.seed, SPLIT_SEEDS[split]])
    centres, radii = trajectories(n, length=spec.length, radius=spec.radius, speed=spec.speed, rng=rng)
    return render(centres, radii), radii.astype(np.float32)


def write_cache(root: str | Path, spec: BallsSpec = BallsSpec()) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split in SPLIT_SEEDS:
        frames, radii = make_split(spec, split)
        np.savez_compressed(root / f"{split}.npz", frames=np.packbits(frames, axis=-1), radii=radii)
    (root / "manifest.json").write_text(json.dumps({"data": "balls", **asdict(spec)}, indent=2))
    return root


def load_split(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    path = Path(root) / f"{split}.npz"
    if not path.is_file():
        raise ValueError(f"{path}: no such file (write the cache with `python -m training.data.balls --out {root}`)")
    with np.load(path) as data:
        frames = np.unpackbits(data["frames"], axis=-1, count=SIZE)
        return frames, data["radii"]


def open_or_make(root: str | Path) -> Path:
    """The cache at root, written there first when it has no manifest."""
    return Path(root) if (Path(root) / "manifest.json").is_file() else write_cache(root)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write the bouncing-balls cache (train.npz, test.npz, manifest.json).")
    p.add_argument("--out", required=True)
    p.add_argument("--n-train", type=int, default=BallsSpec.n_train)
    p.add_argument("--n-test", type=int, default=BallsSpec.n_test)
    p.add_argument("--seed", type=int, default=BallsSpec.seed)
    args = p.parse_args(argv)
    print(write_cache(args.out, BallsSpec(n_train=args.n_train, n_test=args.n_test, seed=args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
