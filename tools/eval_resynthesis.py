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


def versions_of(audio: np.ndarray, f: np.ndarray, model, n_iter: int) -> dict[str, np.ndarray]:
    """The utterance at each stage: unconverted, its own magnitude through Griffin-Lim, its harmonics rebuilt,
    the decoder's output with its own code (with the source's fine structure, with rebuilt harmonics, alone)."""
    from vc.dsp import log_magnitude
    from vc.pitch import Register, smooth_across_frequency, yin
    from vc.settings import DEFAULT_MOMENTUM
    from vc.stages import decode_windows, encode_windows, rebuild_harmonics, synthesise

    cfg = model.feature_config
    frames = log_magnitude(audio, cfg=cfg)
    f0, voiced = yin(audio, cfg.sr, cfg.hop_length)
    f0, voiced = f0[: frames.shape[0]], voiced[: frames.shape[0]]
    register = Register.of(f0, voiced)
    decoded = decode_windows(encode_windows(frames, model), f, model)
    fine = frames - smooth_across_frequency(frames)

    def waveform(frames):
        return synthesise(frames, cfg, length=audio.size, n_iter=n_iter, momentum=DEFAULT_MOMENTUM)

    def harmonics(envelopes):
        return rebuild_harmonics(envelopes, f0, voiced, source=register, target=register, cfg=cfg)[0]

    return {
        "unconverted": audio,
        "griffinlim": waveform(frames),
        "harmonic_model": waveform(harmonics(frames)),
        "decoder_envelope_own_fine": waveform(smooth_across_frequency(decoded) + fine),
        "decoder": waveform(harmonics(decoded)),
        "decoder_envelope_alone": waveform(decoded),
    }


class Tally:
    """Each version's cosines to its speaker, word errors (against the text and the source's transcript) and
    DNSMOS scores; the unconverted version's judged through the per-file caches."""

    def __init__(self, embed, files, asr, mos, transcripts, file_mos):
        from collections import defaultdict

        from judges import WordErrors

        self.embed, self.files = embed, files
        self.asr, self.mos, self.transcripts, self.file_mos = asr, mos, transcripts, file_mos
        self.cosines: dict[str, list] = {}
        self.errors: dict = defaultdict(WordErrors)
        self.content: dict = defaultdict(WordErrors)
        self.mos_scores: dict[str, list] = {}
        self.untexted = 0

    def add(self, utt, versions: dict[str, np.ndarray], reference: np.ndarray) -> None:
        self.untexted += not utt.text
        for name, y in versions.items():
            own = name == "unconverted"
            e = self.files.file(utt.path) if own else self.embed(y)
            self.cosines.setdefault(name, []).append(float(e @ reference))
            if self.asr is not None:
                said = self.transcripts.file(utt.path) if own else self.asr.transcribe(y)
                self.errors[name].add(utt.text, said)
                if not own:
                    self.content[name].add(self.transcripts.file(utt.path), said)
            if self.mos is not None:
                self.mos_scores.setdefault(name, []).append(self.file_mos.file(utt.path) if own else self.mos.score(y))

    def report(self) -> dict:
        def rounded(value):
            return None if value is None else round(value, 4)

        report = {name: round(float(np.mean(values)), 4) for name, values in self.cosines.items()}
        for name, counted in self.errors.items():
            report[f"wer_{name}"] = rounded(counted.rate())
        for name, counted in self.content.items():
            report[f"content_wer_{name}"] = rounded(counted.rate())
        if self.errors:
            report.update(wer_utterances=self.errors["unconverted"].utterances, wer_untexted=self.untexted)
        for name, scored in self.mos_scores.items():
            report[f"dnsmos_ovrl_{name}"] = round(float(np.mean([m["ovrl"] for m in scored])), 4)
            report[f"dnsmos_sig_{name}"] = round(float(np.mean([m["sig"] for m in scored])), 4)
        report["utterances"] = len(self.cosines["unconverted"])
        return report


def build_parser() -> argparse.ArgumentParser:
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
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    from embedding_cache import EmbeddingCache
    from eval_conversion import load_resemblyzer, open_judges, protocol_speakers, unit
    from vc.audio import read_audio
    from vc.model import load_model
    from vc.speakers import enroll

    model = load_model(args.model, device="cpu")
    sr = model.feature_config.sr
    encoder, preprocess_wav = load_resemblyzer()

    def embed(audio):
        return encoder.embed_utterance(preprocess_wav(audio, source_sr=sr))

    def read(path):
        return read_audio(path, sr=sr)[0]

    files = EmbeddingCache(embed, REPO / "data" / "cache" / "resemblyzer", sr=sr, read_audio=read)
    asr, mos, transcripts, file_mos = open_judges(args.wer, args.dnsmos, REPO / "data" / "cache", sr, read,
                                                  "eval_resynthesis")
    tally = Tally(embed, files, asr, mos, transcripts, file_mos)
    by_speaker = protocol_speakers(args.corpus, args.split, args.speakers, tool="eval_resynthesis")
    for utts in by_speaker.values():
        half = len(utts) // 2
        reference = unit(np.mean([files.file(u.path) for u in utts[:half]], axis=0))
        f = enroll([u.path for u in utts[:half]], model).speaker.f
        for utt in utts[half:half + args.utterances]:
            tally.add(utt, versions_of(read(utt.path), f, model, args.n_iter), reference)
    report = tally.report()
    report.update(speakers=len(by_speaker), model_id=model.model_id, corpus=str(args.corpus), split=args.split,
                  judges=["resemblyzer"] + [j.name for j in (asr, mos) if j is not None],
                  **({"whisper_cpu": asr.cpu} if asr is not None else {}))
    print(json.dumps(report) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
