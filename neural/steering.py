"""Text-steered EQ: tune a differentiable ParametricEQ so the sound's embedding moves toward words.

The paper's method (Jonason & Sturm): z_target = normalise(a_src z_source + sum_i a_i z_prompt_i); minimise the cosine
distance between embed(EQ(source)) and z_target by gradient descent on the EQ's parameters (paper: 5,000 Adam steps
at lr 1e-2). Here the EQ acts on the STFT grid inside the encoder's front end (|H|^2 times the cached power
spectrogram), so a step costs one encoder forward and backward and no filtering.

Objective (the same in every mode)::

    loss = (1 - cos(z_eq, z_target)) + penalty * mean_b |gain_b| / 12 dB

The gain penalty (default 0.02; L1, so it favours few active bands) keeps the EQ gentle: without it most gains end at
their caps, a crude tilt. The fast default: Adam at lr 0.1 with cosine decay for at most 32 steps, exiting early
once the objective has not improved by 1e-4 over 8 steps. The model listens at its own rate (16 kHz: nothing above
8 kHz), so the EQ's bands live below 0.45 x the model's rate and everything above stays flat.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from timbreclip.dsp.errors import TimbreclipError
from timbreclip.dsp.parametric_eq import BandRanges, ParametricEQ
from timbreclip.dsp.settings import EQSettings

from .frontend import prepare_audio
from .text import check_prompts


@dataclass(frozen=True)
class SteeringConfig:
    steps: int = 32
    lr: float = 0.1
    schedule: str = "cosine"  # "cosine" or "constant" (the paper's)
    early_exit: bool = True
    patience: int = 8
    tolerance: float = 1e-4
    penalty: float = 0.02
    max_gain_db: float = 12.0
    seed: int = 0

    @classmethod
    def paper(cls, penalty: float = 0.02) -> "SteeringConfig":
        return cls(steps=5000, lr=1e-2, schedule="constant", early_exit=False, penalty=penalty)


@dataclass
class SteeringResult:
    eq: ParametricEQ
    objective_before: float
    objective_after: float
    distance_before: float  # cosine distance to the target, penalty left out
    distance_after: float
    steps: int
    seconds: float

    @property
    def improvement(self) -> float:
        return self.distance_before - self.distance_after


def check_weights(prompts: dict[str, float], source_weight: float) -> None:
    check_prompts(list(prompts))
    if any(w < 0 for w in prompts.values()) or source_weight < 0:
        raise TimbreclipError("weights must be >= 0 (use an opposite word instead of a negative weight)")
    if not any(w > 0 for w in prompts.values()):
        raise TimbreclipError("every prompt weight is 0: give at least one prompt a positive weight")


def steer(model, windows: torch.Tensor, prompts: dict[str, float], source_weight: float = 0.5,
          config: SteeringConfig = SteeringConfig()) -> SteeringResult:
    """Fit an EQ to ``windows (n, samples)`` of mono audio at the model's rate (see module docstring)."""
    check_weights(prompts, source_weight)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    model.eval()
    fe = model.frontend
    fe_cfg = model.config.frontend
    with torch.no_grad():
        power = fe.power(windows)
        z_source = F.normalize(model.audio(fe.features_from_power(power)).mean(0), dim=-1)
        z_prompts = model.encode_text(list(prompts))
        weights = torch.tensor(list(prompts.values()), dtype=z_prompts.dtype)
        target = F.normalize(source_weight * z_source + (weights[:, None] * z_prompts).sum(0), dim=-1)
    eq = ParametricEQ(fe_cfg.sample_rate, ranges=BandRanges(gain_db=(-config.max_gain_db, config.max_gain_db)))
    for p in model.parameters():
        p.requires_grad_(False)

    def objective() -> tuple[torch.Tensor, torch.Tensor]:
        features = fe.features_from_power(eq.apply_to_power(power, fe_cfg.n_fft))
        z = F.normalize(model.audio(features).mean(0), dim=-1)
        distance = 1.0 - z @ target
        return distance + config.penalty * eq.gain_db.abs().mean() / 12.0, distance

    with torch.no_grad():
        obj0, dist0 = objective()
    opt = torch.optim.Adam(eq.parameters(), lr=config.lr)
    best, best_state, since, step = float(obj0), None, 0, 0
    for step in range(1, config.steps + 1):
        if config.schedule == "cosine":
            for g in opt.param_groups:
                g["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / config.steps))
        loss, _ = objective()
        opt.zero_grad()
        loss.backward()
        opt.step()
        value = float(loss.detach())
        if value < best - config.tolerance:
            best, since = value, 0
            best_state = {k: v.detach().clone() for k, v in eq.state_dict().items()}
        else:
            since += 1
        if config.early_exit and since >= config.patience:
            break
    with torch.no_grad():
        obj1, dist1 = objective()
        if best_state is not None and float(obj1) > best:  # the last step overshot: keep the best parameters
            eq.load_state_dict(best_state)
            obj1, dist1 = objective()
    for p in model.parameters():
        p.requires_grad_(True)
    return SteeringResult(eq, float(obj0), float(obj1), float(dist0), float(dist1), step,
                          time.perf_counter() - started)


class TextEQ:
    """A pedalboard-like plugin steered by words.

    ``TextEQ(prompts={"warm": 1.0}, model=model)``; ``fit(audio, sample_rate)`` returns ``EQSettings`` (physical
    bands recorded at the audio's rate); ``__call__(audio, sample_rate)`` fits on first use, then applies the EQ
    with the numba engine. Audio is ``(frames,)`` or ``(channels, frames)``.
    """

    def __init__(self, prompts: dict[str, float], model, source_weight: float = 0.5,
                 config: SteeringConfig = SteeringConfig(), max_seconds: float | None = 60.0) -> None:
        check_weights(prompts, source_weight)
        self.prompts = dict(prompts)
        self.model = model
        self.source_weight = source_weight
        self.config = config
        self.max_seconds = max_seconds
        self.settings: EQSettings | None = None
        self.result: SteeringResult | None = None

    def fit(self, audio, sample_rate: float) -> EQSettings:
        x = np.asarray(audio, np.float32)
        if self.max_seconds is not None:
            x = x[..., : int(self.max_seconds * sample_rate)]
        windows = torch.from_numpy(prepare_audio(x, sample_rate, self.model.config.frontend))
        self.result = steer(self.model, windows, self.prompts, self.source_weight, self.config)
        settings = self.result.eq.to_settings(float(sample_rate))
        settings.provenance = {
            "prompts": self.prompts, "source_weight": self.source_weight, "steering": asdict(self.config),
            "model": self.model.fingerprint() if hasattr(self.model, "fingerprint") else None,
            "cosine_distance": {"before": round(self.result.distance_before, 5),
                                "after": round(self.result.distance_after, 5)},
            "ranges": settings.provenance["ranges"] if settings.provenance else None,
        }
        self.settings = settings
        return settings

    def __call__(self, audio, sample_rate: float) -> np.ndarray:
        if self.settings is None:
            self.fit(audio, sample_rate)
        return self.settings(audio, sample_rate)
