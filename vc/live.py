"""Live conversion: microphone -> `StreamingConverter` -> speakers, with a one-line status.

Threads and buffers
-------------------
Capture and playback are two separate PortAudio streams (full duplex through PulseAudio's ALSA plugin has
been seen to capture zeros). Their callbacks only copy samples into or out of preallocated single-producer
single-consumer ring buffers and count problems; they never wait and never allocate beyond the small array
PortAudio hands them. A worker thread does everything else: resampling to and from 16 kHz with soxr's
streaming resampler, the engine (model and Griffin-Lim), recording. The main thread starts and stops
things, prints the status line and turns every failure into one sentence with a fix.

Output timing
-------------
The engine returns as many samples as it gets, but does its work in one burst when a hop completes. The
playback ring is therefore primed with a margin of silence sized from the measured compute time of a hop
(warm-up before the streams start). A dropout re-primes it and grows the margin (by 10 ms during the first
SETTLE_S seconds, when streams that are starting up stall once or twice and those dropouts are counted
apart; by half afterwards), and a ring that fills up (input clock faster than output clock) is trimmed
back. The latency shown is the engine's algorithmic latency + the margin + one capture block + both
resamplers' delays + the device latencies PortAudio reports; a sound server's own buffering comes on top
(about 70 ms more with PulseAudio's ALSA plug-in on the machine this was measured on).

A/B: Enter on the terminal (or SIGUSR1) switches between the converted voice and pass-through, which has
the same delay, so the comparison is in time.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MODEL_RATE_FALLBACK = 16000
BLOCK_MS = 10.0             # device callback size: small blocks, the engine does not care
MIN_MARGIN_MS = 30.0
MARGIN_GROWTH_INTERVAL_S = 0.25
DRIFT_CHECK_S = 3.0         # clock drift: how often the playback queue's low-water mark is compared...
DRIFT_TOLERANCE_S = 0.04    # ...with the margin, and how much above it is left alone
SETTLE_S = 1.5              # after the first output: dropouts resize the margin and are not counted
MAX_MARGIN_MS = 500.0
RING_SECONDS = 4.0
STALL_SECONDS = 2.0         # no callback for this long while running: the device is gone
STATUS_PERIOD_S = 0.25
TOO_SLOW_FRACTION = 0.9     # compute / real time above this cannot keep up for long


class LiveError(Exception):
    """A problem the user can fix; the message is one or two sentences including the fix."""


# --- sounddevice import and devices -------------------------------------------------------------------
def import_sounddevice():
    try:
        import sounddevice as sd
    except OSError as exc:  # sounddevice raises OSError when the PortAudio library cannot be loaded
        raise LiveError(
            f"The PortAudio library was not found ({exc}). Install it: apt-get install libportaudio2 "
            "(Debian/Ubuntu), dnf install portaudio (Fedora), brew install portaudio (macOS).") from None
    except ImportError:
        raise LiveError("The Python package sounddevice is not installed: pip install sounddevice") from None
    quiet_alsa_messages()
    return sd


_native_log_handlers = []  # ctypes callbacks must outlive the libraries' use of them


def quiet_alsa_messages() -> None:
    """Route libasound's own error printing (\"ALSA lib pcm.c: underrun occurred\" for every xrun) to
    nowhere: vc-live counts underflows itself and explains them; the lines would break the status line.
    Set VC_LIVE_DEBUG=1 to keep them."""
    if os.environ.get("VC_LIVE_DEBUG") or _native_log_handlers or not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    try:
        asound = ctypes.CDLL(ctypes.util.find_library("asound") or "libasound.so.2")
        # void handler(const char *file, int line, const char *function, int err, const char *fmt, ...)
        handler_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                        ctypes.c_char_p)
        handler = handler_type(lambda *args: None)
        asound.snd_lib_error_set_handler(handler)
        _native_log_handlers.append(handler)
    except (OSError, AttributeError):  # no ALSA on this system: nothing to quieten
        pass


class NativeStderrFilter:
    """While active, what C libraries print on file descriptor 2 passes through a pipe that drops
    PortAudio's and ALSA's internal diagnostics (\"Expression '...' failed in pa_linux_alsa.c\" when a
    device vanishes); Python's own sys.stderr writes straight to the terminal as before."""

    NOISE = ("Expression '", "ALSA lib ", "PaAlsa", "pa_linux_alsa.c", "Cannot connect to server socket",
             "jack server is not running")

    def __init__(self):
        self.active = False

    def __enter__(self):
        if os.environ.get("VC_LIVE_DEBUG"):
            return self
        try:
            sys.stderr.flush()
            self._saved_fd = os.dup(2)
            read_fd, write_fd = os.pipe()
            os.dup2(write_fd, 2)
            os.close(write_fd)
        except (OSError, ValueError, AttributeError):  # no real stderr (embedded use): leave it alone
            return self
        self._python_stderr = sys.stderr
        sys.stderr = open(os.dup(self._saved_fd), "w", buffering=1, encoding="utf-8", errors="replace",
                          closefd=True)
        self._thread = threading.Thread(target=self._pump, args=(read_fd,), name="vc-live-stderr", daemon=True)
        self._thread.start()
        self.active = True
        return self

    def _pump(self, read_fd: int) -> None:
        with open(read_fd, "rb", buffering=0) as pipe:
            pending = b""
            while True:
                chunk = pipe.read(4096)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not any(mark in line.decode("utf-8", "replace") for mark in self.NOISE):
                        os.write(self._saved_fd, line + b"\n")
            if pending:
                os.write(self._saved_fd, pending)

    def __exit__(self, *exc):
        if not self.active:
            return False
        self.active = False
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = self._python_stderr
        os.dup2(self._saved_fd, 2)  # closes the pipe's last write end: the pump sees the end
        self._thread.join(timeout=2)
        os.close(self._saved_fd)
        return False


def _query_devices(sd) -> list[dict]:
    try:
        return [dict(d, index=i) for i, d in enumerate(sd.query_devices())]
    except Exception as exc:  # noqa: BLE001 - PortAudio initialisation errors come in several types
        raise LiveError(f"PortAudio cannot list audio devices: {exc}") from None


NO_DEVICE_HINT = ("On a machine without a sound card, start a sound server (for example PulseAudio with a "
                  "null sink) or convert a file with --input-file IN.wav -o none --record OUT.wav.")


def format_device_list(sd) -> str:
    devices = _query_devices(sd)
    if not devices:
        return "No audio devices found. " + NO_DEVICE_HINT
    try:
        default_in, default_out = sd.default.device
    except Exception:  # noqa: BLE001
        default_in = default_out = -1
    try:
        apis = [a["name"] for a in sd.query_hostapis()]
    except Exception:  # noqa: BLE001
        apis = []
    lines = ["  idx  in out  rate    host API     name"]
    for d in devices:
        mark = ("<" if d["index"] == default_in else " ") + (">" if d["index"] == default_out else " ")
        api = apis[d["hostapi"]] if 0 <= d.get("hostapi", -1) < len(apis) else "?"
        lines.append(f"{mark}{d['index']:3d}  {d['max_input_channels']:2d} {d['max_output_channels']:3d}  "
                     f"{d['default_samplerate']:6.0f}  {api:<11.11s}  {d['name']}")
    lines.append("(< default input, > default output; select with -i/-o by index or part of the name)")
    return "\n".join(lines)


def resolve_device(sd, spec, kind: str) -> int:
    """-i/-o value (None = default, an index, or a case-insensitive part of the name) -> device index."""
    channels_key = "max_input_channels" if kind == "input" else "max_output_channels"
    devices = _query_devices(sd)
    usable = [d for d in devices if d[channels_key] > 0]
    if not usable:
        raise LiveError(f"No audio {kind} device found. " + NO_DEVICE_HINT)
    flag = "-i" if kind == "input" else "-o"
    names = "; ".join(f"{d['index']}: {d['name']}" for d in usable)
    if spec is None or str(spec).strip() == "":
        try:
            index = sd.default.device[0 if kind == "input" else 1]
        except Exception:  # noqa: BLE001
            index = -1
        if index is None or index < 0 or index >= len(devices) or devices[index][channels_key] <= 0:
            index = usable[0]["index"]
        return int(index)
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < len(devices):
            raise LiveError(f"There is no audio device {index}. {kind.capitalize()} devices: {names}")
        if devices[index][channels_key] <= 0:
            raise LiveError(f"Device {index} ({devices[index]['name']}) has no {kind} channels; choose one of: "
                            f"{names}")
        return index
    wanted = text.lower()
    exact = [d for d in usable if d["name"].lower() == wanted]
    matches = exact or [d for d in usable if wanted in d["name"].lower()]
    if not matches:
        raise LiveError(f"No {kind} device matches {text!r}. {kind.capitalize()} devices: {names} "
                        f"(see vc-live --list-devices).")
    if len(matches) > 1:
        listed = "; ".join(f"{d['index']}: {d['name']}" for d in matches)
        raise LiveError(f"{text!r} matches several {kind} devices ({listed}); give {flag} a longer name or an "
                        "index.")
    return int(matches[0]["index"])


# --- ring buffer ----------------------------------------------------------------------------------------
class RingBuffer:
    """Single-producer single-consumer float32 ring. Each index is written by one side only, and a side
    publishes its index after the samples, so the other side never sees half-written data."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self._buf = np.zeros(self.capacity, np.float32)
        self._written = 0  # total samples ever written (producer-owned)
        self._read = 0     # total samples ever read (consumer-owned)

    def available(self) -> int:
        return self._written - self._read

    def space(self) -> int:
        return self.capacity - self.available()

    def write(self, samples: np.ndarray) -> int:
        """Copy as many samples as fit; returns how many were written (the rest is dropped)."""
        n = min(samples.shape[0], self.space())
        if n <= 0:
            return 0
        start = self._written % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start:start + first] = samples[:first]
        if n > first:
            self._buf[:n - first] = samples[first:n]
        self._written += n
        return n

    def write_zeros(self, n: int) -> int:
        n = min(n, self.space())
        start = self._written % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start:start + first] = 0.0
        if n > first:
            self._buf[:n - first] = 0.0
        self._written += n
        return n

    def read_into(self, out: np.ndarray) -> int:
        """Fill `out` (1-D) from the ring as far as possible; returns how many samples were copied."""
        n = min(out.shape[0], self.available())
        if n <= 0:
            return 0
        start = self._read % self.capacity
        first = min(n, self.capacity - start)
        out[:first] = self._buf[start:start + first]
        if n > first:
            out[first:n] = self._buf[:n - first]
        self._read += n
        return n

    def read(self, n: int) -> np.ndarray:
        out = np.empty(min(n, self.available()), np.float32)
        self.read_into(out)
        return out

    def discard(self, n: int) -> int:
        """Consumer side: drop up to n of the oldest samples."""
        n = min(n, self.available())
        self._read += n
        return n


# --- settings and statistics ----------------------------------------------------------------------------
@dataclass
class LiveOptions:
    target: str
    model: str | None = None
    input_device: str | None = None
    output_device: str | None = None    # "none": no playback (record only)
    samplerate: int | None = None
    hop_ms: float | None = None
    lookahead_ms: float | None = None
    n_iter: int | None = None
    gate_db: float | None = None
    gate: bool = True
    low_latency: bool = False
    passthrough: bool = False
    record: str | None = None
    duration: float | None = None
    device: str = "auto"
    threads: int | None = None
    input_file: str | None = None
    latency: str = "high"               # PortAudio's suggested device latency: "low", "high" or seconds
    status: bool | None = None          # None: when stderr is a terminal


@dataclass
class LiveStats:
    overflows: int = 0       # capture samples lost (ring full or PortAudio input overflow)
    underflows: int = 0      # playback blocks that ran dry after priming (or PortAudio output underflow)
    device_underflows: int = 0  # of those, the ones PortAudio reported (the device's own buffer ran dry)
    startup_underflows: int = 0  # dropouts in the first SETTLE_S, which size the margin
    input_blocks: int = 0
    output_blocks: int = 0
    last_input_time: float = 0.0
    last_output_time: float = 0.0
    level_db: float = -math.inf
    compute_s: float = 0.0
    audio_s: float = 0.0
    window_compute: list = field(default_factory=list)  # (audio seconds, compute seconds) recent
    max_fraction: float = 0.0
    trims: int = 0           # drift corrections: queued output dropped because it stayed above the margin

    def recent_fraction(self) -> float:
        audio = sum(a for a, _ in self.window_compute)
        return sum(c for _, c in self.window_compute) / audio if audio > 0 else 0.0


def _level_db(x: np.ndarray) -> float:
    if x.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 1e-10 else -200.0


def _slow_advice(options: LiveOptions, engine) -> str:
    tips = [f"lower --n-iter (now {engine.n_iter})"]
    if engine.hop_ms < 200:
        tips.append(f"raise --hop-ms (now {engine.hop_ms:g}; the default 200 costs least per second)")
    if options.device != "cuda":
        tips.append("run the model with --device cuda if there is a GPU")
    return "; ".join(tips)


# --- the session --------------------------------------------------------------------------------------
class LiveSession:
    """Owns engine, resamplers, ring buffers, streams and the worker; `run()` blocks until done."""

    def __init__(self, options: LiveOptions, engine, sd=None, log=None, model_description: str = ""):
        self.options = options
        self.engine = engine
        self.sd = sd
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.model_description = model_description
        self.stats = LiveStats()
        self.model_rate = engine.sr
        self._stop = threading.Event()
        self._error: str | None = None
        self._primed = False
        self._reprime = False
        self._settle_until = math.inf
        self._last_growth = -math.inf
        self._low_water = 1 << 62        # lowest playback queue level since the last drift check
        self._next_drift_check = math.inf
        self._drop_pending = 0
        self._finished_input = False
        self._streams = []
        self._record_tmp = None
        self._record_file = None
        self._too_slow_warned = False

    # ..... set-up .......................................................................................
    def _device_rate(self, index: int, kind: str) -> int:
        if self.options.samplerate:
            return int(self.options.samplerate)
        info = self.sd.query_devices(index)
        return int(round(info["default_samplerate"]))

    def _check_stream(self, index: int, kind: str, rate: int) -> int:
        """Channels to open (1 when the device allows) after PortAudio accepts the settings."""
        sd = self.sd
        check = sd.check_input_settings if kind == "input" else sd.check_output_settings
        info = sd.query_devices(index)
        max_ch = info["max_input_channels" if kind == "input" else "max_output_channels"]
        first_error = None
        for channels in sorted({1, min(2, max_ch), max_ch}):
            try:
                check(device=index, channels=channels, dtype="float32", samplerate=rate)
                return channels
            except Exception as exc:  # noqa: BLE001 - PortAudioError or ValueError, same meaning
                first_error = first_error or exc
                if "sample rate" in str(exc).lower():
                    break
        text = str(first_error)
        if "sample rate" in text.lower():
            raise LiveError(
                f"The {kind} device {info['name']!r} does not support {rate} Hz. Try --samplerate "
                f"{int(info['default_samplerate'])} (its default), 48000 or 44100.")
        raise LiveError(f"The {kind} device {info['name']!r} cannot be opened with these settings: {text}")

    def _open_streams(self):
        sd, o = self.sd, self.options
        if o.input_file is None:
            in_index = resolve_device(sd, o.input_device, "input")
            self.in_rate = self._device_rate(in_index, "input")
            self.in_channels = self._check_stream(in_index, "input", self.in_rate)
            self.in_name = sd.query_devices(in_index)["name"]
        else:
            in_index = None
            self.in_name = f"file {o.input_file}"
        if o.output_device is not None and str(o.output_device).lower() == "none":
            out_index = None
            self.out_name = "none"
        else:
            out_index = resolve_device(sd, o.output_device, "output")
            self.out_rate = self._device_rate(out_index, "output")
            self.out_channels = self._check_stream(out_index, "output", self.out_rate)
            self.out_name = sd.query_devices(out_index)["name"]
        if o.input_file is not None:
            self.in_rate = self.out_rate if out_index is not None else (o.samplerate or self.model_rate)
        if out_index is None:
            self.out_rate = self.in_rate
        return in_index, out_index

    def _stream_error(self, exc: Exception, what: str) -> LiveError:
        text = str(exc)
        low = text.lower()
        if "unavailable" in low or "busy" in low or "-9985" in low:
            return LiveError(f"The {what} device is busy (another program is using it). Close that program or "
                             "choose another device with -i/-o (vc-live --list-devices).")
        if "sample rate" in low:
            return LiveError(f"The {what} device rejected the sample rate: {text}. Try --samplerate 48000 or "
                             "44100.")
        return LiveError(f"Cannot open the {what} device: {text}")

    # ..... callbacks (real-time: copy and count only) ....................................................
    def _input_callback(self, indata, frames, time_info, status):
        if status.input_overflow:
            self.stats.overflows += 1
        mono = indata[:, 0] if indata.shape[1] == 1 else indata.mean(axis=1)
        written = self.in_ring.write(mono)
        if written < frames:
            self.stats.overflows += 1
        self.stats.input_blocks += 1
        self.stats.last_input_time = time.monotonic()

    def _output_callback(self, outdata, frames, time_info, status):
        settling = time.monotonic() < self._settle_until
        if status.output_underflow and self._primed:
            if settling:
                self.stats.startup_underflows += 1
            else:
                self.stats.underflows += 1
                self.stats.device_underflows += 1
        buf = self._out_scratch[:frames]
        got = self.out_ring.read_into(buf)
        level = self.out_ring.available()
        if level < self._low_water:
            self._low_water = level
        if got < frames:
            buf[got:] = 0.0
            if self._primed and not self._finished_input:
                if settling:
                    self.stats.startup_underflows += 1
                else:
                    self.stats.underflows += 1
                self._reprime = True
        outdata[:] = buf[:, None]
        self.stats.output_blocks += 1
        self.stats.last_output_time = time.monotonic()

    def _stream_finished(self, what: str):
        def finished():
            if not self._stop.is_set() and self._error is None:
                self._error = (f"The {what} stream stopped unexpectedly (device unplugged or taken over?). "
                               "Check the device and start vc-live again.")
        return finished

    # ..... worker ...............................................................................................
    def _make_resamplers(self):
        import soxr

        self._to_model = (soxr.ResampleStream(self.in_rate, self.model_rate, 1, dtype="float32", quality="HQ")
                          if self.in_rate != self.model_rate else None)
        self._from_model = (soxr.ResampleStream(self.model_rate, self.out_rate, 1, dtype="float32", quality="HQ")
                            if self.out_rate != self.model_rate else None)

    def resampler_delay_ms(self) -> float:
        """Group delay of the two streaming resamplers (soxr HQ: a few ms each), measured with a click."""
        import soxr

        total = 0.0
        for rate_in, rate_out in ((self.in_rate, self.model_rate), (self.model_rate, self.out_rate)):
            if rate_in == rate_out:
                continue
            probe = soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality="HQ")
            x = np.zeros(rate_in // 10, np.float32)
            x[rate_in // 100] = 1.0
            y = np.concatenate([probe.resample_chunk(x), probe.resample_chunk(np.zeros(rate_in // 10, np.float32))])
            total += (np.argmax(np.abs(y)) / rate_out - (rate_in // 100) / rate_in) * 1000.0
        return max(0.0, total)

    def _worker(self):
        try:
            self._worker_loop()
        except Exception as exc:  # noqa: BLE001 - reported by the main thread as one sentence
            self._error = f"conversion stopped: {type(exc).__name__}: {exc}"

    def _worker_loop(self):
        block = self._block_in
        scratch = np.empty(max(block * 8, 8192), np.float32)
        idle_sleep = min(0.005, BLOCK_MS / 4000.0)
        while not self._stop.is_set():
            n = self.in_ring.available()
            if n < block:
                if self._finished_input and n == 0:
                    break
                if not (self._finished_input and n > 0):
                    time.sleep(idle_sleep)
                    continue
            n = min(n, scratch.shape[0])
            got = self.in_ring.read_into(scratch[:n])
            chunk = scratch[:got]
            self.stats.level_db = _level_db(chunk)
            hops_before = self.engine.hops
            started = time.perf_counter()
            x = self._to_model.resample_chunk(chunk) if self._to_model is not None else chunk.copy()
            y = self.engine.push(x) if x.size else np.zeros(0, np.float32)
            out = self._from_model.resample_chunk(y) if self._from_model is not None else y
            spent = time.perf_counter() - started
            self._account(got / self.in_rate, spent, self.engine.hops - hops_before)
            self._deliver(np.asarray(out, np.float32))

    def _account(self, audio_s: float, compute_s: float, hops: int):
        s = self.stats
        s.audio_s += audio_s
        s.compute_s += compute_s
        s.window_compute.append((audio_s, compute_s))
        while len(s.window_compute) > 1 and sum(a for a, _ in s.window_compute) > 2.0:
            s.window_compute.pop(0)
        if hops:  # the block's burst against the audio its hops add
            s.max_fraction = max(s.max_fraction, compute_s / (hops * self.engine.hop_ms / 1000.0))

    def _deliver(self, out: np.ndarray):
        if self._record_file is not None and out.size:
            self._record_file.write(out)
        if self.out_ring is None:
            return
        if not self._primed or self._reprime:
            now = time.monotonic()
            if self._reprime and now - self._last_growth > MARGIN_GROWTH_INTERVAL_S:
                # The queue ran dry: this system needs more slack. Grow it, and start over at the new size.
                # (Once per interval: a device recovering from an xrun drains several blocks at once, and
                # that burst is one event, not many.)
                # Streams starting up stall once or twice; that says little about the steady state.
                grown = self.margin_s + 0.01 if now < self._settle_until else self.margin_s * 1.5
                self.margin_s = min(MAX_MARGIN_MS / 1000.0, grown)
                self._last_growth = now
            self.out_ring.write_zeros(int(self.margin_s * self.out_rate))
            self._reprime = False
            if not self._primed:
                self._settle_until = time.monotonic() + SETTLE_S
                self._next_drift_check = self._settle_until + DRIFT_CHECK_S
            self._primed = True
        # Input and output clocks may drift apart. Input comes in bursts, so only the queue's lowest level
        # over a few seconds says whether it holds more than the margin for good; then the excess is
        # left out of the next output.
        now = time.monotonic()
        if now >= self._next_drift_check:
            excess = self._low_water - int((self.margin_s + DRIFT_TOLERANCE_S) * self.out_rate)
            if self._primed and 0 < excess < self.out_ring.capacity:
                self._drop_pending += excess
                self.stats.trims += 1
            self._low_water = self.out_ring.capacity
            self._next_drift_check = now + DRIFT_CHECK_S
        if self._drop_pending:
            dropped = min(self._drop_pending, out.size)
            self._drop_pending -= dropped
            out = out[dropped:]
        self.out_ring.write(out)

    # ..... file input ...........................................................................................
    def _file_feeder(self, audio: np.ndarray):
        block = self._block_in
        tail = np.zeros(int(self.engine.latency_samples / self.model_rate * self.in_rate) + block, np.float32)
        audio = np.concatenate([audio, tail])
        started = time.monotonic()
        position = 0
        while position < audio.size and not self._stop.is_set():
            due = started + position / self.in_rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            piece = audio[position:position + block]
            if self.in_ring.write(piece) < piece.size:
                self.stats.overflows += 1
            self.stats.input_blocks += 1
            self.stats.last_input_time = time.monotonic()
            position += block
        self._finished_input = True

    # ..... run .................................................................................................
    def latency_estimate_ms(self) -> float:
        total = self.engine.algorithmic_latency_ms + self._resampler_ms + 1000.0 * self._block_in / self.in_rate
        if self.out_ring is not None:
            total += 1000.0 * self.margin_s
        for stream in self._streams:
            lat = stream.latency
            total += 1000.0 * (lat if isinstance(lat, float) else sum(lat))
        return total

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

    def run(self) -> dict:
        o = self.options
        sd = self.sd
        in_index, out_index = self._open_streams() if sd is not None else (None, None)
        if sd is None:  # file in, no playback: no PortAudio needed at all
            self.in_name, self.out_name = f"file {o.input_file}", "none"
            self.in_rate = self.out_rate = int(o.samplerate or self.model_rate)
        self._block_in = max(1, int(round(self.in_rate * BLOCK_MS / 1000.0)))
        block_out = max(1, int(round(self.out_rate * BLOCK_MS / 1000.0)))
        self.in_ring = RingBuffer(int(RING_SECONDS * self.in_rate))
        self.out_ring = RingBuffer(int(RING_SECONDS * self.out_rate)) if out_index is not None else None
        self._out_scratch = np.zeros(max(block_out * 16, 16384), np.float32)
        self._out_mono_scratch = np.zeros(self._out_scratch.shape[0], np.float32)
        self._make_resamplers()
        self._resampler_ms = self.resampler_delay_ms()

        file_audio = None
        if o.input_file is not None:
            from vc.audio import AudioError, read_audio
            try:
                file_audio, _ = read_audio(o.input_file, sr=self.in_rate)
            except AudioError as exc:
                raise LiveError(str(exc)) from None

        worst_hop = self._warm_up()
        hop_s = self.engine.hop_ms / 1000.0
        self.margin_s = min(MAX_MARGIN_MS / 1000.0, max(MIN_MARGIN_MS / 1000.0, 1.5 * worst_hop + 0.005))
        if worst_hop > TOO_SLOW_FRACTION * hop_s:
            self.log(f"warning: one hop takes {1000 * worst_hop:.0f} ms of compute for {1000 * hop_s:.0f} ms of "
                     f"audio: this machine is too slow for these settings; {_slow_advice(o, self.engine)}.")

        if o.record:
            self._open_record()

        self.log(f"vc-live: {self.in_name} -> {self.out_name}; {self.in_rate} Hz in, {self.out_rate} Hz out; "
                 f"{self.engine.describe()}" + ("; pass-through" if o.passthrough else ""))
        if self.model_description:
            self.log(self.model_description)

        threads = []
        interrupted = False
        self._install_ab_switch()
        started = time.monotonic()
        try:
            if out_index is not None:
                try:
                    stream = sd.OutputStream(device=out_index, samplerate=self.out_rate, channels=self.out_channels,
                                             dtype="float32", blocksize=block_out, latency=o.latency,
                                             callback=self._output_callback_multi if self.out_channels > 1
                                             else self._output_callback,
                                             finished_callback=self._stream_finished("output"))
                    self._streams.append(stream)
                    stream.start()
                except LiveError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    raise self._stream_error(exc, "output") from None
            worker = threading.Thread(target=self._worker, name="vc-live-worker", daemon=True)
            worker.start()
            threads.append(worker)
            if file_audio is not None:
                feeder = threading.Thread(target=self._file_feeder, args=(file_audio,), name="vc-live-file",
                                          daemon=True)
                feeder.start()
                threads.append(feeder)
            else:
                try:
                    stream = sd.InputStream(device=in_index, samplerate=self.in_rate, channels=self.in_channels,
                                            dtype="float32", blocksize=self._block_in, latency=o.latency,
                                            callback=self._input_callback,
                                            finished_callback=self._stream_finished("input"))
                    self._streams.append(stream)
                    stream.start()
                except Exception as exc:  # noqa: BLE001
                    raise self._stream_error(exc, "input") from None
            self.stats.last_input_time = self.stats.last_output_time = time.monotonic()
            self._started = time.monotonic()
            interrupted = self._supervise(worker, out_index is not None)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self._stop.set()
            for stream in self._streams:
                try:
                    stream.abort(ignore_errors=True)
                    stream.close(ignore_errors=True)
                except Exception:  # noqa: BLE001 - a vanished device may fail to close; nothing to do
                    pass
            for t in threads:
                t.join(timeout=5)
            # The recording is a complete WAV of what was played, also when a device failed: keep it.
            self._close_record(keep=True)
            if self._status_enabled():
                print(file=sys.stderr)
        if self._error is not None:
            raise LiveError(self._error)
        return self._summary(time.monotonic() - started, interrupted)

    def _output_callback_multi(self, outdata, frames, time_info, status):
        mono = self._out_mono_scratch[:frames]
        self._output_callback(mono[:, None], frames, time_info, status)
        outdata[:] = mono[:, None]

    def _status_enabled(self) -> bool:
        if self.options.status is not None:
            return self.options.status
        return sys.stderr.isatty()

    # ..... A/B switch ............................................................................................
    def toggle_passthrough(self, *_signal_args) -> None:
        self.engine.passthrough = not self.engine.passthrough

    def _install_ab_switch(self) -> None:
        """Enter on the terminal, or SIGUSR1 from a script, switches between conversion and pass-through."""
        try:
            import signal
            signal.signal(signal.SIGUSR1, self.toggle_passthrough)
        except (ValueError, AttributeError, OSError):  # not the main thread, or no SIGUSR1 (Windows)
            pass
        try:
            interactive = sys.stdin is not None and sys.stdin.isatty()
        except (ValueError, OSError):
            interactive = False
        if interactive:
            self.log("press Enter to switch between the converted voice and pass-through (A/B), Ctrl-C to stop")

            def read_keys():
                for _ in iter(sys.stdin.readline, ""):
                    if self._stop.is_set():
                        return
                    self.toggle_passthrough()

            threading.Thread(target=read_keys, name="vc-live-keys", daemon=True).start()

    def _supervise(self, worker: threading.Thread, playing: bool) -> bool:
        o = self.options
        deadline = None if o.duration is None else time.monotonic() + o.duration
        next_status = time.monotonic()
        while True:
            now = time.monotonic()
            if self._error is not None:
                return False
            if not worker.is_alive():
                if self._finished_input:
                    # Let the playback ring drain before stopping.
                    if self.out_ring is None or self.out_ring.available() == 0:
                        return False
                else:
                    self._error = self._error or "conversion stopped unexpectedly"
                    return False
            if deadline is not None and now >= deadline:
                return False
            if o.input_file is None and now - self.stats.last_input_time > STALL_SECONDS:
                self._error = ("The input device stopped delivering audio (unplugged, or taken by another "
                               "program?). Check it and start vc-live again.")
                return False
            if playing and now - self.stats.last_output_time > STALL_SECONDS:
                self._error = ("The output device stopped playing (unplugged, or taken by another program?). "
                               "Check it and start vc-live again.")
                return False
            fraction = self.stats.recent_fraction()
            if (not self._too_slow_warned and self.stats.audio_s > 2.0 and fraction > TOO_SLOW_FRACTION):
                self._too_slow_warned = True
                self.log(("\n" if self._status_enabled() else "") + f"warning: conversion takes {fraction:.2f}x real time: this machine is too slow for "
                         f"these settings; {_slow_advice(o, self.engine)}.")
            if now >= next_status and self._status_enabled():
                print("\r" + self.status_line(), end="", file=sys.stderr, flush=True)
                next_status = now + STATUS_PERIOD_S
            time.sleep(0.02)

    def status_line(self) -> str:
        s = self.stats
        level = "  -inf" if not math.isfinite(s.level_db) or s.level_db < -99 else f"{s.level_db:6.1f}"
        mode = " [pass-through]" if self.engine.passthrough else ""
        line = (f"in {level} dBFS | compute {s.recent_fraction():4.2f}x (peak {s.max_fraction:4.2f}x) | "
                f"latency ~{self.latency_estimate_ms():.0f} ms | overflows {s.overflows} | "
                f"underflows {s.underflows}{mode}")
        # One terminal line, or \r cannot redraw it; trailing blanks wipe a longer previous line.
        width = shutil.get_terminal_size((100, 24)).columns - 1
        return line[:width].ljust(width)

    # ..... recording ............................................................................................
    def _open_record(self):
        import soundfile as sf

        path = Path(self.options.record)
        if path.suffix.lower() != ".wav":
            raise LiveError(f"{path}: --record writes WAV files; use a name ending in .wav")
        if not path.parent.exists():
            raise LiveError(f"{path}: the folder {path.parent} does not exist")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
        self._record_tmp = tmp
        self._record_file = sf.SoundFile(tmp, mode="w", samplerate=int(self.out_rate), channels=1,
                                         subtype="FLOAT", format="WAV")

    def _close_record(self, keep: bool):
        if self._record_file is None:
            return
        self._record_file.close()
        self._record_file = None
        if keep:
            os.chmod(self._record_tmp, 0o666 & ~_umask())
            os.replace(self._record_tmp, self.options.record)
        else:
            os.unlink(self._record_tmp)

    def _summary(self, wall_s: float, interrupted: bool) -> dict:
        s = self.stats
        mean_fraction = s.compute_s / s.audio_s if s.audio_s > 0 else 0.0
        summary = {
            "seconds": round(wall_s, 2),
            "audio_seconds": round(s.audio_s, 2),
            "compute_fraction": round(mean_fraction, 4),
            "hop_peak_fraction": round(s.max_fraction, 4),
            "latency_ms": round(self.latency_estimate_ms(), 1),
            "algorithmic_latency_ms": round(self.engine.algorithmic_latency_ms, 1),
            "overflows": s.overflows,
            "underflows": s.underflows,
            "device_underflows": s.device_underflows,
            "startup_underflows": s.startup_underflows,
            "margin_ms": round(1000.0 * self.margin_s, 1) if self.out_ring is not None else 0.0,
            "drift_trims": s.trims,
            "interrupted": interrupted,
            "record": self.options.record,
        }
        advice = None
        if mean_fraction > TOO_SLOW_FRACTION or (s.underflows > 3 and s.max_fraction > 1.0):
            advice = (f"This machine is too slow for these settings (conversion took {mean_fraction:.2f}x real "
                      f"time); {_slow_advice(self.options, self.engine)}.")
        elif s.underflows > 3:
            advice = ("Playback ran dry although conversion kept up: the system's audio scheduling is irregular; "
                      "try --latency high.")
        summary["advice"] = advice
        return summary


def format_summary(summary: dict) -> str:
    text = (f"summary: {summary['audio_seconds']:.1f} s converted in {summary['seconds']:.1f} s; compute "
            f"{summary['compute_fraction']:.3f}x real time (hop peak {summary['hop_peak_fraction']:.2f}x); "
            f"latency ~{summary['latency_ms']:.0f} ms (algorithmic {summary['algorithmic_latency_ms']:.1f} ms); "
            f"overflows {summary['overflows']}; underflows {summary['underflows']}")
    if summary.get("record"):
        text += f"; recorded to {summary['record']}"
    if summary.get("advice"):
        text += "\n" + summary["advice"]
    return text


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- entry point for the CLI ----------------------------------------------------------------------------
def build_engine(options: LiveOptions):
    """Model, target and engine from the options; every failure is a LiveError."""
    from vc.engine import DEFAULT_GATE_DB, EngineError, engine_for_mode
    from vc.model import ModelError, load_model
    from vc.speakers import SpeakerError, load_speaker

    try:
        model = load_model(options.model, device=options.device, threads=options.threads)
    except ModelError as exc:
        raise LiveError(str(exc)) from None
    try:
        target = load_speaker(options.target, model)
    except (SpeakerError, OSError, ValueError) as exc:
        raise LiveError(str(exc)) from None
    gate_db = None if not options.gate else (DEFAULT_GATE_DB if options.gate_db is None else options.gate_db)
    try:
        engine = engine_for_mode(model, target, "lowlat" if options.low_latency else "default",
                                 hop_ms=options.hop_ms, lookahead_ms=options.lookahead_ms, n_iter=options.n_iter,
                                 gate_db=gate_db, passthrough=options.passthrough)
    except EngineError as exc:
        raise LiveError(str(exc)) from None
    return model, engine


def run_live(options: LiveOptions, log=None) -> dict:
    """The whole vc-live run; returns the summary dict. Raises LiveError with a user-facing sentence."""
    if options.input_file is None or str(options.output_device).lower() != "none":
        sd = import_sounddevice()
    else:
        sd = None
    if options.input_file is not None and not Path(options.input_file).is_file():
        raise LiveError(f"{options.input_file}: no such file")
    model, engine = build_engine(options)
    describe = getattr(model, "describe", None)
    session = LiveSession(options, engine, sd=sd, log=log, model_description=describe() if describe else "")
    with NativeStderrFilter():
        return session.run()
