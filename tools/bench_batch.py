"""Batch conversion speed: audio seconds converted per wall second with 1 and 2 jobs (vc-batch's path).

    python tools/bench_batch.py [--json] [--model MODEL_DIR] [--seconds 600] [--n-iter 32]

Input: test-split utterances of the open corpus (data/open-corpus) when present, else the bundled
example clips, repeated until about --seconds of audio. Floors (issue 5): 1 job >= 30x real time,
2 jobs >= 1.6 x 1 job on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def collect_inputs(corpus: Path, seconds: float, work: Path, audio_dir: Path | None = None) -> tuple[int, float]:
    """Copy (as 16 kHz mono WAV) enough utterances into work/in; returns (files, seconds)."""
    from vc.audio import AUDIO_EXTENSIONS, read_audio, write_wav

    sources: list[Path] = []
    if audio_dir is not None:
        sources = sorted(p for p in Path(audio_dir).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    elif (corpus / "metadata.csv").is_file():
        import csv

        with open(corpus / "metadata.csv", newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("split") == "test"]
        sources = [corpus / r["path"] if not Path(r["path"]).is_absolute() else Path(r["path"]) for r in rows]
    if not sources:
        sources = sorted(p for p in (REPO / "examples" / "audio").rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not sources:
        raise SystemExit("bench_batch: no input audio: build data/open-corpus or examples/ first")
    total, n = 0.0, 0
    (work / "in").mkdir(parents=True)
    while total < seconds:
        for src in sources:
            audio, _ = read_audio(src, sr=16000)
            write_wav(work / "in" / f"{n:05d}.wav", audio, 16000)
            total += audio.size / 16000
            n += 1
            if total >= seconds:
                break
    return n, total


def _cpu_seconds() -> float:
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", default=None, help="model directory (default: $VC_MODEL, else models/default)")
    parser.add_argument("--target", default=None, help="speaker.npy (default: the model's prior mean, zeros)")
    parser.add_argument("--corpus", default=str(REPO / "data" / "open-corpus"))
    parser.add_argument("--audio", default=None, help="a folder of audio files to use instead of the corpus")
    parser.add_argument("--seconds", type=float, default=600.0, help="audio to convert per run")
    parser.add_argument("--n-iter", type=int, default=32)
    args = parser.parse_args(argv)

    import numpy as np

    from vc.batch import batch_convert
    from vc.model import load_model
    from vc.speakers import save_speaker

    model = load_model(args.model, device="cpu")
    work = Path(tempfile.mkdtemp(prefix="bench_batch."))
    try:
        n_files, seconds = collect_inputs(Path(args.corpus), args.seconds, work, args.audio)
        target = args.target
        if target is None:  # the prior mean of f: a valid speaker code without any enrolment
            target = work / "target.npy"
            save_speaker(target, np.zeros(model.f_dim, np.float32))
        results, cpu = {}, {}
        load_before = os.getloadavg()[0]
        for jobs in (1, 2):
            before = _cpu_seconds()
            summary = batch_convert(work / "in", work / f"out{jobs}", target, model_dir=model.model_dir,
                                    n_iter=args.n_iter, jobs=jobs, device="cpu", progress=False)
            if summary.failed or summary.converted != n_files:
                raise SystemExit(f"bench_batch: {len(summary.failed)} file(s) failed: {summary.failed[:3]}")
            results[jobs] = summary.x_realtime
            cpu[jobs] = summary.audio_seconds / max(_cpu_seconds() - before, 1e-9)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    report = {
        "batch_x_realtime_1job": round(results[1], 2),
        "batch_x_realtime_2jobs": round(results[2], 2),
        "speedup_2jobs": round(results[2] / results[1], 3),
        "n_iter": args.n_iter,
        "files": n_files,
        "audio_seconds": round(seconds, 1),
        "cores": cores,
        "model_id": model.model_id,
        "provider": model.provider,
        # Audio seconds per CPU second (this process and its workers): what the wall-clock numbers would
        # approach on idle cores; with a busy machine (see load_average) the wall-clock numbers drop.
        "audio_per_cpu_second_1job": round(cpu[1], 2),
        "audio_per_cpu_second_2jobs": round(cpu[2], 2),
        "load_average_before": round(load_before, 2),
        "floors": {"batch_x_realtime_1job": 30, "speedup_2jobs": 1.6},
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
