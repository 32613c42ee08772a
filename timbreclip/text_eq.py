"""``timbreclip eq``: the text-steered EQ on a file (the shell's glue: read, steer, apply, match loudness, write)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from timbreclip import __version__
from timbreclip.dsp.audio_io import check_listenable, read_audio, source_dtype, write_audio
from timbreclip.dsp.descriptors import peak_dbfs
from timbreclip.dsp.errors import AudioFileError
from timbreclip.dsp.settings import EQSettings



METER_MAX_CHANNELS = 5  # what pyloudnorm's BS.1770 meter takes


def loudness_lufs(audio: np.ndarray, rate: float) -> float:
    """ITU-R BS.1770 integrated loudness (pyloudnorm); for audio under 0.4 s, the K-weighted-free RMS in dB.

    Past 5 channels (the meter's limit) each channel is measured on its own and the powers are summed with weight 1
    (BS.1770's sum over channels, gated per channel): any channel count a file format allows gets a loudness."""
    import pyloudnorm

    x = np.atleast_2d(audio).astype(np.float64)
    if x.shape[-1] < int(0.4 * rate):
        return 10 * math.log10(float(np.mean(x ** 2)) + 1e-12)
    meter = pyloudnorm.Meter(rate)
    if x.shape[0] <= METER_MAX_CHANNELS:
        value = meter.integrated_loudness(x.T)
    else:
        per_channel = [meter.integrated_loudness(c) for c in x]
        powers = [10 ** ((v + 0.691) / 10) for v in per_channel if math.isfinite(v)]
        value = 10 * math.log10(sum(powers)) - 0.691 if powers else -math.inf
    return float(value) if math.isfinite(value) else -120.0


@dataclass
class EQRun:
    settings: EQSettings
    similarity_before: dict[str, float]
    similarity_after: dict[str, float]
    loudness_gain_db: float
    clip_gain_db: float
    peak_dbfs: float
    result: object


def run_eq(in_path: str, out_path: str, prompts: dict[str, float], model, source_weight: float, config,
           match_loudness: bool = True, excerpt_seconds: float | None = 60.0) -> EQRun:
    from timbreclip.neural.steering import TextEQ

    plugin = TextEQ(prompts, model, source_weight, config, max_seconds=excerpt_seconds)  # checks prompts first
    audio, rate = read_audio(in_path)
    try:
        check_listenable(audio, rate, in_path)
    except AudioFileError as err:
        raise AudioFileError(f"{err}: nothing to steer") from None
    settings = plugin.fit(audio, rate)
    y = settings(audio, rate)  # the numba engine, in chunks
    gain_db = 0.0
    if match_loudness:
        gain_db = loudness_lufs(audio, rate) - loudness_lufs(y, rate)
    peak_after = peak_dbfs(y) + gain_db
    clip_db = min(0.0, -0.1 - peak_after) if peak_after > -0.1 else 0.0
    settings.output_gain_db = gain_db + clip_db
    y *= 10 ** ((gain_db + clip_db) / 20)
    settings.provenance.update({"loudness_match_db": round(gain_db, 3), "anti_clip_db": round(clip_db, 3),
                                "tool_version": __version__, "source_file": str(in_path)})
    write_audio(out_path, y, rate, source_dtype=source_dtype(in_path))
    names = list(prompts)
    text = model.embed_text(names)
    before = dict(zip(names, (text @ model.embed_audio(audio[..., : int((excerpt_seconds or 1e9) * rate)], rate)).tolist()))
    after = dict(zip(names, (text @ model.embed_audio(y[..., : int((excerpt_seconds or 1e9) * rate)], rate)).tolist()))
    return EQRun(settings, before, after, gain_db, clip_db, peak_dbfs(y), plugin.result)


def plot_eq_run(run: EQRun, in_audio: np.ndarray, out_audio: np.ndarray, rate: float, path: str, title: str) -> None:
    """EQ curve and before/after spectrograms in one figure."""
    from matplotlib.figure import Figure  # its own Agg canvas: no pyplot, no global backend switch

    from timbreclip.dsp.plot import eq_curve_axes

    fig = Figure(figsize=(11, 7))
    ax = fig.add_subplot(2, 1, 1)
    eq_curve_axes(ax, run.settings, rate)
    ax.set_title(title)
    for i, (audio, label) in enumerate(((in_audio, "before"), (out_audio, "after"))):
        a = fig.add_subplot(2, 2, 3 + i)
        mono = audio.mean(axis=0)[: int(10 * rate)]
        a.specgram(mono, NFFT=1024, Fs=rate, noverlap=768, cmap="magma", vmin=-120)
        a.set_yscale("symlog", linthresh=500)
        a.set_ylim(20, rate / 2)
        a.set_title(f"{label}", fontsize=9)
        a.set_xlabel("time (s)")
        a.set_ylabel("Hz")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def print_run(run: EQRun, out=None) -> None:
    out = sys.stdout if out is None else out  # looked up per call: stdout may be replaced after import
    r = run.result
    print(f"EQ found in {r.steps} steps, {r.seconds:.2f} s: cosine distance to target {r.distance_before:.4f} -> "
          f"{r.distance_after:.4f}", file=out)
    for band in run.settings.bands:
        print("  " + band.describe(), file=out)
    print(f"  output gain {run.settings.output_gain_db:+.2f} dB (loudness match {run.loudness_gain_db:+.2f} dB"
          + (f", anti-clip {run.clip_gain_db:+.2f} dB" if run.clip_gain_db else "") + f"); peak {run.peak_dbfs:.1f} dBFS",
          file=out)
    width = max(len(p) for p in run.similarity_before)
    print(f"  {'prompt':<{width}}  before   after", file=out)
    for p in run.similarity_before:
        print(f"  {p:<{width}}  {run.similarity_before[p]:+.3f}  {run.similarity_after[p]:+.3f}", file=out)
