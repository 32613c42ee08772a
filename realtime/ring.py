"""A preallocated mono history of the live stream: the audio callback writes, the steering worker reads.

One writer (the audio thread, through a numba kernel: no allocation, no locks) and any number of readers. The writer
stores the block's channel mean, then advances the frame counter, then stamps the time; a reader copies the newest
``frames`` and checks afterwards that the writer did not lap the part it copied (it retries if it did). The arrays
can live in shared memory (``create_shared`` / ``attach``), so a steering worker in another process reads the same
history without a copy through a pipe.
"""

from __future__ import annotations

import time
from multiprocessing import shared_memory

import numba
import numpy as np

_HEADER_BYTES = 16  # int64 frames written, float64 perf_counter time of the last write


@numba.njit(cache=True)
def _write_mono(data, written, block):  # pragma: no cover - compiled
    """Append the channel mean of ``block (channels, frames)`` to the ring ``data`` at ``written[0]``."""
    channels, frames = block.shape
    capacity = data.shape[0]
    start = written[0]
    inv = 1.0 / channels
    for n in range(frames):
        acc = 0.0
        for c in range(channels):
            acc += block[c, n]
        data[(start + n) % capacity] = acc * inv
    written[0] = start + frames


@numba.njit(cache=True)
def _copy_latest(data, end, out):  # pragma: no cover - compiled
    capacity = data.shape[0]
    frames = out.shape[0]
    first = end - frames
    for n in range(frames):
        out[n] = data[(first + n) % capacity]


class AudioRing:
    """Mono float32 ring of ``capacity_frames`` with a frame counter and the time of the newest write."""

    def __init__(self, capacity_frames: int, buffer=None) -> None:
        self.capacity = int(capacity_frames)
        if buffer is None:
            buffer = bytearray(_HEADER_BYTES + 4 * self.capacity)
        self._buffer = buffer
        self.written = np.frombuffer(buffer, dtype=np.int64, count=1, offset=0)
        self.written_at = np.frombuffer(buffer, dtype=np.float64, count=1, offset=8)
        self.data = np.frombuffer(buffer, dtype=np.float32, count=self.capacity, offset=_HEADER_BYTES)
        self._shm: shared_memory.SharedMemory | None = None

    # -- shared memory --------------------------------------------------------------------------------------
    @classmethod
    def create_shared(cls, capacity_frames: int) -> "AudioRing":
        shm = shared_memory.SharedMemory(create=True, size=_HEADER_BYTES + 4 * int(capacity_frames))
        ring = cls(capacity_frames, shm.buf)
        ring._shm = shm
        ring.written[0] = 0
        ring.written_at[0] = 0.0
        return ring

    @classmethod
    def attach(cls, name: str, capacity_frames: int) -> "AudioRing":
        shm = shared_memory.SharedMemory(name=name)
        ring = cls(capacity_frames, shm.buf)
        ring._shm = shm
        return ring

    @property
    def shared_name(self) -> str | None:
        return None if self._shm is None else self._shm.name

    def close(self, unlink: bool = False) -> None:
        if self._shm is not None:
            self.written = self.written_at = self.data = None  # drop the views before the mapping goes
            try:
                self._shm.close()
            except BufferError:  # a callback that could not be stopped still holds a view: the mapping stays
                pass  # until the process exits; the name is still removed below
            if unlink:
                self._shm.unlink()
            self._shm = None

    # -- the audio thread -----------------------------------------------------------------------------------
    def write(self, block: np.ndarray, now: float) -> None:
        """Append ``block (channels, frames)`` (mixed to mono); ``now``: the caller's clock at this block."""
        _write_mono(self.data, self.written, block)
        self.written_at[0] = now

    def prepare(self, channels: int) -> None:
        """Compile the writer for C- and Fortran-ordered blocks (``indata.T``) before the stream starts."""
        scratch = np.zeros(8, np.float32)
        count = np.zeros(1, np.int64)
        for order in "CF":
            _write_mono(scratch, count, np.zeros((channels, 4), np.float32, order=order))
        _copy_latest(scratch, 8, np.zeros(4, np.float32))

    # -- readers --------------------------------------------------------------------------------------------
    def latest(self, frames: int, out: np.ndarray | None = None) -> tuple[np.ndarray, int, float]:
        """The newest ``frames`` (fewer if fewer were written), the frame count at its end, and the time of the
        write that ended it."""
        frames = min(int(frames), self.capacity // 2)
        for _ in range(100):
            stamp = float(self.written_at[0])
            end = int(self.written[0])
            n = min(frames, end)
            buf = np.empty(n, np.float32) if out is None or out.shape[0] != n else out
            _copy_latest(self.data, end, buf)
            if int(self.written[0]) - (end - n) <= self.capacity:  # nothing we copied was overwritten meanwhile
                return buf, end, stamp
            time.sleep(0)
        raise RuntimeError("the audio ring is being overwritten faster than it can be read")
