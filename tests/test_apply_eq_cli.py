"""`timbreclip apply-eq`: file processing end to end, and every kind of bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from timbreclip.cli import main
from timbreclip.dsp.audio_io import read_audio, write_audio
from timbreclip.dsp.settings import Band, EQSettings


@pytest.fixture
def settings_file(tmp_path):
    path = tmp_path / "eq.json"
    EQSettings(48000, [Band("peak", 1000.0, 6.0, 1.0), Band("high_shelf", 6000.0, -3.0, 0.7)]).save(path)
    return path


def _tone(tmp_path, name="in.wav", rate=44100, channels=2, seconds=1.0, amp=0.25):
    t = np.arange(int(rate * seconds)) / rate
    x = amp * np.sin(2 * np.pi * 440 * t)
    audio = np.stack([x * (1 - 0.3 * c) for c in range(channels)]).astype(np.float32)
    path = tmp_path / name
    write_audio(path, audio, rate)
    return path, audio


@pytest.mark.parametrize("ext, rate, channels", [(".wav", 44100, 2), (".flac", 22050, 1), (".wav", 48000, 3)])
def test_apply_eq_keeps_rate_and_channels(tmp_path, settings_file, ext, rate, channels, capsys):
    src, audio = _tone(tmp_path, "in" + ext, rate, channels)
    out = tmp_path / ("out" + ext)
    assert main(["apply-eq", str(src), "-o", str(out), "--settings", str(settings_file),
                 "--plot", str(tmp_path / "eq.png")]) == 0
    y, out_rate = read_audio(out)
    assert out_rate == rate and y.shape == audio.shape
    want = EQSettings.load(settings_file)(audio, rate)
    np.testing.assert_allclose(y, want, atol=1e-4 if ext == ".flac" else 1e-6)
    assert (tmp_path / "eq.png").stat().st_size > 1000


def test_never_clips_silently(tmp_path, capsys):
    src, audio = _tone(tmp_path, amp=0.9)
    loud = tmp_path / "loud.json"
    EQSettings(48000, [Band("peak", 440.0, 12.0, 1.0)]).save(loud)
    out = tmp_path / "out.wav"
    assert main(["apply-eq", str(src), "-o", str(out), "--settings", str(loud)]) == 0
    assert "scaled by" in capsys.readouterr().err
    y, _ = read_audio(out)
    assert np.abs(y).max() <= 1.0 + 1e-6 and np.abs(y).max() > 0.99
    assert main(["apply-eq", str(src), "-o", str(out), "--settings", str(loud), "--allow-clipping"]) == 0
    assert "scaled by" not in capsys.readouterr().err


def test_band_above_nyquist_needs_clamp(tmp_path, capsys):
    src, _ = _tone(tmp_path, rate=16000)
    high = tmp_path / "high.json"
    EQSettings(48000, [Band("peak", 12000.0, 3.0, 1.0)]).save(high)
    out = tmp_path / "out.wav"
    assert main(["apply-eq", str(src), "-o", str(out), "--settings", str(high)]) == 2
    err = capsys.readouterr().err
    assert "band 0 (peak at 12000 Hz)" in err and "--clamp-bands" in err and not out.exists()
    assert main(["apply-eq", str(src), "-o", str(out), "--settings", str(high), "--clamp-bands"]) == 0
    assert "moved to 7200 Hz" in capsys.readouterr().err and out.exists()


def _write_nan(path):
    import soundfile

    x = np.zeros((1000, 1), np.float32)
    x[500] = np.nan
    soundfile.write(path, x, 16000, subtype="FLOAT")


@pytest.mark.parametrize("case, fragment", [
    ("missing", "no such file"),
    ("corrupt", "cannot read audio"),
    ("empty", "zero length"),
    ("nan", "NaN or Inf sample at frame 500"),
])
def test_bad_audio_is_one_line_and_writes_nothing(tmp_path, settings_file, capsys, case, fragment):
    src = tmp_path / "bad.wav"
    if case == "corrupt":
        src.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 10)
    elif case == "empty":
        write_audio(src, np.zeros((1, 0), np.float32), 16000)
    elif case == "nan":
        _write_nan(src)
    out = tmp_path / "out.wav"
    assert main(["apply-eq", str(src), "-o", str(out), "--settings", str(settings_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(src) in err and fragment in err, err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


@pytest.mark.parametrize("text, fragment", [
    ("{oops", "malformed JSON"),
    ('{"sample_rate": 48000, "bands": [{"type": "peak", "freq_hz": 30000}]}', "at or above Nyquist"),
    ('{"sample_rate": 48000, "bands": [{"type": "peak", "freq_hz": 100, "q": -1}]}', "q -1 <= 0"),
    ('{"sample_rate": 48000, "bands": [{"type": "bell", "freq_hz": 100}]}', "unknown band type"),
])
def test_bad_settings_are_one_line(tmp_path, capsys, text, fragment):
    src, _ = _tone(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    out = tmp_path / "out.wav"
    assert main(["apply-eq", str(src), "-o", str(out), "--settings", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err and fragment in err, err
    assert not out.exists()


def test_existing_output_survives_a_failed_run(tmp_path, settings_file):
    src = tmp_path / "bad.wav"
    src.write_bytes(b"not audio at all")
    out = tmp_path / "out.wav"
    out.write_bytes(b"precious")
    assert main(["apply-eq", str(src), "-o", str(out), "--settings", str(settings_file)]) == 2
    assert out.read_bytes() == b"precious"


def test_long_file_is_processed_in_chunks(tmp_path, settings_file):
    rate = 8000
    src, audio = _tone(tmp_path, rate=rate, channels=1, seconds=40.0)  # > CHUNK_FRAMES, > 30 s progress threshold
    out = tmp_path / "out.wav"
    assert main(["apply-eq", str(src), "-o", str(out), "--settings", str(settings_file), "--clamp-bands"]) == 0
    y, _ = read_audio(out)
    assert y.shape == audio.shape


def test_console_script_and_module(tmp_path, settings_file):
    src, _ = _tone(tmp_path)
    res = subprocess.run([sys.executable, "-m", "timbreclip", "apply-eq", str(src), "-o", str(tmp_path / "o.wav"),
                          "--settings", str(settings_file)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([sys.executable, "-m", "timbreclip", "apply-eq", str(tmp_path / "nope.wav"), "-o",
                          str(tmp_path / "o2.wav"), "--settings", str(settings_file)], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "no such file" in res.stderr
    assert json.loads(settings_file.read_text())["sample_rate"] == 48000


def test_output_equal_to_input_links_modes_and_sigterm(tmp_path, capsys):
    """-o the input is refused (unless --overwrite-input); -o a link writes through it; outputs get the mode a plain
    open gives (or the existing target's); SIGTERM mid-write leaves no temporary file behind."""
    import os
    import signal
    import stat
    import subprocess
    import sys
    import time

    import numpy as np

    from timbreclip.cli import main
    from timbreclip.dsp.audio_io import write_audio

    note = tmp_path / "note.wav"
    write_audio(note, (0.3 * np.sin(np.arange(48000) / 10)).astype(np.float32), 48000)
    settings = tmp_path / "eq.json"
    settings.write_text('{"sample_rate": 48000, "bands": [{"type": "peak", "freq_hz": 1000, "gain_db": 3}]}')
    before = note.read_bytes()
    assert main(["apply-eq", str(note), "-o", str(note), "--settings", str(settings)]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert note.read_bytes() == before
    os.chmod(note, 0o644)
    assert main(["apply-eq", str(note), "-o", str(note), "--settings", str(settings), "--overwrite-input"]) == 0
    assert stat.S_IMODE(note.stat().st_mode) == 0o644  # the existing file's mode is kept
    real = tmp_path / "real.wav"
    write_audio(real, np.zeros(100, np.float32), 48000)
    link = tmp_path / "link.wav"
    link.symlink_to(real)
    assert main(["apply-eq", str(note), "-o", str(link), "--settings", str(settings)]) == 0
    assert link.is_symlink() and real.stat().st_size > 1000
    fresh = tmp_path / "fresh.wav"
    old = os.umask(0o022)
    try:
        assert main(["apply-eq", str(note), "-o", str(fresh), "--settings", str(settings)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
    # a long file, SIGTERM while it is being written: no hidden temporary file stays
    long = tmp_path / "long.wav"
    write_audio(long, (0.1 * np.random.default_rng(0).standard_normal((2, 48000 * 240))).astype(np.float32), 48000)
    out = tmp_path / "long-eq.wav"
    proc = subprocess.Popen([sys.executable, "-m", "timbreclip", "apply-eq", str(long), "-o", str(out), "--settings",
                             str(settings)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(tmp_path.glob(".long-eq.*")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not list(tmp_path.glob(".long-eq.*")) and not out.exists()


def test_truncated_wav_files_are_refused(tmp_path, capsys):
    """A header that claims audio the file does not hold (header-only, or cut in half) is refused with one line,
    instead of being read as silence."""
    import numpy as np

    from timbreclip.cli import main
    from timbreclip.dsp.audio_io import write_audio

    note = tmp_path / "note.wav"
    write_audio(note, (0.3 * np.sin(np.arange(48000) / 10)).astype(np.float32), 48000, bit_depth=16)
    data = note.read_bytes()
    half = tmp_path / "half.wav"
    half.write_bytes(data[: len(data) // 2])
    header_only = tmp_path / "header.wav"
    header_only.write_bytes(data[:44])
    settings = tmp_path / "eq.json"
    settings.write_text('{"sample_rate": 48000, "bands": []}')
    for bad in (half, header_only):
        out = tmp_path / f"out-{bad.stem}.wav"
        assert main(["apply-eq", str(bad), "-o", str(out), "--settings", str(settings)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "truncated" in err[0] and str(bad) in err[0]
        assert not out.exists()
    assert main(["apply-eq", str(note), "-o", str(tmp_path / "ok.wav"), "--settings", str(settings)]) == 0


@pytest.fixture
def full_disk(tmp_path):
    """A 64 kB tmpfs (root only; skipped where mounting is not allowed)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_is_one_line_exit_2_and_leaves_nothing(full_disk, tmp_path, capsys):
    from timbreclip.dsp.settings import Band, EQSettings

    rng = np.random.default_rng(0)
    src = tmp_path / "long.wav"
    write_audio(src, (0.1 * rng.standard_normal((2, 48000 * 2))).astype(np.float32), 48000)
    settings = tmp_path / "s.json"
    EQSettings(48000, [Band("peak", 1000.0, 3.0, 1.0)]).save(settings)
    assert main(["apply-eq", str(src), "-o", str(full_disk / "out.wav"), "--settings", str(settings)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out.wav: cannot write audio" in err[0] and "disk full" in err[0], err
    assert list(full_disk.iterdir()) == []  # no output, no temporary
    (full_disk / "fill").write_bytes(b"\0" * 60000)
    with pytest.raises(OSError):
        EQSettings(48000, [Band("peak", 1000.0, 3.0, 1.0)] * 60).save(full_disk / "s.json")
    assert sorted(p.name for p in full_disk.iterdir()) == ["fill"]  # the .tmp-PID file is gone too
