"""The shipped default model: present as package data, small, safe to load, used when --model is omitted."""

import json
from pathlib import Path

import numpy as np
import pytest

from timbreclip.cli import main
from timbreclip.defaults import SHIPPED_MODEL_DIR
from timbreclip.neural.model import TimbreCLIP


def test_shipped_files_are_small_safetensors_with_provenance():
    files = {p.name: p.stat().st_size for p in SHIPPED_MODEL_DIR.iterdir() if p.is_file()}
    assert "model.safetensors" in files and "config.json" in files and "training_log.jsonl" in files
    assert sum(files.values()) < 20 * 1024 * 1024
    assert not [n for n in files if n.endswith((".pt", ".pth", ".ckpt", ".pkl"))]
    config = json.loads((SHIPPED_MODEL_DIR / "config.json").read_text())
    training = config["provenance"]["training"]
    assert training["config"]["name"] == "v3-finetune" and "val_score" in training
    assert training["init_model"]["training"]["config"]["name"] == "steer-finetune"  # the model it fine-tuned
    assert training["init_model"]["training"]["init_model"]["training"]["config"]["name"] == "scratch-cpu"


def test_default_model_is_used_without_model_flag(capsys):
    assert main(["embed", "--text", "warm pad", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    shipped = TimbreCLIP.load(SHIPPED_MODEL_DIR).embed_text(["warm pad"])[0]
    np.testing.assert_allclose(out[0]["embedding"], shipped, atol=1e-6)  # the command used the shipped weights


def test_shipped_model_knows_pitch_independent_brightness():
    """A behaviour check on sounds the model never heard: a bright sawtooth-like tone scores higher on "bright"
    relative to "dark" than a pure sine at the same pitch."""
    model = TimbreCLIP.load(SHIPPED_MODEL_DIR)
    rate = 16000
    t = np.arange(4 * rate) / rate
    env = np.minimum(1, t / 0.01) * np.where(t < 3, 1.0, np.exp(-(t - 3) * 8))
    saw = sum(np.sin(2 * np.pi * 220 * h * t) / h for h in range(1, 36)) * env
    sine = np.sin(2 * np.pi * 220 * t) * env
    words = model.embed_text(["bright", "dark"])
    margin = [float(words[0] @ model.embed_audio(x.astype(np.float32), rate) - words[1] @ model.embed_audio(
        x.astype(np.float32), rate)) for x in (saw, sine)]
    assert margin[0] > margin[1], margin


@pytest.mark.parametrize("prompt,measure,sign", [("bright", "centroid", 1), ("warm", "centroid", -1),
                                                 ("bass-heavy", "low_share", 1), ("thin", "low_share", -1)])
def test_shipped_model_steers_an_unheard_tone_the_way_the_word_says(prompt, measure, sign):
    """A synthetic tone (not a soundfont note): the fitted EQ must move its spectral centroid or its share of energy
    below 250 Hz the way the word says."""
    from timbreclip.dsp.descriptors import low_energy_share, spectral_centroid_hz
    from timbreclip.neural.steering import TextEQ

    model = TimbreCLIP.load(SHIPPED_MODEL_DIR)
    rate = 44100
    t = np.arange(4 * rate) / rate
    env = np.minimum(1, t / 0.02) * np.where(t < 3, 1.0, np.exp(-(t - 3) * 6))
    tone = (0.3 * sum(np.sin(2 * np.pi * 130.8 * h * t) / h**1.2 for h in range(1, 60) if 130.8 * h < 8000)
            * env).astype(np.float32)
    out = TextEQ({prompt: 1.0}, model)(tone, rate)
    f = spectral_centroid_hz if measure == "centroid" else low_energy_share
    assert sign * (f(out, rate) - f(tone, rate)) > 0, (prompt, f(tone, rate), f(out, rate))


def test_shipped_model_outputs_match_the_stored_golden_values():
    """Regression: the shipped model's embeddings of fixed inputs against values stored when it shipped (a change
    to the front end, the encoders or the weights that moves them fails here)."""
    golden = json.loads((Path(__file__).parent / "golden" / "shipped_embeddings.json").read_text())
    model = TimbreCLIP.load(SHIPPED_MODEL_DIR)
    assert model.fingerprint() == golden["fingerprint"]
    t = np.arange(16000 * 2) / 16000
    tones = {"saw_220": (sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 30)) * 0.2 * np.exp(-t)),
             "sine_880": 0.3 * np.sin(2 * np.pi * 880 * t)}
    for name, x in tones.items():
        np.testing.assert_allclose(model.embed_audio(x.astype(np.float32), 16000), golden["audio"][name], atol=2e-4,
                                   err_msg=name)
    for text, want in golden["text"].items():
        np.testing.assert_allclose(model.embed_text([text])[0], want, atol=2e-4, err_msg=text)
