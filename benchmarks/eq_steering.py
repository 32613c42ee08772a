"""Does the text-steered EQ do what the words say? A check no one tuned for.

On single notes the model never trained on (develop on validation notes: ``--data <training folder> --split
validation``; report on the Tim family: ``--data <tim folder> --split all``), for each prompt the fast EQ is fitted
and applied, and a descriptor is measured before and after:

- "bright", "brighter", "crisp": spectral centroid must rise; "dark", "warm", "muffled": it must fall;
- "bass-heavy", "boomy": the share of energy below 250 Hz must rise; "thin": it must fall (notes at MIDI <= 72).

Printed per prompt: the share of notes that moved the right way, the median change, the mean |gain| and the mean
number of bands over 1 dB. Then two optimiser checks on the same objective: the fast default against the paper's
5,000 Adam steps at lr 1e-2 (time and improvement of the objective), and the default gain penalty against none
(cosine-distance improvement with the penalty term left out).

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
from timbreclip.neural.frontend import prepare_audio
from timbreclip.neural.steering import SteeringConfig, steer
from timbreclip.training.data import split_validation
from timbreclip.library.patchfolder import read_patch_folder

PROMPTS = {
    "bright": ("centroid", +1), "brighter": ("centroid", +1), "crisp": ("centroid", +1),
    "dark": ("centroid", -1), "warm": ("centroid", -1), "muffled": ("centroid", -1),
    "bass-heavy": ("low_share", +1), "boomy": ("low_share", +1), "thin": ("low_share", -1),
}
BASS_MAX_PITCH = 72


def pick_notes(folder: str, split: str, count: int, seed: int):
    notes = [n for n in read_patch_folder(folder) if n.pitch_shift == 0.0]
    if split == "validation":
        _, val = split_validation(notes, seed=0)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", choices=("validation", "all"), default="validation")
    ap.add_argument("--notes", type=int, default=56)
    ap.add_argument("--model")
    ap.add_argument("--source-weight", type=float, default=0.5)
    ap.add_argument("--paper-notes", type=int, default=8, help="notes for the 5000-step comparison (x 2 prompts)")
    ap.add_argument("--penalty-notes", type=int, default=12, help="notes for the penalty comparison (x 2 prompts)")
    ap.add_argument("--penalty", type=float, help="gain penalty (default: the steering default)")
    ap.add_argument("--prompts", nargs="+", choices=sorted(PROMPTS), help="only these prompts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    model = load_torch_model(args.model)
    fe = model.config.frontend
    notes = pick_notes(args.data, args.split, args.notes, args.seed)
    clips = []
    for n in notes:
        audio, rate = read_audio(n.path)
        clips.append((n, audio.mean(axis=0), rate))
    fast = SteeringConfig() if args.penalty is None else SteeringConfig(penalty=args.penalty)
    rows = {}
    for prompt, (kind, sign) in PROMPTS.items():
        if args.prompts and prompt not in args.prompts:
            continue
        moved, changes, gains, active, times = [], [], [], [], []
        for n, audio, rate in clips:
            if kind == "low_share" and n.pitch > BASS_MAX_PITCH:
                continue
            windows = torch.from_numpy(prepare_audio(audio, rate, fe))
            result = steer(model, windows, {prompt: 1.0}, args.source_weight, fast)
            settings = result.eq.to_settings(rate)
            after = settings(audio, rate)
            before_v, after_v = measure(kind, audio, rate), measure(kind, after, rate)
            change = (after_v - before_v) if kind == "low_share" else 1200 * np.log2(max(after_v, 1e-9) / before_v)
            moved.append(sign * change > 0)
            changes.append(change)
            g = np.array([b.gain_db for b in settings.bands])  # physical gains of the played EQ
            gains.append(float(np.abs(g).mean()))
            active.append(int((np.abs(g) > 1.0).sum()))
            times.append(result.seconds)
        rows[prompt] = {
            "measure": "centroid (cents)" if kind == "centroid" else "energy share < 250 Hz",
            "direction": "up" if sign > 0 else "down", "notes": len(moved),
            "moved_right_way_percent": round(100 * float(np.mean(moved)), 1),
            "median_change": round(float(np.median(changes)), 4 if kind == "low_share" else 1),
            "mean_abs_gain_db": round(float(np.mean(gains)), 2), "mean_bands_over_1db": round(float(np.mean(active)), 2),
            "mean_seconds": round(float(np.mean(times)), 3), "max_seconds": round(float(np.max(times)), 3),
        }

    # optimiser checks on the same objective
    paper, penalty = [], []
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
            if len(penalty) < 2 * args.penalty_notes:
                free = steer(model, windows, {prompt: 1.0}, args.source_weight, replace(fast, penalty=0.0))
                penalty.append({"with_penalty": f.improvement, "without_penalty": free.improvement,
                                "gain_with": float(f.eq.gain_db.detach().abs().mean()),
                                "gain_without": float(free.eq.gain_db.detach().abs().mean())})
    report = {"data": args.data, "split": args.split, "notes": len(clips), "source_weight": args.source_weight,
              "fast_config": fast.__dict__, "prompts": rows}
    if paper:
        fg = sum(r["fast_objective_gain"] for r in paper)
        pg = sum(r["paper_objective_gain"] for r in paper)
        report["fast_vs_paper"] = {
            "runs": len(paper), "fast_share_of_paper_improvement_percent": round(100 * fg / pg, 1) if pg > 0 else None,
            "fast_mean_seconds": round(float(np.mean([r["fast_seconds"] for r in paper])), 3),
            "fast_max_seconds": round(float(np.max([r["fast_seconds"] for r in paper])), 3),
            "paper_mean_seconds": round(float(np.mean([r["paper_seconds"] for r in paper])), 1)}
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
    print(f"{'prompt':<11} {'measure':<22} {'dir':<4} {'notes':>5} {'right way':>9} {'median':>9} "
          f"{'mean|g| dB':>10} {'bands>1dB':>9} {'s/fit':>6}")
    for p, r in rows.items():
        print(f"{p:<11} {r['measure']:<22} {r['direction']:<4} {r['notes']:>5} {r['moved_right_way_percent']:>8.1f}% "
              f"{r['median_change']:>9} {r['mean_abs_gain_db']:>10.2f} {r['mean_bands_over_1db']:>9.2f} "
              f"{r['mean_seconds']:>6.3f}")
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
