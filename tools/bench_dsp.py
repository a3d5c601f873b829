"""Benchmark of the C++ DSP kernel (vc.dsp) against librosa, torch and scipy, single thread.

Times are medians of repeated runs on synthetic speech-like signals (harmonics of a gliding pitch
under a syllable-rate envelope, plus noise). Speed-ups are the other library's time divided by ours.
Griffin-Lim runs 32 iterations with momentum 0.99 from the same random phases in every library
(torchaudio is not installed: the torch baseline is the same fast Griffin-Lim loop on torch.stft
and torch.istft). Quality is spectral convergence in dB (lower is better) on the 10 s case; the
streaming figure is StreamingGriffinLim (look-ahead 3, 20 ms blocks), the whole-utterance figure
griffinlim with init="pghi", both at 32 iterations.

    python tools/bench_dsp.py            # table
    python tools/bench_dsp.py --json     # one JSON object on stdout (the table goes to stderr)
    python tools/bench_dsp.py --check    # exit 1 if a floor from the issue is missed
"""
import os

# One thread everywhere, set before numpy/torch load their thread pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import librosa  # noqa: E402
import scipy.signal  # noqa: E402
import torch  # noqa: E402

from vc import dsp  # noqa: E402

torch.set_num_threads(1)

SR, N_FFT, HOP, FLOOR = 16000, 400, 160, 1e-5
N_ITER, MOMENTUM = 32, 0.99

FLOORS = {  # key: (comparison, bound or the key it is compared with, margin)
    "stft_block_vs_librosa": (">=", 10.0),
    "stft_block_vs_torch": (">=", 3.0),
    "stft_long_vs_librosa": (">=", 1.5),
    "gl_block_vs_librosa": (">=", 5.0),
    "gl_long_vs_librosa": (">=", 2.0),
    "gl_sc_db_ours": ("<=", "gl_sc_db_librosa", 0.5),
    "gl_sc_db_ours_pghi": ("<", "gl_sc_db_ours", 0.0),
    "stream_gl_sc_db": ("<=", "whole_gl_sc_db", 1.0),
}


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    y = sum(np.sin(h * phase) / h for h in range(1, 25) if h * f0.max() < SR / 2)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.1 * envelope * y + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def median_time(fn, repeats: int, number: int = 1) -> float:
    """Median over `repeats` of the mean time of `number` back-to-back calls, in seconds.

    The default clock is this thread's CPU time: everything runs on one thread, and CPU time stays
    meaningful on a machine shared with other jobs, where wall time does not.
    """
    fn()  # warm-up: plans, caches, lazy imports
    times = []
    for _ in range(repeats):
        start = clock()
        for _ in range(number):
            fn()
        times.append((clock() - start) / number)
    return statistics.median(times)


# --- the log-magnitude in each library ------------------------------------------------------------

HANN = torch.hann_window(N_FFT)  # periodic, like librosa's
SCIPY_WINDOW = scipy.signal.get_window("hann", N_FFT)


CFG = dsp.FeatureConfig(n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, log_floor=FLOOR)


def logmag_ours(y):
    return dsp.log_magnitude(y, cfg=CFG)


def logmag_librosa(y):
    S = librosa.stft(y, n_fft=N_FFT, hop_length=HOP)
    return np.log(np.maximum(np.abs(S[1:]), FLOOR)).T


def logmag_torch(y):
    S = torch.stft(torch.from_numpy(y), N_FFT, HOP, window=HANN, center=True, pad_mode="constant",
                   return_complex=True)
    return torch.log(torch.clamp(S[1:].abs(), min=FLOOR)).T


def logmag_scipy(y):
    # boundary="zeros" is librosa's centring; scipy scales by 1/sum(window), undone here.
    _, _, S = scipy.signal.stft(y, nperseg=N_FFT, noverlap=N_FFT - HOP, nfft=N_FFT, window=SCIPY_WINDOW,
                                boundary="zeros", padded=False)
    return np.log(np.maximum(np.abs(S[1:]) * SCIPY_WINDOW.sum(), FLOOR)).T


# --- Griffin-Lim in each library ------------------------------------------------------------------

def gl_ours(mag, angles, length=None):
    return dsp.griffinlim(mag, n_iter=N_ITER, momentum=MOMENTUM, init=angles, hop_length=HOP, length=length)


def gl_librosa(mag, angles, length=None):
    # librosa draws its phases itself; RandomState(0) is what `angles` was made from (see main).
    return librosa.griffinlim(mag, n_iter=N_ITER, momentum=MOMENTUM, hop_length=HOP, random_state=0,
                              length=length)


def gl_torch(mag, angles, length=None):
    S = torch.from_numpy(mag)
    phases = torch.from_numpy(angles)
    previous = None
    beta = MOMENTUM / (1 + MOMENTUM)
    for _ in range(N_ITER):
        inverse = torch.istft(S * phases, N_FFT, HOP, window=HANN, center=True, length=length)
        rebuilt = torch.stft(inverse, N_FFT, HOP, window=HANN, center=True, pad_mode="constant",
                             return_complex=True)
        phases = rebuilt if previous is None else rebuilt - beta * previous
        phases = phases / (phases.abs() + 1e-16)
        previous = rebuilt
    return torch.istft(S * phases, N_FFT, HOP, window=HANN, center=True, length=length).numpy()


def stream_gl(mag, frames_per_push=2):
    stream = dsp.StreamingGriffinLim(n_fft=N_FFT, hop_length=HOP, n_iter=N_ITER, momentum=MOMENTUM, lookahead=3)
    out = [stream.push(mag[:, i:i + frames_per_push]) for i in range(0, mag.shape[1], frames_per_push)]
    out.append(stream.flush())
    return np.concatenate(out)


def run(repeats: int) -> tuple[dict, list[tuple]]:
    block, long_signal, gl_signal = speechlike(0.2), speechlike(60.0, seed=1), speechlike(10.0, seed=2)
    for fn in (logmag_librosa, logmag_torch, logmag_scipy):  # all must compute the same features
        if not np.allclose(np.exp(np.asarray(fn(block))), np.exp(logmag_ours(block)), atol=1e-4):
            raise RuntimeError(f"{fn.__name__} does not compute the same log-magnitude as vc.dsp")

    rows, times = [], {}
    t = times
    t["stft_block"] = {name: median_time(lambda f=f: f(block), repeats, 200) for name, f in
                       (("ours", logmag_ours), ("librosa", logmag_librosa), ("torch", logmag_torch),
                        ("scipy", logmag_scipy))}
    t["stft_long"] = {name: median_time(lambda f=f: f(long_signal), repeats) for name, f in
                      (("ours", logmag_ours), ("librosa", logmag_librosa), ("torch", logmag_torch),
                       ("scipy", logmag_scipy))}

    quality = {}
    for case, y, reps in (("gl_block", block, repeats), ("gl_long", gl_signal, max(3, repeats // 3))):
        mag = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP)).astype(np.float32)
        angles = np.exp(2j * np.pi * np.random.RandomState(0).random(size=mag.shape)).astype(np.complex64)
        t[case] = {name: median_time(lambda f=f: f(mag, angles, y.size), reps) for name, f in
                   (("ours", gl_ours), ("librosa", gl_librosa), ("torch", gl_torch))}
        if case == "gl_long":
            sc = lambda signal: dsp.spectral_convergence_db(mag, signal, hop_length=HOP)  # noqa: E731
            quality["gl_sc_db_ours"] = sc(gl_ours(mag, angles, y.size))
            quality["gl_sc_db_librosa"] = sc(gl_librosa(mag, angles, y.size))
            quality["gl_sc_db_torch"] = sc(gl_torch(mag, angles, y.size))
            quality["gl_sc_db_ours_pghi"] = sc(dsp.griffinlim(mag, n_iter=N_ITER, momentum=MOMENTUM, init="pghi",
                                                              length=y.size))
            quality["whole_gl_sc_db"] = quality["gl_sc_db_ours_pghi"]
            streamed = stream_gl(mag)
            quality["stream_gl_sc_db"] = sc(streamed)
            t["stream_gl"] = {"ours": median_time(lambda: stream_gl(mag), max(3, repeats // 3))}
            t["pghi_only"] = {"ours": median_time(lambda: dsp.griffinlim(mag, n_iter=0, init="pghi"), repeats)}

    result = {
        "stft_block_vs_librosa": t["stft_block"]["librosa"] / t["stft_block"]["ours"],
        "stft_block_vs_torch": t["stft_block"]["torch"] / t["stft_block"]["ours"],
        "stft_block_vs_scipy": t["stft_block"]["scipy"] / t["stft_block"]["ours"],
        "stft_long_vs_librosa": t["stft_long"]["librosa"] / t["stft_long"]["ours"],
        "stft_long_vs_torch": t["stft_long"]["torch"] / t["stft_long"]["ours"],
        "gl_block_vs_librosa": t["gl_block"]["librosa"] / t["gl_block"]["ours"],
        "gl_long_vs_librosa": t["gl_long"]["librosa"] / t["gl_long"]["ours"],
        "gl_long_vs_torchaudio_or_torch": t["gl_long"]["torch"] / t["gl_long"]["ours"],
        "gl_sc_db_ours": quality["gl_sc_db_ours"],
        "gl_sc_db_librosa": quality["gl_sc_db_librosa"],
        "gl_sc_db_ours_pghi": quality["gl_sc_db_ours_pghi"],
        "stream_gl_sc_db": quality["stream_gl_sc_db"],
        "whole_gl_sc_db": quality["whole_gl_sc_db"],
    }
    labels = {"stft_block": "log-magnitude, 200 ms block", "stft_long": "log-magnitude, 60 s",
              "gl_block": "Griffin-Lim 32 it, 200 ms", "gl_long": "Griffin-Lim 32 it, 10 s",
              "stream_gl": "streaming GL 32 it, 10 s", "pghi_only": "PGHI + ISTFT, 10 s"}
    for case, label in labels.items():
        rows.append((label, *(t[case].get(name) for name in ("ours", "librosa", "torch", "scipy"))))
    rows_quality = [("spectral convergence, 10 s (dB)", quality["gl_sc_db_ours"], quality["gl_sc_db_librosa"],
                     quality["gl_sc_db_torch"]),
                    ("  ours, init=pghi", quality["gl_sc_db_ours_pghi"]),
                    ("  ours, streaming (look-ahead 3)", quality["stream_gl_sc_db"])]
    return result, rows + rows_quality


def floor_failures(result: dict) -> list[str]:
    failures = []
    for key, (op, bound, *margin) in FLOORS.items():
        limit = result[bound] + margin[0] if isinstance(bound, str) else bound
        ok = {">=": result[key] >= limit, "<=": result[key] <= limit, "<": result[key] < limit}[op]
        if not ok:
            failures.append(f"{key} = {result[key]:.3f}, needs {op} {limit:.3f}")
    return failures


def format_table(result: dict, rows: list[tuple]) -> str:
    def cell(v, quality):
        if v is None:
            return f"{'-':>12}"
        return f"{v:12.2f}" if quality else (f"{v * 1e6:9.0f} us" if v < 1e-3 else f"{v * 1e3:9.2f} ms")

    lines = [f"{'single thread, median':34}{'ours':>12}{'librosa':>12}{'torch':>12}{'scipy':>12}"]
    for label, *values in rows:
        quality = label.startswith(("spectral", "  "))
        lines.append(f"{label:34}" + "".join(cell(v, quality) for v in values))
    lines.append("")
    lines += [f"{key:34}{value:12.2f}" for key, value in result.items()]
    failures = floor_failures(result)
    lines.append("")
    lines.append("floors: all met" if not failures else "floors missed: " + "; ".join(failures))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per case (median taken)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a floor is missed")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: this thread's CPU time (default); wall: elapsed time")
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    result, rows = run(args.repeats)
    table = format_table(result, rows)
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps({k: round(v, 3) for k, v in result.items()}))
    else:
        print(table)
    return 1 if args.check and floor_failures(result) else 0


if __name__ == "__main__":
    sys.exit(main())
