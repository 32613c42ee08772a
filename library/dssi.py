"""A small offline DSSI host (ctypes): instantiate a DSSI synth plugin, set its control ports, play one note.

DSSI is LADSPA plus ``run_synth`` (ALSA sequencer events with a frame offset in ``time.tick``) and programs. The
structs below are the LADSPA 1.1 / DSSI 1.0 headers' layouts; the event is ALSA's 28-byte ``snd_seq_event_t``.
What the plugins here need (measured; shared/NOTES-data.md):

- amsynth: ``select_program`` returns without loading anything, so a preset is set port by port from its bank file
  (``library/synths.py`` reads them); every instance must be cleaned up, or memory grows by gigabytes.
- WhySynth: ``select_program`` works; ``Tuning`` is set to 440; PADsynth patches build their tables in a background
  thread after the program change and give NaN until it is done, so ``warm_up_s`` of silence runs first.

One :class:`DSSIPlugin` per library file (the ``dlopen`` stays for the process); one :class:`DSSIInstance` per note
or preset, closed with ``close()`` (or a ``with`` block).
"""

from __future__ import annotations

import ctypes as C
from pathlib import Path

import numpy as np

from timbreclip.dsp.errors import TimbreclipError

# LADSPA port descriptor bits
PORT_INPUT, PORT_OUTPUT, PORT_CONTROL, PORT_AUDIO = 0x1, 0x2, 0x4, 0x8
# LADSPA range hints
HINT_BOUNDED_BELOW, HINT_BOUNDED_ABOVE, HINT_TOGGLED, HINT_SAMPLE_RATE = 0x1, 0x2, 0x4, 0x8
HINT_LOGARITHMIC, HINT_INTEGER, HINT_DEFAULT_MASK = 0x10, 0x20, 0x3C0
SND_SEQ_EVENT_NOTEON, SND_SEQ_EVENT_NOTEOFF, SND_SEQ_EVENT_CONTROLLER = 6, 7, 10



def event_blocks(events, frames: int, block: int, limit: int | None = None):
    """Split ``(frame, kind, note, velocity)`` events over blocks of at most ``block`` frames: yields ``(pos, n,
    events)`` with each event's frame made relative to its block; at most ``limit`` per block (the rest move to the
    start of the next). Shared by the DSSI and LV2 hosts."""
    pending = sorted(events)
    pos = 0
    while pos < frames:
        n = min(block, frames - pos)
        now = []
        while pending and pending[0][0] < pos + n and (limit is None or len(now) < limit):
            frame, kind, note, velocity = pending.pop(0)
            now.append((max(0, frame - pos), kind, note, velocity))
        yield pos, n, now
        pos += n

class _RangeHint(C.Structure):
    _fields_ = [("hint", C.c_int), ("lower", C.c_float), ("upper", C.c_float)]


class _Ladspa(C.Structure):
    pass


_Handle = C.c_void_p
_Ladspa._fields_ = [
    ("unique_id", C.c_ulong), ("label", C.c_char_p), ("properties", C.c_int), ("name", C.c_char_p),
    ("maker", C.c_char_p), ("copyright", C.c_char_p), ("port_count", C.c_ulong),
    ("port_descriptors", C.POINTER(C.c_int)), ("port_names", C.POINTER(C.c_char_p)),
    ("port_range_hints", C.POINTER(_RangeHint)), ("implementation_data", C.c_void_p),
    ("instantiate", C.CFUNCTYPE(_Handle, C.POINTER(_Ladspa), C.c_ulong)),
    ("connect_port", C.CFUNCTYPE(None, _Handle, C.c_ulong, C.POINTER(C.c_float))),
    ("activate", C.CFUNCTYPE(None, _Handle)),
    ("run", C.CFUNCTYPE(None, _Handle, C.c_ulong)),
    ("run_adding", C.CFUNCTYPE(None, _Handle, C.c_ulong)),
    ("set_run_adding_gain", C.CFUNCTYPE(None, _Handle, C.c_float)),
    ("deactivate", C.CFUNCTYPE(None, _Handle)),
    ("cleanup", C.CFUNCTYPE(None, _Handle)),
]


class _NoteData(C.Structure):
    _fields_ = [("channel", C.c_ubyte), ("note", C.c_ubyte), ("velocity", C.c_ubyte), ("off_velocity", C.c_ubyte),
                ("duration", C.c_uint), ("pad", C.c_uint)]


class _SeqEvent(C.Structure):  # snd_seq_event_t: 28 bytes
    _fields_ = [("type", C.c_ubyte), ("flags", C.c_ubyte), ("tag", C.c_ubyte), ("queue", C.c_ubyte),
                ("tick", C.c_uint), ("tv_nsec", C.c_uint), ("source", C.c_ubyte * 2), ("dest", C.c_ubyte * 2),
                ("data", _NoteData)]


assert C.sizeof(_SeqEvent) == 28


class _Program(C.Structure):
    _fields_ = [("bank", C.c_ulong), ("program", C.c_ulong), ("name", C.c_char_p)]


class _Dssi(C.Structure):
    _fields_ = [
        ("api_version", C.c_int), ("ladspa", C.POINTER(_Ladspa)),
        ("configure", C.CFUNCTYPE(C.c_char_p, _Handle, C.c_char_p, C.c_char_p)),
        ("get_program", C.CFUNCTYPE(C.POINTER(_Program), _Handle, C.c_ulong)),
        ("select_program", C.CFUNCTYPE(None, _Handle, C.c_ulong, C.c_ulong)),
        ("get_midi_controller_for_port", C.CFUNCTYPE(C.c_int, _Handle, C.c_ulong)),
        ("run_synth", C.CFUNCTYPE(None, _Handle, C.c_ulong, C.POINTER(_SeqEvent), C.c_ulong)),
        ("run_synth_adding", C.c_void_p), ("run_multiple_synths", C.c_void_p),
        ("run_multiple_synths_adding", C.c_void_p),
    ]


class DSSIPlugin:
    """The first DSSI descriptor of a plugin library, with its port layout."""

    def __init__(self, path: str | Path) -> None:
        if not Path(path).is_file():
            raise TimbreclipError(f"{path}: no such DSSI plugin (install the synth's Debian package)")
        self.path = str(path)
        self.lib = C.CDLL(self.path)
        entry = self.lib.dssi_descriptor
        entry.restype = C.POINTER(_Dssi)
        entry.argtypes = [C.c_ulong]
        d = entry(0)
        if not d:
            raise TimbreclipError(f"{path}: exposes no DSSI descriptor")
        self.dssi = d.contents
        self.ladspa = self.dssi.ladspa.contents
        n = self.ladspa.port_count
        self.port_names = [self.ladspa.port_names[i].decode() for i in range(n)]
        self.port_kinds = [self.ladspa.port_descriptors[i] for i in range(n)]
        hints = [self.ladspa.port_range_hints[i] for i in range(n)]
        self.port_ranges = [(h.hint, h.lower, h.upper) for h in hints]
        self.controls = [i for i, k in enumerate(self.port_kinds) if k & PORT_CONTROL and k & PORT_INPUT]
        self.audio_outs = [i for i, k in enumerate(self.port_kinds) if k & PORT_AUDIO and k & PORT_OUTPUT]
        if not self.audio_outs or not self.dssi.run_synth:
            raise TimbreclipError(f"{path}: not a DSSI synth (no audio output or no run_synth)")

    def instance(self, sample_rate: int) -> "DSSIInstance":
        return DSSIInstance(self, sample_rate)


def _default(hint: int, lo: float, hi: float, rate: int) -> float:
    """LADSPA's default-value hint for a control port."""
    if hint & HINT_SAMPLE_RATE:
        lo, hi = lo * rate, hi * rate
    kind = hint & HINT_DEFAULT_MASK
    log = bool(hint & HINT_LOGARITHMIC) and lo > 0 and hi > 0
    mix = {0x80: 0.25, 0xC0: 0.5, 0x100: 0.75}
    if kind == 0x40:
        return lo
    if kind in mix:
        w = mix[kind]
        return float(np.exp(np.log(lo) * (1 - w) + np.log(hi) * w)) if log else lo * (1 - w) + hi * w
    return {0x140: hi, 0x200: 0.0, 0x240: 1.0, 0x280: 100.0, 0x2C0: 440.0}.get(kind, lo if hint & 1 else 0.0)


class DSSIInstance:
    """One running instance: control values in preallocated floats, stereo (or mono) float32 output blocks."""

    BLOCK = 256

    def __init__(self, plugin: DSSIPlugin, sample_rate: int) -> None:
        self.plugin, self.rate = plugin, int(sample_rate)
        self.handle = plugin.ladspa.instantiate(C.byref(plugin.ladspa), self.rate)
        if not self.handle:
            raise TimbreclipError(f"{plugin.path}: instantiate failed at {sample_rate} Hz")
        self.values = (C.c_float * len(plugin.port_names))()
        for i in plugin.controls:
            self.values[i] = _default(*plugin.port_ranges[i], self.rate)
        self.outs = np.zeros((len(plugin.audio_outs), self.BLOCK), np.float32)
        for i in range(len(plugin.port_names)):
            if i in plugin.audio_outs:
                row = self.outs[plugin.audio_outs.index(i)]
                plugin.ladspa.connect_port(self.handle, i, row.ctypes.data_as(C.POINTER(C.c_float)))
            else:
                plugin.ladspa.connect_port(self.handle, i, C.cast(C.byref(self.values, 4 * i), C.POINTER(C.c_float)))
        if plugin.ladspa.activate:
            plugin.ladspa.activate(self.handle)
        self._events = (_SeqEvent * 4)()

    # -- controls and programs --------------------------------------------------------------------------------
    def set(self, name: str, value: float) -> None:
        self.values[self.plugin.port_names.index(name)] = float(value)

    def set_many(self, values: dict[str, float]) -> None:
        index = {n: i for i, n in enumerate(self.plugin.port_names)}
        for name, value in values.items():
            if name in index:
                self.values[index[name]] = float(value)

    def programs(self) -> list[tuple[int, int, str]]:
        out, k = [], 0
        if not self.plugin.dssi.get_program:
            return out
        while True:
            p = self.plugin.dssi.get_program(self.handle, k)
            if not p:
                return out
            out.append((p.contents.bank, p.contents.program, (p.contents.name or b"").decode("latin-1")))
            k += 1

    def select_program(self, bank: int, program: int) -> None:
        self.plugin.dssi.select_program(self.handle, bank, program)

    # -- audio --------------------------------------------------------------------------------------------------
    def render(self, frames: int, events: list[tuple[int, int, int, int]] = ()) -> np.ndarray:
        """``(channels, frames)`` float32; ``events`` are ``(frame, type, note, velocity)`` with frame < frames."""
        out = np.zeros((len(self.plugin.audio_outs), frames), np.float32)
        for pos, n, now in event_blocks(events, frames, self.BLOCK, len(self._events)):
            for ev, (tick, kind, note, velocity) in zip(self._events, now):
                C.memset(C.byref(ev), 0, C.sizeof(ev))
                ev.type, ev.tick = kind, tick
                ev.data.channel, ev.data.note, ev.data.velocity = 0, note, velocity
            self.plugin.dssi.run_synth(self.handle, n, self._events, len(now))
            out[:, pos:pos + n] = self.outs[:, :n]
        return out

    def note(self, pitch: int, velocity: int, held_s: float, total_s: float) -> np.ndarray:
        """One note: on at frame 0, off after ``held_s``; ``total_s`` of audio."""
        frames, off = int(round(total_s * self.rate)), int(round(held_s * self.rate))
        return self.render(frames, [(0, SND_SEQ_EVENT_NOTEON, pitch, velocity),
                                    (off, SND_SEQ_EVENT_NOTEOFF, pitch, 0)])

    def close(self) -> None:
        if self.handle:
            if self.plugin.ladspa.deactivate:
                self.plugin.ladspa.deactivate(self.handle)
            self.plugin.ladspa.cleanup(self.handle)
            self.handle = None

    def __enter__(self) -> "DSSIInstance":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
