"""``timbreclip live`` on a real device: the sounddevice stream, the control loop, and a clean stop.

The callback is the compiled one of ``native.py`` (or, with ``--callback python``, sounddevice's Python callback
running ``LiveEQ.audio_block``), and nothing else. The control loop (this module's ``run_live``, in the main
thread) is the only code that hands coefficients to the engine; it drains MIDI and terminal commands and steering
results, refreshes the status display, and watches for the end: ``--duration``, ``:q``, Ctrl-C or SIGTERM (a user
stop, exit 0), or the device vanishing / the audio server stopping (a device failure, exit 1). Either way it stops
the stream, closes MIDI and the worker, and writes ``--settings-out`` / ``--stats`` if asked.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
from dataclasses import dataclass

from .devices import DeviceError, check_stream, open_midi_input, refresh_audio, resolve_audio_device
from .loop import (LiveConfig, LiveEQ, LoopedFile, SteeringWorker, cpu_steal_ms, forward_command, run_offline,
                   status_lines)

SWITCH_INTERVAL_S = 0.0005
WATCHDOG_S = 2.0
GC_EVERY_S = 0.5  # no callback for this long while running: the device or server is gone


@dataclass
class LiveRun:
    code: int
    reason: str
    live: LiveEQ
    stream_stuck: bool = False  # PortAudio did not let go of a dead device: the process should exit now


def _close_stream(stream, wait_s: float | None) -> bool:
    """Stop and close the stream; after a device failure PortAudio can hang talking to a server that is gone, so
    then it is closed from a daemon thread and given ``wait_s``. Returns whether it closed."""
    def close() -> None:
        try:
            stream.abort() if wait_s is not None else stream.stop()
            stream.close()
        except Exception:
            pass

    native = getattr(stream, "_timbreclip_native", None)
    if wait_s is None:
        close()
    else:
        import threading

        closer = threading.Thread(target=close, daemon=True)
        closer.start()
        closer.join(wait_s)
        if closer.is_alive():
            return False  # the callback may still run: its arrays stay mapped
    if native is not None:
        native.release()
    return True


def write_json_atomic(path: str, data: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class _Display:
    """A refreshing status panel on a terminal (rich), one line per event otherwise."""

    def __init__(self, live: LiveEQ, interactive: bool) -> None:
        self.live = live
        self.interactive = interactive
        self._rich = None
        self._seen_updates = 0
        self._started = time.monotonic()
        if interactive:
            from rich.live import Live

            self._rich = Live("", refresh_per_second=4, transient=True)
            self._rich.start()

    def message(self, text: str) -> None:
        if self._rich is not None:
            self._rich.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def refresh(self) -> None:
        live = self.live
        rate = live.stats.updates / max(1e-9, time.monotonic() - self._started)
        if self._rich is not None:
            from rich.text import Text

            self._rich.update(Text("\n".join(status_lines(live, rate))))
        elif live.stats.updates != self._seen_updates and live.last_update is not None:
            self._seen_updates = live.stats.updates
            u = live.last_update
            lat = f", latency {live.stats.latencies_s[-1]:.2f} s" if live.stats.latencies_s else ""
            sim = " ".join(f"{p} {s:+.2f}" for p, s in u.similarity.items())
            print(f"update {u.id}: {u.steps} steps in {u.seconds:.2f} s{lat}; {sim}", flush=True)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()


def open_stream(live: LiveEQ, input_device: int | None, output_device: int | None, source: LoopedFile | None = None,
                callback: str = "native"):
    """The sounddevice stream that plays ``live``: duplex from ``input_device``, or output only with ``source`` (a
    looped file) as the input. Not started. ``callback``: "native" (default: PortAudio calls the compiled callback
    of ``native.py`` directly: no GIL, no Python objects per block) or "python" (sounddevice's Python callback
    running ``live.audio_block``: the peer the benchmark measures it against)."""
    import sounddevice as sd
    from time import perf_counter

    config = live.config
    if callback == "native":
        from .native import NativeCallback

        native = NativeCallback(live, source)
        kind, device = ("output", output_device) if source is not None else ("duplex", (input_device, output_device))
        stream = sd._StreamBase(kind=kind, samplerate=config.sample_rate, blocksize=config.blocksize, device=device,
                                channels=config.channels, dtype="float32", callback=native.address,
                                userdata=sd._ffi.cast("void *", native.user_data))
        stream._timbreclip_native = native  # the arrays the callback writes live as long as the stream
        return stream
    if callback != "python":
        raise ValueError(f"callback must be 'native' or 'python', got {callback!r}")
    if source is None:
        def callback(indata, outdata, frames, time_info, status):
            now = perf_counter()
            if status:
                live.note_status(status)
            live.audio_block(indata.T, outdata.T, now)

        return sd.Stream(device=(input_device, output_device), samplerate=config.sample_rate,
                         blocksize=config.blocksize, channels=config.channels, dtype="float32", callback=callback)

    def play_callback(outdata, frames, time_info, status):
        now = perf_counter()
        if status:
            live.note_status(status)
        live.audio_block(source.next_block(frames), outdata.T, now)

    return sd.OutputStream(device=output_device, samplerate=config.sample_rate, blocksize=config.blocksize,
                           channels=config.channels, dtype="float32", callback=play_callback)


def run_live(config: LiveConfig, input_device=None, output_device=None, play: str | None = None,
             duration_s: float | None = None, midi_port: str | None = None, midi_api: str = "auto",
             midi_map=None, read_stdin: bool = True, interactive: bool | None = None,
             settings_out: str | None = None, stats_out: str | None = None) -> LiveRun:
    """Run the live loop on a device until a stop (see module docstring)."""
    sd = __import__("sounddevice")
    refresh_audio()
    out_dev = resolve_audio_device(output_device, "output")
    in_dev = None if play else resolve_audio_device(input_device, "input")
    check_stream(in_dev, out_dev, config.sample_rate, config.channels, duplex=play is None)
    source = None
    if play:
        from timbreclip.dsp.audio_io import read_audio

        audio, rate = read_audio(play)
        if audio.shape[-1] == 0:
            raise DeviceError(f"--play {play}: contains no audio")
        source = LoopedFile(audio, rate, config.sample_rate, config.channels, config.blocksize)

    # The callback needs the GIL on entry: a short switch interval bounds how long another thread can keep it.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    live = LiveEQ(config, shared_ring=config.worker == "process")
    worker = SteeringWorker(live, config.worker) if config.worker != "off" else None
    midi = None
    stop: list[str] = []
    try:
        if midi_port:
            from .midi import MidiControl, MidiMap

            midi = MidiControl(open_midi_input(midi_port, midi_api), midi_map or MidiMap(), live.commands)
        if worker is not None:
            worker.start(live.prompts, live.source_weight)
        if read_stdin:
            from .console import start_line_reader

            start_line_reader(live.commands)
        interactive = sys.stdout.isatty() and sys.stdin.isatty() if interactive is None else interactive
        display = _Display(live, interactive)
        live.publish()
        live.drain_timing()  # the control loop's own first calls, before the stream needs the GIL

        stream = open_stream(live, in_dev, out_dev, source, config.callback)

        def on_signal(signum, frame):
            stop.append("stopped (SIGTERM)" if signum == signal.SIGTERM else "stopped")

        previous = signal.signal(signal.SIGTERM, on_signal)
        started = time.monotonic()
        last_blocks, last_progress = -1, started
        failure = None
        # The collector runs in whichever thread allocates, holding the GIL: a full collection over torch's objects
        # takes milliseconds. Freeze what setup made, and collect the young generation in this thread only.
        gc.collect()
        gc.freeze()
        gc.disable()
        last_gc = time.monotonic()
        try:
            steal_start = cpu_steal_ms()
            cpu_start = time.process_time(), time.monotonic()
            stream.start()
            display.message(f"playing at {config.sample_rate:g} Hz, {config.blocksize} frames, "
                            f"{config.channels} channels" + (f" from {play}" if play else "")
                            + (": type words to change the prompts, :? for commands" if read_stdin else ""))
            while not stop:
                time.sleep(0.02)
                if time.monotonic() - last_gc > GC_EVERY_S:
                    gc.collect(0)
                    last_gc = time.monotonic()
                while True:
                    try:
                        command = live.commands.get_nowait()
                    except Exception:
                        break
                    if command[0] == "error":
                        display.message(f"ignored: {command[1]}")
                    elif command[0] == "help":
                        from .console import HELP

                        display.message(HELP)
                    elif forward_command(live, worker, command) == "quit":
                        stop.append("stopped (quit)")
                for update in worker.poll() if worker is not None else ():
                    live.apply_update(update)
                while True:
                    try:
                        display.message(live.messages.get_nowait())
                    except Exception:
                        break
                live.drain_timing()
                display.refresh()
                now = time.monotonic()
                if duration_s is not None and now - started >= duration_s:
                    stop.append(f"stopped after {duration_s:g} s")
                if live.blocks != last_blocks:
                    last_blocks, last_progress = live.blocks, now
                elif now - last_progress > WATCHDOG_S or not stream.active:
                    failure = ("the audio stream stopped: the device vanished or the audio server stopped "
                               f"(no callback for {now - last_progress:.1f} s)")
                    break
                if worker is not None and not worker.alive():
                    failure = "the steering worker ended unexpectedly"
                    break
        except KeyboardInterrupt:
            stop.append("stopped (Ctrl-C)")
        except sd.PortAudioError as err:
            failure = f"audio device error: {err}"
        finally:
            gc.enable()
            signal.signal(signal.SIGTERM, previous)
            display.close()
            steal_end = cpu_steal_ms()
            live.cpu_percent = 100.0 * (time.process_time() - cpu_start[0]) / max(1e-9, time.monotonic() - cpu_start[1])
            if steal_start is not None and steal_end is not None:
                live.steal_ms = steal_end - steal_start
            stuck = not _close_stream(stream, wait_s=None if failure is None else 2.0)
        live.drain_timing()
        if failure is not None:
            result = LiveRun(1, failure, live, stream_stuck=stuck)
        else:
            result = LiveRun(0, stop[0] if stop else "stopped", live)
        if settings_out:
            live.playing_settings().save(settings_out)
        if stats_out:
            write_json_atomic(stats_out, live.stats_dict())
    finally:
        if midi is not None:
            midi.close()
        if worker is not None:
            worker.stop()
        live.close()
    return result


def run_file(config: LiveConfig, in_path: str, out_path: str, sim_latency_s: float, settings_out: str | None,
             stats_out: str | None) -> LiveEQ:
    """``--input-file IN --output-file OUT``: the live loop on a simulated clock, output written atomically."""
    from timbreclip.dsp.audio_io import read_audio, write_audio

    audio, rate = read_audio(in_path)
    out, live = run_offline(config, audio, rate, sim_latency_s)
    write_audio(out_path, out, rate)
    if settings_out:
        live.playing_settings().save(settings_out)
    if stats_out:
        write_json_atomic(stats_out, live.stats_dict())
    live.close()
    return live

