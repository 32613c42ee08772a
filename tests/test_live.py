"""The live loop with real audio and MIDI I/O: a private JACK server on the dummy backend per test module, clients
that feed and record its ports, and the `timbreclip live` command itself. Nothing is mocked."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from timbreclip.cli import main
from timbreclip.dsp.audio_io import read_audio, write_audio
from timbreclip.dsp.descriptors import spectral_centroid_hz
from timbreclip.dsp.engine import BiquadCascade
from timbreclip.dsp.settings import Band, EQSettings
from timbreclip.realtime.jackrig import PortRig, disconnect_all, jack_available
from timbreclip.realtime.loop import LiveConfig, LiveEQ, flat_sos
from timbreclip.realtime.ring import AudioRing

RATE = 48000
STEAL_LIMIT_MS = 10.0  # hypervisor steal (one 10 ms tick or more) during a run: its timing says nothing of the code
OK, WHY = jack_available()
needs_jack = pytest.mark.skipif(not OK, reason=WHY)


def _tone(path, seconds=4.0, f0=220.0, channels=2):
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 40)) * 0.15
    write_audio(path, np.stack([x] * channels).astype(np.float32), RATE)
    return path


def _live(*args, stdin=subprocess.DEVNULL, **kw):
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-m", "timbreclip", "live", *args], stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


# -- the ring buffer ------------------------------------------------------------------------------------------------
def test_ring_keeps_the_newest_window_as_mono():
    ring = AudioRing(1000)
    ring.prepare(2)
    block = np.stack([np.arange(300, dtype=np.float32), -np.arange(300, dtype=np.float32) + 2]).T.copy().T
    for i in range(5):  # 1,500 frames into a 1,000-frame ring
        ring.write(block + i, now=float(i))
    latest, end, stamp = ring.latest(300)
    assert end == 1500 and stamp == 4.0
    np.testing.assert_array_equal(latest, np.full(300, 1.0 + 4))  # channel mean of (n + 4, -n + 2 + 4)


def test_ring_in_shared_memory_is_seen_by_a_second_view():
    ring = AudioRing.create_shared(4800)
    try:
        other = AudioRing.attach(ring.shared_name, 4800)
        ring.write(np.ones((1, 256), np.float32), now=1.5)
        latest, end, stamp = other.latest(256)
        assert end == 256 and stamp == 1.5 and latest.min() == 1.0
        other.close()
    finally:
        ring.close(unlink=True)


# -- the offline clock --------------------------------------------------------------------------------------------
def test_input_file_run_is_deterministic_and_steers_the_way_the_words_say(tmp_path):
    note = _tone(str(tmp_path / "note.wav"))
    outs = {}
    for name, prompt in (("bright", "bright"), ("bright2", "bright"), ("warm", "warm")):
        out = tmp_path / f"{name}.wav"
        code = main(["live", "--input-file", note, "--output-file", str(out), "--prompt", prompt,
                     "--update-every", "0.5", "--stats", str(tmp_path / f"{name}.json")])
        assert code == 0
        outs[name] = read_audio(str(out))[0]
    np.testing.assert_array_equal(outs["bright"], outs["bright2"])
    x = read_audio(note)[0][0]
    tail = slice(2 * RATE, None)  # after a few updates
    before = spectral_centroid_hz(x[tail], RATE)
    assert spectral_centroid_hz(outs["bright"][0][tail], RATE) > before * 1.05
    assert spectral_centroid_hz(outs["warm"][0][tail], RATE) < before / 1.05
    stats = json.loads((tmp_path / "bright.json").read_text())
    assert stats["updates"] >= 5 and stats["xruns"] == 0
    assert stats["update_latency_s"]["p50"] == pytest.approx(0.25, abs=256 / RATE + 1e-9)


def test_fast_predict_updates_ten_times_a_second_the_way_the_words_say(tmp_path):
    """--fast-predict: each update is one pass of the shipped model's steering predictor, so updates can come every
    0.1 s; the EQ still moves the sound the way the word says."""
    note = _tone(str(tmp_path / "note.wav"))
    out, stats_file = tmp_path / "fast.wav", tmp_path / "fast.json"
    assert main(["live", "--input-file", note, "--output-file", str(out), "--prompt", "bright", "--fast-predict",
                 "--update-every", "0.1", "--stats", str(stats_file)]) == 0
    stats = json.loads(stats_file.read_text())
    x = read_audio(note)[0][0]
    tail = slice(2 * RATE, None)
    assert spectral_centroid_hz(read_audio(str(out))[0][0][tail], RATE) > spectral_centroid_hz(x[tail], RATE) * 1.05
    seconds = len(x) / RATE
    assert stats["updates"] >= 0.5 * (seconds - 1) / 0.1 and stats["xruns"] == 0


def test_silence_holds_the_eq(tmp_path):
    from timbreclip.realtime.loop import run_offline

    audio = np.zeros((1, 3 * RATE), np.float32)
    from timbreclip.defaults import default_model_path

    out, live = run_offline(LiveConfig(prompts={"bright": 1.0}, blocksize=256,
                                       model_dir=str(default_model_path())), audio, RATE)
    assert live.stats.updates == 0 and live.stats.held >= 4
    assert "silence" in live.last_update.held
    np.testing.assert_array_equal(live.cascade.sos, flat_sos(8))


def test_callback_gaps_show_a_late_callback_across_drains():
    """The gap from one callback's start to the next's is kept for every block, across the control thread's drains:
    one callback that starts 3 periods late is the maximum, the rest sit at the period."""
    live = LiveEQ(LiveConfig(prompts={"bright": 1.0}, blocksize=64, channels=1))
    src, dst = np.zeros((1, 64), np.float32), np.zeros((1, 64), np.float32)
    period = 64 / live.rate
    now = 100.0
    for b in range(300):
        now += 4 * period if b == 150 else period
        live.audio_block(src, dst, now)
        if b % 37 == 0:
            live.drain_timing()
    live.drain_timing()
    gaps = live.stats_dict()["callback_gap_us"]
    assert gaps["max"] == pytest.approx(4 * period * 1e6, rel=1e-6)
    assert gaps["p99"] == pytest.approx(period * 1e6, rel=1e-6)
    assert sum(len(g) for g in live.stats.gaps_us) == 299  # every consecutive pair once
    live.close()


# -- real I/O: freewheel loopback ---------------------------------------------------------------------------------
@needs_jack
@pytest.mark.parametrize("callback", ["native", "python"])
def test_freewheel_loopback_equals_the_offline_engine(server, callback):
    """A JACK client feeds noise into the live loop's input ports and records its outputs while coefficient sets
    are handed over mid-stream; the recording equals the offline engine on the same input with the same sets taken
    at the same blocks (latency-aligned, within 1e-6). The loop's own records say what it heard (the ring buffer's
    mono history, exactly the rig's noise) and which set each block played; both callbacks, the compiled one and
    sounddevice's Python one, are held to it."""
    from timbreclip.realtime.stream import open_stream

    rng = np.random.default_rng(7)
    seconds = 3
    x = (0.2 * rng.standard_normal((2, seconds * RATE))).astype(np.float32)
    sets = [EQSettings(RATE, [Band(t, f, g) for t, f, g in zip(
        ("low_shelf", "peak", "peak", "peak", "peak", "peak", "peak", "high_shelf"),
        (120, 250, 500, 1000, 2000, 3500, 5000, 6000), gains)], out_db)
        for gains, out_db in (((6, 0, 0, -3, 0, 0, 0, 4), -2.0), ((-6, 2, 0, 3, 0, -4, 0, -8), 1.0),
                              ((0, 0, 5, 0, 0, 0, 6, 0), -6.0))]
    live = LiveEQ(LiveConfig(prompts={"bright": 1.0}, blocksize=256, channels=2, callback=callback))
    stream = open_stream(live, None, None, callback=callback)
    published = {}
    rig = PortRig(server)
    schedule = {RATE // 2: 0, RATE: 1, RATE + 10: 2, 2 * RATE: 0}  # two sets in one cycle: the newest plays

    original = rig._process

    def process(frames):  # the rig's cycle doubles as the control thread: it hands sets over mid-stream
        for at, k in schedule.items():
            if rig._pos <= at < rig._pos + frames:
                seq = live.cascade.set_sos(sets[k].sos(), sets[k].output_gain_db)
                published[seq] = k
        original(frames)

    rig.client.set_process_callback(process)
    with stream:
        disconnect_all("PortAudio", server.name)
        # PortAudio numbers its ports on across the streams of one session (in_0, in_1, then in_2, ...)
        ins, outs = ([p.name for p in rig.client.get_ports(f"PortAudio:{kind}_")] for kind in ("in", "out"))
        record = rig.run(x, ins, outs, tail_frames=8192, freewheel=True)
    rig.close()
    blocks = live.blocks
    assert blocks > seconds * RATE // 256
    taken = live.block_seq[:blocks]
    # what the loop heard: the rig's noise after a constant input latency (its mono history, bit for bit)
    heard = live.ring.data[:blocks * 256]
    lead_in = int(np.argmax(heard != 0))
    inputs = np.zeros((2, blocks * 256), np.float32)
    n_in = min(x.shape[1], inputs.shape[1] - lead_in)
    inputs[:, lead_in:lead_in + n_in] = x[:, :n_in]
    np.testing.assert_array_equal(heard, ((inputs[0].astype(np.float64) + inputs[1]) * 0.5).astype(np.float32))
    # the offline engine: same input blocks, the same sets taken at the same blocks
    offline = BiquadCascade(flat_sos(8), 2, sample_rate=RATE)
    expected = np.empty_like(inputs)
    last = 0
    for b in range(blocks):
        if taken[b] != last:
            last = int(taken[b])
            k = published[last]
            offline.set_sos(sets[k].sos(), sets[k].output_gain_db)
        offline.process(np.ascontiguousarray(inputs[:, b * 256:(b + 1) * 256]),
                        out=expected[:, b * 256:(b + 1) * 256])
    assert len({int(t) for t in taken} - {0}) == 3  # three sets played (one never did)
    # latency alignment: the first non-silent sample of each
    lead_out = int(np.argmax(np.abs(record[0]) > 0))
    n = min(record.shape[1] - lead_out, expected.shape[1] - lead_in) - 1
    assert n > 2.5 * RATE
    np.testing.assert_allclose(record[:, lead_out:lead_out + n], expected[:, lead_in:lead_in + n], atol=1e-6)
    stats = live.stats_dict()
    assert stats["callback"] == callback and stats["callbacks"] == blocks
    live.close()


# -- real I/O: real time ----------------------------------------------------------------------------------------------
@needs_jack
def test_ten_seconds_in_real_time_with_steering_has_no_xruns(server, tmp_path):
    note = _tone(str(tmp_path / "note.wav"))
    stats = tmp_path / "stats.json"
    settings = tmp_path / "eq.json"
    proc = _live("--play", note, "--prompt", "bright", "--update-every", "0.25", "--duration", "10",
                 "--blocksize", "256", "--stats", str(stats), "--settings-out", str(settings), "--no-input")
    err_lines = []
    for line in proc.stderr:  # the server's own xruns are counted from the stream's start to its stop
        err_lines.append(line)
        if line.startswith("playing"):
            xruns_before = server.xruns()
        if "stopped after" in line:
            xruns_after = server.xruns()
    proc.wait(timeout=60)
    err = "".join(err_lines)
    assert proc.returncode == 0, err
    report = json.loads(stats.read_text())
    server_xruns = xruns_after - xruns_before
    print("callback us", report["callback_us"], "update latency s", report["update_latency_s"], "xrun blocks",
          report["xrun_blocks"],
          "xruns", report["xruns"], "server xruns", server_xruns, "cpu steal ms", report["cpu_steal_ms"])
    if (report["xruns"] or server_xruns) and (report["cpu_steal_ms"] or 0) >= STEAL_LIMIT_MS:
        pytest.skip(f"{report['xruns']} stream / {server_xruns} server xruns while the hypervisor took "
                    f"{report['cpu_steal_ms']:.0f} ms of CPU from this VM during the 10 s run: real-time timing "
                    "cannot be judged on a machine that was not given its CPU")
    assert report["xruns"] == 0, report
    assert xruns_after == xruns_before, server.log()[-2000:]
    assert report["callbacks"] >= 0.95 * 10 * RATE / 256
    assert report["updates"] >= 10
    assert report["callback_us"]["p99"] < report["block_period_us"]
    assert report["callback_gap_us"]["p99"] < 2 * report["block_period_us"]  # callbacks come once a period
    eq = EQSettings.load(settings)
    assert any(abs(b.gain_db) > 0.5 for b in eq.bands)
    assert "stopped after 10 s" in err


@needs_jack
def test_midi_cc_changes_the_amount_and_a_prompt_weight(server, tmp_path):
    import rtmidi

    note = _tone(str(tmp_path / "note.wav"))
    settings = tmp_path / "eq.json"
    sender = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="tester")
    sender.open_virtual_port("ctl")
    try:
        proc = _live("--play", note, "--prompt", "bright", "--prompt", "airy", "--update-every", "0.25",
                     "--midi-port", "tester:ctl", "--midi-api", "jack", "--settings-out", str(settings),
                     "--no-input")
        deadline = time.monotonic() + 120
        seen = 0
        while seen < 2 and time.monotonic() < deadline:  # wait for steering to run
            line = proc.stdout.readline()
            seen += line.startswith("update")
        sender.send_message([0xB0, 1, 32])  # amount -> 0.378
        sender.send_message([0xB0, 21, 127])  # prompt 1 ("bright") weight -> 2.0
        sender.send_message([0xB3, 22, 0])  # prompt 2 ("airy") weight -> 0 (any channel)
        seen = 0
        while seen < 3 and time.monotonic() < deadline:
            seen += proc.stdout.readline().startswith("update")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        sender.close_port()
        sender.delete()
    assert proc.returncode == 0, err
    assert "SIGTERM" in err
    eq = json.loads(settings.read_text())
    assert eq["provenance"]["amount"] == pytest.approx(1.5 * 32 / 127)
    assert eq["provenance"]["steered_with"]["prompts"] == {"bright": 2.0, "airy": 0.0}


# -- bad input ----------------------------------------------------------------------------------------------------
@needs_jack
@pytest.mark.parametrize("args, fragment", [
    (["--output-device", "no-such-card"], "--output-device no-such-card: no such device; devices: 0: system"),
    (["--input-device", "7"], "--input-device 7: no such device"),
    (["--samplerate", "44100"], "--samplerate 44100: system does not support it"),
    (["--channels", "8"], "--channels 8: system has 2"),
    (["--midi-port", "nothing-here", "--midi-api", "jack"], "--midi-port nothing-here: no such MIDI input port"),
])
def test_bad_devices_exit_2_listing_what_exists(server, tmp_path, args, fragment):
    proc = _live("--prompt", "warm", "--duration", "1", "--no-input", *args)
    out, err = proc.communicate(timeout=120)
    # the server's log rides along: CI once saw PortAudio abort at exit here (the server did not acknowledge its
    # client's deactivation); the CLI's entry now keeps the exit code and adds a warning line for that case
    assert proc.returncode == 2, err + server.log()[-1500:]
    lines = [line for line in err.splitlines() if line.startswith("timbreclip: error")]
    assert len(lines) == 1 and fragment in lines[0], err


@pytest.mark.parametrize("args, fragment", [
    (["--play", "missing.wav"], "--play missing.wav: no such file"),
    (["--prompt", " "], "prompt 2 is empty"),
    (["--amount", "nan"], "--amount nan: must be finite"),
    (["--update-every", "0"], "--update-every 0: must be > 0"),
    (["--input-file", "x.wav"], "--input-file and --output-file go together"),
    (["--stats", "nodir/s.json"], "--stats nodir/s.json: folder nodir does not exist"),
])
def test_bad_flags_exit_2(tmp_path, monkeypatch, capsys, args, fragment):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        code = main(["live", "--prompt", "warm", *args])
        raise SystemExit(code)
    assert stop.value.code == 2
    assert fragment in capsys.readouterr().err


@needs_jack
def test_an_empty_prompt_typed_while_running_is_ignored(server, tmp_path):
    note = _tone(str(tmp_path / "note.wav"))
    proc = _live("--play", note, "--prompt", "warm", "--duration", "8", stdin=subprocess.PIPE)
    proc.stdin.write("\n")
    proc.stdin.write("bright, airy:0.5\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "ignored an empty prompt line" in err
    assert "words: bright x1, airy x0.5" in err
