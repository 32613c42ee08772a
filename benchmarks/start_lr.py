"""Which Adam learning rate should refine a predicted (or warm) start within a short budget?

On validation notes (``--split validation``; never the Tim family), for each prompt of the steering benchmark the
optimiser starts from the one-pass predictor's EQ with a wall-clock budget (0.3 s per window, as the benchmark's
"as the optimiser's start" check) at each learning rate given; the fast default fit (broad moves, its own budget) is
the reference. Prints the mean objective gain per learning rate and its share of the reference's.

    python benchmarks/start_lr.py --data DIR --split validation --notes 16 --lrs 0.3 0.1 0.03
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import torch

from eq_steering import PROMPTS, mode_config, note_arguments, pick_notes
from timbreclip.defaults import load_torch_model
from timbreclip.dsp.audio_io import read_audio
from timbreclip.neural.frontend import prepare_audio
from timbreclip.neural.steering import steer


def main() -> None:
    ap = note_arguments(__doc__.splitlines()[0], notes=16)
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.3, 0.1, 0.03])
    ap.add_argument("--budget", type=float, default=0.3, help="seconds per window (default 0.3)")
    ap.add_argument("--steps", type=int, default=None,
                    help="the cosine schedule's length for the predicted start (default: the fast fit's)")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = load_torch_model(args.model)
    fe = model.config.frontend
    fast = mode_config("default", None, budget=True)
    gains = {lr: [] for lr in args.lrs}
    steps = {lr: [] for lr in args.lrs}
    reference = []
    for n in pick_notes(args.data, args.split, args.notes, args.seed, model):
        audio, rate = read_audio(n.path)
        windows = torch.from_numpy(prepare_audio(audio.mean(axis=0), rate, fe))
        for prompt in PROMPTS:
            ref = steer(model, windows, {prompt: 1.0}, 0.5, fast)
            reference.append(ref.objective_before - ref.objective_after)
            for lr in args.lrs:
                q = steer(model, windows, {prompt: 1.0}, 0.5,
                          replace(fast, init="predict", predict_lr=lr, time_budget_s=args.budget / len(windows),
                                  steps=args.steps or fast.steps))
                gains[lr].append(q.objective_before - q.objective_after)
                steps[lr].append(q.steps)
    ref_mean = float(np.mean(reference))
    report = {"fits": len(reference), "budget_s": args.budget, "steps": args.steps or fast.steps,
              "fast_mean_gain": round(ref_mean, 5),
              "lrs": {str(lr): {"mean_gain": round(float(np.mean(g)), 5),
                                "share_of_fast_percent": round(100 * float(np.mean(g)) / ref_mean, 1),
                                "median_steps": float(np.median(steps[lr]))} for lr, g in gains.items()}}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['fits']} fits; fast default mean objective gain {ref_mean:.5f}; predicted start: cosine over "
          f"{report['steps']} steps")
    for lr, r in report["lrs"].items():
        print(f"lr {lr:>6}: mean gain {r['mean_gain']:.5f} = {r['share_of_fast_percent']:5.1f}% of the fast fit's "
              f"({r['median_steps']:.0f} steps in {args.budget} s)")


if __name__ == "__main__":
    main()
