"""The patch browser without its screen: the session (query, ranked results at the played pitch, the selection,
favourites and history in the library database), the keyboard controller's browsing map, and the audio stream.

``BrowserSession`` is what the Textual UI (``browse_ui.py``) drives and what tests drive directly:
- ``set_query("warm pad")`` or ``set_query("like:FILE")`` embeds the query once; ``rerank()`` ranks every patch at
  the pitch being played (its note nearest that pitch, ``PatchSearch.rank(pitch=...)``), or by its best note before
  anything has been played.
- Pitch following: ``note_played(key)`` (from the MIDI input or the computer-keyboard piano) moves the scoring pitch;
  the results re-rank, and the selected patch stays selected wherever it lands (it is kept in the list even when it
  drops out of the top), so the ranking never steals the selection from under the player.
- ``select(i)`` builds the selected patch's player (soundfont preset or sample) and hands it to the audio engine; a
  patch whose file has vanished gives a message and the browser goes on (nothing plays until another is chosen).

``BrowseMap``: program change N selects result N (0-based on the wire: the controller's "program 1" is result 1);
CCs (or notes on one channel) for next/previous result, favourite and next/previous page. Defaults (any channel,
a press is a value >= 64)::

    CC 102 previous   CC 103 next   CC 104 favourite   CC 105 next page   CC 106 previous page

``--midi-map FILE`` overrides any of it with JSON of the same shape, e.g. ``{"next": 20, "previous": 21}``, or
``{"buttons": "notes", "button_channel": 16, "next": 60, "previous": 59}`` to use keys on channel 16 as buttons
(those keys then do not sound).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields

import numpy as np

from timbreclip.dsp.errors import TimbreclipError

from .audition import CONTROL, NOTE_OFF, NOTE_ON, PROGRAM, AuditionEngine, load_player
from .midi import read_map_json

PAGE_SIZE = 20
SHOWN = 100  # results kept (five pages)
WATCHDOG_S = 2.0
SWITCH_INTERVAL_S = 0.0005


@dataclass
class BrowseMap:
    previous: int | None = 102
    next: int | None = 103
    favourite: int | None = 104
    next_page: int | None = 105
    previous_page: int | None = 106
    buttons: str = "cc"  # "cc", or "notes": the numbers are keys on button_channel
    button_channel: int | None = None  # 1..16; required for "notes"
    program_change: bool = True

    ACTIONS = ("previous", "next", "favourite", "next_page", "previous_page")

    @classmethod
    def load(cls, path: str) -> "BrowseMap":
        out = cls(**read_map_json(path, {f.name for f in fields(cls)}))
        for name in cls.ACTIONS:
            value = getattr(out, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 127):
                raise TimbreclipError(f"--midi-map {path}: {name} must be a number 0..127 or null, got {value!r}")
        if out.buttons not in ("cc", "notes"):
            raise TimbreclipError(f"--midi-map {path}: buttons must be \"cc\" or \"notes\", got {out.buttons!r}")
        if out.button_channel is not None and (not isinstance(out.button_channel, int)
                                               or not 1 <= out.button_channel <= 16):
            raise TimbreclipError(f"--midi-map {path}: button_channel must be 1..16 or null")
        if out.buttons == "notes" and out.button_channel is None:
            raise TimbreclipError(f"--midi-map {path}: buttons \"notes\" needs a button_channel (1..16)")
        return out

    def action(self, kind: int, number: int, value: int, channel: int) -> str | None:
        """The browsing action for a forwarded MIDI event, or None. ``channel`` is 0-based."""
        if self.button_channel is not None and channel != self.button_channel - 1:
            return None
        if self.buttons == "cc" and (kind != CONTROL or value < 64):
            return None
        if self.buttons == "notes" and kind != NOTE_ON:
            return None
        for name in self.ACTIONS:
            if getattr(self, name) == number:
                return name
        return None

    def button_note_channel(self) -> int:
        """The 0-based channel whose keys are buttons (they must not sound), or -1."""
        return self.button_channel - 1 if self.buttons == "notes" else -1


class BrowserSession:
    """The browser's state and actions (see module docstring)."""

    def __init__(self, library, searcher, engine: AuditionEngine | None = None, midi_map: BrowseMap | None = None,
                 page_size: int = PAGE_SIZE, shown: int = SHOWN) -> None:
        self.library = library
        self.searcher = searcher
        self.engine = engine
        self.map = midi_map or BrowseMap()
        if engine is not None:
            engine.button_channel = self.map.button_note_channel()
        self.page_size, self.shown = page_size, shown
        self.query = ""
        self.z: np.ndarray | None = None
        self.pitch: float | None = None  # the pitch patches are scored at (None: best note)
        self.results: list[dict] = []
        self.selected_key: str | None = None
        self.player_key: str | None = None  # the patch the engine plays
        self.view = "results"  # results | favourites | history
        self.messages: list[str] = []
        self.favourites = library.favourites()
        self._held: list[int] = []
        self._played_keys: set[str] = set()
        self.synths: dict = {}

    # -- query and ranking --------------------------------------------------------------------------------------
    def set_query(self, text: str) -> None:
        """Words, or ``like:FILE`` (an example); empty: every patch in library order. Errors are one line."""
        text = (text or "").strip()
        self.apply_query(text, self.query_vector(text) if text else None)

    def apply_query(self, text: str, z: np.ndarray | None) -> None:
        """Show the ranking for a new query (embedded already): a new list, so its best result is selected."""
        self.query, self.z = text, z
        self.selected_key = None
        self.rerank()

    def query_vector(self, text: str) -> np.ndarray:
        """``like:FILE`` (an example), ``like:FILE words`` (the example moved toward the words), or words."""
        from timbreclip.library.search import Query

        if not text.lower().startswith("like:"):
            return self.searcher.query_vector(Query(text=text))
        rest = text[5:].strip()
        path, words = rest, ""
        if not os.path.isfile(rest) and " " in rest:
            path, words = rest.split(" ", 1)
        if not path:
            raise TimbreclipError("like: needs an audio file (like:FILE)")
        if not os.path.isfile(path):
            raise TimbreclipError(f"like:{path}: no such file")
        prompts = {words.strip(): 1.0} if words.strip() else None
        return self.searcher.query_vector(Query(like=path, prompts=prompts))

    def rerank(self) -> list[dict]:
        self.searcher.refresh()
        index = self.searcher.index
        keep = None
        if self.view == "favourites":
            favourites = self.favourites
            keep = lambda p: p["key"] in favourites  # noqa: E731
        if self.view == "history":
            results = self._history_rows()
        elif self.z is None:
            patches = [p for p in index.patches if keep is None or keep(p)][:self.shown]
            results = [{"rank": i, "patch_id": int(p["id"]), "title": p["title"], "category": p["category"],
                        "source": p["source"], "score": None, "pitch": None, "key": p["key"]}
                       for i, p in enumerate(patches, start=1)]
        else:
            results = self.searcher.rank(self.z, top=self.shown, pitch=self.pitch, keep=keep)
        if self.selected_key is not None and all(r["key"] != self.selected_key for r in results):
            kept = self._row_for(self.selected_key) if self.view == "results" else None
            if kept is not None:  # never drop the selection from under the player: it stays, last
                results.append(kept)
            else:  # another view (favourites, history) was asked for: its first patch is selected
                self.selected_key = None
        self.results = results
        if self.selected_key is None and results:
            self.select(0)
        return results

    def _row_for(self, key: str) -> dict | None:
        for p in self.searcher.index.patches:
            if p["key"] == key:
                score = None
                if self.z is not None:
                    hit = self.searcher.rank(self.z, top=1, pitch=self.pitch, keep=lambda q: q["key"] == key)
                    score = hit[0]["score"] if hit else None
                return {"rank": None, "patch_id": int(p["id"]), "title": p["title"], "category": p["category"],
                        "source": p["source"], "score": score, "pitch": None, "key": key}
        return None

    def _history_rows(self) -> list[dict]:
        by_key = {p["key"]: p for p in self.searcher.index.patches}
        rows, seen = [], set()
        for h in self.library.history(limit=500):
            p = by_key.get(h["patch_key"])
            if p is None or p["key"] in seen:
                continue
            seen.add(p["key"])
            rows.append({"rank": len(rows) + 1, "patch_id": int(p["id"]), "title": p["title"],
                         "category": p["category"], "source": p["source"], "score": None, "pitch": None,
                         "key": p["key"]})
            if len(rows) >= self.shown:
                break
        return rows

    def set_view(self, view: str) -> None:
        if view not in ("results", "favourites", "history"):
            raise ValueError(view)
        self.view = view
        self.rerank()

    # -- the played pitch -----------------------------------------------------------------------------------------
    def note_played(self, key: int, on: bool = True) -> bool:
        """A note from the player; returns True when the scoring pitch moved (the results were re-ranked)."""
        if on:
            if key in self._held:
                self._held.remove(key)
            self._held.append(key)
            if self.selected_key is not None and self.selected_key not in self._played_keys:
                self._played_keys.add(self.selected_key)
                self.library.add_history(self.selected_key, self.query)
        elif key in self._held:
            self._held.remove(key)
        if not on:
            return False
        pitch = float(key)  # the newest key held is the one the player is listening to
        if self.pitch == pitch:
            return False
        self.pitch = pitch
        if self.z is not None and self.view != "history":
            self.rerank()
            return True
        return False

    # -- selection ------------------------------------------------------------------------------------------------
    @property
    def selected_index(self) -> int | None:
        for i, r in enumerate(self.results):
            if r["key"] == self.selected_key:
                return i
        return None

    def selected_patch(self) -> dict | None:
        if self.selected_key is None:
            return None
        for p in self.searcher.index.patches:
            if p["key"] == self.selected_key:
                return p
        return None

    def select(self, i: int) -> bool:
        """Select result ``i`` (0-based, clamped); returns False when there is nothing to select."""
        if not self.results:
            return False
        i = max(0, min(int(i), len(self.results) - 1))
        key = self.results[i]["key"]
        self.selected_key = key
        self._load_player()
        return True

    def move(self, delta: int) -> None:
        current = self.selected_index
        self.select((current if current is not None else -1) + delta if current is not None else 0)

    def action(self, name: str) -> None:
        if name == "next":
            self.move(1)
        elif name == "previous":
            self.move(-1)
        elif name == "next_page":
            self.move(self.page_size)
        elif name == "previous_page":
            self.move(-self.page_size)
        elif name == "favourite":
            self.toggle_favourite()

    def toggle_favourite(self) -> bool | None:
        key = self.selected_key
        if key is None:
            return None
        on = key not in self.favourites
        self.library.set_favourite(key, on)
        self.favourites = self.library.favourites()
        return on

    def _load_player(self) -> None:
        if self.engine is None or self.selected_key == self.player_key:
            return
        patch = self.selected_patch()
        if patch is None:
            return
        patch = dict(patch, root=self._root_pitch(patch))
        try:
            player = load_player(patch, self.engine.sample_rate, self.engine.max_block_frames, self.synths)
        except TimbreclipError as err:
            self.messages.append(str(err))
            self.engine.select(None)
            self.player_key = self.selected_key
            return
        self.engine.select(player)
        self.player_key = self.selected_key

    def _root_pitch(self, patch: dict) -> float | None:
        index = self.searcher.index
        i = next(k for k, p in enumerate(index.patches) if p["key"] == patch["key"])
        pitches = index.note_pitch[index.note_patch == i]
        pitches = pitches[np.isfinite(pitches)]
        return float(pitches[0]) if len(pitches) else None

    # -- MIDI forwarded by the audio thread ---------------------------------------------------------------------
    def drain_midi(self) -> list[str]:
        """Apply what the audio thread forwarded (program changes, browsing CCs, played notes); returns what
        happened, for the UI to refresh."""
        events = []
        engine = self.engine
        if engine is None:
            return events
        row = np.zeros(4, np.int64)
        while engine.outbox.pop_into(row):
            kind, a, b, channel = (int(v) for v in row)
            name = self.map.action(kind, a, b, channel)
            if name is not None:
                self.action(name)
                events.append(name)
            elif kind == PROGRAM and self.map.program_change:
                if self.select(a):
                    events.append(f"program {a}")
            elif kind in (NOTE_ON, NOTE_OFF) and channel != self.map.button_note_channel():
                if self.note_played(a, kind == NOTE_ON):
                    events.append("rerank")
                events.append("note")
        engine.collect()
        return events

    def close(self) -> None:
        for synth in self.synths.values():
            synth.delete()
        self.synths.clear()


class BrowserAudio:
    """The output stream whose callback is ``engine.audio_block`` (polling ``midi_in`` there), and a watchdog."""

    def __init__(self, engine: AuditionEngine, output_device=None, midi_in=None) -> None:
        import sounddevice as sd

        self.engine = engine
        engine.midi_in = midi_in
        self.statuses = 0

        def callback(outdata, frames, time_info, status):
            if status:
                self.statuses += 1
            engine.audio_block(outdata)

        self.stream = sd.OutputStream(device=output_device, samplerate=engine.sample_rate,
                                      blocksize=engine.max_block_frames, channels=engine.channels, dtype="float32",
                                      callback=callback)
        self._last_blocks, self._last_progress = -1, time.monotonic()

    def start(self) -> None:
        import sys

        # The callback needs the GIL on entry: a short switch interval bounds how long the UI thread keeps it.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.stream.start()
        self._last_progress = time.monotonic()

    def healthy(self) -> bool:
        """False once no callback has run for WATCHDOG_S (the device vanished or the audio server stopped)."""
        now = time.monotonic()
        if self.engine.blocks != self._last_blocks:
            self._last_blocks, self._last_progress = self.engine.blocks, now
            return True
        return now - self._last_progress <= WATCHDOG_S and self.stream.active

    def latency_s(self) -> float:
        return float(self.stream.latency)

    def stop(self, failed: bool = False) -> None:
        """Stop the stream, then silence every voice (all notes off on exit, on Ctrl-C and on device loss)."""
        import threading

        def close():
            try:
                self.stream.abort() if failed else self.stream.stop()
                self.stream.close()
            except Exception:
                pass

        if failed:  # PortAudio can hang on a server that is gone
            t = threading.Thread(target=close, daemon=True)
            t.start()
            t.join(2.0)
        else:
            close()
        self.engine.panic()
        self.engine.midi_in = None
        if hasattr(self, "_switch_interval"):
            import sys

            sys.setswitchinterval(self._switch_interval)

