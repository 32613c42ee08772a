"""Library code leaves the process as it found it: no global reseeding, no environment variables, no plotting
backend switch, and the steering encoder cache follows the weights without torch's private counters."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from timbreclip.neural.encoder import AudioEncoderConfig
from timbreclip.neural.model import ModelConfig, TimbreCLIP
from timbreclip.neural.steering import SteeringConfig, steering_encoder, steer
from timbreclip.neural.text import MiniLMEncoder


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TimbreCLIP(ModelConfig(audio=AudioEncoderConfig(width=8)), text_encoder=MiniLMEncoder())


def test_steer_leaves_the_global_random_state_alone(model):
    windows = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 64000)).astype(np.float32) * 0.1)
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    steer(model, windows, {"bright": 1.0}, 0.5, SteeringConfig(steps=2, seed=7))
    assert torch.equal(torch.rand(3), expected)


def test_steer_is_deterministic(model):
    windows = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 64000)).astype(np.float32) * 0.1)
    a = steer(model, windows, {"warm": 1.0}, 0.5, SteeringConfig(steps=6, early_exit=False)).eq.to_settings()
    torch.rand(5)  # the global generator moves on: the fit must not depend on it
    b = steer(model, windows, {"warm": 1.0}, 0.5, SteeringConfig(steps=6, early_exit=False)).eq.to_settings()
    assert [band.gain_db for band in a.bands] == [band.gain_db for band in b.bands]


def test_the_text_tower_sets_no_environment_variables():
    code = ("import os; from timbreclip.neural.text import MiniLMEncoder; MiniLMEncoder(); "
            "print(sorted(k for k in os.environ if k.endswith('_OFFLINE')))")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_plots_do_not_switch_the_matplotlib_backend(tmp_path):
    import matplotlib

    from timbreclip.dsp.plot import plot_eq
    from timbreclip.dsp.settings import Band, EQSettings

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        plot_eq(EQSettings(48000, [Band("peak", 1000.0, 6.0, 1.0)]), tmp_path / "eq.png")
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "eq.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        matplotlib.use(before)


def test_the_fusedsteering_encoder_follows_in_place_weight_changes(model):
    first = steering_encoder(model)
    assert steering_encoder(model) is first  # unchanged weights: reused
    p = next(model.audio.parameters())
    with torch.no_grad():
        p.add_(0.5)
    try:
        assert steering_encoder(model) is not first  # changed in place: rebuilt
    finally:
        with torch.no_grad():
            p.sub_(0.5)
