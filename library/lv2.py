"""A small offline LV2 host (ctypes) for instrument plugins: instantiate, set control ports, play one note.

What it provides is what Calf's Monosynth and Organ ask of a host (their ``.ttl`` files: ``urid:map`` is the one
required feature; MIDI arrives as ``midi:MidiEvent`` atoms in an ``atom:Sequence`` on an atom input port):

- the plugin's ports are read from its ``.ttl`` (index, symbol, direction, audio / control / atom, default); the
  files are machine-written and regular, so a few patterns read them without an RDF library;
- ``urid:map`` is a Python callback handing out one integer per URI, kept alive as long as the plugin;
- every control port is connected to a preallocated float (outputs too), the atom input to a sequence buffer
  rewritten before each ``run`` (note events with their frame offsets), the atom output to a buffer whose capacity
  is announced before each ``run`` (an ``atom:Chunk`` of that size, as the atom spec asks).

Presets (``lv2p:Preset`` in ``presets-*.ttl``) are port values by symbol; the host matches symbols case-insensitively
(Calf writes "Filter" for the port "filter"). One :class:`LV2Plugin` per plugin URI (the library stays loaded);
one :class:`LV2Instance` per note or preset, closed with ``close()`` (or a ``with`` block).
"""

from __future__ import annotations

import ctypes as C
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from timbreclip.dsp.errors import TimbreclipError

from .dssi import event_blocks

ATOM_SEQUENCE = "http://lv2plug.in/ns/ext/atom#Sequence"
ATOM_CHUNK = "http://lv2plug.in/ns/ext/atom#Chunk"
MIDI_EVENT = "http://lv2plug.in/ns/ext/midi#MidiEvent"
URID_MAP = "http://lv2plug.in/ns/ext/urid#map"
NOTE_ON, NOTE_OFF = 0x90, 0x80


class _Feature(C.Structure):
    _fields_ = [("uri", C.c_char_p), ("data", C.c_void_p)]


_MapFn = C.CFUNCTYPE(C.c_uint32, C.c_void_p, C.c_char_p)


class _UridMap(C.Structure):
    _fields_ = [("handle", C.c_void_p), ("map", _MapFn)]


class _Descriptor(C.Structure):
    pass


_Handle = C.c_void_p
_Descriptor._fields_ = [
    ("uri", C.c_char_p),
    ("instantiate", C.CFUNCTYPE(_Handle, C.POINTER(_Descriptor), C.c_double, C.c_char_p,
                                C.POINTER(C.POINTER(_Feature)))),
    ("connect_port", C.CFUNCTYPE(None, _Handle, C.c_uint32, C.c_void_p)),
    ("activate", C.CFUNCTYPE(None, _Handle)),
    ("run", C.CFUNCTYPE(None, _Handle, C.c_uint32)),
    ("deactivate", C.CFUNCTYPE(None, _Handle)),
    ("cleanup", C.CFUNCTYPE(None, _Handle)),
    ("extension_data", C.c_void_p),
]


@dataclass(frozen=True)
class Port:
    index: int
    symbol: str
    kind: str  # "audio" | "control" | "atom"
    is_input: bool
    default: float


_NUMBER = r"([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"


def read_ports(ttl: str, plugin_uri: str) -> list[Port]:
    """The ports of ``plugin_uri`` as its ``.ttl`` describes them, in index order."""
    start = ttl.find(f"<{plugin_uri}>")
    if start < 0:
        raise TimbreclipError(f"{plugin_uri}: not described in its .ttl")
    body = ttl[start:]
    body = body[body.find("lv2:port"):]
    end = re.search(r"\]\s*\.\s*(\n|$)", body)  # the statement ends with the last port's "] ."
    ports = []
    for block in re.split(r"\]\s*,\s*\[", body[:end.end()] if end else body):
        index = re.search(r"lv2:index\s+(\d+)", block)
        symbol = re.search(r'lv2:symbol\s+"([^"]+)"', block)
        if not index or not symbol:
            continue
        kind = ("audio" if "lv2:AudioPort" in block else "control" if "lv2:ControlPort" in block
                else "atom" if "atom:AtomPort" in block else "other")
        default = re.search(r"lv2:default\s+" + _NUMBER, block)
        ports.append(Port(int(index.group(1)), symbol.group(1), kind, "lv2:InputPort" in block,
                          float(default.group(1)) if default else 0.0))
    ports.sort(key=lambda p: p.index)
    if [p.index for p in ports] != list(range(len(ports))):
        raise TimbreclipError(f"{plugin_uri}: port indices in its .ttl are not 0..{len(ports) - 1}")
    return ports


def read_presets(ttl: str, plugin_uri: str) -> list[tuple[str, dict[str, float]]]:
    """``[(label, {symbol: value})]`` for each ``lv2p:Preset`` of ``plugin_uri`` in a presets file, in file order."""
    out = []
    for chunk in re.split(r"\n(?=<[^>]+>\s+a\s+lv2p:Preset)", ttl):
        if f"lv2:appliesTo <{plugin_uri}>" not in chunk:
            continue
        label = re.search(r'rdfs:label\s+"([^"]*)"', chunk)
        values = {m.group(1): float(m.group(2)) for m in
                  re.finditer(r'lv2:symbol\s+"([^"]+)"\s*;\s*lv2p:value\s+' + _NUMBER, chunk)}
        if label:
            out.append((label.group(1), values))
    return out


class LV2Plugin:
    """One plugin of an LV2 bundle: its descriptor (found by URI) and its ports."""

    def __init__(self, bundle: str | Path, plugin_uri: str, ttl_name: str) -> None:
        bundle = Path(bundle)
        ttl = bundle / ttl_name
        if not ttl.is_file():
            raise TimbreclipError(f"{ttl}: no such LV2 plugin description (install the plugin's Debian package)")
        self.bundle, self.uri = bundle, plugin_uri
        self.ports = read_ports(ttl.read_text(errors="replace"), plugin_uri)
        binary = re.search(r"lv2:binary\s+<([^>]+)>", (bundle / "manifest.ttl").read_text(errors="replace")
                           if (bundle / "manifest.ttl").is_file() else "")
        lib_path = bundle / (binary.group(1) if binary else "")
        if not binary or not lib_path.is_file():
            candidates = sorted(p for p in bundle.glob("*.so") if "gui" not in p.name)
            if not candidates:
                raise TimbreclipError(f"{bundle}: no plugin library in the bundle")
            lib_path = candidates[0]
        self.lib = C.CDLL(str(lib_path))
        entry = self.lib.lv2_descriptor
        entry.restype = C.POINTER(_Descriptor)
        entry.argtypes = [C.c_uint32]
        k, self.descriptor = 0, None
        while True:
            d = entry(k)
            if not d:
                break
            if d.contents.uri.decode() == plugin_uri:
                self.descriptor = d
                break
            k += 1
        if self.descriptor is None:
            raise TimbreclipError(f"{lib_path}: has no plugin {plugin_uri}")
        self.audio_outs = [p.index for p in self.ports if p.kind == "audio" and not p.is_input]
        self.midi_in = next((p.index for p in self.ports if p.kind == "atom" and p.is_input), None)
        if not self.audio_outs or self.midi_in is None:
            raise TimbreclipError(f"{plugin_uri}: not an instrument (no audio output or no atom MIDI input)")
        self._uris: dict[str, int] = {}
        self._map_fn = _MapFn(self._map)  # kept alive with the plugin: instances call it from C
        self._map = _UridMap(None, self._map_fn)
        self._features = (C.POINTER(_Feature) * 2)()
        self._feature = _Feature(URID_MAP.encode(), C.cast(C.pointer(self._map), C.c_void_p))
        self._features[0] = C.pointer(self._feature)
        self._features[1] = None
        self.symbols = {p.symbol.lower(): p.index for p in self.ports}

    def _map(self, _handle, uri: bytes) -> int:
        return self._uris.setdefault(uri.decode(), len(self._uris) + 1)

    def urid(self, uri: str) -> int:
        return self._uris.setdefault(uri, len(self._uris) + 1)

    def instance(self, sample_rate: int) -> "LV2Instance":
        return LV2Instance(self, sample_rate)


class LV2Instance:
    """One running instance: controls in preallocated floats, audio out in ``(outputs, BLOCK)`` float32."""

    BLOCK = 256
    ATOM_CAPACITY = 8192

    def __init__(self, plugin: LV2Plugin, sample_rate: int) -> None:
        self.plugin, self.rate = plugin, int(sample_rate)
        d = plugin.descriptor.contents
        self._d = d
        self.handle = d.instantiate(plugin.descriptor, float(self.rate), (str(plugin.bundle) + "/").encode(),
                                    plugin._features)
        if not self.handle:
            raise TimbreclipError(f"{plugin.uri}: instantiate failed at {sample_rate} Hz")
        n = len(plugin.ports)
        self.values = (C.c_float * n)()
        for p in plugin.ports:
            self.values[p.index] = p.default
        self.outs = np.zeros((len(plugin.audio_outs), self.BLOCK), np.float32)
        self._scratch = np.zeros(self.BLOCK, np.float32)  # audio inputs, if any: silence
        self._atom_in = (C.c_uint8 * self.ATOM_CAPACITY)()
        self._atom_out = (C.c_uint8 * self.ATOM_CAPACITY)()
        self._seq, self._chunk, self._midi = (plugin.urid(ATOM_SEQUENCE), plugin.urid(ATOM_CHUNK),
                                              plugin.urid(MIDI_EVENT))
        for p in plugin.ports:
            if p.kind == "audio":
                data = (self.outs[plugin.audio_outs.index(p.index)] if not p.is_input else self._scratch).ctypes.data
            elif p.kind == "atom":
                data = C.addressof(self._atom_in if p.is_input else self._atom_out)
            else:
                data = C.addressof(self.values) + 4 * p.index
            d.connect_port(self.handle, p.index, C.c_void_p(data))
        if d.activate:
            d.activate(self.handle)

    def set_many(self, values: dict[str, float]) -> int:
        """Set control inputs by symbol (case-insensitive); returns how many symbols matched a port."""
        matched = 0
        for name, value in values.items():
            index = self.plugin.symbols.get(name.lower())
            if index is not None and self.plugin.ports[index].kind == "control" and self.plugin.ports[index].is_input:
                self.values[index] = float(value)
                matched += 1
        return matched

    def _write_events(self, events: list[tuple[int, int, int, int]]) -> None:
        """An ``atom:Sequence`` (frame time stamps) of 3-byte MIDI events into the input buffer."""
        body = bytearray(struct.pack("<II", 0, 0))  # unit 0 (frames), pad
        for frame, status, note, velocity in events:
            body += struct.pack("<qII", frame, 3, self._midi) + bytes((status, note, velocity)) + bytes(5)
        data = struct.pack("<II", len(body), self._seq) + bytes(body)
        C.memmove(self._atom_in, data, len(data))

    def render(self, frames: int, events: list[tuple[int, int, int, int]] = ()) -> np.ndarray:
        """``(outputs, frames)`` float32; ``events`` are ``(frame, status, note, velocity)`` with frame < frames."""
        out = np.zeros((len(self.plugin.audio_outs), frames), np.float32)
        for pos, n, now in event_blocks(events, frames, self.BLOCK):
            self._write_events(now)
            C.memmove(self._atom_out, struct.pack("<II", self.ATOM_CAPACITY - 8, self._chunk), 8)
            self._d.run(self.handle, n)
            out[:, pos:pos + n] = self.outs[:, :n]
        return out

    def note(self, pitch: int, velocity: int, held_s: float, total_s: float) -> np.ndarray:
        """One note: on at frame 0, off after ``held_s``; ``total_s`` of audio."""
        frames, off = int(round(total_s * self.rate)), int(round(held_s * self.rate))
        return self.render(frames, [(0, NOTE_ON, pitch, velocity), (off, NOTE_OFF, pitch, 0)])

    def close(self) -> None:
        if self.handle:
            if self._d.deactivate:
                self._d.deactivate(self.handle)
            self._d.cleanup(self.handle)
            self.handle = None

    def __enter__(self) -> "LV2Instance":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
