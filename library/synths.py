"""Real synthesizers with named presets as patch sources, rendered offline (no JACK): amsynth and WhySynth through
the DSSI host (``library/dssi.py``), DX7 voices through the Dexed engine (PyPI ``dexed-py``) with Debian hexter's
voice banks. What they share with soundfonts: 3 s held + 1 s release, velocity 64, 16 kHz mono, peak-normalised.

- Rendered at 48 kHz and resampled to 16 kHz (3:1 polyphase): the synths alias, and the DX7 engine's levels differ,
  when run at 16 kHz directly. Mono = the mean of the outputs.
- The pitch written for a note is the pitch measured (YIN, ``dsp.descriptors.estimate_pitch_midi``) snapped to the
  nearest octave of the key sent: many presets sound one or two octaves from the key (a DX7 voice's transpose, an
  amsynth oscillator range). Where the note has no clear pitch the key is kept.
- amsynth presets are deduplicated by parameter set (3,482 presets, 3,303 distinct): a preset is its sound.
- Sources: ``amsynth`` (Debian ``amsynth``: every ``/usr/share/amsynth/banks/*.bank``), ``dx7`` (Debian ``hexter``:
  ``/usr/share/hexter/*.dx7``), ``whysynth`` (Debian ``whysynth``: its default patch bank, with its category field),
  ``calf`` (Debian ``calf-plugins``: the Monosynth and Organ factory presets, through the LV2 host in
  ``library/lv2.py``; presets named after another synth, such as "Zyn Brass", are left out: their name describes a
  different instrument's sound).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from timbreclip.dsp.descriptors import estimate_pitch_midi
from timbreclip.dsp.errors import TimbreclipError

from .soundfont import HELD_S, RELEASE_S, VELOCITY

RENDER_RATE = 48000
AMSYNTH_PLUGIN = "/usr/lib/dssi/amsynth_dssi.so"
AMSYNTH_BANKS = "/usr/share/amsynth/banks"
WHYSYNTH_PLUGIN = "/usr/lib/dssi/whysynth.so"
WHYSYNTH_PATCHES = "/usr/share/whysynth/current_default_patches.WhySynth"
HEXTER_VOICES = "/usr/share/hexter"
CALF_BUNDLE = "/usr/lib/lv2/calf.lv2"
CALF_PLUGINS = ("Monosynth", "Organ")  # the instruments with factory presets (Wavetable crashes on a 2nd instance)
OTHER_SYNTH_WORDS = re.compile(r"zyn|dx ?7|moog|juno|jupiter|prophet|oberheim|korg|roland|yamaha|nord|tb-?303|"
                               r"amsynth|whysynth|hexter|dexed", re.I)
SYNTH_SOURCES = ("amsynth", "dx7", "whysynth", "calf")
WHYSYNTH_WARM_UP_S = 1.5  # PADsynth tables are built by a background thread after a program change
DX7_PEAK_GUARD = 8.0  # the engine's peaks reach ~4; anything far beyond is a broken voice


@dataclass(frozen=True)
class SynthPreset:
    source: str  # "amsynth" | "dx7" | "whysynth" | "calf"
    bank: str  # bank file (stem) it came from
    index: int  # position in the bank (WhySynth: the program number)
    name: str
    category: str = ""  # only WhySynth names one
    params: tuple = field(default=(), compare=False, hash=False)  # amsynth, calf: (name, value); dx7: packed bytes

    @property
    def patch_id(self) -> str:
        if self.source == "whysynth":
            return f"whysynth:{self.index}"
        digest = hashlib.sha1(repr(self.params).encode()).hexdigest()[:12]
        return f"{self.source}:{digest}"


# -- preset lists -------------------------------------------------------------------------------------------------
def amsynth_presets(folder: str = AMSYNTH_BANKS) -> list[SynthPreset]:
    """Every named amsynth preset of every bank file, one per distinct parameter set (the first name seen)."""
    banks = sorted(Path(folder).glob("*.bank"))
    if not banks:
        raise TimbreclipError(f"{folder}: no amsynth bank files (install Debian's amsynth)")
    seen, out = set(), []
    for bank in banks:
        name, params, k = None, [], 0

        def flush():
            nonlocal k
            if name is not None and params:
                key = tuple(params)
                if key not in seen and name and name.lower() not in ("new preset", "init"):
                    seen.add(key)
                    out.append(SynthPreset("amsynth", bank.name.split(".")[0], k, name, "", key))
                k += 1

        for line in bank.read_text(errors="replace").splitlines():
            if line.startswith("<preset> <name>"):
                flush()
                name, params = line[len("<preset> <name>"):].strip(), []
            elif line.startswith("<parameter>"):
                parts = line.split()
                if len(parts) == 3:
                    params.append((parts[1], float(parts[2])))
        flush()
    return out


def dx7_presets(folder: str = HEXTER_VOICES) -> list[SynthPreset]:
    """The packed 128-byte voices of every ``*.dx7`` bank (hexter's ROM banks: 432 voices)."""
    files = sorted(Path(folder).glob("*.dx7"))
    if not files:
        raise TimbreclipError(f"{folder}: no .dx7 voice banks (install Debian's hexter)")
    out = []
    for f in files:
        data = f.read_bytes()
        for k in range(len(data) // 128):
            voice = data[k * 128:(k + 1) * 128]
            name = voice[118:128].decode("latin-1").strip()
            out.append(SynthPreset("dx7", f.stem, k, " ".join(name.split()) or f"voice {k + 1}", "", voice))
    return out


def whysynth_presets(path: str = WHYSYNTH_PATCHES) -> list[SynthPreset]:
    """WhySynth's default patches in program order, with their ``category`` field."""
    if not Path(path).is_file():
        raise TimbreclipError(f"{path}: no WhySynth patch file (install Debian's whysynth)")
    out, name, category = [], None, ""
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith("WhySynth patch format"):
            name, category = None, ""
        elif line.startswith("name "):
            name = unquote(line[5:].strip())
        elif line.startswith("category "):
            category = unquote(line[9:].strip())
        elif line.startswith("WhySynth patch end"):
            out.append(SynthPreset("whysynth", Path(path).stem, len(out), name or f"patch {len(out)}", category))
    return out


def calf_plugin_uri(name: str) -> str:
    return f"http://calf.sourceforge.net/plugins/{name}"


def calf_presets(bundle: str = CALF_BUNDLE) -> list[SynthPreset]:
    """Calf Monosynth and Organ factory presets (bank = the plugin), minus those named after another synth."""
    from .lv2 import read_presets

    out = []
    for plugin in CALF_PLUGINS:
        path = Path(bundle) / f"presets-{plugin}.ttl"
        if not path.is_file():
            raise TimbreclipError(f"{path}: no Calf presets (install Debian's calf-plugins)")
        for k, (label, values) in enumerate(read_presets(path.read_text(errors="replace"), calf_plugin_uri(plugin))):
            if OTHER_SYNTH_WORDS.search(label):
                continue
            out.append(SynthPreset("calf", plugin, k, label, "", tuple(sorted(values.items()))))
    return out


def list_synth_presets(source: str) -> list[SynthPreset]:
    if source == "amsynth":
        return amsynth_presets()
    if source == "dx7":
        return dx7_presets()
    if source == "whysynth":
        return whysynth_presets()
    if source == "calf":
        return calf_presets()
    raise TimbreclipError(f"{source}: unknown synth (known: {', '.join(SYNTH_SOURCES)})")


# -- rendering ----------------------------------------------------------------------------------------------------
_PLUGINS: dict[str, object] = {}


def _plugin(path: str):
    from .dssi import DSSIPlugin

    if path not in _PLUGINS:
        _PLUGINS[path] = DSSIPlugin(path)
    return _PLUGINS[path]


def _lv2_plugin(name: str):
    from .lv2 import LV2Plugin

    if name not in _PLUGINS:
        _PLUGINS[name] = LV2Plugin(CALF_BUNDLE, calf_plugin_uri(name), f"{name}.ttl")
    return _PLUGINS[name]


def _to_16k(x: np.ndarray) -> np.ndarray:
    from scipy.signal import resample_poly

    return resample_poly(np.asarray(x, np.float64), 1, RENDER_RATE // 16000).astype(np.float32)


def render_synth_notes(preset: SynthPreset, pitches, sample_rate: int = 16000) -> list[tuple[int, np.ndarray]]:
    """``[(key, mono float32 audio at 16 kHz)]`` for each key (4 s: 3 s held + 1 s release), not normalised."""
    if sample_rate != 16000:
        raise TimbreclipError("synth notes are rendered at 16 kHz")
    total = HELD_S + RELEASE_S
    out = []
    if preset.source == "dx7":
        from dexed import DexedSynth, Patch

        synth = DexedSynth(sample_rate=RENDER_RATE)
        synth.load_patch(Patch.from_packed(bytes(preset.params)))
        for key in pitches:
            audio = np.asarray(synth.render(midi_note=int(key), velocity=VELOCITY, note_duration=HELD_S,
                                            render_duration=total), np.float64)
            if not np.all(np.isfinite(audio)) or np.max(np.abs(audio)) > DX7_PEAK_GUARD:
                continue
            out.append((int(key), _to_16k(audio)))
        return out
    if preset.source in ("amsynth", "calf"):
        plugin = _plugin(AMSYNTH_PLUGIN) if preset.source == "amsynth" else _lv2_plugin(preset.bank)
        for key in pitches:  # a fresh instance per note (2-3 ms): no tail or reverb rings into the next key
            with plugin.instance(RENDER_RATE) as inst:
                inst.set_many(dict(preset.params))
                audio = inst.note(int(key), VELOCITY, HELD_S, total).mean(axis=0)
            out.append((int(key), _to_16k(audio)))
        return out
    if preset.source == "whysynth":
        inst = _plugin(WHYSYNTH_PLUGIN).instance(RENDER_RATE)
        try:
            if "Tuning" in inst.plugin.port_names:
                inst.set("Tuning", 440.0)
            bank, program, _ = inst.programs()[preset.index]  # DSSI numbers programs within banks of 128
            inst.select_program(bank, program)
            inst.render(int(WHYSYNTH_WARM_UP_S * RENDER_RATE))
            for key in pitches:
                audio = inst.note(int(key), VELOCITY, HELD_S, total).mean(axis=0)
                inst.render(int(2.0 * RENDER_RATE))
                if np.all(np.isfinite(audio)):
                    out.append((int(key), _to_16k(audio)))
        finally:
            inst.close()
        return out
    raise TimbreclipError(f"{preset.source}: unknown synth")


def measured_pitch(audio: np.ndarray, key: int, rate: int = 16000) -> int:
    """The key snapped to the octave the note actually sounds in (see module docstring)."""
    f0 = estimate_pitch_midi(audio, rate)
    if f0 is None or not math.isfinite(f0):
        return int(key)
    octaves = round((f0 - key) / 12.0)
    if octaves == 0 or abs(f0 - (key + 12 * octaves)) > 1.0 or abs(octaves) > 3:
        return int(key)
    return int(key + 12 * octaves)
