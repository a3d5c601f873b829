"""A private, user-mode PulseAudio server for tests that need real audio devices.

The server gets its own runtime directory and HOME (mode 700), so it neither sees nor disturbs a desktop
session, and it is stopped by its own pid. All of its sinks are null sinks: they run on the system clock
without a sound card.

The routing used by the live test puts the stimulus and the application's output on the two channels of
one stereo bus, so one recording holds both on the same clock and their offset is the end-to-end delay:

    stimulus --> sink "vc_stim" --(remap: left)-->  bus "vc_bus" (stereo null sink)
    bus.monitor left --(remap-source)--> source "vc_mic" --> application capture
    application playback --> sink "vc_spk" --(remap: right)--> bus "vc_bus"
    bus.monitor (left = stimulus, right = application output) --> recorder

Remap sinks and sources are filters inside the bus's own rendering, so they add no latency of their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from helpers import interruptible

RATE = 48000
BUS = "vc_bus"
STIMULUS_SINK = "vc_stim"
APP_SINK = "vc_spk"
APP_SOURCE = "vc_mic"


class PulseError(RuntimeError):
    pass


def available() -> str | None:
    """None when the PulseAudio binaries are installed, else what is missing."""
    missing = [tool for tool in ("pulseaudio", "pactl", "pacat") if shutil.which(tool) is None]
    if missing:
        return ("missing " + ", ".join(missing) + ": apt-get install -y --no-install-recommends "
                "pulseaudio pulseaudio-utils libasound2-plugins")
    return None


class PulseServer:
    """Start with `start()` (or use as a context manager); `env` is what clients need in their environment."""

    def __init__(self, rate: int = RATE):
        self.rate = rate
        self.root: Path | None = None
        self.pid: int | None = None
        self.env: dict[str, str] = {}

    # --- life cycle -------------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> "PulseServer":
        reason = available()
        if reason:
            raise PulseError(reason)
        self.root = Path(tempfile.mkdtemp(prefix="vc-pulse-"))
        runtime = self.root / "runtime"
        home = self.root / "home"
        for d in (runtime, home):
            d.mkdir(mode=0o700)
        # Clients must never start a daemon of their own (e.g. after a test kills this one).
        client_conf = home / ".config" / "pulse" / "client.conf"
        client_conf.parent.mkdir(parents=True, mode=0o700)
        client_conf.write_text("autospawn = no\n")
        self.env = dict(os.environ)
        self.env.update({"XDG_RUNTIME_DIR": str(runtime), "HOME": str(home),
                         "PULSE_RUNTIME_PATH": str(runtime / "pulse")})
        # Any server address, cookie or client.conf from the caller's session must not leak in.
        for key in ("PULSE_SERVER", "PULSE_SINK", "PULSE_SOURCE", "PULSE_COOKIE", "PULSE_CLIENTCONFIG",
                    "DBUS_SESSION_BUS_ADDRESS"):
            self.env.pop(key, None)
        r = self.rate
        modules = [
            "module-native-protocol-unix",
            f"module-null-sink sink_name={BUS} format=float32le rate={r} channels=2 "
            "channel_map=front-left,front-right",
            f"module-remap-sink sink_name={STIMULUS_SINK} master={BUS} format=float32le rate={r} channels=1 "
            "channel_map=mono master_channel_map=front-left remix=no",
            f"module-remap-sink sink_name={APP_SINK} master={BUS} format=float32le rate={r} channels=1 "
            "channel_map=mono master_channel_map=front-right remix=no",
            f"module-remap-source source_name={APP_SOURCE} master={BUS}.monitor format=float32le rate={r} "
            "channels=1 channel_map=mono master_channel_map=front-left remix=no",
        ]
        cmd = ["pulseaudio", "-n", "--daemonize=yes", "--exit-idle-time=-1", "--use-pid-file=yes",
               "--disallow-exit", "--log-target=stderr",
               # Where permitted (root in CI), the server keeps its real-time scheduling on a busy machine.
               "--high-priority=yes", "--realtime=yes"]
        for m in modules:
            cmd += ["-L", m]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            self._cleanup_dir()
            raise PulseError(f"pulseaudio did not start (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        pid_file = runtime / "pulse" / "pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pid_file.exists() and self.pactl("info", check=False).returncode == 0:
                self.pid = int(pid_file.read_text().split()[0])
                break
            time.sleep(0.05)
        else:
            self.stop()
            raise PulseError("pulseaudio started but does not answer pactl info")
        self.pactl("set-default-sink", APP_SINK)
        self.pactl("set-default-source", APP_SOURCE)
        return self

    def stop(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _alive(self.pid):
                time.sleep(0.05)
            if _alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
            self.pid = None
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "PulseServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- clients ----------------------------------------------------------------------------------------
    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10)
        if check and done.returncode != 0:
            raise PulseError(f"pactl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def _index_of(self, kind: str, name: str) -> str | None:
        for line in self.pactl("list", "short", kind).stdout.splitlines():
            fields = line.split("\t")
            if len(fields) > 1 and fields[1] == name:
                return fields[0]
        return None

    def client_streams(self, sink: str = APP_SINK, source: str = APP_SOURCE) -> tuple[int, int]:
        """(client playback streams into `sink`, client capture streams from `source`)."""
        counts = []
        for kind, owner_kind, owner in (("sink-inputs", "sinks", sink), ("source-outputs", "sources", source)):
            index = self._index_of(owner_kind, owner)
            lines = self.pactl("list", "short", kind).stdout.splitlines()
            counts.append(sum(1 for line in lines
                              if line.split("\t")[1:2] == [index] and "protocol-native" in line))
        return counts[0], counts[1]

    def wait_for_client_streams(self, playback: int = 1, capture: int = 1, timeout: float = 30.0) -> None:
        """Block until an application plays into APP_SINK and captures from APP_SOURCE."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            have = self.client_streams()
            if have[0] >= playback and have[1] >= capture:
                return
            time.sleep(0.05)
        raise PulseError(f"no application streams on {APP_SINK}/{APP_SOURCE} after {timeout:g} s "
                         f"(have {self.client_streams()})")

    def recorder(self, source: str = BUS + ".monitor", channels: int = 2, latency_ms: int = 20) -> "Recorder":
        return Recorder(self, source, channels, latency_ms)

    def play(self, samples: np.ndarray, sink: str = STIMULUS_SINK, latency_ms: int = 20) -> subprocess.Popen:
        """Start playing mono float32 samples at the server's rate into `sink`; returns the pacat process."""
        proc = subprocess.Popen(
            ["pacat", "--playback", f"--device={sink}", "--format=float32le", f"--rate={self.rate}",
             "--channels=1", f"--latency-msec={latency_ms}", "--raw"],
            stdin=subprocess.PIPE, env=self.env, stderr=subprocess.PIPE)
        data = np.ascontiguousarray(samples, dtype="<f4").tobytes()

        def feed():
            try:
                proc.stdin.write(data)
                proc.stdin.close()
            except BrokenPipeError:
                pass

        threading.Thread(target=feed, daemon=True).start()
        return proc


class Recorder:
    """Records a source with `pacat --record`, reading its output continuously (nothing is lost at stop)."""

    def __init__(self, server: PulseServer, source: str, channels: int, latency_ms: int):
        self.channels = channels
        self._chunks: list[bytes] = []
        self.proc = subprocess.Popen(
            ["pacat", "--record", f"--device={source}", "--format=float32le", f"--rate={server.rate}",
             f"--channels={channels}", f"--latency-msec={latency_ms}", "--raw"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=server.env, preexec_fn=interruptible)
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                return
            self._chunks.append(chunk)

    def frames(self) -> int:
        return sum(len(c) for c in self._chunks) // (4 * self.channels)

    def stop(self) -> np.ndarray:
        """Stop recording; (n, channels) float32."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(timeout=5)
        data = b"".join(self._chunks)
        usable = len(data) // (4 * self.channels) * 4 * self.channels
        return np.frombuffer(data[:usable], dtype="<f4").reshape(-1, self.channels).copy()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers signal 0; pulseaudio daemonized is not our child, so this is its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        return state != "Z"
    except (OSError, IndexError):
        return False
