"""Live conversion: microphone -> `vc.engine.StreamingConverter` -> speakers, with a one-line status.

Threads and buffers
-------------------
Capture and playback are two separate PortAudio streams (full duplex through PulseAudio's ALSA plugin has
been seen to capture zeros). Their callbacks only copy samples into or out of preallocated single-producer
single-consumer ring buffers (`ring`) and count problems; they never wait and never allocate beyond the
small array PortAudio hands them. A worker thread (`worker`) does everything else: resampling to and from
16 kHz with soxr's streaming resampler, the engine (model and Griffin-Lim), recording (`recorder`). The main
thread (`session`) starts and stops things, prints the status line and turns every failure into one
sentence with a fix. `playout` keeps the playback queue's margin (priming, dropouts, clock drift);
`devices` chooses devices through sounddevice; `settings` holds the engine, device and session settings.

The latency shown is the engine's algorithmic latency + the playout margin + one capture block + both
resamplers' delays + the device latencies PortAudio reports; a sound server's own buffering comes on top
(about 70 ms more with PulseAudio's ALSA plug-in on the machine this was measured on).

A/B: Enter on the terminal (or SIGUSR1) switches between the converted voice and pass-through, which has
the same delay, so the comparison is in time.
"""

from vc.live.devices import format_device_list, import_sounddevice, resolve_device
from vc.live.playout import SETTLE_S, Playout
from vc.live.ring import RingBuffer
from vc.live.report import format_summary
from vc.live.session import LiveSession, build_engine, run_live
from vc.live.settings import DeviceSettings, EngineSettings, LiveError, LiveSettings, LiveStats, SessionSettings

__all__ = ["DeviceSettings", "EngineSettings", "LiveError", "LiveSession", "LiveSettings", "LiveStats", "Playout",
           "RingBuffer", "SETTLE_S", "SessionSettings", "build_engine", "format_device_list", "format_summary",
           "import_sounddevice", "resolve_device", "run_live"]
