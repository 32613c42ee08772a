"""TimbreCLIP models: shapes, norms, determinism, batch independence, checkpoints, text backends, safe loading."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from timbreclip.cli import main
from timbreclip.dsp.audio_io import write_audio
from timbreclip.neural.encoder import AudioEncoderConfig
from timbreclip.neural.frontend import FrontEnd, FrontEndConfig, prepare_audio
from timbreclip.neural.model import CheckpointError, ModelConfig, TimbreCLIP, load_foreign_state_dict
from timbreclip.neural.text import MiniLMEncoder, PromptError, TextBackendConfig


@pytest.fixture(scope="session")
def minilm():
    return MiniLMEncoder()


@pytest.fixture(scope="session")
def tiny(minilm):
    torch.manual_seed(0)
    return TimbreCLIP(ModelConfig(audio=AudioEncoderConfig(width=8)), text_encoder=minilm).eval()


def _notes(n=4, seconds=4.0, rate=16000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return [(np.sin(2 * np.pi * rng.uniform(100, 1000) * t) * np.exp(-t * rng.uniform(0.5, 4))).astype(np.float32)
            for _ in range(n)]


def test_minilm_loads_offline_from_the_package(minilm):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with torch.no_grad():
        z = minilm(**minilm.tokenize(["a warm pad", "a bright lead"]))
        # a real sentence encoder: related phrases are closer than unrelated ones
        a, b, c = minilm(**minilm.tokenize(["warm analog pad", "soft warm synth pad", "distorted electric guitar"]))
    assert z.shape == (2, 384)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(2))
    assert float(a @ b) > float(a @ c)


def test_shapes_norms_and_any_input(tiny):
    rng = np.random.default_rng(0)
    pooled = tiny.embed_audio(rng.standard_normal(16000 * 3).astype(np.float32) * 0.1, 16000)
    assert pooled.shape == (384,) and abs(np.linalg.norm(pooled) - 1) < 1e-5
    stereo_44k = rng.standard_normal((2, 44100 * 9)).astype(np.float32) * 0.1
    windows = tiny.embed_audio(stereo_44k, 44100, per_window=True)
    assert windows.shape == (3, 384)  # 9 s -> three 4 s windows, the last padded
    np.testing.assert_allclose(np.linalg.norm(windows, axis=1), 1, atol=1e-5)
    text = tiny.embed_text(["warm", "bright"], template="the sound of a {}")
    assert text.shape == (2, 384)
    assert tiny.similarity(pooled, text).shape == (2,)


def test_determinism_and_batch_independence(tiny):
    notes = _notes(5)
    x = torch.from_numpy(np.stack(notes))
    with torch.no_grad():
        alone = torch.cat([tiny.encode_waveforms(x[i:i + 1]) for i in range(5)])
        together = tiny.encode_waveforms(x)
        shuffled = tiny.encode_waveforms(x[[4, 2, 0, 3, 1]])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shuffled, alone[[4, 2, 0, 3, 1]], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(tiny.embed_audio(notes[0], 16000), tiny.embed_audio(notes[0], 16000))


def test_front_end_normalises_per_clip():
    fe = FrontEnd(FrontEndConfig())
    quiet, loud = _notes(2)
    x = torch.from_numpy(np.stack([quiet * 0.01, loud]))
    f = fe(x)
    assert f.shape == (2, 1, 64, 251)
    torch.testing.assert_close(f[0], fe(x[:1])[0])  # batch-mates do not change a clip's features
    torch.testing.assert_close(f.mean(dim=(-2, -1)).squeeze(), torch.zeros(2), atol=1e-4, rtol=0)
    lin = FrontEnd(FrontEndConfig.wav2clip())(x)
    assert lin.shape[2] == 257


def test_checkpoint_round_trip_is_bit_exact(tiny, minilm, tmp_path):
    with torch.no_grad():
        tiny.text.head.weight.add_(0.01 * torch.randn_like(tiny.text.head.weight))
    tiny.save(tmp_path / "m", extra_provenance={"note": "test"})
    again = TimbreCLIP.load(tmp_path / "m", text_encoder=minilm)
    note = _notes(1)[0]
    np.testing.assert_array_equal(again.embed_audio(note, 16000), tiny.embed_audio(note, 16000))
    np.testing.assert_array_equal(again.embed_text(["pad"]), tiny.embed_text(["pad"]))
    assert json.loads((tmp_path / "m" / "config.json").read_text())["provenance"]["note"] == "test"
    import hashlib

    weights = (tmp_path / "m" / "model.safetensors").read_bytes()
    assert again.fingerprint() == hashlib.sha256(weights).hexdigest()  # the weights file's hash
    unsaved = TimbreCLIP.load(tmp_path / "m")
    unsaved.source_path = None
    before = unsaved.fingerprint()  # hash of the weights themselves
    with torch.no_grad():
        next(unsaved.audio.parameters()).add_(1.0)
    assert unsaved.fingerprint() != before


def test_text_encoder_is_frozen(tiny):
    assert all(not p.requires_grad for p in tiny.text.frozen.parameters())
    names = [n for n, p in tiny.named_parameters() if p.requires_grad]
    assert not any("frozen" in n or "transformer" in n for n in names)
    loss = tiny.encode_text(["airy pad"]).sum()
    loss.backward()
    assert tiny.text.head.weight.grad is not None
    tiny.zero_grad()


def test_empty_prompts_are_refused(tiny):
    for bad in (["warm", ""], ["   "], [""]):
        with pytest.raises(PromptError, match="empty"):
            tiny.embed_text(bad)


def test_bad_audio_is_refused(tiny):
    with pytest.raises(ValueError, match="empty"):
        tiny.embed_audio(np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match="NaN"):
        tiny.embed_audio(np.full(1000, np.nan, np.float32), 16000)
    with pytest.raises(ValueError, match="shape"):
        prepare_audio(np.zeros((2, 2, 2)), 16000, FrontEndConfig())


def _wav2clip_fixture(path):
    """A Lightning-style checkpoint with exactly Wav2CLIP's keys and shapes (random values)."""
    from timbreclip.neural.encoder import ResNet18

    resnet = ResNet18(64)
    state = {f"audio_encoder.{k}": torch.randn_like(v) if v.dtype.is_floating_point else v
             for k, v in resnet.state_dict().items()}
    state["audio_encoder.fc.weight"] = torch.randn(527, 512)
    state["audio_encoder.fc.bias"] = torch.randn(527)
    state["audio_encoder.spectrogram.window"] = torch.hann_window(512)
    state["audio_transform.sequential.0.weight"] = torch.randn(512, 512)
    state["audio_transform.sequential.0.bias"] = torch.randn(512)
    state["audio_transform.sequential.3.weight"] = torch.randn(512, 512)
    state["audio_transform.sequential.3.bias"] = torch.randn(512)
    state["fc.weight"] = torch.randn(512, 512)
    state["fc.bias"] = torch.randn(512)
    torch.save({"state_dict": state, "epoch": 3, "hyper_parameters": {"lr": 1e-3}}, path)
    return state


def test_wav2clip_import(minilm, tmp_path):
    state = _wav2clip_fixture(tmp_path / "Wav2CLIP.pt")
    model = TimbreCLIP(ModelConfig(FrontEndConfig.wav2clip(), AudioEncoderConfig(width=64)), text_encoder=minilm)
    model.load_wav2clip(tmp_path / "Wav2CLIP.pt")
    torch.testing.assert_close(model.audio.resnet.layer3[0].downsample[0].weight,
                               state["audio_encoder.layer3.0.downsample.0.weight"])
    torch.testing.assert_close(model.audio.transform.sequential[3].weight, state["audio_transform.sequential.3.weight"])
    slim = TimbreCLIP(ModelConfig(audio=AudioEncoderConfig(width=32)), text_encoder=minilm)
    with pytest.raises(CheckpointError, match="width 32"):
        slim.load_wav2clip(tmp_path / "Wav2CLIP.pt")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_malicious_pickle_is_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": _Exploit()}))
    with pytest.raises(CheckpointError, match="refused to load"):
        load_foreign_state_dict(evil)
    assert not (tmp_path / "pwned-by-pickle").exists()
    # a model directory holding only a pickle is refused, not unpickled
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.pt").write_bytes(evil.read_bytes())
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        TimbreCLIP.load(tmp_path / "m")
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_open_clip_text_tower_from_local_files(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    from timbreclip.neural.text import OpenCLIPTextEncoder

    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    cfg_path = tmp_path / "tiny-clip-test.json"
    cfg_path.write_text(json.dumps(cfg))
    open_clip.add_model_config(str(cfg_path))
    torch.manual_seed(0)
    reference = open_clip.create_model("tiny-clip-test")
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    enc = OpenCLIPTextEncoder(str(cfg_path), str(weights))
    assert enc.dim == 32
    tokens = enc.tokenize(["a bright bell", "a dark drone"])
    z = enc(**tokens)
    want = torch.nn.functional.normalize(reference.encode_text(tokens["input_ids"]), dim=-1)
    torch.testing.assert_close(z, want)
    model = TimbreCLIP(ModelConfig(audio=AudioEncoderConfig(width=8, embed_dim=32),
                                   text=TextBackendConfig("clip", str(cfg_path), str(weights), 32)))
    assert model.embed_text(["bell"]).shape == (1, 32)
    model.save(tmp_path / "clipmodel")
    assert TimbreCLIP.load(tmp_path / "clipmodel").embed_text(["bell"]).shape == (1, 32)


def test_embed_and_similarity_cli(tiny, tmp_path, capsys):
    tiny.save(tmp_path / "m")
    note = tmp_path / "note.wav"
    write_audio(note, _notes(1, seconds=2.0, rate=22050)[0], 22050)
    assert main(["embed", "--text", "warm pad", "--text", "bright lead", "--json", "--model", str(tmp_path / "m")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["input"] for o in out] == ["warm pad", "bright lead"] and len(out[0]["embedding"]) == 384
    assert main(["embed", str(note), "--json", "--model", str(tmp_path / "m")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["input"] == str(note)
    np.testing.assert_allclose(out[0]["embedding"], tiny.embed_audio(_notes(1, 2.0, 22050)[0], 22050), atol=2e-6)
    assert main(["similarity", str(note), "--text", "bright", "--text", "dark", "--json",
                 "--model", str(tmp_path / "m")]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert [s["text"] for s in scores] == ["bright", "dark"] and all(-1 <= s["similarity"] <= 1 for s in scores)
    assert main(["embed", "--text", "  ", "--model", str(tmp_path / "m")]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["embed", "--text", "x", "--model", str(tmp_path / "nope")]) == 2
    assert "no such model directory" in capsys.readouterr().err
