"""Figures of a Sprites DSAE for its model card: swap grid (PNG + GIF), fixed-f and fixed-z generations,
animated swaps.

    python tools/sprites_figures.py --model models/sprites/checkpoint [--cache data/sprites] --out models/sprites/figures

Art: Liberated Pixel Cup / Universal-LPC-spritesheet contributors (CC-BY-SA 3.0 / GPL 3.0).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

GAP = 4


def tile(rows: list[list[np.ndarray | None]], scale: int = 1) -> np.ndarray:
    """A grid of 64x64x3 uint8 cells (None: blank) on a dark grey background."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    canvas = np.full((n_rows * (64 + GAP) + GAP, n_cols * (64 + GAP) + GAP, 3), 40, np.uint8)
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            if cell is not None:
                y, x = GAP + i * (64 + GAP), GAP + j * (64 + GAP)
                canvas[y:y + 64, x:x + 64] = cell
    return canvas.repeat(scale, 0).repeat(scale, 1)


def save_png(image: np.ndarray, path: Path):
    from PIL import Image
    Image.fromarray(image).save(path, optimize=True)


def save_gif(frames: list[np.ndarray], path: Path, ms: int = 140):
    from PIL import Image
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms, loop=0, optimize=True)


def make_figures(model, test, out: Path, *, seed: int = 0) -> list[Path]:
    import torch

    from training.sprites.video import features_to_frames, frames_to_features
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    chars = np.unique(test.characters)
    if len(chars) < 12:
        raise ValueError(f"the figures need at least 12 characters, the split has {len(chars)}")
    pick = rng.choice(chars, 6, replace=False)
    # f sources: 6 characters in one motion; z sources: 6 other characters in 6 different motions
    f_idx = np.array([np.flatnonzero(test.characters == c)[0] for c in pick])
    others = rng.choice(np.setdiff1d(chars, pick), 6, replace=False)
    motions = rng.choice(9, 6, replace=False)
    z_idx = np.array([np.flatnonzero((test.characters == c) & (test.motions == m))[0]
                      for c, m in zip(others, motions)])
    with torch.no_grad():
        def enc(idx):
            f, _, z, _ = model.encode(torch.from_numpy(frames_to_features(test.frames[idx])))
            return f, z
        f_src, _ = enc(f_idx)
        _, z_src = enc(z_idx)
        grid = features_to_frames(model.decode(f_src.repeat_interleave(6, 0), z_src.repeat(6, 1, 1)).numpy())
        grid = grid.reshape(6, 6, 8, 64, 64, 3)
        written = []

        def swap_frame(t):
            rows = [[None] + [test.frames[j, t] for j in z_idx]]
            rows += [[test.frames[f_idx[r], t]] + [grid[r, c, t] for c in range(6)] for r in range(6)]
            return tile(rows)
        save_png(swap_frame(3), out / "swap_grid.png")
        save_gif([swap_frame(t) for t in range(8)], out / "swap_grid.gif")
        written += [out / "swap_grid.png", out / "swap_grid.gif"]

        # fixed f, z from the prior: each block is the real sequence, then 3 generations
        blocks = []
        for i in f_idx[:3]:
            f, _ = enc([i])
            gen = features_to_frames(model.generate(3, 8, f=f.repeat(3, 1)).numpy())
            blocks += [[test.frames[i, t] for t in range(8)]] + [[g[t] for t in range(8)] for g in gen] + [[]]
        save_png(tile(blocks[:-1]), out / "fixed_f.png")
        # fixed z, f from the prior
        blocks = []
        for i in z_idx[:3]:
            _, z = enc([i])
            gen = features_to_frames(model.decode(torch.randn(3, model.config.f_dim), z.repeat(3, 1, 1)).numpy())
            blocks += [[test.frames[i, t] for t in range(8)]] + [[g[t] for t in range(8)] for g in gen] + [[]]
        save_png(tile(blocks[:-1]), out / "fixed_z.png")
        save_gif([tile([[blocks[b][t] for b in range(len(blocks)) if blocks[b]]]) for t in range(8)],
                 out / "fixed_z.gif")
        written += [out / "fixed_f.png", out / "fixed_z.png", out / "fixed_z.gif"]

        # a few swaps, animated: A (looks), B (motion), f(A) + z(B)
        frames = [tile([[test.frames[f_idx[k], t], test.frames[z_idx[k], t], grid[k, k, t]] for k in range(4)],
                       scale=2) for t in range(8)]
        save_gif(frames, out / "swaps.gif")
        written.append(out / "swaps.gif")
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="models/sprites/checkpoint")
    p.add_argument("--cache", default="data/sprites")
    p.add_argument("--out", default="models/sprites/figures")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import torch

    from training.sprites.data import SpritesDataset
    from training.sprites.evaluate import load_sprites_model
    torch.set_num_threads(1)
    try:
        model = load_sprites_model(args.model)
        test = SpritesDataset(args.cache, "test")
        written = make_figures(model, test, Path(args.out), seed=args.seed)
    except ValueError as exc:
        print(f"sprites_figures: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
