"""An open multi-speaker corpus synthesised with Debian's speech synthesisers: the build.

Voices come from espeak-ng, flite and festival (training.data.voices).  Many nominal voices sound alike,
so every candidate voice first reads the two shared sentences and is kept only when it sounds like a new
speaker (training.data.distinct).  Kept voices then read their own sentences.

Layout of OUT:
    OUT/<speaker>/<utterance>.wav   16 kHz mono 16-bit PCM, 2-5 s, ~100 ms silence at each end
    OUT/metadata.csv                speaker,utterance,path,text,engine,voice,gender,split
    OUT/summary.json                counts, splits, durations, the distinctness check and its figures
    OUT/.work/                      probes, per-utterance records and the private espeak-ng data;
                                    lets an interrupted build resume without redoing finished files
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from training.data.distinct import (DEFAULT_THRESHOLD, ENVELOPE_SCALE_DB, PITCH_SCALE_ST, SAMPLE_RATE,
                                    SPREAD_SCALE_ST, describe_audio, frame_db, pairwise_distances,
                                    select_distinct)
from training.data.sentences import SHARED_SENTENCES, sentence_for, vocabulary_size, word_count
from training.data.voices import (ENGINES, CorpusError, Voice, candidate_voices, check_engines,
                                  prepare_espeak_data, synthesise_raw)
from vc.files import atomic_write

FORMAT_VERSION = 1
MIN_SECONDS = 2.0
MAX_SECONDS = 5.0
EDGE_SILENCE_SECONDS = 0.1
TARGET_RMS_DBFS = -20.0
MAX_ATTEMPTS = 12
METADATA_COLUMNS = ("speaker", "utterance", "path", "text", "engine", "voice", "gender", "split")



def postprocess(raw_path: Path) -> np.ndarray:
    """Read, mix to mono, resample to 16 kHz, trim edge silence to 100 ms and level to -20 dBFS."""
    y, sr = sf.read(str(raw_path), dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != SAMPLE_RATE:
        y = soxr.resample(y, sr, SAMPLE_RATE, quality="HQ").astype(np.float32)
    frame, hop = 400, 160
    db = frame_db(y, frame, hop)
    active = np.flatnonzero(db > db.max() - 40.0)
    if len(active) == 0 or db.max() < -80:
        return np.zeros(0, dtype=np.float32)
    start = active[0] * hop
    end = min(len(y), active[-1] * hop + frame)
    speech = y[start:end]
    level_db = 10.0 * np.log10(np.mean(10.0 ** (db[active] / 10.0)))
    speech = speech * 10.0 ** ((TARGET_RMS_DBFS - level_db) / 20.0)
    peak = float(np.max(np.abs(speech)))
    if peak > 0.97:
        speech = speech * (0.97 / peak)
    edge = np.zeros(int(EDGE_SILENCE_SECONDS * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([edge, speech.astype(np.float32), edge])


def write_wav_atomic(path: Path, audio: np.ndarray) -> None:
    with atomic_write(path) as fh:
        sf.write(fh, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def duration_ok(audio: np.ndarray) -> bool:
    return MIN_SECONDS <= len(audio) / SAMPLE_RATE <= MAX_SECONDS


# ----------------------------------------------------------------------------------------------
# Workers (run in a process pool; every result lands on disk atomically)

def _probe_worker(voice: Voice, work: str, espeak_data: str | None) -> dict:
    """Synthesise the shared sentences with one candidate voice and describe it (cached)."""
    work_dir = Path(work)
    probe_dir = work_dir / "probes" / voice.speaker
    record_path = probe_dir / "probe.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("voice") == voice.describe() and (
                record.get("rejected") or all((probe_dir / f"sa{i + 1}.wav").is_file()
                                              for i in range(len(SHARED_SENTENCES)))):
            return record
    with tempfile.TemporaryDirectory(dir=work_dir / "tmp") as raw:
        try:
            raws = synthesise_raw(voice, SHARED_SENTENCES, Path(raw),
                                  Path(espeak_data) if espeak_data else None)
            clips = [postprocess(p) for p in raws]
        except CorpusError as error:
            # Not cached: a failure may be passing (a timeout on a busy machine); retry on resume.
            return {"voice": voice.describe(), "rejected": f"synthesis failed: {error}"}
    durations = [round(len(c) / SAMPLE_RATE, 3) for c in clips]
    record = {"voice": voice.describe(), "durations": durations}
    if not all(duration_ok(c) for c in clips):
        record["rejected"] = f"shared sentences last {durations} s, outside {MIN_SECONDS}-{MAX_SECONDS} s"
    else:
        description = describe_audio(clips)
        record["description"] = description
        if description["pitch_median_st"] is None:
            record["rejected"] = "too few voiced frames to measure pitch"
        else:
            for i, clip in enumerate(clips):
                write_wav_atomic(probe_dir / f"sa{i + 1}.wav", clip)
            words = sum(word_count(s) for s in SHARED_SENTENCES)
            record["seconds_per_word"] = round(
                (sum(durations) - 2 * EDGE_SILENCE_SECONDS * len(clips)) / words, 4)
    _atomic_write_text(record_path, json.dumps(record))
    return record


def _utterance_ids(utterances: int) -> list[str]:
    return [f"u{i:03d}" for i in range(utterances)]


def _word_range(seconds_per_word: float) -> tuple[int, int]:
    speech_min = MIN_SECONDS + 0.35 - 2 * EDGE_SILENCE_SECONDS
    speech_max = MAX_SECONDS - 0.45 - 2 * EDGE_SILENCE_SECONDS
    low = max(3, math.ceil(speech_min / seconds_per_word))
    high = max(low, math.floor(speech_max / seconds_per_word))
    return low, high


def _speaker_worker(voice: Voice, out: str, work: str, espeak_data: str | None, seed: int,
                    utterances: int, seconds_per_word: float) -> dict:
    """Synthesise all missing utterances of one speaker; returns how many were (re)made."""
    out_dir, work_dir = Path(out), Path(work)
    speaker_dir = out_dir / voice.speaker
    record_dir = work_dir / "utterances" / voice.speaker
    ids = _utterance_ids(utterances)
    made = 0
    # The shared sentences were already recorded by the probe.
    for i in range(min(len(SHARED_SENTENCES), utterances)):
        wav, record = speaker_dir / f"{ids[i]}.wav", record_dir / f"{ids[i]}.json"
        if wav.is_file() and record.is_file():
            continue
        audio, _ = sf.read(str(work_dir / "probes" / voice.speaker / f"sa{i + 1}.wav"),
                           dtype="float32")
        write_wav_atomic(wav, audio)
        _atomic_write_text(record, json.dumps({"text": SHARED_SENTENCES[i], "attempt": 0,
                                               "seconds": round(len(audio) / SAMPLE_RATE, 3)}))
        made += 1
    pending = {i: 0 for i in range(len(SHARED_SENTENCES), utterances)
               if not ((speaker_dir / f"{ids[i]}.wav").is_file()
                       and (record_dir / f"{ids[i]}.json").is_file())}
    low, high = _word_range(seconds_per_word)
    bounds = {i: [low, high] for i in pending}
    while pending:
        order = sorted(pending)
        texts = [sentence_for(seed, voice.speaker, i, pending[i], *bounds[i]) for i in order]
        with tempfile.TemporaryDirectory(dir=work_dir / "tmp") as raw:
            raws = synthesise_raw(voice, texts, Path(raw), Path(espeak_data) if espeak_data else None)
            for i, text, raw_path in zip(order, texts, raws):
                audio = postprocess(raw_path)
                seconds = len(audio) / SAMPLE_RATE
                if duration_ok(audio):
                    write_wav_atomic(speaker_dir / f"{ids[i]}.wav", audio)
                    _atomic_write_text(record_dir / f"{ids[i]}.json", json.dumps(
                        {"text": text, "attempt": pending[i], "seconds": round(seconds, 3)}))
                    made += 1
                    del pending[i]
                    continue
                pending[i] += 1
                if pending[i] >= MAX_ATTEMPTS:
                    raise CorpusError(f"{voice.describe()}: no sentence for {ids[i]} lasted "
                                      f"{MIN_SECONDS}-{MAX_SECONDS} s after {MAX_ATTEMPTS} attempts")
                # Steer the next sentence's length towards the range.
                if seconds < MIN_SECONDS:
                    bounds[i][0] += 1
                    bounds[i][1] = max(bounds[i][1], bounds[i][0])
                else:
                    bounds[i][1] = max(2, bounds[i][1] - 1)
                    bounds[i][0] = min(bounds[i][0], bounds[i][1])
    return {"speaker": voice.speaker, "made": made}


# ----------------------------------------------------------------------------------------------
# Splits and the build

def assign_splits(voices, seed: int) -> dict[str, str]:
    """Split by speaker, balanced across genders: test >= 16 and dev >= 8 speakers for big corpora."""
    n = len(voices)
    if n < 3:
        raise CorpusError(f"need at least 3 speakers for train/dev/test splits, got {n}")
    if n >= 48:
        n_test, n_dev = max(16, round(0.2 * n)), max(8, round(0.1 * n))
    else:
        n_test, n_dev = max(1, round(0.2 * n)), max(1, round(0.1 * n))
    rng = random.Random(f"split:{seed}")
    groups = {}
    for voice in sorted(voices, key=lambda v: v.speaker):
        groups.setdefault(voice.gender, []).append(voice.speaker)
    for members in groups.values():
        rng.shuffle(members)
    interleaved = []
    queues = [groups[g] for g in sorted(groups)]
    while any(queues):
        for queue in queues:
            if queue:
                interleaved.append(queue.pop(0))
    splits = {}
    for position, speaker in enumerate(interleaved):
        splits[speaker] = "test" if position < n_test else "dev" if position < n_test + n_dev else "train"
    return splits


@dataclass
class BuildConfig:
    speakers: int = 80
    utterances: int = 40
    seed: int = 0
    engines: tuple = ENGINES
    generated: int = 120
    stock: bool = True
    threshold: float = DEFAULT_THRESHOLD

    def key(self) -> dict:
        d = asdict(self)
        d["engines"] = list(self.engines)
        d["format_version"] = FORMAT_VERSION
        return d


def _clean_stray_temporaries(out: Path) -> int:
    removed = 0
    # .part: vc.files.atomic_write's temporaries; .tmp: those of builds before it
    patterns = ("*/.*.part", ".work/**/.*.part", "*/.*.tmp", ".work/**/.*.tmp")
    for path in [p for pattern in patterns for p in out.glob(pattern)]:
        path.unlink(missing_ok=True)
        removed += 1
    tmp_dir = out / ".work" / "tmp"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    return removed


def _progress(iterable, total, desc, enabled):
    """A tqdm bar over iterable (or a manual one when iterable is None); None/iterable if disabled."""
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit="voice", file=sys.stderr)


def build_corpus(out, config: BuildConfig = BuildConfig(), jobs: int | None = None,
                 candidates: list[Voice] | None = None, progress: bool = True) -> dict:
    """Build (or finish) the corpus in OUT; returns the summary that is also written to summary.json."""
    started = time.time()
    out = Path(out)
    jobs = jobs or os.cpu_count() or 1
    candidates = _checked_candidates(config, candidates)
    work, stray, espeak_data = _prepare_work_dir(out, config, candidates)

    probe_started = time.time()
    selection = _probe_and_select(candidates, config, work, espeak_data, jobs, progress)
    probe_seconds = time.time() - probe_started
    voices = [candidates[i] for i in selection.kept]

    synth_started = time.time()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_speaker_worker, v, str(out), str(work), espeak_data, config.seed,
                               config.utterances, selection.records[i]["seconds_per_word"])
                   for v, i in zip(voices, selection.kept)]
        made = 0
        for future in _progress(as_completed(futures), len(futures), "synthesising speakers",
                                progress):
            made += future.result()["made"]
    synth_seconds = time.time() - synth_started
    shutil.rmtree(work / "tmp", ignore_errors=True)

    # Metadata and summary, each written atomically at the end.
    splits = assign_splits(voices, config.seed)
    seconds = _write_metadata(out, work, voices, splits, config.utterances)
    summary = _summary(config, candidates, selection, voices, splits, seconds)
    summary["build"] = {"jobs": jobs, "files_made_this_run": made, "stray_temporaries_removed": stray,
                        "probe_seconds": round(probe_seconds, 1), "synthesis_seconds": round(synth_seconds, 1),
                        "wall_seconds": round(time.time() - started, 1)}
    _atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _checked_candidates(config: BuildConfig, candidates: list[Voice] | None) -> list[Voice]:
    if config.utterances < len(SHARED_SENTENCES):
        raise CorpusError(f"--utterances must be >= {len(SHARED_SENTENCES)} (the shared sentences)")
    if config.speakers < 3:
        raise CorpusError("--speakers must be >= 3 (train, dev and test need one each)")
    if candidates is None:
        check_engines(config.engines)
        candidates = candidate_voices(config.seed, config.engines, config.generated, config.stock)
    else:
        check_engines(sorted({v.engine for v in candidates}))
    if len({v.speaker for v in candidates}) != len(candidates):
        # Equal voices under different ids are fine (the distinctness check rejects them); equal ids
        # would share a directory.
        raise CorpusError("candidate speaker ids are not unique")
    return candidates


def _prepare_work_dir(out: Path, config: BuildConfig, candidates: list[Voice]) -> tuple[Path, int, str | None]:
    """OUT/.work checked against (or stamped with) the settings; (work dir, stray temporaries removed,
    the private espeak-ng data or None)."""
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".work"
    work.mkdir(exist_ok=True)
    config_key = dict(config.key(), candidates=[v.describe() for v in candidates])
    config_path = work / "config.json"
    if config_path.is_file():
        previous = json.loads(config_path.read_text())
        if previous != config_key:
            raise CorpusError(f"{out} holds a build with other settings; use a new directory "
                              f"or delete it")
    else:
        _atomic_write_text(config_path, json.dumps(config_key, indent=1))
    stray = _clean_stray_temporaries(out)
    (work / "tmp").mkdir()
    espeak_data = None
    if any(v.engine == "espeak-ng" for v in candidates):
        espeak_data = str(prepare_espeak_data(work, candidates))
    return work, stray, espeak_data


@dataclass
class _Selection:
    records: dict      # candidate index -> probe record
    usable: list       # probed candidates that can be described, in priority order
    kept: list         # candidate indices of the kept voices
    rejected: dict     # index into usable -> (nearest kept index into usable, distance)


def _probe_and_select(candidates, config: BuildConfig, work: Path, espeak_data, jobs: int,
                      progress: bool) -> _Selection:
    """Probe candidates, in priority order and in chunks, until enough distinct voices are found.

    Greedy selection over a prefix gives the same voices as over the whole pool once it has
    `speakers` of them, so stopping early changes nothing but the time.
    """
    records: dict[int, dict] = {}
    kept, rejected_local, usable = [], {}, []
    bar = _progress(None, len(candidates), "probing voices", progress)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        next_index = 0
        while next_index < len(candidates):
            chunk = max(4 * jobs, int(1.5 * (config.speakers - len(kept))))
            indices = range(next_index, min(len(candidates), next_index + chunk))
            next_index = indices.stop
            futures = {pool.submit(_probe_worker, candidates[i], str(work), espeak_data): i
                       for i in indices}
            for future in as_completed(futures):
                records[futures[future]] = future.result()
                if bar is not None:
                    bar.update(1)
            usable = [i for i in range(next_index) if "rejected" not in records[i]]
            kept_local, rejected_local = select_distinct(
                [records[i]["description"] for i in usable], config.speakers, config.threshold)
            kept = [usable[k] for k in kept_local]
            if len(kept) >= config.speakers:
                break
    if bar is not None:
        bar.close()
    if len(kept) < config.speakers:
        raise CorpusError(f"only {len(kept)} of {len(candidates)} candidate voices are distinct "
                          f"(threshold {config.threshold}); wanted {config.speakers}: raise "
                          f"--candidates or lower --speakers")
    return _Selection(records, usable, kept, rejected_local)


def _write_metadata(out: Path, work: Path, voices, splits: dict, utterances: int) -> np.ndarray:
    """OUT/metadata.csv from the per-utterance records; the utterances' durations in seconds."""
    rows, seconds = [], []
    for voice in sorted(voices, key=lambda v: v.speaker):
        for utterance in _utterance_ids(utterances):
            record = json.loads((work / "utterances" / voice.speaker / f"{utterance}.json").read_text())
            rows.append({"speaker": voice.speaker, "utterance": utterance,
                         "path": f"{voice.speaker}/{utterance}.wav", "text": record["text"],
                         "engine": voice.engine, "voice": voice.describe(), "gender": voice.gender,
                         "split": splits[voice.speaker]})
            seconds.append(record["seconds"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METADATA_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write_text(out / "metadata.csv", buffer.getvalue())
    return np.asarray(seconds)


_DISTINCTNESS_METHOD = (
    "each candidate reads the shared sentences; description = long-term average "
    "log mel spectrum (40 bands, 60-7600 Hz, level removed, dB) + YIN pitch median "
    "and interquartile range in semitones (loud, pitch-stable frames); distance = "
    f"sqrt((envelope RMS dB / {ENVELOPE_SCALE_DB})^2 + (median pitch st / "
    f"{PITCH_SCALE_ST})^2 + (pitch IQR st / {SPREAD_SCALE_ST})^2); greedy over the "
    "candidates in priority order (flite, festival, then a seeded mix of espeak-ng "
    "stock and generated variants), keeping a voice iff its distance to every kept "
    "voice >= threshold")


def _distinctness(config: BuildConfig, candidates, selection: _Selection, voices) -> dict:
    """The distinctness check's settings, figures and every rejected candidate with its reason."""
    records, usable = selection.records, selection.usable
    pairwise = pairwise_distances([records[i]["description"] for i in selection.kept])
    rejected = []
    for local, (nearest, distance) in sorted(selection.rejected.items()):
        rejected.append({"voice": candidates[usable[local]].speaker,
                         "nearest": candidates[usable[nearest]].speaker,
                         "distance": round(distance, 4)})
    for i in sorted(records):
        if "rejected" in records[i]:
            rejected.append({"voice": candidates[i].speaker, "reason": records[i]["rejected"]})
    return {
        "method": _DISTINCTNESS_METHOD,
        "threshold": config.threshold,
        "candidates": len(candidates),
        "probed": len(records),
        "usable_probed": len(usable),
        "kept": len(voices),
        "kept_min_pairwise": round(float(pairwise.min()), 4) if len(pairwise) else None,
        "kept_median_pairwise": round(float(np.median(pairwise)), 4) if len(pairwise) else None,
        "rejected": rejected,
    }


def _summary(config: BuildConfig, candidates, selection: _Selection, voices, splits: dict,
             seconds: np.ndarray) -> dict:
    ids = _utterance_ids(config.utterances)
    return {
        "format_version": FORMAT_VERSION,
        "sample_rate": SAMPLE_RATE,
        "config": config.key(),
        "speakers": len(voices),
        "utterances_per_speaker": config.utterances,
        "files": int(len(seconds)),
        "hours": round(float(seconds.sum()) / 3600, 4),
        "seconds": {"min": round(float(seconds.min()), 3),
                    "median": round(float(np.median(seconds)), 3),
                    "max": round(float(seconds.max()), 3)},
        "speakers_per_engine": {e: sum(v.engine == e for v in voices) for e in ENGINES},
        "speakers_per_gender": {g: sum(v.gender == g for v in voices) for g in ("m", "f", "unknown")},
        "splits": {s: sorted(k for k, v in splits.items() if v == s) for s in ("train", "dev", "test")},
        "split_sizes": {s: sum(v == s for v in splits.values()) for s in ("train", "dev", "test")},
        "shared_sentences": {ids[i]: SHARED_SENTENCES[i] for i in range(len(SHARED_SENTENCES))},
        "vocabulary_size": vocabulary_size(),
        "distinctness": _distinctness(config, candidates, selection, voices),
        "voices": {v.speaker: {"engine": v.engine, "voice": v.describe(), "gender": v.gender,
                               "split": splits[v.speaker], "description": selection.records[i]["description"]}
                   for v, i in zip(voices, selection.kept)},
    }
