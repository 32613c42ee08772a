"""Soundfonts as patch sources: preset headers read from the file, and a fluidsynth renderer for single notes.

What the patch library (rendering a preset's index notes to embed them), the browser (auditioning a preset live)
and the training data job (``training/render.py``) share: the note layout (3 s held + 1 s release, velocity 64,
16 kHz mono, reverb and chorus off), the melodic-preset rule (every bank but 128), GM names for numbered presets.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from timbreclip.dsp.descriptors import peak_dbfs
from timbreclip.dsp.errors import TimbreclipError

from .gm import GM_INSTRUMENTS

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


def render_index_notes(font: str, bank: int, program: int, pitches=PITCHES,
                       sample_rate: int = SAMPLE_RATE) -> list[tuple[int, np.ndarray]]:
    """The preset's notes at ``pitches`` (silent ones dropped), each peak-normalised to -1 dBFS: ``[(pitch, audio)]``."""
    notes = []
    for pitch in pitches:
        audio = render_note(font, bank, program, int(pitch), sample_rate=sample_rate)
        level = peak_dbfs(audio)
        if level < SILENCE_DBFS:
            continue
        notes.append((int(pitch), (audio * (10 ** (NORMALISE_DBFS / 20) / 10 ** (level / 20))).astype(np.float32)))
    return notes
