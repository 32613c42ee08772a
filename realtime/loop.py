"""The live loop: audio in -> EQ -> audio out, the EQ steered continuously toward words.

Three roles, three threads (or two threads and a process):
- the audio thread: copies the block into the ring buffer and runs the numba engine. On a device it is compiled code
  that PortAudio calls directly (``native.py``: no GIL, no Python object per block); ``LiveEQ.audio_block`` is the
  same steps in Python (the offline clock, and ``--callback python``). It allocates nothing, takes no locks, calls no
  model; it reads new coefficient sets from the engine's single-producer/single-consumer handoff once per block.
- the control thread (``LiveEQ.control_step``, the command's main loop): the ONLY producer of coefficient sets. It
  applies steering results, the amount, bypass and hold, and drains the callback's timing records into statistics.
  MIDI and terminal input never touch the engine: they post commands to a queue the control thread drains.
- the steering worker (``steering.worker_loop``): in a thread, or in a separate process that reads the ring buffer
  through shared memory. It never sees the audio thread: windows come from the ring, results go back by queue.

``run_offline`` plays a file through the same ``LiveEQ`` on a simulated clock (steering runs inline and its result
lands at a simulated time), so a "live take" renders faster than real time and the same way every time.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field

import numba
import numpy as np

from timbreclip.dsp.engine import BiquadCascade
from timbreclip.dsp.parametric_eq import DEFAULT_BAND_TYPES
from timbreclip.dsp.settings import AMOUNT_RANGE, Band, EQSettings

from .steering import WINDOW_SECONDS, LiveSteerer, SteeringUpdate, live_config

TIMING_SLOTS = 1 << 16  # callback timing records kept between two control steps (a power of two)
RING_SECONDS = 10.0


def flat_sos(sections: int) -> np.ndarray:
    sos = np.zeros((sections, 6))
    sos[:, 0] = sos[:, 3] = 1.0
    return sos


def cpu_steal_ms() -> float | None:
    """CPU time the hypervisor took from this (virtual) machine since boot, all cores, in ms (Linux; else None).
    Real-time results on a VM are only as good as the CPU it was given: the live statistics report it."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return float(fields[8]) * 1000.0 / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


@numba.njit(cache=True)
def _loop_copy(source, position, out):  # pragma: no cover - compiled
    """Fill ``out (channels, frames)`` from ``source (channels, n)`` at ``position[0]``, looping."""
    channels, frames = out.shape
    n = source.shape[1]
    p = position[0]
    for i in range(frames):
        for c in range(channels):
            out[c, i] = source[c, p]
        p += 1
        if p >= n:
            p = 0
    position[0] = p


class LoopedFile:
    """A file played in a loop as the live loop's source (``--play``): converted once to the stream's rate and
    channel count, then copied block by block without allocation."""

    def __init__(self, audio: np.ndarray, rate: float, stream_rate: float, channels: int, max_frames: int) -> None:
        from timbreclip.neural.frontend import resample

        x = np.asarray(audio, np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if rate != stream_rate:
            x = resample(x, rate, stream_rate)
        if x.shape[0] != channels:  # mono spreads to every channel; otherwise mix down, then spread
            x = np.repeat(x.mean(axis=0, keepdims=True), channels, axis=0)
        self.data = np.ascontiguousarray(x, dtype=np.float32)
        self.position = np.zeros(1, np.int64)
        self.block = np.zeros((channels, max_frames), np.float32)
        _loop_copy(self.data, np.zeros(1, np.int64), self.block)  # compile now, not in the callback

    def next_block(self, frames: int) -> np.ndarray:
        block = self.block if frames == self.block.shape[1] else self.block[:, :frames]
        _loop_copy(self.data, self.position, block)
        return block


@dataclass
class LiveConfig:
    prompts: dict[str, float]
    source_weight: float = 0.5
    amount: float = 1.0
    sample_rate: float = 48000.0
    channels: int = 2
    blocksize: int = 256
    update_every_s: float = 0.5
    model_dir: str | None = None  # a TimbreCLIP folder (the shell resolves the shipped default)
    device: str = "cpu"  # where the steering worker runs the model (cpu, cuda, cuda:N, auto)
    fast_predict: bool = False  # updates by the one-pass steering predictor instead of the optimiser
    learned_steps: int | None = None  # with fast_predict: the predictor's learned steps per update (None: all)
    worker: str = "process"  # "process", "thread" (or "inline": the offline clock)
    time_budget_s: float | None = None  # per update; default: 0.6 x update_every, at most 0.35 s
    glide_s: float = 0.020
    callback: str = "native"  # "native": PortAudio calls compiled code (native.py); "python": sounddevice's callback

    def budget(self) -> float:
        return self.time_budget_s if self.time_budget_s is not None else min(0.35, 0.6 * self.update_every_s)


@dataclass
class LiveStats:
    callback_us: list = field(default_factory=list)
    gaps_us: list = field(default_factory=list)  # from one callback's start to the next's
    latencies_s: list = field(default_factory=list)
    updates: int = 0
    held: int = 0


class LiveEQ:
    """The live loop's state: the engine, the ring buffer, the steered EQ and the controls (see module docstring)."""

    def __init__(self, config: LiveConfig, shared_ring: bool = False) -> None:
        from .ring import AudioRing

        self.config = config
        self.rate = float(config.sample_rate)
        self.channels = int(config.channels)
        sections = len(DEFAULT_BAND_TYPES)
        self.cascade = BiquadCascade(flat_sos(sections), self.channels, sample_rate=self.rate,
                                     glide_frames=int(round(config.glide_s * self.rate)))
        self.cascade.prepare(self.channels, config.blocksize)
        capacity = int(RING_SECONDS * self.rate)
        self.ring = AudioRing.create_shared(capacity) if shared_ring else AudioRing(capacity)
        self.ring.prepare(self.channels)
        # audio thread records (preallocated; the control thread drains them)
        self.block_start = np.zeros(TIMING_SLOTS, np.float64)
        self.block_us = np.zeros(TIMING_SLOTS, np.float64)
        self.block_seq = np.zeros(TIMING_SLOTS, np.int64)  # the coefficient set each block played (its sequence no.)
        self.audio_counts = np.zeros(2, np.int64)  # blocks, xruns: arrays, so a native callback can count too
        self.xrun_flags = np.zeros(5, np.int64)  # input underflow, input overflow, output underflow/overflow, priming
        self.xrun_blocks = np.full(16, -1, np.int64)  # the block indices of the first 16 xruns (diagnostics)
        # Fault in every page the audio thread will write before it runs: fresh zeroed memory is mapped lazily, and
        # the ring (about 1 KB per 256-frame block, in shared memory for a worker process) would otherwise take a
        # page fault every few blocks inside the callback.
        for array in (self.ring.data, self.block_start, self.block_us, self.block_seq):
            array.fill(0)
        # control state
        self.prompts = dict(config.prompts)
        self.source_weight = float(config.source_weight)
        self.amount = float(config.amount)
        self.bypass = False
        self.hold = False
        self.steered = EQSettings(self.rate, [Band(t, f, 0.0) for t, f in
                                              zip(DEFAULT_BAND_TYPES, (120, 250, 500, 1000, 2000, 3500, 5000, 6000))])
        self.last_update: SteeringUpdate | None = None
        self.update_id = 0
        self.pending_latency: dict[int, float] = {}
        self.commands: queue.SimpleQueue = queue.SimpleQueue()
        self.messages: queue.SimpleQueue = queue.SimpleQueue()  # one-line messages for the user
        self.stats = LiveStats()
        self._drained = 0
        self.steal_ms: float | None = None  # CPU stolen by the hypervisor while the stream ran (set by the runner)
        self.cpu_percent: float | None = None  # this process's CPU while the stream ran, % of one core

    # -- the audio thread -----------------------------------------------------------------------------------
    @property
    def blocks(self) -> int:
        """Blocks played so far (the audio thread's count)."""
        return int(self.audio_counts[0])

    @property
    def xruns(self) -> int:
        """Blocks the stream flagged (under/overflow, priming)."""
        return int(self.audio_counts[1])

    def audio_block(self, src: np.ndarray, dst: np.ndarray, now: float) -> None:
        """One block: ``src``/``dst`` ``(channels, frames)`` float32 (``indata.T``/``outdata.T``). The Python face
        of the callback (the offline clock, ``--callback python``); ``native.py`` is the same steps compiled."""
        self.ring.write(src, now)
        self.cascade.process(src, out=dst)
        counts = self.audio_counts
        k = counts[0] & (TIMING_SLOTS - 1)
        self.block_start[k] = now
        self.block_us[k] = (time.perf_counter() - now) * 1e6
        self.block_seq[k] = self.cascade.counters[1]
        counts[0] += 1

    def note_status(self, status) -> None:
        """Count a stream's status flags as one xrun (audio thread: integer increments only)."""
        counts = self.audio_counts
        if counts[1] < 16:
            self.xrun_blocks[counts[1]] = counts[0]
        counts[1] += 1
        if status.input_underflow:
            self.xrun_flags[0] += 1
        if status.input_overflow:
            self.xrun_flags[1] += 1
        if status.output_underflow:
            self.xrun_flags[2] += 1
        if status.output_overflow:
            self.xrun_flags[3] += 1
        if status.priming_output:
            self.xrun_flags[4] += 1

    # -- the control thread ---------------------------------------------------------------------------------
    def playing_settings(self) -> EQSettings:
        """The EQ the audio thread is told to play: the steered bands scaled by the amount (flat when bypassed)."""
        if self.bypass:
            return EQSettings(self.rate, [Band(b.type, b.freq_hz, 0.0, b.q) for b in self.steered.bands], 0.0,
                              {"bypass": True})
        played = self.steered.scaled(self.amount)
        provenance = {"steered_with": dict(self.steered.provenance or {}), "amount": self.amount,
                      "prompts": dict(self.prompts), "source_weight": self.source_weight}
        return EQSettings(self.rate, played.bands, played.output_gain_db, provenance)

    def publish(self) -> None:
        settings = self.playing_settings()
        self.cascade.set_sos(settings.sos(self.rate), settings.output_gain_db, tag=self.update_id)

    def apply_update(self, update: SteeringUpdate) -> None:
        self.last_update = update
        if update.settings is None:
            self.stats.held += 1
            return
        self.stats.updates += 1
        self.update_id = update.id
        self.steered = update.settings
        self.pending_latency[update.id] = update.window_end_time
        self.publish()

    def handle(self, command: tuple) -> str | None:
        """Apply one control command (from MIDI or the terminal); returns what the worker must hear, if anything.
        Commands: ("prompts", dict), ("weight", index, w), ("source_weight", w), ("amount", a), ("amount_step", d),
        ("bypass", bool | None = toggle), ("hold", bool | None), ("save", path), ("quit",), ("empty",)."""
        kind = command[0]
        if kind == "empty":
            self.messages.put("ignored an empty prompt line: type some words, e.g. \"warm\" (the loop keeps playing)")
            return None
        if kind == "prompts":
            self.prompts = dict(command[1])
            self.messages.put("words: " + ", ".join(f"{p} x{w:g}" for p, w in self.prompts.items()))
            return "target"
        if kind == "weight":
            names = list(self.prompts)
            if command[1] < len(names):
                self.prompts[names[command[1]]] = float(command[2])
                return "target"
            return None
        if kind == "source_weight":
            self.source_weight = float(command[1])
            return "target"
        if kind in ("amount", "amount_step"):
            value = command[1] + (self.amount if kind == "amount_step" else 0.0)
            self.amount = min(max(value, AMOUNT_RANGE[0]), AMOUNT_RANGE[1])
            self.publish()
            return None
        if kind == "bypass":
            self.bypass = (not self.bypass) if command[1] is None else bool(command[1])
            self.publish()
            self.messages.put("bypass " + ("on" if self.bypass else "off"))
            return None
        if kind == "hold":
            self.hold = (not self.hold) if command[1] is None else bool(command[1])
            self.messages.put("hold " + ("on: the EQ is frozen" if self.hold else "off"))
            return "hold"
        if kind == "save":
            self.playing_settings().save(command[1])
            self.messages.put(f"saved the EQ playing now to {command[1]}")
            return None
        return kind  # "quit" and anything the caller handles

    def drain_timing(self) -> None:
        """Move the callback timing records written since the last call into the statistics."""
        end = self.blocks
        start = max(self._drained, end - TIMING_SLOTS + 1)
        if end > start:
            idx = np.arange(start, end) & (TIMING_SLOTS - 1)
            self.stats.callback_us.append(self.block_us[idx].copy())
            first = start - 1 if start - 1 > max(-1, end - TIMING_SLOTS) else start  # across two drains too
            starts = self.block_start[np.arange(first, end) & (TIMING_SLOTS - 1)]
            self.stats.gaps_us.append(np.diff(starts) * 1e6)
        self._drained = end
        # update latency: from the end of the window listened to until the first block that played its set
        tag, block = int(self.cascade.counters[2]), int(self.cascade.counters[3])
        if tag in self.pending_latency and block < self.blocks:
            played_at = self.block_start[block & (TIMING_SLOTS - 1)]
            self.stats.latencies_s.append(played_at - self.pending_latency.pop(tag))
            for old in [k for k in self.pending_latency if k < tag]:  # superseded before they played
                self.pending_latency.pop(old)

    def callback_us(self) -> np.ndarray:
        return np.concatenate(self.stats.callback_us) if self.stats.callback_us else np.zeros(0)

    def stats_dict(self) -> dict:
        us = self.callback_us()
        gaps = np.concatenate(self.stats.gaps_us) if self.stats.gaps_us else np.zeros(0)
        period_us = self.config.blocksize / self.rate * 1e6
        lat = np.asarray(self.stats.latencies_s)
        return {
            "callback": self.config.callback,
            "callbacks": int(self.blocks),
            "xruns": int(self.xruns),
            "xrun_flags": dict(zip(("input_underflow", "input_overflow", "output_underflow", "output_overflow",
                                    "priming_output"), self.xrun_flags.tolist())),
            "xrun_blocks": [int(b) for b in self.xrun_blocks if b >= 0],
            "callback_us": {"p50": _percentile(us, 50), "p99": _percentile(us, 99),
                            "max": float(us.max()) if len(us) else None},
            # a callback that starts late (the thread waited for the CPU or the GIL) shows as a gap past the period
            "callback_gap_us": {"p99": _percentile(gaps, 99), "max": float(gaps.max()) if len(gaps) else None},
            "block_period_us": period_us,
            "callback_load_p99": (_percentile(us, 99) / period_us) if len(us) else None,
            "updates": int(self.stats.updates),
            "updates_held": int(self.stats.held),
            "update_latency_s": {"p50": _percentile(lat, 50), "p95": _percentile(lat, 95)},
            "sample_rate": self.rate,
            "block_frames": self.config.blocksize,
            "channels": self.channels,
            "worker": self.config.worker,
            "cpu_steal_ms": self.steal_ms,
            "process_cpu_percent": self.cpu_percent,
        }

    def close(self) -> None:
        self.ring.close(unlink=True)


class SteeringWorker:
    """The steering worker in a thread or a spawned process, fed by the control thread."""

    def __init__(self, live: LiveEQ, mode: str) -> None:
        from .steering import worker_loop

        self.mode = mode
        config = live.config
        args_tail = (config.model_dir, live.rate, config.update_every_s, config.budget(), 1, config.device,
                     config.fast_predict, config.learned_steps)
        if mode == "process":
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            self.commands, self.results = ctx.Queue(), ctx.Queue()
            self._runner = ctx.Process(target=worker_loop, name="timbreclip-steering", daemon=True,
                                       args=((live.ring.shared_name, live.ring.capacity), self.commands,
                                             self.results) + args_tail)
        elif mode == "thread":
            self.commands, self.results = queue.Queue(), queue.Queue()
            self._runner = threading.Thread(target=worker_loop, name="timbreclip-steering", daemon=True,
                                            args=(live.ring, self.commands, self.results) + args_tail)
        else:
            raise ValueError(f"unknown worker mode {mode!r} (process or thread)")
        self.ready = False

    def start(self, prompts: dict[str, float], source_weight: float, timeout_s: float = 120.0) -> None:
        self.commands.put(("target", dict(prompts), source_weight))
        self._runner.start()
        deadline = time.monotonic() + timeout_s
        while not self.ready:
            try:
                message = self.results.get(timeout=0.5)
            except queue.Empty:
                if not self._runner.is_alive():
                    raise RuntimeError("the steering worker ended while loading the model") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("the steering worker did not start in time") from None
                continue
            if message[0] == "warmup" and message[1].settings is not None:  # the first unpickle and design, now
                message[1].settings.sos(message[1].settings.sample_rate)
            self.ready = message[0] == "ready"

    def alive(self) -> bool:
        return self._runner.is_alive()

    def send(self, *message) -> None:
        self.commands.put(message)

    def poll(self) -> list[SteeringUpdate]:
        out = []
        while True:
            try:
                message = self.results.get_nowait()
            except queue.Empty:
                return out
            if message[0] == "update":
                out.append(message[1])

    def stop(self) -> None:
        if self._runner.ident is None:  # never started
            return
        self.commands.put(("stop",))
        self._runner.join(timeout=5.0)
        if self.mode == "process" and self._runner.is_alive():
            self._runner.terminate()


def forward_command(live: LiveEQ, worker, command: tuple) -> str | None:
    """Apply a command in the control thread and tell the worker what changed. Returns "quit" to stop."""
    effect = live.handle(command)
    if effect == "target" and worker is not None:
        worker.send("target", dict(live.prompts), live.source_weight)
    elif effect == "hold" and worker is not None:
        worker.send("hold", live.hold)
    return effect if effect == "quit" else None


# -- the offline clock --------------------------------------------------------------------------------------------
def run_offline(config: LiveConfig, audio: np.ndarray, rate: float, sim_latency_s: float = 0.25, model=None,
                steps: int = 16, commands: dict[int, list[tuple]] | None = None) -> tuple[np.ndarray, LiveEQ]:
    """Play ``audio (channels, frames)`` through the live loop block by block on a simulated clock.

    Every ``update_every_s`` of simulated time the steering fits the window that ended then (inline, a fixed step
    count, no wall-clock budget: deterministic), and its result lands ``sim_latency_s`` later (at the next block
    boundary). ``commands`` maps a block index to control commands applied before that block. Returns the output
    and the ``LiveEQ`` (for its statistics and the EQ playing at the end).
    """
    from timbreclip.neural.model import TimbreCLIP

    config = LiveConfig(**{**config.__dict__, "sample_rate": float(rate), "channels": int(audio.shape[0]),
                           "worker": "inline"})
    live = LiveEQ(config)
    model = model if model is not None else TimbreCLIP.load(config.model_dir)
    steerer = LiveSteerer(model, rate, live_config(None, steps=steps, fast_predict=config.fast_predict,
                                                   learned_steps=config.learned_steps))
    block = config.blocksize
    frames = audio.shape[1]
    src = np.ascontiguousarray(np.asarray(audio, np.float32).T)  # (frames, channels), as a sound card hands it over
    out = np.empty_like(src)
    every = max(1, int(round(config.update_every_s * rate)))
    latency = int(round(sim_latency_s * rate))
    next_update = every
    pending: list[tuple[int, SteeringUpdate]] = []
    start: EQSettings | None = None
    update_id = 0
    window = int(WINDOW_SECONDS * rate)
    for index, first in enumerate(range(0, frames, block)):
        for command in (commands or {}).get(index, []):
            live.handle(command)
        while first >= next_update:  # the window that ended at next_update is fitted now, lands later
            update_id += 1
            end = next_update
            chunk = live.ring.latest(min(window, end))[0] if not live.hold else None
            if chunk is not None:
                update = steerer.update(update_id, chunk, end, end / rate, live.prompts, live.source_weight, start)
                if update.settings is not None:
                    start = update.settings
                pending.append((end + latency, update))
            next_update += every
        while pending and pending[0][0] <= first:
            _, update = pending.pop(0)
            live.apply_update(update)
            live.stats.latencies_s.append((first - update.window_end_frame) / rate)
            live.pending_latency.pop(update.id, None)
        stop = min(first + block, frames)
        now = time.perf_counter()
        live.audio_block(src[first:stop].T, out[first:stop].T, now)
        live.drain_timing()
    return np.ascontiguousarray(out.T), live


def settings_curve(settings: EQSettings, width: int = 48, lo_hz: float = 30.0, hi_hz: float = 16000.0) -> str:
    """The EQ curve as one line of block characters over log frequency, with its range in dB."""
    freqs = np.geomspace(lo_hz, min(hi_hz, 0.49 * settings.sample_rate), width)
    db = settings.response_db(freqs) - settings.output_gain_db
    span = max(3.0, float(np.abs(db).max()))
    levels = " ▁▂▃▄▅▆▇█"
    chars = [levels[int(round((v / span + 1) / 2 * (len(levels) - 1)))] for v in db]
    return f"{''.join(chars)}  ±{span:.1f} dB ({lo_hz:.0f} Hz..{freqs[-1] / 1000:.0f} kHz)"


def status_lines(live: LiveEQ, update_rate_hz: float | None = None) -> list[str]:
    """What the status line shows: words, the EQ curve, similarity, callback load, xruns, updates."""
    us = live.stats.callback_us[-1] if live.stats.callback_us else np.zeros(0)
    period_us = live.config.blocksize / live.rate * 1e6
    lat = live.stats.latencies_s[-20:]
    words = ", ".join(f"{p} x{w:g}" for p, w in live.prompts.items())
    flags = " ".join(name for name, on in (("BYPASS", live.bypass), ("HOLD", live.hold)) if on)
    sim = ""
    if live.last_update is not None and live.last_update.similarity:
        sim = "  ".join(f"{p} {s:+.2f}" for p, s in live.last_update.similarity.items())
    held = f" (held: {live.last_update.held})" if live.last_update is not None and live.last_update.held else ""
    load = (f"callback p99 {np.percentile(us, 99):.0f} us ({np.percentile(us, 99) / period_us:.1%}), "
            f"max {us.max():.0f} us" if len(us) else "callback -")
    return [
        f"words: {words}  source {live.source_weight:g}  amount {live.amount:.2f} {flags}".rstrip(),
        "EQ " + settings_curve(live.playing_settings()),
        "similarity now: " + (sim or "-") + held,
        f"{load}  xruns {live.xruns}  updates {live.stats.updates}"
        + (f" ({update_rate_hz:.1f}/s)" if update_rate_hz else "")
        + (f"  latency {np.median(lat):.2f} s" if lat else ""),
    ]

