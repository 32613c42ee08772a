"""Training the one-pass steering predictor (``neural/predictor.py``): distilled from the optimiser, then tuned on the
steering objective itself (``timbreclip train-predictor``).

1. Draws: training notes (the model's own training split: never its validation notes, never the Tim family) with
   prompt sets drawn from ``VOCABULARY`` (one word, or two with the second weighted 0.3..1) and source weights
   (0.5 mostly, else 0.25..1); each keeps the source embedding, the target and the window. For the first
   ``fits`` draws the optimiser with the musical defaults (``SteeringConfig.offline()``) finds an EQ, whose summed
   curve is kept (a second of CPU each; the other draws cost an embedding).
2. Distillation: the predictor's summed curve (dB at 64 log-spaced points over 30 Hz-7.2 kHz) is pulled to the
   optimiser's (mean squared error). Curves, not parameters: eight bands can draw one curve in many orders.
3. The objective: the same loss the optimiser minimises (cosine distance to the target through the frozen model,
   plus the gain and shape penalties) on the predicted EQs, batched, with the distillation loss kept at a small
   weight so the predictor stays near EQs the optimiser would choose.

A fifth of the draws is held out; the epoch with the best held-out objective is kept. The predictor also takes the
source's spectral profile (``spectrum_bands``, 32 by default; 0 trains the embeddings-only predictor).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from timbreclip.dsp.audio_io import read_audio
from timbreclip.dsp.errors import TimbreclipError
from timbreclip.neural.frontend import prepare_audio
from timbreclip.neural.predictor import PredictorConfig, SteeringPredictor, spectrum_profile, steering_embeddings
from timbreclip.neural.steering import CURVE_HIGH_HZ, CURVE_LOW_HZ, Regulariser, SteeringConfig, steer

from .data import read_any, split_validation
from .evaluation import training_split

VOCABULARY = ("bright", "brighter", "dark", "darker", "warm", "warmer", "thin", "thinner", "airy", "punchy",
              "muffled", "crisp", "boomy", "bass-heavy", "mellow", "harsh", "smooth", "full", "hollow", "nasal",
              "soft", "clear", "muddy", "fat", "glassy", "round", "sparkly", "dull", "present", "heavy")
CURVE_POINTS = np.geomspace(CURVE_LOW_HZ, CURVE_HIGH_HZ, 64)


@dataclass
class Fit:
    """One (note, words) draw: its embeddings and window; with the optimiser's answer where it was fitted."""

    z_source: np.ndarray
    target: np.ndarray
    window: np.ndarray  # (samples,) at the model's rate
    prompts: dict
    curve_db: np.ndarray | None = None  # the optimiser's summed curve at CURVE_POINTS
    improvement: float | None = None


def pick_training_notes(model, folders, count: int, seed: int) -> list:
    """``count`` original-pitch notes from the model's training split (36 <= MIDI <= 96), spread over categories."""
    notes = read_any(folders if len(folders) > 1 else folders[0])
    split_seed, per_family, share = training_split(model)
    train, _ = split_validation(notes, seed=split_seed, per_family=per_family, synth_share=share)
    pool = [notes[i] for i in train if notes[i].pitch_shift == 0.0 and 36 <= notes[i].pitch <= 96]
    rng = np.random.default_rng(seed)
    return [pool[i] for i in rng.choice(len(pool), min(count, len(pool)), replace=False)]


def draw_prompts(rng: np.random.Generator) -> tuple[dict, float]:
    words = list(rng.choice(VOCABULARY, 2, replace=False))
    prompts = {words[0]: 1.0} if rng.random() < 0.6 else {words[0]: 1.0, words[1]: round(float(rng.uniform(0.3, 1)), 2)}
    source_weight = 0.5 if rng.random() < 0.6 else round(float(rng.uniform(0.25, 1.0)), 2)
    return prompts, source_weight


def curve_db(eq, sample_rate: float) -> torch.Tensor:
    """``(B, 64)`` summed curve of a batched EQ at ``CURVE_POINTS`` (differentiable)."""
    h = eq.response(torch.as_tensor(CURVE_POINTS), sample_rate)
    return 10.0 * torch.log10(h.real ** 2 + h.imag ** 2 + 1e-12).float()


def make_draws(model, notes, draws: int, fits: int, seed: int, config: SteeringConfig, log=print) -> list[Fit]:
    """``draws`` (note, words) examples; the first ``fits`` of them also get the optimiser's EQ (the expensive
    part: about a second each)."""
    fe = model.config.frontend
    rng = np.random.default_rng(seed + 1)
    out, started = [], time.time()
    for k in range(draws):
        note = notes[k % len(notes)]
        audio, rate = read_audio(note.path)
        windows = torch.from_numpy(prepare_audio(audio.mean(axis=0), rate, fe))[:1]
        prompts, source_weight = draw_prompts(rng)
        z_source, target = steering_embeddings(model, windows, prompts, source_weight)
        draw = Fit(z_source.cpu().numpy(), target.cpu().numpy(), windows[0].numpy(), prompts)
        if k < fits:
            result = steer(model, windows, prompts, source_weight, config)
            with torch.no_grad():
                draw.curve_db = curve_db(result.eq, fe.sample_rate).reshape(-1).cpu().numpy()
            draw.improvement = result.improvement
            if (k + 1) % 100 == 0:
                log(f"{k + 1}/{fits} optimiser fits ({time.time() - started:.0f} s)")
        out.append(draw)
    return out


def train_predictor(model, draws: list[Fit], epochs_distill: int = 300, epochs_objective: int = 12,
                    batch: int = 32, seed: int = 0, distill_weight: float = 0.02, lr: float = 1e-3,
                    spectrum_bands: int = 32, hidden: int = 256, log=print) -> tuple[SteeringPredictor, dict]:
    torch.manual_seed(seed)
    fe_cfg = model.config.frontend
    config = SteeringConfig.offline()
    predictor = SteeringPredictor(PredictorConfig(dim=model.dim, hidden=hidden, max_gain_db=config.max_gain_db,
                                                  q_range=tuple(config.q_range),
                                                  model_fingerprint=model.fingerprint(),
                                                  spectrum_bands=spectrum_bands))
    fe = model.frontend
    with torch.no_grad():
        powers = fe.power(torch.from_numpy(np.stack([f.window for f in draws])))
        profiles = (spectrum_profile(powers, fe_cfg.sample_rate, fe_cfg.n_fft, spectrum_bands).float()
                    if spectrum_bands else None)

    def predicted_eq(idx):
        spectrum = profiles[torch.as_tensor(idx)] if profiles is not None else None
        return predictor.eq(torch.from_numpy(np.stack([draws[i].z_source for i in idx])),
                            torch.from_numpy(np.stack([draws[i].target for i in idx])), fe_cfg.sample_rate, spectrum)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(draws))
    held = set(order[: max(1, len(draws) // 5)].tolist())
    train_idx = [i for i in range(len(draws)) if i not in held]
    val_idx = sorted(held)
    fitted_train = [i for i in train_idx if draws[i].curve_db is not None]
    fitted_val = [i for i in val_idx if draws[i].curve_db is not None] or fitted_train[:1]

    def curves(idx):
        return torch.from_numpy(np.stack([draws[i].curve_db for i in idx])).float()

    train_curves, val_curves = curves(fitted_train), curves(fitted_val)
    opt = torch.optim.AdamW(predictor.parameters(), lr=2e-3, weight_decay=1e-3)
    # stage 2: distillation on curves (cheap: no encoder)
    for epoch in range(epochs_distill):
        perm = torch.randperm(len(fitted_train))
        for start in range(0, len(perm), batch):
            b = perm[start:start + batch]
            loss = F.mse_loss(curve_db(predicted_eq([fitted_train[j] for j in b]), fe_cfg.sample_rate),
                              train_curves[b]) / 36.0
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        distill_val = float(F.mse_loss(curve_db(predicted_eq(fitted_val), fe_cfg.sample_rate), val_curves)) ** 0.5
    log(f"distillation: held-out curve RMS error {distill_val:.2f} dB")

    # stage 3: the steering objective itself, through the frozen model
    encoder = model.audio.fused_for_inference()
    for p in encoder.parameters():
        p.requires_grad_(False)
    regulariser = Regulariser(config, fe_cfg, torch.device("cpu"))

    def objective(idx) -> tuple[torch.Tensor, torch.Tensor]:
        idx_t = torch.as_tensor(idx)
        eq = predicted_eq(idx)
        gains = eq.gain_on_grid(fe_cfg.n_fft)
        z = F.normalize(encoder(fe.features_from_power(powers[idx_t] * gains[:, :, None])), dim=-1)
        targets = torch.from_numpy(np.stack([draws[i].target for i in idx]))
        distance = 1.0 - (z * targets).sum(-1)
        return distance + regulariser(eq, gains, powers[idx_t].mean(-1)), distance

    def held_out() -> float:
        with torch.no_grad():
            return float(torch.cat([objective(val_idx[s:s + 64])[0] for s in range(0, len(val_idx), 64)]).mean())

    opt = torch.optim.AdamW(predictor.parameters(), lr=lr, weight_decay=1e-3)
    steps_total, step = epochs_objective * max(1, -(-len(train_idx) // batch)), 0
    best, best_state, history = held_out(), {k: v.clone() for k, v in predictor.state_dict().items()}, []
    log(f"objective stage: held-out objective {best:.4f} after distillation")
    for epoch in range(epochs_objective):
        perm = rng.permutation(train_idx)
        for start in range(0, len(perm), batch):
            b = perm[start:start + batch].tolist()
            loss, _ = objective(b)
            labelled = [i for i in b if draws[i].curve_db is not None]
            total = loss.mean()
            if labelled:  # stay near EQs the optimiser would choose
                eq = predicted_eq(labelled)
                distill = F.mse_loss(curve_db(eq, fe_cfg.sample_rate),
                                     torch.from_numpy(np.stack([draws[i].curve_db for i in labelled])).float()) / 36.0
                total = total + distill_weight * distill
            for g in opt.param_groups:  # cosine decay over the stage
                g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps_total))
            step += 1
            opt.zero_grad()
            total.backward()
            opt.step()
        value = held_out()
        history.append(round(value, 5))
        if value < best:
            best, best_state = value, {k: v.clone() for k, v in predictor.state_dict().items()}
        log(f"objective epoch {epoch}: held-out objective {value:.4f}{'  *best*' if value <= best else ''}")
    predictor.load_state_dict(best_state)
    predictor.eval()
    return predictor, {"draws": len(draws), "fits": len(fitted_train) + len(fitted_val),
                       "held_out_draws": len(val_idx), "spectrum_bands": spectrum_bands, "hidden": hidden,
                       "distill_rms_db": round(distill_val, 3),
                       "held_out_objective": round(best, 5), "objective_history": history,
                       "optimiser_mean_improvement": round(float(np.mean([f.improvement for f in draws
                                                                          if f.improvement is not None])), 5)}


def run(model_dir: str, folders: list[str], fits: int = 400, draws: int = 2400, notes: int = 600, seed: int = 0,
        epochs: int = 12, spectrum_bands: int = 32, log=print) -> dict:
    """``timbreclip train-predictor``: draws and fits, training, and the predictor saved beside the model."""
    from timbreclip.neural.model import TimbreCLIP

    model = TimbreCLIP.load(model_dir)
    model.eval()
    picked = pick_training_notes(model, folders, notes, seed)
    if not picked:
        raise TimbreclipError(f"{', '.join(folders)}: no training notes between MIDI 36 and 96")
    started = time.time()
    made = make_draws(model, picked, max(draws, fits), fits, seed, SteeringConfig.offline(), log)
    log(f"{len(made)} draws, {fits} of them fitted, in {time.time() - started:.0f} s")
    predictor, report = train_predictor(model, made, epochs_objective=epochs, seed=seed,
                                        spectrum_bands=spectrum_bands, log=log)
    path = predictor.save(model_dir)
    report.update({"notes": len(picked), "fit_seconds": round(time.time() - started, 1), "saved": str(path),
                   "vocabulary": list(VOCABULARY)})
    (Path(model_dir) / "steering_predictor.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
