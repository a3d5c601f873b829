"""Does conversion move the voice to the target? Speaker-embedding check on held-out test speakers.

    python tools/eval_conversion.py [--json] [--model MODEL_DIR] [--corpus data/open-corpus]

For each test speaker the utterances are split in two: the first half enrols the target (DSAE code and
pitch register, as vc-enroll does) and gives the speaker's reference embedding (Resemblyzer, a speaker-verification network independent of the
DSAE); utterances of the second half are converted to other test speakers. A conversion counts as
"target closer" when its embedding is nearer (cosine) to the target's reference than to its own source
speaker's reference. Prints target_closer_rate, mean_cos_target, mean_cos_source, and for scale the
same cosines of the unconverted utterances. Floor (issue 5): target_closer_rate >= 0.9, default model.

Needs Resemblyzer: `pip install webrtcvad-wheels` then `pip install --no-deps resemblyzer`.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))


def load_resemblyzer():
    try:
        from resemblyzer import VoiceEncoder, preprocess_wav
    except ImportError as exc:
        raise SystemExit(f"eval_conversion: Resemblyzer is missing ({exc}); install it with "
                         "`pip install webrtcvad-wheels` then `pip install --no-deps resemblyzer`") from None
    return VoiceEncoder(device="cpu", verbose=False), preprocess_wav


def unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", default=None, help="model directory (default: $VC_MODEL, else models/default)")
    parser.add_argument("--corpus", default=str(REPO / "data" / "open-corpus"),
                        help="any corpus training.data.corpora reads (default: the open corpus)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--speakers", type=int, default=12, help="at most this many test speakers")
    parser.add_argument("--targets-per-source", type=int, default=3)
    parser.add_argument("--utterances", type=int, default=2, help="converted utterances per (source, target)")
    parser.add_argument("--n-iter", type=int, default=32)
    parser.add_argument("--strength", type=float, default=None,
                        help="conversion strength (default: vc.conversion.DEFAULT_STRENGTH; 1 = plain code swap)")
    parser.add_argument("--details", type=Path, default=None, metavar="CSV",
                        help="also write one row per conversion (speakers, utterance, cosines) to this CSV")
    parser.add_argument("--embedding-cache", type=Path, default=REPO / "data" / "cache" / "resemblyzer",
                        metavar="DIR", help="where embeddings of corpus files are kept between runs")
    parser.add_argument("--no-embedding-cache", action="store_true",
                        help="embed every corpus file afresh (each still once per run)")
    parser.add_argument("--no-harmonics", dest="harmonics", action="store_false",
                        help="score the DSAE's envelope alone, without harmonics rebuilt at the target's pitch")
    args = parser.parse_args(argv)

    from training.data.corpora import open_corpus
    from vc.audio import read_audio
    from vc.conversion import DEFAULT_STRENGTH, convert_audio16k
    from vc.model import load_model
    from vc.speakers import enroll

    strength = DEFAULT_STRENGTH if args.strength is None else args.strength
    start = time.perf_counter()
    encoder, preprocess_wav = load_resemblyzer()
    model = load_model(args.model, device="cpu")
    sr = model.feature_config.sr
    corpus = open_corpus(args.corpus)
    by_speaker: dict[str, list] = {}
    for utt in corpus.utterances(args.split):
        by_speaker.setdefault(utt.speaker, []).append(utt)
    speakers = [s for s in sorted(by_speaker) if len(by_speaker[s]) >= 4][: args.speakers]
    if len(speakers) < 2:
        raise SystemExit(f"eval_conversion: need 2+ {args.split} speakers with 4+ utterances in {args.corpus}")

    def embed(audio: np.ndarray) -> np.ndarray:
        return encoder.embed_utterance(preprocess_wav(audio, source_sr=sr))

    from embedding_cache import EmbeddingCache
    files = EmbeddingCache(embed, None if args.no_embedding_cache else args.embedding_cache, sr=sr,
                           read_audio=lambda path: read_audio(path, sr=sr)[0])
    code, reference, held_out = {}, {}, {}
    for s in speakers:
        utts = by_speaker[s]
        half = len(utts) // 2
        code[s] = enroll([u.path for u in utts[:half]], model).speaker
        reference[s] = unit(np.mean([files.file(u.path) for u in utts[:half]], axis=0))
        held_out[s] = utts[half:]

    rows = []
    n_audio = 0.0
    for i, source in enumerate(speakers):
        others = speakers[i + 1:] + speakers[:i]
        for k, target in enumerate(others[: args.targets_per_source]):
            for j in range(args.utterances):
                utt = held_out[source][(k * args.utterances + j) % len(held_out[source])]
                audio = read_audio(utt.path, sr=sr)[0]
                converted = convert_audio16k(audio, code[target], model, n_iter=args.n_iter,
                                             harmonics=args.harmonics, strength=strength)
                n_audio += audio.size / sr
                e_conv, e_orig = embed(converted), files.file(utt.path)
                rows.append({
                    "source": source, "target": target, "utterance": utt.utterance,
                    "cos_target": float(e_conv @ reference[target]),
                    "cos_source": float(e_conv @ reference[source]),
                    "orig_cos_target": float(e_orig @ reference[target]),
                    "orig_cos_source": float(e_orig @ reference[source]),
                })
    if args.details is not None:
        with open(args.details, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    closer = [r["cos_target"] > r["cos_source"] for r in rows]
    report = {
        "target_closer_rate": round(float(np.mean(closer)), 4),
        "mean_cos_target": round(float(np.mean([r["cos_target"] for r in rows])), 4),
        "mean_cos_source": round(float(np.mean([r["cos_source"] for r in rows])), 4),
        "unconverted_mean_cos_target": round(float(np.mean([r["orig_cos_target"] for r in rows])), 4),
        "unconverted_mean_cos_source": round(float(np.mean([r["orig_cos_source"] for r in rows])), 4),
        "conversions": len(rows),
        "speakers": len(speakers),
        "audio_seconds": round(n_audio, 1),
        "n_iter": args.n_iter,
        "harmonics": args.harmonics,
        "strength": strength,
        "model_id": model.model_id,
        "corpus": str(args.corpus),
        "split": args.split,
        "floor": {"target_closer_rate": 0.9},
        "embedded_files": {"computed": files.misses, "cached": files.hits},
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
