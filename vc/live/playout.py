"""The playback side's timing: how much silence to queue ahead of the converted audio, and keeping it so.

The engine returns as many samples as it gets, but does its work in one burst when a hop completes. The
playback ring is therefore primed with a margin of silence, sized by the session from the measured compute
time of a hop. A dropout re-primes it and grows the margin (by 10 ms while the streams settle, the first
SETTLE_S seconds of output, when streams that are starting up stall once or twice and those dropouts are
counted apart; by half afterwards). Input and output clocks may drift apart: a queue that stays above
margin + DRIFT_TOLERANCE_S for DRIFT_CHECK_S is trimmed back.

`fill` runs in the output callback (copy and count only), `deliver` in the worker; the clock is a
parameter so that tests can drive the timing.
"""

from __future__ import annotations

import math
import time

import numpy as np

from vc.live.ring import RingBuffer
from vc.live.settings import LiveStats

MIN_MARGIN_MS = 30.0
MAX_MARGIN_MS = 500.0
MARGIN_GROWTH_INTERVAL_S = 0.25
DRIFT_CHECK_S = 3.0         # clock drift: how often the playback queue's low-water mark is compared...
DRIFT_TOLERANCE_S = 0.04    # ...with the margin, and how much above it is left alone
SETTLE_S = 1.5              # after the first output: dropouts resize the margin and are not counted
# Beside one other CPU-bound process the worker can wait a few scheduler periods before its hop's burst
# runs: with 5 ms of slack, 2 of 11 runs of the PulseAudio test underflowed once after settling (a 60 ms
# margin for a 51 ms peak hop); 25 ms costs 20 ms of latency.
SCHEDULING_SLACK_S = 0.025


def initial_margin_s(worst_hop_s: float) -> float:
    """Silence queued before the first output: the burst of one hop with room to spare, and the scheduling
    slack a busy machine needs, within limits."""
    return min(MAX_MARGIN_MS / 1000.0, max(MIN_MARGIN_MS / 1000.0, 1.5 * worst_hop_s + SCHEDULING_SLACK_S))


class Playout:
    def __init__(self, rate: int, margin_s: float, stats: LiveStats, *, ring_seconds: float = 4.0,
                 max_block: int = 16384, clock=time.monotonic):
        self.rate = int(rate)
        self.ring = RingBuffer(int(ring_seconds * self.rate))
        self.margin_s = float(margin_s)
        self.stats = stats
        self.clock = clock
        self.primed = False
        self._reprime = False
        self._settle_until = math.inf
        self._last_growth = -math.inf
        self._low_water = 1 << 62        # lowest queue level since the last drift check
        self._next_drift_check = math.inf
        self._drop_pending = 0
        self._scratch = np.zeros(max_block, np.float32)

    def settling(self) -> bool:
        return self.clock() < self._settle_until

    # --- output callback side -----------------------------------------------------------------------------
    def fill(self, frames: int, device_underflow: bool = False, input_finished: bool = False) -> np.ndarray:
        """The next `frames` samples to play (a view of a scratch buffer); a dry queue is padded with
        silence and, once primed and while input lasts, counts as an underflow and asks for re-priming."""
        settling = self.settling()
        if device_underflow and self.primed:
            if settling:
                self.stats.startup_underflows += 1
            else:
                self.stats.underflows += 1
                self.stats.device_underflows += 1
        if frames > self._scratch.shape[0]:  # PortAudio gave a larger block than announced: rare
            self._scratch = np.zeros(frames, np.float32)
        buf = self._scratch[:frames]
        got = self.ring.read_into(buf)
        self._low_water = min(self._low_water, self.ring.available())
        if got < frames:
            buf[got:] = 0.0
            if self.primed and not input_finished:
                if settling:
                    self.stats.startup_underflows += 1
                else:
                    self.stats.underflows += 1
                self._reprime = True
        return buf

    # --- worker side ----------------------------------------------------------------------------------------
    def deliver(self, out: np.ndarray) -> None:
        """Queue converted samples: prime (or re-prime) first, and leave out any excess drift has built."""
        if not self.primed or self._reprime:
            self._prime()
        now = self.clock()
        if now >= self._next_drift_check:
            # Input comes in bursts, so only the queue's lowest level over a few seconds says whether it
            # holds more than the margin for good; then the excess is left out of the next output.
            excess = self._low_water - int((self.margin_s + DRIFT_TOLERANCE_S) * self.rate)
            if 0 < excess < self.ring.capacity:
                self._drop_pending += excess
                self.stats.trims += 1
            self._low_water = self.ring.capacity
            self._next_drift_check = now + DRIFT_CHECK_S
        if self._drop_pending:
            dropped = min(self._drop_pending, out.size)
            self._drop_pending -= dropped
            out = out[dropped:]
        self.ring.write(out)

    def _prime(self) -> None:
        now = self.clock()
        if self._reprime and now - self._last_growth > MARGIN_GROWTH_INTERVAL_S:
            # The queue ran dry: this system needs more slack. Grow it, and start over at the new size.
            # (Once per interval: a device recovering from an xrun drains several blocks at once, and that
            # burst is one event, not many. Streams starting up stall once or twice; that says little
            # about the steady state, so the margin grows slowly then.)
            grown = self.margin_s + 0.01 if now < self._settle_until else self.margin_s * 1.5
            self.margin_s = min(MAX_MARGIN_MS / 1000.0, grown)
            self._last_growth = now
        self.ring.write_zeros(int(self.margin_s * self.rate))
        self._reprime = False
        if not self.primed:
            self._settle_until = now + SETTLE_S
            self._next_drift_check = self._settle_until + DRIFT_CHECK_S
        self.primed = True
