"""Runtime backends implementing ``timbreclip.neural.embedder.Embedder``: onnxruntime (CPU, CUDA where present) and
TensorRT (``tensorrt.py``). Exports are built on demand into a user cache folder keyed by the model's hash.

``auto`` picks tensorrt > onnxruntime-cuda > onnxruntime-cpu > torch, by what is installed and works here.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from timbreclip.dsp.errors import TimbreclipError
from timbreclip.neural.frontend import FrontEnd
from timbreclip.neural.model import TimbreCLIP
from timbreclip.neural.text import check_prompts

from .base import WindowEmbedder, ensure_export
from .onnx_export import read_manifest


class OnnxRuntimeEmbedder(WindowEmbedder):
    """The embedder interface on onnxruntime; the front end runs in torch on the host (as in training)."""

    def __init__(self, model: TimbreCLIP, folder=None, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        if folder is None:
            folder, manifest = ensure_export(model)
        else:
            manifest = read_manifest(folder, expect_hash=model.fingerprint())
        self.manifest = manifest
        self.config = model.config
        self.frontend = FrontEnd(model.config.frontend).eval()
        self.tokenize = model.text.frozen.tokenize
        available = ort.get_available_providers()
        wanted = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.audio = ort.InferenceSession(str(folder / "audio.onnx"), opts, providers=wanted)
        self.text = ort.InferenceSession(str(folder / "text.onnx"), opts, providers=wanted)
        used = self.audio.get_providers()[0]
        self.name = "onnxruntime-cuda" if used == "CUDAExecutionProvider" else "onnxruntime-cpu"
        self._source = model

    @property
    def dim(self) -> int:
        return self._source.dim

    def fingerprint(self) -> str:
        return self._source.fingerprint() + "-" + self.name

    def embed_features(self, features: np.ndarray) -> np.ndarray:
        return self.audio.run(["embedding"], {"features": np.ascontiguousarray(features, np.float32)})[0]

    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            features = self.frontend(torch.from_numpy(np.ascontiguousarray(windows, np.float32))).numpy()
        return self.embed_features(features)

    def embed_text(self, texts, template: str | None = None) -> np.ndarray:
        texts = check_prompts(texts, template)
        tokens = self.tokenize(texts)
        feeds = {"input_ids": tokens["input_ids"].numpy().astype(np.int64)}
        mask = tokens.get("attention_mask")
        feeds["attention_mask"] = (mask if mask is not None else torch.ones_like(tokens["input_ids"])).numpy().astype(np.int64)
        names = {i.name for i in self.text.get_inputs()}
        return self.text.run(["embedding"], {k: v for k, v in feeds.items() if k in names})[0]


def tensorrt_available() -> tuple[bool, str]:
    """Whether the TensorRT backend can run here, and if not, why."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "TensorRT is not installed (pip install timbreclip[tensorrt] on a machine that reaches NVIDIA's index)"
    if not torch.cuda.is_available():
        return False, "TensorRT needs a CUDA GPU and none is available"
    return True, ""


def load_backend(model: TimbreCLIP, backend: str):
    """An embedder for ``backend``: torch, onnxruntime, tensorrt or auto (says which it picked on stderr)."""
    if backend == "torch":
        return model
    if backend == "onnxruntime":
        return OnnxRuntimeEmbedder(model)
    if backend == "tensorrt":
        ok, why = tensorrt_available()
        if not ok:
            raise TimbreclipError(f"--backend tensorrt: {why}")
        from .tensorrt import TensorRTEmbedder

        return TensorRTEmbedder(model)
    if backend == "auto":
        candidates = []
        if tensorrt_available()[0]:
            candidates.append("tensorrt")
        candidates += ["onnxruntime", "torch"]
        for name in candidates:
            try:
                embedder = load_backend(model, name)
            except Exception as err:  # try the next one, and say why this one did not work
                print(f"timbreclip: backend {name} unavailable ({str(err).splitlines()[0][:120]})", file=sys.stderr)
                continue
            print(f"timbreclip: backend auto -> {getattr(embedder, 'name', name)}", file=sys.stderr)
            return embedder
    raise TimbreclipError(f"unknown backend {backend!r} (torch, onnxruntime, tensorrt, auto)")
