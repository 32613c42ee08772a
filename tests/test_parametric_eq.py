"""ParametricEQ: declared ranges, gradients, STFT-grid and full-length application."""

import numpy as np
import pytest
import scipy.signal
import torch

from timbreclip.dsp.parametric_eq import DEFAULT_BAND_TYPES, BandRanges, ParametricEQ


def test_parameters_stay_in_declared_ranges():
    eq = ParametricEQ(16000.0, ranges=BandRanges((20.0, 20000.0), (-12.0, 12.0), (0.3, 10.0)))
    assert eq.ranges.freq_hz == (20.0, 7200.0)  # capped at 0.45 x rate
    with torch.no_grad():
        for p in (eq.raw_freq, eq.raw_gain, eq.raw_q):
            p.copy_(torch.tensor([-1e3, 1e3] * 4))
        assert float(eq.freq_hz.min()) >= 20.0 and float(eq.freq_hz.max()) <= 7200.0
        assert float(eq.gain_db.min()) >= -12.0 and float(eq.gain_db.max()) <= 12.0
        assert float(eq.q.min()) >= 0.3 and float(eq.q.max()) <= 10.0


def test_flat_at_initialisation_and_log_spaced():
    eq = ParametricEQ(48000.0)
    assert eq.band_types == DEFAULT_BAND_TYPES
    f = eq.freq_hz.detach().numpy()
    ratios = f[1:] / f[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-4)
    x = torch.randn(2, 4800)
    np.testing.assert_allclose(eq(x).detach().numpy(), x.numpy(), atol=1e-5)


def test_gradients_reach_every_parameter():
    eq = ParametricEQ(16000.0)
    eq.set_bands(gain_db=torch.linspace(-6, 6, 8))
    x = torch.randn(1, 8000)
    loss = eq(x).pow(2).mean() + eq.gain_on_grid(1024).mean()
    loss.backward()
    for p in (eq.raw_freq, eq.raw_gain, eq.raw_q):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_full_length_filtering_equals_sosfilt(rng):
    eq = ParametricEQ(48000.0).double()
    eq.set_bands(gain_db=torch.tensor(rng.uniform(-12, 12, 8)), q=torch.tensor(rng.uniform(0.5, 8, 8)))
    x = rng.standard_normal((2, 30000))
    want = scipy.signal.sosfilt(eq.to_settings().sos(), x, axis=-1)
    got = eq(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_stft_grid_gain_matches_response():
    eq = ParametricEQ(16000.0)
    eq.set_bands(gain_db=torch.tensor([6.0, -3, 2, 0, 0, 4, -6, 9]))
    g = eq.gain_on_grid(1024)
    assert g.shape == (513,)
    settings = eq.to_settings()
    freqs = np.fft.rfftfreq(1024, 1 / 16000.0)
    np.testing.assert_allclose(10 * np.log10(g.detach().numpy()), settings.response_db(freqs), atol=1e-4)
    power = torch.rand(3, 513, 20)
    out = eq.apply_to_power(power, 1024)
    torch.testing.assert_close(out, power * g[:, None])


def test_batched_eq_is_independent():
    eq = ParametricEQ(16000.0, batch_size=3)
    eq.set_bands(gain_db=torch.tensor([[0.0] * 8, [6.0] * 8, [-6.0] * 8]))
    assert eq.gain_on_grid(512).shape == (3, 257)
    x = torch.randn(3, 2, 4000)
    y = eq(x)
    np.testing.assert_allclose(y[0].detach().numpy(), x[0].numpy(), atol=1e-5)
    s1 = eq.to_settings(index=1)
    assert all(b.gain_db == pytest.approx(6.0, abs=1e-4) for b in s1.bands)


def test_settings_round_trip():
    eq = ParametricEQ(44100.0)
    eq.set_bands(freq_hz=torch.tensor([60.0, 200, 400, 800, 1600, 3200, 6400, 12000]),
                 gain_db=torch.tensor([3.0, -2, 1, 0, 0, 2, -1, 4]), q=torch.tensor([0.7] * 8))
    again = ParametricEQ.from_settings(eq.to_settings())
    for a, b in ((eq.freq_hz, again.freq_hz), (eq.gain_db, again.gain_db), (eq.q, again.q)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_select_members_of_a_batched_eq():
    eq = ParametricEQ(16000, batch_size=3)
    with torch.no_grad():
        eq.raw_gain.copy_(torch.randn(3, 8))
    one = eq.select(1)
    assert one.gain_db.shape == (8,)
    torch.testing.assert_close(one.gain_db, eq.gain_db[1])
    two = eq.select([2, 0])
    assert two.gain_db.shape == (2, 8)
    torch.testing.assert_close(two.gain_db, eq.gain_db[[2, 0]])
