"""Steering v2: musical defaults against --surgical, a reproducible offline fit, the amount knob, the summed curve."""

import json

import numpy as np
import pytest
import torch

from conftest import save_tiny_model

from timbreclip.cli import main
from timbreclip.dsp.audio_io import read_audio, write_audio
from timbreclip.dsp.errors import SettingsError
from timbreclip.dsp.settings import Band, EQSettings
from timbreclip.neural.frontend import prepare_audio
from timbreclip.neural.model import TimbreCLIP
from timbreclip.neural.steering import SteeringConfig, shape_penalty, steer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("m") / "m", seed=1)


def _note(seconds=2.0, rate=44100, f0=110.0):
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 60) if f0 * h < rate / 2) * np.exp(-t)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def test_defaults_are_broad_and_moderate_and_surgical_keeps_the_old_freedom(model_dir):
    model = TimbreCLIP.load(model_dir)
    windows = torch.from_numpy(prepare_audio(_note(), 44100, model.config.frontend))
    for prompt in ("bright", "warm", "thin"):
        musical = steer(model, windows, {prompt: 1.0}, 0.5, SteeringConfig.offline(steps=40))
        s = musical.eq.to_settings(44100)
        assert all(abs(b.gain_db) <= 9.0 + 1e-4 for b in s.bands)
        assert all(b.q <= 3.0 + 1e-4 for b in s.bands)  # broad: no peak narrow enough to count as a resonance
    surgical = SteeringConfig.surgical()
    assert (surgical.max_gain_db, surgical.q_range, surgical.shape) == (12.0, (0.3, 10.0), 0.0)
    assert (surgical.penalty, surgical.steps) == (0.02, 64)  # the first version's fit, as it was
    assert SteeringConfig.offline().time_budget_s is None and SteeringConfig().time_budget_s == 0.95


def test_shape_penalty_grows_past_the_knee_and_boosts_cost_more_than_cuts():
    cfg = SteeringConfig()
    w = torch.full((10,), 0.1)

    def cost(db):
        return float(shape_penalty(torch.full((1, 10), float(db)), w, cfg)[0])

    knee = cfg.knee_db
    assert cost(0) == 0 and cost(knee - 0.1) == 0  # moves within the knee are free
    assert cost(knee + 3) > 0 and cost(knee + 6) == pytest.approx(4 * cost(knee + 3))  # squared past the knee
    assert cost(knee + 3) == pytest.approx(cfg.boost_weight * cost(-knee - 3))
    span = torch.tensor([[10.0] * 5 + [-10.0] * 5])
    assert float(shape_penalty(span, w, cfg)[0]) > cost(10) / 2 + cost(-10) / 2  # a 20 dB span costs extra


def test_offline_eq_is_reproducible(model_dir, tmp_path):
    src = tmp_path / "in.wav"
    write_audio(src, np.stack([_note(), _note()]), 44100)
    outs = []
    for k in range(2):
        out, js = tmp_path / f"o{k}.wav", tmp_path / f"e{k}.json"
        assert main(["eq", str(src), "-o", str(out), "--prompt", "bright", "--settings-out", str(js),
                     "--model", str(model_dir)]) == 0
        data = json.loads(js.read_text())
        outs.append((data["bands"], data["output_gain_db"], read_audio(out)[0]))
    assert outs[0][0] == outs[1][0] and outs[0][1] == outs[1][1]
    np.testing.assert_array_equal(outs[0][2], outs[1][2])


def test_amount_scales_the_curve_and_is_recorded(model_dir, tmp_path, capsys):
    s = EQSettings(48000, [Band("low_shelf", 100, 6.0), Band("peak", 1000, -4.0, 1.0)], -1.5, {"prompts": {}})
    half = s.scaled(0.5)
    assert [b.gain_db for b in half.bands] == [3.0, -2.0] and half.output_gain_db == -0.75
    assert half.provenance["amount"] == 0.5 and half.scaled(1.5).provenance["amount"] == 0.75
    flat = s.scaled(0.0)
    np.testing.assert_allclose(flat.response_db(np.array([50.0, 1000.0, 8000.0])), 0.0, atol=1e-9)
    for bad in (-0.1, 1.6, float("nan")):
        with pytest.raises(SettingsError, match="amount"):
            s.scaled(bad)
    src, js = tmp_path / "in.wav", tmp_path / "eq.json"
    write_audio(src, np.stack([_note(), _note()]), 44100)
    # the shipped model: a real fit (a random tiny model leaves the EQ flat)
    assert main(["eq", str(src), "-o", str(tmp_path / "a.wav"), "--prompt", "warm", "--amount", "0.5",
                 "--settings-out", str(js)]) == 0
    printed = capsys.readouterr().out
    assert "summed curve:" in printed and "span" in printed
    saved = EQSettings.load(js)
    assert saved.provenance["amount"] == 0.5
    full = tmp_path / "full.json"
    assert main(["eq", str(src), "-o", str(tmp_path / "b.wav"), "--prompt", "warm", "--settings-out", str(full)]) == 0
    whole = EQSettings.load(full)
    assert max(abs(b.gain_db) for b in whole.bands) > 0.5
    np.testing.assert_allclose([b.gain_db for b in saved.bands], [0.5 * b.gain_db for b in whole.bands], atol=1e-3)
    # apply-eq --amount 0 plays flat (bands at 0 dB, output gain 0); out of range is one line, exit 2
    assert main(["apply-eq", str(src), "-o", str(tmp_path / "flat.wav"), "--settings", str(full),
                 "--amount", "0"]) == 0
    np.testing.assert_allclose(read_audio(tmp_path / "flat.wav")[0], read_audio(src)[0], atol=2e-6)
    capsys.readouterr()
    assert main(["apply-eq", str(src), "-o", str(tmp_path / "x.wav"), "--settings", str(full), "--amount", "2"]) == 2
    assert "--amount 2: must be <= 1.5" in capsys.readouterr().err and not (tmp_path / "x.wav").exists()


def test_summed_curve_and_span():
    s = EQSettings(48000, [Band("low_shelf", 200, 6.0), Band("high_shelf", 3000, -6.0)], 3.0)
    curve = dict(s.summed_curve())
    assert curve[30.0] == pytest.approx(6.0, abs=0.3) and curve[12000.0] == pytest.approx(-6.0, abs=0.3)
    assert s.span_db() == pytest.approx(12.0, abs=0.5)
    assert max(f for f, _ in EQSettings(16000, []).summed_curve()) == 7200.0  # below Nyquist only
