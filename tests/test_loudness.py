"""Loudness matching and the anti-clip rule (dsp/loudness.py): the streamed meter, the gain rule, and their users
(TextEQ in Python, `eq` on a long file in bounded memory)."""

import tracemalloc

import numpy as np
import pyloudnorm
import pytest

from conftest import save_tiny_model

from timbreclip.dsp.loudness import CEILING_DBFS, LoudnessMeter, loudness_lufs, match_and_guard


@pytest.mark.parametrize("rate, channels, seconds, chunk", [(44100, 2, 7.3, 12345), (48000, 1, 3.05, 4096),
                                                             (22050, 2, 1.0, 1000), (11025, 3, 2.2, 777),
                                                             (16000, 5, 4.0, 65536)])
def test_streamed_meter_equals_pyloudnorm_on_the_whole_array(rate, channels, seconds, chunk):
    rng = np.random.default_rng(rate)
    n = int(rate * seconds)
    x = rng.standard_normal((channels, n)) * np.linspace(0.001, 0.5, n) ** 2  # a fade: the gates matter
    reference = pyloudnorm.Meter(rate).integrated_loudness(x.T if channels > 1 else x[0])
    meter = LoudnessMeter(rate, channels)
    for start in range(0, n, chunk):
        meter.add(x[:, start:start + chunk])
    assert meter.lufs() == pytest.approx(reference, abs=1e-6)
    assert loudness_lufs(x, rate) == pytest.approx(reference, abs=1e-6)


def test_short_silent_and_many_channel_audio_get_a_level():
    assert loudness_lufs(np.zeros(44100), 44100) == -120.0
    short = 0.5 * np.ones(1000)
    assert loudness_lufs(short, 44100) == pytest.approx(20 * np.log10(0.5), abs=1e-3)
    eight = np.random.default_rng(0).standard_normal((8, 44100)) * 0.1
    one = loudness_lufs(eight[:1], 44100)
    assert loudness_lufs(eight, 44100) == pytest.approx(one + 10 * np.log10(8), abs=0.1)


def test_gain_rule_matches_loudness_then_guards_the_peak():
    g = match_and_guard(-20.0, -26.0, -8.0)  # the EQ lost 6 dB: give it back, the peak stays under the ceiling
    assert (g.match_db, g.clip_db) == (6.0, 0.0)
    g = match_and_guard(-20.0, -26.0, -3.0)  # +6 dB would peak at +3 dBFS: turned down to the ceiling
    assert g.match_db == 6.0 and g.total_db == pytest.approx(CEILING_DBFS + 3.0)
    assert match_and_guard(-20.0, -30.0, -20.0, limit_db=6.0).match_db == 6.0
    g = match_and_guard(0.0, 0.0, 2.0, match=False, ceiling_dbfs=0.0)
    assert (g.match_db, g.clip_db) == (0.0, -2.0)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("m") / "m")


def _loud_note(seconds=2.0, rate=44100):
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * 110 * h * t) / h for h in range(1, 40) if 110 * h < rate / 2)
    x = (0.5 * x / np.abs(x).max()).astype(np.float32)
    return np.stack([x, x])


def test_text_eq_matches_loudness_and_never_clips(model):
    """The README's example: a 0.5-peak input must not come back louder or clipping (it returned a peak of 4.59)."""
    from timbreclip.neural.model import TimbreCLIP
    from timbreclip.neural.steering import SteeringConfig, TextEQ

    audio = _loud_note()
    eq = TextEQ({"bass-heavy": 1.0, "warm": 1.0}, TimbreCLIP.load(model),
                config=SteeringConfig(steps=30, time_budget_s=None, lr=0.5))
    settings = eq.fit(audio, 44100)
    boost = max(b.gain_db for b in settings.bands)
    out = eq(audio, 44100)
    assert np.abs(out).max() <= 10 ** (CEILING_DBFS / 20) + 1e-6
    if settings.provenance["anti_clip_db"] == 0:
        assert loudness_lufs(out, 44100) == pytest.approx(loudness_lufs(audio, 44100), abs=0.1)
    assert settings.provenance["loudness_match_db"] == pytest.approx(
        settings.output_gain_db - settings.provenance["anti_clip_db"], abs=1e-3)
    louder = eq(audio * 1.9, 44100)  # other audio through the same EQ: still guarded
    assert np.abs(louder).max() <= 10 ** (CEILING_DBFS / 20) + 1e-6
    assert boost > -100  # the fit ran


def test_eq_on_a_long_file_streams_in_bounded_memory(model, tmp_path):
    """`eq` on a 10-minute stereo file: memory bounded by the fitted excerpt, not the file (it loaded the whole
    file in float64 for loudness: 5.48 GB for 30 minutes)."""
    from timbreclip.dsp.audio_io import audio_info, iter_chunks, write_audio
    from timbreclip.neural.model import TimbreCLIP
    from timbreclip.neural.steering import SteeringConfig
    from timbreclip.text_eq import run_eq

    rate, minutes = 44100, 10
    note = _loud_note(4.0, rate) * 0.5
    src = tmp_path / "long.wav"
    write_audio(src, np.tile(note, (1, minutes * 15)), rate, bit_depth=16)
    whole_file_float32 = minutes * 60 * rate * 2 * 4
    tracemalloc.start()
    run = run_eq(str(src), str(tmp_path / "out.wav"), {"bright": 1.0}, TimbreCLIP.load(model), 0.5,
                 SteeringConfig(steps=3, time_budget_s=None), excerpt_seconds=20.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < whole_file_float32 / 4, f"peak {peak / 1e6:.0f} MB"
    assert audio_info(tmp_path / "out.wav") == audio_info(src)
    out_peak = max(float(np.abs(c).max()) for c in iter_chunks(tmp_path / "out.wav"))
    assert out_peak <= 10 ** (CEILING_DBFS / 20) + 1e-4
    assert run.settings.provenance["loudness_match_db"] != 0.0
