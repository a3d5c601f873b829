"""Train the Sprites judge (training.sprites.judge) on the rendered training split; report its test accuracy.

    python tools/train_sprites_judge.py [--cache data/sprites] [--out models/sprites/judge] [--epochs 3]
    python tools/train_sprites_judge.py --frames --out models/sprites/frame-judge     # the paper's frame judge

--frames trains the judge of the DSAE paper's table (training.sprites.judge.FrameJudge: a prediction per
frame); without it, the sequence judge of the later papers' protocol.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default="data/sprites", help="Sprites render cache (rendered from $SPRITES_LPC if absent)")
    p.add_argument("--out", default="models/sprites/judge")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", action="store_true", help="train the per-frame judge of the paper's table")
    args = p.parse_args(argv)
    from training.sprites.judge import train_judge
    kind = "frame" if args.frames else "sequence"
    try:
        train_judge(args.cache, args.out, epochs=args.epochs, seed=args.seed, threads=args.threads, kind=kind,
                    log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except ValueError as exc:
        print(f"train_sprites_judge: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
