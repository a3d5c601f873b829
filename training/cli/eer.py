"""vc-eer: speaker verification with the DSAE codes f and z against MFCC and i-vector baselines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.cli import run_command
from training.eer import EMBEDDINGS, EvaluationError, IVectorOptions, evaluate, format_table
from vc.cli.args import non_negative_int, positive_int

# The FHVAE baselines that ship with the repository (trained on the default model's corpus and features:
# README, "Speaker verification"), scored as "fhvae" unless --fhvae names other runs.
MODELS = Path(__file__).resolve().parents[2] / "models"
SHIPPED_FHVAE = (f"fhvae={MODELS / 'fhvae-alpha10'}", f"fhvae0={MODELS / 'fhvae-alpha0'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vc-eer",
        description="Speaker-verification EER and minDCF of the DSAE's static code f and dynamic codes z, "
        "with MFCC-mean and i-vector baselines scored on the same trials (cosine similarity). "
        "A disentangled model gives f a low EER and z an EER near 50 %.",
        epilog="For scale, published TIMIT EERs (core test set, f / z): i-vector 9.82 %; DSAE 4.82-5.64 % / "
        "17.49-19.20 %; FHVAE 5.06 % / 22.77 %; C-DSVAE 4.03 % / 31.81 %; SPYL 3.41 % / 33.22 %; "
        "DBSE 3.50 % / 34.62 %.",
    )
    parser.add_argument("--model", help="model directory for f and z (default: $VC_MODEL, else models/default)")
    parser.add_argument("--data", required=True,
                        help="corpus directory (open corpus, TIMIT, VCTK, LibriSpeech, folder per speaker) "
                        "or a feature cache written by vc-features")
    parser.add_argument("--split", default=None,
                        help="split to evaluate (default: test; for TIMIT core-test, the 24-speaker core set)")
    parser.add_argument("--train-split", default="train", help="split the i-vector baseline is trained on")
    parser.add_argument("--embedding", nargs="+", choices=EMBEDDINGS + ("fhvae",),
                        default=list(EMBEDDINGS) + ["fhvae"], metavar="{f,z,mfcc,ivector,fhvae}",
                        help="embeddings to score (default: all five; fhvae: z2 and z1 of the FHVAE baselines, "
                        "the shipped models/fhvae-alpha10 as 'fhvae' and models/fhvae-alpha0 as 'fhvae0' "
                        "unless --fhvae gives runs)")
    parser.add_argument("--fhvae", action="append", metavar="[NAME=]RUN_DIR",
                        help="score this FHVAE run (python -m training.fhvae train) instead of the shipped ones: "
                        "its z2 and z1 as NAME_z2 and NAME_z1; repeatable. Unnamed, the first is 'fhvae' "
                        "(eer_fhvae_z2, eer_fhvae_z1), later ones 'fhvae<alpha>' (e.g. eer_fhvae0_z2)")
    parser.add_argument("--trials", default="all-pairs",
                        help="'all-pairs' (every pair of test utterances) or a trial-list file, one trial per "
                        "line: 'KEY KEY [target|nontarget]' or 'LABEL KEY KEY'; keys are utterance ids, "
                        "SPEAKER/UTTERANCE or audio paths")
    parser.add_argument("--mc", type=non_negative_int, default=0, metavar="N",
                        help="f of each segment = mean of N posterior samples (0: the posterior mean)")
    parser.add_argument("--segment-hop", type=positive_int, default=None, metavar="FRAMES",
                        help="hop between the segments of an utterance (default: the segment length)")
    parser.add_argument("--plot", metavar="DET.png", help="write a DET plot (one curve per embedding); a PCA "
                        "scatter of f by speaker goes beside it as DET-f-pca.png unless --scatter says otherwise")
    parser.add_argument("--scatter", metavar="PCA.png", help="write the PCA scatter of f coloured by speaker here")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--p-target", type=float, default=0.01, help="target prior of minDCF (default 0.01)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="ONNX Runtime device")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Monte-Carlo samples and i-vector training")
    group = parser.add_argument_group("i-vector baseline")
    group.add_argument("--ubm-components", type=positive_int, default=64, help="Gaussians in the UBM (default 64)")
    group.add_argument("--tv-rank", type=positive_int, default=100, help="i-vector dimension (default 100)")
    group.add_argument("--tv-iterations", type=positive_int, default=5, help="EM iterations for T (default 5)")
    group.add_argument("--n-mfcc", type=positive_int, default=20, help="MFCCs per frame, before deltas (default 20)")
    group.add_argument("--ivector-lda", type=non_negative_int, default=0, metavar="DIM",
                       help="add LDA + WCCN on the training speakers, to at most DIM dimensions (capped at "
                       "speakers - 1); default 0: the issue's protocol, plain length-normalised i-vectors "
                       "scored by cosine")
    group.add_argument("--cmn", action="store_true",
                       help="remove each utterance's cepstral mean (helps across channels; hurts on one-channel "
                       "corpora, where the mean spectrum is part of the voice)")
    group.add_argument("--ubm-frames", type=positive_int, default=200_000, help="frames sampled for the UBM")
    group.add_argument("--ivector-max-utterances", type=positive_int, default=5000, metavar="N",
                       help="train the i-vector system on at most N random training utterances (default 5000)")
    parser.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n_mfcc < 2:
        print("vc-eer: error: --n-mfcc must be at least 2 (c0 is left out of the MFCC baseline)", file=sys.stderr)
        return 2
    log = None if args.quiet else (lambda message: print(f"vc-eer: {message}", file=sys.stderr, flush=True))
    options = IVectorOptions(
        n_components=args.ubm_components, rank=args.tv_rank, iterations=args.tv_iterations, n_mfcc=args.n_mfcc, cmn=args.cmn,
        lda_dim=args.ivector_lda,
        ubm_max_frames=args.ubm_frames, max_train_utterances=args.ivector_max_utterances,
    )
    return run_command("vc-eer", lambda: _evaluate(args, options, log), {(EvaluationError, OSError): 1},
                       interrupted="interrupted")


def _evaluate(args, options: IVectorOptions, log) -> int:
    embeddings = [e for e in args.embedding if e != "fhvae"]
    fhvae = args.fhvae or (SHIPPED_FHVAE if "fhvae" in args.embedding else ())
    report = evaluate(
        data=args.data, model_dir=args.model, split=args.split, embeddings=embeddings, trials=args.trials,
        mc=args.mc, plot=args.plot, scatter=args.scatter, train_split=args.train_split, ivector=options,
        p_target=args.p_target, device=args.device, segment_hop=args.segment_hop, seed=args.seed, log=log,
        fhvae=fhvae,
    )
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
