"""vc-corpus: build corpora for training.

    vc-corpus synth OUT [--speakers N] [--utterances M] [--seed S] [--jobs J]
    vc-corpus assemble OUT SOURCE [SOURCE ...] [--test-speakers N] [--dev-speakers M] [--copy]
                       [--keep-splits NAME]
"""

from __future__ import annotations

import argparse
import os
import sys

from training.cli import run_command
from training.data.assemble import AssembleConfig, assemble_corpus, parse_source
from training.data.corpora import CorpusError as ReaderError
from training.data.synth import DEFAULT_THRESHOLD, ENGINES, BuildConfig, CorpusError, build_corpus
from vc.cli.args import positive_int


def _engines(text: str) -> tuple:
    engines = tuple(e.strip() for e in text.split(",") if e.strip())
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise argparse.ArgumentTypeError(f"choose from {','.join(ENGINES)}, got {text!r}")
    return engines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vc-corpus", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    synth = commands.add_parser(
        "synth", help="synthesise a multi-speaker corpus with espeak-ng, flite and festival",
        description="Synthesise OUT/<speaker>/<utterance>.wav (16 kHz mono 16-bit, 2-5 s), "
                    "OUT/metadata.csv and OUT/summary.json from measurably distinct voices. "
                    "Rerunning the same command resumes an interrupted build.")
    synth.add_argument("out", help="output directory")
    synth.add_argument("--speakers", type=positive_int, default=80, help="distinct speakers (default 80)")
    synth.add_argument("--utterances", type=positive_int, default=40,
                       help="utterances per speaker, the first 2 shared by all (default 40)")
    synth.add_argument("--seed", type=int, default=0, help="seed for voices, texts and splits")
    synth.add_argument("--jobs", type=positive_int, default=os.cpu_count() or 1,
                       help="parallel worker processes (default: all cores)")
    synth.add_argument("--candidates", type=int, default=120,
                       help="generated espeak-ng variants in the candidate pool (default 120)")
    synth.add_argument("--no-stock", action="store_true",
                       help="leave espeak-ng's stock variants out of the candidate pool")
    synth.add_argument("--engines", type=_engines, default=ENGINES,
                       help=f"comma-separated synthesisers (default {','.join(ENGINES)})")
    synth.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                       help=f"minimum distance between kept voices (default {DEFAULT_THRESHOLD})")
    synth.add_argument("--quiet", action="store_true", help="no progress bars")

    assemble = commands.add_parser(
        "assemble", help="one corpus from several (speechocean762, LibriSpeech, VCTK, TIMIT, folders ...)",
        description="Write OUT/metadata.csv (the open corpus's format) and OUT/audio/ links for all "
                    "utterances of the sources, speaker ids prefixed by the source's name, with new "
                    "speaker-disjoint splits drawn across sources, sexes and age groups.")
    assemble.add_argument("out", help="output directory")
    assemble.add_argument("sources", nargs="+", metavar="SOURCE",
                          help="corpus directory, or NAME=DIR to choose the speaker-id prefix")
    assemble.add_argument("--test-speakers", type=positive_int, default=40, help="held-out test speakers (40)")
    assemble.add_argument("--dev-speakers", type=positive_int, default=20, help="development speakers (20)")
    assemble.add_argument("--min-utterances", type=positive_int, default=8,
                          help="utterances a test or dev speaker needs at least (8)")
    assemble.add_argument("--copy", action="store_true", help="copy the audio instead of linking it")
    assemble.add_argument("--keep-splits", action="append", default=[], metavar="NAME",
                          help="source whose speakers keep their own corpus's split (repeatable)")
    return parser


def _assemble(args) -> int:
    config = AssembleConfig(test_speakers=args.test_speakers, dev_speakers=args.dev_speakers,
                            min_utterances=args.min_utterances, copy=args.copy,
                            keep_splits=tuple(args.keep_splits))
    summary = assemble_corpus(args.out, [parse_source(s) for s in args.sources], config)
    sizes = ", ".join(f"{k} {v['speakers']} speakers / {v['utterances']} files"
                      for k, v in summary["splits"].items())
    print(f"{args.out}: {summary['speakers']} speakers, {summary['utterances']} files from "
          f"{len(summary['sources'])} sources ({sizes}); {len(summary['skipped'])} skipped")
    for split in ("test", "dev"):
        if summary["splits"].get(split, {}).get("speakers", 0) < getattr(config, f"{split}_speakers"):
            print(f"vc-corpus: warning: only {summary['splits'].get(split, {}).get('speakers', 0)} "
                  f"{split} speakers have {config.min_utterances} or more files", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "assemble":
        return run_command("vc-corpus", lambda: _assemble(args), {(CorpusError, ReaderError, OSError): 2},
                           interrupted="interrupted; rerun the same command")
    config = BuildConfig(speakers=args.speakers, utterances=args.utterances, seed=args.seed,
                         engines=args.engines, generated=max(0, args.candidates),
                         stock=not args.no_stock, threshold=args.threshold)
    return run_command("vc-corpus", lambda: _build(args, config), {CorpusError: 2},
                       interrupted="interrupted; rerun the same command to resume")


def _build(args, config: BuildConfig) -> int:
    summary = build_corpus(args.out, config, jobs=args.jobs, progress=not args.quiet)
    d = summary["distinctness"]
    print(f"{args.out}: {summary['speakers']} speakers x {summary['utterances_per_speaker']} "
          f"utterances ({summary['hours']:.2f} h), splits {summary['split_sizes']}, "
          f"engines {summary['speakers_per_engine']}, distinctness min/median "
          f"{d['kept_min_pairwise']}/{d['kept_median_pairwise']} (threshold {d['threshold']}), "
          f"{summary['build']['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
