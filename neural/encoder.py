"""The audio encoder: Wav2CLIP's ResNet-18 over a spectrogram image, then a projection into the text space.

Wav2CLIP (Wu et al., 2022) uses a 2-D ResNet-18 (BasicBlock, [2, 2, 2, 2], width 64, one input channel) averaged
over time and frequency to 512-d, then an MLP head (``audio_transform``: 512 -> 512 -> 512). We keep its layer names
(``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``downsample.0``) so that its released weights map onto ours by
stripping a prefix. ``width`` scales every layer (64 is the paper's; 32 is the CPU default, about 3.2M parameters).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


@dataclass(frozen=True)
class AudioEncoderConfig:
    """``width``: channels of the first stage (the ResNet has width, 2w, 4w, 8w); ``head``: "mlp" (Wav2CLIP's
    audio_transform: Linear-ReLU-Dropout-Linear at 8w) or "none"; ``embed_dim``: the shared space (the text tower's
    dimension); ``dropout``: of the head."""

    width: int = 32
    head: str = "mlp"
    embed_dim: int = 384
    dropout: float = 0.1

    def as_dict(self) -> dict:
        return asdict(self)


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class ResNet18(nn.Module):
    """``(batch, 1, F, T)`` -> ``(batch, 8 x width)``, pooled over frequency and time."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans = [width, 2 * width, 4 * width, 8 * width]
        inplanes = width
        for i, planes in enumerate(chans):
            stride = 1 if i == 0 else 2
            layer = nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes))
            setattr(self, f"layer{i + 1}", layer)
            inplanes = planes
        self.out_dim = chans[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(-2, -1))


class MLPHead(nn.Module):
    """Wav2CLIP's ``audio_transform``: Linear - ReLU - Dropout - Linear (keys ``sequential.0``, ``sequential.3``)."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.sequential = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sequential(x)


class AudioEncoder(nn.Module):
    """Features ``(batch, 1, F, T)`` -> L2-normalised embeddings ``(batch, embed_dim)``."""

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.resnet = ResNet18(config.width)
        dim = self.resnet.out_dim
        self.transform = MLPHead(dim, config.dropout) if config.head == "mlp" else nn.Identity()
        self.projection = nn.Linear(dim, config.embed_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = self.projection(self.transform(self.resnet(features)))
        return F.normalize(z, dim=-1)

    def fused_for_inference(self) -> "AudioEncoder":
        """A frozen eval-mode copy with every BatchNorm folded into the convolution before it: the same function
        (to float rounding) at about three quarters of the cost, forward and backward. For loops that
        differentiate through a fixed encoder (text-steered EQ); training keeps the unfused module."""
        fused = copy.deepcopy(self).eval()
        for module in list(fused.resnet.modules()):
            for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2")):
                conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                    setattr(module, bn_name, nn.Identity())
            down = getattr(module, "downsample", None)
            if isinstance(down, nn.Sequential) and len(down) == 2 and isinstance(down[1], nn.BatchNorm2d):
                module.downsample = nn.Sequential(fuse_conv_bn_eval(down[0], down[1]))
        for p in fused.parameters():
            p.requires_grad_(False)
        return fused


def wav2clip_state_dict_to_ours(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a Wav2CLIP Lightning state dict onto ``AudioEncoder`` keys.

    ``audio_encoder.<resnet key>`` -> ``resnet.<key>`` (its unused ``fc`` classifier and the spectrogram's window
    buffer are dropped), ``audio_transform.<key>`` -> ``transform.<key>``. The Lightning module's top-level ``fc.*``
    (its projection for the image tower) is not part of the audio encoder and is left out; our ``projection`` into
    the text space starts fresh, as the paper's fine-tuning did.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith("audio_encoder."):
            rest = key[len("audio_encoder."):]
            if rest.startswith(("fc.", "fc_.", "spectrogram.", "avgpool.")):
                continue
            out["resnet." + rest] = value
        elif key.startswith("audio_transform."):
            out["transform." + key[len("audio_transform."):]] = value
    if not any(k.startswith("resnet.") for k in out):
        raise ValueError("no 'audio_encoder.*' weights found: not a Wav2CLIP checkpoint")
    return out
