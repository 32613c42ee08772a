"""The patch browser's two speeds: note-on to sound, and keystroke to re-ranked results.

1. Note latency through real JACK I/O (a private dummy-backend server per block size): a JACK client sends
   note-ons at known frames (offsets spread over the period) to the browser's MIDI port and records its output; the
   latency of each note is the first output frame above -80 dBFS minus the frame the note-on was sent at. Both the
   browser's sample voices (sound from the first frame) and its fluidsynth voices (TimGM6mb's piano) are measured,
   beside the peer: the fluidsynth program itself (`fluidsynth -a jack -m jack`, its own JACK audio and MIDI
   drivers) playing the same preset, driven and recorded the same way.
2. Re-rank latency at 10,000 patches x 16 notes (a synthetic library with the shipped model's dimension, opened
   as `browse` opens it): the time from a keystroke in the search box (headless Textual UI) to its results on
   screen, the text embedding included; and from a note played to the re-ranked list at its pitch.

    python benchmarks/bench_browser.py [--blocks 128 256] [--notes 40] [--patches 10000] [--json]

Goals (issue 14): note latency under 2 blocks + 5 ms (plus the synth's own latency); re-rank under 50 ms p95.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
RATE = 48000
THRESHOLD = 1e-4  # -80 dBFS


def _lags(record: np.ndarray, sent: list[int], window: int) -> list[int]:
    out = []
    for at in sent:
        if np.abs(record[max(0, at - 480):at]).max(initial=0.0) > THRESHOLD:
            continue  # not silent before the note (the previous one still sounding): no clean onset
        hits = np.nonzero(np.abs(record[at:at + window]) > THRESHOLD)[0]
        if len(hits):
            out.append(int(hits[0]))
    return out


def _schedule(n: int, period: int, spacing_s: float = 0.5) -> tuple[list[tuple[int, bytes]], list[int], int]:
    """Note-on, note-off 100 ms later, all sound off (CC 120) at 300 ms: each note starts from silence."""
    rng = np.random.default_rng(0)
    events, sent = [], []
    for k in range(n):
        at = int((0.3 + k * spacing_s) * RATE) + int(rng.integers(0, period))
        events += [(at, bytes([0x90, 60, 110])), (at + int(0.1 * RATE), bytes([0x80, 60, 0])),
                   (at + int(0.3 * RATE), bytes([0xB0, 120, 0]))]
        sent.append(at)
    return events, sent, int((0.6 + n * spacing_s) * RATE)


def _browser_latency(server, period: int, n: int, kind: str) -> list[int]:
    from timbreclip.realtime.audition import AuditionEngine, load_player
    from timbreclip.realtime.browser import BrowserAudio
    from timbreclip.realtime.devices import open_midi_input
    from timbreclip.realtime.jackrig import PortRig, disconnect_all

    rig = PortRig(server, name="keys", midi=True)
    midi_in = open_midi_input(rig.midi_port_name, "jack", client_name="timbreclip-browse")
    engine = AuditionEngine(RATE, period)
    synths: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "sample":
            from timbreclip.dsp.audio_io import write_audio

            t = np.arange(RATE) / RATE
            write_audio(Path(tmp) / "tone.wav", (0.5 * np.sin(2 * np.pi * 261.63 * t)).astype(np.float32), RATE)
            player = load_player({"kind": "samples", "source_path": tmp, "file": "tone.wav", "key": "t",
                                  "title": "tone", "root": 60.0}, RATE, period, synths)
        else:
            player = load_player({"kind": "soundfont", "source_path": FONT, "bank": 0, "program": 0, "key": "p",
                                  "title": "piano"}, RATE, period, synths)
        engine.select(player)
        audio = BrowserAudio(engine, None, midi_in)
        audio.start()
        try:
            disconnect_all("PortAudio", server.name)
            ports = rig.client.get_ports("PortAudio:", is_output=True, is_audio=True)
            left = sorted(ports, key=lambda p: int(p.name.rsplit("_", 1)[1]))[0].name
            events, sent, frames = _schedule(n, period)
            record = rig.run(np.zeros((0, frames), np.float32), [], [left], tail_frames=0, freewheel=False,
                             timeout_s=frames / RATE + 30, midi_events=events)[0]
        finally:
            audio.stop()
            midi_in.close_port()
            midi_in.delete()
            rig.close()
            for s in synths.values():
                s.delete()
    return _lags(record, sent, int(0.1 * RATE))


def _fluidsynth_latency(server, period: int, n: int) -> list[int] | None:
    """The peer: the fluidsynth program with its own JACK drivers, preset 0:0 of the same font."""
    import jack

    from timbreclip.realtime.jackrig import PortRig

    if shutil.which("fluidsynth") is None:
        return None
    env = dict(os.environ, JACK_DEFAULT_SERVER=server.name)
    proc = subprocess.Popen(["fluidsynth", "-a", "jack", "-m", "jack", "-i", "-s", "-r", str(RATE), "-R", "0",
                             "-C", "0", "-g", "1.0", "-o", "audio.jack.id=fs-peer", "-o", "midi.jack.id=fs-peer-midi",
                             "-o", f"audio.period-size={period}", FONT],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    rig = PortRig(server, name="keys", midi=True)
    try:
        probe = jack.Client("bench-probe", no_start_server=True, servername=server.name)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            audio = [p.name for p in probe.get_ports("fs-peer", is_output=True, is_audio=True)]
            midi = [p.name for p in probe.get_ports("fs-peer", is_input=True, is_midi=True)]
            if audio and midi:
                break
            time.sleep(0.2)
        else:
            return None
        for port in audio:
            for other in probe.get_all_connections(port):
                probe.disconnect(port, other)
        probe.connect(rig.midi_port_name, midi[0])
        time.sleep(0.5)
        events, sent, frames = _schedule(n, period)
        record = rig.run(np.zeros((0, frames), np.float32), [], [sorted(audio)[0]], tail_frames=0, freewheel=False,
                         timeout_s=frames / RATE + 30, midi_events=events)[0]
        probe.close()
    finally:
        rig.close()
        proc.terminate()
        proc.wait(timeout=10)
    return _lags(record, sent, int(0.1 * RATE))


def latency_run(blocks: list[int], n: int) -> dict:
    import sounddevice as sd

    from timbreclip.realtime.devices import refresh_audio
    from timbreclip.realtime.jackrig import JackServer

    out = {}
    for period in blocks:
        with JackServer(rate=RATE, period=period) as server:
            refresh_audio()
            rows = {"browser, sample voice": _browser_latency(server, period, n, "sample")}
            if Path(FONT).is_file():
                rows["browser, fluidsynth voice"] = _browser_latency(server, period, n, "soundfont")
                peer = _fluidsynth_latency(server, period, n)
                if peer:
                    rows["peer: fluidsynth program (own JACK drivers)"] = peer
            sd._terminate()
            xruns = server.xruns()
        sd._initialize()
        out[period] = {"xruns": xruns, "goal_ms": 1e3 * (2 * period / RATE) + 5.0, "rows": {
            name: {"notes": len(lags), "p50_ms": 1e3 * float(np.percentile(lags, 50)) / RATE,
                   "p95_ms": 1e3 * float(np.percentile(lags, 95)) / RATE, "max_ms": 1e3 * max(lags) / RATE}
            for name, lags in rows.items() if lags}}
    return out


def rerank_run(n_patches: int, notes: int) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_search import WORDS, clustered_patches

    from timbreclip.defaults import default_model_path, load_torch_model
    from timbreclip.library.db import Library, PatchRecord
    from timbreclip.library.search import PatchSearch
    from timbreclip.realtime.browse_ui import BrowserApp
    from timbreclip.realtime.browser import BrowserSession

    model = load_torch_model(default_model_path())
    rng = np.random.default_rng(2)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "lib.sqlite"
        with Library(db) as lib:
            lib.replace_source("/bench/lib", "samples", "bench", "h",
                               clustered_patches(rng, n_patches, notes, model.dim, PatchRecord), model.fingerprint())
        library = Library(db, create=False)
        session = BrowserSession(library, PatchSearch(library, model, model.fingerprint()))
        app = BrowserApp(session)
        typed = " ".join(f"{WORDS[i % len(WORDS)]}" for i in range(12))  # ~70 keystrokes, every prefix new

        async def run():
            async with app.run_test(size=(140, 40)) as pilot:
                await pilot.press("slash")
                for ch in typed:
                    await pilot.press("space" if ch == " " else ch)
                    await app.workers.wait_for_complete()
                    await pilot.pause()
                await pilot.press("escape")
                for key in (36, 48, 60, 72, 84, 40, 52, 64, 76, 88) * 3:
                    await pilot.press(key_for(key))
                    await pilot.pause()

        def key_for(note: int) -> str:
            from timbreclip.realtime.browse_ui import LOWER_ROW, PIANO_BASE

            app.octave_shift = (note - PIANO_BASE) // 12
            return LOWER_ROW[(note - PIANO_BASE) % 12]

        asyncio.run(run())
        keystroke = [1e3 * (app.shown_at[s] - app.typed_at[s]) for s in app.shown_at if s in app.typed_at]
        note = list(app.note_rerank_ms)
        library.close()
    return {"patches": n_patches, "notes_per_patch": notes, "keystroke_to_results_ms": {
        "n": len(keystroke), "p50": float(np.percentile(keystroke, 50)), "p95": float(np.percentile(keystroke, 95))},
        "note_to_rerank_ms": {"n": len(note), "p50": float(np.percentile(note, 50)),
                              "p95": float(np.percentile(note, 95))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--notes", type=int, default=40, help="note-ons per measurement")
    parser.add_argument("--patches", type=int, default=10000)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-rerank", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = {}
    if not args.skip_latency:
        report["latency"] = latency_run(args.blocks, args.notes)
    if not args.skip_rerank:
        report["rerank"] = rerank_run(args.patches, 16)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for period, r in report.get("latency", {}).items():
        print(f"\nnote-on -> first output sample, {period} frames at {RATE} Hz (goal {r['goal_ms']:.1f} ms; "
              f"{r['xruns']} server xruns)")
        print("| player | notes | p50 | p95 | max |\n|---|---|---|---|---|")
        for name, row in r["rows"].items():
            print(f"| {name} | {row['notes']} | {row['p50_ms']:.2f} ms | {row['p95_ms']:.2f} ms | "
                  f"{row['max_ms']:.2f} ms |")
        peer = r["rows"].get("peer: fluidsynth program (own JACK drivers)")
        ours = r["rows"].get("browser, fluidsynth voice")
        if peer and ours and peer["p95_ms"] > 0:
            print(f"browser fluidsynth voice p95 / fluidsynth program p95 = {ours['p95_ms'] / peer['p95_ms']:.2f}")
    if "rerank" in report:
        r = report["rerank"]
        k, n = r["keystroke_to_results_ms"], r["note_to_rerank_ms"]
        print(f"\nre-rank at {r['patches']:,} patches x {r['notes_per_patch']} notes (goal p95 < 50 ms)")
        print("| step | n | p50 | p95 |\n|---|---|---|---|")
        print(f"| keystroke -> results on screen (text embedding included) | {k['n']} | {k['p50']:.1f} ms | "
              f"{k['p95']:.1f} ms |")
        print(f"| note played -> re-ranked at its pitch, on screen | {n['n']} | {n['p50']:.1f} ms | "
              f"{n['p95']:.1f} ms |")


if __name__ == "__main__":
    main()
