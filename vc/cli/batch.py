"""vc-batch IN_DIR OUT_DIR --target speaker.npy: convert every recording under IN_DIR."""

from __future__ import annotations

import argparse
import sys
from vc.cli.args import (add_model_arguments, add_words_arguments, conversion_choices, interrupted_quietly,
                         non_negative_int, one_line_warnings, positive_int, share)


def build_parser() -> argparse.ArgumentParser:
    from vc.settings import DEFAULT_N_ITER, DEFAULT_STRENGTH, MAX_STRENGTH

    parser = argparse.ArgumentParser(
        prog="vc-batch",
        description="Convert every WAV/FLAC/OGG file under IN_DIR (recursively) to the target speaker and "
                    "write WAVs with the same relative paths under OUT_DIR. Existing outputs are skipped "
                    "(an interrupted run resumes) unless --overwrite; inputs are never modified.")
    parser.add_argument("in_dir", metavar="IN_DIR")
    parser.add_argument("out_dir", metavar="OUT_DIR")
    parser.add_argument("--target", required=True, metavar="SPEAKER.npy", help="target speaker (vc-enroll)")
    parser.add_argument("--n-iter", type=non_negative_int, default=DEFAULT_N_ITER,
                        help=f"Griffin-Lim iterations (default {DEFAULT_N_ITER})")
    parser.add_argument("--jobs", type=positive_int, default=1, help="worker processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--sr", type=positive_int, default=None,
                        help="output sample rate (default: each input's own rate)")
    add_model_arguments(parser)
    parser.add_argument("--strength", type=float, default=DEFAULT_STRENGTH, metavar="S",
                        help=f"how far the speaker code moves from the source's to the target's: 0 keeps the "
                             f"source voice, 1 is the plain code swap, beyond 1 past the target, which cancels "
                             f"the source identity the dynamic codes still carry; up to {MAX_STRENGTH:g} "
                             f"(default {DEFAULT_STRENGTH:g})")
    parser.add_argument("--follow-level", type=share, default=None, metavar="A",
                        help="how far each converted frame's level moves to its source frame's, 0 to 2 "
                             "(default 0.5: livelier, less like the target; 0: the decoder's own level)")
    add_words_arguments(parser)
    parser.add_argument("--no-harmonics", dest="harmonics", action="store_false",
                        help="write the DSAE's own reconstruction: the target's spectral envelope without "
                             "harmonics rebuilt at the target's pitch (breathy; for studying the model)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


@interrupted_quietly("vc-batch", "interrupted; finished files are kept, run again to resume")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    one_line_warnings("vc-batch")
    from tqdm import tqdm

    from vc.batch import BatchError, batch_convert
    from vc.model import ModelError
    from vc.speakers import SpeakerError

    def log(line: str) -> None:
        tqdm.write(line, file=sys.stderr)

    try:
        summary = batch_convert(args.in_dir, args.out_dir, args.target, model_dir=args.model,
                                jobs=args.jobs, overwrite=args.overwrite, out_sr=args.sr, device=args.device,
                                threads=args.threads, progress=not args.quiet, log=log, describe=log,
                                **conversion_choices(args))
    except (BatchError, ModelError, SpeakerError, OSError) as exc:
        print(f"vc-batch: error: {exc}", file=sys.stderr)
        return 1
    if summary.files == 0:
        print(f"vc-batch: error: no audio files (.wav, .flac, .ogg, ...) under {args.in_dir}", file=sys.stderr)
        return 1
    print(summary.text())
    if summary.failed:
        print("failed:", file=sys.stderr)
        for rel, reason in summary.failed:
            print(f"  {rel}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
