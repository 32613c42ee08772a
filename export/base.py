"""What every exported backend shares: the on-demand ONNX export in the cache, and ``embed_audio`` built on
``embed_windows``. Its own module so that ``backends.py`` (which picks a backend, TensorRT included) and
``tensorrt.py`` (which needs these) do not import each other."""

from __future__ import annotations

import sys

import numpy as np

from timbreclip.neural.frontend import prepare_audio
from timbreclip.neural.model import TimbreCLIP

from .onnx_export import ExportError, export_cache_dir, export_onnx, read_manifest


def ensure_export(model: TimbreCLIP, fmt: str = "onnx"):
    """The verified ONNX export of ``model`` in the cache, built if missing or stale."""
    folder = export_cache_dir(model, fmt)
    try:
        return folder, read_manifest(folder, expect_hash=model.fingerprint())
    except ExportError:
        print(f"timbreclip: exporting the model to ONNX in {folder} (once per model)", file=sys.stderr)
        export_onnx(model, folder)
        return folder, read_manifest(folder, expect_hash=model.fingerprint())


class WindowEmbedder:
    """Shared by the exported backends: ``embed_audio`` from ``embed_windows`` (4 s windows at the model's rate)."""

    config = None
    max_batch = 32

    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def embed_audio(self, audio, sample_rate: float, per_window: bool = False) -> np.ndarray:
        windows = prepare_audio(audio, sample_rate, self.config.frontend)
        z = np.concatenate([self.embed_windows(windows[i:i + self.max_batch])
                            for i in range(0, len(windows), self.max_batch)])
        if per_window:
            return z
        pooled = z.mean(0)
        return pooled / np.linalg.norm(pooled)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(a) @ np.asarray(b).T
