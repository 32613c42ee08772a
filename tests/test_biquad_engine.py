"""The numba engine plays exactly the coefficients the torch EQ describes."""

import threading
import time

import numpy as np
import pytest
import scipy.signal
import torch

from conftest import random_bands
from timbreclip.dsp.biquad import cascade_response, magnitude_db, rbj_coefficients
from timbreclip.dsp.engine import BiquadCascade
from timbreclip.dsp.settings import Band, EQSettings


def test_numpy_and_torch_faces_agree(rng):
    codes = rng.integers(0, 7, 64)
    f, g, q = rng.uniform(20, 20000, 64), rng.uniform(-15, 15, 64), rng.uniform(0.3, 10, 64)
    a = rbj_coefficients(codes, f, g, q, 48000.0)
    b = rbj_coefficients(torch.tensor(codes), torch.tensor(f), torch.tensor(g), torch.tensor(q), 48000.0, xp=torch)
    np.testing.assert_allclose(a, b.numpy(), rtol=1e-12, atol=1e-12)


def test_cookbook_values():
    # peak at 1 kHz, +6 dB: |H(1 kHz)| is exactly +6 dB; shelves reach their gain at the far end
    rate = 48000.0
    for kind, probe, want in (("peak", 1000.0, 6.0), ("low_shelf", 5.0, 6.0), ("high_shelf", 23900.0, 6.0),
                              ("low_pass", 23990.0, -200.0), ("high_pass", 1.0, -200.0)):
        sos = EQSettings(rate, [Band(kind, 1000.0, 6.0, 0.7071)]).sos()
        got = magnitude_db(cascade_response(sos, np.array([probe]), rate))[0]
        if want > -100:
            assert got == pytest.approx(want, abs=0.05), kind
        else:
            assert got < -60, kind
    # -3 dB corner of a Butterworth-Q low-pass
    sos = EQSettings(rate, [Band("low_pass", 1000.0, 0.0, 1 / np.sqrt(2))]).sos()
    assert magnitude_db(cascade_response(sos, np.array([1000.0]), rate))[0] == pytest.approx(-3.0103, abs=1e-3)


@pytest.mark.parametrize("trial", range(20))
def test_engine_matches_sosfilt(rng, trial):
    rate = float(rng.choice([16000, 44100, 48000, 96000]))
    settings = EQSettings(rate, random_bands(rng, rate))
    channels = int(rng.integers(1, 4))
    x = rng.standard_normal((channels, 4000)).astype(np.float32) * 0.3
    want = scipy.signal.sosfilt(settings.sos(), x.astype(np.float64), axis=-1)
    got = BiquadCascade(settings.sos(), channels).process(x)
    scale = max(1.0, np.abs(want).max())
    np.testing.assert_allclose(got, want, atol=1e-5 * scale)


def test_any_block_size_gives_the_same_output(rng):
    rate = 48000.0
    settings = EQSettings(rate, random_bands(rng, rate, n=8))
    x = rng.standard_normal((2, 12345)).astype(np.float32) * 0.2
    whole = BiquadCascade(settings.sos(), 2).process(x)
    for block in (1, 64, 256, 1000, 97, 333):
        cascade = BiquadCascade(settings.sos(), 2)
        out = np.empty_like(x)
        for start in range(0, x.shape[1], block):
            seg = np.ascontiguousarray(x[:, start:start + block])
            out[:, start:start + block] = cascade.process(seg)
        np.testing.assert_array_equal(out, whole, err_msg=f"block {block}")


def test_in_place_and_transposed_views(rng):
    settings = EQSettings(48000.0, random_bands(rng, 48000.0, n=4))
    x = rng.standard_normal((2, 512)).astype(np.float32)
    want = BiquadCascade(settings.sos(), 2).process(x)
    buf = x.copy()
    BiquadCascade(settings.sos(), 2).process(buf, out=buf)
    np.testing.assert_array_equal(buf, want)
    interleaved = np.ascontiguousarray(x.T)  # (frames, channels) as a sound card delivers it
    BiquadCascade(settings.sos(), 2).process(interleaved.T, out=interleaved.T)
    np.testing.assert_array_equal(interleaved.T, want)


@pytest.mark.parametrize("chunk", range(4))
def test_impulse_response_matches_torch_response(rng, chunk):
    """100 random settings (25 per chunk): the ParametricEQ's float64 response vs the impulse response of the
    numba engine playing the settings that EQ exports, within 0.01 dB over 20 Hz .. 0.95 x Nyquist.

    Points deep in a low/high-pass stopband (more than 60 dB below the response's maximum) are left out: there
    the engine's float32 output quantisation, not the filter, sets the measured level."""
    from timbreclip.dsp.parametric_eq import BandRanges, ParametricEQ

    n = 1 << 18  # 5.5 s at 48 kHz: a 20 Hz, Q 10 band has decayed by ~150 dB
    impulse = np.zeros((1, n), np.float32)
    impulse[0, 0] = 1.0
    worst = 0.0
    for _ in range(25):
        rate = float(rng.choice([16000, 44100, 48000]))
        bands = random_bands(rng, rate, n=int(rng.integers(1, 9)))
        eq = ParametricEQ(rate, tuple(b.type for b in bands), BandRanges((19.0, 0.46 * rate), (-16.0, 16.0),
                                                                         (0.29, 10.5))).double()
        eq.set_bands(*(torch.tensor([getattr(b, k) for b in bands], dtype=torch.float64)
                       for k in ("freq_hz", "gain_db", "q")))
        settings = eq.to_settings()
        ir = BiquadCascade(settings.sos(), 1).process(impulse)[0].astype(np.float64)
        measured = magnitude_db(np.fft.rfft(ir))
        freqs = np.fft.rfftfreq(n, 1.0 / rate)
        with torch.no_grad():
            predicted = magnitude_db(eq.response(torch.tensor(freqs)), xp=torch).numpy()
        keep = (freqs >= 20.0) & (freqs <= 0.95 * rate / 2) & (predicted > predicted.max() - 60.0)
        worst = max(worst, float(np.max(np.abs(measured[keep] - predicted[keep]))))
    assert worst < 0.01, f"max deviation {worst:.4f} dB"


def _shelf(gain_db, rate=48000.0):
    return EQSettings(rate, [Band("high_shelf", 3000.0, gain_db, 0.7071)]).sos()


def _switch_steps(glide_frames, block=32, rate=48000.0):
    """A 3 kHz high shelf switched -12 -> +12 dB mid-signal on a 2 kHz sine, played in ``block``-frame blocks:
    (largest sample-to-sample step around the switch, largest step of the steady +12 dB output)."""
    t = np.arange(24000) / rate
    x = (0.25 * np.sin(2 * np.pi * 2000.0 * t)).astype(np.float32)[None, :]
    cascade = BiquadCascade(_shelf(-12.0), 1, sample_rate=rate, glide_frames=glide_frames)
    cascade.prepare(1, block)
    out = np.empty_like(x)
    switch = 12000 - 12000 % block
    for start in range(0, x.shape[1], block):
        if start == switch:
            cascade.set_sos(_shelf(12.0))
        cascade.process(x[:, start:start + block], out=out[:, start:start + block])
    steps = np.abs(np.diff(out[0]))
    return steps[switch - 64:switch + 2400].max(), steps[-4000:].max()


def test_glide_is_click_free_at_small_blocks_and_a_hard_switch_is_not():
    """The check separates a click from a glide: a hard switch steps several times the steady signal's largest
    sample-to-sample change; the 20 ms glide (spanning 30 blocks of 32 frames) stays at about 1x."""
    glide_peak, steady = _switch_steps(glide_frames=None)
    hard_peak, steady_hard = _switch_steps(glide_frames=0)
    assert glide_peak < 1.2 * steady, (glide_peak, steady)
    assert not hard_peak < 1.2 * steady_hard, "the check cannot tell a hard switch from a glide"
    assert hard_peak > 3.0 * steady_hard


def test_glide_spans_blocks_for_its_duration_in_samples():
    rate = 48000.0
    cascade = BiquadCascade(_shelf(-12.0), 1, sample_rate=rate)
    assert cascade.glide_frames == 960  # 20 ms at 48 kHz
    cascade.prepare(1, 32)
    x = np.zeros((1, 32), np.float32)
    cascade.set_sos(_shelf(12.0))
    for _ in range(29):  # 928 frames: still gliding
        cascade.process(x, out=x)
    assert not np.allclose(cascade._target, cascade._origin)
    cascade.process(x, out=x)  # 960 frames: arrived
    np.testing.assert_array_equal(cascade._origin, cascade._target)


def test_retarget_before_the_next_block_continues_from_what_plays():
    """A -> B -> C with B never played: the output glides from A to C exactly as A -> C does (today B became the
    "old" set and A jumped to it)."""
    rng = np.random.default_rng(3)
    x = (0.3 * rng.standard_normal((2, 4096))).astype(np.float32)
    a, b, c = _shelf(-12.0), _shelf(12.0), EQSettings(48000.0, [Band("high_shelf", 3000.0, 0.0, 0.7071)]).sos()

    def run(retargets):
        cascade = BiquadCascade(a, 2)
        cascade.prepare(2, 256)
        out = np.empty_like(x)
        for start in range(0, 4096, 256):
            if start == 1024:
                for sos in retargets:
                    cascade.set_sos(sos)
            cascade.process(x[:, start:start + 256], out=out[:, start:start + 256])
        return out

    np.testing.assert_array_equal(run([b, c]), run([c]))


def test_retarget_during_a_glide_has_no_jump():
    """Retargeting halfway through a glide starts the new glide at the coefficients playing at that sample."""
    peak_direct, steady = _switch_steps(glide_frames=None)
    t = np.arange(24000) / 48000.0
    x = (0.25 * np.sin(2 * np.pi * 2000.0 * t)).astype(np.float32)[None, :]
    cascade = BiquadCascade(_shelf(-12.0), 1)
    out = np.empty_like(x)
    for start in range(0, x.shape[1], 32):
        if start == 12000:
            cascade.set_sos(_shelf(12.0))
        if start == 12480:  # half-way: turn back
            cascade.set_sos(_shelf(-12.0))
        cascade.process(x[:, start:start + 32], out=out[:, start:start + 32])
    steps = np.abs(np.diff(out[0]))
    assert steps[11900:14000].max() < 1.2 * steady


def test_glides_do_not_depend_on_the_block_partition():
    rng = np.random.default_rng(5)
    x = (0.3 * rng.standard_normal((2, 6000))).astype(np.float32)

    def run(block):
        cascade = BiquadCascade(_shelf(-12.0), 2)
        out = np.empty_like(x)
        done = 0
        for start in range(0, 6000, block):
            if done == 0 and start >= 960:
                cascade.set_sos(_shelf(12.0), output_gain_db=-6.0)
                done = start
            cascade.process(x[:, start:start + block], out=out[:, start:start + block])
        return out, done

    ref, at = run(64)  # switch lands on frame 960 for every block size below that divides it
    for block in (32, 96, 192, 320):
        got, at2 = run(block)
        assert at2 == at
        np.testing.assert_array_equal(got, ref, err_msg=f"block {block}")


def test_output_gain_changes_glide():
    """An output gain change (bypass, amount, loudness) ramps instead of stepping: 0 -> -20 dB on a held DC
    level moves at most 1/900 of the way per sample over a 20 ms glide."""
    flat = EQSettings(48000.0, []).sos()
    cascade = BiquadCascade(flat, 1, sample_rate=48000.0)
    cascade.prepare(1, 64)
    x = np.full((1, 4096), 0.5, np.float32)
    out = np.empty_like(x)
    for start in range(0, 4096, 64):
        if start == 1024:
            cascade.set_gain_db(-20.0)
        cascade.process(x[:, start:start + 64], out=out[:, start:start + 64])
    assert np.abs(np.diff(out[0])).max() < 0.5 * 0.9 / 900
    assert out[0, -1] == pytest.approx(0.05, rel=1e-6)
    assert cascade.output_gain_db == -20.0


def test_prepare_compiles_every_layout_a_callback_passes():
    """After prepare, processing sounddevice-style (frames, channels) buffers through ``.T`` compiles nothing."""
    from timbreclip.dsp import engine

    cascade = BiquadCascade(_shelf(6.0), 2)
    cascade.prepare(2, 256)
    counts = (len(cascade._steady.signatures), len(engine._glide_block.signatures),
              len(engine._begin_block.signatures))
    indata = np.ones((256, 2), np.float32)
    outdata = np.zeros((256, 2), np.float32)
    cascade.process(indata.T, out=outdata.T)  # steady
    cascade.set_sos(_shelf(-6.0))
    cascade.process(indata.T, out=outdata.T)  # gliding
    cascade.process(np.ascontiguousarray(indata.T), out=outdata.T)
    assert (len(cascade._steady.signatures), len(engine._glide_block.signatures),
            len(engine._begin_block.signatures)) == counts


def test_each_block_is_checked():
    cascade = BiquadCascade(_shelf(6.0), 2)
    cascade.prepare(2, 256)
    with pytest.raises(ValueError, match="expected \\(2, frames\\)"):
        cascade.process(np.zeros((3, 256), np.float32))  # more channels than the state holds
    with pytest.raises(ValueError, match="float32"):
        cascade.process(np.zeros((2, 256), np.float64))
    with pytest.raises(ValueError, match="at most 256"):
        cascade.process(np.zeros((2, 512), np.float32))
    with pytest.raises(ValueError, match="out has shape"):
        cascade.process(np.zeros((2, 256), np.float32), out=np.zeros((2, 128), np.float32))
    with pytest.raises(ValueError, match="3 channels"):
        BiquadCascade(_shelf(6.0), 3).prepare(2, 256)


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_odd_channel_counts_match_sosfilt(channels, rng):
    settings = EQSettings(48000.0, random_bands(rng, 48000.0, n=6))
    x = rng.standard_normal((channels, 3000)).astype(np.float32) * 0.3
    want = scipy.signal.sosfilt(settings.sos(), x.astype(np.float64), axis=-1)
    got = BiquadCascade(settings.sos(), channels).process(x)
    np.testing.assert_allclose(got, want, atol=1e-5 * max(1.0, np.abs(want).max()))


def test_odd_channel_kernel_runs_the_last_channel_once():
    """Mono used to run its one channel through the pair loop twice (twice the work); the generated source now
    has a single-channel tail and the pair loop never pairs a channel with itself."""
    from timbreclip.dsp.kernels import kernel_source

    src = kernel_source(2)
    assert "while c + 1 < channels" in src and "if c < channels" in src
    assert "d = 1 if c + 1 < channels else 0" not in src


def test_handoff_never_delivers_half_a_set():
    """A control thread publishes sets as fast as it can while the reader takes them: every set the reader ends up
    with is one that was published whole (each set's sections are all equal). The engine's kernels keep the GIL
    (see engine.py), which would serialise the two sides; the reader here is the same function compiled without
    the GIL, so the protocol itself is exercised under true concurrency."""

    import numba

    from timbreclip.dsp.handoff import CoefficientHandoff
    from timbreclip.dsp.handoff import take as take_with_gil

    take = numba.njit(nogil=True)(take_with_gil.py_func)

    sections = 64
    handoff = CoefficientHandoff(sections)
    sets = [np.tile(_shelf(g)[0] / _shelf(g)[0, 3], (sections, 1)) for g in np.linspace(-12, 12, 7)]
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            handoff.publish(sets[i % len(sets)], 1.0 + i % len(sets), tag=i % len(sets))
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    taken = torn = 0
    try:
        args = handoff.arrays()
        # a count of sets taken, not of loop turns: on a loaded machine the writer thread gets the GIL less often
        deadline, turns = time.monotonic() + 60.0, 0
        while (turns < 200_000 or taken < 200) and time.monotonic() < deadline:
            turns += 1
            if take(*args):
                taken += 1
                k = int(handoff.scratch_meta[1])
                if not (np.array_equal(handoff.scratch_sos, sets[k]) and handoff.scratch_meta[0] == 1.0 + k):
                    torn += 1
    finally:
        stop.set()
        thread.join()
    assert taken >= 200
    assert torn == 0
