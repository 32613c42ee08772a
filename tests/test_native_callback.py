"""The live loop's compiled audio callback (realtime/native.py), called here through its C address exactly as
PortAudio calls it: it plays what the Python callback and the offline engine play, bit for bit, and keeps the same
records (ring, timing, the set each block played, xruns by flag)."""

import ctypes
import time

import numpy as np
import pytest

from timbreclip.dsp.engine import BiquadCascade
from timbreclip.dsp.settings import Band, EQSettings
from timbreclip.realtime.loop import TIMING_SLOTS, LiveConfig, LiveEQ, LoopedFile, flat_sos
from timbreclip.realtime.native import NativeCallback

RATE = 48000
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p,
                            ctypes.c_ulong, ctypes.c_void_p)


def _settings(gains, out_db):
    return EQSettings(RATE, [Band(t, f, g) for t, f, g in zip(
        ("low_shelf", "peak", "peak", "peak", "peak", "peak", "peak", "high_shelf"),
        (120, 250, 500, 1000, 2000, 3500, 5000, 6000), gains)], out_db)


SETS = [_settings((6, 0, 0, -3, 0, 0, 0, 4), -2.0), _settings((-6, 2, 0, 3, 0, -4, 0, -8), 1.0)]


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_native_callback_plays_what_the_python_callback_plays(channels):
    block, blocks = 128, 60
    rng = np.random.default_rng(channels)
    x = (0.3 * rng.standard_normal((block * blocks, channels))).astype(np.float32)  # interleaved, as PortAudio
    native_live = LiveEQ(LiveConfig(prompts={"warm": 1.0}, blocksize=block, channels=channels))
    python_live = LiveEQ(LiveConfig(prompts={"warm": 1.0}, blocksize=block, channels=channels, callback="python"))
    native = NativeCallback(native_live)
    call = CALLBACK(native.address)
    out_native = np.zeros_like(x)
    out_python = np.zeros((channels, x.shape[0]), np.float32)
    switches = {7: 0, 8: 1, 30: 0}  # a retarget one block into a glide, and another later
    started = time.perf_counter()
    for b in range(blocks):
        if b in switches:
            for live in (native_live, python_live):
                live.cascade.set_sos(SETS[switches[b]].sos(), SETS[switches[b]].output_gain_db, tag=b)
        assert call(x[b * block:].ctypes.data, out_native[b * block:].ctypes.data, block, None, 0,
                    native.user_data) == 0
        python_live.audio_block(np.ascontiguousarray(x[b * block:(b + 1) * block].T),
                                out_python[:, b * block:(b + 1) * block], time.perf_counter())
    ended = time.perf_counter()
    np.testing.assert_array_equal(out_native.T, out_python)
    offline = BiquadCascade(flat_sos(8), channels, sample_rate=RATE)  # and the offline engine, in one pass each set
    expected = np.empty_like(out_python)
    for b in range(blocks):
        if b in switches:
            offline.set_sos(SETS[switches[b]].sos(), SETS[switches[b]].output_gain_db)
        offline.process(np.ascontiguousarray(x[b * block:(b + 1) * block].T), out=expected[:, b * block:(b + 1) * block])
    np.testing.assert_array_equal(out_native.T, expected)
    # the same records: blocks, the ring's mono history, the set each block played, timing on perf_counter's clock
    assert native_live.blocks == python_live.blocks == blocks and native_live.xruns == 0
    np.testing.assert_array_equal(native_live.ring.data[:block * blocks], python_live.ring.data[:block * blocks])
    np.testing.assert_array_equal(native_live.block_seq[:blocks], python_live.block_seq[:blocks])
    assert sorted(set(native_live.block_seq[:blocks].tolist())) == [0, 1, 2, 3]  # flat, then three sets
    starts = native_live.block_start[:blocks]
    assert started <= starts[0] and np.all(np.diff(starts) >= 0) and starts[-1] <= ended
    assert started <= float(native_live.ring.written_at[0]) <= ended
    assert np.all(native_live.block_us[:blocks] >= 0) and np.all(native_live.block_us[:blocks] < 1e6)
    native_live.drain_timing()
    assert native_live.stats_dict()["callback"] == "native" and len(native_live.callback_us()) == blocks
    for live in (native_live, python_live):
        live.close()


def test_native_callback_counts_xruns_by_flag_and_plays_a_looped_file():
    block = 64
    live = LiveEQ(LiveConfig(prompts={"warm": 1.0}, blocksize=block, channels=2))
    tone = np.sin(2 * np.pi * 440 * np.arange(1000) / RATE).astype(np.float32)
    source = LoopedFile(tone, RATE, RATE, 2, block)
    native = NativeCallback(live, source)
    call = CALLBACK(native.address)
    out = np.zeros((block * 40, 2), np.float32)
    flags = {3: 0x4, 5: 0x1 | 0x10, 9: 0x8}  # output underflow; input underflow + priming; output overflow
    for b in range(40):
        call(None, out[b * block:].ctypes.data, block, None, flags.get(b, 0), native.user_data)
    assert live.xruns == 3 and list(live.xrun_blocks[:3]) == [3, 5, 9]
    assert live.xrun_flags.tolist() == [1, 0, 1, 1, 1]
    heard = live.ring.data[:block * 40]
    looped = np.resize(tone, block * 40)  # the file, looped from its start, in every channel
    np.testing.assert_array_equal(heard, looped)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])
    assert int(source.position[0]) == (block * 40) % len(tone)
    # a block longer than the stream was opened for is not filtered past its buffers: silence, counted
    long = np.ones((block * 2, 2), np.float32)
    call(None, long.ctypes.data, block * 2, None, 0, native.user_data)
    assert not long.any() and live.xruns == 4 and live.blocks == 41
    assert TIMING_SLOTS & (TIMING_SLOTS - 1) == 0
    live.close()
