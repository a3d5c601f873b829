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
