"""The embedder interface: what every backend (torch here; onnxruntime and TensorRT in ``export``) provides.

The CLI shell picks an implementation and passes it down; nothing below the shell imports ``export`` to find one.
Anything that needs gradients (the text-steered EQ) takes the torch ``TimbreCLIP`` itself.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Maps audio and text into one space; all outputs are L2-normalised float32 numpy arrays."""

    name: str  # backend name, e.g. "torch", "onnxruntime-cpu"

    @property
    def dim(self) -> int: ...

    def embed_audio(self, audio, sample_rate: float, per_window: bool = False) -> np.ndarray:
        """``(frames,)`` or ``(channels, frames)`` at any rate -> ``(dim,)`` pooled over 4 s windows, or
        ``(windows, dim)`` with ``per_window``."""
        ...

    def embed_text(self, texts: list[str] | str, template: str | None = None) -> np.ndarray:
        """Prompts -> ``(len(texts), dim)``; empty prompts raise ``PromptError``."""
        ...


def embed_windows(embedder, clips: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Embed 4 s clips ``(n, window_samples)`` at the model's rate, in batches, with a TimbreCLIP (torch) or any
    embedder offering ``embed_windows``; returns ``(n, dim)``."""
    if hasattr(embedder, "embed_windows"):
        return np.concatenate([embedder.embed_windows(clips[i:i + batch_size])
                               for i in range(0, len(clips), batch_size)])
    import torch

    embedder.eval()
    device = embedder.device
    with torch.no_grad():
        return np.concatenate([embedder.encode_waveforms(torch.from_numpy(clips[i:i + batch_size]).to(device))
                               .float().cpu().numpy() for i in range(0, len(clips), batch_size)])
