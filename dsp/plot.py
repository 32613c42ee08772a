"""Pictures of an EQ: the magnitude curve in dB over log frequency, with the bands marked (matplotlib, no screen)."""

from __future__ import annotations

import os

import numpy as np

from .biquad import GAIN_TYPES
from .settings import EQSettings


def eq_curve_axes(ax, settings: EQSettings, sample_rate: float | None = None, label: str | None = None) -> None:
    """Draw ``settings``' response (output gain included) on a matplotlib ``ax``."""
    rate = float(settings.sample_rate if sample_rate is None else sample_rate)
    freqs = np.geomspace(20.0, 0.5 * rate * 0.999, 1024)
    for band in settings.bands:  # each band on its own, faint: the summed curve is what plays
        alone = EQSettings(settings.sample_rate, [band])
        ax.semilogx(freqs, alone.response_db(freqs, rate), lw=0.8, color="0.75", zorder=1)
    ax.semilogx(freqs, settings.response_db(freqs, rate), lw=2, label=label or "summed curve (all bands + output gain)",
                zorder=3)
    # each band is marked where the curve passes its frequency, labelled with its index and gain
    marks = settings.response_db(np.array([b.freq_hz for b in settings.bands]), rate) if settings.bands else []
    for i, (band, level) in enumerate(zip(settings.bands, marks)):
        ax.plot([band.freq_hz], [level], "o", ms=5, color="C1")
        text = f"{i}: {band.gain_db:+.1f} dB" if band.type in GAIN_TYPES else f"{i}: {band.type}"
        ax.annotate(text, (band.freq_hz, level), textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.legend(loc="best", fontsize=7)
    ax.set_xlim(20.0, 0.5 * rate)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("gain (dB)")
    ax.grid(True, which="both", alpha=0.3)


def plot_eq(settings: EQSettings, path: str | os.PathLike, sample_rate: float | None = None, title: str = "") -> None:
    """Write a PNG of the EQ curve to ``path``."""
    from matplotlib.figure import Figure  # its own Agg canvas: no pyplot, no global backend switch

    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    eq_curve_axes(ax, settings, sample_rate)
    ax.set_title(title or f"EQ ({len(settings.bands)} bands @ {settings.sample_rate:g} Hz)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
