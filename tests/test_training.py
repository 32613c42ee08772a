"""Rendering, dataset formats, labels and training on a tiny rendered set (never the full dataset)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from timbreclip.cli import main
from timbreclip.dsp.audio_io import write_audio
from timbreclip.library.patchfolder import DatasetError, read_patch_folder

FONT = "/usr/share/sounds/sf2/FluidR3_GS.sf2"  # 3 MB, loads fast; a training-family font


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory):
    if not Path(FONT).exists():
        pytest.skip(f"{FONT} is not installed (Debian fluid-soundfont-gs; make test installs it)")
    out = tmp_path_factory.mktemp("data") / "tiny"
    assert main(["dataset", "render", "--soundfont", FONT, "--out", str(out), "--limit-presets", "10",
                 "--pitch-variants", "1", "--processes", "1"]) == 0
    return out


def test_render_layout_and_metadata(tiny_set):
    rows = list(csv.DictReader(open(tiny_set / "metadata.csv")))
    for column in ("path", "patch_id", "title", "category", "pitch", "instrument", "source", "velocity"):
        assert column in rows[0]
    originals = [r for r in rows if float(r["pitch_shift"]) == 0]
    assert {int(r["pitch"]) for r in originals} <= set(range(24, 115, 6))
    assert len({r["patch_id"] for r in rows}) == 10
    assert all(abs(float(r["pitch_shift"])) <= 0.5 for r in rows)  # sample-based font: +-0.5 st
    first = tiny_set / rows[0]["path"]
    from timbreclip.dsp.audio_io import read_audio

    audio, rate = read_audio(first)
    assert rate == 16000 and audio.shape == (1, 64000)
    assert np.abs(audio).max() == pytest.approx(10 ** (-1 / 20), abs=2e-3)  # peak-normalised to -1 dBFS
    # resumable: a second run renders nothing new and writes the same metadata
    before = (tiny_set / "metadata.csv").read_text()
    mtime = first.stat().st_mtime
    assert main(["dataset", "render", "--soundfont", FONT, "--out", str(tiny_set), "--limit-presets", "10",
                 "--pitch-variants", "1", "--processes", "1"]) == 0
    assert (tiny_set / "metadata.csv").read_text() == before and first.stat().st_mtime == mtime


def test_patch_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="no metadata.csv"):
        read_patch_folder(tmp_path)
    (tmp_path / "metadata.csv").write_text("path,patch_id,title\nx.wav,p,T\n")
    with pytest.raises(DatasetError, match="missing required column.*category, pitch"):
        read_patch_folder(tmp_path)
    (tmp_path / "metadata.csv").write_text("path,patch_id,title,category,pitch,extra\nx.wav,p,T,C,60,1\n")
    with pytest.raises(DatasetError, match=r"row 2: audio file x.wav does not exist"):
        read_patch_folder(tmp_path)
    (tmp_path / "metadata.csv").write_text("path,patch_id,title,category,pitch\n")
    with pytest.raises(DatasetError, match="empty"):
        read_patch_folder(tmp_path)


def test_nsynth_reader(tmp_path):
    from timbreclip.training.data import build_note_set, read_nsynth

    (tmp_path / "audio").mkdir()
    examples = {}
    for i, (inst, fam, src, quals) in enumerate([("guitar_acoustic_001", "guitar", "acoustic", ["bright"]),
                                                 ("bass_synthetic_009", "bass", "synthetic", ["dark", "distortion"])]):
        key = f"{inst}-0{60 + i}-100"
        examples[key] = {"note_str": key, "instrument_str": inst, "instrument_family_str": fam,
                         "instrument_source_str": src, "pitch": 60 + i, "velocity": 100, "qualities_str": quals}
        write_audio(tmp_path / "audio" / f"{key}.wav", np.zeros(16000, np.float32), 16000)
    (tmp_path / "examples.json").write_text(json.dumps(examples))
    notes = read_nsynth(tmp_path)
    assert [n.category for n in notes] == ["bass", "guitar"]
    ns = build_note_set(notes)
    assert "dark bass" in ns.texts[0] and "distortion" in ns.texts[0] and "bright" in ns.texts[1]
    os.remove(tmp_path / "audio" / f"{notes[0].path.name}")
    with pytest.raises(DatasetError, match="does not exist"):
        read_nsynth(tmp_path)


def test_descriptor_words_are_relative_to_pitch():
    from timbreclip.dsp.descriptors import note_descriptors
    from timbreclip.training.labels import descriptor_words

    rate = 16000
    t = np.arange(4 * rate) / rate
    env = np.where(t < 3, 1.0, np.exp(-(t - 3) * 50))

    def tone(f0, harmonics, decay):
        x = sum(np.sin(2 * np.pi * f0 * h * t) * decay ** (h - 1) for h in range(1, harmonics + 1))
        return (x * env / np.abs(x).max()).astype(np.float32)

    low_bright = note_descriptors(tone(110, 40, 0.97), rate, 45).as_dict()
    high_pure = note_descriptors(tone(880, 1, 1.0), rate, 81).as_dict()
    assert "bright" in descriptor_words(low_bright)
    assert "dark" in descriptor_words(high_pure)  # a high sine is dark, though its centroid is higher
    assert "short release" in descriptor_words(high_pure) and "sustained" in descriptor_words(high_pure)


def test_random_eq_words_follow_the_eq():
    from timbreclip.neural.frontend import FrontEndConfig
    from timbreclip.training.data import RandomEQ, augment_batch
    from timbreclip.training.labels import EQ_ARCHETYPES

    rng = np.random.default_rng(0)
    req = RandomEQ(FrontEndConfig())
    bright = next(a for a in EQ_ARCHETYPES if a.name == "bright")
    g = req.log_gain(bright, rng).numpy()
    assert g[-5:].mean() > np.log(10 ** (5 / 10)) and abs(g[:5].mean()) < 0.05  # highs up >5 dB, lows flat
    import torch

    logmel = torch.zeros(4, 64, 251)
    feats, texts = augment_batch(logmel, [["Pad", "bright", "bright Pad"]] * 4, ["Synth Pad"] * 4, rng, req,
                                 p_eq=1.0, crop_frames=160, freq_masks=1, freq_mask_width=4)
    assert feats.shape == (4, 1, 64, 160)
    for ts in texts:
        words = {w for a in EQ_ARCHETYPES for w in a.words}
        assert words & set(ts)
        if "dark" in ts:
            assert "bright" not in ts and "bright Pad" not in ts


def test_train_tiny_model_loss_falls_checkpoint_loads_resume_continues(tiny_set, tmp_path):
    from timbreclip.neural.model import TimbreCLIP

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"name": "tiny", "model": "cpu", "width": 8, "epochs": 3, "batch_size": 32,
                               "lr": 0.003, "warmup_epochs": 0, "crop_frames": 96, "p_eq": 0.3, "patience": 10}))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--data", str(tiny_set), "--out", str(out)]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and log[-1]["train_loss"] < log[0]["train_loss"]
    model = TimbreCLIP.load(out / "best")
    assert model.config.provenance["training"]["config"]["name"] == "tiny"
    assert main(["train", "--config", str(cfg), "--data", str(tiny_set), "--out", str(out), "--resume",
                 "--epochs", "5"]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2, 3, 4]
    assert log[3]["step"] > log[2]["step"]


def test_evaluate_end_to_end(tiny_set, tmp_path, capsys):
    from timbreclip.neural.encoder import AudioEncoderConfig
    from timbreclip.neural.model import ModelConfig, TimbreCLIP

    TimbreCLIP(ModelConfig(audio=AudioEncoderConfig(width=8))).save(tmp_path / "m1")
    TimbreCLIP(ModelConfig(audio=AudioEncoderConfig(width=8, head="none"))).save(tmp_path / "m2")
    out = tmp_path / "report.json"
    assert main(["evaluate", str(tiny_set), "--model", str(tmp_path / "m1"), "--model", str(tmp_path / "m2"),
                 "--json", str(out), "--markdown", str(tmp_path / "t.md"), "--plot", str(tmp_path / "c.png")]) == 0
    report = json.loads(out.read_text())
    assert report["patches"] == 10 and set(report["rows"]) == {"m1", "m2", "random", "perfect"}
    cell = report["rows"]["m1"]["text_to_patch"]["title"]
    assert {"R@1", "R@5", "R@10", "R@50", "mean_rank", "hit@1", "hit@5", "hit@10", "hit@50", "R@1_ci"} <= set(cell)
    perfect = report["rows"]["perfect"]["audio_to_text"]["title"]
    assert perfect["R@1"] == 100.0 and perfect["mean_rank"] == 1.0  # every note has its own distinct title
    assert all(report["rows"][m]["audio_to_text"]["title"]["R@1"] <= perfect["R@1"] for m in ("m1", "m2", "random"))
    md = (tmp_path / "t.md").read_text()
    assert "**TITLE**" in md and "**CATEGORY**" in md and "| random |" in md
    assert (tmp_path / "c.png").stat().st_size > 5000
    assert main(["evaluate", str(tmp_path), "--model", str(tmp_path / "m1")]) == 2
    assert "no metadata.csv" in capsys.readouterr().err


def test_distributed_replicas_stay_in_sync(tiny_set, tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"name": "ddp", "model": "cpu", "width": 8, "epochs": 1, "batch_size": 32,
                               "lr": 0.003, "warmup_epochs": 0, "crop_frames": 96, "steps_per_epoch": 3}))
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29533", "-m", "timbreclip", "train", "--config", str(cfg),
                          "--data", str(tiny_set), "--out", str(out), "--cache", str(tmp_path / "cache")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    digests = [(out / f"replica-{r}.sha256").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    assert (out / "best" / "model.safetensors").exists()


def test_descriptors_from_band_powers_follow_an_eq():
    import torch

    from timbreclip.dsp.descriptors import low_energy_share, spectral_centroid_hz
    from timbreclip.neural.frontend import FrontEnd, FrontEndConfig
    from timbreclip.training.data import RandomEQ
    from timbreclip.training.labels import DIRECTION_WORDS, EQ_ARCHETYPES
    from timbreclip.training.trainer import direction_signs

    cfg = FrontEndConfig()
    req, fe = RandomEQ(cfg), FrontEnd(cfg)
    t = np.arange(cfg.window_samples) / cfg.sample_rate
    for f0, harmonics in ((220, 19), (110, 40)):
        x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, harmonics + 1)).astype(np.float32)
        logmel = torch.log(fe.project(fe.power(torch.from_numpy(x)[None])) + 1e-7)
        d = req.descriptors(logmel)
        # band powers give the linear spectrum's centroid within 10% (0.3% and 7.7% measured for these tones; the
        # loss only uses the sign of a change between two versions of one clip); the low share within a band's blur
        assert abs(float(d["centroid"][0]) / spectral_centroid_hz(x, cfg.sample_rate) - 1) < 0.1
        assert abs(float(d["low_share"][0]) - low_energy_share(x, cfg.sample_rate)) < 0.1
    rng = np.random.default_rng(0)
    arch = {a.name: a for a in EQ_ARCHETYPES}
    bright = logmel + req.log_gain(arch["bright"], rng)[None, :, None]
    bass = logmel + req.log_gain(arch["bass"], rng)[None, :, None]
    words = [w for w, _, _ in DIRECTION_WORDS]
    up = dict(zip(words, direction_signs(d, req.descriptors(bright))[0].tolist()))
    assert up["bright"] == 1 and up["crisp"] == 1 and up["warm"] == -1 and up["dark"] == -1
    low = dict(zip(words, direction_signs(d, req.descriptors(bass))[0].tolist()))
    assert low["bass-heavy"] == 1 and low["thin"] == -1
    assert (direction_signs(d, d) == 0).all()  # no change, nothing asked
    g = req.parametric_log_gain(50, rng)
    assert g.shape == (50, cfg.n_mels) and g.abs().max() <= np.log(10 ** 1.25) * 8 and g.std() > 0.05


def test_direction_loss_prefers_the_right_way():
    import torch

    from timbreclip.training.trainer import direction_loss

    words = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    za = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    toward = torch.nn.functional.normalize(za + 0.5 * words[0], dim=-1)  # closer to word 0
    signs = torch.zeros(4, 3)
    signs[:, 0] = 1.0
    scale = torch.tensor(20.0)
    assert direction_loss(za, toward, words, signs, scale) < direction_loss(za, toward, words, -signs, scale)
    assert direction_loss(za, toward, words, torch.zeros(4, 3), scale) == 0.0


def test_fine_tune_with_direction_loss_and_split_guard(tiny_set, tmp_path, capsys):
    from timbreclip.neural.model import TimbreCLIP

    base = {"name": "tiny", "model": "cpu", "width": 8, "epochs": 1, "batch_size": 32, "lr": 0.003,
            "warmup_epochs": 0, "crop_frames": 96, "p_eq": 0.3, "patience": 10}
    (tmp_path / "a.json").write_text(json.dumps(base))
    assert main(["train", "--config", str(tmp_path / "a.json"), "--data", str(tiny_set), "--out",
                 str(tmp_path / "a")]) == 0
    ft = {**base, "name": "tiny-ft", "direction_weight": 1.0, "direction_pairs": 8, "epochs": 2}
    (tmp_path / "b.json").write_text(json.dumps(ft))
    assert main(["train", "--config", str(tmp_path / "b.json"), "--data", str(tiny_set), "--out", str(tmp_path / "b"),
                 "--init", "model", str(tmp_path / "a" / "best")]) == 0
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert log[0]["epoch"] == -1 and "train_loss" not in log[0]  # the starting model's validation: the score to beat
    assert [r["epoch"] for r in log[1:]] == [0, 1] and all(0.0 < r["direction_loss"] < 5.0 for r in log[1:])
    best_epoch = max(log, key=lambda r: r["val_score"])["epoch"]  # first of equals wins, as in the trainer
    assert TimbreCLIP.load(tmp_path / "b" / "best").config.provenance["training"]["epoch"] == best_epoch
    prov = TimbreCLIP.load(tmp_path / "b" / "best").config.provenance["training"]
    assert prov["config"]["name"] == "tiny-ft" and prov["init_model"]["training"]["config"]["name"] == "tiny"
    # another seed means another validation split: fine-tuning on it would train on validation notes
    assert main(["train", "--config", str(tmp_path / "b.json"), "--data", str(tiny_set), "--out", str(tmp_path / "c"),
                 "--init", "model", str(tmp_path / "a" / "best"), "--seed", "3"]) == 2
    assert "validation notes would include training notes" in capsys.readouterr().err


def test_evaluate_validation_split_follows_the_models_training_seed(tiny_set):
    """`evaluate --split validation` holds out what the model's own trainer held out (its seed and programs per
    family, from its provenance), not seed 0; models trained on different splits are not mixed."""
    import torch

    from timbreclip.dsp.errors import TimbreclipError
    from timbreclip.library.patchfolder import read_patch_folder
    from timbreclip.neural.encoder import AudioEncoderConfig
    from timbreclip.neural.model import ModelConfig, TimbreCLIP
    from timbreclip.neural.text import MiniLMEncoder
    from timbreclip.training.data import split_validation
    from timbreclip.training.evaluation import evaluate_models, training_split

    notes = read_patch_folder(tiny_set)
    size = {s: len({notes[i].patch_id for i in split_validation(notes, seed=s)[1]}) for s in range(40)}
    other = next(s for s in range(1, 40) if size[s] != size[0] and size[s] > 0)

    def model(seed):
        torch.manual_seed(0)
        m = TimbreCLIP(ModelConfig(audio=AudioEncoderConfig(width=8)), text_encoder=MiniLMEncoder())
        m.config.provenance = {"training": {"config": {"seed": seed, "val_programs_per_family": 1}}}
        return m

    trained = model(other)
    assert training_split(trained) == (other, 1, 0.1)
    finetuned = model(0)
    finetuned.config.provenance = {"init_model": {"training": {"config": {"seed": other}}}}
    assert training_split(finetuned) == (other, 1, 0.1)
    report = evaluate_models(tiny_set, {"m": trained}, split="validation", use_cache=False)
    assert report["patches"] == size[other] != size[0]
    with pytest.raises(TimbreclipError, match="different validation splits"):
        evaluate_models(tiny_set, {"a": trained, "b": model(0)}, split="validation", use_cache=False)


def test_resume_continues_exactly_as_an_uninterrupted_run(tiny_set, tmp_path):
    """2 epochs then --resume to 4 gives the weights 4 epochs in one go give: the trainer keeps every generator it
    draws from (numpy for batches and augmentation, torch for dropout), not only numpy's."""
    from safetensors.torch import load_file

    cfg = tmp_path / "const.json"  # a constant learning rate, so the schedule does not depend on --epochs
    cfg.write_text(json.dumps({"name": "const", "model": "cpu", "width": 8, "epochs": 4, "batch_size": 32,
                               "lr": 0.003, "min_lr": 0.003, "warmup_epochs": 0, "crop_frames": 96, "p_eq": 0.3,
                               "patience": 10, "steps_per_epoch": 2}))
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", "--config", str(cfg), "--data", str(tiny_set), "--out", str(straight)]) == 0
    assert main(["train", "--config", str(cfg), "--data", str(tiny_set), "--out", str(split), "--epochs", "2"]) == 0
    assert (split / "last" / "rng-rank0.json").is_file()
    assert main(["train", "--config", str(cfg), "--data", str(tiny_set), "--out", str(split), "--resume",
                 "--epochs", "4"]) == 0
    a, b = load_file(str(straight / "last" / "model.safetensors")), load_file(str(split / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gm_share_batches_and_grouped_selection(tiny_set, tmp_path, capsys):
    """batch_gm_share: every batch holds that share of soundfont (GM) notes, the rest synth notes; an epoch is one
    pass over the GM notes; validation scores GM programs and synth patches apart and selects on their mean."""
    from types import SimpleNamespace

    from timbreclip.library.patchfolder import Note
    from timbreclip.training.render import render_synths
    from timbreclip.training.trainer import TrainConfig, _epoch_order, _gm_groups

    notes = ([Note(tmp_path / f"g{k}.wav", f"f:0:{k}", "GM", "x", 60, "", "font", 0.0, {"program": str(k % 128)})
              for k in range(300)]
             + [Note(tmp_path / f"s{k}.wav", f"s:{k}", "S", "Synth", 60, "", "amsynth", 0.0, {}) for k in range(1000)])
    cfg = TrainConfig(batch_size=40, batch_gm_share=0.25)
    run = SimpleNamespace(cfg=cfg, notes=notes, train_base=list(range(len(notes))), steps_per_epoch=300 // 10)
    order = _epoch_order(run, np.random.default_rng(0))
    batches = order.reshape(run.steps_per_epoch, cfg.batch_size)
    assert all(sum(b < 300) == 10 for b in batches)  # 10 of 40 GM notes in every batch
    assert sorted(order[order < 300]) == list(range(300))  # each GM note once per epoch
    assert len(set(order[order >= 300])) == len(order[order >= 300])  # synth notes without repeats
    assert set(_gm_groups(notes)) == {"GM", "synth"}

    synth = render_synths(["dx7"], tmp_path / "dx7", processes=1, limit_presets=12, progress=False).parent
    base = {"name": "tiny", "model": "cpu", "width": 8, "epochs": 1, "batch_size": 32, "lr": 0.003,
            "warmup_epochs": 0, "crop_frames": 96, "p_eq": 0.3, "patience": 10, "val_synth_share": 0.25}
    (tmp_path / "a.json").write_text(json.dumps(base))
    assert main(["train", "--config", str(tmp_path / "a.json"), "--data", str(tiny_set), "--out",
                 str(tmp_path / "a")]) == 0
    ft = {**base, "name": "tiny-mix", "init": "model", "batch_gm_share": 0.5, "texts_per_step": 3, "epochs": 2}
    (tmp_path / "b.json").write_text(json.dumps(ft))
    assert main(["train", "--config", str(tmp_path / "b.json"), "--data", str(tiny_set), str(synth),
                 "--out", str(tmp_path / "b"), "--init", "model", str(tmp_path / "a" / "best")]) == 0
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [-1, 0, 1]
    for r in log:
        assert set(r["val_groups"]) == {"GM", "synth"}
        assert r["val_score"] == pytest.approx(np.mean(list(r["val_groups"].values())), abs=2e-3)
    (tmp_path / "bad.json").write_text(json.dumps({**ft, "batch_gm_share": 1.0}))
    assert main(["train", "--config", str(tmp_path / "bad.json"), "--data", str(tiny_set), str(synth),
                 "--out", str(tmp_path / "c"), "--init", "model", str(tmp_path / "a" / "best")]) == 2
    # a final fit: the GM validation programs join the training notes (the synth split is unchanged, so starting from
    # a model validated on them is allowed), the schedule stops early and the last epoch is kept whatever it scores
    final = {**ft, "name": "tiny-final", "val_programs_per_family": 0, "epochs": 3, "stop_after_epochs": 2,
             "keep": "last"}
    (tmp_path / "final.json").write_text(json.dumps(final))
    assert main(["train", "--config", str(tmp_path / "final.json"), "--data", str(tiny_set), str(synth),
                 "--out", str(tmp_path / "final"), "--init", "model", str(tmp_path / "a" / "best")]) == 0
    log = [json.loads(line) for line in (tmp_path / "final" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [-1, 0, 1]
    assert all(r["val_groups"] == {} for r in log)  # one validation group left (synth): no GM/synth mean
    from timbreclip.neural.model import TimbreCLIP
    from timbreclip.training.data import split_validation

    assert TimbreCLIP.load(tmp_path / "final" / "best").config.provenance["training"]["epoch"] == 1
    gm_notes, synth_notes = read_patch_folder(tiny_set), read_patch_folder(synth)
    assert split_validation(gm_notes + synth_notes, 0, 0, 0.25)[1] == \
        [len(gm_notes) + i for i in split_validation(synth_notes, 0, 0, 0.25)[1]]  # no GM note held out
    for bad in ({"keep": "first"}, {"stop_after_epochs": 4}, {"stop_after_epochs": 0}):
        (tmp_path / "bad.json").write_text(json.dumps({**final, **bad}))
        assert main(["train", "--config", str(tmp_path / "bad.json"), "--data", str(tiny_set), str(synth),
                     "--out", str(tmp_path / "d"), "--init", "model", str(tmp_path / "a" / "best")]) == 2
        assert ("keep must be" if "keep" in bad else "stop_after_epochs must be") in capsys.readouterr().err
        assert not (tmp_path / "d").exists()  # refused before any output folder


def test_plain_texts_note_selection_and_mel_shift():
    import torch

    from timbreclip.library.patchfolder import DatasetError, Note
    from timbreclip.neural.frontend import FrontEndConfig
    from timbreclip.training.data import RandomEQ, augment_batch, build_note_set, select_notes
    from timbreclip.training.labels import plain_texts

    assert plain_texts("Pad 2", "Pad 2 (warm)", "Synth Pad") == ["Pad 2", "Pad", "Pad Synth Pad", "Synth Pad",
                                                                   "Pad 2 (warm)"]

    def note(pid, source, bank, shift=0.0, program="0"):
        return Note(Path(f"{pid}.wav"), pid, "Piano 1", "Piano", 60, "Acoustic Grand Piano", source, shift,
                    {"bank": str(bank), "program": program, "brightness": "5", "harmonics_below_nyquist": "20"})

    notes = [note("a", "FontA", 0), note("a", "FontA", 0, 0.3), note("b", "FontA", 8), note("c", "FontB", 0),
             Note(Path("s.wav"), "s", "Rezo Bass", "Bass", 48, "Synth Bass", "amsynth")]
    assert [n.patch_id for n in select_notes(notes, ["FontA"], [0], False)] == ["a"]
    assert [n.patch_id for n in select_notes(notes, None, [0])] == ["a", "a", "c"]  # no bank: the synth is dropped
    assert len(select_notes(notes)) == 5
    with pytest.raises(DatasetError, match="sources FontC: not in the data"):
        select_notes(notes, ["FontA", "FontC"])
    with pytest.raises(DatasetError, match="banks 9"):
        select_notes(notes, None, [0, 9])
    full, plain = build_note_set(notes[:1]).texts[0], build_note_set(notes[:1], "plain").texts[0]
    assert "bright" in full and "bright" not in plain and set(plain) < set(full)

    # the mel-bin shift moves a clip's spectrum along the mel axis and fills what it leaves with the clip's floor
    logmel = torch.full((64, 20, 50), -5.0)
    logmel[:, 10] = 1.0
    rng = np.random.default_rng(0)
    shifted, _ = augment_batch(logmel.clone(), [["x"]] * 64, ["Piano"] * 64, rng, RandomEQ(FrontEndConfig()),
                               p_eq=0.0, crop_frames=None, freq_masks=0, freq_mask_width=0, mel_roll=3)
    peaks = shifted[:, 0].mean(-1).argmax(-1)
    assert set(peaks.tolist()) == set(range(7, 14))  # every shift in -3..+3 drawn, no wrap-around
    assert torch.allclose(shifted[:, 0, :, 0].sort(-1).values[:, :-1], shifted[:, 0, :, 0].min(-1, keepdim=True).values.expand(-1, 19))


def test_training_config_rejects_unknown_texts_and_a_huge_mel_shift(tiny_set, tmp_path, capsys):
    for field, value, message in (("texts", "rich", "texts must be one of full, plain"),
                                  ("mel_roll", 40, "mel_roll must be between 0 and 16"),
                                  ("sources", ["NoSuchFont"], "sources NoSuchFont: not in the data")):
        cfg = tmp_path / "bad.json"
        cfg.write_text(json.dumps({"name": "bad", "model": "cpu", "width": 8, "epochs": 1, field: value}))
        out = tmp_path / f"run-{field}"
        assert main(["train", "--config", str(cfg), "--data", str(tiny_set), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
        assert not out.exists()  # refused before any run folder is made
