"""How `make demo`'s conversions came out: word error, DNSMOS and speaker similarity, side by side.

    python tools/demo_summary.py out [--examples examples] [--json]

For every converted clip `OUT/converted/<clip>__to__<target>.wav` and its source `OUT/source/<clip>.wav`
(as `python -m vc.demo --out OUT` writes them): Whisper base's word error against the clip's text
(`examples/manifest.json`; the alsa-utils channel-test voice says its file names), for the source and the
conversion; DNSMOS P.835 overall of both; and, where the target has a reference recording, Resemblyzer's
cosine of the conversion to the target's and to the source's own recording. The judges are those of
tools/eval_conversion.py (the `eval` extra); without them this says so and exits 0, since the demo itself
does not need them.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))


def clip_texts(manifest: dict) -> dict[str, str]:
    """Clip stem -> what is said in it."""
    texts = {Path(c["path"]).stem: c["text"] for c in manifest.get("clips", []) if c.get("text")}
    human = manifest.get("human_clip")
    if human:
        # "Front_Left.wav" -> "front left": the channel-test voice reads its channel names
        texts[human["name"]] = " ".join(re.sub(r"[_-]", " ", Path(f).stem).lower() for f in human["files"])
    return texts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the demo's output folder")
    p.add_argument("--examples", type=Path, default=REPO / "examples")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from judges import DNSMOS, JudgeMissing, Whisper, WordErrors, wer
    from vc.audio import read_audio

    try:
        asr, mos = Whisper(), DNSMOS()
    except JudgeMissing as exc:
        print(f"demo_summary: no word error or DNSMOS: {exc}")
        return 0
    try:
        from eval_conversion import load_resemblyzer
        encoder, preprocess_wav = load_resemblyzer()
    except SystemExit:
        encoder = None
    manifest = json.loads((args.examples / "manifest.json").read_text())
    texts = clip_texts(manifest)
    references = {t["name"]: args.examples / t["reference"] for t in manifest.get("targets", [])
                  if t.get("reference") and (args.examples / t["reference"]).is_file()}

    def embed(audio):
        return encoder.embed_utterance(preprocess_wav(audio, source_sr=16000))

    rows, source_errors, converted_errors = [], WordErrors(), WordErrors()
    heard: dict[str, tuple[str, float]] = {}
    for path in sorted((args.out / "converted").glob("*__to__*.wav")):
        stem, target = path.stem.split("__to__")
        source_path = args.out / "source" / f"{stem}.wav"
        if not source_path.is_file():
            continue
        converted = read_audio(path, sr=16000)[0]
        if stem not in heard:
            source = read_audio(source_path, sr=16000)[0]
            heard[stem] = (asr.transcribe(source), mos.score(source)["ovrl"])
        said, source_mos = heard[stem]
        text = texts.get(stem)
        row = {"clip": stem, "target": target, "text": text, "transcript_source": said,
               "transcript_converted": asr.transcribe(converted),
               "dnsmos_ovrl_source": round(source_mos, 3), "dnsmos_ovrl": round(mos.score(converted)["ovrl"], 3)}
        if text:
            row["wer_source"] = round(wer(text, said), 3)
            row["wer_converted"] = round(wer(text, row["transcript_converted"]), 3)
            source_errors.add(text, said)
            converted_errors.add(text, row["transcript_converted"])
        if encoder is not None and target in references:
            e = embed(converted)
            row["cos_target"] = round(float(e @ embed(read_audio(references[target], sr=16000)[0])), 3)
            row["cos_source"] = round(float(e @ embed(read_audio(source_path, sr=16000)[0])), 3)
        rows.append(row)
    if not rows:
        print(f"demo_summary: no conversions in {args.out / 'converted'} (run python -m vc.demo --out {args.out})")
        return 1
    summary = {"clips": len(rows), "wer_source": _round(source_errors.rate()),
               "wer_converted": _round(converted_errors.rate()),
               "wer_converted_capped": _round(converted_errors.capped_rate()),
               "dnsmos_ovrl_source": round(float(np.mean([r["dnsmos_ovrl_source"] for r in rows])), 3),
               "dnsmos_ovrl": round(float(np.mean([r["dnsmos_ovrl"] for r in rows])), 3)}
    judged = [r for r in rows if "cos_target" in r]
    if judged:
        summary["target_closer_rate"] = round(float(np.mean([r["cos_target"] > r["cos_source"] for r in judged])), 3)
    if args.json:
        print(json.dumps({"summary": summary, "rows": rows}))
        return 0
    print("how the demo's conversions came out (Whisper base word error against the text, DNSMOS overall 1-5, "
          "Resemblyzer cosine to the target's and the source's own recording):")
    for r in rows:
        words = f"WER {r['wer_source']:.2f} -> {r['wer_converted']:.2f}" if "wer_source" in r else "no text"
        voice = f", cos target {r['cos_target']:.2f} / source {r['cos_source']:.2f}" if "cos_target" in r else ""
        print(f"  {r['clip']} -> {r['target']}: {words}, DNSMOS {r['dnsmos_ovrl_source']:.2f} -> "
              f"{r['dnsmos_ovrl']:.2f}{voice}")
        heard = r["transcript_converted"]
        print(f"    heard: \"{heard if len(heard) <= 100 else heard[:100] + ' ...'}\"")
    print(f"all: WER {summary['wer_source']} -> {summary['wer_converted']} (each clip capped at its words: "
          f"{summary['wer_converted_capped']}), DNSMOS {summary['dnsmos_ovrl_source']} "
          f"-> {summary['dnsmos_ovrl']}" + (f", target closer {summary['target_closer_rate']}" if judged else ""))
    return 0


def _round(value):
    return None if value is None else round(value, 3)


if __name__ == "__main__":
    sys.exit(main())
