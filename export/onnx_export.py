"""Export TimbreCLIP's towers to ONNX, with a manifest that ties the files to their source checkpoint.

Files written into the export folder:
- ``audio.onnx``: log-mel features ``(batch, 1, n_features, frames)`` -> ``embedding (batch, dim)``; the front end
  stays outside the graph (it is cheap and numpy/torch-exact on the host); batch and frames dynamic.
- ``audio_waveform.onnx``: waveform ``(batch, window_samples)`` at the model's rate -> ``embedding``, the front end
  (STFT, mel, log, per-clip standardisation) inside the graph (dynamo exporter); batch dynamic.
- ``text.onnx``: ``input_ids``, ``attention_mask`` ``(batch, tokens)`` -> ``embedding (batch, dim)``: the frozen
  transformer, its pooling and our head; the tokenizer stays in Python.
- ``manifest.json``: model config, input/output names and shapes, opset, the source checkpoint's sha256 and every
  file's sha256 (a loader refuses files that do not match).

Every export uses an example batch of 2, so the batch dimension is not silently fixed to 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from timbreclip.dsp.cache import user_cache_dir
from timbreclip.dsp.errors import TimbreclipError
from timbreclip.neural.model import TimbreCLIP, file_sha256

OPSET = 18
MANIFEST = "manifest.json"


class ExportError(TimbreclipError):
    """An export that cannot be written or loaded."""


class _TextGraph(nn.Module):
    def __init__(self, model: TimbreCLIP) -> None:
        super().__init__()
        self.frozen = model.text.frozen
        self.head = model.text.head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.frozen(input_ids, attention_mask)), dim=-1)


class _WaveformGraph(nn.Module):
    def __init__(self, model: TimbreCLIP) -> None:
        super().__init__()
        self.frontend = model.frontend
        self.audio = model.audio

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.audio(self.frontend(waveform))


def model_hash(model: TimbreCLIP) -> str:
    return model.fingerprint()


def export_onnx(model: TimbreCLIP, out_dir: str | os.PathLike, waveform_graph: bool = True,
                fp16: bool = False) -> Path:
    """Write the ONNX files and manifest for ``model`` into ``out_dir``; returns the manifest path."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out_dir}: output folder is a file")
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    fe = model.config.frontend
    files: dict[str, dict] = {}
    features = torch.randn(2, 1, fe.n_features, fe.n_frames())
    # exporters print progress on stdout: keep stdout for the commands' own output (JSON, tables)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        torch.onnx.export(model.audio, (features,), str(out / "audio.onnx"), input_names=["features"],
                          output_names=["embedding"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"features": {0: "batch", 3: "frames"}, "embedding": {0: "batch"}})
        files["audio.onnx"] = {"inputs": {"features": ["batch", 1, fe.n_features, "frames"]},
                               "outputs": {"embedding": ["batch", model.dim]}}
        tokens = model.text.frozen.tokenize(["a warm analog pad", "bright bell"])
        args = (tokens["input_ids"], tokens.get("attention_mask", torch.ones_like(tokens["input_ids"])))
        torch.onnx.export(_TextGraph(model), args, str(out / "text.onnx"), input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}})
        files["text.onnx"] = {"inputs": {"input_ids": ["batch", "tokens"], "attention_mask": ["batch", "tokens"]},
                              "outputs": {"embedding": ["batch", model.dim]}}
        if waveform_graph:
            try:
                wave = torch.randn(2, fe.window_samples)
                batch = torch.export.Dim("batch", min=1, max=4096)
                program = torch.onnx.export(_WaveformGraph(model), (wave,), dynamo=True, opset_version=OPSET,
                                            input_names=["waveform"], output_names=["embedding"],
                                            dynamic_shapes={"waveform": {0: batch}}, external_data=False)
                program.save(str(out / "audio_waveform.onnx"))
                files["audio_waveform.onnx"] = {"inputs": {"waveform": ["batch", fe.window_samples]},
                                                "outputs": {"embedding": ["batch", model.dim]}}
            except Exception as err:  # optional graph: say why it is missing, keep the primary export
                files["audio_waveform.onnx"] = {"skipped": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
    if fp16:
        _convert_fp16(out, files)
    for name, entry in files.items():
        if (out / name).is_file():
            entry["sha256"] = file_sha256(out / name)
    manifest = {
        "format": "timbreclip-onnx", "opset": OPSET, "fp16": fp16, "model_config": model.config.to_dict(),
        "source_checkpoint_sha256": model_hash(model), "source_path": model.source_path, "files": files,
    }
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _convert_fp16(out: Path, files: dict) -> None:
    """Store the graphs' weights in float16 (inputs and outputs stay float32)."""
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ExportError("--fp16 for onnx needs the package onnxconverter-common") from None
    import onnx

    for name in list(files):
        if (out / name).is_file():
            m = float16.convert_float_to_float16(onnx.load(str(out / name)), keep_io_types=True)
            onnx.save(m, str(out / name))


def read_manifest(folder: str | os.PathLike, expect_hash: str | None = None) -> dict:
    """Load and verify an export's manifest: every listed file present and matching its sha256, and (when given)
    the source checkpoint hash equal to ``expect_hash``."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ExportError(f"{folder}: no {MANIFEST} (not a timbreclip export)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ExportError(f"{path}: malformed JSON ({err.msg})") from None
    for name, entry in manifest.get("files", {}).items():
        if "sha256" not in entry:
            continue
        f = Path(folder) / name
        if not f.is_file():
            raise ExportError(f"{f}: listed in the manifest but missing")
        if file_sha256(f) != entry["sha256"]:
            raise ExportError(f"{f}: does not match its manifest (sha256 differs): re-export the model")
    if expect_hash and manifest.get("source_checkpoint_sha256") != expect_hash:
        raise ExportError(f"{path}: exported from another checkpoint (hash "
                          f"{str(manifest.get('source_checkpoint_sha256'))[:12]}, model {expect_hash[:12]})")
    return manifest


def export_cache_dir(model: TimbreCLIP, fmt: str) -> Path:
    return user_cache_dir("exports", model_hash(model)[:16], fmt)
