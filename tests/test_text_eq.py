"""Text-steered EQ: the optimiser, the TextEQ plugin, the eq command end to end and its bad input."""

import json

import numpy as np
import pytest
import torch

from timbreclip.cli import main
from timbreclip.dsp.audio_io import read_audio, write_audio
from timbreclip.neural.encoder import AudioEncoderConfig
from timbreclip.neural.model import ModelConfig, TimbreCLIP
from timbreclip.neural.steering import SteeringConfig, TextEQ, steer
from timbreclip.neural.text import MiniLMEncoder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("m")
    TimbreCLIP(ModelConfig(audio=AudioEncoderConfig(width=8)), text_encoder=MiniLMEncoder()).save(tmp / "m")
    return tmp / "m"


@pytest.fixture(scope="module")
def model(model_dir):
    return TimbreCLIP.load(model_dir)


def _note(seconds=1.0, rate=44100, channels=2, f0=220.0):
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 30) if f0 * h < rate / 2) * np.exp(-2 * t)
    x = (0.5 * x / np.abs(x).max()).astype(np.float32)
    return np.stack([x, 0.8 * x]) if channels == 2 else x


def test_steer_lowers_the_objective_and_the_penalty_keeps_gains_small(model):
    windows = torch.from_numpy(np.stack([_note(4.0, 16000, 1)]))
    free = steer(model, windows, {"bright": 1.0}, 0.5, SteeringConfig(penalty=0.0, early_exit=False))
    assert free.objective_after < free.objective_before and free.distance_after < free.distance_before
    gentle = steer(model, windows, {"bright": 1.0}, 0.5, SteeringConfig(penalty=1.0, early_exit=False))
    assert float(gentle.eq.gain_db.abs().mean()) < float(free.eq.gain_db.abs().mean())
    assert float(free.eq.freq_hz.max()) <= 0.45 * 16000  # bands only where the model can hear


def test_broad_start_and_fused_encoder(model):
    from timbreclip.neural.steering import _broad_eq, steering_encoder

    windows = torch.from_numpy(np.stack([_note(4.0, 16000, 1)]))
    features = model.frontend(windows)
    fused = steering_encoder(model)
    assert fused is steering_encoder(model)  # built once per set of weights
    model.eval()
    torch.testing.assert_close(fused(features), model.audio(features), atol=1e-5, rtol=1e-4)
    # the broad start scores flat too, so a fit that starts there can only end at or below flat's objective
    broad = steer(model, windows, {"bright": 1.0}, 0.5, SteeringConfig(steps=0))
    assert broad.objective_after <= broad.objective_before + 1e-6
    moves = _broad_eq(broad.eq)
    assert float(moves.gain_db[0].abs().max()) < 1e-3 and len(moves.gain_db) == 17  # flat + 8 moves up and down
    fit = steer(model, windows, {"bright": 1.0}, 0.5, SteeringConfig(steps=12))
    assert fit.objective_after <= broad.objective_after + 1e-6  # refining never ends worse than where it began
    pair = steer(model, windows, {"bright": 1.0}, 0.5, SteeringConfig(steps=12, starts=2))
    assert pair.eq.gain_db.dim() == 1 and pair.objective_after <= broad.objective_after + 1e-6
    with torch.no_grad():
        model.audio.projection.weight.mul_(1.01)  # new weights: a new fused copy
    assert steering_encoder(model) is not fused
    with torch.no_grad():
        model.audio.projection.weight.div_(1.01)


def test_time_budget_ends_the_fit_in_time(model):
    windows = torch.from_numpy(np.stack([_note(4.0, 16000, 1)]))
    capped = steer(model, windows, {"warm": 1.0}, 0.5,
                   SteeringConfig(steps=100000, early_exit=False, time_budget_s=0.3))
    # behaviour, not a stopwatch: the budget, not the step count, ended the fit (100,000 steps take minutes), and
    # a larger budget buys more steps; the exact overrun depends on how busy the machine is
    assert 0 < capped.steps < 100000 and capped.seconds < 0.3 + 5.0
    longer = steer(model, windows, {"warm": 1.0}, 0.5,
                   SteeringConfig(steps=100000, early_exit=False, time_budget_s=1.2))
    assert capped.steps < longer.steps < 100000
    assert capped.objective_after <= capped.objective_before + 1e-6


def test_text_eq_plugin(model):
    audio = _note()
    plugin = TextEQ({"warm": 1.0, "airy": 0.5}, model)
    settings = plugin.fit(audio, 44100)
    assert settings.sample_rate == 44100 and len(settings.bands) == 8
    assert settings.provenance["prompts"] == {"warm": 1.0, "airy": 0.5}
    y = plugin(audio, 44100)
    assert y.shape == audio.shape and np.isfinite(y).all()
    np.testing.assert_array_equal(y, settings(audio, 44100))  # the plugin plays exactly the settings it found


def test_eq_cli_end_to_end_and_replay(model_dir, tmp_path, capsys):
    src = tmp_path / "note.wav"
    write_audio(src, _note(), 44100)
    out, settings = tmp_path / "out.wav", tmp_path / "eq.json"
    assert main(["eq", str(src), "-o", str(out), "--prompt", "warm", "--prompt", "airy", "--weight", "0.5",
                 "--source-weight", "0.5", "--settings-out", str(settings), "--plot", str(tmp_path / "eq.png"),
                 "--model", str(model_dir)]) == 0
    printed = capsys.readouterr().out
    assert "warm" in printed and "airy" in printed and "before" in printed and "peak_" not in printed
    y, rate = read_audio(out)
    x, _ = read_audio(src)
    assert rate == 44100 and y.shape == x.shape and np.abs(y).max() <= 1.0
    data = json.loads(settings.read_text())
    assert data["sample_rate"] == 44100 and data["provenance"]["prompts"] == {"warm": 1.0, "airy": 0.5}
    from timbreclip.text_eq import loudness_lufs

    assert loudness_lufs(y, rate) == pytest.approx(loudness_lufs(x, rate), abs=0.5)
    # apply-eq replays the saved settings (output gain included) to the same audio
    replay = tmp_path / "replay.wav"
    assert main(["apply-eq", str(src), "-o", str(replay), "--settings", str(settings)]) == 0
    np.testing.assert_allclose(read_audio(replay)[0], y, atol=1e-5)
    assert (tmp_path / "eq.png").stat().st_size > 10000


@pytest.mark.parametrize("case, args, fragment", [
    ("empty prompt", ["--prompt", ""], "empty"),
    ("whitespace prompt", ["--prompt", "   "], "empty"),
    ("negative weight", ["--prompt", "warm", "--weight", "-1"], "--weight -1: must be a finite number >= 0"),
    ("zero weights", ["--prompt", "warm", "--weight", "0"], "every prompt weight is 0"),
    ("no prompt", [], "give at least one --prompt"),
])
def test_eq_bad_prompts(model_dir, tmp_path, capsys, case, args, fragment):
    src = tmp_path / "note.wav"
    write_audio(src, _note(), 44100)
    out = tmp_path / "out.wav"
    assert main(["eq", str(src), "-o", str(out), *args, "--model", str(model_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and err.count("\n") == 0 and not out.exists()


@pytest.mark.parametrize("case, fragment", [("silent", "silent"), ("short", "too short"), ("unreadable", "cannot read")])
def test_eq_bad_audio(model_dir, tmp_path, capsys, case, fragment):
    src = tmp_path / "in.wav"
    if case == "silent":
        write_audio(src, np.zeros(44100, np.float32), 44100)
    elif case == "short":
        write_audio(src, _note(0.02, 44100, 1), 44100)
    else:
        src.write_bytes(b"RIFF....WAVEgarbage" * 3)
    out = tmp_path / "out.wav"
    assert main(["eq", str(src), "-o", str(out), "--prompt", "warm", "--model", str(model_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and str(src) in err and err.count("\n") == 0 and not out.exists()


def test_eq_on_a_six_channel_file(model_dir, tmp_path, capsys):
    """5.1 audio: loudness is measured per channel past the meter's 5 (summed as BS.1770 sums channels), so the
    fit's output is loudness-matched instead of failing after the fit."""
    from timbreclip.text_eq import loudness_lufs

    x = _note(channels=2)
    six = np.concatenate([x, x, x], axis=0)  # 6 channels
    src, out = tmp_path / "six.wav", tmp_path / "six-warm.wav"
    write_audio(src, six, 44100)
    assert main(["eq", str(src), "-o", str(out), "--prompt", "warm", "--model", str(model_dir)]) == 0
    y, _ = read_audio(str(out))
    assert y.shape == six.shape
    assert loudness_lufs(y, 44100) == pytest.approx(loudness_lufs(six, 44100), abs=0.5)
    # the per-channel rule agrees with the meter where both apply: two identical stereo pairs = +3 dB
    assert loudness_lufs(np.concatenate([x, x, x]), 44100) == pytest.approx(loudness_lufs(x, 44100) + 10 * np.log10(3),
                                                                             abs=0.1)


@pytest.mark.parametrize("name, bits, stored", [("in.wav", 16, "int16"), ("in.aiff", 16, "int16"),
                                                ("in.aiff", 24, "int24"), ("in.wav", None, "float32")])
def test_eq_keeps_the_inputs_format_and_bit_depth(model_dir, tmp_path, name, bits, stored):
    from timbreclip.dsp.audio_io import source_dtype

    src = tmp_path / name
    write_audio(src, _note(), 44100, bit_depth=bits)
    assert source_dtype(src) == stored
    out = tmp_path / ("out" + src.suffix)
    assert main(["eq", str(src), "-o", str(out), "--prompt", "warm", "--steps", "2", "--model", str(model_dir)]) == 0
    assert source_dtype(out) == stored  # 16-bit in, 16-bit out (not twice the size); AIFF writable at all
    audio, rate = read_audio(out)
    assert rate == 44100 and audio.shape == (2, 44100) and np.abs(audio).max() < 1.0
