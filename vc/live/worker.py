"""The worker thread: capture ring -> resample to the model's rate -> engine -> resample to the output
rate -> sink (recorder and playout); and the feeder that plays a file into the capture ring in real time."""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from vc.live.ring import RingBuffer
from vc.live.settings import BLOCK_MS, LiveStats


def level_db(x: np.ndarray) -> float:
    if x.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 1e-10 else -200.0


def _resampler(rate_in: int, rate_out: int):
    import soxr

    return soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality="HQ")


def resampler_delay_ms(*rate_pairs: tuple[int, int]) -> float:
    """Group delay of streaming resamplers (soxr HQ: a few ms each) in series, measured with a click."""
    total = 0.0
    for rate_in, rate_out in rate_pairs:
        if rate_in == rate_out:
            continue
        probe = _resampler(rate_in, rate_out)
        x = np.zeros(rate_in // 10, np.float32)
        x[rate_in // 100] = 1.0
        y = np.concatenate([probe.resample_chunk(x), probe.resample_chunk(np.zeros(rate_in // 10, np.float32))])
        total += (np.argmax(np.abs(y)) / rate_out - (rate_in // 100) / rate_in) * 1000.0
    return max(0.0, total)


class Worker:
    """Runs `run()` in its own thread until `stop` is set or the input has finished and drained. An
    exception ends it and is kept in `error` as one sentence for the main thread."""

    def __init__(self, engine, in_ring: RingBuffer, in_rate: int, out_rate: int, stats: LiveStats, sink,
                 block: int, stop: threading.Event):
        self.engine = engine
        self.in_ring = in_ring
        self.in_rate = int(in_rate)
        self.stats = stats
        self.sink = sink
        self.block = int(block)
        self.stop = stop
        self.input_finished = False  # set by whoever feeds a finite input
        self.error: str | None = None
        model_rate = engine.sr
        self._to_model = _resampler(self.in_rate, model_rate) if self.in_rate != model_rate else None
        self._from_model = _resampler(model_rate, out_rate) if out_rate != model_rate else None

    def run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # noqa: BLE001 - reported by the main thread as one sentence
            self.error = f"conversion stopped: {type(exc).__name__}: {exc}"

    def _loop(self) -> None:
        scratch = np.empty(max(self.block * 8, 8192), np.float32)
        idle_sleep = min(0.005, BLOCK_MS / 4000.0)
        while not self.stop.is_set():
            n = self.in_ring.available()
            if n < self.block:
                if self.input_finished and n == 0:
                    break
                if not (self.input_finished and n > 0):
                    time.sleep(idle_sleep)
                    continue
            got = self.in_ring.read_into(scratch[:min(n, scratch.shape[0])])
            self.sink(self.convert(scratch[:got]))

    def convert(self, chunk: np.ndarray) -> np.ndarray:
        """One block of captured samples -> the samples to play, with the compute it took accounted."""
        self.stats.level_db = level_db(chunk)
        hops_before = self.engine.hops
        started = time.perf_counter()
        x = self._to_model.resample_chunk(chunk) if self._to_model is not None else chunk.copy()
        y = self.engine.push(x) if x.size else np.zeros(0, np.float32)
        out = self._from_model.resample_chunk(y) if self._from_model is not None else y
        spent = time.perf_counter() - started
        hops = self.engine.hops - hops_before
        self.stats.account(chunk.size / self.in_rate, spent, hops * self.engine.hop_ms / 1000.0)
        return np.asarray(out, np.float32)


def feed_file(audio: np.ndarray, ring: RingBuffer, rate: int, block: int, stats: LiveStats, worker: Worker,
              tail_samples: int) -> None:
    """Write `audio` into the capture ring a block at a time, at the pace a microphone would, then
    `tail_samples` of silence (so the engine's delayed output comes out), then tell the worker."""
    audio = np.concatenate([audio, np.zeros(tail_samples + block, np.float32)])
    started = time.monotonic()
    position = 0
    while position < audio.size and not worker.stop.is_set():
        delay = started + position / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        piece = audio[position:position + block]
        if ring.write(piece) < piece.size:
            stats.overflows += 1
        stats.input_blocks += 1
        stats.last_input_time = time.monotonic()
        position += block
    worker.input_finished = True
