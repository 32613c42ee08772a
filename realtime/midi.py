"""MIDI control of the live loop: control changes mapped to the amount, each prompt's weight, the source weight,
bypass and hold.

rtmidi calls ``on_message`` from its own thread; the mapping turns a message into a command on the live loop's
queue and nothing else (the control thread applies it). The default map (any channel)::

    CC 1  (mod wheel)   amount          0..127 -> 0..1.5 (85 ~ 1.0)
    CC 2                source weight   0..127 -> 0..1
    CC 21..28           weight of prompt 1..8  0..127 -> 0..2
    CC 80               bypass          >= 64 on, < 64 off
    CC 81               hold            >= 64 on, < 64 off

``--midi-map FILE`` overrides any of it with JSON of the same shape, e.g.
``{"amount": 11, "source_weight": 12, "weights": [16, 17], "bypass": 64, "hold": 65, "channel": 1}``
(``channel``: 1-16 to listen to one channel only; omitted: all).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from timbreclip.dsp.errors import TimbreclipError
from timbreclip.dsp.settings import AMOUNT_RANGE


def read_map_json(path: str, known: set[str]) -> dict:
    """A ``--midi-map`` file's JSON object, every key one of ``known``; each problem one line naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as err:
        raise TimbreclipError(f"--midi-map {path}: cannot read ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise TimbreclipError(f"--midi-map {path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise TimbreclipError(f"--midi-map {path}: the top level must be a JSON object")
    unknown = set(data) - known
    if unknown:
        raise TimbreclipError(f"--midi-map {path}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    return data


@dataclass
class MidiMap:
    amount: int | None = 1
    source_weight: int | None = 2
    weights: list[int] = field(default_factory=lambda: list(range(21, 29)))
    bypass: int | None = 80
    hold: int | None = 81
    channel: int | None = None  # 1..16, or None for omni

    @classmethod
    def load(cls, path: str) -> "MidiMap":
        out = cls(**read_map_json(path, set(cls.__dataclass_fields__)))
        for name in ("amount", "source_weight", "bypass", "hold"):
            value = getattr(out, name)
            if value is not None and (not isinstance(value, int) or not 0 <= value <= 127):
                raise TimbreclipError(f"--midi-map {path}: {name} must be a CC number 0..127 or null, got {value!r}")
        if not isinstance(out.weights, list) or not all(isinstance(v, int) and 0 <= v <= 127 for v in out.weights):
            raise TimbreclipError(f"--midi-map {path}: weights must be a list of CC numbers 0..127")
        if out.channel is not None and (not isinstance(out.channel, int) or not 1 <= out.channel <= 16):
            raise TimbreclipError(f"--midi-map {path}: channel must be 1..16 or null, got {out.channel!r}")
        return out

    def command(self, message: list[int]) -> tuple | None:
        """The live-loop command for a raw MIDI message, or None."""
        if len(message) != 3 or message[0] & 0xF0 != 0xB0:
            return None
        if self.channel is not None and (message[0] & 0x0F) != self.channel - 1:
            return None
        cc, value = message[1], message[2]
        if cc == self.amount:
            return ("amount", AMOUNT_RANGE[1] * value / 127.0)
        if cc == self.source_weight:
            return ("source_weight", value / 127.0)
        if cc in self.weights:
            return ("weight", self.weights.index(cc), 2.0 * value / 127.0)
        if cc == self.bypass:
            return ("bypass", value >= 64)
        if cc == self.hold:
            return ("hold", value >= 64)
        return None


class MidiControl:
    """Listens on an rtmidi input and posts mapped commands to ``commands`` (a queue)."""

    def __init__(self, midi_in, mapping: MidiMap, commands) -> None:
        self.midi_in = midi_in
        self.mapping = mapping
        self.commands = commands
        self.received = 0
        midi_in.set_callback(self._on_message)

    def _on_message(self, event, data=None) -> None:
        message, _delta = event
        self.received += 1
        command = self.mapping.command(message)
        if command is not None:
            self.commands.put(command)

    def close(self) -> None:
        self.midi_in.cancel_callback()
        self.midi_in.close_port()
        self.midi_in.delete()
