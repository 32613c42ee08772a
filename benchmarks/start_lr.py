"""Which Adam learning rate should refine a predicted (or warm) start within a short budget?

On validation notes (``--split validation``; never the Tim family), for each prompt of the steering benchmark the
optimiser starts from the one-pass predictor's EQ with a wall-clock budget (0.3 s per window, as the benchmark's
"as the optimiser's start" check) at each learning rate given; the fast default fit (broad moves, its own budget) is
the reference (``--reference offline``: the fit ``eq`` makes, a fixed step count, which no budget moves;
``--reference paper``: the paper mode, 5,000 Adam steps, as the steering benchmark's start check, whose 16 runs are
``--notes 8 --prompts bright warm``). Prints the mean objective gain per learning rate and its share of the
reference's; ``--repeats N`` runs every started fit N times in turn (wall-clock budgets read the machine's moment).

    python benchmarks/start_lr.py --data DIR --split validation --notes 16 --lrs 0.3 0.1 0.03
    python benchmarks/start_lr.py ... --lrs 0.15 --variant "lr_scales=(1, 2, 1)" "betas=(0.8, 0.99)"

``--variant``: other settings of the started fit (``SteeringConfig`` fields, ``key=value`` joined by ``;``), each
run at every learning rate beside the defaults, on the same fits.
"""

from __future__ import annotations

import ast
import json
from dataclasses import fields, replace

import numpy as np
import torch

from eq_steering import PROMPTS, mode_config, note_arguments, pick_notes
from timbreclip.defaults import load_torch_model
from timbreclip.dsp.audio_io import read_audio
from timbreclip.neural.frontend import prepare_audio
from timbreclip.neural.steering import SteeringConfig, steer


def main() -> None:
    ap = note_arguments(__doc__.splitlines()[0], notes=16)
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.3, 0.1, 0.03])
    ap.add_argument("--budget", type=float, default=0.3, help="seconds per window (default 0.3)")
    ap.add_argument("--steps", type=int, default=None,
                    help="the cosine schedule's length for the predicted start (default: the fast fit's)")
    ap.add_argument("--variant", nargs="+", default=[], metavar="KEY=VALUE[;KEY=VALUE]",
                    help="other settings of the started fit to compare (SteeringConfig fields)")
    ap.add_argument("--reference", choices=("budget", "offline", "paper"), default="budget",
                    help="the fast fit under the live budget (default), as eq fits offline (fixed steps), or the "
                         "paper mode (5000 steps)")
    ap.add_argument("--prompts", nargs="+", choices=sorted(PROMPTS), help="only these prompts")
    ap.add_argument("--repeats", type=int, default=1, help="runs of every started fit, in turn (default 1)")
    args = ap.parse_args()
    known = {f.name for f in fields(SteeringConfig)}
    variants = {"defaults": {}}
    for text in args.variant:
        try:
            changes = {k.strip(): ast.literal_eval(v.strip())
                       for k, v in (part.split("=", 1) for part in text.split(";"))}
        except (ValueError, SyntaxError) as err:
            ap.error(f"--variant {text!r}: not KEY=VALUE[;KEY=VALUE] ({err})")
        if set(changes) - known:
            ap.error(f"--variant {text!r}: unknown settings {sorted(set(changes) - known)}")
        variants[text] = changes

    torch.manual_seed(0)
    model = load_torch_model(args.model)
    fe = model.config.frontend
    fast = mode_config("default", None, budget=True)
    reference_config = {"budget": fast, "offline": mode_config("default", None),
                        "paper": SteeringConfig.paper(fast.penalty)}[args.reference]
    runs = [(lr, v) for lr in args.lrs for v in variants]
    gains = {r: [] for r in runs}
    steps = {r: [] for r in runs}
    seconds = {r: [] for r in runs}
    reference = []
    for n in pick_notes(args.data, args.split, args.notes, args.seed, model):
        audio, rate = read_audio(n.path)
        windows = torch.from_numpy(prepare_audio(audio.mean(axis=0), rate, fe))
        for prompt in args.prompts or PROMPTS:
            ref = steer(model, windows, {prompt: 1.0}, 0.5, reference_config)
            for _ in range(args.repeats):
                reference.append(ref.objective_before - ref.objective_after)
            for lr, variant in runs * args.repeats:
                q = steer(model, windows, {prompt: 1.0}, 0.5,
                          replace(fast, init="predict", predict_lr=lr, time_budget_s=args.budget / len(windows),
                                  steps=args.steps or fast.steps, **variants[variant]))
                gains[lr, variant].append(q.objective_before - q.objective_after)
                steps[lr, variant].append(q.steps)
                seconds[lr, variant].append(q.seconds)
    ref_mean = float(np.mean(reference))
    report = {"fits": len(reference), "budget_s": args.budget, "steps": args.steps or fast.steps,
              "reference": args.reference, "fast_mean_gain": round(ref_mean, 5),
              "lrs": {(str(lr) if not args.variant else f"{lr} {variant}"): {
                  "mean_gain": round(float(np.mean(g)), 5),
                  "share_of_fast_percent": round(100 * float(np.mean(g)) / ref_mean, 1),
                  "median_steps": float(np.median(steps[lr, variant])),
                  "max_seconds": round(float(np.max(seconds[lr, variant])), 3)} for (lr, variant), g in gains.items()}}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['fits']} fits; fast default mean objective gain {ref_mean:.5f} ({args.reference}); predicted "
          f"start: cosine over {report['steps']} steps")
    for lr, r in report["lrs"].items():
        print(f"lr {lr:>6}: mean gain {r['mean_gain']:.5f} = {r['share_of_fast_percent']:5.1f}% of the reference's "
              f"({r['median_steps']:.0f} steps in {args.budget} s; longest fit {r['max_seconds']} s)")


if __name__ == "__main__":
    main()
