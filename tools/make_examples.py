"""Build examples/: a few short clips by held-out test speakers of the open corpus, and target speakers.

    python tools/make_examples.py [--corpus data/open-corpus] [--human-corpus data/human]
                                  [--model models/default] [--out examples]

Writes
    examples/audio/<speaker>-<utterance>.flac   one short sentence per source speaker (16 kHz FLAC)
    examples/speakers/<speaker>.npy             target speakers: vc-enroll over all their test utterances
    examples/speakers/<speaker>.flac            one sentence of each target's own speech (for comparison)
    examples/speakers/<source>-<id>.npy         human targets from an assembled corpus's test split
                                                (their code only: the corpora's audio is never copied)
    examples/manifest.json                      what is where, texts, engines, the model the targets fit
Rerun it whenever the default model changes: speaker codes belong to one model. Without a model it
writes the audio and a manifest whose targets have no .npy yet (the demo then says so).
Only test-split speakers are used: the default model never heard them.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MIN_SECONDS, IDEAL_SECONDS, MAX_SECONDS = 2.0, 2.8, 3.6

# A real person every set-up has on disk: the channel-test voice of alsa-utils (GPL-2, 48 kHz WAV),
# "Front left", "Rear right" ...; the demo joins the spoken files into one clip (Noise.wav is not speech).
ALSA_VOICE_DIR = "/usr/share/sounds/alsa"
ALSA_VOICE_FILES = ["Front_Left.wav", "Front_Center.wav", "Front_Right.wav", "Side_Left.wav",
                    "Side_Right.wav", "Rear_Left.wav", "Rear_Center.wav", "Rear_Right.wav"]

LICENCES = {
    "speechocean762": ("speechocean762 (OpenSLR 101, Speechocean / Jimbo Zhang et al.)", "Apache-2.0"),
    "librispeech": ("LibriSpeech (Panayotov et al.; LibriVox readers), excerpts in the Resemblyzer repository",
                    "CC-BY-4.0"),
}

def atomic_write_text(path: Path, text: str) -> None:
    from vc.files import atomic_write

    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_flac(path: Path, audio: np.ndarray, sr: int) -> None:
    import soundfile as sf

    from vc.files import atomic_write

    with atomic_write(path) as fh:
        sf.write(fh, np.clip(audio, -1, 1), sr, format="FLAC", subtype="PCM_16")


def pick_diverse(speakers: list[dict], n: int, seen: list[dict] = (),
                 traits: tuple[str, ...] = ("gender", "engine")) -> list[dict]:
    """Greedy: each pick has the least-used value of the first trait so far, then of the next ...
    (ties: list order)."""
    pool, picked = list(speakers), []
    used = list(seen)
    while pool and len(picked) < n:
        def novelty(s):
            return tuple(sum(u[t] == s[t] for u in used) for t in traits)
        best = min(pool, key=novelty)  # min keeps the first of equals
        pool.remove(best)
        picked.append(best)
        used.append(best)
    return picked


def _age_group(age: str) -> str:
    return "unknown age" if not age.isdigit() else "child" if int(age) < 16 else "adult"


def human_targets(corpus: Path, n: int, model, out: Path) -> list[dict]:
    """Enrol n test speakers of an assembled human corpus, as different as possible (source, sex,
    age group), each from all their test files. Only the code is written; the audio stays in data/."""
    from vc.speakers import enroll, save_speaker

    with open(corpus / "metadata.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    by_speaker: dict[str, list[dict]] = {}
    for r in rows:
        by_speaker.setdefault(r["speaker"], []).append(r)
    people = [{"id": s, "gender": rs[0]["gender"], "age_group": _age_group(rs[0]["age"]), "source": rs[0]["source"]}
              for s, rs in sorted(by_speaker.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    picked = [p["id"] for p in pick_diverse(people, n, traits=("gender", "age_group", "source"))]
    entries = []
    for speaker in picked:
        first = by_speaker[speaker][0]
        result = enroll([corpus / r["path"] for r in by_speaker[speaker]], model)
        npy = f"speakers/{speaker}.npy"
        save_speaker(out / npy, result.speaker)
        corpus_name, licence = LICENCES.get(first["source"], (first["source"], "see the corpus"))
        entries.append({"name": speaker, "speaker_id": speaker, "human": True, "source": first["source"],
                        "corpus": corpus_name, "licence": licence, "gender": first["gender"] or "?",
                        "age_group": _age_group(first["age"]), "reference": None, "speaker": npy,
                        "model_id": model.model_id, "enrolled_seconds": round(result.speech_seconds, 1),
                        "enrolled_segments": result.segments, "enrolled_files": result.files})
        print(f"human target {speaker} ({first['gender']}, {_age_group(first['age'])}): {result.summary()}")
    return entries


def human_readme_lines(entries: list[dict]) -> list[str]:
    if not entries:
        return []
    lines = ["", "Human targets: held-out **test** speakers of the assembled human corpus "
             "(`vc-corpus assemble data/human data/src/speechocean762 data/src/librispeech-samples`). Only "
             "their speaker files are here (code, register, z's statistics, unordered sets of smoothed "
             "spectral envelopes and of single voiced frames' magnitude spectra, 10 ms each, without order or "
             "phase, from which no speech can be pieced together); no audio of theirs is in this "
             "repository.", "",
             "| target | person | corpus (licence) | enrolled from |", "|---|---|---|---|"]
    lines += [f"| `{t['speaker']}` | {t['gender']}, {t['age_group']} | {t['corpus']} ({t['licence']}) | "
              f"{t['enrolled_seconds']} s of speech in {t['enrolled_files']} test utterances |" for t in entries]
    lines += ["", "The demo's human source is the channel-test voice of alsa-utils "
              "(`/usr/share/sounds/alsa/*.wav`, GPL-2), read from the system at run time."]
    return lines


def held_out_speakers(corpus: Path) -> list[dict]:
    """The corpus's test speakers by name, each with its rows (by utterance), gender, engine and voice."""
    meta_path = corpus / "metadata.csv"
    if not meta_path.is_file():
        raise SystemExit(f"make_examples: {meta_path} missing; build the open corpus first (vc-corpus)")
    with open(meta_path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    by_speaker: dict[str, list[dict]] = {}
    for r in rows:
        by_speaker.setdefault(r["speaker"], []).append(r)
    return [{"id": s, "gender": rs[0].get("gender") or "?", "engine": rs[0].get("engine") or "?",
             "voice": rs[0].get("voice") or "?", "rows": sorted(rs, key=lambda r: r["utterance"])}
            for s, rs in sorted(by_speaker.items())]


def best_clip(corpus: Path, speaker: dict, sr: int):
    """The speaker's row and audio nearest IDEAL_SECONDS, within MIN_SECONDS..MAX_SECONDS where any is."""
    from vc.audio import read_audio

    loaded = []
    for r in speaker["rows"]:
        audio, _ = read_audio(corpus / r["path"], sr=sr)
        seconds = audio.size / sr
        badness = abs(seconds - IDEAL_SECONDS) + (0 if MIN_SECONDS <= seconds <= MAX_SECONDS else 10)
        loaded.append((badness, r["utterance"], r, audio))
    loaded.sort(key=lambda t: (t[0], t[1]))
    return loaded[0][2], loaded[0][3]


def write_clips(sources: list[dict], corpus: Path, out: Path, sr: int) -> list[dict]:
    """One clip per source speaker under out/audio; their manifest entries."""
    clips = []
    for spk in sources:
        row, audio = best_clip(corpus, spk, sr)
        rel = f"audio/{spk['id']}-{row['utterance']}.flac"
        write_flac(out / rel, audio, sr)
        clips.append({"path": rel, "speaker": spk["id"], "utterance": row["utterance"], "text": row.get("text", ""),
                      "engine": spk["engine"], "voice": spk["voice"], "gender": spk["gender"],
                      "seconds": round(audio.size / sr, 2)})
    return clips


def write_targets(targets: list[dict], corpus: Path, out: Path, sr: int, model) -> list[dict]:
    """Each target's own clip and (with a model) its speaker file, enrolled from all its test utterances."""
    from vc.speakers import enroll, save_speaker

    entries = []
    for spk in targets:
        row, audio = best_clip(corpus, spk, sr)
        ref = f"speakers/{spk['id']}.flac"
        write_flac(out / ref, audio, sr)
        entry = {"name": spk["id"], "speaker_id": spk["id"], "engine": spk["engine"], "voice": spk["voice"],
                 "gender": spk["gender"], "reference": ref, "reference_text": row.get("text", ""),
                 "speaker": None}
        if model is not None:
            result = enroll([corpus / r["path"] for r in spk["rows"]], model)
            npy = f"speakers/{spk['id']}.npy"
            save_speaker(out / npy, result.speaker)
            entry.update(speaker=npy, model_id=model.model_id, enrolled_seconds=round(result.speech_seconds, 1),
                         enrolled_segments=result.segments, enrolled_files=result.files)
            print(f"target {spk['id']} ({spk['engine']} {spk['voice']}, {spk['gender']}): {result.summary()}")
        entries.append(entry)
    return entries


def readme_lines(manifest: dict, human_entries: list[dict]) -> list[str]:
    clips, targets = manifest["clips"], manifest["targets"]
    lines = ["# Example clips and target speakers", "",
             "Made by `tools/make_examples.py` from held-out **test** speakers of the project's open corpus",
             "(speech synthesised with Debian's espeak-ng, flite and festival voices; see `training/data/synth.py`).",
             "The default model never heard these speakers. `python -m vc.demo --out out` converts the clips",
             "to the default target. Speaker files (`speakers/*.npy`: the code f, the pitch register, z's statistics",
             "an unordered set of up to 3000 spectral envelopes, 48 DCT coefficients each, and one of up to 1500",
             "voiced frames: envelope, F0 and harmonic fine structure) belong to the model",
             f"they were enrolled with (`{manifest['model_id'] or 'none yet: no model when this ran'}`): "
             "rerun the script after retraining.", "",
             "| clip | speaker | engine / voice | text |", "|---|---|---|---|"]
    lines += [f"| `{c['path']}` | {c['speaker']} ({c['gender']}) | {c['engine']} / {c['voice']} | {c['text']} |"
              for c in clips]
    lines += ["", "| target | engine / voice | enrolled from |", "|---|---|---|"]
    lines += [f"| `{t['speaker'] or '(no model yet)'}` | {t['engine']} / {t['voice']} ({t['gender']}) | "
              f"{t.get('enrolled_seconds', 0)} s of speech in {t.get('enrolled_files', 0)} test utterances; "
              f"own speech: `{t['reference']}` |" for t in targets if t.get("engine")]
    return lines + human_readme_lines(human_entries)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=str(REPO / "data" / "open-corpus"))
    parser.add_argument("--model", default=None, help="model directory (default: $VC_MODEL, else models/default)")
    parser.add_argument("--out", default=str(REPO / "examples"))
    parser.add_argument("--sources", type=int, default=4, help="source speakers (one clip each)")
    parser.add_argument("--targets", type=int, default=2, help="target speakers")
    parser.add_argument("--human-corpus", default=str(REPO / "data" / "human"),
                        help="assembled human corpus (vc-corpus assemble) for human targets; skipped if absent")
    parser.add_argument("--human-targets", type=int, default=4, help="human target speakers")
    parser.add_argument("--human-clip-dir", default=ALSA_VOICE_DIR,
                        help="where the demo finds the alsa-utils channel-test voice")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    from vc.model import ModelError, load_model

    corpus = Path(args.corpus)
    speakers = held_out_speakers(corpus)
    if len(speakers) < args.targets + 1:
        raise SystemExit(f"make_examples: only {len(speakers)} test speakers in {corpus}")
    try:
        model = load_model(args.model, device="cpu")
    except ModelError as exc:
        model = None
        print(f"make_examples: no model ({exc}); writing audio only, rerun once the model exists", file=sys.stderr)
    sr = 16000

    # Targets: diverse, with the most test material; sources: diverse among the rest.
    by_material = sorted(speakers, key=lambda s: (-len(s["rows"]), s["id"]))
    targets = pick_diverse(by_material, args.targets)
    sources = pick_diverse([s for s in speakers if s not in targets], args.sources)

    out = Path(args.out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "speakers").mkdir(parents=True, exist_ok=True)
    clips = write_clips(sources, corpus, out, sr)
    target_entries = write_targets(targets, corpus, out, sr, model)
    human_entries = []
    if model is not None and Path(args.human_corpus, "metadata.csv").is_file():
        human_entries = human_targets(Path(args.human_corpus), args.human_targets, model, out)
    else:
        print(f"make_examples: no model or no {args.human_corpus}/metadata.csv: no human targets", file=sys.stderr)
    target_entries += human_entries
    keep = {c["path"] for c in clips} | {t[k] for t in target_entries for k in ("reference", "speaker") if t.get(k)}
    for folder in ("audio", "speakers"):  # drop what an earlier run made and this one did not
        for p in (out / folder).iterdir():
            if p.is_file() and f"{folder}/{p.name}" not in keep:
                p.unlink()
    manifest = {
        "made_by": "tools/make_examples.py",
        "corpus": str(corpus.name),
        "split": "test",
        "model_id": model.model_id if model is not None else None,
        "default_target": target_entries[0]["name"],
        "clips": clips,
        "human_clip": {"name": "alsa-channel-test", "directory": args.human_clip_dir, "files": ALSA_VOICE_FILES,
                       "speaker": "the alsa-utils channel-test voice", "licence": "GPL-2 (alsa-utils)"},
        "targets": target_entries,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    atomic_write_text(out / "README.md", "\n".join(readme_lines(manifest, human_entries)) + "\n")
    total = sum((out / k).stat().st_size for k in keep | {"manifest.json", "README.md"})
    print(f"wrote {len(clips)} clips and {len(target_entries)} targets to {out} ({total / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
