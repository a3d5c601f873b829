"""vc-fhvae (also `python -m training.fhvae`): train the FHVAE baseline of the speaker-verification table.

    python -m training.fhvae train --features data/features-mixed --out runs/fhvae-alpha10 --alpha 10 \
        --exclude-prefix open-corpus- --steps 2000

vc-eer then scores its z2 and z1 beside f, z, MFCC and i-vector: `vc-eer --fhvae runs/fhvae-alpha10 ...`.
"""
from __future__ import annotations

import argparse
import sys

from training.cli import run_command
from training.config import TrainingError
from vc.cli.args import positive_int


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vc-fhvae", description="The FHVAE of Hsu, Zhang & Glass (2017), a baseline for vc-eer.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train (or --resume) a run on a vc-features cache's train split")
    train.add_argument("--features", help="feature cache written by vc-features (its train split is used)")
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument("--alpha", type=float, help="weight of the discriminative term log p(i | z2) (default 0)")
    train.add_argument("--steps", type=positive_int, help="optimiser steps, the training budget (default 4000)")
    train.add_argument("--batch-size", type=positive_int, help="segments per step (default 64)")
    train.add_argument("--lr", type=float, help="Adam step of the networks (default 1e-3)")
    train.add_argument("--mu2-lr", type=float, help="Adam step of the mu2 table (default 1e-2)")
    train.add_argument("--hidden-dim", type=positive_int, help="LSTM state size (default 256)")
    train.add_argument("--z-dim", type=positive_int, help="dimensions of z1 and of z2 (default 32)")
    train.add_argument("--exclude-prefix", action="append", metavar="PREFIX",
                       help="leave out speakers whose names start with PREFIX (repeatable)")
    train.add_argument("--seed", type=int, help="seed of the initialisation, batch order and noise (default 0)")
    train.add_argument("--threads", type=positive_int, help="torch threads (default 1)")
    train.add_argument("--checkpoint-every", type=positive_int, help="steps between checkpoints (default 500)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its latest checkpoint (with --steps: to that many "
                       "steps in all; the other options come from the run)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("vc-fhvae", lambda: _train(args), {(TrainingError, OSError): 1}, interrupted="interrupted")


def _train(args) -> int:
    from training.fhvae_train import config_from_options, train

    if args.resume:
        config = config_from_options({"out": args.out})   # the rest comes from the run's fhvae.json
    else:
        if not args.features:
            raise TrainingError("--features is required (unless --resume)")
        model = {k: v for k, v in {"hidden_dim": args.hidden_dim, "z1_dim": args.z_dim,
                                   "z2_dim": args.z_dim}.items() if v is not None}
        config = config_from_options({**vars(args), "model": model})
    train(config, resume=args.resume, steps=args.steps if args.resume else None,
          log=lambda message: print(message, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
