"""Train the Sprites judge (training.sprites.judge) on the rendered training split; report its test accuracy.

    python tools/train_sprites_judge.py [--cache data/sprites] [--out models/sprites/judge] [--epochs 3]
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
    args = p.parse_args(argv)
    from training.sprites.judge import train_judge
    try:
        train_judge(args.cache, args.out, epochs=args.epochs, seed=args.seed, threads=args.threads,
                    log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except ValueError as exc:
        print(f"train_sprites_judge: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
