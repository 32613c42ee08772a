"""Loudness matching and the anti-clip rule: one place, used by ``eq`` (files), ``TextEQ`` (Python) and the live loop.

- ``LoudnessMeter``: ITU-R BS.1770-4 integrated loudness, streamed: K-weighting (pyloudnorm's two filters, their
  state carried across chunks), the energy of every 100 ms hop kept (a 30-minute stereo file: 18,000 hops x 2
  floats), and at the end the 400 ms blocks (4 hops, 75% overlap) gated at -70 LUFS absolute and -10 LU relative,
  as pyloudnorm's ``integrated_loudness`` does on the whole array (a test checks they agree). Audio shorter than one
  block gets its plain RMS level in dB. Past 5 channels (BS.1770's weights stop there) each channel is gated on its
  own and the powers summed.
- ``match_and_guard``: the output gain of an EQ: the loudness match (input loudness minus the EQ'd loudness,
  optionally limited), then the anti-clip rule: if the EQ'd, matched signal would peak above ``CEILING_DBFS``
  (-0.1 dBFS), the gain is lowered until it peaks there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CEILING_DBFS = -0.1
BLOCK_S, HOP_S = 0.4, 0.1
ABSOLUTE_GATE, RELATIVE_GATE = -70.0, -10.0
_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)


def _k_weighting(rate: float) -> list[tuple[np.ndarray, np.ndarray]]:
    import pyloudnorm

    meter = pyloudnorm.Meter(rate)
    return [(np.asarray(f.b, np.float64), np.asarray(f.a, np.float64)) for f in meter._filters.values()]


class LoudnessMeter:
    """Integrated loudness of audio given in chunks ``(channels, frames)`` or ``(frames,)`` (see module docstring)."""

    def __init__(self, rate: float, channels: int) -> None:
        self.rate, self.channels = float(rate), int(channels)
        self.filters = _k_weighting(self.rate)
        self.state = [np.zeros((self.channels, max(len(a), len(b)) - 1)) for b, a in self.filters]
        self.frames = 0
        self.hops: list[np.ndarray] = []  # energy (sum of squares) of each complete 100 ms hop, per channel
        self.partial = np.zeros(self.channels)
        self.raw_power = 0.0  # plain sum of squares (the short-audio fallback)

    def _boundary(self, k: int) -> int:
        return int(HOP_S * k * self.rate)

    def add(self, chunk: np.ndarray) -> None:
        from scipy.signal import lfilter

        x = np.atleast_2d(np.asarray(chunk, np.float64))
        if x.shape[0] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {x.shape[0]}")
        self.raw_power += float(np.sum(x ** 2))
        for k, (b, a) in enumerate(self.filters):
            x, self.state[k] = lfilter(b, a, x, axis=-1, zi=self.state[k])
        sq = x ** 2
        start = self.frames
        pos = 0
        while pos < sq.shape[1]:
            end_of_hop = self._boundary(len(self.hops) + 1) - start
            take = min(sq.shape[1], end_of_hop)
            self.partial += sq[:, pos:take].sum(axis=1)
            if take == end_of_hop:
                self.hops.append(self.partial)
                self.partial = np.zeros(self.channels)
            pos = take
        self.frames += sq.shape[1]

    def lufs(self) -> float:
        """The integrated loudness so far (LUFS; -120 for silence)."""
        if self.frames < int(BLOCK_S * self.rate):
            rms = self.raw_power / max(1, self.frames * self.channels)
            return 10 * math.log10(rms + 1e-12)
        hops = np.array(self.hops + [self.partial]).T  # (channels, hops)
        seconds = self.frames / self.rate
        blocks = int(round((seconds - BLOCK_S) / HOP_S)) + 1
        per = int(round(BLOCK_S / HOP_S))
        cum = np.concatenate([np.zeros((self.channels, 1)), np.cumsum(hops, axis=1)], axis=1)
        idx = np.arange(blocks)
        z = (cum[:, np.minimum(idx + per, cum.shape[1] - 1)] - cum[:, np.minimum(idx, cum.shape[1] - 1)])
        z /= BLOCK_S * self.rate
        if self.channels <= len(_WEIGHTS):
            value = _gated(z, np.array(_WEIGHTS[: self.channels]))
        else:
            per_channel = [_gated(z[c:c + 1], np.ones(1)) for c in range(self.channels)]
            powers = [10 ** ((v + 0.691) / 10) for v in per_channel if math.isfinite(v)]
            value = 10 * math.log10(sum(powers)) - 0.691 if powers else -math.inf
        return float(value) if math.isfinite(value) else -120.0


def _gated(z: np.ndarray, weights: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
        levels = -0.691 + 10 * np.log10(weights @ z)
    above = levels >= ABSOLUTE_GATE
    if not above.any():
        return -math.inf
    relative = -0.691 + 10 * math.log10(float(weights @ z[:, above].mean(axis=1))) + RELATIVE_GATE
    keep = (levels > relative) & above
    if not keep.any():
        return -math.inf
    return -0.691 + 10 * math.log10(float(weights @ z[:, keep].mean(axis=1)))


def loudness_lufs(audio: np.ndarray, rate: float) -> float:
    """Integrated loudness of a whole signal ``(frames,)`` or ``(channels, frames)``."""
    x = np.atleast_2d(audio)
    meter = LoudnessMeter(rate, x.shape[0])
    meter.add(x)
    return meter.lufs()


@dataclass(frozen=True)
class OutputGain:
    match_db: float  # the loudness match
    clip_db: float  # the anti-clip reduction (<= 0)

    @property
    def total_db(self) -> float:
        return self.match_db + self.clip_db


def match_and_guard(lufs_before: float, lufs_after: float, peak_after_dbfs: float, match: bool = True,
                    limit_db: float | None = None, ceiling_dbfs: float = CEILING_DBFS) -> OutputGain:
    """The output gain for an EQ'd signal whose loudness is ``lufs_after`` (the source's: ``lufs_before``) and
    whose peak is ``peak_after_dbfs``, both before any output gain (see module docstring)."""
    gain = (lufs_before - lufs_after) if match else 0.0
    if limit_db is not None:
        gain = max(-limit_db, min(limit_db, gain))
    peak = peak_after_dbfs + gain
    clip = min(0.0, ceiling_dbfs - peak) if peak > ceiling_dbfs else 0.0
    return OutputGain(round(gain, 6), round(clip, 6))
