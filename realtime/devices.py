"""Audio devices (sounddevice / PortAudio) and MIDI ports (python-rtmidi): listing, choosing by name or index, and
checking a stream's rate and channel count before it opens. Every problem is a one-line ``DeviceError`` that lists
what exists."""

from __future__ import annotations

import os
import sys

from timbreclip.dsp.errors import TimbreclipError

MIDI_APIS = ("auto", "jack", "alsa")


class DeviceError(TimbreclipError):
    """An unknown, busy or unsuitable audio device or MIDI port."""


def _sd():
    try:
        import sounddevice as sd
    except OSError as err:  # PortAudio itself is missing
        raise DeviceError(f"no audio I/O: PortAudio could not be loaded ({err}); install libportaudio2") from None
    return sd


def refresh_audio() -> None:
    """Re-initialise PortAudio so a JACK server started after import shows up."""
    sd = _sd()
    sd._terminate()
    sd._initialize()


def release_audio(exit_code: int) -> None:
    """Terminate PortAudio (closing its JACK client) as a command ends, keeping ``exit_code`` even if PortAudio aborts.

    PortAudio's JACK host API asserts that the server acknowledges its client's deactivation; a server that stopped, or
    that did not answer in time, makes that assert abort the process after the command's work is done (exit -6 instead
    of the command's code; seen in CI on a bad ``--midi-port`` line). This runs sounddevice's own exit handler now,
    with SIGABRT turned into a one-line warning and ``exit_code``; afterwards that handler has nothing left to do."""
    sd = sys.modules.get("sounddevice")
    if sd is None or not getattr(sd, "_initialized", 0):
        return
    import ctypes
    import signal

    sys.stdout.flush()
    sys.stderr.flush()

    def on_abort(_signum):
        os.write(2, b"timbreclip: warning: the audio server did not answer as PortAudio closed its connection "
                    b"(was JACK stopped?)\n")
        os._exit(exit_code)

    handler = ctypes.CFUNCTYPE(None, ctypes.c_int)(on_abort)
    install = ctypes.CDLL(None).signal
    install.restype, install.argtypes = ctypes.c_void_p, (ctypes.c_int, ctypes.c_void_p)
    previous = install(signal.SIGABRT, ctypes.cast(handler, ctypes.c_void_p))
    try:
        sd._exit_handler()
    finally:
        install(signal.SIGABRT, previous)


def audio_devices() -> list[dict]:
    sd = _sd()
    apis = sd.query_hostapis()
    out = []
    for index, dev in enumerate(sd.query_devices()):
        out.append({"index": index, "name": dev["name"], "hostapi": apis[dev["hostapi"]]["name"],
                    "max_input_channels": dev["max_input_channels"],
                    "max_output_channels": dev["max_output_channels"],
                    "default_samplerate": dev["default_samplerate"]})
    return out


def describe_audio(devices: list[dict] | None = None) -> str:
    devices = audio_devices() if devices is None else devices
    if not devices:
        return "no audio devices (is a JACK server running?)"
    return "; ".join(f"{d['index']}: {d['name']} [{d['hostapi']}, {d['max_input_channels']} in, "
                     f"{d['max_output_channels']} out, {d['default_samplerate']:g} Hz]" for d in devices)


def resolve_audio_device(spec: str | int | None, kind: str) -> int | None:
    """``spec``: None (the default device), an index, or (part of) a device name; ``kind``: "input" or "output"."""
    devices = audio_devices()
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    usable = [d for d in devices if d[key] > 0]
    flag = f"--{kind}-device"
    if spec is None:
        if not usable:
            raise DeviceError(f"no {kind} device; devices: {describe_audio(devices)}")
        return None
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        match = [d for d in devices if d["index"] == index]
    else:
        match = [d for d in devices if d["name"] == text] or [d for d in devices if text.lower() in d["name"].lower()]
    if not match:
        raise DeviceError(f"{flag} {spec}: no such device; devices: {describe_audio(devices)}")
    if len(match) > 1:
        raise DeviceError(f"{flag} {spec}: matches several devices; devices: {describe_audio(match)}")
    if match[0][key] < 1:
        raise DeviceError(f"{flag} {spec}: {match[0]['name']} has no {kind} channels; "
                          f"devices: {describe_audio(devices)}")
    return match[0]["index"]


def check_stream(input_device: int | None, output_device: int | None, sample_rate: float, channels: int,
                 duplex: bool) -> None:
    """Refuse a rate or channel count the devices do not support, saying what they do support."""
    sd = _sd()
    for kind, device in (("input", input_device), ("output", output_device)):
        if kind == "input" and not duplex:
            continue
        info = sd.query_devices(device, kind)
        key = "max_input_channels" if kind == "input" else "max_output_channels"
        if channels > info[key]:
            raise DeviceError(f"--channels {channels}: {info['name']} has {info[key]} {kind} channels")
        checker = sd.check_input_settings if kind == "input" else sd.check_output_settings
        try:
            checker(device=device, channels=channels, samplerate=sample_rate, dtype="float32")
        except sd.PortAudioError as err:
            raise DeviceError(f"--samplerate {sample_rate:g}: {info['name']} does not support it ({err}); "
                              f"it runs at {info['default_samplerate']:g} Hz") from None


# -- MIDI -------------------------------------------------------------------------------------------------------
def midi_api(name: str = "auto") -> int:
    """rtmidi's API constant: ``jack``, ``alsa``, or ``auto`` (ALSA where its sequencer exists, else JACK)."""
    import rtmidi

    if name not in MIDI_APIS:
        raise DeviceError(f"--midi-api {name}: expected one of {', '.join(MIDI_APIS)}")
    compiled = rtmidi.get_compiled_api()
    if name == "auto":
        name = "alsa" if os.path.exists("/dev/snd/seq") and rtmidi.API_LINUX_ALSA in compiled else "jack"
    api = {"jack": rtmidi.API_UNIX_JACK, "alsa": rtmidi.API_LINUX_ALSA}[name]
    if api not in compiled:
        raise DeviceError(f"--midi-api {name}: this python-rtmidi was built without it")
    return api


def midi_ports(api_name: str = "auto") -> dict:
    import rtmidi

    api = midi_api(api_name)
    listing = {"api": rtmidi.get_api_name(api), "inputs": [], "outputs": []}
    for key, cls in (("inputs", rtmidi.MidiIn), ("outputs", rtmidi.MidiOut)):
        try:
            port = cls(api, name="timbreclip-probe")
        except rtmidi.SystemError as err:
            listing["error"] = str(err)
            continue
        try:
            listing[key] = port.get_ports()
        finally:
            port.delete()
    return listing


def open_midi_input(port: str, api_name: str = "auto", client_name: str = "timbreclip"):
    """An open ``rtmidi.MidiIn`` on the port named (exactly, or by a unique part of its name, or its index)."""
    import rtmidi

    api = midi_api(api_name)
    try:
        midi_in = rtmidi.MidiIn(api, name=client_name)
    except rtmidi.SystemError as err:
        raise DeviceError(f"--midi-port {port}: MIDI is not available ({err})") from None
    ports = midi_in.get_ports()
    text = str(port)
    if text.isdigit() and int(text) < len(ports):
        index = int(text)
    else:
        exact = [i for i, p in enumerate(ports) if p == text]
        part = [i for i, p in enumerate(ports) if text.lower() in p.lower()]
        found = exact or part
        if len(found) != 1:
            midi_in.delete()
            listed = "; ".join(f"{i}: {p}" for i, p in enumerate(ports)) or "none"
            why = "no such MIDI input port" if not found else "matches several ports"
            raise DeviceError(f"--midi-port {port}: {why}; ports ({rtmidi.get_api_name(api)}): {listed}")
        index = found[0]
    midi_in.open_port(index, name="control in")
    midi_in.ignore_types(sysex=True, timing=True, active_sense=True)
    return midi_in
