"""Defaults of the shell: where the shipped model lives, and how a command picks its model and backend."""

from __future__ import annotations

import os
from pathlib import Path

from timbreclip.dsp.errors import TimbreclipError

SHIPPED_MODEL_DIR = Path(__file__).parent / "model"


def default_model_path() -> Path:
    if not (SHIPPED_MODEL_DIR / "model.safetensors").is_file():
        raise TimbreclipError(f"no shipped model in {SHIPPED_MODEL_DIR}: pass --model DIR")
    return SHIPPED_MODEL_DIR


def load_torch_model(model: str | os.PathLike | None, device: str | None = None):
    """The TimbreCLIP torch model from ``model`` (a model directory) or the shipped default, on ``device`` (cpu,
    cuda, cuda:N or auto; default the CPU)."""
    from timbreclip.neural.model import TimbreCLIP, resolve_device

    dev = resolve_device(device or "cpu")  # checked before the model loads
    return TimbreCLIP.load(model if model else default_model_path()).to(dev)


def load_embedder(model: str | os.PathLike | None, backend: str = "torch", device: str | None = None):
    """An ``Embedder`` for ``model`` on ``backend`` (torch; see ``export`` for the others)."""
    if backend == "torch":
        return load_torch_model(model, device)
    from timbreclip.export.backends import load_backend

    return load_backend(load_torch_model(model), backend)
