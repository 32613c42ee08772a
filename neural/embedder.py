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
