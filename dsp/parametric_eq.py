"""A differentiable parametric EQ in torch, whose bands are the very biquads the numba engine plays.

Parameters live in an unconstrained space and are mapped through a sigmoid onto declared ranges: frequency and Q on
a log scale, gain linearly in dB. An optimiser can therefore never leave the ranges, and the ranges are data
(``BandRanges``), documented and saved with the settings' provenance.

Two ways to apply it, both differentiable:
- ``gain_on_grid`` / ``apply_to_power``: |H|^2 sampled on an STFT's bin frequencies, multiplied into a power
  spectrogram. Cheap; used to feed an encoder. It is the exact steady-state response of the IIR cascade at those
  frequencies (the numba engine's measured impulse response agrees within 0.01 dB); what it leaves out is the
  filter's transient, i.e. time smearing shorter than a frame for all but very narrow low bands.
- ``forward(audio)``: full-length frequency-domain filtering. The signal is zero-padded by a tail long enough for
  the slowest band's impulse response to decay below -120 dB (from its pole radius), so the result equals
  ``scipy.signal.sosfilt`` up to that truncation, then cut back to the input's length.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .biquad import BAND_CODE, cascade_power, cascade_response, normalise, rbj_coefficients
from .settings import Band, EQSettings

DEFAULT_BAND_TYPES = ("low_shelf", "peak", "peak", "peak", "peak", "peak", "peak", "high_shelf")


@dataclass(frozen=True)
class BandRanges:
    """Declared parameter ranges: ``freq_hz`` and ``q`` mapped on a log scale, ``gain_db`` linearly.

    The upper frequency defaults to ``min(20 kHz, 0.45 x sample_rate)`` (see ``ParametricEQ``).
    """

    freq_hz: tuple[float, float] = (20.0, 20000.0)
    gain_db: tuple[float, float] = (-12.0, 12.0)
    q: tuple[float, float] = (0.3, 10.0)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


class ParametricEQ(nn.Module):
    """N-band parametric EQ (default 8: low shelf, 6 peaks, high shelf) with parameters in declared ranges.

    Args:
        sample_rate: rate (Hz) the EQ is optimised at; the upper frequency bound is ``0.45 x sample_rate`` at most.
        band_types: the type of each band (``DEFAULT_BAND_TYPES``).
        ranges: ``BandRanges``.
        batch_size: ``None`` for one EQ, or B for B independent EQs (parameters ``(B, bands)``).

    Shapes: ``freq_hz``, ``gain_db``, ``q`` are ``(bands,)`` or ``(B, bands)``; ``forward`` takes
    ``(..., time)`` audio (``(B, ..., time)`` when batched).

    Example:
        >>> eq = ParametricEQ(16000)
        >>> y = eq(torch.randn(1, 16000), 16000)  # flat at initialisation: y == x up to float error
    """

    def __init__(
        self,
        sample_rate: float,
        band_types: tuple[str, ...] = DEFAULT_BAND_TYPES,
        ranges: BandRanges = BandRanges(),
        batch_size: int | None = None,
    ) -> None:
        super().__init__()
        self.sample_rate = float(sample_rate)
        self.band_types = tuple(band_types)
        hi = min(ranges.freq_hz[1], 0.45 * self.sample_rate)
        self.ranges = BandRanges((ranges.freq_hz[0], hi), ranges.gain_db, ranges.q)
        self.register_buffer("codes", torch.tensor([BAND_CODE[t] for t in self.band_types]), persistent=False)
        shape = (len(self.band_types),) if batch_size is None else (batch_size, len(self.band_types))
        self.raw_freq = nn.Parameter(torch.zeros(shape))
        self.raw_gain = nn.Parameter(torch.zeros(shape))
        self.raw_q = nn.Parameter(torch.zeros(shape))
        self.reset_parameters()

    # -- parameter mapping ----------------------------------------------------------------------------------
    def reset_parameters(self, q: float = 0.7071) -> None:
        """Flat EQ: 0 dB gains, band frequencies spread log-uniformly over the range, Q = ``q``."""
        n = len(self.band_types)
        with torch.no_grad():
            # shelves sit near the ends, peaks in between
            positions = torch.tensor([(i + 0.5) / n for i in range(n)])
            self.raw_freq.copy_(torch.logit(positions).expand_as(self.raw_freq))
            self.raw_gain.copy_(torch.full_like(self.raw_gain, self._gain_to_raw(0.0)))
            self.raw_q.copy_(torch.full_like(self.raw_q, _logit(self._log_position(q, self.ranges.q))))

    @staticmethod
    def _log_position(value: float, bounds: tuple[float, float]) -> float:
        return math.log(value / bounds[0]) / math.log(bounds[1] / bounds[0])

    def _gain_to_raw(self, gain_db: float) -> float:
        lo, hi = self.ranges.gain_db
        return _logit((gain_db - lo) / (hi - lo))

    @property
    def freq_hz(self) -> torch.Tensor:
        lo, hi = self.ranges.freq_hz
        return lo * (hi / lo) ** torch.sigmoid(self.raw_freq)

    @property
    def gain_db(self) -> torch.Tensor:
        lo, hi = self.ranges.gain_db
        return lo + (hi - lo) * torch.sigmoid(self.raw_gain)

    @property
    def q(self) -> torch.Tensor:
        lo, hi = self.ranges.q
        return lo * (hi / lo) ** torch.sigmoid(self.raw_q)

    def set_bands(self, freq_hz=None, gain_db=None, q=None) -> None:
        """Set physical values (clipped just inside the ranges)."""
        with torch.no_grad():
            for value, raw, bounds, log in (
                (freq_hz, self.raw_freq, self.ranges.freq_hz, True),
                (gain_db, self.raw_gain, self.ranges.gain_db, False),
                (q, self.raw_q, self.ranges.q, True),
            ):
                if value is None:
                    continue
                v = torch.as_tensor(value, dtype=torch.float64).expand_as(raw)
                if log:
                    p = torch.log(v / bounds[0]) / math.log(bounds[1] / bounds[0])
                else:
                    p = (v - bounds[0]) / (bounds[1] - bounds[0])
                raw.copy_(torch.logit(p.clamp(1e-6, 1 - 1e-6)).to(raw.dtype))

    # -- responses ------------------------------------------------------------------------------------------
    def sos(self, sample_rate: float | None = None) -> torch.Tensor:
        """Normalised float64 sections ``(..., bands, 6)`` designed at ``sample_rate`` (default: the EQ's own).

        Always computed in float64, whatever the module's dtype: float32 coefficients of low bands are off by a few
        hundredths of a dB, and the optimiser must see exactly the filter the engine plays."""
        rate = self.sample_rate if sample_rate is None else float(sample_rate)
        f, g, q = (t.to(torch.float64) for t in (self.freq_hz, self.gain_db, self.q))
        coeffs = rbj_coefficients(self.codes, f, g, q, rate, xp=torch)
        return normalise(coeffs)

    def response(self, freqs_hz: torch.Tensor, sample_rate: float | None = None) -> torch.Tensor:
        """Complex response ``(..., freqs)`` of the cascade at ``freqs_hz``."""
        rate = self.sample_rate if sample_rate is None else float(sample_rate)
        sos = self.sos(rate)
        return cascade_response(sos, freqs_hz.to(device=sos.device, dtype=torch.float64), rate, xp=torch)

    def gain_on_grid(self, n_fft: int, sample_rate: float | None = None) -> torch.Tensor:
        """Power gain ``|H|^2`` ``(..., n_fft // 2 + 1)`` on the rfft bin frequencies of an ``n_fft`` STFT."""
        rate = self.sample_rate if sample_rate is None else float(sample_rate)
        freqs = torch.fft.rfftfreq(n_fft, d=1.0 / rate, dtype=torch.float64, device=self.raw_gain.device)
        return cascade_power(self.sos(rate), freqs, rate, xp=torch).to(self.raw_gain.dtype)

    def apply_to_power(self, power: torch.Tensor, n_fft: int, sample_rate: float | None = None) -> torch.Tensor:
        """Multiply a power spectrogram ``(..., n_fft // 2 + 1, frames)`` by ``|H|^2`` (broadcast over frames)."""
        return power * self.gain_on_grid(n_fft, sample_rate)[..., None]

    def tail_samples(self, sample_rate: float) -> int:
        """Samples for the slowest band's impulse response to decay by 120 dB (from its largest pole radius)."""
        with torch.no_grad():
            sos = self.sos(sample_rate).reshape(-1, 6)
            a1, a2 = sos[:, 4], sos[:, 5]
            disc = (a1 * a1 - 4 * a2).to(torch.complex128)
            r = torch.maximum((-a1 + torch.sqrt(disc)).abs(), (-a1 - torch.sqrt(disc)).abs()) / 2
            r = float(r.max().clamp(max=1 - 1e-9))
        return int(math.ceil(math.log(1e-6) / math.log(r))) if r > 0 else 1

    def forward(self, audio: torch.Tensor, sample_rate: float | None = None) -> torch.Tensor:
        """Full-length frequency-domain filtering of ``(..., time)`` audio (see the module docstring)."""
        rate = self.sample_rate if sample_rate is None else float(sample_rate)
        frames = audio.shape[-1]
        n = 1 << int(math.ceil(math.log2(frames + self.tail_samples(rate))))
        spectrum = torch.fft.rfft(audio.to(torch.float64), n=n)
        freqs = torch.fft.rfftfreq(n, d=1.0 / rate, dtype=torch.float64)
        h = self.response(freqs, rate)
        if h.dim() > 1 and audio.dim() > h.dim():  # batched EQ on (B, channels, time): broadcast over channels
            h = h.reshape(h.shape[0], *([1] * (audio.dim() - 2)), h.shape[-1])
        y = torch.fft.irfft(spectrum * h, n=n)[..., :frames]
        return y.to(audio.dtype)

    @classmethod
    def from_raw(cls, sample_rate: float, raw: torch.Tensor, band_types: tuple[str, ...] = DEFAULT_BAND_TYPES,
                 ranges: BandRanges = BandRanges()) -> "ParametricEQ":
        """A batched EQ whose unconstrained parameters are ``raw (B, bands, 3)`` (freq, gain, Q logits), kept as
        given: a network that predicts them gets gradients through every method (the steering predictor)."""
        eq = cls(sample_rate, band_types, ranges, batch_size=raw.shape[0])
        for k, name in enumerate(("raw_freq", "raw_gain", "raw_q")):
            eq._parameters.pop(name)
            setattr(eq, name, raw[..., k])
        return eq

    def raw(self) -> torch.Tensor:
        """The unconstrained parameters as ``(..., bands, 3)`` (the layout ``from_raw`` takes)."""
        return torch.stack([self.raw_freq, self.raw_gain, self.raw_q], dim=-1)

    def select(self, members) -> "ParametricEQ":
        """A copy of a batched EQ holding one member (``members`` an int: a single EQ) or several (a sequence of
        indices: batched)."""
        single = isinstance(members, int)
        rows = members if single else torch.as_tensor(members)
        out = ParametricEQ(self.sample_rate, self.band_types, self.ranges, batch_size=None if single else len(rows))
        with torch.no_grad():
            for name in ("raw_freq", "raw_gain", "raw_q"):
                getattr(out, name).copy_(getattr(self, name)[rows])
        return out

    # -- interchange ----------------------------------------------------------------------------------------
    def to_settings(self, sample_rate: float | None = None, index: int | None = None) -> EQSettings:
        """Physical bands as ``EQSettings`` recorded at ``sample_rate`` (the bands do not change with the rate)."""
        rate = self.sample_rate if sample_rate is None else float(sample_rate)
        f, g, q = (t.detach().double().cpu() for t in (self.freq_hz, self.gain_db, self.q))
        if f.dim() == 2:
            if index is None:
                raise ValueError("a batched EQ needs index= to pick one setting")
            f, g, q = f[index], g[index], q[index]
        bands = [Band(t, float(f[i]), float(g[i]), float(q[i])) for i, t in enumerate(self.band_types)]
        return EQSettings(rate, bands, provenance={"ranges": asdict(self.ranges)})

    @classmethod
    def from_settings(cls, settings: EQSettings, sample_rate: float | None = None, ranges: BandRanges = BandRanges()):
        rate = settings.sample_rate if sample_rate is None else sample_rate
        eq = cls(rate, tuple(b.type for b in settings.bands), ranges)
        eq.set_bands(
            np.array([b.freq_hz for b in settings.bands]),
            np.array([b.gain_db for b in settings.bands]),
            np.array([b.q for b in settings.bands]),
        )
        return eq
