"""Biquad engine benchmark: an 8-band stereo EQ on 60 s of 48 kHz audio, in one process.

Compares the numba engine (whole signal and 256-frame blocks) with scipy.signal.sosfilt (with zi, same blocks) and
a pedalboard chain (same blocks, reset=False). Prints frames per second, the ratios, and the share of a 256-frame
block's real-time budget the engine uses.

    python benchmarks/bench_biquads.py [--json] [--seconds 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.signal

from timbreclip.dsp.engine import BiquadCascade
from timbreclip.dsp.settings import Band, EQSettings

RATE = 48000
BLOCK = 256


def settings() -> EQSettings:
    return EQSettings(RATE, [
        Band("low_shelf", 80.0, 3.0, 0.7), Band("peak", 200.0, -2.0, 1.0), Band("peak", 500.0, 1.5, 1.4),
        Band("peak", 1000.0, -3.0, 2.0), Band("peak", 2500.0, 2.0, 1.0), Band("peak", 5000.0, -1.0, 0.8),
        Band("peak", 9000.0, 2.5, 1.2), Band("high_shelf", 12000.0, -2.0, 0.7),
    ])


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    s = settings()
    sos = s.sos()
    frames = int(args.seconds * RATE)
    x = (np.random.default_rng(0).standard_normal((2, frames)) * 0.1).astype(np.float32)
    blocks = [np.ascontiguousarray(x[:, i:i + BLOCK]) for i in range(0, frames, BLOCK)]
    out = np.empty((2, BLOCK), np.float32)

    def numba_whole():
        BiquadCascade(sos, 2).process(x)

    def numba_blocks():
        c = BiquadCascade(sos, 2)
        for b in blocks:
            c.process(b, out=out[:, : b.shape[1]])

    def scipy_whole():
        scipy.signal.sosfilt(sos, x, axis=-1)

    def scipy_blocks():
        zi = np.zeros((sos.shape[0], 2, 2))
        for b in blocks:
            _, zi[:] = scipy.signal.sosfilt(sos, b, axis=-1, zi=zi)

    board = s.to_pedalboard()

    def pedalboard_blocks():
        board.reset()
        for b in blocks:
            board(b, RATE, reset=False)

    BiquadCascade(sos, 2).warm_up()
    numba_blocks()  # compile both layouts before timing
    results = {}
    for name, fn in (("numba_whole", numba_whole), ("numba_blocks", numba_blocks), ("scipy_whole", scipy_whole),
                     ("scipy_blocks", scipy_blocks), ("pedalboard_blocks", pedalboard_blocks)):
        results[name] = frames / best_of(fn, args.repeats)

    # one 256-frame block against its real-time budget (5.33 ms at 48 kHz): median over many calls
    c = BiquadCascade(sos, 2)
    per_block = []
    for b in blocks[:2000]:
        t0 = time.perf_counter_ns()
        c.process(b, out=out)
        per_block.append(time.perf_counter_ns() - t0)
    block_us = float(np.median(per_block)) / 1e3
    block_p99_us = float(np.percentile(per_block, 99)) / 1e3
    budget_us = BLOCK / RATE * 1e6
    report = {
        "frames_per_second": {k: round(v) for k, v in results.items()},
        "ratios": {
            "numba_blocks / scipy_blocks": results["numba_blocks"] / results["scipy_blocks"],
            "numba_blocks / pedalboard_blocks": results["numba_blocks"] / results["pedalboard_blocks"],
            "numba_whole / scipy_whole": results["numba_whole"] / results["scipy_whole"],
        },
        "block_256": {"median_us": block_us, "p99_us": block_p99_us, "budget_us": budget_us,
                      "median_share_of_budget_percent": 100 * block_us / budget_us},
        "goals": {"numba_blocks >= 4x scipy_blocks": results["numba_blocks"] / results["scipy_blocks"] >= 4,
                  "numba_blocks >= 2.5x pedalboard_blocks":
                      results["numba_blocks"] / results["pedalboard_blocks"] >= 2.5,
                  "block under 1% of budget": block_us / budget_us < 0.01},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"8-band stereo EQ, {args.seconds:g} s at {RATE} Hz, best of {args.repeats}")
    for k, v in results.items():
        print(f"  {k:<20} {v / 1e6:8.2f} M frames/s  ({v / RATE:8.0f}x real time)")
    for k, v in report["ratios"].items():
        print(f"  {k:<36} {v:6.2f}x")
    print(f"  one 256-frame block: median {block_us:.1f} us, p99 {block_p99_us:.1f} us = "
          f"{100 * block_us / budget_us:.2f}% of its {budget_us:.0f} us budget")
    for k, v in report["goals"].items():
        print(f"  goal {k}: {'met' if v else 'NOT met'}")


if __name__ == "__main__":
    main()
