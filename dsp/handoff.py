"""Single-producer / single-consumer handoff of coefficient sets from a control thread to the audio thread.

The control thread (one writer) ``publish``es a complete set of normalised biquad sections and an output gain; the
audio thread (one reader) calls ``take`` once per block, inside numba and without the GIL. Nothing blocks and nothing
allocates on the reader's side, and the reader never sees half a set:

- Sets live in preallocated slots (``SLOTS``, a ring). The writer fills the slot after the newest one and only then
  advances the published sequence number, so the slot the reader is told to read was complete when it was told.
- Every slot has a seqlock counter: odd while the writer fills it, even once it is complete. The reader copies the
  slot into a scratch buffer, then checks that the counter is even and unchanged; a writer that lapped the ring
  during the copy (``SLOTS - 1`` newer sets published within one copy of a few hundred bytes) is caught there and
  the reader keeps what it had, taking the newest set on the next block.

The arrays are plain numpy memory, so the same handoff can sit in shared memory between processes.
"""

from __future__ import annotations

import numba
import numpy as np

SLOTS = 4


class CoefficientHandoff:
    """Preallocated slots for ``sections`` normalised sections ``(sections, 6)`` plus a linear output gain.

    ``publish`` is for one control thread; the numba function ``take`` (with ``arrays()``) for the audio thread.
    Each set carries an integer ``tag`` (for example a steering update's number) that the reader gets back, so a
    caller can tell which update is playing.
    """

    def __init__(self, sections: int) -> None:
        self.sections = int(sections)
        self.sos = np.zeros((SLOTS, self.sections, 6), dtype=np.float64)
        self.gain = np.ones(SLOTS, dtype=np.float64)
        self.tag = np.zeros(SLOTS, dtype=np.int64)
        self.slot_seq = np.zeros(SLOTS, dtype=np.int64)  # seqlock per slot: odd = being written
        self.published = np.zeros(1, dtype=np.int64)  # sequence number of the newest complete set (0 = none)
        # reader side: what it has taken, and a scratch copy validated before use
        self.seen = np.zeros(1, dtype=np.int64)
        self.scratch_sos = np.zeros((self.sections, 6), dtype=np.float64)
        self.scratch_meta = np.zeros(2, dtype=np.float64)  # gain, tag

    def publish(self, normalised_sos: np.ndarray, gain_linear: float, tag: int = 0) -> int:
        """Hand over a complete set (control thread only); returns its sequence number."""
        if normalised_sos.shape != (self.sections, 6):
            raise ValueError(f"expected {self.sections} sections, got shape {normalised_sos.shape}")
        seq = int(self.published[0]) + 1
        k = seq % SLOTS
        self.slot_seq[k] += 1  # odd: the reader will not trust this slot
        self.sos[k] = normalised_sos
        self.gain[k] = gain_linear
        self.tag[k] = tag
        self.slot_seq[k] += 1  # even: complete
        self.published[0] = seq  # only now does the reader look at slot k
        return seq

    def arrays(self):
        """The arrays ``take`` needs, in its argument order."""
        return (self.published, self.seen, self.sos, self.gain, self.tag, self.slot_seq, self.scratch_sos,
                self.scratch_meta)


@numba.njit(cache=True)
def take(published, seen, sos, gain, tag, slot_seq, scratch_sos, scratch_meta):  # pragma: no cover - compiled
    """Audio thread: copy the newest complete set into ``scratch_sos`` / ``scratch_meta`` (gain, tag).

    Returns the set's sequence number, or 0 when there is nothing new (or the slot was being rewritten: the newest
    set is taken on a later call). Reads the published sequence number once.
    """
    seq = published[0]
    if seq == seen[0]:
        return 0
    k = seq % sos.shape[0]
    before = slot_seq[k]
    if before & 1:
        return 0
    for s in range(sos.shape[1]):
        for j in range(6):
            scratch_sos[s, j] = sos[k, s, j]
    scratch_meta[0] = gain[k]
    scratch_meta[1] = tag[k]
    if slot_seq[k] != before:  # the writer lapped the ring during the copy: keep what we had
        return 0
    seen[0] = seq
    return seq
