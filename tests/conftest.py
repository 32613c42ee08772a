import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def random_bands(rng, sample_rate, n=None, types=("peak", "low_shelf", "high_shelf", "low_pass", "high_pass"),
                 gain=15.0, q=(0.3, 10.0)):
    """Random physical bands: 20 Hz .. 0.45 x rate (log), gains +-gain dB, Q log-uniform in q."""
    from timbreclip.dsp.settings import Band

    n = n or int(rng.integers(1, 9))
    return [
        Band(str(rng.choice(types)), float(np.exp(rng.uniform(np.log(20.0), np.log(0.45 * sample_rate)))),
             float(rng.uniform(-gain, gain)), float(np.exp(rng.uniform(np.log(q[0]), np.log(q[1])))))
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def server():
    """A private JACK server (dummy backend, 48 kHz, 256 frames) for one test module; PortAudio re-initialised to
    see it, and terminated before it stops (pa_jack asserts otherwise)."""
    from timbreclip.realtime.jackrig import JackServer, jack_available

    ok, why = jack_available()
    if not ok:
        pytest.skip(why)
    import sounddevice as sd

    from timbreclip.realtime.devices import refresh_audio

    with JackServer(rate=48000, period=256) as srv:
        refresh_audio()
        yield srv
        sd._terminate()
    sd._initialize()


def save_tiny_model(path, seed: int = 0):
    """A random width-8 TimbreCLIP (with the bundled MiniLM text tower) saved at ``path``: fast to fit with."""
    import torch

    from timbreclip.neural.encoder import AudioEncoderConfig
    from timbreclip.neural.model import ModelConfig, TimbreCLIP
    from timbreclip.neural.text import MiniLMEncoder

    torch.manual_seed(seed)
    TimbreCLIP(ModelConfig(audio=AudioEncoderConfig(width=8)), text_encoder=MiniLMEncoder()).save(path)
    return path
