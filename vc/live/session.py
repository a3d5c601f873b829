"""One vc-live run: choose and open the devices, wire capture ring -> worker -> playout/recorder, start
the streams, supervise them with a status line, and sum the run up. Every failure becomes a LiveError
with one sentence and its fix."""

from __future__ import annotations

import math
import sys
import threading
import time
from pathlib import Path

import numpy as np

from vc.live import devices
from vc.live.playout import Playout, initial_margin_s
from vc.live.quiet import NativeStderrFilter
from vc.live.recorder import Recorder
from vc.live.report import install_ab_switch, slow_advice, status_line, summarise
from vc.live.ring import RingBuffer
from vc.live.settings import (BLOCK_MS, RING_SECONDS, STALL_SECONDS, STATUS_PERIOD_S, TOO_SLOW_FRACTION,
                              EngineSettings, LiveError, LiveSettings, LiveStats)
from vc.live.worker import Worker, feed_file, resampler_delay_ms


class LiveSession:
    """Owns the ring buffers, streams, worker, playout and recorder around an engine; `run()` blocks until
    the duration is over, the input file has played, Ctrl-C, or a failure."""

    def __init__(self, settings: LiveSettings, engine, sd=None, log=None, model_description: str = ""):
        self.settings = settings
        self.engine = engine
        self.sd = sd  # None: file in, no playback, PortAudio not needed
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.model_description = model_description
        self.stats = LiveStats()
        self.stop = threading.Event()
        self.error: str | None = None
        self.model_rate = engine.sr
        self.in_index = self.out_index = None
        self.in_name, self.out_name = f"file {settings.session.input_file}", "none"
        self.in_rate = self.out_rate = int(settings.devices.samplerate or self.model_rate)
        self.in_channels = self.out_channels = 1
        self.block_in = 1
        self.in_ring: RingBuffer | None = None
        self.playout: Playout | None = None
        self.recorder: Recorder | None = None
        self.worker: Worker | None = None
        self.streams = []
        self.resampler_ms = 0.0
        self._too_slow_warned = False

    # --- set-up ---------------------------------------------------------------------------------------------
    def _choose_devices(self) -> None:
        sd, d = self.sd, self.settings.devices
        if self.settings.session.input_file is None:
            self.in_index = devices.resolve_device(sd, d.input_device, "input")
            self.in_rate = devices.device_rate(sd, self.in_index, d.samplerate)
            self.in_channels = devices.stream_channels(sd, self.in_index, "input", self.in_rate)
            self.in_name = sd.query_devices(self.in_index)["name"]
        if d.plays:
            self.out_index = devices.resolve_device(sd, d.output_device, "output")
            self.out_rate = devices.device_rate(sd, self.out_index, d.samplerate)
            self.out_channels = devices.stream_channels(sd, self.out_index, "output", self.out_rate)
            self.out_name = sd.query_devices(self.out_index)["name"]
            if self.settings.session.input_file is not None:
                self.in_rate = self.out_rate  # a file is resampled on reading: no second resampler
        else:
            self.out_rate = self.in_rate

    def _read_input_file(self):
        path = self.settings.session.input_file
        if path is None:
            return None
        from vc.audio import AudioError, read_audio

        try:
            return read_audio(path, sr=self.in_rate)[0]
        except AudioError as exc:
            raise LiveError(str(exc)) from None

    def _warm_up(self) -> float:
        """Seconds the slowest of a few hops takes (also loads ONNX Runtime's kernels); engine is reset."""
        hop = np.zeros(self.engine.hop_samples, np.float32)
        rng = np.random.default_rng(0)
        worst = 0.0
        for i in range(4):
            started = time.perf_counter()
            self.engine.push(hop + (0.05 * rng.standard_normal(hop.size)).astype(np.float32))
            if i:
                worst = max(worst, time.perf_counter() - started)
        self.engine.reset()
        return worst

    def _prepare(self):
        """Everything before the streams start; returns the input file's audio (None: a microphone)."""
        if self.sd is not None:
            self._choose_devices()
        self.block_in = max(1, int(round(self.in_rate * BLOCK_MS / 1000.0)))
        block_out = max(1, int(round(self.out_rate * BLOCK_MS / 1000.0)))
        self.in_ring = RingBuffer(int(RING_SECONDS * self.in_rate))
        self.resampler_ms = resampler_delay_ms((self.in_rate, self.model_rate), (self.model_rate, self.out_rate))
        file_audio = self._read_input_file()
        worst_hop = self._warm_up()
        hop_s = self.engine.hop_ms / 1000.0
        if worst_hop > TOO_SLOW_FRACTION * hop_s:
            self.log(f"warning: one hop takes {1000 * worst_hop:.0f} ms of compute for {1000 * hop_s:.0f} ms of "
                     f"audio: this machine is too slow for these settings; "
                     f"{slow_advice(self.settings.engine, self.engine)}.")
        if self.out_index is not None:
            self.playout = Playout(self.out_rate, initial_margin_s(worst_hop), self.stats,
                                   ring_seconds=RING_SECONDS, max_block=max(block_out * 16, 16384))
        if self.settings.session.record:
            self.recorder = Recorder(self.settings.session.record, self.out_rate)
        self.worker = Worker(self.engine, self.in_ring, self.in_rate, self.out_rate, self.stats, self._sink,
                             self.block_in, self.stop)
        return file_audio

    def _sink(self, out: np.ndarray) -> None:
        if self.recorder is not None:
            self.recorder.write(out)
        if self.playout is not None:
            self.playout.deliver(out)

    # --- callbacks (real-time: copy and count only) ---------------------------------------------------------
    def _input_callback(self, indata, frames, time_info, status):
        if status.input_overflow:
            self.stats.overflows += 1
        mono = indata[:, 0] if indata.shape[1] == 1 else indata.mean(axis=1)
        if self.in_ring.write(mono) < frames:
            self.stats.overflows += 1
        self.stats.input_blocks += 1
        self.stats.last_input_time = time.monotonic()

    def _output_callback(self, outdata, frames, time_info, status):
        buf = self.playout.fill(frames, bool(status.output_underflow), self.worker.input_finished)
        outdata[:] = buf[:, None]  # the same mono signal on every channel
        self.stats.output_blocks += 1
        self.stats.last_output_time = time.monotonic()

    def _stream_finished(self, what: str):
        def finished():
            if not self.stop.is_set() and self.error is None:
                self.error = (f"The {what} stream stopped unexpectedly (device unplugged or taken over?). "
                              "Check the device and start vc-live again.")
        return finished

    def _open_stream(self, kind: str):
        sd, latency = self.sd, self.settings.devices.latency
        try:
            if kind == "output":
                stream = sd.OutputStream(device=self.out_index, samplerate=self.out_rate, channels=self.out_channels,
                                         dtype="float32", blocksize=max(1, int(round(self.out_rate * BLOCK_MS / 1000))),
                                         latency=latency, callback=self._output_callback,
                                         finished_callback=self._stream_finished("output"))
            else:
                stream = sd.InputStream(device=self.in_index, samplerate=self.in_rate, channels=self.in_channels,
                                        dtype="float32", blocksize=self.block_in, latency=latency,
                                        callback=self._input_callback, finished_callback=self._stream_finished("input"))
            self.streams.append(stream)
            stream.start()
        except Exception as exc:  # noqa: BLE001 - PortAudio's errors come in several types
            raise devices.stream_error(exc, kind) from None

    # --- run --------------------------------------------------------------------------------------------------
    def run(self) -> dict:
        file_audio = self._prepare()
        e = self.engine
        self.log(f"vc-live: {self.in_name} -> {self.out_name}; {self.in_rate} Hz in, {self.out_rate} Hz out; "
                 f"{e.describe()}" + ("; pass-through" if self.settings.engine.passthrough else ""))
        if self.model_description:
            self.log(self.model_description)
        threads = []
        interrupted = False
        install_ab_switch(self.toggle_passthrough, self.stop, self.log, _start_thread)
        started = time.monotonic()
        try:
            if self.out_index is not None:
                self._open_stream("output")
            threads.append(_start_thread(self.worker.run, "vc-live-worker"))
            if file_audio is not None:
                tail = int(e.latency_samples / self.model_rate * self.in_rate)
                threads.append(_start_thread(lambda: feed_file(file_audio, self.in_ring, self.in_rate, self.block_in,
                                                               self.stats, self.worker, tail), "vc-live-file"))
            else:
                self._open_stream("input")
            self.stats.last_input_time = self.stats.last_output_time = time.monotonic()
            interrupted = self._supervise(threads[0])
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self._shut_down(threads)
        if self.error is not None:
            raise LiveError(self.error)
        return summarise(self, time.monotonic() - started, interrupted)

    def _shut_down(self, threads) -> None:
        self.stop.set()
        for stream in self.streams:
            try:
                stream.abort(ignore_errors=True)
                stream.close(ignore_errors=True)
            except Exception:  # noqa: BLE001 - a vanished device may fail to close; nothing to do
                pass
        for thread in threads:
            thread.join(timeout=5)
        if self.recorder is not None:  # a complete WAV of what was played, also when a device failed: keep it
            self.recorder.close(keep=True)
        if self._status_enabled():
            print(file=sys.stderr)

    def toggle_passthrough(self, *_signal_args) -> None:
        self.engine.passthrough = not self.engine.passthrough

    def _status_enabled(self) -> bool:
        status = self.settings.session.status
        return sys.stderr.isatty() if status is None else status

    # --- supervision ----------------------------------------------------------------------------------------
    def _supervise(self, worker_thread: threading.Thread) -> bool:
        """Until a reason to stop; returns False (interrupted=False) — Ctrl-C arrives as KeyboardInterrupt."""
        duration = self.settings.session.duration
        deadline = math.inf if duration is None else time.monotonic() + duration
        next_status = time.monotonic()
        while not self._should_stop(time.monotonic(), worker_thread, deadline):
            self._warn_if_too_slow()
            now = time.monotonic()
            if now >= next_status and self._status_enabled():
                print("\r" + status_line(self), end="", file=sys.stderr, flush=True)
                next_status = now + STATUS_PERIOD_S
            time.sleep(0.02)
        return False

    def _should_stop(self, now: float, worker_thread: threading.Thread, deadline: float) -> bool:
        self.error = self.error or self.worker.error
        if self.error is not None or now >= deadline:
            return True
        if not worker_thread.is_alive():
            if not self.worker.input_finished:
                self.error = "conversion stopped unexpectedly"
                return True
            return self.playout is None or self.playout.ring.available() == 0  # played to the end
        if self.settings.session.input_file is None and now - self.stats.last_input_time > STALL_SECONDS:
            self.error = ("The input device stopped delivering audio (unplugged, or taken by another program?). "
                          "Check it and start vc-live again.")
        elif self.playout is not None and now - self.stats.last_output_time > STALL_SECONDS:
            self.error = ("The output device stopped playing (unplugged, or taken by another program?). "
                          "Check it and start vc-live again.")
        return self.error is not None

    def _warn_if_too_slow(self) -> None:
        fraction = self.stats.recent_fraction()
        if not self._too_slow_warned and self.stats.audio_s > 2.0 and fraction > TOO_SLOW_FRACTION:
            self._too_slow_warned = True
            self.log(("\n" if self._status_enabled() else "") + f"warning: conversion takes {fraction:.2f}x real "
                     f"time: this machine is too slow for these settings; "
                     f"{slow_advice(self.settings.engine, self.engine)}.")

def _start_thread(target, name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def build_engine(settings: EngineSettings):
    """Model, target and engine from the settings; every failure is a LiveError."""
    from vc.engine import MODES, EngineError, StreamingConverter
    from vc.model import ModelError, load_model
    from vc.speakers import SpeakerError, load_speaker

    try:
        model = load_model(settings.model, device=settings.device, threads=settings.threads)
    except ModelError as exc:
        raise LiveError(str(exc)) from None
    try:
        target = load_speaker(settings.target, model)
        source = None if settings.source is None else load_speaker(settings.source, model)
    except (SpeakerError, OSError, ValueError) as exc:
        raise LiveError(str(exc)) from None
    mode = dict(MODES["lowlat" if settings.low_latency else "default"])
    chosen = {"hop_ms": settings.hop_ms, "lookahead_ms": settings.lookahead_ms}
    mode.update({name: value for name, value in chosen.items() if value is not None})
    try:
        engine = StreamingConverter(model, target, settings=settings.conversion, gate_db=settings.gate_db,
                                    passthrough=settings.passthrough, source=source, **mode)
    except EngineError as exc:
        raise LiveError(str(exc)) from None
    return model, engine


def run_live(settings: LiveSettings, log=None) -> dict:
    """The whole vc-live run; returns the summary dict. Raises LiveError with a user-facing sentence."""
    input_file = settings.session.input_file
    sd = devices.import_sounddevice() if input_file is None or settings.devices.plays else None
    if input_file is not None and not Path(input_file).is_file():
        raise LiveError(f"{input_file}: no such file")
    model, engine = build_engine(settings.engine)
    describe = getattr(model, "describe", None)
    session = LiveSession(settings, engine, sd=sd, log=log, model_description=describe() if describe else "")
    with NativeStderrFilter():
        return session.run()
