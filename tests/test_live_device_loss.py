"""The live loop when its audio server stops under it: its own module, its own JACK server, run after the other
live tests (a stopped server must not take the shared test server's clients with it)."""

import subprocess
import sys
import time

import numpy as np
import pytest

from timbreclip.dsp.audio_io import write_audio
from timbreclip.realtime.jackrig import JackServer, jack_available

RATE = 48000
OK, WHY = jack_available()


@pytest.mark.skipif(not OK, reason=WHY)
def test_the_server_stopping_is_a_device_failure(tmp_path):
    """The JACK server stops under the running loop: one line saying why, the settings still written, exit 1."""
    t = np.arange(3 * RATE) / RATE
    note = str(tmp_path / "note.wav")
    write_audio(note, (0.3 * np.sin(2 * np.pi * 220 * t))[None].astype(np.float32), RATE)
    settings = tmp_path / "eq.json"
    with JackServer(rate=RATE, period=256) as own:
        proc = subprocess.Popen([sys.executable, "-m", "timbreclip", "live", "--play", note, "--prompt", "warm",
                                 "--channels", "1", "--settings-out", str(settings), "--no-input"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not proc.stdout.readline().startswith("update"):
            pass
        own.stop()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if line.startswith("timbreclip")]
    assert len(lines) == 1 and "the audio stream stopped" in lines[0], err
    assert settings.exists()
