"""vc-train: train a DSAE on a feature cache.

    vc-train --data sprites [--features data/sprites] --out runs/NAME ...     (the Sprites video model)
    vc-train --data balls [--features data/balls] --dynamics stochastic|lstm_f|lstm_c --out runs/NAME ...
                                                                    (bouncing balls: the dynamics experiment)
    vc-train --features CACHE --out runs/NAME [--variant full|factorised] [--epochs N] [--batch-size B]
             [--lr LR] [--device auto|cpu|cuda] [--config FILE.json|.toml] [--resume | --init-from RUN|MODEL_DIR [--train-only PREFIX,...]]

Precedence: built-in defaults < --config file < command-line options. The full configuration is written to
runs/NAME/config.json. Several processes: `torchrun --nproc_per_node N -m training.cli.train ...`.
"""
from __future__ import annotations

import argparse
import os
import sys

# With more busy threads than free cores (two cores shared with other jobs), OpenMP's default spin-waiting
# made a training step 3-10x slower in measurements here; passive waiting costs nothing measurable when the
# cores are free. It only takes effect if set before torch (and its OpenMP runtime) is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vc-train", description="Train a Disentangled Sequential Autoencoder.")
    p.add_argument("--features", help="feature cache directory (written by vc-features); with --data sprites "
                   "the Sprites render cache (default data/sprites, rendered there from $SPRITES_LPC when absent)")
    p.add_argument("--data", choices=["speech", "sprites", "balls"], help="what to train on (default speech; "
                   "balls: bouncing-ball videos, written to --features, default data/balls, when absent)")
    p.add_argument("--out", required=True, help="run directory, e.g. runs/NAME")
    p.add_argument("--config", help="JSON or TOML file with training options (architecture under 'model', loss weights "
                   "and schedule under 'objective'; older files with both under 'model' still load)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--variant", choices=["full", "factorised"])
    p.add_argument("--dynamics", choices=["stochastic", "lstm_f", "lstm_c"],
                   help="transition model: the paper's stochastic prior (default) or a deterministic LSTM")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, help="torch threads per process on CPU (default 2)")
    p.add_argument("--seed", type=int)
    p.add_argument("--f-dim", type=int)
    p.add_argument("--z-dim", type=int)
    p.add_argument("--hidden-dim", type=int)
    p.add_argument("--init-from", help="start from the weights of this run, checkpoint or model directory (fine-tuning; "
                   "a model directory such as models/default lacks x_logvar, the prior and the heads: fit those "
                   "first with --train-only)")
    p.add_argument("--train-only", metavar="PREFIX,...", type=lambda s: [p for p in s.split(",") if p],
                   help="train only the parameters whose names start with these, holding the rest fixed "
                        "(e.g. x_logvar,prior_,speaker_adversary,content_head)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (and one per epoch)")
    p.add_argument("--stop-at-step", type=int, metavar="STEP",
                   help="pause at this global step with a checkpoint of it (the learning-rate schedule stays the "
                        "whole run's; go on later with --resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args):
    from training.train import TrainConfig, load_config_file
    values = load_config_file(args.config) if args.config else {}
    model = dict(values.pop("model", {}) or {})
    for arg, key in (("features", "features"), ("data", "data"), ("out", "out"), ("epochs", "epochs"),
                     ("batch_size", "batch_size"), ("lr", "lr"), ("device", "device"), ("threads", "threads"),
                     ("seed", "seed"), ("checkpoint_every", "checkpoint_every"),
                     ("init_from", "init_from"), ("train_only", "train_only")):
        if getattr(args, arg) is not None:
            values[key] = getattr(args, arg)
    for arg, key in (("variant", "variant"), ("dynamics", "dynamics"), ("f_dim", "f_dim"), ("z_dim", "z_dim"),
                     ("hidden_dim", "hidden_dim")):
        if getattr(args, arg) is not None:
            model[key] = getattr(args, arg)
    if args.no_progress:
        values["progress"] = False
    values["model"] = model
    return TrainConfig.from_dict(values)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from training.cli import run_command
    from training.train import TrainingError
    try:
        return run_command("vc-train", lambda: _train(args), {(TrainingError, ValueError): 1},
                           interrupted="interrupted; continue with --resume")
    finally:
        from torch import distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _train(args) -> int:
    from training.train import TrainingError, resume_config, train
    if args.resume:
        given = [name for name in ("config", "data", "variant", "dynamics", "batch_size", "lr", "seed", "f_dim", "z_dim",
                                   "hidden_dim", "checkpoint_every", "init_from", "train_only") if getattr(args, name) is not None]
        if given:
            raise TrainingError(f"--resume continues {args.out} with its stored configuration; "
                                f"--{given[0].replace('_', '-')} cannot change it")
        config = resume_config(args.out, epochs=args.epochs, device=args.device, threads=args.threads,
                               features=args.features, progress=False if args.no_progress else None)
    else:
        config = config_from_args(args)
        if not config.features and config.data == "sprites":
            from training.sprites.data import DEFAULT_CACHE
            config.features = DEFAULT_CACHE
        if not config.features and config.data == "balls":
            from training.balls.data import DEFAULT_CACHE
            config.features = DEFAULT_CACHE
        if not config.features:
            raise TrainingError("--features is required")
    train(config, resume=args.resume, stop_at_step=args.stop_at_step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
