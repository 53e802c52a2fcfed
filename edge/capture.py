"""Between capture and inference: a bounded buffer that never blocks the capture thread,
and a ring of recent audio that clips are cut from."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from earwitness.shared.audio import Waveform
from earwitness.shared.frontend import PATCH_HOP_SAMPLES


@dataclass(frozen=True)
class Chunk:
    start: int  # position of the first sample in the capture stream
    samples: Waveform


class CaptureBuffer:
    """Capture puts, inference gets. When inference falls behind and more than
    ``max_samples`` are waiting, the oldest audio is dropped in whole 0.48 s hops (each
    hop lost is one analysis window that will not exist) and counted.

    ``backpressure=True`` is for sources that are not live (a file replayed as fast as
    possible): there nothing is lost by waiting, so ``put`` waits for room instead.
    """

    def __init__(self, max_samples: int, backpressure: bool = False) -> None:
        self.max_samples = max(max_samples, 2 * PATCH_HOP_SAMPLES)
        self.backpressure = backpressure
        self._chunks: deque[Chunk] = deque()
        self._size = 0
        self._position = 0
        self._cond = threading.Condition()
        self._closed = False
        self.dropped_samples = 0

    @property
    def dropped_windows(self) -> int:
        return self.dropped_samples // PATCH_HOP_SAMPLES

    @property
    def depth_samples(self) -> int:
        return self._size

    def put(self, samples: Waveform) -> None:
        with self._cond:
            # Not live: wait until the whole chunk fits (or the buffer is empty, for a
            # chunk larger than the buffer), and never drop. Waiting only while full
            # and then dropping the overflow lost most of a replay whose files are not
            # whole seconds long: one short tail and every later chunk overflowed.
            while (
                self.backpressure
                and self._size
                and self._size + samples.size > self.max_samples
                and not self._closed
            ):
                self._cond.wait(0.5)
            self._chunks.append(Chunk(self._position, samples))
            self._position += samples.size
            self._size += samples.size
            if self._size > self.max_samples and not self.backpressure:
                self._drop(self._size - self.max_samples)
            self._cond.notify()

    def _drop(self, excess: int) -> None:
        to_drop = -(-excess // PATCH_HOP_SAMPLES) * PATCH_HOP_SAMPLES
        while to_drop > 0 and self._chunks:
            head = self._chunks[0]
            if head.samples.size <= to_drop:
                self._chunks.popleft()
                to_drop -= head.samples.size
                self._size -= head.samples.size
                self.dropped_samples += head.samples.size
            else:
                self._chunks[0] = Chunk(head.start + to_drop, head.samples[to_drop:])
                self._size -= to_drop
                self.dropped_samples += to_drop
                to_drop = 0

    def get(self, timeout: float) -> Chunk | None:
        """Next chunk, or None on timeout or when closed and empty."""
        with self._cond:
            if not self._chunks and not self._closed:
                self._cond.wait(timeout)
            if not self._chunks:
                return None
            chunk = self._chunks.popleft()
            self._size -= chunk.samples.size
            if self.backpressure:
                self._cond.notify_all()
            return chunk

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        with self._cond:
            return self._closed and not self._chunks


class AudioRing:
    """The last ``capacity`` samples, addressed by absolute stream position."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._buf = np.zeros(capacity, dtype=np.float32)
        self.end = 0  # absolute position one past the newest sample
        self._valid_from = 0  # positions before this were never written (gaps)

    def write(self, start: int, samples: Waveform) -> None:
        if start > self.end:  # a gap (dropped audio): it reads as silence
            self._zero(self.end, start)
        n = samples.size
        if n >= self.capacity:
            samples = samples[-self.capacity :]
            start += n - self.capacity
            n = self.capacity
        idx = start % self.capacity
        first = min(n, self.capacity - idx)
        self._buf[idx : idx + first] = samples[:first]
        self._buf[: n - first] = samples[first:]
        self.end = max(self.end, start + n)

    def _zero(self, start: int, stop: int) -> None:
        for pos in range(start, stop, self.capacity):
            seg_end = min(stop, pos + self.capacity)
            idx = pos % self.capacity
            length = seg_end - pos
            first = min(length, self.capacity - idx)
            self._buf[idx : idx + first] = 0
            self._buf[: length - first] = 0

    @property
    def start(self) -> int:
        return max(0, self.end - self.capacity)

    def read(self, start: int, stop: int) -> Waveform:
        """Samples in [start, stop), clipped to what the ring still holds."""
        start = max(start, self.start)
        stop = min(stop, self.end)
        if stop <= start:
            return np.zeros(0, dtype=np.float32)
        idx = start % self.capacity
        n = stop - start
        first = min(n, self.capacity - idx)
        return np.concatenate([self._buf[idx : idx + first], self._buf[: n - first]])
