"""How many learned steps should the one-pass predictor take? The same predictor stopped after 0, 1, 2 ... learned
steps (each step one more probe of the objective: a forward and a backward pass through the encoder), on the same
notes and prompts.

On validation notes (``--split validation``; decide here, never on the Tim family), for each prompt of the steering
benchmark: the fast default fit (fixed steps, as ``eq`` fits offline) is the reference; for each step count, the
prediction alone (its share of the reference's cosine improvement, the notes it moves the right way, the time of
one pass: the network and its probes, the embeddings not included) and the optimiser started from it with 0.3 s per
window (its share of the reference's objective gain, as the steering benchmark's "as the optimiser's start").

    python benchmarks/predictor_steps.py --data DIR --split validation --notes 16 [--learned-steps 1 2]
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import torch

from eq_steering import PROMPTS, BASS_MAX_PITCH, measure, mode_config, note_arguments, pick_notes
from timbreclip.defaults import load_torch_model
from timbreclip.dsp.audio_io import read_audio
from timbreclip.dsp.errors import TimbreclipError
from timbreclip.neural.frontend import prepare_audio
from timbreclip.neural.predictor import find_predictor, predictor_inputs
from timbreclip.neural.steering import SteeringConfig, steer, steering_objective


def main() -> None:
    ap = note_arguments(__doc__.splitlines()[0], notes=16)
    ap.add_argument("--learned-steps", type=int, nargs="+", default=None,
                    help="step counts to compare (default: 0 up to all the predictor has)")
    ap.add_argument("--budget", type=float, default=0.3, help="seconds per window for the started fit (default 0.3)")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = load_torch_model(args.model)
    fe = model.config.frontend
    full = find_predictor(model)
    if full is None:
        raise SystemExit("the model has no steering predictor beside it")
    counts = args.learned_steps if args.learned_steps is not None else list(range(len(full.steps()) + 1))
    for c in counts:
        try:
            full.check_learned_steps(c, "--learned-steps")
        except TimbreclipError as err:
            raise SystemExit(str(err)) from None
    predictors = {c: full.truncated(c) for c in counts}
    reference = mode_config("default", None)  # fixed steps: the steering benchmark's one-pass reference
    alone = SteeringConfig.offline(init="predict", steps=0)
    started = replace(mode_config("default", None, budget=True), init="predict")
    rows = {c: {"share": [], "cos": [], "ms": [], "start_gain": [], "start_steps": [], "right": {}} for c in counts}
    ref_cos, ref_gain = [], []
    for n in pick_notes(args.data, args.split, args.notes, args.seed, model):
        audio, rate = read_audio(n.path)
        audio = audio.mean(axis=0)
        windows = torch.from_numpy(prepare_audio(audio, rate, fe))
        with torch.no_grad():
            power = model.frontend.power(windows)
        for prompt, (kind, sign) in PROMPTS.items():
            ref = steer(model, windows, {prompt: 1.0}, 0.5, reference)
            ref_cos.append(ref.improvement)
            ref_gain.append(ref.objective_before - ref.objective_after)
            before = measure(kind, audio, rate)
            for c, predictor in predictors.items():
                r = rows[c]
                one = steer(model, windows, {prompt: 1.0}, 0.5, alone, predictor=predictor)
                r["cos"].append(one.improvement)
                if ref.improvement > 1e-6:
                    r["share"].append(one.improvement / ref.improvement)
                if kind != "low_share" or n.pitch <= BASS_MAX_PITCH:
                    after = measure(kind, one.eq.to_settings(rate)(audio, rate), rate)
                    change = (after - before) if kind == "low_share" else np.log2(max(after, 1e-9) / before)
                    r["right"].setdefault(prompt, []).append(sign * change > 0)
                z, target, profile, sensitivity = predictor_inputs(model, predictor, power, {prompt: 1.0}, 0.5)
                objective = steering_objective(model, power, target, alone)
                with torch.no_grad():
                    predictor.predict(z[None], target[None], profile, sensitivity, objective, fe.sample_rate)
                    t0 = time.perf_counter()
                    predictor.predict(z[None], target[None], profile, sensitivity, objective, fe.sample_rate)
                    r["ms"].append(1000 * (time.perf_counter() - t0))
                q = steer(model, windows, {prompt: 1.0}, 0.5, replace(started, time_budget_s=args.budget / len(windows)),
                          predictor=predictor)
                r["start_gain"].append(q.objective_before - q.objective_after)
                r["start_steps"].append(q.steps)
    report = {"fits": len(ref_cos), "budget_s": args.budget, "reference_mean_cos": round(float(np.mean(ref_cos)), 5),
              "learned_steps": {str(c): {
                  "median_share_of_fast_percent": round(100 * float(np.median(r["share"])), 1),
                  "mean_share_of_fast_percent": round(100 * float(np.sum(r["cos"]) / np.sum(ref_cos)), 1),
                  "worst_prompt_right_way_percent": round(100 * min(float(np.mean(v)) for v in r["right"].values()), 1),
                  "median_pass_ms": round(float(np.median(r["ms"])), 2),
                  "p95_pass_ms": round(float(np.percentile(r["ms"], 95)), 2),
                  "as_start_share_of_fast_percent": round(100 * float(np.sum(r["start_gain"]) / np.sum(ref_gain)), 1),
                  "as_start_median_steps": float(np.median(r["start_steps"]))} for c, r in rows.items()}}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['fits']} fits; reference: the fast default fit (fixed steps), mean cosine improvement "
          f"{report['reference_mean_cos']}")
    print(f"{'learned steps':>13} {'median share':>12} {'ratio of means':>14} {'worst right way':>15} "
          f"{'pass ms (p95)':>14} {'as start, ' + str(args.budget) + ' s':>15} {'Adam steps':>10}")
    for c, r in report["learned_steps"].items():
        print(f"{c:>13} {r['median_share_of_fast_percent']:>11.1f}% {r['mean_share_of_fast_percent']:>13.1f}% "
              f"{r['worst_prompt_right_way_percent']:>14.1f}% {r['median_pass_ms']:>6.1f} ({r['p95_pass_ms']:>5.1f}) "
              f"{r['as_start_share_of_fast_percent']:>14.1f}% {r['as_start_median_steps']:>10.0f}")


if __name__ == "__main__":
    main()
