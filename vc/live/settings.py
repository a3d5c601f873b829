"""vc-live's settings, split by who uses them: the engine (model, target, conversion), the devices (which
ones, at what rate and buffer size) and the session (where input comes from, recording, how long, status)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vc.engine import DEFAULT_GATE_DB
from vc.settings import ConversionSettings

BLOCK_MS = 10.0             # device callback size: small blocks, the engine does not care
RING_SECONDS = 4.0
STALL_SECONDS = 2.0         # no callback for this long while running: the device is gone
STATUS_PERIOD_S = 0.25
TOO_SLOW_FRACTION = 0.9     # compute / real time above this cannot keep up for long


class LiveError(Exception):
    """A problem the user can fix; the message is one or two sentences including the fix."""


@dataclass
class EngineSettings:
    """What `vc.engine.StreamingConverter` is built from. None: the mode's (or the engine's) default."""
    target: str
    model: str | None = None
    device: str = "auto"                # ONNX Runtime provider: auto, cpu or cuda
    threads: int | None = None
    low_latency: bool = False
    hop_ms: float | None = None
    lookahead_ms: float | None = None
    gate_db: float | None = DEFAULT_GATE_DB   # None: no noise gate
    passthrough: bool = False
    # What the conversion does (strength, harmonics, the words arguments, Griffin-Lim's iterations, ...)
    conversion: ConversionSettings = field(default_factory=ConversionSettings)
    source: str | None = None           # the speaker at the mic, enrolled (speaker.npy); None: learnt as they speak


@dataclass
class DeviceSettings:
    """PortAudio devices: index, part of a name or None (the system's default); output "none" only records."""
    input_device: str | None = None
    output_device: str | None = None
    samplerate: int | None = None       # None: each device's own default rate
    latency: str | float = "high"       # PortAudio's suggested device latency: "low", "high" or seconds

    @property
    def plays(self) -> bool:
        return self.output_device is None or str(self.output_device).lower() != "none"


@dataclass
class SessionSettings:
    input_file: str | None = None       # fed in real time instead of the microphone
    record: str | None = None           # WAV of what is played
    duration: float | None = None       # seconds; None: until Ctrl-C
    status: bool | None = None          # the status line; None: when stderr is a terminal


@dataclass
class LiveSettings:
    engine: EngineSettings
    devices: DeviceSettings = field(default_factory=DeviceSettings)
    session: SessionSettings = field(default_factory=SessionSettings)


@dataclass
class LiveStats:
    overflows: int = 0       # capture samples lost (ring full or PortAudio input overflow)
    underflows: int = 0      # playback blocks that ran dry after priming (or PortAudio output underflow)
    device_underflows: int = 0  # of those, the ones PortAudio reported (the device's own buffer ran dry)
    startup_underflows: int = 0  # dropouts while the playout settles, which size the margin
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

    def account(self, audio_s: float, compute_s: float, hop_s: float) -> None:
        """One worker block: `audio_s` seconds of input took `compute_s`; `hop_s` is the audio of the hops
        it completed (its burst of compute is measured against that)."""
        self.audio_s += audio_s
        self.compute_s += compute_s
        self.window_compute.append((audio_s, compute_s))
        while len(self.window_compute) > 1 and sum(a for a, _ in self.window_compute) > 2.0:
            self.window_compute.pop(0)
        if hop_s > 0:
            self.max_fraction = max(self.max_fraction, compute_s / hop_s)
