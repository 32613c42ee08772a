"""``TimbreCLIP``: one object for the joint space of sounds and phrases, and its safe checkpoints.

A model is a directory: ``model.safetensors`` (audio encoder, text head, temperature) + ``config.json`` (front end,
audio encoder, text backend, provenance). The frozen text encoder's weights are not in it; the config names them.
Loading never unpickles: a ``.pt``/``.ckpt`` from elsewhere goes through ``torch.load(weights_only=True)`` (see
``load_foreign_state_dict``), which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from timbreclip.dsp.errors import TimbreclipError

from .encoder import AudioEncoder, AudioEncoderConfig, wav2clip_state_dict_to_ours
from .frontend import FrontEnd, FrontEndConfig, prepare_audio
from .text import TextBackendConfig, TextTower, check_prompts

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(TimbreclipError):
    """A model directory or weights file that cannot be loaded safely."""


@dataclass
class ModelConfig:
    frontend: FrontEndConfig = field(default_factory=FrontEndConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    text: TextBackendConfig = field(default_factory=TextBackendConfig)
    init_temperature: float = 0.07
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"frontend": self.frontend.as_dict(), "audio": self.audio.as_dict(), "text": self.text.as_dict(),
                "init_temperature": self.init_temperature, "provenance": self.provenance}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        return cls(FrontEndConfig(**data.get("frontend", {})), AudioEncoderConfig(**data.get("audio", {})),
                   TextBackendConfig(**data.get("text", {})), data.get("init_temperature", 0.07),
                   data.get("provenance", {}))

    @classmethod
    def preset(cls, name: str) -> "ModelConfig":
        """``cpu`` (width 32, 64 mels: the default), ``paper`` (Wav2CLIP: width 64, linear STFT front end, 512-d
        CLIP space), ``gpu`` (width 64, 32 kHz mel front end: hears up to 16 kHz)."""
        if name == "cpu":
            return cls()
        if name == "paper":
            return cls(FrontEndConfig.wav2clip(), AudioEncoderConfig(width=64, embed_dim=512),
                       TextBackendConfig(kind="clip", name="ViT-B-32", weights="openai", dim=512))
        if name == "gpu":
            return cls(FrontEndConfig(sample_rate=32000, n_fft=2048, hop=512, n_mels=128),
                       AudioEncoderConfig(width=64))
        raise ValueError(f"unknown model preset {name!r} (cpu, paper, gpu)")


def resolve_device(name: str | None) -> torch.device:
    """``auto`` (CUDA where there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; one clear error otherwise."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TimbreclipError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise TimbreclipError(f"--device {name}: not a device (cpu, cuda, cuda:N or auto)") from None


class TimbreCLIP(nn.Module):
    """Audio and text towers in one space.

    ``embed_audio(audio, sample_rate)`` -> ``(dim,)`` (or ``(windows, dim)`` with ``per_window=True``);
    ``embed_text(texts)`` -> ``(N, dim)``; ``similarity(a, b)`` -> cosine matrix. Outputs are L2-normalised numpy
    float32 arrays. Implements the embedder interface (``neural.embedder.Embedder``).
    """

    name = "torch"

    def __init__(self, config: ModelConfig, text_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.frontend = FrontEnd(config.frontend)
        self.audio = AudioEncoder(config.audio)
        self.text = TextTower(config.text, text_encoder)
        if config.audio.embed_dim != config.text.dim:
            raise ValueError(f"audio embed_dim {config.audio.embed_dim} != text dim {config.text.dim}")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))
        self.source_path: str | None = None

    @property
    def dim(self) -> int:
        return self.config.text.dim

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    # -- towers on tensors (training, steering) --------------------------------------------------------------
    def encode_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.audio(features)

    def encode_waveforms(self, windows: torch.Tensor) -> torch.Tensor:
        """``(batch, window_samples)`` at the model's rate -> ``(batch, dim)``; differentiable."""
        return self.audio(self.frontend(windows))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return self.text(texts)

    # -- the embedder interface --------------------------------------------------------------------------------
    @torch.no_grad()
    def embed_audio(self, audio, sample_rate: float, per_window: bool = False, batch_size: int = 32) -> np.ndarray:
        """Embed audio of any rate, channel count and length (see ``prepare_audio``); windows are mean-pooled
        and renormalised unless ``per_window``."""
        self.eval()
        windows = torch.from_numpy(prepare_audio(audio, sample_rate, self.config.frontend)).to(self.device)
        z = torch.cat([self.encode_waveforms(windows[i:i + batch_size]) for i in range(0, len(windows), batch_size)])
        if not per_window:
            z = F.normalize(z.mean(0), dim=-1)
        return z.float().cpu().numpy()

    @torch.no_grad()
    def embed_text(self, texts: list[str] | str, template: str | None = None) -> np.ndarray:
        self.eval()
        return self.encode_text(check_prompts(texts, template)).float().cpu().numpy()

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity of normalised embeddings: ``(..., dim) x (M, dim)`` -> ``(..., M)``."""
        return np.asarray(a) @ np.asarray(b).T

    # -- checkpoints -------------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike, extra_provenance: dict | None = None) -> Path:
        from safetensors.torch import save_file

        out = Path(directory)
        if out.exists() and not out.is_dir():
            raise CheckpointError(f"{directory}: exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
        if extra_provenance:
            self.config.provenance.update(extra_provenance)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp = out / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
        save_file(tensors, str(tmp), metadata={"format": "timbreclip"})
        os.replace(tmp, out / WEIGHTS_FILE)
        tmp = out / f".{CONFIG_FILE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        os.replace(tmp, out / CONFIG_FILE)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike, text_encoder: nn.Module | None = None,
             map_location: str = "cpu") -> "TimbreCLIP":
        """Load a model directory (or its ``model.safetensors``); never executes pickled code."""
        from safetensors.torch import load_file

        p = Path(path)
        directory = p.parent if p.is_file() else p
        if not directory.is_dir():
            raise CheckpointError(f"{path}: no such model directory")
        weights = directory / WEIGHTS_FILE
        config_path = directory / CONFIG_FILE
        for needed in (weights, config_path):
            if not needed.is_file():
                pickles = [f.name for f in directory.glob("*") if f.suffix in (".pt", ".pth", ".ckpt", ".bin")]
                hint = f" ({', '.join(pickles)} found: import it with --init wav2clip FILE)" if pickles else ""
                raise CheckpointError(f"{directory}: missing {needed.name}{hint}")
        try:
            config = ModelConfig.from_dict(json.loads(config_path.read_text()))
        except (json.JSONDecodeError, TypeError) as err:
            raise CheckpointError(f"{config_path}: malformed model config ({err})") from None
        model = cls(config, text_encoder)
        try:
            state = load_file(str(weights), device=map_location)
        except Exception as err:
            raise CheckpointError(f"{weights}: not a valid safetensors file ({str(err).splitlines()[0]})") from None
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{weights}: weights do not match the config (missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]})")
        model.source_path = str(directory)
        model.eval()
        return model

    def fingerprint(self) -> str:
        """sha256 of the weights file this model was loaded from (or of its current weights)."""
        if self.source_path and (Path(self.source_path) / WEIGHTS_FILE).is_file():
            return file_sha256(Path(self.source_path) / WEIGHTS_FILE)
        h = hashlib.sha256()
        for k, v in sorted(self.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
        return h.hexdigest()

    def load_wav2clip(self, path: str | os.PathLike) -> None:
        """Initialise the audio encoder from a released Wav2CLIP checkpoint (read without executing pickles)."""
        state = load_foreign_state_dict(path)
        mapped = wav2clip_state_dict_to_ours(state.get("state_dict", state))
        problem = ""
        try:
            missing, unexpected = self.audio.load_state_dict(mapped, strict=False)
            bad = [k for k in missing if not k.startswith("projection.")]
            if bad or unexpected:
                problem = f"missing {bad[:3]}, unexpected {unexpected[:3]}"
        except RuntimeError as err:
            problem = [line.strip() for line in str(err).splitlines() if "size mismatch" in line][:1]
            problem = problem[0] if problem else "shapes differ"
        if problem:
            raise CheckpointError(f"{path}: Wav2CLIP weights do not fit this encoder (width "
                                  f"{self.config.audio.width}; the paper's is 64): {problem}")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_foreign_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``.pt``/``.ckpt``/``.safetensors`` file from elsewhere without executing code.

    safetensors files are read directly; pickles only through ``torch.load(weights_only=True)``, whose restricted
    unpickler admits tensors and plain containers and refuses everything else (a file that tries to run code
    raises, it is never run).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{path}: no such file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    try:
        return torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: refused to load (only tensors and plain containers are accepted; "
                              f"{first[:200]})") from None
