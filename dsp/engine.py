"""Real-time biquad cascade in numba: the code that plays the coefficients the optimiser found.

The per-block kernel runs in the audio thread: it allocates nothing, takes no locks and touches no Python objects.
Coefficients and state are float64 (float32 state drifts by up to 1 dB on low, high-Q bands); audio in and out is
float32, laid out ``(channels, frames)`` (pass ``indata.T`` from a sounddevice callback: a view, no copy).

Steady blocks run a kernel generated for the section count (``kernels.py``: coefficients and state in registers,
channels in pairs); blocks that ramp run the generic kernel below. Both do the same float64 arithmetic in the same
order, so they agree bit for bit.

Coefficient changes: ``set_sos`` stages new coefficients; the next block interpolates every coefficient linearly,
sample by sample, from the old to the new set across that block, then holds the new set. Linear interpolation of
normalised biquads is stable: the set of stable (a1, a2) pairs (the stability triangle |a2| < 1, |a1| < 1 + a2) is
convex, so every intermediate section is stable too. The state carries over unchanged, so nothing restarts and
nothing clicks.
"""

from __future__ import annotations

import numba
import numpy as np

from .kernels import steady_kernel


@numba.njit(cache=True, nogil=True)
def _cascade_block(x, out, sos, target, state, ramp, gain):  # pragma: no cover - compiled
    """Transposed direct form II over a block, any section count; the ramping path.

    x, out: (channels, frames) float32 (may be the same array); sos, target: (sections, 6) float64, a0 == 1;
    state: (channels, sections, 2) float64; ramp: interpolate sos -> target across this block; gain: linear.
    Same arithmetic, in the same order, as the generated steady-state kernels (``kernels.py``).
    """
    channels, frames = x.shape
    sections = sos.shape[0]
    inv = 1.0 / frames
    for c in range(channels):
        for n in range(frames):
            v = np.float64(x[c, n])
            t = (n + 1) * inv
            for s in range(sections):
                b0 = sos[s, 0]
                b1 = sos[s, 1]
                b2 = sos[s, 2]
                a1 = sos[s, 4]
                a2 = sos[s, 5]
                if ramp:
                    b0 += (target[s, 0] - b0) * t
                    b1 += (target[s, 1] - b1) * t
                    b2 += (target[s, 2] - b2) * t
                    a1 += (target[s, 4] - a1) * t
                    a2 += (target[s, 5] - a2) * t
                y = b0 * v + state[c, s, 0]
                state[c, s, 0] = b1 * v - a1 * y + state[c, s, 1]
                state[c, s, 1] = b2 * v - a2 * y
                v = y
            out[c, n] = v * gain


class BiquadCascade:
    """A stateful cascade of second-order sections for block-wise playback.

    Args:
        sos: ``(sections, 6)`` coefficients ``b0, b1, b2, a0, a1, a2`` (normalised here to a0 == 1).
        channels: channel count of the audio it will process.
        output_gain_db: gain applied after the sections.

    ``process(block, out=None)`` filters ``(channels, frames)`` float32 audio, keeping state across calls, so any
    block size gives the same output as one call on the whole signal. With ``out`` given (may be ``block`` itself)
    nothing is allocated.

    Example:
        >>> from timbreclip.dsp.settings import EQSettings, Band
        >>> eq = BiquadCascade(EQSettings(48000, [Band("peak", 1e3, 6.0, 1.0)]).sos(), channels=2)
        >>> y = eq.process(np.zeros((2, 256), np.float32))
    """

    def __init__(self, sos: np.ndarray, channels: int, output_gain_db: float = 0.0) -> None:
        self.channels = int(channels)
        self._sos = self._normalised(sos)
        self._target = self._sos.copy()
        self._ramp = False
        self._gain = 10.0 ** (output_gain_db / 20.0)
        self._state = np.zeros((self.channels, self._sos.shape[0], 2), dtype=np.float64)
        self._steady = steady_kernel(self._sos.shape[0])

    @staticmethod
    def _normalised(sos: np.ndarray) -> np.ndarray:
        sos = np.array(sos, dtype=np.float64, copy=True).reshape(-1, 6)
        return np.ascontiguousarray(sos / sos[:, 3:4])

    @property
    def sos(self) -> np.ndarray:
        """The coefficients that play once any pending ramp is done."""
        return self._target.copy()

    def set_sos(self, sos: np.ndarray, output_gain_db: float | None = None) -> None:
        """Stage new coefficients (same section count); the next block ramps to them. Not for the audio thread:
        call it from the control thread between blocks, or prepare arrays and use ``set_sos_inplace``."""
        new = self._normalised(sos)
        if new.shape != self._sos.shape:
            raise ValueError(f"expected {self._sos.shape[0]} sections, got {new.shape[0]}")
        self.set_sos_inplace(new)
        if output_gain_db is not None:
            self._gain = 10.0 ** (output_gain_db / 20.0)

    def set_sos_inplace(self, normalised_sos: np.ndarray) -> None:
        """Copy already-normalised ``(sections, 6)`` coefficients into the staged target (no allocation)."""
        if self._ramp:  # a ramp still pending: start the new one from where the old one was headed
            self._sos[:] = self._target
        self._target[:] = normalised_sos
        self._ramp = True

    def reset(self) -> None:
        """Clear the filter state (silence in, silence out)."""
        self._state[:] = 0.0

    def process(self, block: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Filter ``block`` ``(channels, frames)`` float32; returns ``out`` (allocated only when not given)."""
        if out is None:
            out = np.empty(block.shape, dtype=np.float32)
        if block.shape[1] == 0:
            return out
        if self._ramp:
            _cascade_block(block, out, self._sos, self._target, self._state, True, self._gain)
            self._sos[:] = self._target
            self._ramp = False
        else:
            self._steady(block, out, self._sos, self._state, self._gain)
        return out

    def warm_up(self) -> None:
        """Compile (or load from cache) the kernel before the first real block reaches the audio thread."""
        probe = np.zeros((self.channels, 4), dtype=np.float32)
        saved = self._state.copy()
        self._steady(probe, probe, self._sos, self._state, 1.0)
        _cascade_block(probe, probe, self._sos, self._target, self._state, True, 1.0)
        self._state[:] = saved
