"""Real-time biquad cascade in numba: the code that plays the coefficients the optimiser found.

``process`` is safe to call from an audio callback: it allocates no audio buffers, takes no locks and touches no
Python objects inside its kernels (numba). The kernels deliberately keep the GIL: they take microseconds, and
releasing it would let another Python thread take it mid-callback and make the callback wait for it back (measured:
the live loop's callback p99 rose with a nogil kernel). Coefficients and state are float64 (float32 state drifts by up
to 1 dB on low, high-Q bands); audio in and out is float32, laid out ``(channels, frames)`` (pass ``indata.T`` from a
sounddevice callback: a Fortran-ordered view, no copy). Call ``prepare(channels, max_block_frames)`` before the
stream starts: it compiles (or loads from numba's cache) every layout a callback passes, so nothing compiles in the
audio thread, and it sets the limits each block is checked against.

Steady blocks run a kernel generated for the section count (``kernels.py``: coefficients and state in registers,
channels in pairs, an odd last channel alone); blocks that glide run the generic kernel below. Both do the same
float64 arithmetic in the same order, so they agree bit for bit.

Coefficient changes reach the audio thread through a single-producer/single-consumer handoff (``handoff.py``): the
control thread publishes complete sets; the audio thread looks once per block and never sees half a set. A new set
starts a glide of ``glide_frames`` samples (default 20 ms at the stream's rate, spanning as many blocks as it takes):
every coefficient and the output gain move linearly, sample by sample, from where the glide is now to the new set.
A retarget during a glide continues from wherever the glide is, so A -> B -> C never jumps. Linear interpolation of
normalised biquads is stable: the set of stable (a1, a2) pairs (the stability triangle |a2| < 1, |a1| < 1 + a2) is
convex, so every intermediate section is stable too. The filter state carries over unchanged, so nothing restarts.
The glide position counts samples from the glide's start, so the output does not depend on how the audio is cut into
blocks.
"""

from __future__ import annotations

import numba
import numpy as np

from .handoff import CoefficientHandoff, take
from .kernels import steady_kernel


GLIDE_SECONDS = 0.020
MAX_GENERATED_SECTIONS = 32  # past this, a generic kernel: a generated one would take long to compile for little


@numba.njit(cache=True)
def _generic_steady(x, out, sos, state, gain):  # pragma: no cover - compiled
    """The steady kernel for any section count (same arithmetic, in the same order, as the generated ones)."""
    channels, frames = x.shape
    sections = sos.shape[0]
    for c in range(channels):
        for n in range(frames):
            v = np.float64(x[c, n])
            for s in range(sections):
                y = sos[s, 0] * v + state[c, s, 0]
                state[c, s, 0] = sos[s, 1] * v - sos[s, 4] * y + state[c, s, 1]
                state[c, s, 1] = sos[s, 2] * v - sos[s, 5] * y
                v = y
            out[c, n] = v * gain  # default coefficient/gain glide: long enough to be click-free, short enough to feel immediate


@numba.njit(cache=True)
def _glide_block(x, out, origin, target, gains, glide, state):  # pragma: no cover - compiled
    """Transposed direct form II over a block while coefficients glide; any section count.

    x, out: (channels, frames) float32 (may be the same array); origin, target: (sections, 6) float64, a0 == 1;
    gains: [origin gain, target gain] (linear); glide: [elapsed, length] in samples (int64), advanced here;
    state: (channels, sections, 2) float64. Sample n of the block plays origin + (target - origin) * e / length with
    e = elapsed + n + 1 (target once e >= length). Same filter arithmetic, in the same order, as ``kernels.py``.
    """
    channels, frames = x.shape
    sections = target.shape[0]
    elapsed = glide[0]
    length = glide[1]
    inv = 1.0 / length
    for c in range(channels):
        for n in range(frames):
            e = elapsed + n + 1
            v = np.float64(x[c, n])
            if e < length:
                t = e * inv
                for s in range(sections):
                    b0 = origin[s, 0] + (target[s, 0] - origin[s, 0]) * t
                    b1 = origin[s, 1] + (target[s, 1] - origin[s, 1]) * t
                    b2 = origin[s, 2] + (target[s, 2] - origin[s, 2]) * t
                    a1 = origin[s, 4] + (target[s, 4] - origin[s, 4]) * t
                    a2 = origin[s, 5] + (target[s, 5] - origin[s, 5]) * t
                    y = b0 * v + state[c, s, 0]
                    state[c, s, 0] = b1 * v - a1 * y + state[c, s, 1]
                    state[c, s, 1] = b2 * v - a2 * y
                    v = y
                g = gains[0] + (gains[1] - gains[0]) * t
            else:
                for s in range(sections):
                    y = target[s, 0] * v + state[c, s, 0]
                    state[c, s, 0] = target[s, 1] * v - target[s, 4] * y + state[c, s, 1]
                    state[c, s, 1] = target[s, 2] * v - target[s, 5] * y
                    v = y
                g = gains[1]
            out[c, n] = v * g
    elapsed += frames
    if elapsed >= length:
        origin[:, :] = target
        gains[0] = gains[1]
        elapsed = length
    glide[0] = elapsed


@numba.njit(cache=True)
def _begin_block(published, seen, slot_sos, slot_gain, slot_tag, slot_seq, scratch_sos, scratch_meta,
                 origin, target, gains, glide, glide_frames, counters):  # pragma: no cover - compiled
    """Once per block, before filtering: take a newly published set, if any, and start a glide to it from where the
    current glide is. Returns True while the block must glide. counters: [blocks, seq, tag, block of take]."""
    seq = take(published, seen, slot_sos, slot_gain, slot_tag, slot_seq, scratch_sos, scratch_meta)
    if seq:
        elapsed = glide[0]
        length = glide[1]
        if elapsed < length:  # mid-glide: the new glide starts at the coefficients playing now
            t = elapsed / length
            for s in range(origin.shape[0]):
                for j in range(6):
                    origin[s, j] = origin[s, j] + (target[s, j] - origin[s, j]) * t
            gains[0] = gains[0] + (gains[1] - gains[0]) * t
        else:
            origin[:, :] = target
            gains[0] = gains[1]
        target[:, :] = scratch_sos
        gains[1] = scratch_meta[0]
        if glide_frames > 0:
            glide[0] = 0
            glide[1] = glide_frames
        else:  # hard switch (tests use it to show what a glide prevents)
            origin[:, :] = target
            gains[0] = gains[1]
            glide[0] = 0
            glide[1] = 0
        counters[1] = seq
        counters[2] = np.int64(scratch_meta[1])
        counters[3] = counters[0]
    counters[0] += 1
    return glide[0] < glide[1]


def _db_to_linear(gain_db: float) -> float:
    return 10.0 ** (gain_db / 20.0)


class BiquadCascade:
    """A stateful cascade of second-order sections for block-wise playback.

    Args:
        sos: ``(sections, 6)`` coefficients ``b0, b1, b2, a0, a1, a2`` (normalised here to a0 == 1).
        channels: channel count of the audio it will process.
        output_gain_db: gain applied after the sections.
        sample_rate: the stream's rate in Hz (sets the default glide).
        glide_frames: length of a coefficient/gain glide in samples (default ``GLIDE_SECONDS`` at
            ``sample_rate``; 0 = hard switch).

    ``process(block, out=None)`` filters ``(channels, frames)`` float32 audio, keeping state across calls, so any
    block size gives the same output as one call on the whole signal. With ``out`` given (may be ``block`` itself)
    nothing is allocated. ``set_sos`` / ``set_gain_db`` are for the control thread (one at a time); ``process`` for
    the audio thread.

    Example:
        >>> from timbreclip.dsp.settings import EQSettings, Band
        >>> eq = BiquadCascade(EQSettings(48000, [Band("peak", 1e3, 6.0, 1.0)]).sos(), channels=2)
        >>> eq.prepare(2, 256)
        >>> y = eq.process(np.zeros((2, 256), np.float32))
    """

    def __init__(self, sos: np.ndarray, channels: int, output_gain_db: float = 0.0, sample_rate: float = 48000.0,
                 glide_frames: int | None = None) -> None:
        self.channels = int(channels)
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        first = self._normalised(sos)
        self.glide_frames = int(round(GLIDE_SECONDS * sample_rate)) if glide_frames is None else int(glide_frames)
        if self.glide_frames < 0:
            raise ValueError(f"glide_frames must be >= 0, got {glide_frames}")
        self._origin = first.copy()
        self._target = first.copy()
        self._gains = np.full(2, _db_to_linear(output_gain_db))
        self._glide = np.zeros(2, dtype=np.int64)  # elapsed, length: not gliding
        self._state = np.zeros((self.channels, first.shape[0], 2), dtype=np.float64)
        self.counters = np.zeros(4, dtype=np.int64)  # blocks processed, seq / tag / block index of the last take
        self.handoff = CoefficientHandoff(first.shape[0])
        self._take_args = self.handoff.arrays()
        sections = first.shape[0]
        self._steady = steady_kernel(sections) if sections <= MAX_GENERATED_SECTIONS else _generic_steady
        self._control_sos = first.copy()  # control side: what was last published
        self._control_gain_db = float(output_gain_db)
        self.max_block_frames: int | None = None

    @staticmethod
    def _normalised(sos: np.ndarray) -> np.ndarray:
        sos = np.array(sos, dtype=np.float64, copy=True).reshape(-1, 6)
        return np.ascontiguousarray(sos / sos[:, 3:4])

    @property
    def sections(self) -> int:
        return self._target.shape[0]

    @property
    def sos(self) -> np.ndarray:
        """The coefficients last handed over (they play once the audio thread has taken them and glided)."""
        return self._control_sos.copy()

    @property
    def output_gain_db(self) -> float:
        return self._control_gain_db

    # -- control thread -------------------------------------------------------------------------------------
    def set_sos(self, sos: np.ndarray, output_gain_db: float | None = None, tag: int = 0) -> int:
        """Hand new coefficients (same section count) and optionally a new output gain to the audio thread; the
        next block starts a glide to them. Control thread only. Returns the set's sequence number."""
        new = self._normalised(sos)
        if new.shape != self._target.shape:
            raise ValueError(f"expected {self.sections} sections, got {new.shape[0]}")
        return self.set_sos_inplace(new, output_gain_db, tag)

    def set_sos_inplace(self, normalised_sos: np.ndarray, output_gain_db: float | None = None, tag: int = 0) -> int:
        """``set_sos`` for already-normalised ``(sections, 6)`` coefficients (no allocation). Control thread only."""
        if output_gain_db is not None:
            self._control_gain_db = float(output_gain_db)
        self._control_sos[:] = normalised_sos
        return self.handoff.publish(self._control_sos, _db_to_linear(self._control_gain_db), tag)

    def set_gain_db(self, output_gain_db: float, tag: int = 0) -> int:
        """Glide the output gain to ``output_gain_db`` (coefficients unchanged). Control thread only."""
        return self.set_sos_inplace(self._control_sos, output_gain_db, tag)

    def reset(self) -> None:
        """Clear the filter state (silence in, silence out)."""
        self._state[:] = 0.0

    # -- audio thread ---------------------------------------------------------------------------------------
    def _check(self, block: np.ndarray, out: np.ndarray) -> None:
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"block of shape {block.shape}: expected ({self.channels}, frames)")
        if block.dtype != np.float32 or out.dtype != np.float32:
            raise ValueError(f"blocks must be float32, got {block.dtype} in and {out.dtype} out")
        if out.shape != block.shape:
            raise ValueError(f"out has shape {out.shape}, block {block.shape}")
        if self.max_block_frames is not None and block.shape[1] > self.max_block_frames:
            raise ValueError(f"block of {block.shape[1]} frames: prepared for at most {self.max_block_frames}")

    def process(self, block: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Filter ``block`` ``(channels, frames)`` float32; returns ``out`` (allocated only when not given)."""
        if out is None:
            out = np.empty(block.shape, dtype=np.float32)
        self._check(block, out)
        if block.shape[1] == 0:
            return out
        if _begin_block(*self._take_args, self._origin, self._target, self._gains, self._glide, self.glide_frames,
                        self.counters):
            _glide_block(block, out, self._origin, self._target, self._gains, self._glide, self._state)
        else:
            self._steady(block, out, self._target, self._state, self._gains[1])
        return out

    # -- before the stream starts ---------------------------------------------------------------------------
    def prepare(self, channels: int, max_block_frames: int | None) -> None:
        """Validate the stream's shape and compile every kernel for the layouts a callback passes (C order, and
        Fortran order as ``indata.T`` is; in and out independently), so nothing compiles in the audio thread.
        Every later block is checked against ``channels`` and ``max_block_frames``."""
        if int(channels) != self.channels:
            raise ValueError(f"this cascade holds state for {self.channels} channels, the stream has {channels}")
        if max_block_frames is not None and int(max_block_frames) < 1:
            raise ValueError(f"max_block_frames must be >= 1, got {max_block_frames}")
        frames = 4 if max_block_frames is None else min(int(max_block_frames), 64)
        state = np.zeros_like(self._state)
        origin, target, gains = self._origin.copy(), self._target.copy(), self._gains.copy()
        for x_order in "CF":
            for out_order in "CF":
                x = np.zeros((self.channels, frames), np.float32, order=x_order)
                out = np.zeros((self.channels, frames), np.float32, order=out_order)
                self._steady(x, out, target, state, 1.0)
                _glide_block(x, out, origin, target, gains, np.array([0, 2 * frames], np.int64), state)
        probe = CoefficientHandoff(self.sections)
        _begin_block(*probe.arrays(), origin, target, gains, np.zeros(2, np.int64), 0, np.zeros(4, np.int64))
        self.max_block_frames = None if max_block_frames is None else int(max_block_frames)

    def warm_up(self) -> None:
        """Compile (or load from cache) the kernels for every layout, with no block-length limit."""
        self.prepare(self.channels, None)
