"""Feature extraction throughput: this project's path against a straightforward librosa one.

    python tools/bench_features.py [--corpus data/open-corpus] [--limit N] [--jobs 2] [--repeat 3] [--json]

Both sides do the same work on the same files with the same number of worker processes:
read, downmix, resample to 16 kHz (soxr HQ on both sides), log-magnitude STFT (n_fft 400, hop 160,
Hann, centred), and deliver the (frames, 200) float32 array to the parent process.

* ours: ``training.data.features.FeatureExtractor``, exactly what ``vc-features`` runs
  (soundfile/SPHERE + soxr + the C++ kernel in worker processes, features handed back through
  shard files);
* librosa: ``librosa.load(path, sr=16000)``, ``librosa.stft``, ``np.abs``, ``np.log(np.maximum(...))``
  in a ``ProcessPoolExecutor`` of the same size, results returned by ``map``.

Pools are started and warmed up (real calls on every worker) before timing, so import and start-up
costs are left out on both sides; the timed runs alternate between the sides. Throughput is
seconds of audio per wall-clock second; the best of ``--repeat`` runs of each side counts.
``features_vs_librosa`` is ours / librosa by wall time (the figure asked for);
``features_vs_librosa_cpu`` is the same ratio by CPU time of workers and parent, which other load
on the machine disturbs far less (``load_average_1min`` says how busy the machine was).
``max_abs_log_difference`` compares both feature sets on some files where the magnitude is above
1e-3 (below that both are dominated by rounding near the floor).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from training.data import features as feature_module  # noqa: E402
from training.data.corpora import CorpusError, open_corpus  # noqa: E402
from vc.dsp import FeatureConfig  # noqa: E402

CONFIG = FeatureConfig()


def librosa_features(path: str) -> np.ndarray | None:
    import librosa
    try:
        y, _ = librosa.load(path, sr=CONFIG.sr)
    except Exception:  # noqa: BLE001 - a bad file costs both sides the same: nothing
        return None
    if len(y) < CONFIG.n_fft:
        return None
    spectrum = librosa.stft(y, n_fft=CONFIG.n_fft, hop_length=CONFIG.hop_length,
                            win_length=CONFIG.win_length, window=CONFIG.window, center=CONFIG.center,
                            pad_mode="constant")
    return np.log(np.maximum(np.abs(spectrum), CONFIG.log_floor))[1:].T.astype(np.float32)


def _init_librosa():
    import librosa  # noqa: F401 - the import is the expensive part; keep it out of the timing


def _cpu_seconds(pids) -> float:
    """User + system CPU time of processes (Linux /proc), plus this process's own."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick   # utime, stime
    return total


def _consume(results, keep: set[int]) -> tuple[list, dict]:
    """Frame counts of all results (None for a failed file) and the arrays at the ``keep`` indices.

    Both sides drop the other arrays at once, as a real consumer that writes them out would: keeping
    gigabytes of results alive would time the memory growth of the parent instead.
    """
    counts, kept = [], {}
    for i, features in enumerate(results):
        counts.append(None if features is None else features.shape[0])
        if i in keep:
            kept[i] = features
    return counts, kept


def time_both(paths: list[str], jobs: int, repeat: int, keep: set[int]) -> dict:
    """Best wall and CPU time, frame counts and kept arrays of each side. The sides alternate, so
    that a change in the machine's load affects both alike; CPU time (workers and parent) is what
    the work costs whatever else runs on the machine."""
    from concurrent.futures import ProcessPoolExecutor

    chunk = max(1, min(32, len(paths) // (8 * jobs)))  # the chunking FeatureExtractor uses
    context = multiprocessing.get_context("forkserver")
    best = {}
    with feature_module.FeatureExtractor(CONFIG, jobs=jobs, min_frames=1) as extractor, \
            ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_librosa) as pool:
        # Real calls on every worker first, so start-up, imports and FFT plans are not timed.
        list(extractor.map([paths[0]] * (2 * jobs)))
        list(pool.map(librosa_features, [paths[0]] * (2 * jobs), chunksize=1))
        sides = {
            "ours": (lambda: (features for features, _ in extractor.map(paths)),
                     list(extractor.executor._processes)),
            "librosa": (lambda: pool.map(librosa_features, paths, chunksize=chunk),
                        list(pool._processes)),
        }
        for _ in range(repeat):
            for name, (results, pids) in sides.items():
                cpu0, start = _cpu_seconds(pids), time.perf_counter()
                counts, kept = _consume(results(), keep)
                wall, cpu = time.perf_counter() - start, _cpu_seconds(pids) - cpu0
                old = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(old[0], wall), min(old[1], cpu), counts, kept)
    return best


def run(corpus_path: str, limit: int | None, jobs: int, repeat: int) -> dict:
    corpus = open_corpus(corpus_path)
    utts = corpus.utterances()
    if not utts:
        raise CorpusError(f"{corpus_path}: no utterances")
    if limit and limit < len(utts):
        # Evenly spaced, so every engine/speaker of the corpus is represented.
        picks = np.linspace(0, len(utts) - 1, limit).round().astype(int)
        utts = [utts[i] for i in picks]
    paths = [str(u.path) for u in utts]
    keep = set(range(0, len(paths), max(1, len(paths) // 20)))

    load_before = os.getloadavg()[0]
    timings = time_both(paths, jobs, repeat, keep)
    ours_wall, ours_cpu, ours_counts, ours = timings["ours"]
    librosa_wall, librosa_cpu, theirs_counts, theirs = timings["librosa"]

    used = [i for i, (a, b) in enumerate(zip(ours_counts, theirs_counts))
            if a is not None and b is not None]
    frames = sum(ours_counts[i] for i in used)
    # Frame count times hop is the 16 kHz duration to within one hop per file.
    audio_seconds = frames * CONFIG.hop_length / CONFIG.sr
    diffs = []
    for i in sorted(keep):
        a, b = ours[i], theirs[i]
        if a is None or b is None:
            continue
        if a.shape != b.shape:
            diffs.append(float("inf"))
            continue
        mask = b > np.log(1e-3)
        if mask.any():
            diffs.append(float(np.abs(a - b)[mask].max()))
    ours_rate = audio_seconds / ours_wall
    librosa_rate = audio_seconds / librosa_wall
    return {
        "features_vs_librosa": round(ours_rate / librosa_rate, 3),
        "ours_audio_seconds_per_second": round(ours_rate, 1),
        "librosa_audio_seconds_per_second": round(librosa_rate, 1),
        "features_vs_librosa_cpu": round(librosa_cpu / ours_cpu, 3),
        "ours_wall_seconds": round(ours_wall, 4),
        "librosa_wall_seconds": round(librosa_wall, 4),
        "ours_cpu_seconds": round(ours_cpu, 3),
        "librosa_cpu_seconds": round(librosa_cpu, 3),
        "cpus": os.cpu_count(),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "files": len(paths),
        "files_compared": len(used),
        "audio_seconds": round(audio_seconds, 1),
        "jobs": jobs,
        "repeat": repeat,
        "max_abs_log_difference": round(max(diffs), 6) if diffs else None,
        "corpus": str(corpus.root),
        "corpus_kind": corpus.kind,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(REPO / "data" / "open-corpus"),
                   help="corpus directory (default data/open-corpus)")
    p.add_argument("--limit", type=int, help="use at most N utterances (evenly spaced)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes on each side (default 2)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per side; the best counts")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    try:
        result = run(args.corpus, args.limit, max(1, args.jobs), max(1, args.repeat))
    except CorpusError as exc:
        print(f"bench_features: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:34s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
