"""Does the text-steered EQ do what the words say, with EQs an engineer would sign? A check no one tuned for.

On single notes the model never trained on (develop on validation notes: ``--data <training folder> --split
validation``; report on the Tim family: ``--data <tim folder> --split all``), for each prompt the fast EQ is fitted
and applied, and a descriptor is measured before and after:

- "bright", "brighter", "crisp": spectral centroid must rise; "dark", "warm", "muffled": it must fall;
- "bass-heavy", "boomy": the share of energy below 250 Hz must rise; "thin": it must fall (notes at MIDI <= 72).

Printed per prompt and per mode (``--modes surgical default``: the freedom steering had before, then the musical
defaults): the share of notes that moved the right way, the median change, the cosine improvement toward the
target, and what an engineer would look at: the largest band gain, the summed curve's span (highest - lowest point
over 30 Hz-7.2 kHz, all bands together), the loudness compensation the EQ needs (BS.1770 before minus after), and
narrow resonances (a peak with Q > 4 and more than 3 dB). Then the goals over all fits, and two optimiser checks on
the same objective: the fast default against the paper's 5,000 Adam steps at lr 1e-2, and the gain penalty against
none.

    python benchmarks/eq_steering.py --data DIR [--split validation|all] [--notes 56] [--model DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import replace

import numpy as np
import torch

from timbreclip.defaults import load_torch_model
from timbreclip.dsp.audio_io import read_audio
from timbreclip.dsp.descriptors import low_energy_share, spectral_centroid_hz
from timbreclip.dsp.errors import TimbreclipError
from timbreclip.dsp.loudness import loudness_lufs
from timbreclip.neural.frontend import prepare_audio
from timbreclip.neural.steering import CURVE_HIGH_HZ, CURVE_LOW_HZ, SteeringConfig, steer, steering_objective
from timbreclip.training.data import split_validation
from timbreclip.training.evaluation import training_split
from timbreclip.library.patchfolder import read_patch_folder

PROMPTS = {
    "bright": ("centroid", +1), "brighter": ("centroid", +1), "crisp": ("centroid", +1),
    "dark": ("centroid", -1), "warm": ("centroid", -1), "muffled": ("centroid", -1),
    "bass-heavy": ("low_share", +1), "boomy": ("low_share", +1), "thin": ("low_share", -1),
}
BASS_MAX_PITCH = 72


def pick_notes(folder: str, split: str, count: int, seed: int, model=None):
    notes = [n for n in read_patch_folder(folder) if n.pitch_shift == 0.0]
    if split == "validation":  # the programs the model's own trainer held out
        split_seed, per_family, share = training_split(model)
        _, val = split_validation(notes, seed=split_seed, per_family=per_family, synth_share=share)
        notes = [notes[i] for i in val]
    rng = np.random.default_rng(seed)
    by_category = defaultdict(list)
    for n in notes:
        if 36 <= n.pitch <= 96:  # a playable middle range
            by_category[n.category].append(n)
    picked = []
    while len(picked) < count and any(by_category.values()):
        for cat in sorted(by_category):
            if by_category[cat] and len(picked) < count:
                picked.append(by_category[cat].pop(int(rng.integers(len(by_category[cat])))))
    return picked


def measure(kind: str, audio: np.ndarray, rate: float) -> float:
    return spectral_centroid_hz(audio, rate) if kind == "centroid" else low_energy_share(audio, rate)


CURVE_GRID = np.geomspace(CURVE_LOW_HZ, CURVE_HIGH_HZ, 256)
GOALS = {"span_db": 18.0, "max_band_db": 9.0, "loudness_db": 6.0}


def engineer_view(settings, audio: np.ndarray, after: np.ndarray, rate: float) -> dict:
    """What a mixing engineer looks at in one fitted EQ (module docstring)."""
    curve = settings.response_db(CURVE_GRID) - settings.output_gain_db
    gains = np.array([b.gain_db for b in settings.bands])
    return {"span_db": float(curve.max() - curve.min()), "max_band_db": float(np.abs(gains).max()),
            "loudness_db": float(loudness_lufs(audio, rate) - loudness_lufs(after, rate)),
            "resonances": sum(1 for b in settings.bands if b.type == "peak" and b.q > 4 and abs(b.gain_db) > 3)}


def mode_config(mode: str, penalty: float | None, overrides: dict | None = None, budget: bool = False,
                surgical_steps: int | None = None) -> SteeringConfig:
    """What ``timbreclip eq`` fits with (``--surgical`` or not): a fixed step count, so the table does not depend on
    how busy the machine is; ``budget``: the live loop's wall-clock budget instead. ``overrides`` change the
    default mode only, ``surgical_steps`` the surgical mode's step count."""
    if mode == "surgical":
        config = SteeringConfig.surgical(**({} if surgical_steps is None else {"steps": surgical_steps}))
    else:
        config = replace(SteeringConfig(), **(overrides or {}))
    if not budget:
        config = replace(config, time_budget_s=None)  # as SteeringConfig.offline() and `eq --surgical` have it
    return config if penalty is None else replace(config, penalty=penalty)


def benchmark_predictor(model, args):
    """The model's predictor, stopped after ``--predictor-steps`` learned steps where that is given."""
    from timbreclip.neural.predictor import find_predictor

    predictor = find_predictor(model)
    if predictor is None:
        raise SystemExit("--predictor: the model has no steering predictor beside it")
    if args.predictor_steps is not None:
        try:
            predictor.check_learned_steps(args.predictor_steps, "--predictor-steps")
        except TimbreclipError as err:
            raise SystemExit(str(err)) from None
        predictor = predictor.truncated(args.predictor_steps)
    return predictor


def predictor_table(model, clips, fe, args, by_fit, predictor) -> dict:
    """The one-pass predictor on the benchmark's notes and prompts: time per pass (with and without the two
    embeddings), cosine improvement against the fast optimiser's on the same fit, notes moved the right way."""
    from timbreclip.neural.predictor import predictor_inputs

    rows, shares, fast_all, pred_all, pass_ms, full_ms = {}, [], [], [], [], []
    config = SteeringConfig.offline(init="predict", steps=0)
    for prompt, (kind, sign) in PROMPTS.items():
        if args.prompts and prompt not in args.prompts:
            continue
        moved, gains, fast_gains = [], [], []
        for n, audio, rate in clips:
            if kind == "low_share" and n.pitch > BASS_MAX_PITCH:
                continue
            windows = torch.from_numpy(prepare_audio(audio, rate, fe))
            # with the embeddings: the STFT, the embeddings and the predictor's other inputs (its spectral profile,
            # and the objective's gradient at flat where it takes one: one forward and one backward in all), then
            # the prediction; the pass alone: the prediction on those inputs (the network, and where the predictor
            # has a second step, its probe of the objective: one more forward and backward, and the second network)
            t0 = time.perf_counter()
            with torch.no_grad():
                power = model.frontend.power(windows)
            z_source, target, profile, sensitivity = predictor_inputs(model, predictor, power, {prompt: 1.0},
                                                                      args.source_weight)
            objective = steering_objective(model, power, target, config)
            with torch.no_grad():
                predictor.predict(z_source[None], target[None], profile, sensitivity, objective, fe.sample_rate)
                t1 = time.perf_counter()
                predictor.predict(z_source[None], target[None], profile, sensitivity, objective, fe.sample_rate)
            t2 = time.perf_counter()
            pass_ms.append(1000 * (t2 - t1))
            full_ms.append(1000 * (t1 - t0))
            result = steer(model, windows, {prompt: 1.0}, args.source_weight, config, predictor=predictor)
            after = result.eq.to_settings(rate)(audio, rate)
            before_v, after_v = measure(kind, audio, rate), measure(kind, after, rate)
            change = (after_v - before_v) if kind == "low_share" else np.log2(max(after_v, 1e-9) / before_v)
            moved.append(sign * change > 0)
            gains.append(result.improvement)
            fast = by_fit.get(("default", prompt, n.path))
            if fast is not None:
                fast_gains.append(fast)
                fast_all.append(fast)
                pred_all.append(result.improvement)
                if fast > 1e-6:
                    shares.append(result.improvement / fast)
        rows[prompt] = {"notes": len(moved), "moved_right_way_percent": round(100 * float(np.mean(moved)), 1),
                        "median_improvement": round(float(np.median(gains)), 4),
                        "fast_median_improvement": round(float(np.median(fast_gains)), 4) if fast_gains else None}
    return {"fits": len(pass_ms), "second_step": predictor.refiner is not None, "learned_steps": len(predictor.steps()), "median_pass_ms": float(np.median(pass_ms)),
            "p95_pass_ms": float(np.percentile(pass_ms, 95)),
            "median_with_embeddings_ms": float(np.median(full_ms)),
            "p95_with_embeddings_ms": float(np.percentile(full_ms, 95)),
            "median_share_of_fast_percent": round(100 * float(np.median(shares)), 1) if shares else None,
            "mean_share_of_fast_percent": round(100 * sum(pred_all) / sum(fast_all), 1) if fast_all else None,
            "worst_prompt_right_way_percent": min(r["moved_right_way_percent"] for r in rows.values()),
            "prompts": rows}


def _pass_words(learned_steps: int) -> str:
    if not learned_steps:
        return "the network"
    if learned_steps == 1:
        return "the network, the probe and the second step"
    return f"the network and {learned_steps} learned steps, each after its own probe"


def note_arguments(description: str, notes: int) -> argparse.ArgumentParser:
    """A parser with what every steering benchmark takes: the notes (``--data``, ``--split``, ``--notes``,
    ``--seed``), ``--model`` and ``--json``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", choices=("validation", "all"), default="validation")
    ap.add_argument("--notes", type=int, default=notes)
    ap.add_argument("--model", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    return ap


def main() -> None:
    ap = note_arguments(__doc__.splitlines()[0], notes=56)
    ap.add_argument("--source-weight", type=float, default=0.5)
    ap.add_argument("--paper-notes", type=int, default=8, help="notes for the 5000-step comparison (x 2 prompts)")
    ap.add_argument("--penalty-notes", type=int, default=12, help="notes for the penalty comparison (x 2 prompts)")
    ap.add_argument("--penalty", type=float, help="gain penalty (default: the steering default)")
    ap.add_argument("--prompts", nargs="+", choices=sorted(PROMPTS), help="only these prompts")
    ap.add_argument("--predictor", action="store_true",
                    help="also measure the model's one-pass steering predictor (alone, and as the optimiser's start)")
    ap.add_argument("--predictor-steps", type=int, default=None,
                    help="with --predictor: stop it after this many learned steps (default: all it has; 0: the "
                         "first answer alone)")
    ap.add_argument("--shape", type=float, help="default mode's shape penalty weight (development)")
    ap.add_argument("--knee", type=float, help="default mode's knee in dB (development)")
    ap.add_argument("--max-gain", type=float, help="default mode's band gain cap in dB (development)")
    ap.add_argument("--max-span", type=float, help="default mode's penalised curve span in dB (development)")
    ap.add_argument("--max-level", type=float, help="default mode's penalised level change in dB (development)")
    ap.add_argument("--boost-weight", type=float, help="default mode's boost weight past the knee (development)")
    ap.add_argument("--q-max", type=float, help="default mode's largest band Q (development)")
    ap.add_argument("--steps", type=int, help="default mode's step count (development)")
    ap.add_argument("--surgical-steps", type=int, help="surgical mode's step count (development)")
    ap.add_argument("--modes", nargs="+", choices=("surgical", "default"), default=["surgical", "default"],
                    help="steering modes to compare (default both: before and after the musical defaults)")
    args = ap.parse_args()

    model = load_torch_model(args.model)
    fe = model.config.frontend
    notes = pick_notes(args.data, args.split, args.notes, args.seed, model)
    clips = []
    for n in notes:
        audio, rate = read_audio(n.path)
        clips.append((n, audio.mean(axis=0), rate))
    overrides = {k: v for k, v in (("shape", args.shape), ("knee_db", args.knee), ("max_gain_db", args.max_gain),
                                   ("max_span_db", args.max_span), ("max_level_db", args.max_level),
                                   ("boost_weight", args.boost_weight), ("steps", args.steps)) if v is not None}
    if args.q_max is not None:
        overrides["q_range"] = (SteeringConfig().q_range[0], args.q_max)
    rows, fits, by_fit = {}, defaultdict(list), {}
    for prompt, (kind, sign) in PROMPTS.items():
        if args.prompts and prompt not in args.prompts:
            continue
        for mode in args.modes:
            config = mode_config(mode, args.penalty, overrides, surgical_steps=args.surgical_steps)
            moved, changes, improvements, views, times = [], [], [], [], []
            for n, audio, rate in clips:
                if kind == "low_share" and n.pitch > BASS_MAX_PITCH:
                    continue
                windows = torch.from_numpy(prepare_audio(audio, rate, fe))
                result = steer(model, windows, {prompt: 1.0}, args.source_weight, config)
                settings = result.eq.to_settings(rate)
                after = settings(audio, rate)
                before_v, after_v = measure(kind, audio, rate), measure(kind, after, rate)
                change = (after_v - before_v) if kind == "low_share" else 1200 * np.log2(max(after_v, 1e-9) / before_v)
                moved.append(sign * change > 0)
                changes.append(change)
                improvements.append(result.improvement)
                by_fit[(mode, prompt, n.path)] = result.improvement
                views.append(engineer_view(settings, audio, after, rate))
                times.append(result.seconds)
            fits[mode] += [{**v, "improvement": i} for v, i in zip(views, improvements)]
            rows.setdefault(prompt, {})[mode] = {
                "measure": "centroid (cents)" if kind == "centroid" else "energy share < 250 Hz",
                "direction": "up" if sign > 0 else "down", "notes": len(moved),
                "moved_right_way_percent": round(100 * float(np.mean(moved)), 1),
                "median_change": round(float(np.median(changes)), 4 if kind == "low_share" else 1),
                "median_improvement": round(float(np.median(improvements)), 4),
                "median_max_band_db": round(float(np.median([v["max_band_db"] for v in views])), 2),
                "median_span_db": round(float(np.median([v["span_db"] for v in views])), 1),
                "median_abs_loudness_db": round(float(np.median([abs(v["loudness_db"]) for v in views])), 2),
                "resonances": int(sum(v["resonances"] > 0 for v in views)),
                "mean_seconds": round(float(np.mean(times)), 3), "max_seconds": round(float(np.max(times)), 3),
            }
    goals = {}
    for mode, items in fits.items():
        goals[mode] = {
            "fits": len(items),
            "span_within_18db_percent": round(100 * np.mean([f["span_db"] <= GOALS["span_db"] for f in items]), 1),
            "max_band_within_9db_percent": round(100 * np.mean([f["max_band_db"] <= GOALS["max_band_db"] + 1e-6
                                                                for f in items]), 1),
            "loudness_within_6db_percent": round(100 * np.mean([abs(f["loudness_db"]) <= GOALS["loudness_db"]
                                                                for f in items]), 1),
            "fits_with_resonance": int(sum(f["resonances"] > 0 for f in items)),
            "worst_prompt_right_way_percent": min(r[mode]["moved_right_way_percent"] for r in rows.values()),
            "median_improvement": round(float(np.median([f["improvement"] for f in items])), 4),
            "mean_improvement": round(float(np.mean([f["improvement"] for f in items])), 4),
        }
    if "surgical" in goals and "default" in goals and goals["surgical"]["mean_improvement"] > 0:
        goals["default"]["improvement_share_of_surgical_percent"] = round(
            100 * goals["default"]["mean_improvement"] / goals["surgical"]["mean_improvement"], 1)
    fast = mode_config("default", args.penalty, overrides, budget=True)  # the live loop's fast fit

    predictor = benchmark_predictor(model, args) if args.predictor else None
    predictor_report = predictor_table(model, clips, fe, args, by_fit, predictor) if args.predictor else None

    # optimiser checks on the same objective
    paper, penalty, started_from_prediction = [], [], []
    compare_prompts = ("bright", "warm")
    for n, audio, rate in clips[: max(args.paper_notes, args.penalty_notes)]:
        windows = torch.from_numpy(prepare_audio(audio, rate, fe))
        for prompt in compare_prompts:
            f = steer(model, windows, {prompt: 1.0}, args.source_weight, fast)
            if len(paper) < 2 * args.paper_notes:
                p = steer(model, windows, {prompt: 1.0}, args.source_weight, SteeringConfig.paper(fast.penalty))
                paper.append({"fast_objective_gain": f.objective_before - f.objective_after,
                              "paper_objective_gain": p.objective_before - p.objective_after,
                              "fast_seconds": f.seconds, "paper_seconds": p.seconds})
                if args.predictor:  # the optimiser started from the prediction, with 0.3 s
                    q = steer(model, windows, {prompt: 1.0}, args.source_weight,
                              replace(fast, init="predict", time_budget_s=0.3 / len(windows)), predictor=predictor)
                    started_from_prediction.append({"gain": q.objective_before - q.objective_after,
                                                    "paper_gain": p.objective_before - p.objective_after,
                                                    "seconds": q.seconds})
            if len(penalty) < 2 * args.penalty_notes:
                free = steer(model, windows, {prompt: 1.0}, args.source_weight, replace(fast, penalty=0.0))
                penalty.append({"with_penalty": f.improvement, "without_penalty": free.improvement,
                                "gain_with": float(f.eq.gain_db.detach().abs().mean()),
                                "gain_without": float(free.eq.gain_db.detach().abs().mean())})
    report = {"data": args.data, "split": args.split, "notes": len(clips), "source_weight": args.source_weight,
              "fast_config": fast.__dict__, "prompts": rows, "goals": goals}
    if paper:
        fg = sum(r["fast_objective_gain"] for r in paper)
        pg = sum(r["paper_objective_gain"] for r in paper)
        report["fast_vs_paper"] = {
            "runs": len(paper), "fast_share_of_paper_improvement_percent": round(100 * fg / pg, 1) if pg > 0 else None,
            "fast_mean_seconds": round(float(np.mean([r["fast_seconds"] for r in paper])), 3),
            "fast_max_seconds": round(float(np.max([r["fast_seconds"] for r in paper])), 3),
            "paper_mean_seconds": round(float(np.mean([r["paper_seconds"] for r in paper])), 1)}
    if predictor_report:
        report["predictor"] = predictor_report
        if started_from_prediction:
            g = sum(r["gain"] for r in started_from_prediction)
            pg = sum(r["paper_gain"] for r in started_from_prediction)
            predictor_report["as_start"] = {
                "runs": len(started_from_prediction), "budget_s": 0.3,
                "share_of_paper_improvement_percent": round(100 * g / pg, 1) if pg > 0 else None,
                "max_seconds": round(float(np.max([r["seconds"] for r in started_from_prediction])), 3)}
    if penalty:
        w = sum(r["with_penalty"] for r in penalty)
        wo = sum(r["without_penalty"] for r in penalty)
        report["penalty"] = {
            "runs": len(penalty), "penalty_weight": fast.penalty,
            "improvement_with_penalty_share_percent": round(100 * w / wo, 1) if wo > 0 else None,
            "mean_abs_gain_with": round(float(np.mean([r["gain_with"] for r in penalty])), 2),
            "mean_abs_gain_without": round(float(np.mean([r["gain_without"] for r in penalty])), 2)}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{len(clips)} notes from {args.data} ({args.split}); source weight {args.source_weight}")
    print(f"{'prompt':<11} {'mode':<9} {'dir':<5} {'notes':>5} {'right way':>9} {'median':>9} {'cos gain':>8} "
          f"{'max band':>8} {'span':>6} {'|loud|':>6} {'reson.':>6} {'s/fit':>6}")
    for p, per_mode in rows.items():
        for mode, r in per_mode.items():
            print(f"{p:<11} {mode:<9} {r['direction']:<5} {r['notes']:>5} {r['moved_right_way_percent']:>8.1f}% "
                  f"{r['median_change']:>9} {r['median_improvement']:>8.4f} {r['median_max_band_db']:>7.1f}  "
                  f"{r['median_span_db']:>5.1f} {r['median_abs_loudness_db']:>6.1f} {r['resonances']:>6} "
                  f"{r['mean_seconds']:>6.3f}")
    print("(medians over notes: centroid change in cents or low-energy share change; cosine improvement; largest "
          "band |gain| dB; summed-curve span dB over 30 Hz-7.2 kHz; |loudness compensation| dB; fits with a "
          "narrow resonance)")
    for mode, g in goals.items():
        print(f"{mode}: {g['fits']} fits; span <= 18 dB {g['span_within_18db_percent']}% (goal 90); largest band "
              f"<= 9 dB {g['max_band_within_9db_percent']}% (goal 95); |loudness| <= 6 dB "
              f"{g['loudness_within_6db_percent']}% (goal 90); fits with a resonance {g['fits_with_resonance']} "
              f"(goal 0); worst prompt right way {g['worst_prompt_right_way_percent']}% (goal 90); mean cosine "
              f"improvement {g['mean_improvement']}"
              + (f" = {g['improvement_share_of_surgical_percent']}% of surgical's (goal 90)"
                 if "improvement_share_of_surgical_percent" in g else ""))
    if predictor_report:
        c = predictor_report
        print(f"one-pass predictor on {c['fits']} fits: {c['median_pass_ms']:.2f} ms per prediction "
              f"({_pass_words(c['learned_steps'])}; p95 "
              f"{c['p95_pass_ms']:.2f}), {c['median_with_embeddings_ms']:.1f} ms with the STFT, embeddings and its "
              f"other inputs (p95 "
              f"{c['p95_with_embeddings_ms']:.1f}); median share of the fast optimiser's cosine improvement "
              f"{c['median_share_of_fast_percent']}% (goal 90; ratio of means {c['mean_share_of_fast_percent']}%)")
        print(f"{'prompt':<11} {'right way':>9} {'median cos gain':>15} {'fast optimiser':>14}")
        for p, r in c["prompts"].items():
            print(f"{p:<11} {r['moved_right_way_percent']:>8.1f}% {r['median_improvement']:>15.4f} "
                  f"{r['fast_median_improvement']:>14.4f}")
        if "as_start" in c:
            a = c["as_start"]
            print(f"as the optimiser's start ({a['runs']} runs, {a['budget_s']} s budget): "
                  f"{a['share_of_paper_improvement_percent']}% of the paper mode's objective improvement "
                  f"(goal 95), max {a['max_seconds']} s")
    if "fast_vs_paper" in report:
        c = report["fast_vs_paper"]
        print(f"fast vs paper (5000 steps, lr 1e-2) on {c['runs']} runs: fast reaches "
              f"{c['fast_share_of_paper_improvement_percent']}% of the paper's objective improvement in "
              f"{c['fast_mean_seconds']} s (max {c['fast_max_seconds']} s) vs {c['paper_mean_seconds']} s")
    if "penalty" in report:
        c = report["penalty"]
        print(f"gain penalty {c['penalty_weight']} on {c['runs']} runs: {c['improvement_with_penalty_share_percent']}% "
              f"of the no-penalty cosine improvement; mean |gain| {c['mean_abs_gain_with']} dB vs "
              f"{c['mean_abs_gain_without']} dB without")


if __name__ == "__main__":
    main()
