"""The patch browser's instrument: the SELECTED patch played from MIDI (and the computer-keyboard piano) in real time.

- Soundfont patches play through fluidsynth, rendered inside the audio callback into preallocated buffers
  (``fluid_synth_write_float``); one synth per soundfont file, loaded by the control thread before the audio thread
  ever sees it, then touched by the audio thread only (fluidsynth's API lock is switched off: nothing contends).
- Sample patches play their recording resampled to the played key (4-point Hermite interpolation, a numba kernel over
  a fixed pool of voices: velocity-scaled, short attack ramp, linear release, oldest voice stolen when full).

Threads and what they share (nothing is locked; see DESIGN.md):
- The control thread builds a ``Player`` for a patch (file I/O, synth creation, resampling) and publishes it with
  ``select(player)``: one reference store, read once per block by the audio thread.
- The audio thread (``audio_block``) adopts a new player at a block boundary: the notes held on the old one are
  released (sustain pedal lifted there first), so they ring out with their own release and nothing sticks; new notes
  go to the new player. A soundfont player takes a MIDI channel of its own on the font's synth, so the old preset's
  tails keep their sound. Players that have rung out go to a preallocated graveyard the control thread empties
  (``collect()``), so no synth is ever freed inside the callback.
- MIDI: the audio thread polls the rtmidi input itself at the start of each block (rtmidi queues incoming messages
  without a callback), so a note-on is heard in the block after it arrives; messages for the browser (program
  change, mapped CCs, note-ons for pitch following) are forwarded to the control thread through ``outbox``.
- The computer-keyboard piano and "all notes off" requests come from the control thread through ``inbox``.
Both boxes are single-producer/single-consumer rings of preallocated int64 rows.
"""

from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass

import numba
import numpy as np

# event kinds in the rings
NOTE_ON, NOTE_OFF, CONTROL, PROGRAM, BEND, ALL_OFF = 1, 2, 3, 4, 5, 6
SUSTAIN_CC = 64
SAMPLE_VOICES = 32
ATTACK_S, SAMPLE_RELEASE_S = 0.002, 0.15
FADING_SLOTS = 4  # players still ringing out after a change of patch
FLUID_CHANNELS = tuple(c for c in range(16) if c != 9)  # 9 is fluidsynth's drum channel


class EventRing:
    """Single-producer/single-consumer ring of ``(kind, a, b, c)`` int64 rows. ``push`` returns False when full
    (the producer counts it as dropped); ``pop_into(row)`` copies the oldest row and returns False when empty."""

    def __init__(self, capacity: int = 4096) -> None:
        self.rows = np.zeros((capacity, 4), np.int64)
        self.capacity = capacity
        self.head = np.zeros(1, np.int64)  # rows written (producer only)
        self.tail = np.zeros(1, np.int64)  # rows read (consumer only)
        self.dropped = 0

    def push(self, kind: int, a: int = 0, b: int = 0, c: int = 0) -> bool:
        head = int(self.head[0])
        if head - int(self.tail[0]) >= self.capacity:
            self.dropped += 1
            return False
        row = self.rows[head % self.capacity]
        row[0], row[1], row[2], row[3] = kind, a, b, c
        self.head[0] = head + 1  # published after the row is complete
        return True

    def pop_into(self, out: np.ndarray) -> bool:
        tail = int(self.tail[0])
        if tail >= int(self.head[0]):
            return False
        out[:] = self.rows[tail % self.capacity]
        self.tail[0] = tail + 1
        return True

    def pending(self) -> int:
        return int(self.head[0] - self.tail[0])


# -- fluidsynth --------------------------------------------------------------------------------------------------
_write_float = None


def _fluid_write_float():
    global _write_float
    if _write_float is None:
        import fluidsynth

        fn = fluidsynth._fl.fluid_synth_write_float
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                       ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        fn.restype = ctypes.c_int
        _write_float = fn
    return _write_float


class FontSynth:
    """One fluidsynth instance with one soundfont loaded, for live play at ``sample_rate`` (reverb and chorus off,
    as in the library's renders, so what is heard is what was embedded)."""

    def __init__(self, font: str, sample_rate: float, max_block_frames: int, polyphony: int = 128) -> None:
        import fluidsynth

        from timbreclip.dsp.errors import TimbreclipError

        if not os.path.isfile(font):
            raise TimbreclipError(f"{font}: the soundfont is gone (it was moved or deleted since it was added)")
        self.font = font
        self.synth = fluidsynth.Synth(gain=1.0, samplerate=float(sample_rate), **{
            "synth.reverb.active": 0, "synth.chorus.active": 0, "synth.polyphony": polyphony,
            "synth.threadsafe-api": 0, "synth.cpu-cores": 1})
        self.sfid = self.synth.sfload(font)
        if self.sfid < 0:
            self.synth.delete()
            raise TimbreclipError(f"{font}: fluidsynth could not load the soundfont")
        self.left = np.zeros(max_block_frames, np.float32)
        self.right = np.zeros(max_block_frames, np.float32)
        self._handle = self.synth.synth
        self._lp, self._rp = self.left.ctypes.data, self.right.ctypes.data
        self._write = _fluid_write_float()
        self.next_channel = 0
        self.rendered_block = -1

    def render(self, frames: int) -> None:
        self._write(self._handle, frames, self._lp, 0, 1, self._rp, 0, 1)

    def active_voices(self) -> int:
        import fluidsynth

        return int(fluidsynth.fluid_synth_get_active_voice_count(self._handle))

    def delete(self) -> None:
        if self.synth is not None:
            self.synth.delete()
            self.synth = None


@dataclass
class Player:
    """What plays the selected patch: a soundfont preset (``synth``, bank, program) or a sample (``sample`` at the
    engine rate, mono, its recorded MIDI pitch ``root``)."""

    patch_key: str
    title: str
    synth: FontSynth | None = None
    bank: int = 0
    program: int = 0
    sample: np.ndarray | None = None
    root: float = 60.0
    channel: int = -1  # the fluid channel, chosen by the audio thread on adoption
    voices: np.ndarray | None = None  # sample voices (SAMPLE_VOICES, 8) float64, see _render_voices
    released_at_block: int = -1


# voice columns
_V_ACTIVE, _V_POS, _V_STEP, _V_GAIN, _V_ENV, _V_RELEASING, _V_KEY, _V_AGE = range(8)


@numba.njit(cache=True)
def _render_voices(sample, voices, out, frames, attack_inc, release_dec):  # pragma: no cover - compiled
    """Add every active voice of ``sample`` into ``out[:frames]`` (4-point Hermite interpolation at each voice's
    step); envelopes ramp by ``attack_inc`` up to 1 and by ``release_dec`` down to 0 while releasing."""
    n_samples = sample.shape[0]
    for v in range(voices.shape[0]):
        if voices[v, 0] == 0.0:
            continue
        pos, step, gain, env = voices[v, 1], voices[v, 2], voices[v, 3], voices[v, 4]
        releasing = voices[v, 5] != 0.0
        for n in range(frames):
            i = int(pos)
            if i + 2 >= n_samples:
                voices[v, 0] = 0.0
                break
            t = pos - i
            xm1 = sample[i - 1] if i >= 1 else sample[0]
            x0, x1, x2 = sample[i], sample[i + 1], sample[i + 2]
            c1 = 0.5 * (x1 - xm1)
            c2 = xm1 - 2.5 * x0 + 2.0 * x1 - 0.5 * x2
            c3 = 0.5 * (x2 - xm1) + 1.5 * (x0 - x1)
            y = ((c3 * t + c2) * t + c1) * t + x0
            if releasing:
                env -= release_dec
                if env <= 0.0:
                    voices[v, 0] = 0.0
                    break
            elif env < 1.0:
                env = min(1.0, env + attack_inc)
            out[n] += y * gain * env
            pos += step
        voices[v, 1], voices[v, 4] = pos, env


@numba.njit(cache=True)
def _voice_on(voices, key, step, gain, age):  # pragma: no cover - compiled
    """Start a voice (a free one, else steal the oldest)."""
    chosen, oldest = -1, 1e300
    for v in range(voices.shape[0]):
        if voices[v, 0] == 0.0:
            chosen = v
            break
        if voices[v, 7] < oldest:
            oldest, chosen = voices[v, 7], v
    voices[chosen, 0] = 1.0
    voices[chosen, 1] = 0.0
    voices[chosen, 2] = step
    voices[chosen, 3] = gain
    voices[chosen, 4] = 0.0
    voices[chosen, 5] = 0.0
    voices[chosen, 6] = key
    voices[chosen, 7] = age


@numba.njit(cache=True)
def _voice_release(voices, key):  # pragma: no cover - compiled
    """Release the voices playing ``key`` (every key when ``key`` < 0)."""
    for v in range(voices.shape[0]):
        if voices[v, 0] != 0.0 and (key < 0 or voices[v, 6] == key):
            voices[v, 5] = 1.0


@numba.njit(cache=True)
def _voices_active(voices):  # pragma: no cover - compiled
    count = 0
    for v in range(voices.shape[0]):
        if voices[v, 0] != 0.0:
            count += 1
    return count


class AuditionEngine:
    """The browser's real-time instrument (see module docstring). ``audio_block(out)`` is the whole callback."""

    def __init__(self, sample_rate: float, max_block_frames: int, channels: int = 2, gain: float = 1.0) -> None:
        self.sample_rate = float(sample_rate)
        self.max_block_frames = int(max_block_frames)
        self.channels = int(channels)
        self.gain = float(gain)
        self.inbox = EventRing()  # control thread -> audio thread
        self.outbox = EventRing()  # audio thread -> control thread
        self.midi_in = None  # an rtmidi.MidiIn polled by the audio thread (set before the stream starts)
        self.button_channel = -1  # keys on this 0-based channel are browsing buttons: forwarded, not played
        self._pending: Player | None = None
        self.current: Player | None = None
        self._fading: list[Player | None] = [None] * FADING_SLOTS
        self.graveyard: list[Player | None] = [None] * (FADING_SLOTS + 2)
        self._held = np.zeros(128, np.bool_)  # keys down (before the pedal)
        self._sounding = np.zeros(128, np.bool_)  # keys held or kept by the pedal on the current player
        self._pedal = False
        self._row = np.zeros(4, np.int64)
        self._mono = np.zeros(max_block_frames, np.float64)
        self._attack_inc = 1.0 / max(1.0, ATTACK_S * self.sample_rate)
        self._release_dec = 1.0 / max(1.0, SAMPLE_RELEASE_S * self.sample_rate)
        self.blocks = 0
        self.notes_on = 0
        self.midi_received = 0
        self._age = 0.0
        # warm the numba kernels here, not in the first callback
        v = np.zeros((2, 8))
        _voice_on(v, 60, 1.0, 0.5, 1.0)
        _render_voices(np.zeros(16, np.float32), v, self._mono, 4, 0.5, 0.5)
        _voice_release(v, -1)
        _voices_active(v)

    # -- control thread -----------------------------------------------------------------------------------------
    def select(self, player: Player | None) -> None:
        """Make ``player`` the one MIDI plays, from the next block on."""
        if player is not None and player.sample is not None and player.voices is None:
            player.voices = np.zeros((SAMPLE_VOICES, 8), np.float64)
        self._pending = player

    def note_on(self, key: int, velocity: int = 100) -> bool:
        return self.inbox.push(NOTE_ON, key, velocity)

    def note_off(self, key: int) -> bool:
        return self.inbox.push(NOTE_OFF, key)

    def all_notes_off(self) -> bool:
        return self.inbox.push(ALL_OFF)

    def collect(self) -> None:
        """Free the players that have rung out (synths stay: they belong to the control side's font cache)."""
        for i, p in enumerate(self.graveyard):
            if p is not None:
                self.graveyard[i] = None

    def panic(self) -> None:
        """Silence everything now, from the control thread, once the stream is stopped (exit, device loss)."""
        for p in [self.current, self._pending] + self._fading:
            if p is None:
                continue
            if p.synth is not None and p.synth.synth is not None and p.channel >= 0:
                p.synth.synth.cc(p.channel, SUSTAIN_CC, 0)
                p.synth.synth.cc(p.channel, 120, 0)  # all sound off
            if p.voices is not None:
                p.voices[:, 0] = 0.0
        self._held[:] = False
        self._sounding[:] = False
        self._pedal = False

    def sounding_voices(self) -> int:
        """Voices still making sound (fluid voices of the current synths plus sample voices)."""
        total = 0
        seen = set()
        for p in [self.current] + self._fading:
            if p is None:
                continue
            if p.synth is not None and id(p.synth) not in seen and p.synth.synth is not None:
                seen.add(id(p.synth))
                total += p.synth.active_voices()
            if p.voices is not None:
                total += int(_voices_active(p.voices))
        return total

    # -- audio thread -------------------------------------------------------------------------------------------
    def _adopt(self, player: Player | None) -> None:
        old = self.current
        if old is not None:
            self._release_all(old)
            old.released_at_block = self.blocks
            slot = -1
            for i in range(FADING_SLOTS):
                if self._fading[i] is None:
                    slot = i
                    break
            if slot < 0:  # every slot rings: cut the oldest (it has had the longest release)
                oldest = min(range(FADING_SLOTS), key=lambda i: self._fading[i].released_at_block)
                self._silence(self._fading[oldest])
                self._bury(self._fading[oldest])
                slot = oldest
            self._fading[slot] = old
        self._sounding[:] = False
        if player is not None and player.synth is not None:
            synth = player.synth
            channel = FLUID_CHANNELS[synth.next_channel % len(FLUID_CHANNELS)]
            synth.next_channel += 1
            player.channel = channel
            fs = synth.synth
            fs.cc(channel, 121, 0)  # reset controllers
            fs.program_select(channel, synth.sfid, player.bank, player.program)
            if self._pedal:
                fs.cc(channel, SUSTAIN_CC, 127)
        self.current = player

    def _bury(self, player: Player) -> None:
        for i in range(len(self.graveyard)):
            if self.graveyard[i] is None:
                self.graveyard[i] = player
                return

    def _silence(self, player: Player) -> None:
        if player.synth is not None and player.channel >= 0:
            player.synth.synth.cc(player.channel, 120, 0)
        if player.voices is not None:
            player.voices[:, 0] = 0.0

    def _release_all(self, player: Player) -> None:
        if player.synth is not None and player.channel >= 0:
            fs = player.synth.synth
            fs.cc(player.channel, SUSTAIN_CC, 0)
            fs.cc(player.channel, 123, 0)  # all notes off: each note goes into its release
        if player.voices is not None:
            _voice_release(player.voices, -1)

    def _note_on(self, key: int, velocity: int) -> None:
        p = self.current
        if velocity == 0:
            self._note_off(key)
            return
        self._held[key] = True
        self.notes_on += 1
        if p is None:
            return
        if p.synth is not None:
            if self._sounding[key]:  # the same key again (pedal or a repeat): restart it as a piano does
                p.synth.synth.noteoff(p.channel, key)
            p.synth.synth.noteon(p.channel, key, velocity)
        elif p.voices is not None:
            if self._sounding[key]:
                _voice_release(p.voices, key)
            self._age += 1.0
            step = 2.0 ** ((key - p.root) / 12.0)
            gain = (velocity / 127.0) ** 2
            _voice_on(p.voices, key, step, gain, self._age)
        self._sounding[key] = True

    def _note_off(self, key: int) -> None:
        self._held[key] = False
        if self._pedal:
            return  # kept by the pedal; released when it lifts
        self._key_release(key)

    def _key_release(self, key: int) -> None:
        p = self.current
        self._sounding[key] = False
        if p is None:
            return
        if p.synth is not None:
            p.synth.synth.noteoff(p.channel, key)
        elif p.voices is not None:
            _voice_release(p.voices, key)

    def _control(self, number: int, value: int) -> None:
        p = self.current
        if number == SUSTAIN_CC:
            down = value >= 64
            if self._pedal and not down:
                self._pedal = False
                if p is not None and p.synth is not None:
                    p.synth.synth.cc(p.channel, SUSTAIN_CC, 0)  # fluidsynth releases the kept notes itself
                    for k in range(128):
                        if self._sounding[k] and not self._held[k]:
                            self._sounding[k] = False
                else:
                    for k in range(128):
                        if self._sounding[k] and not self._held[k]:
                            self._key_release(k)
            elif down and not self._pedal:
                self._pedal = True
                if p is not None and p.synth is not None:
                    p.synth.synth.cc(p.channel, SUSTAIN_CC, 127)
        elif number == 123:  # all notes off: every note goes into its release
            self._all_off()
        elif number == 120:  # all sound off: silence now
            self._all_off()
            for q in [self.current] + self._fading:
                if q is not None:
                    self._silence(q)
        elif p is not None and p.synth is not None:
            p.synth.synth.cc(p.channel, number, value)  # modulation, expression, ...

    def _all_off(self) -> None:
        self._pedal = False
        self._held[:] = False
        self._sounding[:] = False
        for p in [self.current] + self._fading:
            if p is not None:
                self._release_all(p)

    def _apply(self, kind: int, a: int, b: int) -> None:
        if kind == NOTE_ON:
            self._note_on(a & 127, b & 127)
        elif kind == NOTE_OFF:
            self._note_off(a & 127)
        elif kind == CONTROL:
            self._control(a & 127, b & 127)
        elif kind == BEND:
            p = self.current
            if p is not None and p.synth is not None:
                p.synth.synth.pitch_bend(p.channel, a - 8192)
        elif kind == ALL_OFF:
            self._all_off()

    def _poll_midi(self) -> None:
        midi = self.midi_in
        if midi is None:
            return
        while True:
            event = midi.get_message()
            if event is None:
                return
            message = event[0]
            self.midi_received += 1
            if not message:
                continue
            status = message[0] & 0xF0
            channel = message[0] & 0x0F
            if status in (0x80, 0x90) and channel == self.button_channel and len(message) == 3:
                self.outbox.push(NOTE_ON if status == 0x90 and message[2] > 0 else NOTE_OFF, message[1],
                                 message[2], channel)
            elif status == 0x90 and len(message) == 3:
                if message[2] > 0:
                    self._apply(NOTE_ON, message[1], message[2])
                    self.outbox.push(NOTE_ON, message[1], message[2], channel)
                else:
                    self._apply(NOTE_OFF, message[1], 0)
                    self.outbox.push(NOTE_OFF, message[1], 0, channel)
            elif status == 0x80 and len(message) == 3:
                self._apply(NOTE_OFF, message[1], 0)
                self.outbox.push(NOTE_OFF, message[1], 0, channel)
            elif status == 0xB0 and len(message) == 3:
                self._apply(CONTROL, message[1], message[2])
                self.outbox.push(CONTROL, message[1], message[2], channel)
            elif status == 0xC0 and len(message) >= 2:
                self.outbox.push(PROGRAM, message[1], 0, channel)
            elif status == 0xE0 and len(message) == 3:
                self._apply(BEND, message[1] | (message[2] << 7), 0)

    def audio_block(self, out: np.ndarray) -> None:
        """Fill ``out (frames, channels)`` float32: adopt a new player, apply MIDI and inbox events, render."""
        frames = out.shape[0]
        pending = self._pending
        if pending is not self.current:
            self._adopt(pending)
        self._poll_midi()
        row = self._row
        while self.inbox.pop_into(row):
            self._apply(int(row[0]), int(row[1]), int(row[2]))
        out.fill(0.0)
        mono = self._mono[:frames]
        mono.fill(0.0)
        block = self.blocks
        for i in range(-1, FADING_SLOTS):
            p = self.current if i < 0 else self._fading[i]
            if p is None:
                continue
            if p.synth is not None:
                synth = p.synth
                if synth.rendered_block != block:
                    synth.rendered_block = block
                    synth.render(frames)
                    if self.channels >= 2:
                        out[:, 0] += synth.left[:frames]
                        out[:, 1] += synth.right[:frames]
                    else:
                        out[:, 0] += synth.left[:frames]
                        out[:, 0] += synth.right[:frames]
            elif p.voices is not None:
                _render_voices(p.sample, p.voices, mono, frames, self._attack_inc, self._release_dec)
            if i >= 0 and block - p.released_at_block > self._fade_blocks(frames):
                # rung out (samples: no voice left; fluid: given the longest release we allow)
                if p.voices is None or _voices_active(p.voices) == 0:
                    if p.synth is not None and p.channel >= 0:
                        p.synth.synth.cc(p.channel, 120, 0)
                    self._fading[i] = None
                    self._bury(p)
        for c in range(min(2, self.channels)):
            out[:, c] += mono
        if self.gain != 1.0:
            out *= self.gain
        np.clip(out, -1.0, 1.0, out=out)
        self.blocks = block + 1

    def _fade_blocks(self, frames: int) -> int:
        return int(math.ceil(4.0 * self.sample_rate / max(1, frames)))  # 4 s of release at most


def load_player(patch: dict, sample_rate: float, max_block_frames: int, synths: dict) -> Player:
    """Build the player for a library patch (control thread: file I/O, resampling, soundfont loading).

    ``patch``: a row of ``NoteIndex.patches`` (kind, source_path, bank, program, file, key, title) plus the pitch
    it was recorded at (``root``, for samples). ``synths``: the caller's cache of ``FontSynth`` by font path.
    Raises TimbreclipError with one line when the patch's file has gone.
    """
    from timbreclip.dsp.errors import TimbreclipError

    kind = patch.get("kind")
    if kind == "soundfont":
        font = patch["source_path"]
        synth = synths.get(font)
        if synth is None:
            synth = FontSynth(font, sample_rate, max_block_frames)
            synths[font] = synth
        return Player(patch["key"], patch["title"], synth=synth, bank=int(patch["bank"] or 0),
                      program=int(patch["program"] or 0))
    if not patch.get("file"):
        raise TimbreclipError(f"{patch['title']}: this patch has no audio to play (source kind {kind})")
    path = os.path.join(patch["source_path"], patch["file"])
    if not os.path.isfile(path):
        raise TimbreclipError(f"{path}: the sample is gone (it was moved or deleted since it was added)")
    from timbreclip.dsp.audio_io import read_audio
    from timbreclip.neural.frontend import resample

    audio, rate = read_audio(path, max_seconds=30)
    mono = audio.mean(axis=0) if audio.ndim == 2 else audio
    mono = resample(np.asarray(mono, np.float32), rate, sample_rate).astype(np.float32)
    root = patch.get("root")
    root = 60.0 if root is None or (isinstance(root, float) and math.isnan(root)) else float(root)
    return Player(patch["key"], patch["title"], sample=np.ascontiguousarray(mono), root=root)
