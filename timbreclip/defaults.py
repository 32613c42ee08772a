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


def load_torch_model(model: str | os.PathLike | None):
    """The TimbreCLIP torch model from ``model`` (a model directory) or the shipped default."""
    from timbreclip.neural.model import TimbreCLIP

    return TimbreCLIP.load(model if model else default_model_path())


def load_embedder(model: str | os.PathLike | None, backend: str = "torch"):
    """An ``Embedder`` for ``model`` on ``backend`` (torch; see ``export`` for the others)."""
    if backend == "torch":
        return load_torch_model(model)
    from timbreclip.export.backends import load_backend

    return load_backend(load_torch_model(model), backend)
