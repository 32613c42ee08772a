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

4. Learned steps (``train_refiner``): the second step (``--refine-only`` retrains it alone), and with
   ``--add-step`` one more after the predictor's last, each on the objective probed where the steps before it left
   the EQ, everything before it frozen.

A fifth of the notes (every draw on them) is held out; the epoch with the best held-out objective is kept. The
predictor also takes the source's spectral profile (``spectrum_bands``, 32 by default) and the objective's gradient
at flat per band (``sensitivity_bands``, 32 by default); 0 leaves either out. With no fits (``fits=0``) the
distillation stage is skipped and the objective stage starts from flat.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from timbreclip.dsp.audio_io import read_audio
from timbreclip.dsp.errors import TimbreclipError
from timbreclip.neural.frontend import prepare_audio
from timbreclip.dsp.parametric_eq import DEFAULT_BAND_TYPES, ParametricEQ
from timbreclip.neural.predictor import (PredictorConfig, Probe, SteeringPredictor, probe, spectrum_profile,
                                         steering_embeddings, steering_sensitivity)
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
    window: np.ndarray  # (samples,) at the model's rate (one array shared by the draws of a note)
    prompts: dict
    curve_db: np.ndarray | None = None  # the optimiser's summed curve at CURVE_POINTS
    improvement: float | None = None
    note: int = 0  # which of the picked notes it was drawn on (the held-out split is by note)


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
    out, started, windows_of = [], time.time(), {}
    for k in range(draws):
        j = k % len(notes)
        if j not in windows_of:  # read and embedded once per note: its draws share the window
            audio, rate = read_audio(notes[j].path)
            windows_of[j] = torch.from_numpy(prepare_audio(audio.mean(axis=0), rate, fe))[:1]
        windows = windows_of[j]
        prompts, source_weight = draw_prompts(rng)
        z_source, target = steering_embeddings(model, windows, prompts, source_weight)
        draw = Fit(z_source.cpu().numpy(), target.cpu().numpy(), windows[0].numpy(), prompts, note=j)
        if k < fits:
            result = steer(model, windows, prompts, source_weight, config)
            with torch.no_grad():
                draw.curve_db = curve_db(result.eq, fe.sample_rate).reshape(-1).cpu().numpy()
            draw.improvement = result.improvement
            if (k + 1) % 100 == 0:
                log(f"{k + 1}/{fits} optimiser fits ({time.time() - started:.0f} s)")
        out.append(draw)
    return out


class _Draws:
    """What both training stages read from the draws: one power spectrogram per note, the embeddings, the
    predictor's other inputs, the split by note (a fifth of the notes held out), and the steering objective of a
    batch of draws through the frozen, BatchNorm-folded encoder."""

    def __init__(self, model, draws: list[Fit], spectrum_bands: int, sensitivity_bands: int, seed: int,
                 config: SteeringConfig, log=print) -> None:
        self.fe_cfg = fe_cfg = model.config.frontend
        self.fe = fe = model.frontend
        self.encoder = encoder = model.audio.fused_for_inference()
        for p in encoder.parameters():
            p.requires_grad_(False)
        self.notes = notes = sorted({d.note for d in draws})
        row = {n: i for i, n in enumerate(notes)}
        first = {}
        for d in draws:
            first.setdefault(d.note, d)
        with torch.no_grad():  # one power spectrogram per note, not per draw
            self.powers = torch.cat([fe.power(torch.from_numpy(np.stack([first[n].window for n in notes[k:k + 64]])))
                                     for k in range(0, len(notes), 64)])
        self.power_row = torch.as_tensor([row[d.note] for d in draws])
        self.z_sources = torch.from_numpy(np.stack([d.z_source for d in draws])).float()
        self.targets = torch.from_numpy(np.stack([d.target for d in draws])).float()
        self.profiles = (spectrum_profile(self.powers, fe_cfg.sample_rate, fe_cfg.n_fft, spectrum_bands).float()
                         [self.power_row] if spectrum_bands else None)
        self.sensitivities = None
        if sensitivity_bands:
            started = time.time()
            self.sensitivities = torch.cat([
                steering_sensitivity(encoder, fe, self.powers[self.power_row[k:k + 32]][:, None],
                                     self.targets[k:k + 32], fe_cfg.sample_rate, fe_cfg.n_fft, sensitivity_bands)[0]
                for k in range(0, len(draws), 32)])
            log(f"steering sensitivities of {len(draws)} draws in {time.time() - started:.0f} s")
        self.rng = np.random.default_rng(seed)  # the held-out notes, then the epochs' shuffles
        self.held_notes = set(self.rng.permutation(notes)[: max(1, len(notes) // 5)].tolist())
        self.train_idx = [i for i, d in enumerate(draws) if d.note not in self.held_notes]
        self.val_idx = [i for i, d in enumerate(draws) if d.note in self.held_notes]
        if not self.train_idx:  # a single note: hold out a fifth of its draws instead
            self.train_idx, self.val_idx = self.val_idx[len(self.val_idx) // 5:], self.val_idx[: max(1, len(self.val_idx) // 5)]
        self.regulariser = Regulariser(config, fe_cfg, torch.device("cpu"))

    def inputs(self, idx) -> tuple:
        """``(z_source, target, profile or None, sensitivity or None)`` of the draws ``idx``."""
        idx = torch.as_tensor(idx)
        return (self.z_sources[idx], self.targets[idx], None if self.profiles is None else self.profiles[idx],
                None if self.sensitivities is None else self.sensitivities[idx])

    def objective(self, eq, idx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(objective, cosine distance, normalised embedding)`` of the batched ``eq`` (one EQ per draw of
        ``idx``), as ``steering_objective`` computes them for a fit."""
        idx_t = torch.as_tensor(idx)
        gains = eq.gain_on_grid(self.fe_cfg.n_fft)
        power = self.powers[self.power_row[idx_t]]
        z = F.normalize(self.encoder(self.fe.features_from_power(power * gains[:, :, None])), dim=-1)
        distance = 1.0 - (z * self.targets[idx_t]).sum(-1)
        return distance + self.regulariser(eq, gains, power.mean(-1)), distance, z


def _objective_epochs(module, params, batch_loss, held_out, train_idx: list, rng, epochs: int, batch: int, lr: float,
                      label: str, log) -> tuple[float, list]:
    """AdamW on ``params`` (cosine decay over all steps), ``epochs`` shuffled passes over ``train_idx``; after each,
    the held-out objective; ``module`` ends with the state of the best epoch (or as it started, if none beat it).
    Returns the best held-out objective and each epoch's."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-3)
    steps_total, step = epochs * max(1, -(-len(train_idx) // batch)), 0
    best, best_state, history = held_out(), {k: v.clone() for k, v in module.state_dict().items()}, []
    log(f"{label}: held-out objective {best:.4f} at the start")
    for epoch in range(epochs):
        perm = rng.permutation(train_idx)
        for start in range(0, len(perm), batch):
            for g in opt.param_groups:  # cosine decay over the stage
                g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps_total))
            step += 1
            loss = batch_loss(perm[start:start + batch].tolist())
            opt.zero_grad()
            loss.backward()
            opt.step()
        value = held_out()
        history.append(round(value, 5))
        if value < best:
            best, best_state = value, {k: v.clone() for k, v in module.state_dict().items()}
        log(f"{label} epoch {epoch}: held-out objective {value:.4f}{'  *best*' if value <= best else ''}")
    module.load_state_dict(best_state)
    module.eval()
    return best, history


def train_predictor(model, draws: list[Fit], epochs_distill: int = 300, epochs_objective: int = 12,
                    batch: int = 32, seed: int = 0, distill_weight: float = 0.02, lr: float = 3e-3,
                    spectrum_bands: int = 32, sensitivity_bands: int = 32, hidden: int = 256,
                    log=print) -> tuple[SteeringPredictor, dict]:
    """Distillation on the fitted draws (skipped when none was fitted), then the objective stage; a fifth of the
    notes (every draw on them) is held out, and the epoch with the best held-out objective is kept."""
    torch.manual_seed(seed)
    config = SteeringConfig.offline()
    predictor = SteeringPredictor(PredictorConfig(dim=model.dim, hidden=hidden, max_gain_db=config.max_gain_db,
                                                  q_range=tuple(config.q_range),
                                                  model_fingerprint=model.fingerprint(),
                                                  spectrum_bands=spectrum_bands,
                                                  sensitivity_bands=sensitivity_bands))
    s = _Draws(model, draws, spectrum_bands, sensitivity_bands, seed, config, log)
    fe_cfg, train_idx, val_idx = s.fe_cfg, s.train_idx, s.val_idx

    def predicted_eq(idx):
        z_source, target, profile, sensitivity = s.inputs(idx)
        return predictor.eq(z_source, target, fe_cfg.sample_rate, profile, sensitivity)
    rng = s.rng
    fitted_train = [i for i in train_idx if draws[i].curve_db is not None]
    fitted_val = [i for i in val_idx if draws[i].curve_db is not None] or fitted_train[:1]

    def curves(idx):
        return torch.from_numpy(np.stack([draws[i].curve_db for i in idx])).float()

    distill_val = None
    if fitted_train:  # stage 2: distillation on curves (cheap: no encoder)
        train_curves, val_curves = curves(fitted_train), curves(fitted_val)
        opt = torch.optim.AdamW(predictor.parameters(), lr=2e-3, weight_decay=1e-3)
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
    def objective(idx) -> tuple[torch.Tensor, torch.Tensor]:
        return s.objective(predicted_eq(idx), idx)[:2]

    def held_out() -> float:
        with torch.no_grad():
            return float(torch.cat([objective(val_idx[k:k + 64])[0] for k in range(0, len(val_idx), 64)]).mean())

    def batch_loss(b: list) -> torch.Tensor:
        total = objective(b)[0].mean()
        labelled = [i for i in b if draws[i].curve_db is not None]
        if labelled:  # stay near EQs the optimiser would choose
            eq = predicted_eq(labelled)
            distill = F.mse_loss(curve_db(eq, fe_cfg.sample_rate),
                                 torch.from_numpy(np.stack([draws[i].curve_db for i in labelled])).float()) / 36.0
            total = total + distill_weight * distill
        return total

    best, history = _objective_epochs(predictor, predictor.parameters(), batch_loss, held_out, train_idx, rng,
                                      epochs_objective, batch, lr, "objective", log)
    improvements = [f.improvement for f in draws if f.improvement is not None]
    return predictor, {"draws": len(draws), "fits": len(fitted_train) + len(fitted_val) if fitted_train else 0,
                       "held_out_draws": len(val_idx), "held_out_notes": len(s.held_notes),
                       "spectrum_bands": spectrum_bands, "sensitivity_bands": sensitivity_bands, "hidden": hidden,
                       "distill_rms_db": None if distill_val is None else round(distill_val, 3),
                       "held_out_objective": round(best, 5), "objective_history": history,
                       "optimiser_mean_improvement": round(float(np.mean(improvements)), 5) if improvements else None}


def _check_can_add_step(predictor: SteeringPredictor, model_dir: str | None = None) -> None:
    if predictor.refiner is None:
        raise TimbreclipError(f"{model_dir + ': ' if model_dir else ''}--add-step: the steering predictor has no "
                              "second step to add to (train one with --refine-only first)")


def train_refiner(model, predictor: SteeringPredictor, draws: list[Fit], epochs: int = 10, hidden: int = 128,
                  batch: int = 32, lr: float = 2e-3, seed: int = 0, add_step: bool = False,
                  log=print) -> tuple[SteeringPredictor, dict]:
    """A learned step (see ``neural/predictor.py``) on top of ``predictor``, whose first network stays as it is:
    the second step, trained afresh (any learned steps ``predictor`` has are dropped), or with ``add_step`` one more
    step after those it has (they stay as they are). The objective is probed once at every draw's answer before the
    new step (everything before it is frozen, so once for all epochs), then the new step's network is trained on
    the objective after its correction. The same split by note as the first stage; the epoch with the best
    held-out objective is kept."""
    torch.manual_seed(seed)
    config = SteeringConfig.offline()
    pc = predictor.config
    if add_step:
        _check_can_add_step(predictor)
        refined = SteeringPredictor(replace(pc, refine_steps=pc.refine_steps + 1))
        refined.load_state_dict(predictor.state_dict(), strict=False)  # every step it had, as it was
    else:
        refined = SteeringPredictor(replace(pc, refine_hidden=hidden, refine_steps=1))
        refined.load_state_dict({k: v for k, v in predictor.state_dict().items()
                                 if not k.startswith(("refiner.", "later_refiners."))}, strict=False)
    new_step = len(refined.steps()) - 1
    for p in refined.parameters():
        p.requires_grad_(False)
    for p in refined.steps()[new_step].parameters():
        p.requires_grad_(True)
    s = _Draws(model, draws, pc.spectrum_bands, pc.sensitivity_bands, seed, config, log)
    rate = s.fe_cfg.sample_rate
    started = time.time()
    with torch.no_grad():
        raw, hid = refined.first_pass(*s.inputs(list(range(len(draws)))))

    def probed(at: torch.Tensor) -> Probe:
        parts = []
        for k in range(0, len(draws), 32):
            idx = list(range(k, min(k + 32, len(draws))))
            parts.append(probe(refined, at[idx], lambda eq, idx=idx: s.objective(eq, idx), rate))
        return Probe(*(torch.cat([getattr(p, f) for p in parts]) for f in ("z", "objective", "distance", "grad")))

    val = torch.as_tensor(s.val_idx)
    before = []  # the held-out objective at the first answer and after each step the predictor already has
    for step in range(new_step):
        probes = probed(raw)
        before.append(float(probes.objective[val].mean()))
        with torch.no_grad():
            raw = refined.refine(raw, hid, s.targets, probes, step)
    probes = probed(raw)
    before.append(float(probes.objective[val].mean()))
    log(f"the objective probed at {len(draws)} answers ({new_step + 1} probe(s) each) in {time.time() - started:.0f} s")

    def objective(idx) -> torch.Tensor:
        idx_t = torch.as_tensor(idx)
        raw2 = refined.refine(raw[idx_t], hid[idx_t], s.targets[idx_t], probes.select(idx_t), new_step)
        return s.objective(ParametricEQ.from_raw(rate, raw2, DEFAULT_BAND_TYPES, refined.ranges()), idx)[0]

    def held_out() -> float:
        with torch.no_grad():
            return float(torch.cat([objective(s.val_idx[k:k + 64]) for k in range(0, len(s.val_idx), 64)]).mean())

    label = "second step" if new_step == 0 else f"step {new_step + 2}"
    best, history = _objective_epochs(refined, refined.steps()[new_step].parameters(), lambda b: objective(b).mean(),
                                      held_out, s.train_idx, s.rng, epochs, batch, lr, label, log)
    if new_step == 0:
        return refined, {"refine_hidden": hidden, "refine_epochs": epochs, "refine_draws": len(draws),
                         "refine_held_out_draws": len(s.val_idx), "held_out_objective_first_answer": round(before[0], 5),
                         "held_out_objective_refined": round(best, 5), "refine_history": history, "refine_steps": 1}
    return refined, {"refine_steps": new_step + 1, f"step{new_step + 2}_epochs": epochs,
                     f"step{new_step + 2}_draws": len(draws), f"step{new_step + 2}_held_out_draws": len(s.val_idx),
                     f"step{new_step + 2}_held_out_objective_before": [round(v, 5) for v in before],
                     f"step{new_step + 2}_held_out_objective": round(best, 5), f"step{new_step + 2}_history": history}


def run(model_dir: str, folders: list[str], fits: int = 400, draws: int = 2400, notes: int = 600, seed: int = 0,
        epochs: int = 12, spectrum_bands: int = 32, sensitivity_bands: int = 32, refine_hidden: int = 128,
        refine_epochs: int | None = None, refine_only: bool = False, add_step: bool = False, log=print) -> dict:
    """``timbreclip train-predictor``: draws and fits, training (the first network, then the learned second step
    where ``refine_hidden`` > 0), and the predictor saved beside the model. ``refine_only``: keep the first network
    of the predictor already beside the model and train its second step only; ``add_step``: keep all of that
    predictor and train one more learned step after its last (another probe of the objective per prediction).
    Both are checked before any work: the predictor must be there, trained for this model."""
    from timbreclip.neural.model import TimbreCLIP

    model = TimbreCLIP.load(model_dir)
    model.eval()
    existing = None
    if add_step:
        existing = SteeringPredictor.load(model_dir, model)
        _check_can_add_step(existing, model_dir)  # before the draws, not after them
    elif refine_only:
        if not refine_hidden:
            raise TimbreclipError("--refine-only needs a second step (--refine-hidden > 0)")
        existing = SteeringPredictor.load(model_dir, model)  # refused, with one line, if absent or another model's
    picked = pick_training_notes(model, folders, notes, seed)
    if not picked:
        raise TimbreclipError(f"{', '.join(folders)}: no training notes between MIDI 36 and 96")
    started = time.time()
    reuse = refine_only or add_step  # the first network is kept: no optimiser fits to distil from
    made = make_draws(model, picked, max(draws, fits), 0 if reuse else fits, seed, SteeringConfig.offline(), log)
    log(f"{len(made)} draws, {0 if reuse else fits} of them fitted, in {time.time() - started:.0f} s")
    report_path = Path(model_dir) / "steering_predictor.json"
    if reuse:
        predictor = existing
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    else:
        predictor, report = train_predictor(model, made, epochs_objective=epochs, seed=seed,
                                            spectrum_bands=spectrum_bands, sensitivity_bands=sensitivity_bands,
                                            log=log)
    if add_step:
        predictor, refined = train_refiner(model, predictor, made, epochs=refine_epochs or epochs, seed=seed,
                                           add_step=True, log=log)
        report.update(refined)
        n = predictor.config.refine_steps + 1
        report.update({f"step{n}_notes": len(picked), f"step{n}_seconds": round(time.time() - started, 1),
                       f"step{n}_data": [str(f) for f in folders]})
    elif refine_hidden:
        predictor, refined = train_refiner(model, predictor, made, epochs=refine_epochs or epochs,
                                           hidden=refine_hidden, seed=seed, log=log)
        report = {k: v for k, v in report.items() if not k.startswith("step")}  # a fresh second step: no later ones
        report.update(refined)
    path = predictor.save(model_dir)
    if add_step:
        report["saved"] = str(path)
    elif refine_only:  # the first network's figures stay those of its own run
        report.update({"refine_notes": len(picked), "refine_seconds": round(time.time() - started, 1),
                       "refine_data": [str(f) for f in folders], "saved": str(path)})
    else:
        report.update({"notes": len(picked), "fit_seconds": round(time.time() - started, 1), "saved": str(path),
                       "vocabulary": list(VOCABULARY)})
    report_path.write_text(json.dumps(report, indent=1) + "\n")
    return report
