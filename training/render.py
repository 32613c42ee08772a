"""Render soundfonts into a labelled patch folder (``timbreclip dataset render``).

Every melodic preset (every bank but 128, the drum kits) at C and F# over 8 octaves (MIDI 24, 30, ..., 108, 114),
velocity 64, 3 s held + 1 s release, 16 kHz, reverb and chorus off, mixed to mono (the mean of L and R: a soundfont
is one source, so there is no random L/R draw here; that augmentation applies to stereo sample folders), peak
normalised to -1 dBFS and stored as 16-bit WAV. Silent notes (peak below -60 dBFS before normalising) are dropped.
MuseScore's "Expr." presets are rendered with CC 2 (breath) at 100, without which they are silent.

Pitch-shift augmentation is rendered by the synth itself: ``pitch_variants`` extra renders of each note with a
random pitch-bend shift (fluidsynth's bend gives an exact shift; +-0.5 semitone for sample-based fonts, +-3 for FM
synthesis such as OPL3, as the paper did for sample libraries and synth patches), cached like any note with their
``pitch_shift`` in the metadata.

Two processes by default, a progress bar, resumable (a preset whose ``notes.json`` exists is skipped), atomic writes.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path

import numpy as np

from timbreclip.dsp.audio_io import write_audio
from timbreclip.dsp.descriptors import note_descriptors, peak_dbfs
from timbreclip.dsp.errors import TimbreclipError

from timbreclip.library.gm import GM_INSTRUMENTS, gm_family
from timbreclip.library.patchfolder import write_metadata
from timbreclip.library.soundfont import (HELD_S, NORMALISE_DBFS, PITCHES, SAMPLE_RATE, SILENCE_DBFS,
                                          VELOCITY, is_synth_font, list_presets, preset_title,
                                          render_note, source_name)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40] or "preset"



def render_preset(job: tuple) -> list[dict]:
    """Render one preset's notes (and pitch variants) into ``out_dir``; returns its metadata rows."""
    preset, out_dir, variants, seed = job
    folder_rel = Path(source_name(preset.font)) / f"{preset.bank:03d}-{preset.program:03d}-{_slug(preset.name)}"
    folder = Path(out_dir) / folder_rel
    done = folder / "notes.json"
    if done.exists():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, preset.bank, preset.program, zlib.crc32(source_name(preset.font).encode())])
    max_shift = 3.0 if is_synth_font(preset.font) else 0.5
    title = preset_title(preset)
    rows = []
    for pitch in PITCHES:
        shifts = [0.0] + [float(rng.uniform(-max_shift, max_shift)) for _ in range(variants)]
        for k, shift in enumerate(shifts):
            audio = render_note(preset.font, preset.bank, preset.program, pitch, shift)
            level = peak_dbfs(audio)
            if level < SILENCE_DBFS:
                if k == 0:
                    break  # the note itself is silent: drop it and its variants
                continue
            audio = audio * (10 ** (NORMALISE_DBFS / 20) / 10 ** (level / 20))
            name = f"{pitch:03d}.wav" if k == 0 else f"{pitch:03d}_v{k}.wav"
            write_audio(folder / name, audio, SAMPLE_RATE, bit_depth=16)
            d = note_descriptors(audio, SAMPLE_RATE, pitch + shift, HELD_S)
            rows.append({
                "path": str(folder_rel / name), "patch_id": f"{source_name(preset.font)}:{preset.bank}:{preset.program}",
                "title": title, "category": gm_family(preset.program), "pitch": pitch,
                "instrument": GM_INSTRUMENTS[preset.program], "source": source_name(preset.font),
                "velocity": VELOCITY, "bank": preset.bank, "program": preset.program,
                "pitch_shift": round(shift, 4), "peak_dbfs_rendered": round(level, 2),
                **{k2: round(v, 5) if isinstance(v, float) else v for k2, v in d.as_dict().items()},
            })
    tmp = folder / f".notes.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(rows))
    os.replace(tmp, done)
    return rows


def render_soundfonts(fonts: list[str], out_dir: str | os.PathLike, variants: int = 0, processes: int = 2,
                      seed: int = 0, limit_presets: int | None = None, progress: bool = True) -> Path:
    """Render every melodic preset of ``fonts`` into ``out_dir`` and write its ``metadata.csv``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TimbreclipError(f"{out_dir}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for font in fonts:
        if not Path(font).is_file():
            raise TimbreclipError(f"{font}: no such soundfont file")
        presets = list_presets(font)
        if not presets:
            raise TimbreclipError(f"{font}: no melodic presets")
        jobs += [(p, str(out), variants, seed) for p in presets[:limit_presets]]
    return _run_jobs(render_preset, jobs, out, processes, progress)


# -- real synthesizers (library/synths.py) ---------------------------------------------------------------------------
SYNTH_PITCHES = tuple(range(36, 97, 6))  # C and F# from C2 to C7 (11 keys): a synth patch's playable range
WHYSYNTH_TEST_CATEGORIES = frozenset({"Keys", "Effect", "Sweep", "Organ", "Lead", "Vocal", "Bass", "Bells", "Strings",
                                      "Brass", "Pad", "Piano", "Wind"})  # not [K4oid], Xsynth, [test], [devel]


def render_synth_preset(job: tuple) -> list[dict]:
    """Render one synth preset's notes into ``out_dir`` (resumable like ``render_preset``); its metadata rows."""
    from timbreclip.library.synths import measured_pitch, render_synth_notes

    from .labels import name_family

    preset, out_dir = job
    folder_rel = Path(preset.source) / f"{preset.bank}-{preset.index:04d}-{_slug(preset.name)}"
    folder = Path(out_dir) / folder_rel
    done = folder / "notes.json"
    if done.exists():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    if preset.source == "whysynth":
        category, instrument = preset.category, ""
    else:
        category, instrument = name_family(preset.name)
        # a Calf Organ preset is a drawbar organ unless its name says otherwise ("Subtle EP", "Edgy Bass")
        category = category or ("Organ" if (preset.source, preset.bank) == ("calf", "Organ") else "Synth")
    rows = []
    for key, audio in render_synth_notes(preset, SYNTH_PITCHES):
        level = peak_dbfs(audio)
        if level < SILENCE_DBFS:
            continue
        audio = audio * (10 ** (NORMALISE_DBFS / 20) / 10 ** (level / 20))
        pitch = measured_pitch(audio, key, SAMPLE_RATE)
        name = f"{key:03d}.wav"
        write_audio(folder / name, audio, SAMPLE_RATE, bit_depth=16)
        d = note_descriptors(audio, SAMPLE_RATE, pitch, HELD_S)
        rows.append({
            "path": str(folder_rel / name), "patch_id": preset.patch_id, "title": preset.name, "category": category,
            "pitch": pitch, "instrument": instrument, "source": preset.source, "velocity": VELOCITY,
            "bank": preset.bank, "preset_index": preset.index, "key": key, "pitch_shift": 0.0,
            "peak_dbfs_rendered": round(level, 2),
            **{k2: round(v, 5) if isinstance(v, float) else v for k2, v in d.as_dict().items()},
        })
    tmp = folder / f".notes.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(rows))
    os.replace(tmp, done)
    return rows


def render_synths(sources: list[str], out_dir: str | os.PathLike, processes: int = 2,
                  limit_presets: int | None = None, progress: bool = True) -> Path:
    """Render every preset of the synth ``sources`` (amsynth, dx7, whysynth, calf) into ``out_dir``, with metadata.csv.
    WhySynth keeps only patches whose category names a kind of sound (its test-set role)."""
    from timbreclip.library.synths import list_synth_presets

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TimbreclipError(f"{out_dir}: exists and is not a folder")
    jobs = []
    for source in sources:
        presets = list_synth_presets(source)
        if source == "whysynth":
            presets = [p for p in presets if p.category in WHYSYNTH_TEST_CATEGORIES]
        jobs += [(p, str(out)) for p in presets[:limit_presets]]
    out.mkdir(parents=True, exist_ok=True)
    return _run_jobs(render_synth_preset, jobs, out, processes, progress)


def _run_jobs(work, jobs: list, out: Path, processes: int, progress: bool) -> Path:
    from multiprocessing import get_context

    from tqdm import tqdm

    rows: list[dict] = []
    bar = tqdm(total=len(jobs), unit="preset", disable=not progress)
    if processes > 1:
        with get_context("spawn").Pool(processes) as pool:
            for result in pool.imap_unordered(work, jobs, chunksize=1):
                rows += result
                bar.update()
    else:
        for job in jobs:
            rows += work(job)
            bar.update()
    bar.close()
    if not rows:
        raise TimbreclipError(f"{out}: every rendered note was silent")
    rows.sort(key=lambda r: (r["source"], str(r["bank"]), r.get("program", r.get("preset_index", 0)), r["pitch"],
                             r["path"]))
    return write_metadata(out, rows)
