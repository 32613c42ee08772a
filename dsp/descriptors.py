"""Audio descriptors of single notes (numpy): the measurements timbre words are derived from, and the ones the
steering benchmark checks (spectral centroid, low-frequency energy share).

All functions take mono float audio ``(frames,)`` and its rate in Hz.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

FRAME_SECONDS = 0.010  # envelope resolution


def midi_to_hz(pitch: float) -> float:
    return 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)


def _power_spectrum(x: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    n = 1 << int(math.ceil(math.log2(max(len(x), 2))))
    window = np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x * window, n=n)) ** 2
    return np.fft.rfftfreq(n, 1.0 / rate), spectrum


def spectral_centroid_hz(x: np.ndarray, rate: float) -> float:
    """Power-weighted mean frequency (Hz) of the whole signal."""
    freqs, power = _power_spectrum(np.asarray(x, np.float64), rate)
    total = power.sum()
    return float((freqs * power).sum() / total) if total > 0 else 0.0


def low_energy_share(x: np.ndarray, rate: float, cutoff_hz: float = 250.0) -> float:
    """Share (0..1) of the signal's power below ``cutoff_hz``."""
    freqs, power = _power_spectrum(np.asarray(x, np.float64), rate)
    total = power.sum()
    return float(power[freqs < cutoff_hz].sum() / total) if total > 0 else 0.0


def rms_envelope_db(x: np.ndarray, rate: float) -> np.ndarray:
    """RMS level per 10 ms frame, in dB relative to full scale."""
    hop = max(1, int(FRAME_SECONDS * rate))
    frames = len(x) // hop
    if frames == 0:
        return np.array([-120.0])
    blocks = np.asarray(x[: frames * hop], np.float64).reshape(frames, hop)
    return 10.0 * np.log10(np.mean(blocks**2, axis=1) + 1e-12)


def peak_dbfs(x: np.ndarray) -> float:
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else -240.0


@dataclass(frozen=True)
class NoteDescriptors:
    """Measured descriptors of one held note (``held_s`` held, then released).

    - ``brightness``: spectral centroid over f0 (in harmonic numbers), measured on the held part below
      ``min(Nyquist, 20 x f0)``: relative to pitch, so a high note is not "bright" just for being high.
      ``harmonics_below_nyquist`` says how many harmonics could count (few for high notes: words then unreliable).
    - ``attack_s``: time from 10% to 90% of the envelope's peak amplitude.
    - ``sustain_db``: level 0.5 s before note-off relative to the peak (0 = fully sustained, very negative = decays).
    - ``release_s``: time after note-off for the level to fall 30 dB below its note-off level (capped at the tail).
    - ``flatness``: median spectral flatness of the held part (0 tonal .. 1 noise).
    """

    brightness: float
    harmonics_below_nyquist: int
    attack_s: float
    sustain_db: float
    release_s: float
    flatness: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def note_descriptors(x: np.ndarray, rate: float, pitch: float, held_s: float = 3.0) -> NoteDescriptors:
    x = np.asarray(x, np.float64)
    f0 = midi_to_hz(pitch)
    held = x[: int(held_s * rate)]
    # brightness relative to pitch
    freqs, power = _power_spectrum(held, rate)
    band = freqs < min(rate / 2.0, 20.0 * f0)
    total = power[band].sum()
    brightness = float((freqs[band] * power[band]).sum() / total / f0) if total > 0 else 0.0
    harmonics = int(min(rate / 2.0, 20.0 * f0) // f0)
    # envelope-based timing
    env_db = rms_envelope_db(x, rate)
    amp = 10.0 ** (env_db / 20.0)
    peak_i = int(np.argmax(amp))
    peak = amp[peak_i]
    above10 = np.nonzero(amp[: peak_i + 1] >= 0.1 * peak)[0]
    above90 = np.nonzero(amp[: peak_i + 1] >= 0.9 * peak)[0]
    attack_s = float((above90[0] - above10[0]) * FRAME_SECONDS) if len(above10) and len(above90) else 0.0
    off_i = min(int(held_s / FRAME_SECONDS), len(env_db) - 1)
    probe_i = max(0, off_i - int(0.5 / FRAME_SECONDS))
    sustain_db = float(env_db[probe_i] - env_db[peak_i])
    after = env_db[off_i:]
    below = np.nonzero(after < env_db[off_i] - 30.0)[0]
    release_s = float((below[0] if len(below) else len(after)) * FRAME_SECONDS)
    # noisiness: spectral flatness on 1024-sample frames of the held part
    n_fft = 1024
    frames = len(held) // n_fft
    if frames:
        spec = np.abs(np.fft.rfft(held[: frames * n_fft].reshape(frames, n_fft) * np.hanning(n_fft), axis=1)) ** 2
        spec = spec[spec.sum(axis=1) > 1e-10] + 1e-12
        flat = np.exp(np.mean(np.log(spec), axis=1)) / np.mean(spec, axis=1) if len(spec) else np.array([0.0])
        flatness = float(np.median(flat))
    else:
        flatness = 0.0
    return NoteDescriptors(brightness, harmonics, attack_s, sustain_db, release_s, flatness)


def estimate_pitch_midi(x: np.ndarray, rate: float, fmin_hz: float = 30.0, fmax_hz: float = 2000.0,
                        threshold: float = 0.2) -> float | None:
    """The fundamental of a pitched one-shot as a (fractional) MIDI note, or None when it has no clear pitch.

    YIN's cumulative-mean-normalised difference over the loudest 100 ms of the first two seconds (a sample's
    attack is often noisy, its tail quiet), with parabolic interpolation of the chosen lag. ``threshold``: the
    largest normalised difference still taken as periodic (YIN's default 0.1-0.2; drums and noise stay above it).
    """
    x = np.asarray(x, np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    x = x[: int(2 * rate)]
    frame = int(0.1 * rate)
    max_lag = int(rate / fmin_hz)
    if len(x) < frame + max_lag + 2 or not np.any(x):
        return None
    hop = max(1, frame // 2)
    energies = [float(np.sum(x[i:i + frame] ** 2)) for i in range(0, len(x) - frame - max_lag, hop)]
    if not energies:
        return None
    start = int(np.argmax(energies)) * hop
    seg = x[start:start + frame + max_lag]
    min_lag = max(2, int(rate / fmax_hz))
    diff = np.array([np.sum((seg[:frame] - seg[lag:lag + frame]) ** 2) for lag in range(max_lag + 1)])
    cmnd = np.ones_like(diff)
    running = np.cumsum(diff[1:])
    cmnd[1:] = diff[1:] * np.arange(1, len(diff)) / np.maximum(running, 1e-20)
    below = np.nonzero(cmnd[min_lag:] < threshold)[0]
    if not len(below):
        return None
    lag = min_lag + int(below[0])
    while lag + 1 < len(cmnd) and cmnd[lag + 1] < cmnd[lag]:  # walk down to the local minimum
        lag += 1
    if 1 <= lag < len(cmnd) - 1:
        a, b, c = cmnd[lag - 1], cmnd[lag], cmnd[lag + 1]
        denom = a - 2 * b + c
        lag = lag + (0.5 * (a - c) / denom if denom else 0.0)
    f0 = rate / lag
    return 69.0 + 12.0 * math.log2(f0 / 440.0)
