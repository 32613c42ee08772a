"""The MIDI-triggered patch browser: the instrument (soundfont and sample playback, pedal, patch changes under held
keys), the headless UI (query order, favourites across a restart), and real MIDI in / audio out through a private
JACK server: pitch, note-off, CC and program-change browsing, a message flood, latency, and bad input."""

import asyncio
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from timbreclip.cli import main
from timbreclip.dsp.audio_io import write_audio
from timbreclip.library.db import Library
from timbreclip.library.search import PatchSearch
from timbreclip.neural.encoder import AudioEncoderConfig
from timbreclip.neural.model import ModelConfig, TimbreCLIP
from timbreclip.neural.text import MiniLMEncoder
from timbreclip.realtime.audition import AuditionEngine, Player, load_player
from timbreclip.realtime.browser import BrowseMap, BrowserAudio, BrowserSession
from timbreclip.realtime.jackrig import PortRig, disconnect_all

FONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
has_font = pytest.mark.skipif(not Path(FONT).is_file(), reason=f"{FONT} is not installed (make installs it)")
RATE, BLOCK = 48000, 256


def f0_of(x: np.ndarray, rate: float) -> float:
    """The strongest spectral peak (zero-padded FFT, parabolic interpolation)."""
    x = x - x.mean()
    n = 8 * len(x)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    k = int(np.argmax(spec[1:])) + 1
    a, b, c = np.log(spec[k - 1:k + 2] + 1e-12)
    k = k + 0.5 * (a - c) / (a - 2 * b + c)
    return k * rate / n


def cents(f, ref):
    return 1200 * np.log2(f / ref)


def _tone(path, f0, seconds=2.0, rate=44100):
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * 0.3 * np.exp(-0.5 * t)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_audio(path, x.astype(np.float32), rate)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small known library: three sample patches (a C4 tone, an A3 tone, a bell) and TimGM6mb at two pitches."""
    tmp = tmp_path_factory.mktemp("browser")
    torch.manual_seed(0)
    model_dir = tmp / "model"
    TimbreCLIP(ModelConfig(audio=AudioEncoderConfig(width=8)), text_encoder=MiniLMEncoder()).save(model_dir)
    samples = tmp / "samples"
    _tone(samples / "Keys" / "organ tone C4.wav", 261.63)
    _tone(samples / "Keys" / "reed tone A3.wav", 220.0)
    _tone(samples / "Bells" / "bell C5.wav", 523.25)
    db = tmp / "lib.sqlite"
    sources = [str(samples)] + ([FONT] if Path(FONT).is_file() else [])
    assert main(["library", "add", *sources, "--db", str(db), "--model", str(model_dir), "--pitches", "60,72"]) == 0
    return {"db": db, "model": model_dir, "samples": samples, "tmp": tmp}


@pytest.fixture(scope="module")
def model(built):
    return TimbreCLIP.load(built["model"])


def _session(built, model, engine=None, midi_map=None):
    library = Library(built["db"], create=False)
    # every patch of the small library is listed (the random test model ranks them in no meaningful order)
    return BrowserSession(library, PatchSearch(library, model, model.fingerprint()), engine, midi_map, shown=500)


def _render(engine, blocks, frames=BLOCK, events=None):
    """Run the audio callback ``blocks`` times; ``events[b]()`` runs before block b. Returns the left channel."""
    out = np.zeros((frames, 2), np.float32)
    rec = []
    for b in range(blocks):
        if events and b in events:
            events[b]()
        engine.audio_block(out)
        rec.append(out[:, 0].copy())
    return np.concatenate(rec)


# -- the instrument ----------------------------------------------------------------------------------------------
def test_sample_patch_plays_at_the_key_and_releases(tmp_path):
    rate = 44100
    t = np.arange(rate * 2) / rate
    sample = (0.5 * np.sin(2 * np.pi * 261.63 * t)).astype(np.float32)  # recorded at C4
    engine = AuditionEngine(RATE, BLOCK)
    write_audio(tmp_path / "s.wav", sample, rate)
    player = load_player({"kind": "samples", "source_path": str(tmp_path), "file": "s.wav", "key": "s",
                          "title": "s", "root": 60.0}, RATE, BLOCK, {})
    engine.select(player)
    x = _render(engine, 140, events={0: lambda: engine.note_on(72, 127), 80: lambda: engine.note_off(72)})
    held = x[4800:4800 + 24000]
    assert abs(cents(f0_of(held, RATE), 523.25)) < 5  # an octave up from its recording
    assert np.abs(x[-BLOCK * 20:]).max() == 0.0  # released: 150 ms later it is silent
    assert engine.sounding_voices() == 0


def test_velocity_and_sustain_pedal_on_samples(tmp_path):
    rate = 48000
    sample = (0.5 * np.sin(2 * np.pi * 440 * np.arange(rate * 3) / rate)).astype(np.float32)
    write_audio(tmp_path / "a.wav", sample, rate)
    patch = {"kind": "samples", "source_path": str(tmp_path), "file": "a.wav", "key": "a", "title": "a",
             "root": 69.0}
    loud, soft = AuditionEngine(RATE, BLOCK), AuditionEngine(RATE, BLOCK)
    loud.select(load_player(patch, RATE, BLOCK, {}))
    soft.select(load_player(patch, RATE, BLOCK, {}))
    a = _render(loud, 20, events={0: lambda: loud.note_on(69, 127)})
    b = _render(soft, 20, events={0: lambda: soft.note_on(69, 40)})
    assert np.abs(a).max() > 3 * np.abs(b).max() > 0  # velocity-sensitive

    engine = AuditionEngine(RATE, BLOCK)
    engine.select(load_player(patch, RATE, BLOCK, {}))
    pedal = {0: lambda: engine.inbox.push(3, 64, 127), 1: lambda: engine.note_on(69, 100),
             10: lambda: engine.note_off(69), 100: lambda: engine.inbox.push(3, 64, 0)}
    x = _render(engine, 140, events=pedal)
    assert np.abs(x[60 * BLOCK:100 * BLOCK]).max() > 0.1  # held by the pedal after the key went up
    assert np.abs(x[-BLOCK * 10:]).max() == 0.0  # pedal up: released


@has_font
def test_changing_patch_under_held_keys_leaves_no_stuck_note():
    engine = AuditionEngine(RATE, BLOCK)
    synths = {}
    piano = load_player({"kind": "soundfont", "source_path": FONT, "bank": 0, "program": 19, "key": "organ",
                         "title": "organ"}, RATE, BLOCK, synths)
    flute = load_player({"kind": "soundfont", "source_path": FONT, "bank": 0, "program": 73, "key": "flute",
                         "title": "flute"}, RATE, BLOCK, synths)
    engine.select(piano)
    events = {0: lambda: (engine.note_on(60, 100), engine.note_on(64, 100)),
              20: lambda: engine.select(flute),  # keys still down: the organ (which never decays) must stop
              21: lambda: engine.note_on(67, 100),
              60: lambda: (engine.note_off(60), engine.note_off(64), engine.note_off(67))}
    x = _render(engine, 60 + int(4 * RATE / BLOCK) + 20, events=events)
    assert np.abs(x[: 20 * BLOCK]).max() > 1e-3
    assert engine.sounding_voices() == 0
    assert np.abs(x[-BLOCK * 10:]).max() < 1e-5
    for synth in synths.values():
        synth.delete()


def test_browse_map_actions_and_bad_maps(tmp_path):
    default = BrowseMap()
    assert default.action(3, 103, 127, 0) == "next"
    assert default.action(3, 103, 0, 0) is None  # a button's release
    assert default.action(3, 7, 127, 0) is None
    notes = tmp_path / "notes.json"
    notes.write_text('{"buttons": "notes", "button_channel": 16, "next": 60, "favourite": 62}')
    m = BrowseMap.load(str(notes))
    assert m.action(1, 60, 100, 15) == "next" and m.action(1, 62, 100, 15) == "favourite"
    assert m.action(1, 60, 100, 0) is None and m.button_note_channel() == 15
    for text, fragment in (('{"nxt": 3}', "unknown keys"), ('{"next": 300}', "next must be"),
                           ('{"buttons": "notes"}', "needs a button_channel"), ("[1]", "JSON object")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(Exception, match=fragment):
            BrowseMap.load(str(bad))


# -- the headless UI ---------------------------------------------------------------------------------------------
def test_ui_query_order_selection_favourite_survives_restart(built, model, tmp_path):
    from timbreclip.realtime.browse_ui import BrowserApp

    async def first_run():
        session = _session(built, model)
        app = BrowserApp(session)
        async with app.run_test(size=(140, 40)) as pilot:
            await pilot.press("slash", *"bell", "enter")
            await app.workers.wait_for_complete()
            await pilot.pause()
            expected = session.searcher.search(__import__("timbreclip.library.search", fromlist=["Query"])
                                               .Query(text="bell"), top=len(session.results))
            assert [r["key"] for r in session.results] == [r["key"] for r in expected]
            table = app.query_one("#results")
            shown = [table.get_row_at(i)[2] for i in range(table.row_count)]
            assert shown == [r["title"] for r in expected]
            assert session.selected_key == expected[0]["key"]  # a new query selects its best result
            await pilot.press("down", "down")
            await pilot.pause()
            assert session.selected_key == expected[2]["key"]
            await pilot.press("f")
            await pilot.pause()
            assert table.get_row_at(2)[1] == "★"
            app.save_screenshot("browse.svg", str(tmp_path))
            await pilot.press("ctrl+q")
        session.library.close()
        return expected[2]["key"]

    key = asyncio.run(first_run())
    assert (tmp_path / "browse.svg").stat().st_size > 1000

    async def second_run():
        session = _session(built, model)
        app = BrowserApp(session, query="bell")
        async with app.run_test(size=(140, 40)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert key in session.favourites
            await pilot.press("f3")  # the favourites view
            await pilot.pause()
            assert [r["key"] for r in session.results] == [key]
            await pilot.press("f")  # unfavourite
            await pilot.pause()
            assert key not in Library(built["db"]).favourites()
        session.library.close()

    asyncio.run(second_run())


def test_pitch_following_reranks_without_stealing_the_selection(built, model):
    session = _session(built, model)
    session.set_query("warm organ")
    session.select(3)
    chosen = session.selected_key
    orders = set()
    for key in (36, 60, 84, 108):
        session.note_played(key)
        assert session.pitch == key
        assert session.selected_key == chosen  # still selected, wherever it ranks now
        assert any(r["key"] == chosen for r in session.results)
        expected = session.searcher.rank(session.z, top=session.shown, pitch=key)
        assert [r["key"] for r in session.results[:len(expected)]] == [r["key"] for r in expected]
        orders.add(tuple(r["key"] for r in session.results[:10]))
        session.note_played(key, on=False)
    assert len(orders) > 1  # the ranking does follow the player
    session.library.close()


# -- real MIDI in, real audio out (JACK dummy server) -------------------------------------------------------------
class _Rig:
    """The browser (engine + session + audio stream polling the rig's MIDI port) and a recording JACK client."""

    def __init__(self, built, model, server, query="organ tone"):
        self.rig = PortRig(server, name="keys", midi=True)
        from timbreclip.realtime.devices import open_midi_input

        self.midi_in = open_midi_input(self.rig.midi_port_name, "jack", client_name="timbreclip-browse")
        self.engine = AuditionEngine(RATE, BLOCK)
        self.session = _session(built, model, self.engine)
        self.audio = BrowserAudio(self.engine, None, self.midi_in)
        self.audio.start()
        disconnect_all("PortAudio", server.name)
        # PortAudio numbers its JACK ports with a running counter (out_0, out_1, then out_2 for the next stream)
        ports = self.rig.client.get_ports("PortAudio:", is_output=True, is_audio=True)
        self.left = sorted(ports, key=lambda p: int(p.name.rsplit("_", 1)[1]))[0].name
        self.session.set_query(query)

    def record(self, seconds, events):
        """Record the browser's left output for ``seconds`` while sending ``events [(seconds, bytes)]``."""
        frames = int(seconds * RATE)
        midi = [(int(t * RATE), bytes(m)) for t, m in events]
        return self.rig.run(np.zeros((0, frames), np.float32), [], [self.left], tail_frames=0,
                            freewheel=False, timeout_s=seconds + 20, midi_events=midi)[0]

    def close(self):
        self.audio.stop()
        self.midi_in.close_port()
        self.midi_in.delete()
        self.rig.close()
        self.session.close()
        self.session.library.close()


def _onset(x, threshold=1e-3):
    hits = np.nonzero(np.abs(x) > threshold)[0]
    return int(hits[0]) if len(hits) else None


def _select_title(session, fragment):
    for i, r in enumerate(session.results):
        if fragment in r["title"]:
            session.select(i)
            return
    raise AssertionError(f"{fragment} not in the results")


@pytest.mark.parametrize("patch", ["organ tone", "Flute"])
def test_midi_notes_play_the_selected_patch_at_pitch(built, model, server, patch):
    if patch == "Flute" and not Path(FONT).is_file():
        pytest.skip(f"{FONT} is not installed")
    rig = _Rig(built, model, server, query=patch.lower())
    try:
        _select_title(rig.session, patch)
        for key, hz in ((69, 440.0), (57, 220.0)):
            x = rig.record(2.5, [(0.2, [0x90, key, 100]), (1.4, [0x80, key, 0])])
            start = _onset(x)
            assert start is not None, f"{patch}: no sound for note {key}"
            held = x[start + 4800:start + 4800 + 24000]
            assert abs(cents(f0_of(held, RATE), hz)) < 20, (patch, key, f0_of(held, RATE))
            after = x[int(2.2 * RATE):]  # note-off at 1.4 s; a release tail is allowed, then silence
            assert np.abs(after).max() < 0.05 * np.abs(held).max()
            assert not rig.engine._sounding.any()
    finally:
        rig.close()


def test_cc_steps_the_selection_and_program_change_selects(built, model, server):
    rig = _Rig(built, model, server, query="tone")
    try:
        start = rig.session.selected_index
        rig.record(0.3, [(0.05, [0xB0, 103, 127]), (0.06, [0xB0, 103, 0])])  # "next" pressed and released
        time.sleep(0.1)
        rig.session.drain_midi()
        assert rig.session.selected_index == start + 1
        rig.record(0.3, [(0.05, [0xC0, 4])])
        time.sleep(0.1)
        rig.session.drain_midi()
        assert rig.session.selected_index == 4
        rig.record(0.3, [(0.05, [0xB0, 104, 127])])  # favourite
        time.sleep(0.1)
        rig.session.drain_midi()
        assert rig.session.results[4]["key"] in rig.session.library.favourites()
    finally:
        rig.close()


def test_a_flood_of_midi_leaves_no_stuck_note_and_the_ui_answers(built, model, server):
    from timbreclip.realtime.browse_ui import BrowserApp

    rig = _Rig(built, model, server, query="tone")
    rng = np.random.default_rng(3)
    events, down = [], set()
    for i in range(10000):  # 2,000 messages a second for 5 s: notes, pedal, CCs, program changes, bends
        t = 0.2 + i / 2000.0
        kind = rng.integers(0, 10)
        if kind < 5:
            key = int(rng.integers(36, 96))
            if key in down:
                events.append((t, [0x80, key, 0]))
                down.discard(key)
            else:
                events.append((t, [0x90, key, int(rng.integers(1, 128))]))
                down.add(key)
        elif kind < 7:
            events.append((t, [0xB0, 64, int(rng.choice([0, 127]))]))
        elif kind < 8:
            events.append((t, [0xE0, 0, int(rng.integers(0, 128))]))
        elif kind < 9:
            events.append((t, [0xB0, int(rng.choice([1, 7, 11, 103])), int(rng.integers(0, 128))]))
        else:
            events.append((t, [0xC0, int(rng.integers(0, 8))]))
    end = 0.2 + 10000 / 2000.0
    events += [(end, [0x80, k, 0]) for k in sorted(down)] + [(end, [0xB0, 64, 0])]
    app = BrowserApp(rig.session, rig.audio, query="tone")

    async def run():
        async with app.run_test(size=(120, 30)) as pilot:
            await app.workers.wait_for_complete()
            recorded = await asyncio.to_thread(rig.record, end + 5.0, events)
            await pilot.pause(0.3)
            before = rig.session.selected_index
            await pilot.press("down")
            await pilot.pause()
            assert rig.session.selected_index == min(before + 1, len(rig.session.results) - 1)
            return recorded

    x = asyncio.run(run())
    try:
        assert rig.engine.midi_received >= 10000 - 50
        assert not rig.engine._sounding.any() and not rig.engine._pedal
        assert np.abs(x[-int(0.5 * RATE):]).max() < 1e-4  # every note ended
        assert rig.engine.sounding_voices() == 0
    finally:
        rig.close()


def test_note_on_latency_is_within_two_blocks_plus_the_synth(built, model, server):
    rig = _Rig(built, model, server, query="organ tone")
    try:
        _select_title(rig.session, "organ tone")  # a sample patch: sound from its first frame (2 ms attack)
        lags = []
        for k in range(6):
            t = 0.2 + 0.01 * k  # not aligned to the period
            x = rig.record(0.8, [(t, [0x90, 60, 127]), (0.5, [0x80, 60, 0])])
            start = _onset(x, 1e-4)
            assert start is not None
            lags.append(start - int(t * RATE))
        # the event waits for the next block of the browser's stream, and the stream's buffer is one period
        assert max(lags) <= 2 * BLOCK + int(0.005 * RATE), lags
    finally:
        rig.close()


# -- bad input ----------------------------------------------------------------------------------------------------
def test_bad_devices_and_libraries_are_one_line_and_exit_2(built, server, tmp_path, capsys):
    db = str(built["db"])
    for args, fragment in ((["--midi-port", "nothing-here", "--midi-api", "jack"], "--midi-port nothing-here: no "
                            "such MIDI input port; ports"),
                           (["--output-device", "no-such-card"], "--output-device no-such-card: no such device; "
                            "devices: 0: system")):
        assert main(["browse", "--db", db, *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert any(fragment in line for line in err), err
    assert main(["browse", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert "timbreclip library add" in capsys.readouterr().err
    empty = tmp_path / "empty.sqlite"
    Library(empty).close()
    assert main(["browse", "--db", str(empty)]) == 2
    assert "the library is empty" in capsys.readouterr().err


@has_font
def test_a_vanished_soundfont_is_a_message_and_the_browser_goes_on(built, model, tmp_path):
    from timbreclip.realtime.browse_ui import BrowserApp

    font = tmp_path / "gone.sf2"
    shutil.copy(FONT, font)
    db = tmp_path / "gone.sqlite"
    assert main(["library", "add", str(font), str(built["samples"]), "--db", str(db), "--model", str(built["model"]),
                 "--pitches", "60"]) == 0
    font.unlink()
    library = Library(db, create=False)
    engine = AuditionEngine(RATE, BLOCK)
    session = BrowserSession(library, PatchSearch(library, model, model.fingerprint()), engine)
    app = BrowserApp(session, query="flute")

    async def run():
        async with app.run_test(size=(120, 30)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            i = next(i for i, r in enumerate(session.results) if r["source"] == "gone")
            session.select(i)
            assert "the soundfont is gone" in session.messages[-1]
            assert engine._pending is None  # nothing plays; no exception
            j = next(i for i, r in enumerate(session.results) if r["source"] == "samples")
            await pilot.press(*(["down"] * (j - i) if j > i else ["up"] * (i - j)))
            await pilot.pause()
            assert session.selected_index == j and isinstance(engine._pending, Player)

    asyncio.run(run())
    library.close()


def test_threads_do_not_share_the_engine_lock_free_rings_keep_order():
    engine = AuditionEngine(RATE, BLOCK)
    sent = 3000

    def produce():
        for k in range(sent):
            while not engine.inbox.push(1, k % 128, 1 + k % 127):
                time.sleep(0.0001)

    got = []
    row = np.zeros(4, np.int64)
    t = threading.Thread(target=produce)
    t.start()
    deadline = time.monotonic() + 30
    while len(got) < sent and time.monotonic() < deadline:
        while engine.inbox.pop_into(row):
            got.append((int(row[1]), int(row[2])))
    t.join()
    assert got == [(k % 128, 1 + k % 127) for k in range(sent)]
