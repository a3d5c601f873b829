"""vc-enroll AUDIO... -o speaker.npy [--model MODEL_DIR]: make a target speaker from recordings."""

from __future__ import annotations

import argparse
import sys

from vc.cli.args import add_model_arguments, interrupted_quietly, one_line_warnings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vc-enroll",
        description="Make a speaker.npy from recordings (files or folders, searched recursively): the DSAE "
                    "speaker code f averaged over every 200 ms speech segment, the pitch register (median "
                    "and spread of log F0), the mean and spread of z over the speech frames, and a set of "
                    "the speaker's own spectral envelopes (with z at each) and voiced frames. A target for "
                    "vc-batch and vc-live --target, or yourself for vc-live --source.")
    parser.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files or folders")
    parser.add_argument("-o", "--output", required=True, metavar="SPEAKER.npy", help="where to write the speaker")
    add_model_arguments(parser)
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable files (reported) instead of stopping")
    return parser


@interrupted_quietly("vc-enroll", "interrupted, nothing written")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    one_line_warnings("vc-enroll")
    from vc.audio import AudioError
    from vc.model import ModelError, load_model
    from vc.speakers import SpeakerError, audio_files, enroll, save_speaker

    try:
        files = audio_files(args.audio)  # a missing input is reported before the model is loaded
        model = load_model(args.model, device=args.device, threads=args.threads)
        print(model.describe(), file=sys.stderr)
        result = enroll(files or args.audio, model, on_error="skip" if args.skip_bad else "raise")
        for path, reason in result.failures:
            print(f"skipped {reason}", file=sys.stderr)
        save_speaker(args.output, result.speaker)
    except (ModelError, SpeakerError, AudioError, OSError) as exc:
        print(f"vc-enroll: error: {exc}", file=sys.stderr)
        return 1
    print(f"{result.summary()}; wrote {args.output} (f_dim {result.embedding.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
