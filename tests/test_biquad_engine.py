"""The numba engine plays exactly the coefficients the torch EQ describes."""

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


def test_coefficient_change_ramps_without_a_click():
    rate = 48000.0
    a = EQSettings(rate, [Band("peak", 1000.0, -12.0, 2.0)]).sos()
    b = EQSettings(rate, [Band("peak", 1000.0, 12.0, 2.0)]).sos()
    t = np.arange(48000) / rate
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)[None, :]
    cascade = BiquadCascade(a, 1)
    out = np.empty_like(x)
    for start in range(0, x.shape[1], 256):
        if start == 24064:
            cascade.set_sos(b)
        out[:, start:start + 256] = cascade.process(np.ascontiguousarray(x[:, start:start + 256]))
    # a click shows as a jump far larger than a sine's largest sample-to-sample step
    steps = np.abs(np.diff(out[0]))
    sine_step = 2 * np.pi * 1000.0 / rate * np.abs(out[0]).max()
    assert steps.max() < 1.5 * sine_step
    np.testing.assert_allclose(cascade.sos, b / b[:, 3:4])
