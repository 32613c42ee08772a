"""``timbreclip eq``: the text-steered EQ on a file (the shell's glue: read, steer, apply, match loudness, write)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from timbreclip import __version__
from timbreclip.dsp.audio_io import check_listenable, process_file, read_audio
from timbreclip.dsp.errors import AudioFileError
from timbreclip.dsp.loudness import CEILING_DBFS, loudness_lufs  # noqa: F401 (loudness_lufs: part of the API)
from timbreclip.dsp.settings import EQSettings


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
           match_loudness: bool = True, excerpt_seconds: float | None = 60.0, amount: float = 1.0) -> EQRun:
    """Fit the EQ on the file's first ``excerpt_seconds``, then stream the whole file through it
    (``dsp.audio_io.process_file``): a pass that measures the input's and the output's loudness and the output's
    peak, and a pass that writes the output with the loudness match and the anti-clip rule (``dsp.loudness``;
    ceiling -0.1 dBFS). ``amount`` scales the fitted curve first (``EQSettings.scaled``). Memory stays bounded by
    the excerpt, whatever the file's length."""
    from timbreclip.dsp.engine import BiquadCascade
    from timbreclip.neural.steering import TextEQ

    plugin = TextEQ(prompts, model, source_weight, config, max_seconds=excerpt_seconds)  # checks prompts first
    audio, rate = read_audio(in_path, max_seconds=excerpt_seconds)
    try:
        check_listenable(audio, rate, in_path)
    except AudioFileError as err:
        raise AudioFileError(f"{err}: nothing to steer") from None
    settings = plugin.fit(audio, rate).scaled(amount)
    sos = settings.sos(rate)

    def make_processor(sample_rate: float, channels: int):
        cascade = BiquadCascade(sos, channels, 0.0)
        return lambda block: cascade.process(block)

    report = process_file(in_path, out_path, make_processor, progress=False, match_loudness=match_loudness,
                          ceiling_dbfs=CEILING_DBFS)
    settings.output_gain_db = report["scale_db"]
    settings.provenance.update({"loudness_match_db": round(report["match_db"], 3),
                                "anti_clip_db": round(report["clip_db"], 3),
                                "tool_version": __version__, "source_file": str(in_path)})
    names = list(prompts)
    text = model.embed_text(names)
    before = dict(zip(names, (text @ model.embed_audio(audio, rate)).tolist()))
    after = dict(zip(names, (text @ model.embed_audio(settings(audio, rate), rate)).tolist()))
    peak = report["peak"]
    return EQRun(settings, before, after, report["match_db"], report["clip_db"],
                 20 * math.log10(peak) if peak > 0 else -240.0, plugin.result)


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


def _hz(f: float) -> str:
    return f"{f / 1000:g}k" if f >= 1000 else f"{f:g}"


def print_run(run: EQRun, out=None) -> None:
    out = sys.stdout if out is None else out  # looked up per call: stdout may be replaced after import
    r = run.result
    print(f"EQ found in {r.steps} steps, {r.seconds:.2f} s: cosine distance to target {r.distance_before:.4f} -> "
          f"{r.distance_after:.4f}", file=out)
    for band in run.settings.bands:
        print("  " + band.describe(), file=out)
    curve = run.settings.summed_curve()
    print("  summed curve: " + "  ".join(f"{_hz(f)} {g:+.1f}" for f, g in curve)
          + f" dB (span {run.settings.span_db():.1f} dB over 30 Hz-7.2 kHz)", file=out)
    print(f"  output gain {run.settings.output_gain_db:+.2f} dB (loudness match {run.loudness_gain_db:+.2f} dB"
          + (f", anti-clip {run.clip_gain_db:+.2f} dB" if run.clip_gain_db else "") + f"); peak {run.peak_dbfs:.1f} dBFS",
          file=out)
    width = max(len(p) for p in run.similarity_before)
    print(f"  {'prompt':<{width}}  before   after", file=out)
    for p in run.similarity_before:
        print(f"  {p:<{width}}  {run.similarity_before[p]:+.3f}  {run.similarity_after[p]:+.3f}", file=out)
