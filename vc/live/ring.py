"""The lock-free ring buffers between the audio callbacks and the worker thread."""

from __future__ import annotations

import numpy as np


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

    def _spans(self, position: int, n: int) -> tuple[slice, slice]:
        """The ring's slots for n samples from the running count `position`: up to the end, then from 0."""
        start = position % self.capacity
        first = min(n, self.capacity - start)
        return slice(start, start + first), slice(0, n - first)

    def write(self, samples: np.ndarray) -> int:
        """Copy as many samples as fit; returns how many were written (the rest is dropped)."""
        n = max(0, min(samples.shape[0], self.space()))
        tail, head = self._spans(self._written, n)
        split = tail.stop - tail.start
        self._buf[tail] = samples[:split]
        self._buf[head] = samples[split:n]
        self._written += n
        return n

    def write_zeros(self, n: int) -> int:
        n = max(0, min(n, self.space()))
        for span in self._spans(self._written, n):
            self._buf[span] = 0.0
        self._written += n
        return n

    def read_into(self, out: np.ndarray) -> int:
        """Fill `out` (1-D) from the ring as far as possible; returns how many samples were copied."""
        n = max(0, min(out.shape[0], self.available()))
        tail, head = self._spans(self._read, n)
        split = tail.stop - tail.start
        out[:split] = self._buf[tail]
        out[split:n] = self._buf[head]
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
