"""vc-export: turn a vc-train run into a model directory (encoder.onnx, decoder.onnx, README.md).

    vc-export runs/NAME -o MODEL_DIR [--checkpoint runs/NAME/checkpoints/step-...] [--model-id ID]
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="vc-export", description="Export a trained DSAE run to ONNX.")
    p.add_argument("run", help="run directory written by vc-train")
    p.add_argument("-o", "--out", required=True, help="model directory to write")
    p.add_argument("--checkpoint", help="a checkpoint directory of the run (default: the latest)")
    p.add_argument("--model-id", help="model id stored in the metadata (default: run name, variant, weights hash)")
    args = p.parse_args(argv)
    from training.cli import run_command
    from training.export import ExportError, export
    return run_command("vc-export", lambda: export(args.run, args.out, checkpoint=args.checkpoint,
                                                   model_id=args.model_id,
                                                   log=lambda msg: print(msg, file=sys.stderr)) and 0,
                       {(ExportError, OSError, ValueError): 1}, interrupted="interrupted")


if __name__ == "__main__":
    sys.exit(main())
