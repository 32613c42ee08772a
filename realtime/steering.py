"""The live loop's steering: re-fit the text-steered EQ on the newest seconds of the stream, again and again.

``LiveSteerer`` does one update: it takes the last window of the stream (mono, the stream's rate), the words, and
the EQ playing now, and returns the next EQ (physical bands at the stream's rate, loudness compensated). It runs the
same objective as ``timbreclip eq`` (``neural.steering.steer``), warm-started from the EQ now playing so the EQ
evolves instead of jumping, with a small step count and a wall-clock budget so an update lands quickly. Silence or
near silence holds the EQ: the worker never steers toward a noise floor.

``worker_loop`` runs updates in a thread or in a separate process (the live loop's choice, see ``loop.py``); it
never touches the audio thread: it reads the shared ring buffer and sends settings back through a queue.
"""

from __future__ import annotations

import math
import os
import queue
import time
from dataclasses import dataclass, field, replace

import numpy as np

from timbreclip.dsp.descriptors import peak_dbfs
from timbreclip.dsp.loudness import loudness_lufs, match_and_guard
from timbreclip.dsp.settings import EQSettings

SILENCE_DBFS = -60.0  # RMS of the window below this holds the EQ
WINDOW_SECONDS = 4.0  # what each update listens to (the model's window)
MIN_WINDOW_SECONDS = 1.0  # an update waits until this much has been heard
MAX_LOUDNESS_DB = 12.0  # loudness compensation is bounded
WORKER_NICE = 10


@dataclass
class SteeringUpdate:
    """One update's result. ``settings`` is the steered EQ (amount 1) with its loudness compensation as
    ``output_gain_db``; ``held`` says why nothing was fitted (``None`` when it was)."""

    id: int
    window_end_frame: int
    window_end_time: float
    prompts: dict[str, float]
    source_weight: float
    settings: EQSettings | None = None
    similarity: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    held: str | None = None


def live_config(time_budget_s: float | None, steps: int = 16, fast_predict: bool = False,
                learned_steps: int | None = None):
    """The steering config of a live update: few warm-started steps, early exit, a wall-clock budget; or, with
    ``fast_predict``, the one-pass predictor alone (milliseconds: updates many times a second), taking
    ``learned_steps`` of its learned steps (None: all)."""
    from timbreclip.neural.steering import SteeringConfig

    if fast_predict:
        return SteeringConfig(init="predict", steps=0, time_budget_s=None, learned_steps=learned_steps)
    return SteeringConfig(steps=steps, lr=0.1, patience=6, time_budget_s=time_budget_s)


def rms_dbfs(x: np.ndarray) -> float:
    return 10.0 * math.log10(float(np.mean(np.asarray(x, np.float64) ** 2)) + 1e-20)


class LiveSteerer:
    """One steering update at a time (see module docstring). ``model``: a torch TimbreCLIP."""

    def __init__(self, model, sample_rate: float, config) -> None:
        self.model = model
        self.sample_rate = float(sample_rate)
        self.config = config

    def update(self, update_id: int, window: np.ndarray, end_frame: int, end_time: float,
               prompts: dict[str, float], source_weight: float, start: EQSettings | None) -> SteeringUpdate:
        import torch

        from timbreclip.neural.frontend import prepare_audio
        from timbreclip.neural.steering import steer

        out = SteeringUpdate(update_id, end_frame, end_time, dict(prompts), source_weight)
        if len(window) < MIN_WINDOW_SECONDS * self.sample_rate:
            out.held = "listening"
            return out
        level = rms_dbfs(window)
        if level < SILENCE_DBFS:
            out.held = f"silence ({level:.0f} dBFS)"
            return out
        started = time.perf_counter()
        windows = torch.from_numpy(prepare_audio(window[-int(WINDOW_SECONDS * self.sample_rate):], self.sample_rate,
                                                 self.model.config.frontend))
        result = steer(self.model, windows, prompts, source_weight, self.config, start=start)
        settings = result.eq.to_settings(self.sample_rate)
        equalised = replace(settings, output_gain_db=0.0)(window, self.sample_rate)
        gain = match_and_guard(loudness_lufs(window, self.sample_rate), loudness_lufs(equalised, self.sample_rate),
                               peak_dbfs(equalised), limit_db=MAX_LOUDNESS_DB)
        settings.output_gain_db = gain.total_db
        equalised *= np.float32(10 ** (gain.total_db / 20))
        settings.provenance = {"prompts": dict(prompts), "source_weight": source_weight, "live_update": update_id,
                               "loudness_compensation_db": round(gain.match_db, 3),
                               "anti_clip_db": round(gain.clip_db, 3)}
        with torch.no_grad():
            text = self.model.embed_text(list(prompts))
            z = self.model.embed_audio(equalised, self.sample_rate)
        out.similarity = dict(zip(prompts, (text @ z).tolist()))
        out.settings = settings
        out.steps = result.steps
        out.seconds = time.perf_counter() - started
        return out


def worker_loop(ring, commands, results, model_dir: str | None, sample_rate: float, update_every_s: float,
                time_budget_s: float | None, torch_threads: int = 1, device: str = "cpu",
                fast_predict: bool = False, learned_steps: int | None = None) -> None:
    """Steer forever: every ``update_every_s`` (or as soon as the last update is done, if it took longer) fit the
    EQ to the ring's newest window and put a ``SteeringUpdate`` on ``results``.

    ``commands`` carries ``("target", prompts, source_weight)``, ``("hold", bool)``, ``("start", settings dict or
    None)`` and ``("stop",)``. The first ``("target", ...)`` must come before updates start. Runs in a thread or a
    spawned process (then ``ring`` is ``(shared memory name, capacity)``).
    """
    import torch

    from timbreclip.neural.model import TimbreCLIP

    torch.set_num_threads(torch_threads)  # leave the other core to the audio thread
    try:  # on Linux this lowers the calling thread only: the worker yields the CPU to the loop's control thread,
        os.nice(WORKER_NICE)  # which must run promptly whenever it holds the GIL the audio callback waits for
    except OSError:
        pass
    attached = isinstance(ring, tuple)
    if attached:
        from .ring import AudioRing

        ring = AudioRing.attach(*ring)
    from timbreclip.neural.model import resolve_device

    model = TimbreCLIP.load(model_dir).to(resolve_device(device))
    model.eval()
    steerer = LiveSteerer(model, sample_rate, live_config(time_budget_s, fast_predict=fast_predict,
                                                          learned_steps=learned_steps))
    # One update on noise before saying ready: torch loads and initialises its kernels lazily (first forward and
    # backward), and that burst of page faults and allocations belongs before the stream starts, not in it.
    noise = (0.1 * np.random.default_rng(0).standard_normal(int(WINDOW_SECONDS * sample_rate))).astype(np.float32)
    warm = steerer.update(0, noise, 0, 0.0, {"warm": 1.0}, 0.5, None)
    results.put(("warmup", warm))  # the control side unpacks one result before the stream starts, too
    prompts: dict[str, float] = {}
    source_weight = 0.5
    hold = False
    start: EQSettings | None = None
    next_id = 1
    due = time.perf_counter()
    results.put(("ready",))
    try:
        while True:
            timeout = max(0.0, due - time.perf_counter())
            try:
                message = commands.get(timeout=timeout)
            except queue.Empty:
                message = None
            if message is not None:
                kind = message[0]
                if kind == "stop":
                    return
                if kind == "target":
                    prompts, source_weight = dict(message[1]), float(message[2])
                elif kind == "hold":
                    hold = bool(message[1])
                elif kind == "start":
                    start = None if message[1] is None else EQSettings.from_dict(message[1])
                continue
            due = time.perf_counter() + update_every_s
            if hold or not prompts:
                continue
            window, end_frame, end_time = ring.latest(int(WINDOW_SECONDS * sample_rate))
            try:
                update = steerer.update(next_id, window, end_frame, end_time, prompts, source_weight, start)
            except Exception as err:  # a failed fit must not end the loop: say so and keep the EQ playing
                update = SteeringUpdate(next_id, end_frame, end_time, dict(prompts), source_weight,
                                        held=f"steering failed: {type(err).__name__}: {err}")
            next_id += 1
            if update.settings is not None:
                start = update.settings
            results.put(("update", update))
    finally:
        if attached:
            ring.close()
