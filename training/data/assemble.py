"""One training corpus from several: ``vc-corpus assemble OUT SOURCE [SOURCE ...]``.

Every source is any corpus :func:`training.data.corpora.open_corpus` recognises (speechocean762, LibriSpeech
and its excerpts, VCTK, TIMIT, folder trees, the open corpus). The result is written in the open corpus's
format, so every command that reads a corpus reads it unchanged:

    OUT/metadata.csv     speaker,utterance,path,text,source,gender,split,age
    OUT/audio/<speaker>/<utterance>.<ext>   symbolic links to the sources (or copies with copy=True)
    OUT/summary.json     sources, split sizes, skipped files with their reasons

Speaker ids are prefixed by their source's name (``speechocean762-0001``), so two corpora never merge two
people. The sources' own splits are ignored (unless a source is named in ``keep_splits``): held-out
speakers are drawn again, across sources, sexes and age groups, from the speakers with enough utterances
to enrol on some and convert others; everyone else trains. The draw ranks speakers by the SHA-256 of their
prefixed id, so it is the same on every machine, and adding a kept source does not change it.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from training.data.corpora import CorpusError, Utterance, open_corpus

__all__ = ["AssembleConfig", "assemble_corpus", "parse_source", "METADATA_COLUMNS"]

METADATA_COLUMNS = ("speaker", "utterance", "path", "text", "source", "gender", "split", "age")
CHILD_AGE = 16          # speechocean762's children are 5-15 years old, its adults 16 and over
MIN_SECONDS = 0.25      # shorter than one 200 ms segment plus the STFT's edges: nothing to learn from


@dataclass(frozen=True)
class AssembleConfig:
    test_speakers: int = 40
    dev_speakers: int = 20
    min_utterances: int = 8     # a held-out speaker needs some files to enrol on and others to convert
    copy: bool = False          # copy audio instead of linking it
    # Sources whose speakers keep the split their own corpus gives them (an open corpus whose test
    # speakers must stay unseen so that its figures stay comparable); they are left out of the draw.
    keep_splits: tuple[str, ...] = ()


def parse_source(text: str) -> tuple[str | None, str]:
    """``PATH`` or ``NAME=PATH``; NAME prefixes the speaker ids (default: the corpus's name)."""
    name, sep, path = text.partition("=")
    if sep and name and "/" not in name and not os.path.exists(text):
        return name, path
    return None, text


def _stratum(source: str, utt: Utterance) -> tuple:
    age_group = "unknown" if utt.age is None else "child" if utt.age < CHILD_AGE else "adult"
    return source, utt.gender or "unknown", age_group


def _rank(speaker: str) -> str:
    return hashlib.sha256(speaker.encode("utf-8")).hexdigest()


def _quotas(sizes: dict[tuple, int], total: int) -> dict[tuple, int]:
    """Split ``total`` over strata in proportion to their sizes (largest remainder), every stratum
    getting one first while ``total`` allows, none more than it holds."""
    quotas = {k: 0 for k in sizes}
    available = sum(sizes.values())
    total = min(total, available)
    for k in sorted(sizes, key=lambda k: -sizes[k]):
        if sum(quotas.values()) < total and sizes[k] > 0:
            quotas[k] = 1
    while sum(quotas.values()) < total:
        # the stratum furthest below its proportional share gets the next speaker
        k = max((k for k in sizes if quotas[k] < sizes[k]),
                key=lambda k: (total * sizes[k] / available - quotas[k], sizes[k], k))
        quotas[k] += 1
    return quotas


def draw_splits(speakers: dict[str, dict], config: AssembleConfig) -> dict[str, str]:
    """speaker -> split. ``speakers`` maps each prefixed id to {"stratum": ..., "utterances": n} and,
    for speakers of kept sources, "own_split"."""
    eligible = defaultdict(list)
    for s, info in speakers.items():
        if "own_split" not in info and info["utterances"] >= config.min_utterances:
            eligible[info["stratum"]].append(s)
    for members in eligible.values():
        members.sort(key=lambda s: (_rank(s), s))
    splits = {s: info.get("own_split", "train") for s, info in speakers.items()}
    for split, wanted in (("test", config.test_speakers), ("dev", config.dev_speakers)):
        quotas = _quotas({k: len(v) for k, v in eligible.items()}, wanted)
        for k, n in quotas.items():
            for s in eligible[k][:n]:
                splits[s] = split
            eligible[k] = eligible[k][n:]
    return splits


def _check_audio(path: Path) -> str | None:
    """None when ``path`` holds usable audio, else the reason (read from the header only: fast)."""
    try:
        info = sf.info(str(path))
    except Exception as error:  # soundfile raises several types for damaged or foreign files
        # soundfile's message repeats the path ("Error opening '...': Format not recognised.")
        detail = (str(error).splitlines() or [type(error).__name__])[0].rpartition("': ")[2]
        return f"unreadable ({detail.rstrip('.') or type(error).__name__})"
    if info.samplerate <= 0 or info.frames <= 0:
        return "no audio frames"
    if info.frames / info.samplerate < MIN_SECONDS:
        return f"too short ({info.frames / info.samplerate:.3f} s < {MIN_SECONDS} s)"
    return None


def _collect(sources: list[tuple[str | None, str]]):
    """(name, utterance) pairs of all sources, with the names checked to be distinct."""
    collected, names = [], {}
    for name, path in sources:
        corpus = open_corpus(path)
        name = name or corpus.name
        if name in names:
            raise CorpusError(f"{path}: source name {name!r} is already used by {names[name]} "
                              f"(name them: NAME=PATH)")
        names[name] = path
        collected += [(name, u) for u in corpus.utterances()]
    return collected, names


def _place(out: Path, speaker: str, utt: Utterance, copy: bool) -> str:
    rel = Path("audio") / speaker / (utt.utterance.replace("/", "__") + utt.path.suffix.lower())
    target = out / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    if copy:
        shutil.copyfile(utt.path, target)
    else:
        target.symlink_to(utt.path.resolve())
    return rel.as_posix()


def assemble_corpus(out: os.PathLike | str, sources: list[tuple[str | None, str]],
                    config: AssembleConfig = AssembleConfig(), *, log=None) -> dict:
    """Write the assembled corpus to ``out`` and return its summary. Unreadable or too-short files are
    named on ``log`` and skipped. Rerunning rewrites the corpus (links, metadata) in place."""
    from vc.files import atomic_write

    out, log = Path(out), log or sys.stderr
    if not sources:
        raise CorpusError(f"{out}: no sources to assemble")
    collected, names = _collect(sources)
    unknown = sorted(set(config.keep_splits) - set(names))
    if unknown:
        raise CorpusError(f"{out}: --keep-splits names no source: {', '.join(unknown)} "
                          f"(sources: {', '.join(names)})")
    kept, skipped = [], []
    for name, utt in collected:
        reason = _check_audio(utt.path)
        if reason:
            skipped.append({"path": str(utt.path), "reason": reason})
            print(f"vc-corpus: skipping {utt.path}: {reason}", file=log)
        else:
            kept.append((f"{name}-{utt.speaker}", name, utt))
    if not kept:
        raise CorpusError(f"{out}: none of the sources' files could be read")
    speakers = {}
    for speaker, name, utt in kept:
        info = speakers.setdefault(speaker, {"stratum": _stratum(name, utt), "utterances": 0})
        info["utterances"] += 1
        if name in config.keep_splits:
            info["own_split"] = utt.split
    splits = draw_splits(speakers, config)

    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METADATA_COLUMNS)
    for speaker, name, utt in sorted(kept, key=lambda k: (k[0], k[2].utterance)):
        rel = _place(out, speaker, utt, config.copy)
        writer.writerow([speaker, utt.utterance, rel, utt.text or "", name, utt.gender or "",
                         splits[speaker], "" if utt.age is None else utt.age])
    with atomic_write(out / "metadata.csv", "w", encoding="utf-8") as fh:
        fh.write(buffer.getvalue())
    summary = _summary(names, kept, skipped, speakers, splits, config)
    with atomic_write(out / "summary.json", "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    return summary


def _summary(names, kept, skipped, speakers, splits, config) -> dict:
    per_split = defaultdict(lambda: {"speakers": 0, "utterances": 0, "strata": defaultdict(int)})
    for speaker, info in speakers.items():
        entry = per_split[splits[speaker]]
        entry["speakers"] += 1
        entry["utterances"] += info["utterances"]
        entry["strata"]["/".join(info["stratum"])] += 1
    return {
        "sources": {name: str(Path(path).resolve()) for name, path in names.items()},
        "config": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in ((k, getattr(config, k)) for k in config.__dataclass_fields__)},
        "speakers": len(speakers),
        "utterances": len(kept),
        "splits": {s: {**v, "strata": dict(sorted(v["strata"].items()))}
                   for s, v in sorted(per_split.items())},
        "skipped": skipped,
    }
