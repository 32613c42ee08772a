"""A private JACK server on the dummy backend, and a client that feeds and records ports: real, clocked audio and
MIDI I/O without a sound card, for tests, benchmarks and demos (sounddevice and python-rtmidi use it exactly as on a
musician's machine).

- ``JackServer(name, rate, period)``: ``jackd -n NAME -S -d dummy``; waits until a client can connect, keeps the
  server's log (``xruns()`` counts the xruns it reports), stops it with SIGTERM. Sets ``JACK_DEFAULT_SERVER`` so
  every client in this process (PortAudio, rtmidi, JACK-Client) finds it.
- ``PortRig``: a JACK-Client that plays a known signal into some ports and records others, in freewheel (as fast as
  the machine can) or in real time.

Gotchas handled here (shared/NOTES-audio.md): PortAudio must re-initialise after the server starts and terminate
before it stops; freewheel is switched off before the rig closes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import numpy as np


class JackUnavailable(RuntimeError):
    """jackd or the JACK client library is not installed."""


def jack_available() -> tuple[bool, str]:
    if shutil.which("jackd") is None:
        return False, "jackd is not installed (apt-get install jackd2)"
    try:
        import jack  # noqa: F401
    except (ImportError, OSError) as err:
        return False, f"JACK-Client cannot load ({err})"
    return True, ""


class JackServer:
    """A private jackd on the dummy backend (see module docstring)."""

    def __init__(self, name: str | None = None, rate: int = 48000, period: int = 256, realtime: bool = True) -> None:
        ok, why = jack_available()
        if not ok:
            raise JackUnavailable(why)
        self.name = name or f"timbreclip-{os.getpid()}-{int(time.monotonic() * 1000) % 100000}"
        self.rate, self.period, self.realtime = int(rate), int(period), realtime
        self.process: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="jackd-", suffix=".log", delete=False)
        self._previous_env = os.environ.get("JACK_DEFAULT_SERVER")

    def start(self, timeout_s: float = 10.0) -> "JackServer":
        import jack  # noqa: F401

        command = ["jackd", "-n", self.name, "-S", "-p", "64"] + ([] if self.realtime else ["-r"]) + \
            ["-d", "dummy", "-r", str(self.rate), "-p", str(self.period)]
        os.environ["JACK_DEFAULT_SERVER"] = self.name
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client = jack.Client("timbreclip-probe", no_start_server=True, servername=self.name)
                client.close()
                break
            except jack.JackError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise JackUnavailable(f"jackd did not start: {self.log()[-400:]}") from None
                time.sleep(0.05)
        return self

    def log(self) -> str:
        with open(self._log.name, errors="replace") as f:
            return f.read()

    def xruns(self) -> int:
        """Xruns the server itself reported in its log."""
        return sum(1 for line in self.log().splitlines() if "xrun" in line.lower())

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """Stop the server abruptly (a test of what clients do when their server vanishes). A killed jackd leaves its
        entry in JACK's shared registry, which holds 8 servers and reclaims an entry only for the same name: prefer
        ``stop`` (SIGTERM) wherever it shows the same thing."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._previous_env is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = self._previous_env

    def __enter__(self) -> "JackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        try:
            os.unlink(self._log.name)
        except OSError:
            pass


class PortRig:
    """A JACK client that plays ``signal (channels, frames)`` into ``targets`` and records ``sources``.

    ``run(freewheel=True)`` connects, plays the whole signal (then silence for ``tail_frames``) and returns the
    recording ``(len(sources), frames + tail_frames)``. With ``midi=True`` the rig also has a MIDI output port
    (``midi_port_name``, registered at once so a client under test can open it before ``run``), on which
    ``run(midi_events=[(frame, bytes), ...])`` sends each event at that frame of the recording, exactly.
    """

    def __init__(self, server: JackServer, name: str = "rig", midi: bool = False) -> None:
        import jack  # noqa: F401

        self.client = jack.Client(name, no_start_server=True, servername=server.name)
        self.server = server
        self._signal = np.zeros((0, 0), np.float32)
        self._record = np.zeros((0, 0), np.float32)
        self._pos = 0
        self._done = threading.Event()
        self.outports = []
        self.inports = []
        self._pos = -(1 << 62)
        self._midi_events: list[tuple[int, bytes]] = []
        self._midi_next = 0
        self.midi_out = self.client.midi_outports.register("midi_out") if midi else None
        self.midi_port_name = f"{self.client.name}:midi_out" if midi else None
        self.client.set_process_callback(self._process)
        self._freewheeling = threading.Event()
        self.client.set_freewheel_callback(self._on_freewheel)
        if midi:
            self.client.activate()  # the port exists for others to connect to from now on

    def _process(self, frames: int) -> None:
        pos = self._pos
        total = self._record.shape[1]
        n = max(0, min(frames, total - pos)) if pos >= 0 else 0  # negative: holding until connected
        for c, port in enumerate(self.outports):
            buf = port.get_array()
            buf[:] = 0.0
            if 0 <= pos < self._signal.shape[1]:
                m = min(frames, self._signal.shape[1] - pos)
                buf[:m] = self._signal[c, pos:pos + m]
        for c, port in enumerate(self.inports):
            if n:
                self._record[c, pos:pos + n] = port.get_array()[:n]
        if self.midi_out is not None:
            self.midi_out.clear_buffer()
            events = self._midi_events
            while self._midi_next < len(events) and pos >= 0 and events[self._midi_next][0] < pos + frames:
                at, data = events[self._midi_next]
                self.midi_out.write_midi_event(max(0, at - pos), data)
                self._midi_next += 1
        self._pos = pos + frames
        if self._pos >= total:
            self._done.set()

    def run(self, signal_: np.ndarray, targets: list[str], sources: list[str], tail_frames: int = 4096,
            freewheel: bool = True, timeout_s: float = 120.0, before=None,
            midi_events: list[tuple[int, bytes]] | None = None) -> np.ndarray:
        """Play and record (see class docstring); ``before()`` runs once the ports are connected."""
        self._midi_events = sorted(midi_events or [], key=lambda e: e[0])
        self._midi_next = 0
        self._signal = np.ascontiguousarray(signal_, np.float32)
        self._record = np.zeros((len(sources), self._signal.shape[1] + tail_frames), np.float32)
        self.outports = [self.client.outports.register(f"out_{i}") for i in range(len(targets))]
        self.inports = [self.client.inports.register(f"in_{i}") for i in range(len(sources))]
        self._pos = -(1 << 62)  # hold until everything is connected
        if self.midi_out is None:
            self.client.activate()
        try:
            for port, target in zip(self.outports, targets):
                self.client.connect(port, target)
            for port, source in zip(self.inports, sources):
                self.client.connect(source, port)
            if before is not None:
                before()
            self._done.clear()
            if freewheel:  # the signal starts once the server freewheels: a real-time cycle missed under load
                # before the switch would drop a block of it (the client under test is not what that measures)
                self.client.transport_stop()
                self._freewheeling.clear()
                self._set_freewheel(True)
                if not self._freewheeling.wait(10.0):
                    raise TimeoutError("the JACK server did not enter freewheel mode within 10 s")
            self._pos = 0
            if not self._done.wait(timeout_s):
                raise TimeoutError("the JACK rig did not finish in time")
        finally:
            if freewheel:
                self._set_freewheel(False)
            if self.midi_out is None:
                self.client.deactivate()
            else:
                self._pos = -(1 << 62)
                for port in self.outports + self.inports:
                    port.unregister()
        return self._record

    def _on_freewheel(self, starting: bool) -> None:  # JACK's notification thread
        if starting:
            self._freewheeling.set()
        else:
            self._freewheeling.clear()

    def _set_freewheel(self, on: bool) -> None:
        self.client.set_freewheel(on)

    def close(self) -> None:
        self.client.close()


def disconnect_all(client_prefix: str, servername: str) -> None:
    """Remove every connection of the ports whose names start with ``client_prefix`` (PortAudio connects its
    ports to ``system:*`` on its own)."""
    import jack

    probe = jack.Client("timbreclip-patchbay", no_start_server=True, servername=servername)
    try:
        for port in probe.get_ports(client_prefix):
            for other in probe.get_all_connections(port):
                try:
                    if port.is_output:
                        probe.disconnect(port, other)
                    else:
                        probe.disconnect(other, port)
                except Exception:
                    pass
    finally:
        probe.close()
