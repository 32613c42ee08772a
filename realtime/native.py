"""The live loop's audio callback as native code: PortAudio calls a numba ``cfunc`` directly, without Python.

A Python callback (sounddevice's default) must take the GIL on entry and builds Python objects for every block (the
buffers as arrays, the time and status objects): the audio thread then waits whenever another thread of the process
holds the GIL (the control loop, MIDI, the display, the steering thread), and allocates in every block. This callback
is a C function compiled by numba from the same kernels as ``LiveEQ.audio_block`` (the ring buffer's writer, the
coefficient handoff, the glide and steady biquad kernels): it takes no GIL, allocates nothing, and reads and writes
only preallocated arrays, whose addresses it gets through PortAudio's ``userData`` pointer. sounddevice opens the
stream with it as a C function pointer (its ``_StreamBase`` takes one, for library authors).

What it does per block, in order (as ``LiveEQ.audio_block`` does): count the stream's status flags as an xrun; take
the input (the device's interleaved ``(frames, channels)`` buffer, or the next block of a looped file for ``--play``);
write its channel mean into the ring; take a newly published coefficient set, if any, and glide or run steady into
the output buffer; stamp the block's start (``CLOCK_MONOTONIC``: the clock of ``time.perf_counter``), its duration
and the set it played; advance the block counter last.

The steady kernel is the generic one (``dsp.engine._generic_steady``: the same float64 arithmetic, in the same
order, as the generated per-section-count kernels, so the output is bit-identical), since a ``cfunc`` is compiled
once for any section count and cached on disk.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, types
from numba.core import cgutils
from numba.extending import intrinsic

from timbreclip.dsp.engine import _begin_block, _generic_steady, _glide_block

from .loop import _loop_copy
from .ring import _write_mono

CLOCK_MONOTONIC = 1
PA_CONTINUE = 0
# PortAudio's status flags, in LiveEQ.xrun_flags order
PA_FLAGS = (0x1, 0x2, 0x4, 0x8, 0x10)  # input underflow, input overflow, output underflow, output overflow, priming

@intrinsic
def _monotonic_ns(typingctx):
    """``clock_gettime(CLOCK_MONOTONIC)`` in ns (the clock of ``time.perf_counter`` on Linux), called from compiled
    code: the symbol is resolved from libc when the code is loaded, so the callback caches on disk like any numba
    function (a ctypes function pointer would pin it to one process)."""
    def codegen(context, builder, signature, args):
        i64, i32 = ir.IntType(64), ir.IntType(32)
        spec = cgutils.alloca_once(builder, ir.ArrayType(i64, 2))
        fnty = ir.FunctionType(i32, [i32, cgutils.voidptr_t])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
        builder.call(fn, [ir.Constant(i32, CLOCK_MONOTONIC), builder.bitcast(spec, cgutils.voidptr_t)])
        seconds = builder.load(builder.gep(spec, [ir.Constant(i32, 0), ir.Constant(i32, 0)]))
        nanos = builder.load(builder.gep(spec, [ir.Constant(i32, 0), ir.Constant(i32, 1)]))
        return builder.add(builder.mul(seconds, ir.Constant(i64, 1_000_000_000)), nanos)
    return types.int64(), codegen


@intrinsic
def _address(typingctx, address):
    """An int64 address as a ``void*`` (what ``carray`` takes)."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(types.int64), codegen


# The slots of the address table (userData points at it): each holds the address of one preallocated array.
(A_DIMS, A_RING, A_RING_WRITTEN, A_RING_AT, A_PUBLISHED, A_SEEN, A_SLOT_SOS, A_SLOT_GAIN, A_SLOT_TAG, A_SLOT_SEQ,
 A_SCRATCH_SOS, A_SCRATCH_META, A_ORIGIN, A_TARGET, A_GAINS, A_GLIDE, A_STATE, A_COUNTERS, A_BLOCK_START, A_BLOCK_US,
 A_BLOCK_SEQ, A_AUDIO, A_XRUN_FLAGS, A_XRUN_BLOCKS, A_SOURCE, A_SOURCE_POS, A_SCRATCH_IN) = range(27)
ADDRESSES = 27
# dims: sections, channels, handoff slots, ring capacity, timing slots, source frames (0: device input), max block
# frames, glide frames, input channels of the device buffer (unused with a looped file)
(D_SECTIONS, D_CHANNELS, D_SLOTS, D_CAPACITY, D_TIMING, D_SOURCE, D_MAX_FRAMES, D_GLIDE, D_IN_CHANNELS) = range(9)
DIMS = 9

_SIGNATURE = types.int32(types.voidptr, types.voidptr, types.uint64, types.voidptr, types.uint64, types.voidptr)


@cfunc(_SIGNATURE, cache=True, error_model="numpy")
def _callback(input_ptr, output_ptr, frames, time_info, status, user_data):  # pragma: no cover - compiled
    a = carray(user_data, (ADDRESSES,), np.int64)
    dims = carray(_address(a[A_DIMS]), (DIMS,), np.int64)
    start_ns = _monotonic_ns()
    now = np.float64(start_ns) * 1e-9
    sections, channels, slots = dims[D_SECTIONS], dims[D_CHANNELS], dims[D_SLOTS]
    timing = dims[D_TIMING]
    n = np.int64(frames)
    audio = carray(_address(a[A_AUDIO]), (2,), np.int64)  # blocks, xruns
    flagged = np.int64(status)
    if flagged != 0:
        xrun_blocks = carray(_address(a[A_XRUN_BLOCKS]), (16,), np.int64)
        flags = carray(_address(a[A_XRUN_FLAGS]), (5,), np.int64)
        if audio[1] < 16:
            xrun_blocks[audio[1]] = audio[0]
        audio[1] += 1
        for f in range(5):
            if flagged & PA_FLAGS[f]:
                flags[f] += 1
    out = carray(output_ptr, (n, channels), np.float32).T
    if n > dims[D_MAX_FRAMES]:  # not the block size the stream was opened with: silence, counted as an xrun
        out[:, :] = 0.0
        audio[1] += 1
        audio[0] += 1
        return PA_CONTINUE
    if dims[D_SOURCE] > 0:  # --play: the next block of the looped file
        source = carray(_address(a[A_SOURCE]), (channels, dims[D_SOURCE]), np.float32)
        position = carray(_address(a[A_SOURCE_POS]), (1,), np.int64)
        block = carray(_address(a[A_SCRATCH_IN]), (channels, dims[D_MAX_FRAMES]), np.float32)[:, :n]
        _loop_copy(source, position, block)
        x = block
    else:
        x = carray(input_ptr, (n, dims[D_IN_CHANNELS]), np.float32).T
    ring = carray(_address(a[A_RING]), (dims[D_CAPACITY],), np.float32)
    written = carray(_address(a[A_RING_WRITTEN]), (1,), np.int64)
    written_at = carray(_address(a[A_RING_AT]), (1,), np.float64)
    _write_mono(ring, written, x)
    written_at[0] = now
    counters = carray(_address(a[A_COUNTERS]), (4,), np.int64)
    origin = carray(_address(a[A_ORIGIN]), (sections, 6), np.float64)
    target = carray(_address(a[A_TARGET]), (sections, 6), np.float64)
    gains = carray(_address(a[A_GAINS]), (2,), np.float64)
    glide = carray(_address(a[A_GLIDE]), (2,), np.int64)
    state = carray(_address(a[A_STATE]), (channels, sections, 2), np.float64)
    if _begin_block(carray(_address(a[A_PUBLISHED]), (1,), np.int64), carray(_address(a[A_SEEN]), (1,), np.int64),
                    carray(_address(a[A_SLOT_SOS]), (slots, sections, 6), np.float64),
                    carray(_address(a[A_SLOT_GAIN]), (slots,), np.float64),
                    carray(_address(a[A_SLOT_TAG]), (slots,), np.int64),
                    carray(_address(a[A_SLOT_SEQ]), (slots,), np.int64),
                    carray(_address(a[A_SCRATCH_SOS]), (sections, 6), np.float64),
                    carray(_address(a[A_SCRATCH_META]), (2,), np.float64),
                    origin, target, gains, glide, dims[D_GLIDE], counters):
        _glide_block(x, out, origin, target, gains, glide, state)
    else:
        _generic_steady(x, out, target, state, gains[1])
    k = audio[0] & (timing - 1)
    block_start = carray(_address(a[A_BLOCK_START]), (timing,), np.float64)
    block_us = carray(_address(a[A_BLOCK_US]), (timing,), np.float64)
    block_seq = carray(_address(a[A_BLOCK_SEQ]), (timing,), np.int64)
    block_start[k] = now
    block_us[k] = np.float64(_monotonic_ns() - start_ns) * 1e-3
    block_seq[k] = counters[1]
    audio[0] += 1  # last: the control thread reads records below this count
    return PA_CONTINUE


class NativeCallback:
    """The address table of one ``LiveEQ`` (and a looped ``source`` for ``--play``) for ``_callback``: build it
    before the stream opens, keep it alive while the stream runs, pass ``user_data`` as PortAudio's userData."""

    def __init__(self, live, source=None, input_channels: int | None = None) -> None:
        cascade, ring = live.cascade, live.ring
        handoff = cascade.handoff
        self._scratch_in = np.zeros((live.channels, live.config.blocksize), np.float32)
        source_data = np.zeros((live.channels, 1), np.float32) if source is None else source.data
        source_pos = np.zeros(1, np.int64) if source is None else source.position
        if source is not None and source_data.shape[0] != live.channels:
            raise ValueError(f"the looped file has {source_data.shape[0]} channels, the stream {live.channels}")
        self.dims = np.zeros(DIMS, np.int64)
        self.dims[[D_SECTIONS, D_CHANNELS, D_SLOTS, D_CAPACITY, D_TIMING, D_SOURCE, D_MAX_FRAMES, D_GLIDE,
                   D_IN_CHANNELS]] = (
            cascade.sections, live.channels, handoff.sos.shape[0], ring.capacity, len(live.block_start),
            0 if source is None else source_data.shape[1], live.config.blocksize, cascade.glide_frames,
            live.channels if input_channels is None else input_channels)
        arrays = {A_DIMS: self.dims, A_RING: ring.data, A_RING_WRITTEN: ring.written, A_RING_AT: ring.written_at,
                  A_PUBLISHED: handoff.published, A_SEEN: handoff.seen, A_SLOT_SOS: handoff.sos,
                  A_SLOT_GAIN: handoff.gain, A_SLOT_TAG: handoff.tag, A_SLOT_SEQ: handoff.slot_seq,
                  A_SCRATCH_SOS: handoff.scratch_sos, A_SCRATCH_META: handoff.scratch_meta,
                  A_ORIGIN: cascade._origin, A_TARGET: cascade._target, A_GAINS: cascade._gains,
                  A_GLIDE: cascade._glide, A_STATE: cascade._state, A_COUNTERS: cascade.counters,
                  A_BLOCK_START: live.block_start, A_BLOCK_US: live.block_us, A_BLOCK_SEQ: live.block_seq,
                  A_AUDIO: live.audio_counts, A_XRUN_FLAGS: live.xrun_flags, A_XRUN_BLOCKS: live.xrun_blocks,
                  A_SOURCE: source_data, A_SOURCE_POS: source_pos, A_SCRATCH_IN: self._scratch_in}
        for slot, array in arrays.items():
            if not array.flags.c_contiguous:
                raise ValueError(f"native callback: array in slot {slot} is not C-contiguous")
        self._arrays = arrays  # kept alive as long as the stream may call
        self.table = np.array([arrays[k].ctypes.data for k in range(ADDRESSES)], np.int64)

    def release(self) -> None:
        """Drop the references to the loop's arrays (once the stream is closed and can no longer call): the ring
        in shared memory can then be unmapped."""
        self._arrays = {}
        self.table[:] = 0

    @property
    def user_data(self) -> int:
        return int(self.table.ctypes.data)

    @property
    def address(self) -> int:
        """The compiled callback's address (a ``PaStreamCallback``)."""
        return _callback.address
