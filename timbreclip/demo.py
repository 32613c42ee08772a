"""``timbreclip demo``: the text-steered EQ showcase on the shipped model.

Renders a few short example notes (fluidsynth, FluidR3 GM, 44.1 kHz), steers each with contrasting prompts, and
writes the audio, the EQ settings and one plot per note into a folder, then prints what changed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from timbreclip.dsp.audio_io import write_audio
from timbreclip.dsp.descriptors import low_energy_share, spectral_centroid_hz
from timbreclip.dsp.errors import TimbreclipError

RATE = 44100
FONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
NOTES = (  # (name, program, MIDI pitch)
    ("piano", 0, 57),
    ("strings", 48, 55),
    ("synth_lead", 81, 64),
)
PROMPTS = ("bright", "warm", "thin")


def render_examples(out_dir: Path) -> list[tuple[str, Path]]:
    from timbreclip.library.soundfont import render_note

    if not Path(FONT).is_file():
        raise TimbreclipError(f"{FONT}: not installed (Debian fluid-soundfont-gm; `make demo` installs it)")
    paths = []
    for name, program, pitch in NOTES:
        audio = render_note(FONT, 0, program, pitch, sample_rate=RATE)[: int(3.5 * RATE)]
        audio = 0.5 * audio / max(1e-9, float(np.abs(audio).max()))
        path = out_dir / f"{name}.wav"
        write_audio(path, audio, RATE)
        paths.append((name, path))
    return paths


def plot_note(name: str, runs: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # its own Agg canvas: no pyplot, no global backend switch

    freqs = np.geomspace(20, RATE / 2 * 0.999, 512)
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    for prompt, run in runs.items():
        ax.semilogx(freqs, run.settings.response_db(freqs), lw=2, label=f'"{prompt}"')
    ax.axhline(0, color="0.6", lw=0.8)
    ax.axvline(8000, color="0.6", ls=":", lw=1)
    ax.text(8300, ax.get_ylim()[0] + 0.5, "model hears < 8 kHz", fontsize=7, color="0.4")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("gain (dB)")
    ax.set_title(f"{name}: EQs found for each prompt (loudness matched)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(out: str) -> int:
    from timbreclip.defaults import load_torch_model
    from timbreclip.dsp.audio_io import read_audio
    from timbreclip.neural.steering import SteeringConfig
    from timbreclip.text_eq import run_eq

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_torch_model(None)
    lines = [f"{'note':<11} {'prompt':<8} {'centroid':>17} {'energy < 250 Hz':>17} {'mean |gain|':>11} "
             f"{'bands > 1 dB':>12} {'time':>6}"]
    for name, path in render_examples(out_dir):
        src, rate = read_audio(path)
        runs = {}
        for prompt in PROMPTS:
            target = out_dir / f"{name}_{prompt}.wav"
            started = time.perf_counter()
            run = run_eq(str(path), str(target), {prompt: 1.0}, model, 0.5, SteeringConfig())
            elapsed = time.perf_counter() - started
            run.settings.save(out_dir / f"{name}_{prompt}.json")
            runs[prompt] = run
            y, _ = read_audio(target)
            c0, c1 = spectral_centroid_hz(src[0], rate), spectral_centroid_hz(y[0], rate)
            l0, l1 = low_energy_share(src[0], rate), low_energy_share(y[0], rate)
            gains = np.array([b.gain_db for b in run.settings.bands])
            lines.append(f"{name:<11} {prompt:<8} {c0:7.0f} -> {c1:5.0f} Hz {100 * l0:7.1f} -> {100 * l1:4.1f} % "
                         f"{np.abs(gains).mean():8.2f} dB {int((np.abs(gains) > 1).sum()):>12} {elapsed:5.2f}s")
        plot_note(name, runs, out_dir / f"{name}.png")
    print("\n".join(lines))
    print(f"demo output (audio, EQ settings, one plot per note) in {out_dir.resolve()}", file=sys.stderr)
    return 0
