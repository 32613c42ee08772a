"""Text-steered EQ: tune a differentiable ParametricEQ so the sound's embedding moves toward words.

The paper's method (Jonason & Sturm): z_target = normalise(a_src z_source + sum_i a_i z_prompt_i); minimise the cosine
distance between embed(EQ(source)) and z_target by gradient descent on the EQ's parameters (paper: 5,000 Adam steps
at lr 1e-2). Here the EQ acts on the STFT grid inside the encoder's front end (|H|^2 times the cached power
spectrogram), so a step costs one encoder forward and backward and no filtering.

Objective (the same in every mode)::

    loss = (1 - cos(z_eq, z_target)) + penalty * mean_b |gain_b| / 12 dB

The gain penalty (default 0.02; L1, so it favours few active bands) keeps the EQ gentle: without it most gains end at
their caps, a crude tilt. The paper's mode starts flat and takes 5,000 Adam steps at lr 1e-2. The fast default
works as an engineer does, broad strokes first: it scores a handful of broad moves (shelves, a tilt and one wide
peak, up and down; ``BROAD_MOVES``) in one batched forward pass, starts from the best of them (or flat), then refines
every band with Adam (lr 0.3 with cosine decay over at most 64 steps, early exit once the objective has not
improved by 1e-4 over 16 steps). The encoder it differentiates through is a copy with BatchNorm folded into the
convolutions (same function, cheaper). A wall-clock budget (``time_budget_s``: 0.95 s per 4 s window listened to by
default; off in the paper's mode) ends the refinement before a step would overrun it, so a live fit answers in time
on a slower or busier machine, with fewer steps. The model listens at its own rate (16 kHz: nothing above 8 kHz),
so the EQ's bands live below 0.45 x the model's rate and everything above stays flat.
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from timbreclip.dsp.descriptors import peak_dbfs
from timbreclip.dsp.errors import TimbreclipError
from timbreclip.dsp.loudness import loudness_lufs, match_and_guard
from timbreclip.dsp.parametric_eq import BandRanges, ParametricEQ
from timbreclip.dsp.settings import EQSettings, check_amount

from .frontend import prepare_audio
from .text import check_prompts


@dataclass(frozen=True)
class SteeringConfig:
    steps: int = 128  # offline; the live loop's wall-clock budget ends a fit sooner (--surgical: 64)
    lr: float = 0.3
    schedule: str = "cosine"  # "cosine" or "constant" (the paper's)
    early_exit: bool = True
    patience: int = 16
    tolerance: float = 1e-4
    penalty: float = 0.01  # L1 on band gains (--surgical: 0.02); the shape penalty does the rest
    max_gain_db: float = 9.0  # band gains within +-9 dB (--surgical: 12)
    q_range: tuple[float, float] = (0.3, 3.0)  # no narrow resonance (--surgical: 0.3..10, narrow bands allowed)
    shape: float = 0.03  # weight of the shape penalty on the summed curve (0 = off: --surgical)
    knee_db: float = 7.0  # the summed curve is free within +-knee; past it the penalty grows with the square
    boost_weight: float = 2.0  # a boost past the knee costs this many times a cut
    max_span_db: float = 16.5  # a summed curve spanning more (highest - lowest point) is penalised too
    max_level_db: float = 5.0  # a level change (the sound's power through the EQ) past this is penalised too
    seed: int = 0  # kept for settings files and scripts: nothing in a fit is random
    init: str = "broad"  # "broad" (best of BROAD_MOVES, or flat) or "flat" (the paper's)
    betas: tuple[float, float] = (0.9, 0.999)
    lr_scales: tuple[float, float, float] = (1.0, 1.0, 1.0)  # Adam's rate per kind of parameter: frequency, gain, Q
    starts: int = 1  # broad moves refined side by side (batched); the best result wins
    time_budget_s: float | None = 0.95  # wall-clock cap per window listened to (embeddings included); None = none
    # Adam's learning rate when the fit starts from the predictor's EQ: Adam's first step moves every parameter by
    # about the learning rate, which throws away part of a good start (benchmarks/start_lr.py, validation notes)
    predict_lr: float | None = 0.15
    # Adam's betas there (None: ``betas``): a budgeted start takes about 20 steps, which the default betas (made for
    # long runs: the slope averaged over about 10 steps, its size over about 1,000) serve less well
    # (benchmarks/start_lr.py --variant, validation notes; docs/experiments/v3/start-betas-PLAN.md)
    predict_betas: tuple[float, float] | None = (0.7, 0.99)
    # the predictor's learned steps used where its EQ starts a fit with a time budget (None: all it has; offline
    # fits use all): each costs about what an Adam step costs, and on validation a third step was not worth the Adam
    # step it displaced in 0.3 s (benchmarks/predictor_steps.py, share of the fast fit's objective gain: 94.6% against
    # 94.9%, then 96.5% against 97.0%)
    start_learned_steps: int | None = 1
    # the predictor's learned steps everywhere else: its EQ alone (`eq --fast-predict`, the live loop's fast updates)
    # and an offline start (None: all it has; fewer: a faster pass, `--learned-steps`)
    learned_steps: int | None = None

    @classmethod
    def paper(cls, penalty: float = 0.02, surgical: bool = False) -> "SteeringConfig":
        base = cls.surgical() if surgical else cls()
        return replace(base, steps=5000, lr=1e-2, schedule="constant", early_exit=False, penalty=penalty, init="flat",
                       time_budget_s=None)

    @classmethod
    def surgical(cls, **changes) -> "SteeringConfig":
        """The freedom steering had before the musical defaults: +-12 dB, Q up to 10, no shape penalty, the gain
        penalty and the 64 steps it had then."""
        return replace(cls(max_gain_db=12.0, q_range=(0.3, 10.0), shape=0.0, penalty=0.02, steps=64), **changes)

    @classmethod
    def offline(cls, **changes) -> "SteeringConfig":
        """Offline fits are reproducible: a fixed step count, no wall-clock budget (that is the live loop's)."""
        return replace(cls(time_budget_s=None), **changes)


# Broad first moves: (band index in DEFAULT_BAND_TYPES, Hz, dB, Q) per move; every move is tried up and down.
BROAD_MOVES = (
    ((7, 1500.0, 6.0, 0.7071),),  # high shelf
    ((7, 3500.0, 6.0, 0.7071),),
    ((0, 120.0, 6.0, 0.7071),),  # low shelf
    ((0, 300.0, 6.0, 0.7071),),
    ((0, 250.0, -6.0, 0.7071), (7, 2500.0, 6.0, 0.7071)),  # tilt
    ((3, 500.0, 6.0, 1.0),),  # one wide peak
    ((3, 1500.0, 6.0, 1.0),),
    ((3, 3000.0, 6.0, 1.0),),
)


def _broad_eq(eq: ParametricEQ) -> ParametricEQ:
    """A batched copy of ``eq``'s layout holding flat plus every broad move up and down."""
    moves = [()] + [m for move in BROAD_MOVES for m in (move, tuple((b, f, -g, q) for b, f, g, q in move))]
    batch = ParametricEQ(eq.sample_rate, eq.band_types, eq.ranges, batch_size=len(moves))
    freq, gain, q = (t.detach().clone() for t in (batch.freq_hz, batch.gain_db, batch.q))
    for i, move in enumerate(moves):
        for band, f, g, bq in move:
            freq[i, band], gain[i, band], q[i, band] = f, g, bq
    batch.set_bands(freq, gain, q)
    return batch


def _predicted(predictor, z_source, target, sample_rate: float, ranges: BandRanges, profile,
               sensitivity, objective, learned_steps: int | None = None) -> ParametricEQ:
    """The predictor's EQ for this fit (its inputs from ``predictor_inputs``; ``objective`` for its learned steps,
    where it has them; ``learned_steps`` of them, None: all) as a plain (trainable) ``ParametricEQ`` in the fit's
    ranges."""
    with torch.no_grad():
        raw = predictor.predict(z_source[None], target[None], profile, sensitivity, objective, sample_rate,
                                learned_steps)[0]
    eq = ParametricEQ(sample_rate, ranges=ranges).to(raw.device)
    with torch.no_grad():  # the predictor's own ranges may differ: go through physical values
        guess = ParametricEQ.from_raw(sample_rate, raw[None], eq.band_types, predictor.ranges())
        eq.set_bands(guess.freq_hz[0].double(), guess.gain_db[0].double(), guess.q[0].double())
    return eq


_FUSED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def steering_encoder(model):
    """The model's audio encoder with BatchNorm folded in, rebuilt only when the weights change."""
    # the weights' identity and content (a sum per tensor: cheap next to a fit, and it sees in-place updates)
    with torch.no_grad():
        key = tuple((p.data_ptr(), float(p.sum())) for p in list(model.audio.parameters())
                    + list(model.audio.buffers()) if p.is_floating_point())
    cached = _FUSED.get(model)
    if cached is None or cached[0] != key:
        cached = (key, model.audio.fused_for_inference())
        _FUSED[model] = cached
    return cached[1]


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


CURVE_LOW_HZ, CURVE_HIGH_HZ = 30.0, 7200.0  # where the summed curve is judged (the model hears up to 8 kHz)


def shape_penalty(curve_db: torch.Tensor, weights: torch.Tensor, config: SteeringConfig) -> torch.Tensor:
    """What a mixing engineer objects to in a summed curve ``(K, points)`` (dB, points weighted by ``weights``):
    moves past ``knee_db`` (squared, so a few dB cost little and 12 cost a lot), boosts ``boost_weight`` times more
    than cuts, and a span (highest - lowest point) past ``max_span_db``. In units of (6 dB)^2: a boost 3 dB past
    the knee everywhere costs 0.5 (times ``boost_weight``/2), before the config's ``shape`` weight."""
    over = torch.relu(curve_db - config.knee_db) ** 2 * config.boost_weight + torch.relu(-curve_db - config.knee_db) ** 2
    span = curve_db.max(-1).values - curve_db.min(-1).values
    return ((over * weights).sum(-1) + torch.relu(span - config.max_span_db) ** 2) / 36.0


def steering_ranges(config: SteeringConfig) -> BandRanges:
    return BandRanges(gain_db=(-config.max_gain_db, config.max_gain_db), q=tuple(config.q_range))


class Regulariser:
    """The objective's terms besides the cosine distance, for EQs whose power gains on the model's STFT grid are
    known: the gain penalty (L1 over bands) and the shape penalty on the summed curve over 30 Hz-7.2 kHz."""

    def __init__(self, config: SteeringConfig, fe_cfg, device) -> None:
        self.config = config
        bins = torch.fft.rfftfreq(fe_cfg.n_fft, 1.0 / fe_cfg.sample_rate, dtype=torch.float64)
        in_band = (bins >= CURVE_LOW_HZ) & (bins <= CURVE_HIGH_HZ)
        per_octave = (1.0 / bins[in_band]).float()  # linear bins weighted to count each octave once
        self.in_band = in_band.to(device)
        self.per_octave = (per_octave / per_octave.sum()).to(device)

    def __call__(self, eq: ParametricEQ, gains: torch.Tensor, spectrum: torch.Tensor | None = None) -> torch.Tensor:
        """``(K,)`` for the K EQs of ``eq`` whose power gains are ``gains (K, bins)``; ``spectrum`` (``(bins,)`` or
        ``(K, bins)``: the source's mean power per bin) adds the level term: the EQ's change of the sound's power
        past ``max_level_db``, what loudness matching would have to take back."""
        gain_db = eq.gain_db.reshape(len(gains), -1)
        out = self.config.penalty * gain_db.abs().mean(-1) / 12.0
        if self.config.shape > 0:
            curve = 10.0 * torch.log10(gains[:, self.in_band] + 1e-12)
            out = out + self.config.shape * shape_penalty(curve, self.per_octave, self.config)
            if spectrum is not None:
                level = 10.0 * torch.log10((gains * spectrum).sum(-1) / spectrum.sum(-1).clamp(min=1e-20) + 1e-12)
                out = out + self.config.shape * torch.relu(level.abs() - self.config.max_level_db) ** 2 / 36.0
        return out


def steering_target(model, z_source: torch.Tensor, prompts: dict[str, float], source_weight: float) -> torch.Tensor:
    """The paper's target: normalise(a_src z_source + sum_i a_i z_prompt_i), on ``z_source``'s device."""
    z_prompts = model.encode_text(list(prompts)).to(z_source.device)
    weights = torch.tensor(list(prompts.values()), dtype=z_prompts.dtype, device=z_source.device)
    return F.normalize(source_weight * z_source + (weights[:, None] * z_prompts).sum(0), dim=-1)


def check_weights(prompts: dict[str, float], source_weight: float) -> None:
    check_prompts(list(prompts))
    if any(w < 0 for w in prompts.values()) or source_weight < 0:
        raise TimbreclipError("weights must be >= 0 (use an opposite word instead of a negative weight)")
    if not any(w > 0 for w in prompts.values()):
        raise TimbreclipError("every prompt weight is 0: give at least one prompt a positive weight")


def steering_objective(model, power: torch.Tensor, target: torch.Tensor, config: SteeringConfig):
    """The objective of one fit on the power spectrograms ``power (n, bins, frames)`` of its windows: a function of
    a (possibly batched) ``ParametricEQ`` of K EQs -> ``(objective (K,), cosine distance (K,), normalised
    embedding (K, dim))``, through the BatchNorm-folded encoder."""
    fe, fe_cfg = model.frontend, model.config.frontend
    encoder = steering_encoder(model)
    regulariser = Regulariser(config, fe_cfg, power.device)
    spectrum = power.mean(dim=(0, 2))  # the source's mean power per bin (the level term)

    def objective(eq: ParametricEQ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gains = eq.gain_on_grid(fe_cfg.n_fft).reshape(-1, power.shape[1])  # (K, bins)
        powered = (power[None] * gains[:, None, :, None]).reshape(-1, *power.shape[1:])
        z = encoder(fe.features_from_power(powered)).reshape(len(gains), len(power), -1).mean(1)
        z = F.normalize(z, dim=-1)
        distance = 1.0 - z @ target
        return distance + regulariser(eq, gains, spectrum), distance, z

    def penalty(eq: ParametricEQ) -> torch.Tensor:
        """The objective's terms besides the distance, ``(K,)``: no pass through the encoder."""
        return regulariser(eq, eq.gain_on_grid(fe_cfg.n_fft).reshape(-1, power.shape[1]), spectrum)

    objective.penalty = penalty
    return objective


def steer(model, windows: torch.Tensor, prompts: dict[str, float], source_weight: float = 0.5,
          config: SteeringConfig = SteeringConfig(), start: EQSettings | None = None,
          predictor=None) -> SteeringResult:
    """Fit an EQ to ``windows (n, samples)`` of mono audio at the model's rate (see module docstring).

    ``start``: settings to warm-start from (the live loop passes the EQ now playing, so the EQ evolves rather than
    jumps); it replaces ``config.init`` when its bands have the steering layout. ``config.init == "predict"``: the
    one-pass predictor's EQ (``predictor``, else the one saved beside the model) or flat, whichever scores better,
    starts Adam (the broad moves are not scored); ``config.steps == 0`` then returns the prediction itself."""
    check_weights(prompts, source_weight)
    started = time.perf_counter()
    model.eval()
    fe = model.frontend
    fe_cfg = model.config.frontend
    encoder = steering_encoder(model)
    device = next(model.audio.parameters()).device  # every tensor of the fit follows the model
    windows = windows.to(device)
    with torch.no_grad():
        power = fe.power(windows)
    if config.init == "predict":  # the predictor's inputs, the embeddings among them (one pass through the encoder)
        from .predictor import find_predictor, predictor_inputs

        predictor = predictor if predictor is not None else find_predictor(model)
        if predictor is None:
            raise TimbreclipError("init 'predict': this model has no steering predictor beside it "
                                  "(train one with `timbreclip train-predictor`)")
        z_source, target, profile, sensitivity = predictor_inputs(model, predictor, power, prompts, source_weight)
    else:
        with torch.no_grad():
            z_source = F.normalize(encoder(fe.features_from_power(power)).mean(0), dim=-1)
            target = steering_target(model, z_source, prompts, source_weight)
    ranges = steering_ranges(config)
    lr, betas = config.lr, config.betas
    eq = ParametricEQ(fe_cfg.sample_rate, ranges=ranges).to(device)
    objective = steering_objective(model, power, target, config)
    with torch.no_grad():  # flat, which every mode's improvement is measured from: its embedding is the source's
        dist0 = float(1.0 - z_source @ target)  # (the pass above), so only the penalty is computed here
        obj0 = dist0 + float(objective.penalty(eq)[0])
    start_score = None  # the objective where Adam starts, where a branch below already knows it (else Adam's first
    flat_fallback = False  # look scores the start; with this set, flat replaces a start that scores worse
    if config.init == "predict" and config.steps == 0:  # the prediction alone: one forward pass
        eq = _predicted(predictor, z_source, target, fe_cfg.sample_rate, ranges, profile, sensitivity, objective,
                        config.learned_steps)
    elif start is not None and tuple(b.type for b in start.bands) == eq.band_types:
        eq = ParametricEQ.from_settings(start, fe_cfg.sample_rate, ranges).to(device)
    elif config.init == "predict":  # the prediction or flat, whichever scores better (flat's score is obj0; the
        # prediction's is Adam's first look); scoring the broad moves too cost 0.13 s of a 0.3 s budget and reached
        # less (90.4% against 92.4% of the full fit's gain on 24 validation fits)
        if config.predict_lr is not None:
            lr = config.predict_lr
        if config.predict_betas is not None:
            betas = config.predict_betas
        eq = _predicted(predictor, z_source, target, fe_cfg.sample_rate, ranges, profile, sensitivity, objective,
                        config.learned_steps if config.time_budget_s is None else config.start_learned_steps)
        flat_fallback = True
    elif config.init == "broad":
        with torch.no_grad():
            moves = _broad_eq(eq).to(device)
            scores = torch.cat([objective(moves.select([i]))[0] for i in range(len(moves.gain_db))]) \
                if len(power) > 1 else objective(moves)[0]
            starts = scores.argsort()[: config.starts].tolist()
            eq = moves.select(starts) if config.starts > 1 else moves.select(starts[0])
            start_score = float(scores[starts].min())
    elif config.init == "flat":
        start_score = obj0  # eq is still the flat EQ scored above
    else:
        raise ValueError(f"unknown steering init {config.init!r} (broad, predict or flat)")

    opt = torch.optim.Adam([{"params": [p], "lr": lr * k, "scale": k}
                            for p, k in zip((eq.raw_freq, eq.raw_gain, eq.raw_q), config.lr_scales)], betas=betas)
    best, since = start_score, 0
    best_state = {k: v.detach().clone() for k, v in eq.state_dict().items()}
    loop_started, done = time.perf_counter(), 0
    for step in range(1, config.steps + 1):
        if config.time_budget_s is not None and done:
            now = time.perf_counter()
            if now - started + 1.5 * (now - loop_started) / done > config.time_budget_s * len(windows):
                break  # the next step and the final check would end past the budget: a live fit answers in time
        if config.schedule == "cosine":
            for g in opt.param_groups:
                g["lr"] = lr * g["scale"] * 0.5 * (1 + math.cos(math.pi * (step - 1) / config.steps))
        losses = objective(eq)[0]
        value = float(losses.detach().min())
        if best is None:  # this first look scores the start (no separate pass for it)
            if flat_fallback and value >= obj0:  # the prediction scores worse than flat: Adam starts flat
                with torch.no_grad():
                    eq.load_state_dict(ParametricEQ(fe_cfg.sample_rate, ranges=ranges).state_dict())
                losses = objective(eq)[0]
                value = float(losses.detach().min())
            best, best_state = value, {k: v.detach().clone() for k, v in eq.state_dict().items()}
        if value < best - config.tolerance:  # remember these parameters (the ones the loss was measured at)
            best, since = value, 0
            best_state = {k: v.detach().clone() for k, v in eq.state_dict().items()}
        else:
            since += 1
        if config.early_exit and since >= config.patience:
            break
        opt.zero_grad()
        losses.sum().backward()  # the starts are independent: a sum keeps each one's gradient its own
        opt.step()
        done += 1
    with torch.no_grad():  # one look at where Adam ended (a second only when the last step overshot)
        out = objective(eq)
        if best is not None and float(out[0].min()) > best:  # the last step overshot: keep the best parameters
            eq.load_state_dict(best_state)
            out = objective(eq)
        if out[0].numel() > 1:
            k = int(out[0].argmin())
            eq, out = eq.select(k), tuple(v[k:k + 1] for v in out)
        obj1, dist1 = float(out[0][0]), float(out[1][0])
    return SteeringResult(eq, obj0, obj1, dist0, dist1, done, time.perf_counter() - started)


class TextEQ:
    """A pedalboard-like plugin steered by words.

    ``TextEQ(prompts={"warm": 1.0}, model=model, amount=1.0, device="cpu")``; ``fit(audio, sample_rate)`` returns
    ``EQSettings`` (physical bands recorded at the audio's rate, ``amount`` of the fitted curve, loudness-matched);
    ``__call__(audio, sample_rate)`` fits on first use, then applies the EQ with the numba engine, never peaking
    above -0.1 dBFS. Audio is ``(frames,)`` or ``(channels, frames)``. The default config is the offline one (a
    fixed step count: the same audio gives the same EQ on any machine).
    """

    def __init__(self, prompts: dict[str, float], model, source_weight: float = 0.5,
                 config: SteeringConfig | None = None, max_seconds: float | None = 60.0,
                 match_loudness: bool = True, amount: float = 1.0, device: str | None = None) -> None:
        from .model import resolve_device

        check_weights(prompts, source_weight)
        self.match_loudness, self.amount = match_loudness, check_amount(amount)  # checked now, not at the first fit
        if device is not None:
            model = model.to(resolve_device(device))
        self.prompts = dict(prompts)
        self.model = model
        self.source_weight = source_weight
        self.config = config if config is not None else SteeringConfig.offline()
        self.max_seconds = max_seconds
        self.settings: EQSettings | None = None
        self.result: SteeringResult | None = None

    def fit(self, audio, sample_rate: float) -> EQSettings:
        x = np.asarray(audio, np.float32)
        if self.max_seconds is not None:
            x = x[..., : int(self.max_seconds * sample_rate)]
        windows = torch.from_numpy(prepare_audio(x, sample_rate, self.model.config.frontend))
        self.result = steer(self.model, windows, self.prompts, self.source_weight, self.config)
        settings = self.result.eq.to_settings(float(sample_rate)).scaled(self.amount)
        settings.provenance = {"amount": self.amount,
            "prompts": self.prompts, "source_weight": self.source_weight, "steering": asdict(self.config),
            "model": self.model.fingerprint() if hasattr(self.model, "fingerprint") else None,
            "cosine_distance": {"before": round(self.result.distance_before, 5),
                                "after": round(self.result.distance_after, 5)},
            "ranges": settings.provenance["ranges"] if settings.provenance else None,
        }
        y = settings(x, sample_rate)
        gain = match_and_guard(loudness_lufs(x, sample_rate), loudness_lufs(y, sample_rate), peak_dbfs(y),
                               match=self.match_loudness)
        settings.output_gain_db = gain.total_db
        settings.provenance.update({"loudness_match_db": round(gain.match_db, 3),
                                    "anti_clip_db": round(gain.clip_db, 3)})
        self.settings = settings
        return settings

    def __call__(self, audio, sample_rate: float) -> np.ndarray:
        """The EQ applied (fitted on first use): loudness-matched to the audio it was fitted on, and never peaking
        above ``dsp.loudness.CEILING_DBFS`` (-0.1 dBFS): audio that would is turned down, as the CLI does."""
        if self.settings is None:
            self.fit(audio, sample_rate)
        y = self.settings(audio, sample_rate)
        guard = match_and_guard(0.0, 0.0, peak_dbfs(y), match=False)
        if guard.clip_db < 0:
            y *= np.float32(10 ** (guard.clip_db / 20))
        return y
