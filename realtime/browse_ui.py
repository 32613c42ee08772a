"""``timbreclip browse``: the patch browser's terminal UI (Textual) over a ``BrowserSession``.

Screen: a search box (words, or ``like:FILE``), the ranked results (rank, favourite, title, category, source, score
at the pitch being played), the selected patch's details, and a status line (MIDI, audio, the pitch followed).

Keys (when the search box is not focused):
    up/down, page up/down   move the selection (the selected patch is what the keyboard plays)
    enter                   play the selected patch at the followed pitch (a short preview note)
    /                       search box (enter or escape returns to the results)
    f                       favourite / unfavourite the selected patch
    F2 / F3 / F4            results / favourites / history
    z s x d c v g b h n j m ,       the lower piano row (C3..C4)
    q 2 w 3 e r 5 t 6 y 7 u i       the upper piano row (C4..C5)
    - / =                   octave down / up for both rows
    ctrl+q, ctrl+c          quit (all notes off)
A terminal reports key presses but not releases, so a computer-keyboard note lasts ``PIANO_NOTE_S``.
"""

from __future__ import annotations

import time

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import DataTable, Footer, Input, Static

from timbreclip.dsp.errors import TimbreclipError

from .browser import BrowserAudio, BrowserSession

LOWER_ROW = "zsxdcvgbhnjm,"
UPPER_ROW = "q2w3er5t6y7ui"
PIANO_BASE = 48  # C3 on the lower row
PIANO_NOTE_S = 0.6
PIANO_VELOCITY = 100
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def note_name(pitch: float | None) -> str:
    if pitch is None:
        return "-"
    p = int(round(pitch))
    return f"{NOTE_NAMES[p % 12]}{p // 12 - 1} ({pitch:g})"


def piano_key(character: str | None, octave_shift: int = 0) -> int | None:
    """The MIDI note for a computer-keyboard piano key, or None."""
    if not character:
        return None
    if character in LOWER_ROW:
        note = PIANO_BASE + LOWER_ROW.index(character)
    elif character in UPPER_ROW:
        note = PIANO_BASE + 12 + UPPER_ROW.index(character)
    else:
        return None
    note += 12 * octave_shift
    return note if 0 <= note <= 127 else None


class BrowserApp(App):
    CSS = """
    #search { height: 3; }
    #main { height: 1fr; }
    #results { width: 3fr; }
    #details { width: 2fr; padding: 0 1; border-left: solid $accent; }
    #status { height: 2; padding: 0 1; background: $boost; }
    """
    BINDINGS = [
        Binding("slash", "focus_search", "search"),
        Binding("f", "favourite", "favourite"),
        Binding("f2", "view('results')", "results"),
        Binding("f3", "view('favourites')", "favourites"),
        Binding("f4", "view('history')", "history"),
        Binding("ctrl+q", "quit", "quit", priority=True),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(self, session: BrowserSession, audio: BrowserAudio | None = None, query: str | None = None,
                 midi_name: str = "", audio_name: str = "", echo=None) -> None:
        super().__init__()
        self.echo = echo  # a text stream that gets one line per selection (headless use), or None
        self._echoed: str | None = None
        self.session = session
        self.audio = audio
        self.initial_query = query or ""
        self.midi_name, self.audio_name = midi_name, audio_name
        self.octave_shift = 0
        self.failure: str | None = None
        self._piano_off: dict[int, object] = {}
        self.query_seq = 0  # keystrokes in the search box
        self.shown_seq = 0  # the keystroke whose results are on screen
        self.typed_at: dict[int, float] = {}  # keystroke -> perf_counter when it was typed
        self.shown_at: dict[int, float] = {}  # keystroke -> perf_counter when its results were shown
        self._asked = self.initial_query  # the text last sent to be embedded
        self.note_rerank_ms: list[float] = []  # a piano key -> its pitch's ranking on screen

    def compose(self) -> ComposeResult:
        yield Input(value=self.initial_query, placeholder="describe a sound (warm pad, bright pluck), or like:FILE",
                    id="search")
        with Horizontal(id="main"):
            table = DataTable(id="results", cursor_type="row", zebra_stripes=True)
            yield table
            with Vertical(id="details"):
                yield Static(id="patch")
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "timbreclip browse"
        table = self.query_one(DataTable)
        table.add_columns("#", "★", "title", "category", "source", "score")
        if self.initial_query:
            self._run_query(self.initial_query, 0)
        else:
            self.session.rerank()
            self.show_results()
        table.focus()
        self.set_interval(0.01, self._tick)

    # -- search ---------------------------------------------------------------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "search" or event.value == self._asked:
            return
        self._asked = event.value
        self.query_seq += 1
        self.typed_at[self.query_seq] = time.perf_counter()
        self._run_query(event.value, self.query_seq)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(DataTable).focus()

    @work(thread=True, exclusive=True, group="query")
    def _run_query(self, text: str, seq: int) -> None:
        """Embed the query off the UI thread (the slow part); ranking and drawing happen on the UI thread."""
        try:
            z = self.session.query_vector(text.strip()) if text.strip() else None
            error = None
        except TimbreclipError as err:
            z, error = None, str(err)
        self.call_from_thread(self._apply_query, text.strip(), z, error, seq)

    def _apply_query(self, text: str, z, error: str | None, seq: int) -> None:
        if seq < self.shown_seq:
            return  # an older keystroke's answer arriving late
        if error is not None:
            self.set_message(error)
            return
        self.session.apply_query(text, z)
        self.show_results()
        self.shown_seq = seq
        self.shown_at[seq] = time.perf_counter()

    # -- drawing --------------------------------------------------------------------------------------------------
    def show_results(self) -> None:
        session = self.session
        table = self._widget("#results")
        if table is None:
            return
        table.clear()
        for r in session.results:
            star = "★" if r["key"] in session.favourites else ""
            score = "" if r["score"] is None else f"{r['score']:+.3f}"
            table.add_row(str(r["rank"] or "·"), star, r["title"], r["category"] or "", r["source"], score,
                          key=r["key"])
        index = session.selected_index
        if index is not None:
            table.move_cursor(row=index, animate=False)
        self.show_details()
        if self.echo is not None and session.selected_key != self._echoed and index is not None:
            self._echoed = session.selected_key
            r = session.results[index]
            self.echo.write(f"selected {index + 1}: {r['title']} ({r['category'] or '-'}, {r['source']})\n")
            self.echo.flush()

    def show_details(self) -> None:
        session = self.session
        patch = session.selected_patch()
        lines = []
        if patch is None:
            lines.append("no patch selected")
        else:
            star = "  ★ favourite" if patch["key"] in session.favourites else ""
            lines += [f"[b]{patch['title']}[/b]{star}", "", f"category    {patch['category'] or '-'}",
                      f"instrument  {patch['instrument'] or '-'}", f"tags        {', '.join(patch['tags']) or '-'}",
                      f"source      {patch['source']} ({patch['kind']})"]
            if patch["kind"] == "soundfont":
                lines.append(f"preset      bank {patch['bank']}, program {patch['program']}")
            if patch["file"]:
                lines.append(f"file        {patch['file']}")
            row = next((r for r in session.results if r["key"] == patch["key"]), None)
            if row is not None and row["score"] is not None:
                lines.append(f"score       {row['score']:+.3f} (note {note_name(row['pitch'])})")
        lines += ["", f"query       {session.query or '(none: library order)'}",
                  f"view        {session.view}", f"played at   {note_name(session.pitch)}"]
        panel = self._widget("#patch")
        if panel is not None:
            panel.update("\n".join(lines))
            self._status()

    def _status(self, message: str | None = None) -> None:
        parts = [f"MIDI {self.midi_name or 'off'}", f"audio {self.audio_name or 'off'}",
                 f"piano octave {self.octave_shift:+d}", f"{len(self.session.results)} results"]
        text = " · ".join(parts)
        last = message or (self.session.messages[-1] if self.session.messages else "")
        status = self._widget("#status")
        if status is not None:
            status.update(text + ("\n" + last if last else ""))

    def _widget(self, selector: str):
        """The widget, or None while the screen is being torn down (late events)."""
        try:
            return self.query_one(selector)
        except NoMatches:
            return None

    def set_message(self, text: str) -> None:
        self.session.messages.append(text)
        self._status(text)

    # -- selection and keys ---------------------------------------------------------------------------------------
    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row is None or event.cursor_row < 0 or event.cursor_row >= len(self.session.results):
            return
        if self.session.results[event.cursor_row]["key"] == self.session.selected_key:
            return
        before = len(self.session.messages)
        self.session.select(event.cursor_row)
        self.show_results() if self.echo is not None else self.show_details()
        if len(self.session.messages) > before:
            self.set_message(self.session.messages[-1])

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.preview()

    def preview(self) -> None:
        key = int(self.session.pitch) if self.session.pitch is not None else 60
        self._piano(key)

    def on_key(self, event) -> None:
        if isinstance(self.focused, Input):
            if event.key == "escape":
                self.query_one(DataTable).focus()
            return
        if event.character in ("-", "="):
            self.octave_shift = max(-3, min(4, self.octave_shift + (1 if event.character == "=" else -1)))
            self._status()
            event.stop()
            return
        key = piano_key(event.character, self.octave_shift)
        if key is not None:
            self._piano(key)
            event.stop()

    def _piano(self, key: int) -> None:
        engine = self.session.engine
        if engine is not None:
            timer = self._piano_off.pop(key, None)
            if timer is not None:
                timer.stop()
                engine.note_off(key)
            engine.note_on(key, PIANO_VELOCITY)
            self._piano_off[key] = self.set_timer(PIANO_NOTE_S, lambda k=key: self._piano_release(k))
        t0 = time.perf_counter()
        if self.session.note_played(key):
            self.show_results()
            self.note_rerank_ms.append(1e3 * (time.perf_counter() - t0))
        else:
            self.show_details()

    def _piano_release(self, key: int) -> None:
        self._piano_off.pop(key, None)
        if self.session.engine is not None:
            self.session.engine.note_off(key)
        self.session.note_played(key, on=False)

    def action_focus_search(self) -> None:
        self.query_one(Input).focus()

    def action_favourite(self) -> None:
        on = self.session.toggle_favourite()
        if on is not None:
            self.show_results() if self.session.view == "favourites" else self._refresh_star()

    def _refresh_star(self) -> None:
        table = self.query_one(DataTable)
        index = self.session.selected_index
        if index is not None:
            star = "★" if self.session.selected_key in self.session.favourites else ""
            table.update_cell_at((index, 1), star)
        self.show_details()

    def action_view(self, view: str) -> None:
        self.session.set_view(view)
        self.show_results()

    # -- the MIDI input and the device ----------------------------------------------------------------------------
    def _tick(self) -> None:
        events = self.session.drain_midi()
        if events:
            if any(e != "note" for e in events) or "rerank" in events:
                self.show_results()
            else:
                self.show_details()
        if self.audio is not None and not self.audio.healthy():
            self.failure = ("the audio stream stopped: the device vanished or the audio server stopped "
                            "(all notes off)")
            self.exit(return_code=1)


def run_browser(library, searcher, output_device=None, midi_port: str | None = None, midi_api: str = "auto",
                blocksize: int = 256, sample_rate: float | None = None, query: str | None = None,
                midi_map=None, audio: bool = True, headless: bool = False) -> int:
    """``timbreclip browse``: open the devices (each problem one line, before the screen starts), run the UI, and
    leave with every note off. Returns 0; when the audio device is lost it says so and ends the process with exit
    code 1 (PortAudio's own exit handlers would hang on a server that has gone)."""
    import os
    import signal
    import sys

    from .audition import AuditionEngine
    from .devices import audio_devices, open_midi_input, refresh_audio, resolve_audio_device

    engine = stream = midi_in = None
    midi_name = audio_name = ""
    if audio:
        refresh_audio()
        device = resolve_audio_device(output_device, "output")
        info = next(d for d in audio_devices() if device is None or d["index"] == device) if device is not None \
            else __import__("sounddevice").query_devices(kind="output")
        rate = float(sample_rate or info["default_samplerate"])
        engine = AuditionEngine(rate, blocksize)
        audio_name = f"{info['name']} {rate:g} Hz / {blocksize}"
    if midi_port:
        midi_in = open_midi_input(midi_port, midi_api, client_name="timbreclip-browse")
        midi_in.ignore_types(sysex=True, timing=True, active_sense=True)
        midi_name = str(midi_port)
    session = BrowserSession(library, searcher, engine, midi_map)
    try:
        if engine is not None:
            stream = BrowserAudio(engine, device, midi_in)
            stream.start()
        app = BrowserApp(session, stream, query=query, midi_name=midi_name, audio_name=audio_name,
                         echo=sys.stdout if headless else None)
        stop_signals = (signal.SIGTERM, signal.SIGHUP) + ((signal.SIGINT,) if headless else ())
        previous = {s: signal.signal(s, lambda *_: app.exit()) for s in stop_signals}
        try:
            if headless:
                print(f"browsing {library.path} without a screen: {len(searcher.index.patches)} patches; "
                      f"MIDI {midi_name or 'off'}, audio {audio_name or 'off'}", flush=True)
            app.run(headless=headless)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if app.failure:
            print(f"timbreclip browse: {app.failure}", file=sys.stderr)
            if stream is not None:
                stream.stop(failed=True)  # all notes off
            session.close()
            # PortAudio and rtmidi still hold a server that is gone; their exit handlers would hang: leave now
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        return 0
    finally:
        if stream is not None:
            stream.stop()
        if midi_in is not None:
            midi_in.close_port()
            midi_in.delete()
        session.close()
