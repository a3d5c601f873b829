"""Where does a speaker's identity go? Resynthesis of held-out utterances, stage by stage, judged by Resemblyzer.

    python tools/eval_resynthesis.py [--model DIR] [--corpus data/human] [--speakers 24] [--utterances 3] [--json]

Each test speaker's first half of utterances gives its Resemblyzer reference (as in eval_conversion.py);
up to `--utterances` of the second half are resynthesised in five ways and the mean cosine of each to its
own speaker's reference is reported (the unconverted files score `unconverted`):

- `griffinlim`: the utterance's own log magnitude through Griffin-Lim (what the phase costs);
- `harmonic_model`: its own envelope with harmonics rebuilt at its own F0 (what `vc.pitch` costs);
- `decoder_envelope_own_fine`: the DSAE's reconstruction (own f and z) as envelope, the utterance's own
  fine structure on top (what the decoded envelope costs);
- `decoder`: the DSAE's reconstruction with rebuilt harmonics: the path every conversion takes, with the
  speaker's own code; a conversion cannot sound more like its target than this sounds like its speaker;
- `decoder_envelope_alone`: the reconstruction without harmonics (`--no-harmonics`).

Each version is also transcribed by Whisper base and scored by DNSMOS P.835 (`tools/judges.py`, as in
eval_conversion.py): `wer_<version>` is its corpus-level word error rate against the corpus text over the
utterances that have one (`wer_utterances`; `wer_untexted` left out), `content_wer_<version>` against the
transcript of the unconverted file, `dnsmos_ovrl_<version>` and `dnsmos_sig_<version>` its mean DNSMOS.
--no-wer / --no-dnsmos leave a judge out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model directory (default: $VC_MODEL, else models/default)")
    parser.add_argument("--corpus", default=str(REPO / "data" / "human"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--speakers", type=int, default=24)
    parser.add_argument("--utterances", type=int, default=3, help="resynthesised utterances per speaker")
    parser.add_argument("--n-iter", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-wer", dest="wer", action="store_false", help="leave out Whisper and the word error rates")
    parser.add_argument("--no-dnsmos", dest="dnsmos", action="store_false", help="leave out DNSMOS")
    args = parser.parse_args(argv)

    from embedding_cache import EmbeddingCache
    from eval_conversion import load_resemblyzer, open_judges, unit
    from judges import WordErrors
    from training.data.corpora import open_corpus
    from vc.audio import read_audio
    from vc.settings import DEFAULT_MOMENTUM
    from vc.stages import decode_windows, encode_windows, rebuild_harmonics, synthesise
    from vc.dsp import log_magnitude
    from vc.model import load_model
    from vc.pitch import Register, smooth_across_frequency, yin
    from vc.speakers import enroll

    model = load_model(args.model, device="cpu")
    cfg = model.feature_config
    sr = cfg.sr
    encoder, preprocess_wav = load_resemblyzer()

    def embed(audio):
        return encoder.embed_utterance(preprocess_wav(audio, source_sr=sr))

    files = EmbeddingCache(embed, REPO / "data" / "cache" / "resemblyzer", sr=sr,
                           read_audio=lambda path: read_audio(path, sr=sr)[0])

    asr, mos, transcripts, file_mos = open_judges(args.wer, args.dnsmos, REPO / "data" / "cache", sr,
                                                  lambda path: read_audio(path, sr=sr)[0], "eval_resynthesis")
    errors: dict[str, WordErrors] = {}
    content: dict[str, WordErrors] = {}
    mos_scores: dict[str, list] = {}
    untexted = 0

    def waveform(frames, n):
        return synthesise(frames, cfg, length=n, n_iter=args.n_iter, momentum=DEFAULT_MOMENTUM)

    by_speaker: dict[str, list] = {}
    for utt in open_corpus(args.corpus).utterances(args.split):
        by_speaker.setdefault(utt.speaker, []).append(utt)
    speakers = [s for s in sorted(by_speaker) if len(by_speaker[s]) >= 4][: args.speakers]
    cosines: dict[str, list] = {}
    for speaker in speakers:
        utts = by_speaker[speaker]
        half = len(utts) // 2
        reference = unit(np.mean([files.file(u.path) for u in utts[:half]], axis=0))
        code = enroll([u.path for u in utts[:half]], model).speaker.f
        for utt in utts[half:half + args.utterances]:
            audio = read_audio(utt.path, sr=sr)[0]
            n = audio.size
            frames = log_magnitude(audio, cfg=cfg)
            f0, voiced = yin(audio, sr, cfg.hop_length)
            f0, voiced = f0[: frames.shape[0]], voiced[: frames.shape[0]]
            register = Register.of(f0, voiced)
            decoded = decode_windows(encode_windows(frames, model), code, model)
            fine = frames - smooth_across_frequency(frames)
            versions = {
                "unconverted": audio,
                "griffinlim": waveform(frames, n),
                "harmonic_model": waveform(rebuild_harmonics(frames, f0, voiced, source=register, target=register, cfg=cfg)[0], n),
                "decoder_envelope_own_fine": waveform(smooth_across_frequency(decoded) + fine, n),
                "decoder": waveform(rebuild_harmonics(decoded, f0, voiced, source=register, target=register, cfg=cfg)[0], n),
                "decoder_envelope_alone": waveform(decoded, n),
            }
            untexted += not utt.text
            for name, y in versions.items():
                e = files.file(utt.path) if name == "unconverted" else embed(y)
                cosines.setdefault(name, []).append(float(e @ reference))
                if asr is not None:
                    said = transcripts.file(utt.path) if name == "unconverted" else asr.transcribe(y)
                    errors.setdefault(name, WordErrors()).add(utt.text, said)
                    if name != "unconverted":
                        content.setdefault(name, WordErrors()).add(transcripts.file(utt.path), said)
                if mos is not None:
                    scored = file_mos.file(utt.path) if name == "unconverted" else mos.score(y)
                    mos_scores.setdefault(name, []).append(scored)
    report = {name: round(float(np.mean(values)), 4) for name, values in cosines.items()}

    def rounded(value):
        return None if value is None else round(value, 4)

    for name, counted in errors.items():
        report[f"wer_{name}"] = rounded(counted.rate())
    for name, counted in content.items():
        report[f"content_wer_{name}"] = rounded(counted.rate())
    if errors:
        report.update(wer_utterances=errors["unconverted"].utterances, wer_untexted=untexted)
    for name, scored in mos_scores.items():
        report[f"dnsmos_ovrl_{name}"] = round(float(np.mean([m["ovrl"] for m in scored])), 4)
        report[f"dnsmos_sig_{name}"] = round(float(np.mean([m["sig"] for m in scored])), 4)
    report.update(utterances=len(cosines["unconverted"]), speakers=len(speakers), model_id=model.model_id,
                  corpus=str(args.corpus), split=args.split,
                  judges=["resemblyzer"] + [j.name for j in (asr, mos) if j is not None])
    print(json.dumps(report) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
