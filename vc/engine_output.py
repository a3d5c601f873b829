"""What the streaming engine does with samples once they are converted: hold them for its constant delay
(`SampleQueue`), fade the converted voice out between words (`NoiseGate`) and cross-fade to the dry input
when pass-through is on (`PassThroughMix`)."""

from __future__ import annotations

import numpy as np

GATE_STEP_PER_FRAME = 1.0 / 3.0   # a 30 ms release, and a 10 ms attack the output delay hides
CROSSFADE_MS = 10.0


class SampleQueue:
    """A growable FIFO of float32 samples (append at the end, take from the front) without per-call
    reallocation in the steady state."""

    def __init__(self, capacity: int = 4096):
        self._buf = np.zeros(max(16, capacity), np.float32)
        self._start = 0
        self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    def put(self, samples: np.ndarray) -> None:
        n = samples.shape[0]
        if self._end + n > self._buf.shape[0]:
            live = self._end - self._start
            if live + n > self._buf.shape[0] // 2:
                grown = np.zeros(max(2 * self._buf.shape[0], 2 * (live + n)), np.float32)
                grown[:live] = self._buf[self._start:self._end]
                self._buf = grown
            else:
                self._buf[:live] = self._buf[self._start:self._end]
            self._start, self._end = 0, live
        self._buf[self._end:self._end + n] = samples
        self._end += n

    def take(self, n: int) -> np.ndarray:
        if n > len(self):
            raise RuntimeError(f"internal timing error: {n} samples requested, {len(self)} queued")
        out = self._buf[self._start:self._start + n].copy()
        self._start += n
        return out

    def peek_all(self) -> np.ndarray:
        return self._buf[self._start:self._end]


class NoiseGate:
    """A gain per analysis frame: open while a frame is at least `gate_db` loud and for `hold_frames`
    after the last such frame, moving by at most GATE_STEP_PER_FRAME per frame; applied to samples by
    interpolating between frame centres, so it never clicks. gate_db None: always open."""

    def __init__(self, gate_db: float | None, hold_frames: int, hop_length: int):
        self.gate_db, self.hold_frames, self.hop_length = gate_db, int(hold_frames), int(hop_length)
        self._gains = SampleQueue()
        self._origin = 0          # absolute frame number of the first gain held
        self._gain = 0.0 if gate_db is not None else 1.0
        self._since_loud = self.hold_frames + 1
        self._emitted = 0         # samples gated so far

    def add_frames(self, levels_db: np.ndarray) -> None:
        if self.gate_db is None:
            return
        gains = np.empty(levels_db.shape[0], np.float32)
        g = self._gain
        for i, level in enumerate(levels_db):
            self._since_loud = 0 if level >= self.gate_db else self._since_loud + 1
            goal = 1.0 if self._since_loud <= self.hold_frames else 0.0
            g = min(goal, g + GATE_STEP_PER_FRAME) if goal > g else max(goal, g - GATE_STEP_PER_FRAME)
            gains[i] = g
        self._gain = g
        self._gains.put(gains)

    def apply(self, samples: np.ndarray) -> np.ndarray:
        """The next samples of the output time line (frame t centred on sample t * hop_length), gated."""
        if self.gate_db is None:
            self._emitted += samples.shape[0]
            return samples
        hop = self.hop_length
        positions = np.arange(self._emitted, self._emitted + samples.shape[0], dtype=np.float64) / hop
        known = self._gains.peek_all()
        gain = np.interp(positions, self._origin + np.arange(known.shape[0]), known).astype(np.float32)
        self._emitted += samples.shape[0]
        # Frames whose centre lies before the next output sample are only needed as interpolation anchors.
        drop = max(0, int(self._emitted // hop) - self._origin - 1)
        if drop:
            self._gains.take(drop)
            self._origin += drop
        return samples * gain


class PassThroughMix:
    """Converted (wet) and input (dry) samples, both delayed alike, cross-faded over CROSSFADE_MS whenever
    `passthrough` changes, so A/B switching is seamless and stays in time."""

    def __init__(self, sr: int, passthrough: bool):
        self.passthrough = bool(passthrough)
        self._step = 1.0 / max(1, int(round(CROSSFADE_MS * sr / 1000)))
        self._wet = 0.0 if self.passthrough else 1.0

    def mix(self, wet: np.ndarray, dry: np.ndarray) -> np.ndarray:
        goal = 0.0 if self.passthrough else 1.0
        if self._wet == goal:
            return wet if goal == 1.0 else dry
        n = wet.shape[0]
        ramp = self._wet + (self._step if goal > self._wet else -self._step) * np.arange(1, n + 1)
        ramp = np.clip(ramp, 0.0, 1.0).astype(np.float32)
        self._wet = float(ramp[-1])
        return ramp * wet + (1.0 - ramp) * dry


class FrameDelay:
    """Per-frame values (arrays of frames along axis 0, by name) held back `delay` frames: what a hop's
    frames need (their level, voicing, F0, ...) while a cross-fade keeps them open. The first `delay`
    frames out are padding, `fill[name]`, like the silence an encoder window starts with."""

    def __init__(self, delay: int, fill: dict[str, float]):
        self.delay, self.fill = int(delay), fill
        self._held: dict[str, np.ndarray] = {}

    def push(self, **values: np.ndarray | None) -> dict[str, np.ndarray | None]:
        """The values of as many frames as were pushed, each `delay` frames older (None stays None)."""
        out = {}
        for name, new in values.items():
            if new is None:
                out[name] = None
                continue
            held = self._held.get(name)
            if held is None:
                held = np.full((self.delay,) + new.shape[1:], self.fill[name], new.dtype)
            both = np.concatenate([held, new])
            out[name], self._held[name] = both[:new.shape[0]], both[new.shape[0]:]
        return out
