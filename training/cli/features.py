"""vc-features: extract log-magnitude features of a corpus into a feature cache.

    vc-features CORPUS OUT [--kind auto|KIND] [--split NAME ...]
                [--segment-hop 10] [--segment-length 20] [--jobs J] [--force] [--no-progress]
                [--include-sa] [--mic mic1|mic2] [--dev-fraction 0.1] [--test-fraction 0.1]
                [--content-targets [--content-dim 64]]

Builds train, dev and test by default (train always: the normalisation statistics come from it).
A second run with the same inputs and options reuses the cache and says so. --content-targets also writes
what Whisper base's encoder makes of every frame (training.data.content; needs the eval extra), which the
objective's content term learns from: about 1 s of one core per 30 s of audio.
"""
from __future__ import annotations

import argparse
import sys

from training.cli import run_command
from training.data.corpora import KINDS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vc-features",
        description="Extract log-magnitude features of a corpus into a feature cache (see README).")
    p.add_argument("corpus", help="corpus directory (TIMIT, VCTK, LibriSpeech, speechocean762, "
                                  "open or assembled corpus, or one folder per speaker)")
    p.add_argument("out", help="feature cache directory to write")
    p.add_argument("--kind", default="auto",
                   choices=["auto", *KINDS],
                   help="corpus layout (default: detected)")
    p.add_argument("--split", action="append", metavar="NAME",
                   help="split to build; repeat or separate by commas (default: train,dev,test; "
                        "TIMIT also has core-test and full-test)")
    p.add_argument("--segment-hop", type=int, default=10, help="frames between segment starts (default 10)")
    p.add_argument("--segment-length", type=int, default=20, help="frames per segment (default 20 = 200 ms)")
    p.add_argument("--jobs", type=int, help="worker processes (default: number of CPUs)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--include-sa", action="store_true", default=None,
                   help="TIMIT: keep the SA sentences every speaker reads")
    p.add_argument("--mic", choices=["mic1", "mic2"], help="VCTK 0.92: microphone (default mic1)")
    p.add_argument("--dev-fraction", type=float, help="split-by-speaker corpora: share of speakers in dev")
    p.add_argument("--test-fraction", type=float, help="split-by-speaker corpora: share of speakers in test")
    p.add_argument("--content-targets", action="store_true",
                   help="also write frame-level content targets for the train and dev splits (Whisper base)")
    p.add_argument("--content-dim", type=int, default=64, help="principal components kept (default 64)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from training.data.audio import AudioError
    from training.data.corpora import CorpusError
    from training.data.features import FeatureCacheError

    return run_command("vc-features", lambda: _build(args),
                       {(CorpusError, FeatureCacheError, AudioError): 2, OSError: 1},
                       interrupted="interrupted; nothing was written")


def _build(args) -> int:
    from training.data.corpora import open_corpus
    from training.data.features import FeatureCacheError, build_feature_cache

    options = {k: v for k, v in (("include_sa", args.include_sa), ("mic", args.mic),
                                 ("dev_fraction", args.dev_fraction),
                                 ("test_fraction", args.test_fraction)) if v is not None}
    splits = None
    if args.split:
        splits = [s.strip() for item in args.split for s in item.split(",") if s.strip()]
    corpus = open_corpus(args.corpus, kind=args.kind, **options)
    kwargs = {} if splits is None else {"splits": splits}
    report = build_feature_cache(corpus, args.out, segment_hop=args.segment_hop,
                                 segment_length=args.segment_length, jobs=args.jobs,
                                 progress=not args.no_progress, force=args.force, **kwargs)
    print(report.summary())
    if args.content_targets:
        from training.data.content import build_content_targets
        from training.whisper import WeightsMissing, whisper_base_dir

        try:
            model_dir = whisper_base_dir()
        except WeightsMissing as exc:
            raise FeatureCacheError(f"{args.out}: no content targets: {exc}") from None
        build_content_targets(args.out, model_dir, dim=args.content_dim, threads=args.jobs or 1,
                              splits=[s for s in ("train", "dev") if splits is None or s in splits])
    return 0


if __name__ == "__main__":
    sys.exit(main())
