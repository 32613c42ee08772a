"""The audio front end: waveform -> power spectrogram -> (mel) log features, normalised per clip.

The configuration is data (``FrontEndConfig``), saved inside every checkpoint and export manifest. Two kinds:
- ``mel`` (the CPU default): 16 kHz, n_fft 1024, hop 256, 64 mel bands, log power;
- ``linear`` (Wav2CLIP's): 16 kHz, n_fft 512, hop 353, linear-frequency log power (257 bins).

Normalisation is per clip: each clip's log spectrogram is standardised by its own mean and standard deviation.
Wav2CLIP standardises with the statistics of the whole batch tensor, so its embeddings depend on what else is in
the batch; ours never do.

A model at 16 kHz hears nothing above 8 kHz: an EQ band up there changes nothing it can measure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

LOG_FLOOR = 1e-7


@dataclass(frozen=True)
class FrontEndConfig:
    """Front-end settings. ``window_seconds`` is the clip length the encoder sees (longer audio is windowed)."""

    sample_rate: int = 16000
    window_seconds: float = 4.0
    kind: str = "mel"  # "mel" or "linear"
    n_fft: int = 1024
    hop: int = 256
    n_mels: int = 64
    f_min_hz: float = 0.0
    f_max_hz: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("mel", "linear"):
            raise ValueError(f"front-end kind must be 'mel' or 'linear', got {self.kind!r}")

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def n_bins(self) -> int:
        """Linear-frequency bins of the STFT."""
        return self.n_fft // 2 + 1

    @property
    def n_features(self) -> int:
        """Rows of the feature image the encoder sees."""
        return self.n_mels if self.kind == "mel" else self.n_bins

    def n_frames(self, samples: int | None = None) -> int:
        return (self.window_samples if samples is None else samples) // self.hop + 1

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def wav2clip(cls) -> "FrontEndConfig":
        return cls(kind="linear", n_fft=512, hop=353)


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_filterbank(config: FrontEndConfig) -> np.ndarray:
    """Triangular HTK-mel filters ``(n_mels, n_bins)``, each normalised to unit area (Slaney-style), so a filter
    averages the power under it."""
    f_max = config.f_max_hz or config.sample_rate / 2.0
    bins = np.fft.rfftfreq(config.n_fft, 1.0 / config.sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(config.f_min_hz), hz_to_mel(f_max), config.n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - bins[None, :]) / np.maximum(upper - centre, 1e-9)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    # very low mel bands can fall between bins: give each at least its nearest bin
    for m in range(config.n_mels):
        if weights[m].sum() == 0:
            weights[m, int(np.argmin(np.abs(bins - centre[m, 0])))] = 1.0
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


class FrontEnd(nn.Module):
    """Waveform ``(batch, samples)`` at ``config.sample_rate`` -> features ``(batch, 1, n_features, frames)``.

    Split in two so that augmentation can act on linear-frequency power: ``power`` then ``features_from_power``.
    """

    def __init__(self, config: FrontEndConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        if config.kind == "mel":
            self.register_buffer("filters", torch.from_numpy(mel_filterbank(config)), persistent=False)
        else:
            self.filters = None

    def power(self, audio: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` -> power spectrogram ``(batch, n_bins, frames)`` (centred STFT, Hann window)."""
        spec = torch.stft(audio, self.config.n_fft, self.config.hop, window=self.window, center=True,
                          return_complex=True)
        return spec.real.square() + spec.imag.square()

    def project(self, power: torch.Tensor) -> torch.Tensor:
        """Linear power ``(..., n_bins, frames)`` -> band power ``(..., n_features, frames)`` (mel or identity)."""
        if self.filters is None:
            return power
        return torch.matmul(self.filters, power)

    @staticmethod
    def normalise(band_power: torch.Tensor) -> torch.Tensor:
        """Log, then standardise each clip by its own statistics: ``(batch, F, T)`` -> ``(batch, 1, F, T)``."""
        return FrontEnd.standardise(torch.log(band_power + LOG_FLOOR))

    @staticmethod
    def standardise(x: torch.Tensor) -> torch.Tensor:
        """Standardise log features ``(batch, F, T)`` per clip -> ``(batch, 1, F, T)``."""
        mean = x.mean(dim=(-2, -1), keepdim=True)
        std = x.std(dim=(-2, -1), keepdim=True)
        return ((x - mean) / (std + 1e-5)).unsqueeze(1)

    def features_from_power(self, power: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.project(power))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.features_from_power(self.power(audio))


def resample(audio: np.ndarray, from_rate: float, to_rate: float) -> np.ndarray:
    """Polyphase resampling along the last axis (scipy), for any pair of rates."""
    if from_rate == to_rate:
        return audio
    from fractions import Fraction

    from scipy.signal import resample_poly

    ratio = Fraction(int(round(to_rate)), int(round(from_rate))).limit_denominator(1000)
    return resample_poly(audio, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def prepare_audio(audio, sample_rate: float, config: FrontEndConfig) -> np.ndarray:
    """Any rate, channel count and length -> mono windows ``(windows, window_samples)`` at the model's rate.

    ``audio`` is ``(frames,)`` or ``(channels, frames)``; channels are averaged. Shorter audio is zero-padded to
    one window; longer audio is cut into consecutive windows, the last one zero-padded.
    """
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0)
    elif x.ndim != 1:
        raise ValueError(f"audio must be (frames,) or (channels, frames), got shape {x.shape}")
    if x.size == 0:
        raise ValueError("audio is empty")
    if not np.isfinite(x).all():
        raise ValueError("audio contains NaN or Inf samples")
    x = resample(x, sample_rate, config.sample_rate)
    n = config.window_samples
    windows = max(1, math.ceil(len(x) / n))
    padded = np.zeros(windows * n, np.float32)
    padded[: len(x)] = x
    return padded.reshape(windows, n)


def load_clips(paths: list, sample_rate: int, samples: int) -> np.ndarray:
    """Mono clips at ``sample_rate``, padded or cut to ``samples``: ``(clips, samples)`` float32."""
    from timbreclip.dsp.audio_io import read_audio

    out = np.zeros((len(paths), samples), np.float32)
    for i, p in enumerate(paths):
        audio, rate = read_audio(p, max_seconds=samples / sample_rate + 0.1)
        mono = resample(audio.mean(axis=0), rate, sample_rate)[:samples]
        out[i, : len(mono)] = mono
    return out
