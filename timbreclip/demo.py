"""``timbreclip demo``: the main job on the shipped defaults, writing everything into one folder."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from timbreclip.dsp.audio_io import write_audio
from timbreclip.dsp.plot import plot_eq
from timbreclip.dsp.settings import Band, EQSettings


def synth_note(freq_hz: float = 110.0, seconds: float = 2.0, sample_rate: int = 48000) -> np.ndarray:
    """A band-limited sawtooth with an amplitude envelope: an example note with energy across the spectrum."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    harmonics = np.arange(1, int(0.45 * sample_rate / freq_hz) + 1)
    wave = (np.sin(2 * np.pi * freq_hz * t[:, None] * harmonics) / harmonics).sum(axis=1)
    env = np.minimum(1.0, t / 0.01) * np.exp(-t / 1.2)
    return (0.3 * wave * env / np.abs(wave).max()).astype(np.float32)


def run_eq_demo(out_dir: Path) -> None:
    """Apply two hand-set EQs (a warm and a bright one) to a generated note; write audio, settings and plots."""
    rate = 48000
    note = synth_note(sample_rate=rate)
    write_audio(out_dir / "note.wav", note, rate)
    presets = {
        "warm": EQSettings(rate, [Band("low_shelf", 200.0, 4.0, 0.7), Band("high_shelf", 4000.0, -6.0, 0.7)]),
        "bright": EQSettings(rate, [Band("peak", 250.0, -2.0, 1.0), Band("high_shelf", 3000.0, 6.0, 0.7)],
                             output_gain_db=-3.0),
    }
    print(f"{'preset':<8} {'centroid before':>16} {'centroid after':>15}")
    for name, settings in presets.items():
        y = settings(note, rate)
        peak = float(np.abs(y).max())
        if peak > 1.0:
            y = y / peak
        write_audio(out_dir / f"note_{name}.wav", y, rate)
        settings.save(out_dir / f"{name}.json")
        plot_eq(settings, out_dir / f"{name}.png", title=f"{name} EQ")
        print(f"{name:<8} {_centroid(note, rate):13.0f} Hz {_centroid(y, rate):12.0f} Hz")


def _centroid(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / rate)
    return float((spectrum * freqs).sum() / spectrum.sum())


def main(out: str) -> int:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_eq_demo(out_dir)
    print(f"demo output written to {out_dir.resolve()}", file=sys.stderr)
    return 0
