"""Does conversion move the voice to the target, and keep the words and the sound? Held-out test speakers.

    python tools/eval_conversion.py [--json] [--model MODEL_DIR] [--corpus data/open-corpus] [--path file|stream|both]

For each test speaker the utterances are split in two: the first half enrols the target (DSAE code and
pitch register, as vc-enroll does) and gives the speaker's reference embedding (Resemblyzer, a speaker-verification network independent of the
DSAE); utterances of the second half are converted to other test speakers. A conversion counts as
"target closer" when its embedding is nearer (cosine) to the target's reference than to its own source
speaker's reference. Prints target_closer_rate, mean_cos_target, mean_cos_source, and for scale the
same cosines of the unconverted utterances. Floor (issue 5): target_closer_rate >= 0.9, default model.

--path stream scores the streaming engine (`vc.engine.StreamingConverter`, default settings, a fresh
engine per utterance fed blocks of 200 ms as vc-live feeds it; with --stream-source enrolled it knows
the source speaker from their enrolment half, as `vc-live --source` does) on exactly the same
conversions; --path both scores both and prints {"file": ..., "stream": ..., "pitch": ...}. The stream paths also compare the pitch
tracks of every test utterance of those speakers: whole-file YIN (`vc.pitch.yin`) against the streaming
tracker fed as the engine feeds it (hop by hop, default and low-latency hops):
pitch_median_abs_diff_pct on frames both call voiced, pitch_voicing_agreement over all frames.
Floors (issue 13): stream target_closer_rate >= file - 0.03 and >= 0.9; pitch_median_abs_diff_pct <= 2,
pitch_voicing_agreement >= 0.95.

Words and sound (issue 20; `tools/judges.py`, the `eval` extra): beside the speaker similarity every
conversion is transcribed by Whisper base and scored by DNSMOS P.835, and so is what it is made from.
Word error rates against the corpus text, each a corpus-level rate (word edits summed / reference words
summed) over the conversions whose source utterance has a text (`wer_utterances`; those without one,
`wer_untexted`, are left out of them): `wer_source` (the unconverted sources), `wer_gl` (the sources
through STFT and Griffin-Lim alone: what the phase costs), `wer_resynth` (the DSAE's reconstruction of each
source with its own enrolled code at strength 0, on the same path: what the model costs), `wer_converted`
(the conversions); `wer_converted_gap_ci95` and `wer_resynth_gap_ci95` (and `_capped_`): 95 % intervals of
each rate's gap over `wer_source`, a paired bootstrap over the utterances (`judges.gap_interval`), since
one clip on which Whisper loops can decide a floor. `content_wer`: the conversions against the Whisper
transcript of their own unconverted source (no corpus text needed). `dnsmos_ovrl`, `dnsmos_sig`: DNSMOS of the conversions (1-5);
`dnsmos_ovrl_source`: of the unconverted sources. `voiced_share`: YIN's voiced frames of the conversions
over those of their sources (a conversion can keep words and sound by whispering); `pitch_offset_semitones`:
the mean distance of each conversion's median F0 from the target's register. --details adds each row's
transcripts, WERs, DNSMOS and pitch.
Transcripts and DNSMOS scores of corpus files are cached on disk beside the embeddings (data/cache/).
--no-wer / --no-dnsmos leave a judge out (similarity alone: both).

Needs Resemblyzer: `pip install webrtcvad-wheels` then `pip install --no-deps resemblyzer`; the word and
sound judges: `pip install -e ".[eval]"`. tools/setup.sh installs all three.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
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


STREAM_BLOCK = 3200   # 200 ms at 16 kHz
FLOORS = {"target_closer_rate": 0.9, "stream_minus_file": -0.03, "pitch_median_abs_diff_pct": 2.0,
          "pitch_voicing_agreement": 0.95}


def _scores(rows: list[dict]) -> dict:
    closer = [r["cos_target"] > r["cos_source"] for r in rows]
    return {
        "target_closer_rate": round(float(np.mean(closer)), 4),
        "mean_cos_target": round(float(np.mean([r["cos_target"] for r in rows])), 4),
        "mean_cos_source": round(float(np.mean([r["cos_source"] for r in rows])), 4),
        "mean_margin": round(float(np.mean([r["cos_target"] - r["cos_source"] for r in rows])), 4),
        "unconverted_mean_cos_target": round(float(np.mean([r["orig_cos_target"] for r in rows])), 4),
        "unconverted_mean_cos_source": round(float(np.mean([r["orig_cos_source"] for r in rows])), 4),
        "conversions": len(rows),
    }


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def _rate(errors) -> float | None:
    rate = errors.rate()
    return None if rate is None else round(rate, 4)


def _judge_scores(rows: list[dict]) -> dict:
    """Corpus-level word error rates and mean DNSMOS of the rows that carry them (see the docstring)."""
    from judges import WordErrors, gap_interval

    out = {}
    if rows and "transcript_converted" in rows[0]:
        texted = [r for r in rows if r["text"]]
        errors = {}
        for key in ("source", "gl", "resynth", "converted"):
            errors[key] = WordErrors()
            for r in texted:
                errors[key].add(r["text"], r[f"transcript_{key}"])
            out[f"wer_{key}"] = _rate(errors[key])
            capped = errors[key].capped_rate()
            out[f"wer_{key}_capped"] = None if capped is None else round(capped, 4)
            out[f"wer_{key}_overruns"] = errors[key].overruns
        # Issue 20's floors are gaps over the sources: how sure each one is, from these utterances alone.
        for key in ("resynth", "converted"):
            for suffix, capped in (("", False), ("_capped", True)):
                interval = gap_interval(errors[key], errors["source"], capped=capped)
                out[f"wer_{key}{suffix}_gap_ci95"] = None if interval is None else [round(v, 4) for v in interval]
        content = WordErrors()
        for r in rows:
            content.add(r["transcript_source"], r["transcript_converted"])
        out.update(content_wer=_rate(content), content_wer_utterances=content.utterances,
                   wer_utterances=len(texted), wer_untexted=len(rows) - len(texted))
    if rows and "voiced_frames_converted" in rows[0]:
        # A conversion can keep the words by losing its pitch (a whispered output): how much of the sources'
        # voicing survives, and how far the converted pitch sits from the target's register.
        voiced_source = sum(r["voiced_frames_source"] for r in rows)
        offsets = [abs(r["pitch_offset_semitones"]) for r in rows if r["pitch_offset_semitones"] is not None]
        out.update(voiced_share=round(sum(r["voiced_frames_converted"] for r in rows) / max(voiced_source, 1), 4),
                   pitch_offset_semitones=round(float(np.mean(offsets)), 3) if offsets else None)
    if rows and "dnsmos_ovrl" in rows[0]:
        out.update(dnsmos_ovrl=_mean(r["dnsmos_ovrl"] for r in rows),
                   dnsmos_sig=_mean(r["dnsmos_sig"] for r in rows),
                   dnsmos_ovrl_source=_mean(r["dnsmos_ovrl_source"] for r in rows))
    return out


def _voiced_frames(audio: np.ndarray, sr: int, hop_length: int) -> int:
    from vc.pitch import yin

    return int(yin(audio, sr, hop_length)[1].sum())


def _pitch_judged(converted: np.ndarray, voiced_source: int, register, sr: int, hop_length: int) -> dict:
    """YIN's voiced frames of a conversion beside its source's, and its median F0 against the target's
    register (semitones; None without a register or voicing)."""
    from vc.pitch import yin

    f0, voiced = yin(converted, sr, hop_length)
    offset = None
    if register is not None and voiced.any():
        offset = round(float(12.0 * (np.log(np.median(f0[voiced])) - register.log_mean) / np.log(2.0)), 3)
    return {"voiced_frames_source": voiced_source, "voiced_frames_converted": int(voiced.sum()),
            "pitch_offset_semitones": offset}


def open_judges(wer: bool, dnsmos: bool, cache: Path | None, sr: int, read_audio, tool: str):
    """(Whisper or None, DNSMOS or None, cache of source transcripts, cache of source DNSMOS scores); the
    caches keep per-file results under cache/transcripts and cache/dnsmos (None: in memory only)."""
    from embedding_cache import FileCache
    from judges import DNSMOS, JudgeMissing, Whisper

    try:
        asr = Whisper() if wer else None
        mos = DNSMOS() if dnsmos else None
    except JudgeMissing as exc:
        raise SystemExit(f"{tool}: {exc} (or leave the judge out with --no-wer / --no-dnsmos)") from None
    transcripts = scores = None
    if asr is not None:
        transcripts = FileCache(asr.transcribe, None if cache is None else cache / "transcripts", sr=sr,
                                read_audio=read_audio, kind="json", salt=asr.salt)
    if mos is not None:
        scores = FileCache(mos.score, None if cache is None else cache / "dnsmos", sr=sr,
                           read_audio=read_audio, kind="json", salt=mos.salt)
    return asr, mos, transcripts, scores


def stream_track(audio: np.ndarray, sr: int, hop_length: int, hop_frames: int,
                 lookahead_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The F0 track the engine gets: the streaming tracker fed 200 ms blocks, taken a hop at a time."""
    from vc.streaming_pitch import StreamingPitch

    tracker = StreamingPitch(sr, hop_length, lookahead_frames=lookahead_frames)
    padded = np.concatenate([audio, np.zeros(tracker.span + (hop_frames + lookahead_frames) * hop_length, np.float32)])
    f0s, flags = [], []
    for i in range(0, padded.size, STREAM_BLOCK):
        tracker.push(padded[i:i + STREAM_BLOCK])
        while tracker.ready >= hop_frames:
            f0, voiced = tracker.take(hop_frames)
            f0s.append(f0)
            flags.append(voiced)
    n = 1 + audio.size // hop_length
    return np.concatenate(f0s)[:n], np.concatenate(flags)[:n]


def pitch_agreement(paths, model) -> dict:
    """Whole-file YIN against the streaming tracker on every file, pooled over frames."""
    from vc.audio import read_audio
    from vc.engine import MODES, pitch_lookahead
    from vc.pitch import yin

    cfg = model.feature_config
    frame_ms = 1000.0 * cfg.hop_length / cfg.sr
    out = {"pitch_files": len(paths)}
    for mode, prefix in (("default", "pitch"), ("lowlat", "pitch_lowlat")):
        hop_frames = int(round(MODES[mode]["hop_ms"] / frame_ms))
        lookahead = pitch_lookahead(cfg, model.segment_length - hop_frames if MODES[mode]["crossfade"] else 0)
        diffs, agree, frames = [], 0, 0
        for path in paths:
            audio = read_audio(path, sr=cfg.sr)[0]
            f0, voiced = yin(audio, cfg.sr, cfg.hop_length)
            sf0, svoiced = stream_track(audio, cfg.sr, cfg.hop_length, hop_frames, lookahead)
            both = voiced & svoiced
            diffs.append(np.abs(sf0[both] / f0[both] - 1.0))
            agree += int(np.sum(voiced == svoiced))
            frames += voiced.size
        diffs = np.concatenate(diffs)
        out[f"{prefix}_median_abs_diff_pct"] = round(100.0 * float(np.median(diffs)), 3)
        # for scale: most frames are identical, so the median alone says little about the rest
        out[f"{prefix}_p95_abs_diff_pct"] = round(100.0 * float(np.percentile(diffs, 95)), 3)
        out[f"{prefix}_identical_fraction"] = round(float(np.mean(diffs < 1e-9)), 4)
        out[f"{prefix}_voicing_agreement"] = round(agree / frames, 4)
    return out


def build_parser() -> argparse.ArgumentParser:
    from vc.cli.args import gate_level
    from vc.engine import DEFAULT_GATE_DB
    from vc.settings import EXEMPLAR_MATCHES, FINE_STRUCTURES, PAUSES

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
                        help="conversion strength (default: vc.settings.DEFAULT_STRENGTH; 1 = plain code swap)")
    parser.add_argument("--details", type=Path, default=None, metavar="CSV",
                        help="also write one row per conversion (speakers, utterance, cosines; texts, transcripts, "
                             "WERs and DNSMOS) to this CSV")
    parser.add_argument("--embedding-cache", type=Path, default=REPO / "data" / "cache" / "resemblyzer",
                        metavar="DIR", help="where embeddings of corpus files are kept between runs")
    parser.add_argument("--no-embedding-cache", action="store_true",
                        help="embed, transcribe and score every corpus file afresh (each still once per run)")
    parser.add_argument("--judge-cache", type=Path, default=REPO / "data" / "cache", metavar="DIR",
                        help="where transcripts (DIR/transcripts) and DNSMOS scores (DIR/dnsmos) of corpus "
                             "files are kept between runs")
    parser.add_argument("--no-wer", dest="wer", action="store_false",
                        help="leave out Whisper and the word error rates")
    parser.add_argument("--no-dnsmos", dest="dnsmos", action="store_false", help="leave out DNSMOS")
    parser.add_argument("--no-harmonics", dest="harmonics", action="store_false",
                        help="score the DSAE's envelope alone, without harmonics rebuilt at the target's pitch")
    parser.add_argument("--fine-structure", choices=FINE_STRUCTURES, default=None,
                        help="what carries the harmonics (default: vc.settings.ConversionSettings)")
    parser.add_argument("--match", choices=(*EXEMPLAR_MATCHES, "none"), default=None,
                        help="pick the target's envelope exemplars by what is said (z, or the model's phone "
                             "recogniser), by envelope, or use none (default: vc.settings.ConversionSettings)")
    parser.add_argument("--envelope-share", type=float, default=None,
                        help="how much of the z moves the envelopes make towards the target's own "
                             "(default: vc.settings.ConversionSettings)")
    parser.add_argument("--z-share", type=float, default=None,
                        help="share of the z move that z's statistics make (default: the settings')")
    parser.add_argument("--pauses", choices=PAUSES, default=None,
                        help="what the frames without speech hold (default: the settings')")
    parser.add_argument("--envelope-prediction", type=float, default=None,
                        help="share of the envelope move to the target's predicted envelope rather than its nearest "
                             "exemplars (default: the settings')")
    parser.add_argument("--target-fine-share", type=float, default=None,
                        help="with --fine-structure source: the share of the target's fine structure blended in")
    parser.add_argument("--source-detail", type=float, default=None,
                        help="share of the source's envelope the decoder misses added back (default: the library's)")
    parser.add_argument("--envelopes-per-frame", type=int, default=None,
                        help="target envelopes averaged per converted frame (default: the settings')")
    parser.add_argument("--voiced-candidates", type=int, default=None,
                        help="nearest target envelopes among which a voiced frame's fine structure is taken by F0 "
                             "(default: the settings')")
    parser.add_argument("--fine-exemplars", type=int, default=None,
                        help="of those, how many nearest in F0 are averaged for its fine structure (default: the "
                             "settings')")
    parser.add_argument("--envelope-bins", type=int, default=None,
                        help="frequency bins over which the envelope under the target's harmonics is smoothed "
                             "(default: the settings')")
    parser.add_argument("--follow-level", type=float, default=None,
                        help="how far each frame's level follows its source frame's (default: the settings')")
    parser.add_argument("--formant-emphasis", type=float, default=None,
                        help="how far the envelopes are sharpened about their tilt (default: the settings')")
    parser.add_argument("--path", choices=("file", "stream", "both"), default="file",
                        help="score vc.convert (file), the streaming engine (stream) or both")
    parser.add_argument("--stream-mode", choices=("default", "lowlat"), default="default",
                        help="the engine's preset for the stream path (lowlat: vc-live --low-latency)")
    parser.add_argument("--stream-hop-ms", type=float, default=None,
                        help="the engine's hop instead of the preset's (vc-live --hop-ms)")
    parser.add_argument("--stream-gate-db", type=gate_level, default=DEFAULT_GATE_DB, metavar="DB",
                        help="the engine's noise gate for the stream path: a level in dBFS or 'off' "
                             f"(vc-live --gate-db; default {DEFAULT_GATE_DB or 'off'})")
    parser.add_argument("--stream-source", choices=("running", "enrolled", "enrolled-f", "enrolled-z", "enrolled-register"),
                        default="running",
                        help="stream path: the source speaker learnt as they speak (vc-live's default), "
                             "known from their enrolment half (vc-live --source), or with their f and only the "
                             "named part enrolled (z's statistics, the pitch register; enrolled-f: f alone): "
                             "which of the running estimates costs what")
    return parser


def _partly(speaker, stream_source: str):
    """The enrolled source with only what `stream_source` names kept (the rest estimated as it speaks)."""
    if speaker is None or stream_source == "enrolled":
        return speaker
    keep = stream_source.split("-", 1)[1]
    return dataclasses.replace(speaker, register=speaker.register if keep == "register" else None,
                               z_stats=speaker.z_stats if keep == "z" else None)


def settings_of(args):
    """The conversion settings the command line names, the library's defaults for the rest."""
    from vc.cli.args import conversion_settings

    match = {} if args.match in (None, "none") else {"exemplar_match": args.match}
    return conversion_settings(args, "eval_conversion", **match)


def protocol_speakers(corpus_dir: str, split: str, n_speakers: int, *, tool: str = "eval_conversion") -> dict[str, list]:
    """The first `n_speakers` speakers of the split (by name) with 4+ utterances: speaker -> utterances."""
    from training.data.corpora import open_corpus

    by_speaker: dict[str, list] = {}
    for utt in open_corpus(corpus_dir).utterances(split):
        by_speaker.setdefault(utt.speaker, []).append(utt)
    speakers = [s for s in sorted(by_speaker) if len(by_speaker[s]) >= 4][:n_speakers]
    if len(speakers) < 2:
        raise SystemExit(f"{tool}: need 2+ {split} speakers with 4+ utterances in {corpus_dir}")
    return {s: by_speaker[s] for s in speakers}


def conversion_pairs(held_out: dict[str, list], targets_per_source: int, utterances: int):
    """(source, target, utterance) of the protocol: each speaker to the next `targets_per_source` speakers in
    turn, `utterances` of its held-out half to each, taken round-robin."""
    speakers = list(held_out)
    for i, source in enumerate(speakers):
        others = speakers[i + 1:] + speakers[:i]
        for k, target in enumerate(others[:targets_per_source]):
            for j in range(utterances):
                yield source, target, held_out[source][(k * utterances + j) % len(held_out[source])]


class Converters:
    """Both conversion paths with one set of settings: the file path (`vc.convert`'s core) and the streaming
    engine fed as vc-live feeds it, one engine per (target, known source, strength), reset per utterance."""

    def __init__(self, model, code: dict, settings, stream_mode: dict, stream_source: str):
        self.model, self.code, self.settings = model, code, settings
        self.stream_mode, self.stream_source = stream_mode, stream_source
        self._engines: dict = {}

    def _engine(self, target, source, strength):
        known = source if self.stream_source != "running" else None
        key = (target, known, strength)
        if key not in self._engines:
            from vc.engine import StreamingConverter

            self._engines[key] = StreamingConverter(
                self.model, self.code[target], settings=self.settings, strength=strength,
                source=_partly(self.code.get(known), self.stream_source), **self.stream_mode)
        self._engines[key].reset()
        return self._engines[key]

    def convert(self, path: str, source: str, target: str, audio: np.ndarray, strength: float | None = None):
        from vc.conversion import convert_at_model_rate

        strength = self.settings.strength if strength is None else strength
        if path == "file":
            return convert_at_model_rate(audio, self.code[target], self.model, settings=self.settings,
                                         strength=strength)
        return self._engine(target, source, strength).convert(audio, block=STREAM_BLOCK)

    def resynthesis(self, path: str, source: str, audio: np.ndarray) -> np.ndarray:
        """The source through the DSAE with its own enrolled code, strength 0, on the same path."""
        return self.convert(path, source, source, audio, strength=0.0)


class Judges:
    """Whisper and DNSMOS on one conversion and on what it is made from (the source, its Griffin-Lim alone,
    its reconstruction), each of the latter once per run."""

    def __init__(self, asr, mos, transcripts, source_mos, converters: Converters):
        self.asr, self.mos, self.transcripts, self.source_mos = asr, mos, transcripts, source_mos
        self.converters = converters
        self.cfg = converters.model.feature_config
        self._heard: dict = {}   # what does not depend on the target, keyed by (kind, path)

    def _once(self, key, compute):
        if key not in self._heard:
            self._heard[key] = compute()
        return self._heard[key]

    def _griffin_lim_alone(self, audio: np.ndarray) -> np.ndarray:
        from vc.dsp import log_magnitude
        from vc.stages import synthesise

        settings = self.converters.settings
        return synthesise(log_magnitude(audio, cfg=self.cfg), self.cfg, length=audio.size,
                          n_iter=settings.n_iter, momentum=settings.momentum)

    def judge(self, row: dict, path: str, utt, audio: np.ndarray, converted: np.ndarray) -> dict:
        from judges import wer

        sr, hop_length = self.cfg.sr, self.cfg.hop_length
        if self.asr is not None:
            text = utt.text or ""
            said = self.transcripts.file(utt.path)
            heard_gl = self._once(("gl", utt.path), lambda: self.asr.transcribe(self._griffin_lim_alone(audio)))
            heard_resynth = self._once((path, utt.path), lambda: self.asr.transcribe(
                self.converters.resynthesis(path, row["source"], audio)))
            row.update(text=text, transcript_source=said, transcript_gl=heard_gl, transcript_resynth=heard_resynth,
                       transcript_converted=self.asr.transcribe(converted))
            for key in ("source", "gl", "resynth", "converted"):
                row[f"wer_{key}"] = round(wer(text, row[f"transcript_{key}"]), 4) if text else None
            row["content_wer"] = round(wer(said, row["transcript_converted"]), 4) if said else None
        voiced = self._once(("voiced", utt.path), lambda: _voiced_frames(audio, sr, hop_length))
        row.update(_pitch_judged(converted, voiced, self.converters.code[row["target"]].register, sr, hop_length))
        if self.mos is not None:
            scored = self.mos.score(converted)
            row.update(dnsmos_ovrl=round(scored["ovrl"], 4), dnsmos_sig=round(scored["sig"], 4),
                       dnsmos_ovrl_source=round(self.source_mos.file(utt.path)["ovrl"], 4))
        return row


def write_details(path: Path, rows: dict[str, list]) -> None:
    names = list(rows)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path"] + list(rows[names[0]][0]))
        writer.writeheader()
        for name in names:
            writer.writerows({"path": name, **row} for row in rows[name])


def run_settings(args, settings, model) -> dict:
    """What every report repeats: the runtime's settings and the model."""
    return {**dataclasses.asdict(settings), "exemplar_match": args.match or settings.exemplar_match,
            "model_id": model.model_id, "corpus": str(args.corpus), "split": args.split}


def assemble_report(args, rows: dict[str, list], common: dict, stream_mode: dict, pitch: dict | None) -> dict:
    """One report per path; --path both nests them beside their difference and the pitch comparison."""
    reports = {name: dict(_scores(rows[name]), **_judge_scores(rows[name]), path=name, **common) for name in rows}
    if "stream" in reports:
        reports["stream"].update(stream_mode=args.stream_mode, stream_hop_ms=stream_mode["hop_ms"],
                                 stream_gate_db=stream_mode["gate_db"],
                                 stream_source=args.stream_source)
    if args.path == "both":
        report = {"file": reports["file"], "stream": reports["stream"],
                  "stream_minus_file": round(reports["stream"]["target_closer_rate"]
                                             - reports["file"]["target_closer_rate"], 4)}
        if pitch is not None:
            report["pitch"] = pitch
    else:
        report = reports[args.path]
        report.update(pitch or {})
    report["floor"] = FLOORS
    return report


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    from embedding_cache import EmbeddingCache
    from vc.audio import read_audio
    from vc.engine import MODES
    from vc.model import load_model
    from vc.speakers import enroll

    settings = settings_of(args)
    start = time.perf_counter()
    encoder, preprocess_wav = load_resemblyzer()
    model = load_model(args.model, device="cpu")
    sr = model.feature_config.sr
    by_speaker = protocol_speakers(args.corpus, args.split, args.speakers)

    def embed(audio: np.ndarray) -> np.ndarray:
        return encoder.embed_utterance(preprocess_wav(audio, source_sr=sr))

    def read(path) -> np.ndarray:
        return read_audio(path, sr=sr)[0]

    cache = not args.no_embedding_cache
    files = EmbeddingCache(embed, args.embedding_cache if cache else None, sr=sr, read_audio=read)
    asr, mos, transcripts, source_mos = open_judges(args.wer, args.dnsmos, args.judge_cache if cache else None,
                                                    sr, read, "eval_conversion")
    code, reference, held_out = {}, {}, {}
    for s, utts in by_speaker.items():
        half = len(utts) // 2
        code[s] = enroll([u.path for u in utts[:half]], model).speaker
        if args.match == "none":
            code[s] = dataclasses.replace(code[s], envelopes=None, envelope_z=None, envelope_phones=None)
        reference[s] = unit(np.mean([files.file(u.path) for u in utts[:half]], axis=0))
        held_out[s] = utts[half:]

    stream_mode = dict(MODES[args.stream_mode], gate_db=args.stream_gate_db)
    if args.stream_hop_ms is not None:
        stream_mode["hop_ms"] = args.stream_hop_ms
    converters = Converters(model, code, settings, stream_mode, args.stream_source)
    judging = Judges(asr, mos, transcripts, source_mos, converters)
    paths = ("file", "stream") if args.path == "both" else (args.path,)
    rows: dict[str, list] = {name: [] for name in paths}
    n_audio = 0.0
    for source, target, utt in conversion_pairs(held_out, args.targets_per_source, args.utterances):
        audio = read(utt.path)
        n_audio += audio.size / sr
        e_orig = files.file(utt.path)
        for name in paths:
            converted = converters.convert(name, source, target, audio)
            e_conv = embed(converted)
            rows[name].append(judging.judge({
                "source": source, "target": target, "utterance": utt.utterance,
                "cos_target": float(e_conv @ reference[target]),
                "cos_source": float(e_conv @ reference[source]),
                "orig_cos_target": float(e_orig @ reference[target]),
                "orig_cos_source": float(e_orig @ reference[source]),
            }, name, utt, audio, converted))
    if args.details is not None:
        write_details(args.details, rows)

    common = {"speakers": len(by_speaker), "audio_seconds": round(n_audio, 1), **run_settings(args, settings, model),
              "embedded_files": {"computed": files.misses, "cached": files.hits},
              "judges": ["resemblyzer"] + [j.name for j in (asr, mos) if j is not None]}
    if asr is not None:
        common["whisper_cpu"] = asr.cpu
    if transcripts is not None:
        common["transcribed_files"] = {"computed": transcripts.misses, "cached": transcripts.hits}
    if source_mos is not None:
        common["dnsmos_files"] = {"computed": source_mos.misses, "cached": source_mos.hits}
    pitch = None
    if "stream" in paths:
        pitch = pitch_agreement([u.path for utts in by_speaker.values() for u in utts], model)
    report = assemble_report(args, rows, common, stream_mode, pitch)
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
