"""ONNX export and runtime backends: parity with torch, manifests, TensorRT (skipped without it)."""

import json

import numpy as np
import pytest
import torch

from timbreclip.cli import main
from timbreclip.export.backends import OnnxRuntimeEmbedder, load_backend, tensorrt_available
from timbreclip.export.onnx_export import ExportError, export_onnx, read_manifest
from timbreclip.neural.encoder import AudioEncoderConfig
from timbreclip.neural.model import ModelConfig, TimbreCLIP
from timbreclip.neural.text import MiniLMEncoder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = TimbreCLIP(ModelConfig(audio=AudioEncoderConfig(width=16)), text_encoder=MiniLMEncoder())
    with torch.no_grad():
        model.text.head.weight.add_(0.05 * torch.randn_like(model.text.head.weight))
    model.save(tmp / "model")
    model = TimbreCLIP.load(tmp / "model", text_encoder=model.text.frozen)
    manifest = export_onnx(model, tmp / "onnx")
    return model, tmp


def test_onnxruntime_parity_100_clips_100_prompts(exported):
    model, tmp = exported
    ort = OnnxRuntimeEmbedder(model, folder=tmp / "onnx")
    rng = np.random.default_rng(0)
    t = np.arange(64000) / 16000
    clips = np.stack([(np.sin(2 * np.pi * rng.uniform(50, 2000) * t) * np.exp(-t * rng.uniform(0, 3))
                       + 0.05 * rng.standard_normal(64000)).astype(np.float32) for _ in range(100)])
    a = np.concatenate([ort.embed_windows(clips[i:i + 25]) for i in range(0, 100, 25)])
    with torch.no_grad():
        b = model.encode_waveforms(torch.from_numpy(clips)).numpy()
    assert (a * b).sum(1).min() >= 0.9999
    prompts = [f"{w} {c}" for w in ("warm", "bright", "dark", "airy", "soft", "harsh", "metallic", "hollow", "thin",
                                    "fat") for c in ("pad", "lead", "bass", "bell", "organ", "piano", "pluck",
                                                     "strings", "brass", "choir")]
    ta, tb = ort.embed_text(prompts), model.embed_text(prompts)
    assert len(prompts) == 100 and (ta * tb).sum(1).min() >= 0.9999


def test_waveform_graph_has_dynamic_batch(exported):
    import onnxruntime as ort

    model, tmp = exported
    manifest = read_manifest(tmp / "onnx")
    if "skipped" in manifest["files"]["audio_waveform.onnx"]:
        pytest.skip(manifest["files"]["audio_waveform.onnx"]["skipped"])
    session = ort.InferenceSession(str(tmp / "onnx" / "audio_waveform.onnx"), providers=["CPUExecutionProvider"])
    x = (np.random.default_rng(1).standard_normal((3, 64000)) * 0.1).astype(np.float32)
    z = session.run(["embedding"], {"waveform": x})[0]
    with torch.no_grad():
        want = model.encode_waveforms(torch.from_numpy(x)).numpy()
    assert z.shape == (3, model.dim) and (z * want).sum(1).min() >= 0.9999


def test_manifest_records_and_verifies(exported, tmp_path):
    model, tmp = exported
    manifest = json.loads((tmp / "onnx" / "manifest.json").read_text())
    assert manifest["source_checkpoint_sha256"] == model.fingerprint()
    assert manifest["model_config"]["frontend"]["n_mels"] == 64 and manifest["opset"] >= 17
    assert manifest["files"]["audio.onnx"]["inputs"]["features"][0] == "batch"
    other = TimbreCLIP(ModelConfig(audio=AudioEncoderConfig(width=16)), text_encoder=model.text.frozen)
    other.save(tmp_path / "other")
    other = TimbreCLIP.load(tmp_path / "other", text_encoder=model.text.frozen)
    with pytest.raises(ExportError, match="exported from another checkpoint"):
        OnnxRuntimeEmbedder(other, folder=tmp / "onnx")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tmp / "onnx", broken)
    (broken / "audio.onnx").write_bytes((broken / "audio.onnx").read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ExportError, match="does not match its manifest"):
        read_manifest(broken)


def test_export_cli_and_backend_flag(exported, tmp_path, capsys, monkeypatch):
    model, tmp = exported
    monkeypatch.setenv("TIMBRECLIP_CACHE", str(tmp_path / "cache"))
    assert main(["export", "--model", str(tmp / "model"), "--out", str(tmp_path / "e"), "--format", "onnx"]) == 0
    assert (tmp_path / "e" / "manifest.json").exists()
    (tmp_path / "afile").write_text("x")
    assert main(["export", "--model", str(tmp / "model"), "--out", str(tmp_path / "afile")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["export", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "e2")]) == 2
    assert "no such model directory" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["embed", "--text", "warm pad", "--model", str(tmp / "model"), "--backend", "onnxruntime"]) == 0
    z_ort = json.loads(capsys.readouterr().out)[0]["embedding"]
    np.testing.assert_allclose(z_ort, model.embed_text(["warm pad"])[0], atol=1e-4)
    assert main(["embed", "--text", "warm pad", "--model", str(tmp / "model"), "--backend", "auto"]) == 0
    assert "backend auto -> onnxruntime-cpu" in capsys.readouterr().err


def test_tensorrt_backend():
    ok, why = tensorrt_available()
    if not ok:
        pytest.skip(why)
    model = TimbreCLIP(ModelConfig(audio=AudioEncoderConfig(width=16)))
    trt = load_backend(model, "tensorrt")
    x = np.random.default_rng(0).standard_normal((4, 64000)).astype(np.float32) * 0.1
    with torch.no_grad():
        want = model.encode_waveforms(torch.from_numpy(x)).numpy()
    assert (trt.embed_windows(x) * want).sum(1).min() >= 0.9999
