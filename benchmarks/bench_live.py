"""Live-loop benchmark on a private JACK dummy server: stereo 48 kHz, each block size with steering off and on.

For every run: callback time p50/p99/max (us) and as a share of the block period, xruns (the stream's status flags
and the JACK server's own log), steering update latency p50/p95, this process's CPU while the stream ran, and the
CPU the hypervisor took from the machine meanwhile (a VM's real-time figures mean little when that is large).

The peer row ``server`` is the same JACK dummy server with no client at all, for the same time: the xruns the server
reports with nothing to run are what the machine itself costs, the floor the loop's own count is read against.

    python benchmarks/bench_live.py [--json] [--seconds 60] [--blocks 64 128 256] [--modes server off process thread]
        [--callbacks native python] [--update-every 0.5] [--fast-predict [--learned-steps N]] [--model DIR]

``--callbacks``: the loop's compiled callback (``native``, the default: PortAudio calls it directly, no GIL) and
sounddevice's Python callback (``python``, the peer it replaced) are run side by side, each mode and block size.

Goals (issue 12): at 128 frames with steering every 0.5 s, callback p99 under 10% of the block period and zero
xruns in 60 s; update latency p95 under 0.5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

import numpy as np

from timbreclip.defaults import default_model_path
from timbreclip.dsp.audio_io import write_audio
from timbreclip.realtime.devices import refresh_audio
from timbreclip.realtime.jackrig import JackServer
from timbreclip.realtime.loop import LiveConfig, cpu_steal_ms
from timbreclip.realtime.stream import run_live

RATE = 48000


def test_signal(path: str) -> str:
    """A bright, decaying saw-like tone, looped as the live source."""
    t = np.arange(4 * RATE) / RATE
    x = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 40)) * 0.15 * np.exp(-0.3 * t)
    write_audio(path, np.stack([x, x]).astype(np.float32), RATE)
    return path


def run_server_alone(block: int, seconds: float) -> dict:
    """The peer: the JACK dummy server at this block size with no client, for ``seconds``."""
    with JackServer(rate=RATE, period=block) as server:
        before, steal = server.xruns(), cpu_steal_ms()
        time.sleep(seconds)
        xruns, steal_end = server.xruns() - before, cpu_steal_ms()
    return {"mode": "server", "seconds": seconds, "block_frames": block, "block_period_us": 1e6 * block / RATE,
            "xruns": None, "server_xruns": xruns,
            "cpu_steal_ms": None if steal is None or steal_end is None else steal_end - steal}


def run_one(block: int, mode: str, seconds: float, update_every: float, source: str, callback: str = "native",
            fast_predict: bool = False, model_dir: str | None = None, learned_steps: int | None = None) -> dict:
    with JackServer(rate=RATE, period=block) as server:
        refresh_audio()
        config = LiveConfig(prompts={"bright": 1.0}, sample_rate=RATE, channels=2, blocksize=block,
                            update_every_s=update_every, worker=mode, model_dir=model_dir or str(default_model_path()),
                            callback=callback, fast_predict=fast_predict, learned_steps=learned_steps)
        before = server.xruns()
        with contextlib.redirect_stdout(sys.stderr):  # the loop's progress lines; stdout stays the report (--json)
            run = run_live(config, play=source, duration_s=seconds, read_stdin=False, interactive=False)
        stats = run.live.stats_dict()
        stats["server_xruns"] = server.xruns() - before
        import sounddevice as sd

        sd._terminate()  # before the server goes
    sd._initialize()
    stats.update({"mode": mode, "seconds": seconds, "exit": run.reason, "fast_predict": fast_predict,
                  "learned_steps": learned_steps, "model": model_dir or "shipped"})
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--table-from", metavar="JSON", help="print the table of a saved --json run (runs nothing)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--blocks", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--modes", nargs="+", default=["server", "off", "process"],
                        choices=("server", "off", "process", "thread"),
                        help="server: the JACK server alone, no client (the peer); off: the loop without steering")
    parser.add_argument("--callbacks", nargs="+", default=["native"], choices=("native", "python"),
                        help="the audio callbacks to run (native: compiled; python: sounddevice's, the peer)")
    parser.add_argument("--update-every", type=float, default=0.5)
    parser.add_argument("--fast-predict", action="store_true",
                        help="updates by the one-pass steering predictor (the live loop's --fast-predict) instead of "
                             "the optimiser; pair it with --update-every 0.1")
    parser.add_argument("--learned-steps", type=int, nargs="+", default=[None],
                        help="with --fast-predict: the predictor's learned steps per update (the live loop's "
                             "--learned-steps; several: each in turn, alternated with the modes; default: all)")
    parser.add_argument("--model", help="model folder the loop steers with (default: the shipped model)")
    args = parser.parse_args()
    if args.learned_steps != [None] and not args.fast_predict:
        parser.error("--learned-steps is for --fast-predict")
    if args.table_from:
        try:
            with open(args.table_from) as f:
                print_table(json.load(f))
        except (OSError, ValueError, KeyError) as err:
            print(f"--table-from {args.table_from}: not a saved bench_live --json run ({err})", file=sys.stderr)
            sys.exit(2)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        source = test_signal(os.path.join(tmp, "tone.wav"))
        for block in args.blocks:
            for mode in args.modes:
                for callback, steps in ((None, None),) if mode == "server" else \
                        [(c, n) for c in args.callbacks for n in args.learned_steps]:
                    row = run_server_alone(block, args.seconds) if mode == "server" else \
                        run_one(block, mode, args.seconds, args.update_every, source, callback, args.fast_predict,
                                args.model, steps)
                    rows.append(row)
                    print(f"done {block} frames, steering {mode}" + (f", {callback} callback" if callback else "")
                          + (f", {steps} learned steps" if steps is not None else ""), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    """The README's table; "longest gap" is the most time from one callback's start to the next's (a late start,
    while the callback's own time stays short, is time the thread waited for a CPU or the GIL)."""
    print("| frames | period | steering | callback | callback p50 / p99 / max (us) | p99 share | longest gap | "
          "xruns (stream / server) | updates | update latency p50 / p95 (s) | process CPU | CPU steal |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["mode"] == "server":
            print(f"| {r['block_frames']} | {r['block_period_us'] / 1000:.2f} ms | peer: the server alone | - | - | "
                  f"- | - | - / {r['server_xruns']} | - | - | - | {r['cpu_steal_ms']:.0f} ms |")
            continue
        us, lat = r["callback_us"], r["update_latency_s"]
        lat_text = f"{lat['p50']:.3f} / {lat['p95']:.3f}" if lat["p50"] is not None else "-"
        gap = (r.get("callback_gap_us") or {}).get("max")
        gap_text = f"{gap / 1000:.1f} ms" if gap is not None else "-"
        print(f"| {r['block_frames']} | {r['block_period_us'] / 1000:.2f} ms | {r['mode']}"
              f"{', fast-predict' if r.get('fast_predict') else ''}"
              f"{'' if r.get('learned_steps') is None else ', %d learned step%s' % (r['learned_steps'], 's' * (r['learned_steps'] != 1))} | "
              f"{r.get('callback', 'python')} | {us['p50']:.0f} / {us['p99']:.0f} / {us['max']:.0f} | {r['callback_load_p99']:.1%} | {gap_text} | "
              f"{r['xruns']} / {r['server_xruns']} | {r['updates']} | {lat_text} | "
              f"{r['process_cpu_percent']:.1f}% | {r['cpu_steal_ms']:.0f} ms |")


if __name__ == "__main__":
    main()
