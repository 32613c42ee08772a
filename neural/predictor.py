"""A one-pass steering predictor: (the source's embedding, the target embedding) -> EQ parameters (amortised steering).

Gradient descent costs hundreds of milliseconds per fit; a live EQ that follows the music wants an answer many times
a second. This small network answers in one forward pass. It is trained (``training/predictor.py``) on the
optimiser's own results over training notes and a vocabulary of steering words and word pairs, then on the steering
objective itself; it knows one model's embedding space only, so it is saved beside that model
(``steering_predictor.safetensors`` in the model folder) with the model's fingerprint, and refused with any other.

- Input: ``[z_source, z_target, z_target - z_source]`` (3 x 384 for the shipped text space), and where the config
  says so (``spectrum_bands`` > 0) the source's spectral profile: its mean power in log-spaced bands over
  30 Hz-7.2 kHz, in dB relative to its own mean (level-free), scaled by 1/20. The embedding says what the sound is;
  the profile says where its energy is, which is what an EQ acts on. Where ``sensitivity_bands`` > 0, also the
  steering objective's gradient at flat: how the cosine distance to the target changes with a dB offset in each
  log-spaced band over the same range (its direction, unit norm, and the log of its size), from one forward and one
  backward pass through the frozen encoder. It says which way this note, heard by this model, moves toward these
  words, which the embeddings alone leave the network to guess.
- Output: the steering EQ's unconstrained parameters ``(bands, 3)`` (frequency, gain and Q logits, the layout of
  ``ParametricEQ.from_raw``) as offsets from a flat EQ with the default band layout: a zero output is flat.
- A learned second step, where ``refine_hidden`` > 0: the steering objective is probed once at the first answer (one
  forward and one backward pass through the frozen encoder: the objective, the embedding of the EQ'd sound, and the
  gradient with respect to the EQ's parameters), and a second small network maps that probe, with the first
  network's hidden features, to a correction of the parameters. It is trained on the objective after the correction
  (``training/predictor.py``), so it learns where one look at the objective's slope should take the EQ: an
  amortised optimiser step, not Adam's fixed rule. Where ``refine_steps`` > 1, more learned steps follow, each
  after its own probe at the answer before it (own weights, the same inputs; ``train-predictor --add-step`` trains
  one more on top of a predictor): each costs one more forward and backward pass.
- Used alone (``eq --fast-predict``, the live loop's ``--fast-predict`` updates) or as the optimiser's starting point
  (``SteeringConfig(init="predict")``: the prediction, or flat where it scores worse, starts Adam).
"""

from __future__ import annotations

import json
import os
import weakref
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from timbreclip.dsp.errors import TimbreclipError
from timbreclip.dsp.parametric_eq import DEFAULT_BAND_TYPES, BandRanges, ParametricEQ

PREDICTOR_FILE = "steering_predictor.safetensors"


@dataclass(frozen=True)
class PredictorConfig:
    dim: int = 384
    hidden: int = 192
    bands: int = len(DEFAULT_BAND_TYPES)
    max_gain_db: float = 9.0  # the steering ranges it predicts in (saved with it: the defaults it was trained on)
    q_range: tuple[float, float] = (0.3, 2.0)
    model_fingerprint: str = ""  # the TimbreCLIP model whose space it learnt
    spectrum_bands: int = 0  # the source's spectral profile as input (0: embeddings only, the first predictor)
    sensitivity_bands: int = 0  # the objective's gradient at flat per log band as input (0: none)
    refine_hidden: int = 0  # width of the learned second step (0: one network, no probe of the objective)
    refine_steps: int = 1  # learned steps after the first answer, each after its own probe (with refine_hidden)


class SteeringPredictor(nn.Module):
    def __init__(self, config: PredictorConfig = PredictorConfig()) -> None:
        super().__init__()
        self.config = config
        inputs = 3 * config.dim + config.spectrum_bands + (config.sensitivity_bands + 1 if config.sensitivity_bands else 0)
        self.net = nn.Sequential(nn.Linear(inputs, config.hidden), nn.GELU(),
                                 nn.Linear(config.hidden, config.hidden), nn.GELU(),
                                 nn.Linear(config.hidden, 3 * config.bands))
        nn.init.zeros_(self.net[-1].weight)  # starts flat
        nn.init.zeros_(self.net[-1].bias)
        self.refiner = None
        self.later_refiners = nn.ModuleList()  # the learned steps after the second (own weights, the same shape)
        if config.refine_hidden:
            self.refiner = self._step_network()
            self.later_refiners.extend(self._step_network() for _ in range(config.refine_steps - 1))
        flat = ParametricEQ(16000.0, ranges=self.ranges())
        self.register_buffer("flat_raw", flat.raw().detach().clone())

    def _step_network(self) -> nn.Sequential:
        size = self.config.hidden + self.config.dim + 3 * self.config.bands + Probe.feature_count(self.config.bands)
        net = nn.Sequential(nn.Linear(size, self.config.refine_hidden), nn.GELU(),
                            nn.Linear(self.config.refine_hidden, self.config.refine_hidden), nn.GELU(),
                            nn.Linear(self.config.refine_hidden, 3 * self.config.bands))
        nn.init.zeros_(net[-1].weight)  # starts as the answer it is given
        nn.init.zeros_(net[-1].bias)
        return net

    def steps(self) -> list[nn.Sequential]:
        """The learned steps after the first answer, in order (none without a second step)."""
        return ([] if self.refiner is None else [self.refiner]) + list(self.later_refiners)

    def ranges(self) -> BandRanges:
        return BandRanges(gain_db=(-self.config.max_gain_db, self.config.max_gain_db), q=tuple(self.config.q_range))

    def forward(self, z_source: torch.Tensor, z_target: torch.Tensor, spectrum: torch.Tensor | None = None,
                sensitivity: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, dim)`` x 2 (and ``(B, spectrum_bands)``, see ``spectrum_profile``; ``(B, sensitivity_bands + 1)``,
        see ``steering_sensitivity``) -> raw EQ parameters ``(B, bands, 3)`` of the first network (no second step:
        see ``predict``)."""
        return self.first_pass(z_source, z_target, spectrum, sensitivity)[0]

    def first_pass(self, z_source: torch.Tensor, z_target: torch.Tensor, spectrum: torch.Tensor | None = None,
                   sensitivity: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first network: ``(raw (B, bands, 3), hidden features (B, hidden))`` (the second step reads both)."""
        parts = [z_source, z_target, z_target - z_source]
        for name, value, size in (("spectral profile", spectrum, self.config.spectrum_bands),
                                  ("steering sensitivity", sensitivity,
                                   self.config.sensitivity_bands + 1 if self.config.sensitivity_bands else 0)):
            if size:
                if value is None or value.shape[-1] != size:
                    raise TimbreclipError(f"this steering predictor needs the source's {name} ({size} values)")
                parts.append(value.to(z_source.dtype))
        hidden = self.net[:-1](torch.cat(parts, dim=-1))
        return self.flat_raw + self.net[-1](hidden).reshape(-1, self.config.bands, 3), hidden

    def refine(self, raw: torch.Tensor, hidden: torch.Tensor, z_target: torch.Tensor, probe: "Probe",
               step: int = 0) -> torch.Tensor:
        """A learned step: the answer ``raw`` corrected from the objective probed there (see ``probe``); ``step`` 0
        is the second step (on the first answer), 1 the third (on the second step's answer), and so on."""
        x = torch.cat([hidden, z_target - probe.z, (raw - self.flat_raw).flatten(1), probe.features()], dim=-1)
        return raw + self.steps()[step](x).reshape(-1, self.config.bands, 3)

    def predict(self, z_source: torch.Tensor, z_target: torch.Tensor, spectrum: torch.Tensor | None = None,
                sensitivity: torch.Tensor | None = None, objective=None, sample_rate: float = 16000.0,
                learned_steps: int | None = None) -> torch.Tensor:
        """Raw EQ parameters ``(B, bands, 3)``: the first network's answer, and where this predictor has learned
        steps, that answer corrected by each in turn (the first ``learned_steps`` of them where given) after its own
        probe of ``objective`` (a function of a batched ``ParametricEQ`` in this predictor's ranges at
        ``sample_rate`` -> ``(objective (B,), cosine distance (B,), normalised embedding (B, dim))``, as ``steer``
        builds it)."""
        raw, hidden = self.first_pass(z_source, z_target, spectrum, sensitivity)
        steps = len(self.steps()) if learned_steps is None else min(learned_steps, len(self.steps()))
        if not steps:
            return raw
        if objective is None:
            raise TimbreclipError("this steering predictor's second step needs the steering objective to probe")
        for step in range(steps):
            raw = self.refine(raw, hidden, z_target, probe(self, raw, objective, sample_rate), step)
        return raw

    def check_learned_steps(self, learned_steps: int | None, flag: str = "learned steps") -> None:
        """Refuse, with one line, a count of learned steps this predictor does not have."""
        if learned_steps is not None and not 0 <= learned_steps <= len(self.steps()):
            raise TimbreclipError(f"{flag} {learned_steps}: this steering predictor has 0 to {len(self.steps())} "
                                  "learned steps")

    def truncated(self, learned_steps: int) -> "SteeringPredictor":
        """A copy that stops after its first ``learned_steps`` learned steps (0: the first answer alone): fewer
        probes, a faster pass."""
        self.check_learned_steps(learned_steps)

        def kept(key: str) -> bool:
            if key.startswith("refiner."):
                return learned_steps >= 1
            if key.startswith("later_refiners."):
                return int(key.split(".")[1]) < learned_steps - 1
            return True

        out = SteeringPredictor(replace(self.config, refine_hidden=self.config.refine_hidden if learned_steps else 0,
                                        refine_steps=max(1, learned_steps)))
        out.load_state_dict({k: v for k, v in self.state_dict().items() if kept(k)})
        return out.to(self.flat_raw.device).eval()

    def eq(self, z_source: torch.Tensor, z_target: torch.Tensor, sample_rate: float,
           spectrum: torch.Tensor | None = None, sensitivity: torch.Tensor | None = None) -> ParametricEQ:
        """The predicted EQs as one batched ``ParametricEQ`` (differentiable in the network's weights)."""
        return ParametricEQ.from_raw(sample_rate, self(z_source, z_target, spectrum, sensitivity),
                                     DEFAULT_BAND_TYPES, self.ranges())

    def profile(self, power: torch.Tensor, sample_rate: float, n_fft: int) -> torch.Tensor | None:
        """The spectral profile this predictor takes, from a power spectrogram, or None if it takes none."""
        if not self.config.spectrum_bands:
            return None
        return spectrum_profile(power, sample_rate, n_fft, self.config.spectrum_bands)

    # -- files --------------------------------------------------------------------------------------------------
    def save(self, model_dir: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        path = Path(model_dir) / PREDICTOR_FILE
        tmp = path.with_suffix(".tmp")
        weights = {name for name, _ in self.named_parameters()}  # stored as float16 (half the file; read back as
        # float32, so a saved predictor answers the same after any number of saves); the buffers stay float32
        tensors = {k: (v.detach().half() if k in weights else v.detach()).cpu().contiguous()
                   for k, v in self.state_dict().items()}
        save_file(tensors, str(tmp), metadata={"config": json.dumps(asdict(self.config))})
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, model_dir: str | os.PathLike, model=None) -> "SteeringPredictor":
        """The predictor saved in ``model_dir``; with ``model``, refused unless it learnt that model's space."""
        from safetensors import safe_open

        path = Path(model_dir) / PREDICTOR_FILE
        if not path.is_file():
            raise TimbreclipError(f"{model_dir}: no steering predictor ({PREDICTOR_FILE}); train one with "
                                  "`timbreclip train-predictor`")
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["config"])
            state = {k: f.get_tensor(k) for k in f.keys()}
        unknown = sorted(set(meta) - set(PredictorConfig.__dataclass_fields__))
        if unknown:
            raise TimbreclipError(f"{path}: settings this version does not know ({', '.join(unknown)}): written by "
                                  "another version of timbreclip; retrain it with `timbreclip train-predictor`")
        config = PredictorConfig(**{**meta, "q_range": tuple(meta["q_range"])})  # older files: no sensitivity
        if model is not None and hasattr(model, "fingerprint") and config.model_fingerprint \
                and config.model_fingerprint != model.fingerprint():
            raise TimbreclipError(f"{path}: trained for another model (fingerprint {config.model_fingerprint[:12]}, "
                                  f"this model {model.fingerprint()[:12]}): retrain it for this model")
        predictor = cls(config)
        predictor.load_state_dict({k: v.float() for k, v in state.items()})  # float16 weights (newer files) too
        predictor.eval()
        return predictor


@dataclass
class Probe:
    """The steering objective looked at once, at EQ parameters ``raw (B, bands, 3)``: the normalised embedding of
    the EQ'd sound ``z (B, dim)``, the objective and the cosine distance ``(B,)``, and the objective's gradient with
    respect to ``raw`` ``(B, bands, 3)``."""

    z: torch.Tensor
    objective: torch.Tensor
    distance: torch.Tensor
    grad: torch.Tensor

    @staticmethod
    def feature_count(bands: int) -> int:
        return 3 * bands + 3

    def features(self) -> torch.Tensor:
        """``(B, 3 bands + 3)``: the gradient's direction (unit norm), the log of its size (as in
        ``steering_sensitivity``), the objective and the distance."""
        g = self.grad.flatten(1)
        size = g.norm(dim=-1, keepdim=True)
        return torch.cat([g / (size + 1e-12), torch.log10(size + 1e-12) / 3.0 + 1.0, self.objective[:, None],
                          self.distance[:, None]], dim=-1).to(self.z.dtype)

    def select(self, idx) -> "Probe":
        return Probe(self.z[idx], self.objective[idx], self.distance[idx], self.grad[idx])


def probe(predictor: SteeringPredictor, raw: torch.Tensor, objective, sample_rate: float) -> Probe:
    """One forward and one backward pass of ``objective`` (see ``SteeringPredictor.predict``) at ``raw``; nothing
    upstream of ``raw`` takes gradients."""
    at = raw.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        value, distance, z = objective(ParametricEQ.from_raw(sample_rate, at, DEFAULT_BAND_TYPES, predictor.ranges()))
        (grad,) = torch.autograd.grad(value.sum(), at)
    return Probe(z.detach(), value.detach(), distance.detach(), grad.detach())


PROFILE_LOW_HZ, PROFILE_HIGH_HZ = 30.0, 7200.0


def _band_matrix(sample_rate: float, n_fft: int, bands: int, device, dtype) -> torch.Tensor:
    """``(bands, n_fft // 2 + 1)``: averaging weights of the STFT bins in each log-spaced band (a band narrower
    than a bin takes the nearest bin)."""
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = np.geomspace(PROFILE_LOW_HZ, PROFILE_HIGH_HZ, bands + 1)
    m = np.zeros((bands, len(freqs)))
    for b in range(bands):
        inside = (freqs >= edges[b]) & (freqs < edges[b + 1])
        if not inside.any():
            inside = np.abs(freqs - np.sqrt(edges[b] * edges[b + 1])) == np.abs(
                freqs - np.sqrt(edges[b] * edges[b + 1])).min()
        m[b, inside] = 1.0 / inside.sum()
    return torch.as_tensor(m, device=device, dtype=dtype)


def spectrum_profile(power: torch.Tensor, sample_rate: float, n_fft: int, bands: int) -> torch.Tensor:
    """Power spectrogram ``(..., bins, frames)`` -> ``(..., bands)``: mean power per log-spaced band over
    30 Hz-7.2 kHz, in dB relative to the profile's own mean, divided by 20 (a level change does not move it)."""
    band_power = torch.einsum("kb,...bt->...k", _band_matrix(sample_rate, n_fft, bands, power.device, power.dtype),
                              power) / power.shape[-1]
    db = 10.0 * torch.log10(band_power + 1e-10)
    return (db - db.mean(-1, keepdim=True)) / 20.0


def steering_sensitivity(encoder, frontend, power: torch.Tensor, target, sample_rate: float, n_fft: int,
                         bands: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The steering objective's gradient at flat, per log-spaced band: ``power (B, n, bins, frames)`` (B fits of n
    windows each) and ``target`` (``(B, dim)``, or a function of the flat embeddings ``(B, dim)`` that returns it:
    the target is then built from this very forward pass) -> ``(sensitivity (B, bands + 1), z_source (B, dim),
    target (B, dim))``. The sensitivity is the gradient of the cosine distance between the windows' mean embedding
    and the target with respect to a dB offset in each band over 30 Hz-7.2 kHz, as a unit vector, then
    ``log10(|gradient|) / 3 + 1`` (its size; about 0.2 for the shipped model). One forward and one backward pass
    through ``encoder`` (frozen: only the offsets take gradients; the target is held fixed)."""
    mask = (_band_matrix(sample_rate, n_fft, bands, power.device, power.dtype) > 0).to(power.dtype)
    offset_db = torch.zeros(power.shape[0], bands, device=power.device, dtype=power.dtype, requires_grad=True)
    with torch.enable_grad():
        gain = 10.0 ** ((offset_db @ mask) / 10.0)  # (B, bins): each band's offset on its own bins
        powered = power * gain[:, None, :, None]
        z = encoder(frontend.features_from_power(powered.reshape(-1, *power.shape[2:])))
        z = F.normalize(z.reshape(power.shape[0], power.shape[1], -1).mean(1), dim=-1)
        z_source = z.detach()
        with torch.no_grad():
            target = (target(z_source) if callable(target) else target).to(z.dtype)
        distance = 1.0 - (z * target).sum(-1)
        (grad,) = torch.autograd.grad(distance.sum(), offset_db)
    size = grad.norm(dim=-1, keepdim=True)
    return torch.cat([grad / (size + 1e-12), torch.log10(size + 1e-12) / 3.0 + 1.0], dim=-1).detach(), z_source, target


_LOADED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def find_predictor(model) -> SteeringPredictor | None:
    """The predictor saved beside ``model`` (a TimbreCLIP loaded from a folder), or None; read from disk once per
    model (the live loop asks for it at every update)."""
    if model in _LOADED:
        return _LOADED[model]
    folder = getattr(model, "source_path", None)
    found = None
    if folder and (Path(folder) / PREDICTOR_FILE).is_file():
        found = SteeringPredictor.load(folder, model).to(next(model.parameters()).device)
    _LOADED[model] = found
    return found


def steering_embeddings(model, windows: torch.Tensor, prompts: dict[str, float], source_weight: float):
    """``(z_source, target)`` of a fit: the windows' mean embedding and the normalised weighted target."""
    from .steering import steering_target

    with torch.no_grad():
        device = next(model.audio.parameters()).device
        z_source = F.normalize(model.encode_waveforms(windows.to(device)).mean(0), dim=-1)
        target = steering_target(model, z_source, prompts, source_weight)
    return z_source, target


def predictor_inputs(model, predictor: SteeringPredictor, power: torch.Tensor, prompts: dict[str, float],
                     source_weight: float) -> tuple:
    """Everything one prediction takes, from the fit's windows' power spectrograms ``(n, bins, frames)``:
    ``(z_source (dim,), target (dim,), spectrum (1, ...) or None, sensitivity (1, ...) or None)``. Where the
    predictor takes the sensitivity, the embeddings come from its forward pass (one forward and one backward in
    all); otherwise from one forward pass."""
    from .steering import steering_encoder, steering_target

    fe = model.config.frontend
    power = power.to(predictor.flat_raw.device).float()
    with torch.no_grad():
        profile = predictor.profile(power.mean(0), fe.sample_rate, fe.n_fft)
    profile = None if profile is None else profile[None]
    encoder = steering_encoder(model)
    if predictor.config.sensitivity_bands:
        sensitivity, z_source, target = steering_sensitivity(
            encoder, model.frontend, power[None], lambda z: steering_target(model, z[0], prompts, source_weight)[None],
            fe.sample_rate, fe.n_fft, predictor.config.sensitivity_bands)
        return z_source[0], target[0], profile, sensitivity
    with torch.no_grad():
        z_source = F.normalize(encoder(model.frontend.features_from_power(power)).mean(0), dim=-1)
        return z_source, steering_target(model, z_source, prompts, source_weight), profile, None
