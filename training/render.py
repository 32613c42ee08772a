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
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from timbreclip.dsp.audio_io import write_audio
from timbreclip.dsp.descriptors import note_descriptors, peak_dbfs
from timbreclip.dsp.errors import TimbreclipError

from .gm import GM_INSTRUMENTS, gm_family
from .patchfolder import write_metadata

PITCHES = tuple(range(24, 115, 6))  # C and F# over 8 octaves: 24, 30, ..., 108, 114 (16 notes)
SAMPLE_RATE = 16000
HELD_S, RELEASE_S = 3.0, 1.0
VELOCITY = 64
SILENCE_DBFS = -60.0
NORMALISE_DBFS = -1.0
DRUM_BANK = 128
EXPR_BANKS = frozenset({17, 18, 21, 26, 31, 41, 51})  # MuseScore "Expr." presets: silent without CC 2
SYNTH_FONTS = ("opl",)  # lower-case name fragments of fonts that synthesise rather than play samples
BEND_RANGE_ST = 12


@dataclass(frozen=True)
class Preset:
    font: str
    bank: int
    program: int
    name: str


def list_presets(font: str | os.PathLike) -> list[Preset]:
    """Melodic presets of an .sf2/.sf3 file, read from its RIFF ``phdr`` chunk (no synth needed)."""
    try:
        data = Path(font).read_bytes()
    except OSError as err:
        raise TimbreclipError(f"{font}: cannot read soundfont ({err.strerror or err})") from None
    if data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise TimbreclipError(f"{font}: not a SoundFont file (no RIFF sfbk header)")
    pdta = data.rfind(b"pdta")
    at = data.find(b"phdr", pdta)
    if pdta < 0 or at < 0:
        raise TimbreclipError(f"{font}: no preset headers (phdr chunk) found")
    size = struct.unpack("<I", data[at + 4:at + 8])[0]
    presets = []
    for k in range(size // 38 - 1):  # the last record is the terminal "EOP"
        record = data[at + 8 + 38 * k:at + 8 + 38 * (k + 1)]
        name = record[:20].split(b"\0")[0].decode("latin-1").strip()
        program, bank = struct.unpack("<HH", record[20:24])
        if bank != DRUM_BANK and program < 128:
            presets.append(Preset(str(font), bank, program, name))
    return sorted(presets, key=lambda p: (p.bank, p.program))


def source_name(font: str | os.PathLike) -> str:
    return Path(font).stem


def preset_title(preset: Preset) -> str:
    """The preset name, or the GM instrument name where the font only numbers its presets (OPL3: "000")."""
    name = preset.name
    return GM_INSTRUMENTS[preset.program] if not name or name.isdigit() else name


def is_synth_font(font: str) -> bool:
    return any(k in source_name(font).lower() for k in SYNTH_FONTS)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40] or "preset"


# -- worker ------------------------------------------------------------------------------------------------------
_SYNTHS: dict[tuple[str, int], tuple[object, int]] = {}


def _synth(font: str, sample_rate: int = SAMPLE_RATE):
    if (font, sample_rate) not in _SYNTHS:
        import fluidsynth

        synth = fluidsynth.Synth(gain=0.5, samplerate=float(sample_rate), **{
            "synth.reverb.active": 0, "synth.chorus.active": 0, "synth.polyphony": 64,
        })
        sfid = synth.sfload(font)
        if sfid < 0:
            raise TimbreclipError(f"{font}: fluidsynth could not load the soundfont")
        _SYNTHS[(font, sample_rate)] = (synth, sfid)
    return _SYNTHS[(font, sample_rate)]


def render_note(font: str, bank: int, program: int, pitch: int, shift_st: float = 0.0,
                sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One note as mono float32: 3 s held + 1 s release, velocity 64, optional pitch-bend shift."""
    synth, sfid = _synth(font, sample_rate)
    ch = 0
    synth.program_select(ch, sfid, bank, program)
    synth.cc(ch, 121, 0)  # reset controllers (pitch bend back to centre)
    for number, value in ((101, 0), (100, 0), (6, BEND_RANGE_ST), (38, 0), (101, 127), (100, 127)):
        synth.cc(ch, number, value)  # RPN 0: pitch-bend range = BEND_RANGE_ST semitones
    if bank in EXPR_BANKS:
        synth.cc(ch, 2, 100)
    synth.pitch_bend(ch, int(round(shift_st / BEND_RANGE_ST * 8192)))  # pyfluidsynth centres at 0
    synth.noteon(ch, pitch, VELOCITY)
    held = synth.get_samples(int(HELD_S * sample_rate))
    synth.noteoff(ch, pitch)
    tail = synth.get_samples(int(RELEASE_S * sample_rate))
    synth.cc(ch, 120, 0)  # all sound off, so nothing rings into the next note
    synth.get_samples(512)
    stereo = np.concatenate([held, tail]).astype(np.float32).reshape(-1, 2) / 32768.0
    return stereo.mean(axis=1)


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
    from multiprocessing import get_context

    from tqdm import tqdm

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
    rows: list[dict] = []
    bar = tqdm(total=len(jobs), unit="preset", disable=not progress)
    if processes > 1:
        with get_context("spawn").Pool(processes) as pool:
            for result in pool.imap_unordered(render_preset, jobs, chunksize=1):
                rows += result
                bar.update()
    else:
        for job in jobs:
            rows += render_preset(job)
            bar.update()
    bar.close()
    if not rows:
        raise TimbreclipError(f"{out_dir}: every rendered note was silent")
    rows.sort(key=lambda r: (r["source"], r["bank"], r["program"], r["pitch"], r["path"]))
    return write_metadata(out, rows)
