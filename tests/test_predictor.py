"""The one-pass steering predictor: trained on a tiny model's fits, saved beside it, refused by another model, used
alone (eq --fast-predict) and as the optimiser's start (init predict)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import save_tiny_model

from timbreclip.cli import main
from timbreclip.dsp.audio_io import write_audio
from timbreclip.dsp.errors import TimbreclipError
from timbreclip.library.patchfolder import write_metadata
from timbreclip.neural.frontend import prepare_audio
from timbreclip.neural.model import TimbreCLIP
from timbreclip.neural.predictor import PREDICTOR_FILE, SteeringPredictor, find_predictor
from timbreclip.neural.steering import SteeringConfig, steer


def _tone(f0, rate=16000, seconds=4.0, bright=1.0):
    t = np.arange(int(rate * seconds)) / rate
    x = sum(np.sin(2 * np.pi * f0 * h * t) / h ** (2.0 - bright) for h in range(1, 40) if f0 * h < rate / 2)
    return (0.5 * x / np.abs(x).max() * np.exp(-0.5 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("p")
    model_dir = save_tiny_model(root / "model")
    data = root / "data"
    data.mkdir()
    rows = []
    for k in range(24):
        name = f"n{k}.wav"
        write_audio(data / name, _tone(110 * 2 ** (k % 12 / 12), bright=(k % 3) / 2), 16000)
        rows.append({"path": name, "patch_id": f"synth:{k}", "title": f"Tone {chr(65 + k)}", "category": "Synth",
                     "pitch": 45 + k % 12, "source": "synth"})
    write_metadata(data, rows)
    from timbreclip.training.predictor import run

    report = run(str(model_dir), [str(data)], fits=20, draws=40, notes=20, seed=0, log=lambda *a: None)
    return model_dir, data, report


def test_predictor_is_small_saved_beside_its_model_and_refused_by_another(setup, tmp_path):
    model_dir, _, report = setup
    path = model_dir / PREDICTOR_FILE
    assert path.is_file() and path.stat().st_size < 2_000_000
    assert report["draws"] == 40 and report["fits"] == 20 and report["held_out_draws"] == 8
    model = TimbreCLIP.load(model_dir)
    assert find_predictor(model) is not None
    other = save_tiny_model(tmp_path / "other", seed=5)
    with pytest.raises(TimbreclipError, match="trained for another model"):
        SteeringPredictor.load(model_dir, TimbreCLIP.load(other))
    # a file whose settings this version does not know (another version wrote it): one clear line, no TypeError
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["config"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    newer = tmp_path / "newer"
    newer.mkdir()
    save_file(tensors, str(newer / PREDICTOR_FILE), metadata={"config": json.dumps({**meta, "probe_kinds": []})})
    with pytest.raises(TimbreclipError, match=r"does not know \(probe_kinds\).*another version"):
        SteeringPredictor.load(newer)


def test_prediction_alone_and_as_a_start(setup):
    model_dir, _, _ = setup
    model = TimbreCLIP.load(model_dir)
    windows = torch.from_numpy(prepare_audio(_tone(220), 16000, model.config.frontend))
    alone = steer(model, windows, {"bright": 1.0}, 0.5, SteeringConfig.offline(init="predict", steps=0))
    assert alone.steps == 0 and alone.objective_after <= alone.objective_before + 1e-6 or alone.steps == 0
    gains = alone.eq.gain_db.detach()
    assert gains.abs().max() <= 9.0 + 1e-4
    start = steer(model, windows, {"bright": 1.0}, 0.5, SteeringConfig.offline(init="predict", steps=10))
    broad = steer(model, windows, {"bright": 1.0}, 0.5, SteeringConfig.offline(steps=10))
    assert start.objective_after <= min(alone.objective_after, broad.objective_after + 0.05)


def test_a_predicted_start_is_refined_at_its_own_learning_rate(setup):
    """Adam's first step moves every parameter by about the learning rate: from the prediction (or flat, whichever
    scores better) one step at ``predict_lr`` 0.01 moves no raw parameter by more than 0.01; without it, ``lr``
    (0.3) applies."""
    from timbreclip.dsp.parametric_eq import ParametricEQ

    model_dir, _, _ = setup
    model = TimbreCLIP.load(model_dir)
    windows = torch.from_numpy(prepare_audio(_tone(220), 16000, model.config.frontend))
    config = SteeringConfig.offline(init="predict", steps=1, early_exit=False, lr=0.3, predict_lr=0.01)

    def moved(cfg, prompt):
        prediction = steer(model, windows, {prompt: 1.0}, 0.5, replace(cfg, steps=0)).eq
        flat = ParametricEQ(16000, ranges=prediction.ranges)  # what the prediction competes with as a start
        stepped = steer(model, windows, {prompt: 1.0}, 0.5, cfg).eq.raw().detach()
        return min((stepped - b.raw().detach()).abs().max().item() for b in (prediction, flat))

    small = {p: moved(config, p) for p in ("bright", "warm", "dark")}
    assert 0.005 < max(small.values()) <= 0.01 + 1e-6, small
    large = {p: moved(replace(config, predict_lr=None), p) for p in ("bright", "warm", "dark")}
    assert max(large.values()) > 0.1, large  # a step the last one would have kept (or none, where it overshot)


def test_a_predicted_start_is_refined_with_its_own_betas(setup, monkeypatch):
    """``predict_betas``: Adam's betas where the fit starts from the prediction; every other start keeps ``betas``.
    ``lr_scales``: Adam's rate per kind of parameter."""
    from timbreclip.dsp.parametric_eq import ParametricEQ

    model_dir, _, _ = setup
    model = TimbreCLIP.load(model_dir)
    windows = torch.from_numpy(prepare_audio(_tone(220), 16000, model.config.frontend))
    seen = []
    real_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        seen.append({tuple(g["betas"]) for g in self.param_groups})
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    base = SteeringConfig.offline(steps=2, early_exit=False, predict_betas=(0.5, 0.9))
    for init, expected in (("predict", (0.5, 0.9)), ("broad", (0.9, 0.999)), ("flat", (0.9, 0.999))):
        seen.clear()
        steer(model, windows, {"bright": 1.0}, 0.5, replace(base, init=init))
        assert seen and all(s == {expected} for s in seen), (init, seen)
    seen.clear()
    steer(model, windows, {"bright": 1.0}, 0.5, replace(base, init="predict", predict_betas=None))
    assert all(s == {(0.9, 0.999)} for s in seen)
    # Adam's rate per kind of parameter (frequency, gain, Q): a kind at rate 0 stays where the start put it
    flat = SteeringConfig.offline(steps=3, early_exit=False, init="flat")
    moved = steer(model, windows, {"bright": 1.0}, 0.5, flat).eq
    held = steer(model, windows, {"bright": 1.0}, 0.5, replace(flat, lr_scales=(0.0, 1.0, 0.0))).eq
    start = ParametricEQ(16000, ranges=held.ranges)
    assert torch.equal(held.raw_freq, start.raw_freq) and torch.equal(held.raw_q, start.raw_q)
    assert not torch.equal(held.raw_gain, start.raw_gain) and not torch.equal(moved.raw_freq, start.raw_freq)


def test_a_prediction_worse_than_flat_gives_way_to_flat_and_flat_is_scored_without_the_encoder(setup):
    """The prediction is scored by Adam's first look (no pass of its own): where it scores worse than flat, Adam
    starts flat, so the fit is the one a flat start makes at the same rate and betas. The flat score every mode starts from
    comes from the source's embedding (no pass of its own either) and equals the objective at flat."""
    from timbreclip.dsp.parametric_eq import ParametricEQ
    from timbreclip.neural.steering import steering_objective

    model_dir, _, _ = setup
    model = TimbreCLIP.load(model_dir)
    windows = torch.from_numpy(prepare_audio(_tone(220), 16000, model.config.frontend))
    harsh = SteeringPredictor.load(model_dir, model)
    with torch.no_grad():  # every band at the far end of its gain range: +-9 dB stacked, far worse than flat
        harsh.net[-1].bias.view(-1, 3)[:, 1] += 8.0
        if harsh.refiner is not None:
            harsh.refiner[-1].weight.zero_()
            harsh.refiner[-1].bias.zero_()
    config = SteeringConfig.offline(init="predict", steps=3, early_exit=False, predict_lr=0.05)
    alone = steer(model, windows, {"warm": 1.0}, 0.5, replace(config, steps=0), predictor=harsh)
    assert alone.objective_after > alone.objective_before + 0.01  # the harsh answer really is worse than flat
    fell_back = steer(model, windows, {"warm": 1.0}, 0.5, config, predictor=harsh)
    from_flat = steer(model, windows, {"warm": 1.0}, 0.5, replace(config, init="flat", lr=0.05,
                                                                  betas=config.predict_betas))  # the same Adam
    assert torch.equal(fell_back.eq.raw().detach(), from_flat.eq.raw().detach())
    assert fell_back.objective_after == pytest.approx(from_flat.objective_after, abs=1e-7)
    with torch.no_grad():
        power = model.frontend.power(windows)
        flat = ParametricEQ(16000, ranges=alone.eq.ranges)
        obj, dist, _ = steering_objective(model, power, _target(model, windows, "warm"), config)(flat)
    assert fell_back.objective_before == pytest.approx(float(obj[0]), abs=1e-6)
    assert fell_back.distance_before == pytest.approx(float(dist[0]), abs=1e-6)


def _target(model, windows, prompt):
    from timbreclip.neural.steering import steering_target

    with torch.no_grad():
        z = F.normalize(model.encode_waveforms(windows).mean(0), dim=-1)
        return steering_target(model, z, {prompt: 1.0}, 0.5)


def test_eq_fast_predict_cli(setup, tmp_path, capsys):
    model_dir, data, _ = setup
    out = tmp_path / "o.wav"
    assert main(["eq", str(data / "n0.wav"), "-o", str(out), "--prompt", "warm", "--fast-predict",
                 "--model", str(model_dir)]) == 0
    assert "EQ found in 0 steps" in capsys.readouterr().out and out.is_file()
    assert main(["eq", str(data / "n0.wav"), "-o", str(tmp_path / "x.wav"), "--prompt", "warm", "--fast-predict",
                 "--paper", "--model", str(model_dir)]) == 2
    bare = save_tiny_model(tmp_path / "bare", seed=2)
    assert main(["eq", str(data / "n0.wav"), "-o", str(tmp_path / "y.wav"), "--prompt", "warm", "--fast-predict",
                 "--model", str(bare)]) == 2
    assert "no steering predictor" in capsys.readouterr().err and not (tmp_path / "y.wav").exists()


def test_learned_steps_choose_how_far_the_prediction_goes_in_eq_and_the_live_loop(setup, tmp_path, capsys):
    """``--learned-steps N`` (``eq --fast-predict`` or ``--init predict``; ``live --fast-predict``): the prediction
    stops after N learned steps (``SteeringConfig.learned_steps``), the same EQ as the predictor truncated there; a
    count the predictor does not have, or the flag without the predictor, is one line and exit 2 before any work."""
    import json

    model_dir, data, _ = setup
    model = TimbreCLIP.load(model_dir)
    predictor = SteeringPredictor.load(model_dir, model)
    assert len(predictor.steps()) == 1
    note = str(data / "n3.wav")
    for n in (None, 0):
        assert main(["eq", note, "-o", str(tmp_path / f"{n}.wav"), "--prompt", "warm", "--fast-predict", "--model",
                     str(model_dir), "--settings-out", str(tmp_path / f"{n}.json")]
                    + ([] if n is None else ["--learned-steps", str(n)])) == 0
    capsys.readouterr()
    bands = {n: json.loads((tmp_path / f"{n}.json").read_text())["bands"] for n in (None, 0)}
    assert bands[None] != bands[0]
    windows = torch.from_numpy(prepare_audio(_tone(110 * 2 ** (3 / 12), bright=0.0), 16000, model.config.frontend))
    alone = SteeringConfig.offline(init="predict", steps=0)
    first = steer(model, windows, {"warm": 1.0}, 0.5, replace(alone, learned_steps=0))
    cut = steer(model, windows, {"warm": 1.0}, 0.5, alone, predictor=predictor.truncated(0))
    full = steer(model, windows, {"warm": 1.0}, 0.5, alone)
    torch.testing.assert_close(first.eq.gain_db, cut.eq.gain_db, atol=0, rtol=0)
    assert not torch.equal(first.eq.gain_db, full.eq.gain_db)

    out = tmp_path / "refused.wav"
    for args, message in (
            (["eq", note, "-o", str(out), "--prompt", "warm", "--fast-predict", "--learned-steps", "2"],
             "--learned-steps 2: this steering predictor has 0 to 1 learned steps"),
            (["eq", note, "-o", str(out), "--prompt", "warm", "--learned-steps", "1"],
             "add --fast-predict or --init predict"),
            (["live", "--input-file", note, "--output-file", str(out), "--prompt", "warm", "--learned-steps", "1"],
             "add --fast-predict"),
            (["live", "--input-file", note, "--output-file", str(out), "--prompt", "warm", "--fast-predict",
              "--learned-steps", "3"], "--learned-steps 3: this steering predictor has 0 to 1 learned steps")):
        assert main(args + ["--model", str(model_dir)]) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    stats = tmp_path / "live.json"
    assert main(["live", "--input-file", note, "--output-file", str(out), "--prompt", "warm", "--fast-predict",
                 "--learned-steps", "0", "--update-every", "0.1", "--model", str(model_dir), "--stats",
                 str(stats)]) == 0
    assert out.is_file() and json.loads(stats.read_text())["updates"] >= 10

def test_spectral_profile_is_level_free_and_follows_the_spectrum(setup):
    from timbreclip.neural.predictor import spectrum_profile

    model_dir, _, report = setup
    model = TimbreCLIP.load(model_dir)
    fe, cfg = model.frontend, model.config.frontend

    def profile(x):
        return spectrum_profile(fe.power(torch.from_numpy(x)[None]), cfg.sample_rate, cfg.n_fft, 32)[0]

    dull, bright = _tone(220, bright=0.0), _tone(220, bright=1.0)
    np.testing.assert_allclose(profile(dull), profile(0.1 * dull), atol=1e-4)  # -20 dB: the same profile
    assert float(profile(bright)[-8:].mean() - profile(dull)[-8:].mean()) > 0.2  # > 4 dB more on top
    assert report["spectrum_bands"] == 32
    predictor = find_predictor(model)
    assert predictor.config.spectrum_bands == 32
    z = torch.zeros(1, model.dim)
    with pytest.raises(TimbreclipError, match="spectral profile"):
        predictor(z, z)
    sens = torch.zeros(1, 33)
    a, b = (predictor(z, z, profile(x)[None].float(), sens) for x in (dull, bright))
    assert not torch.allclose(a, b)  # the profile reaches the output


def test_the_shipped_predictor_loads_and_answers_in_its_ranges():
    from timbreclip.defaults import SHIPPED_MODEL_DIR

    model = TimbreCLIP.load(SHIPPED_MODEL_DIR)
    windows = torch.from_numpy(prepare_audio(_tone(220), 16000, model.config.frontend))
    result = steer(model, windows, {"warm": 1.0}, 0.5, SteeringConfig.offline(init="predict", steps=0))
    assert result.steps == 0 and float(result.eq.gain_db.detach().abs().max()) <= 9.0 + 1e-4


def test_steering_sensitivity_is_the_objectives_gradient_per_band(setup):
    from timbreclip.neural.predictor import _band_matrix, steering_embeddings, steering_sensitivity
    from timbreclip.neural.steering import steering_encoder

    model_dir, _, report = setup
    model = TimbreCLIP.load(model_dir)
    fe, cfg = model.frontend, model.config.frontend
    encoder = steering_encoder(model)
    windows = torch.from_numpy(prepare_audio(_tone(220, bright=0.5), 16000, cfg))
    power = fe.power(windows)
    _, target = steering_embeddings(model, windows, {"bright": 1.0}, 0.5)
    bands = 8
    s, z_flat, _ = steering_sensitivity(encoder, fe, power[None], target[None], cfg.sample_rate, cfg.n_fft, bands)
    s = s[0]
    assert s.shape == (bands + 1,) and abs(float(s[:bands].norm()) - 1.0) < 1e-5
    grad = s[:bands] * 10 ** ((s[bands] - 1.0) * 3.0)
    mask = (_band_matrix(cfg.sample_rate, cfg.n_fft, bands, "cpu", torch.float32) > 0).float()

    def distance(offset_db):
        with torch.no_grad():
            gain = 10 ** (offset_db @ mask / 10)
            z = F.normalize(encoder(fe.features_from_power(power * gain[None, :, None])).mean(0), dim=-1)
            return float(1 - z @ target)

    for band in range(bands):  # central differences, +-0.25 dB in one band
        step = torch.zeros(bands)
        step[band] = 0.25
        numeric = (distance(step) - distance(-step)) / 0.5
        assert abs(numeric - float(grad[band])) <= 0.1 * float(grad.abs().max()), band
    # the trained predictor takes it, and refuses to run without it
    predictor = find_predictor(model)
    assert report["sensitivity_bands"] == 32 and predictor.config.sensitivity_bands == 32
    z = torch.zeros(1, model.dim)
    profile = torch.zeros(1, 32)
    with pytest.raises(TimbreclipError, match="steering sensitivity"):
        predictor(z, z, profile)
    a, b = (predictor(z, z, profile, torch.eye(33)[k:k + 1]) for k in (0, 20))
    assert not torch.allclose(a, b)  # the sensitivity reaches the output


def test_predictor_inputs_share_one_pass_with_the_embeddings(setup):
    """Where the predictor takes the sensitivity, the embeddings come from its forward pass: the same values as
    the plain embedding pass."""
    from timbreclip.neural.predictor import predictor_inputs, steering_embeddings

    model_dir, _, _ = setup
    model = TimbreCLIP.load(model_dir)
    predictor = find_predictor(model)
    windows = torch.from_numpy(prepare_audio(_tone(330), 16000, model.config.frontend))
    z_plain, target_plain = steering_embeddings(model, windows, {"warm": 1.0, "airy": 0.5}, 0.4)
    z, target, profile, sensitivity = predictor_inputs(model, predictor, model.frontend.power(windows),
                                                       {"warm": 1.0, "airy": 0.5}, 0.4)
    torch.testing.assert_close(z, z_plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(target, target_plain, atol=1e-5, rtol=0)
    assert profile.shape == (1, 32) and sensitivity.shape == (1, 33)


def test_the_second_step_probes_the_objective_and_corrects_the_first_answer(setup):
    """The trained predictor (``run`` trains a second step by default) probes the steering objective once at its
    first answer: the probe's gradient is the objective's (central differences), the correction changes the
    answer, and steer's prediction is the corrected one."""
    from timbreclip.dsp.parametric_eq import DEFAULT_BAND_TYPES, ParametricEQ
    from timbreclip.neural.predictor import predictor_inputs, probe
    from timbreclip.neural.steering import steering_objective

    model_dir, _, report = setup
    model = TimbreCLIP.load(model_dir)
    predictor = find_predictor(model)
    assert predictor.refiner is not None and predictor.config.refine_hidden == 128
    assert report["held_out_objective_refined"] <= report["held_out_objective_first_answer"]
    windows = torch.from_numpy(prepare_audio(_tone(196, bright=0.5), 16000, model.config.frontend))
    power = model.frontend.power(windows)
    config = SteeringConfig.offline(init="predict", steps=0)
    z, target, profile, sensitivity = predictor_inputs(model, predictor, power, {"bright": 1.0}, 0.5)
    objective = steering_objective(model, power, target, config)
    with pytest.raises(TimbreclipError, match="second step needs the steering objective"):
        predictor.predict(z[None], target[None], profile, sensitivity)
    with torch.no_grad():
        first = predictor(z[None], target[None], profile, sensitivity)
        second = predictor.predict(z[None], target[None], profile, sensitivity, objective, 16000.0)
    assert not torch.allclose(first, second)

    p = probe(predictor, first, objective, 16000.0)
    assert p.grad.shape == first.shape and p.z.shape == (1, model.dim)

    def value(raw):
        with torch.no_grad():
            return float(objective(ParametricEQ.from_raw(16000.0, raw, DEFAULT_BAND_TYPES, predictor.ranges()))[0])

    assert abs(value(first) - float(p.objective[0])) < 1e-6
    worst = float(p.grad.abs().max())
    for band, k in ((0, 1), (3, 1), (7, 1), (2, 0), (5, 2)):  # gain, frequency and Q logits
        step = torch.zeros_like(first)
        step[0, band, k] = 1e-3
        numeric = (value(first + step) - value(first - step)) / 2e-3
        assert abs(numeric - float(p.grad[0, band, k])) <= 0.05 * worst + 1e-5, (band, k)

    result = steer(model, windows, {"bright": 1.0}, 0.5, config, predictor=predictor)
    expected = ParametricEQ.from_raw(16000.0, second, DEFAULT_BAND_TYPES, predictor.ranges())
    torch.testing.assert_close(result.eq.gain_db.detach().float(), expected.gain_db[0].detach().float(),
                               atol=1e-4, rtol=0)


def test_refine_only_keeps_the_first_network_and_old_files_load(setup, tmp_path):
    """``--refine-only`` trains the second step on top of the predictor beside the model and leaves its first
    network bit-identical; a predictor file saved without a second step still loads and predicts in one pass."""
    import shutil

    model_dir, data, _ = setup
    work = tmp_path / "m"
    shutil.copytree(model_dir, work)
    model = TimbreCLIP.load(work)
    one_step = SteeringPredictor.load(work, model)
    plain = SteeringPredictor(type(one_step.config)(**{**one_step.config.__dict__, "refine_hidden": 0}))
    plain.load_state_dict({k: v for k, v in one_step.state_dict().items() if not k.startswith("refiner.")})
    plain.save(work)
    reloaded = SteeringPredictor.load(work, model)
    assert reloaded.refiner is None and reloaded.config.refine_hidden == 0
    z = torch.randn(1, model.dim)
    extra = (torch.zeros(1, 32), torch.zeros(1, 33))
    with torch.no_grad():
        torch.testing.assert_close(reloaded.predict(z, z, *extra), plain(z, z, *extra))

    from timbreclip.training.predictor import run

    report = run(str(work), [str(data)], draws=30, notes=12, seed=1, epochs=2, refine_hidden=16, refine_only=True,
                 log=lambda *a: None)
    after = SteeringPredictor.load(work, model)
    assert after.config.refine_hidden == 16 and report["refine_epochs"] == 2
    for k, v in plain.state_dict().items():
        assert torch.equal(after.state_dict()[k], v), k
    bare = save_tiny_model(tmp_path / "bare", seed=3)
    with pytest.raises(TimbreclipError, match="no steering predictor"):
        run(str(bare), [str(data)], draws=30, notes=12, refine_only=True, log=lambda *a: None)


def test_add_step_trains_a_third_step_after_its_own_probe_and_keeps_the_rest(setup, tmp_path, capsys):
    """``--add-step`` keeps the whole predictor (first network and second step bit-identical) and trains one more
    learned step, which probes the objective again at the second step's answer: a prediction then probes twice,
    and the file says so. A predictor with no second step is refused with one line, before any work."""
    import shutil

    from timbreclip.neural import predictor as predictor_module
    from timbreclip.neural.predictor import predictor_inputs
    from timbreclip.neural.steering import steering_objective
    from timbreclip.training.predictor import run

    model_dir, data, _ = setup
    work = tmp_path / "m"
    shutil.copytree(model_dir, work)
    model = TimbreCLIP.load(work)
    two = SteeringPredictor.load(work, model)
    report = run(str(work), [str(data)], draws=30, notes=12, seed=1, epochs=2, add_step=True, log=lambda *a: None)
    three = SteeringPredictor.load(work, model)
    assert three.config.refine_steps == 2 and len(three.steps()) == 2 and report["refine_steps"] == 2
    assert report["step3_epochs"] == 2 and len(report["step3_held_out_objective_before"]) == 2
    assert report["step3_held_out_objective"] <= report["step3_held_out_objective_before"][-1] + 1e-9
    for k, v in two.state_dict().items():
        assert torch.equal(three.state_dict()[k], v), k
    assert any(not torch.equal(p, torch.zeros_like(p)) for p in three.later_refiners.parameters())

    windows = torch.from_numpy(prepare_audio(_tone(247, bright=0.8), 16000, model.config.frontend))
    power = model.frontend.power(windows)
    z, target, profile, sensitivity = predictor_inputs(model, three, power, {"dark": 1.0}, 0.5)
    objective = steering_objective(model, power, target, SteeringConfig.offline())
    looks = []
    real_probe = predictor_module.probe

    def counting_probe(*args):
        looks.append(1)
        return real_probe(*args)

    predictor_module.probe = counting_probe
    try:
        with torch.no_grad():
            second = two.predict(z[None], target[None], profile, sensitivity, objective, 16000.0)
            third = three.predict(z[None], target[None], profile, sensitivity, objective, 16000.0)
        assert len(looks) == 3  # one probe for the two-step predictor, two for the three-step one
        budgeted = replace(SteeringConfig(init="predict", steps=1), time_budget_s=100.0)
        probes_in = {}
        for name, config in (("budget", budgeted), ("budget, all steps", replace(budgeted, start_learned_steps=None)),
                             ("offline", SteeringConfig.offline(init="predict", steps=1))):
            looks.clear()
            steer(model, windows, {"dark": 1.0}, 0.5, config, predictor=three)
            probes_in[name] = len(looks)
    finally:
        predictor_module.probe = real_probe
    # a start under a time budget takes one learned step by default (an Adam step costs about as much); offline, all
    assert probes_in == {"budget": 1, "budget, all steps": 2, "offline": 2}, probes_in
    p = real_probe(three, second, objective, 16000.0)
    with torch.no_grad():
        hidden = three.first_pass(z[None], target[None], profile, sensitivity)[1]
        torch.testing.assert_close(third, three.refine(second, hidden, target[None], p, 1))
    assert not torch.allclose(second, third)
    with torch.no_grad():  # stopped after fewer learned steps: the shorter predictors' answers, bit for bit
        torch.testing.assert_close(three.truncated(1).predict(z[None], target[None], profile, sensitivity, objective,
                                                              16000.0), second, atol=0, rtol=0)
        torch.testing.assert_close(three.truncated(0).predict(z[None], target[None], profile, sensitivity),
                                   three(z[None], target[None], profile, sensitivity), atol=0, rtol=0)
    with pytest.raises(TimbreclipError, match="0 to 2"):
        three.truncated(3)

    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    plain = SteeringPredictor(type(two.config)(**{**two.config.__dict__, "refine_hidden": 0}))
    plain.load_state_dict({k: v for k, v in two.state_dict().items() if not k.startswith("refiner.")})
    plain.save(bare)
    with pytest.raises(TimbreclipError, match="no second step to add to"):
        run(str(bare), [str(data)], draws=30, notes=12, add_step=True, log=lambda *a: None)
    assert main(["train-predictor", "--model", str(bare), "--data", str(data), "--add-step", "--refine-only"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err  # one or the other
