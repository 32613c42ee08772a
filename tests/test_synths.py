"""Real synthesizers as data sources: the DSSI host (amsynth, WhySynth), the LV2 host (Calf) and DX7 voices through
Dexed, a few presets each; the synth render job; the split and the texts that go with synth names."""

import csv

import numpy as np
import pytest

from timbreclip.dsp.descriptors import estimate_pitch_midi
from timbreclip.library.synths import (amsynth_presets, calf_presets, dx7_presets, measured_pitch,
                                       render_synth_notes, whysynth_presets)


def test_preset_lists_are_read_from_the_installed_banks():
    am, dx, why = amsynth_presets(), dx7_presets(), whysynth_presets()
    assert len(am) > 3000 and len({p.params for p in am}) == len(am)  # deduplicated by parameter set
    assert "Rockin' Piano" in {p.name for p in am}
    assert len(dx) == 432 and "BRASS 1" in {p.name for p in dx}
    assert len(why) == 397 and why[1].name == "FM E.Piano 3" and why[1].category == "Piano"
    calf = calf_presets()
    names = {p.name for p in calf}
    assert len(calf) == 49 and {"Synth Brass", "Fat Bass", "Subtle EP"} <= names
    assert "Zyn Brass" not in names  # named after another synth: left out
    assert {p.bank for p in calf} == {"Monosynth", "Organ"} and len({p.patch_id for p in calf}) == 49


def test_lv2_host_reads_ports_and_sets_presets_by_symbol():
    from timbreclip.library.lv2 import LV2Plugin
    from timbreclip.library.synths import CALF_BUNDLE, calf_plugin_uri

    mono = LV2Plugin(CALF_BUNDLE, calf_plugin_uri("Monosynth"), "Monosynth.ttl")
    assert [p.index for p in mono.ports] == list(range(56))
    assert mono.audio_outs == [0, 1] and mono.ports[mono.midi_in].symbol == "midi_in"
    brass = next(p for p in calf_presets() if p.name == "Synth Brass")
    with mono.instance(48000) as inst:
        assert inst.set_many(dict(brass.params)) == len(brass.params)  # "Filter" matches the port "filter"
        assert inst.values[mono.symbols["cutoff"]] == pytest.approx(661.957)
    spectra = []
    for cutoff in (300.0, 6000.0):  # the control reaches the sound: a brighter filter, more energy up high
        with mono.instance(48000) as inst:
            inst.set_many({**dict(brass.params), "cutoff": cutoff, "env2cutoff": 0.0})
            audio = inst.note(48, 100, 1.0, 1.2).mean(axis=0)
        power = np.abs(np.fft.rfft(audio[4800:48000])) ** 2
        spectra.append(power[int(2000 * len(audio[4800:48000]) / 48000):].sum() / power.sum())
    assert spectra[1] > 5 * spectra[0]


@pytest.mark.parametrize("source", ["amsynth", "dx7", "whysynth", "calf"])
def test_a_preset_sounds_at_the_key_or_an_octave_of_it(source):
    presets = {"amsynth": amsynth_presets, "dx7": dx7_presets, "whysynth": whysynth_presets,
               "calf": calf_presets}[source]()
    preset = next(p for p in presets if p.name in ("Rockin' Piano", "E.PIANO 1", "FM E.Piano 3", "Fat Bass"))
    notes = render_synth_notes(preset, [48, 60])
    assert [k for k, _ in notes] == [48, 60]
    for key, audio in notes:
        assert audio.shape == (64000,) and np.all(np.isfinite(audio))
        held, tail = np.abs(audio[:16000 * 3]).max(), np.abs(audio[-1600:]).max()
        assert held > 0.01 and tail < 0.1 * held  # sounds while held, released after note-off
        f0 = estimate_pitch_midi(audio, 16000)
        assert f0 is not None
        pitch = measured_pitch(audio, key)
        assert (pitch - key) % 12 == 0 and abs(f0 - pitch) < 0.5


def test_measured_pitch_snaps_to_the_octave_it_sounds_in():
    t = np.arange(64000) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 130.81 * t)  # C3 = MIDI 48
    assert measured_pitch(tone, 60) == 48 and measured_pitch(tone, 48) == 48
    assert measured_pitch(np.random.default_rng(0).standard_normal(64000), 60) == 60  # no pitch: keep the key


def test_synth_render_job_writes_a_labelled_folder(tmp_path):
    from timbreclip.training.render import render_synths

    path = render_synths(["amsynth", "dx7", "whysynth"], tmp_path, processes=1, limit_presets=2, progress=False)
    rows = list(csv.DictReader(open(path)))
    by_source = {r["source"] for r in rows}
    assert by_source == {"amsynth", "dx7", "whysynth"}
    assert all(r["category"] for r in rows)
    why = [r for r in rows if r["source"] == "whysynth"]
    assert {r["category"] for r in why} <= {"Keys", "Effect", "Sweep", "Organ", "Lead", "Vocal", "Bass", "Bells",
                                             "Strings", "Brass", "Pad", "Piano", "Wind"}
    dx = [r for r in rows if r["source"] == "dx7"]
    assert {r["title"] for r in dx} == {"BRASS 1", "BRASS 2"} and {r["category"] for r in dx} == {"Brass"}
    assert all((int(float(r["pitch"])) - int(r["key"])) % 12 == 0 for r in rows)
    calf = list(csv.DictReader(open(render_synths(["calf"], tmp_path / "calf", processes=1, progress=False))))
    by_title = {r["title"]: r["category"] for r in calf}
    assert by_title["Synth Brass"] == "Brass" and by_title["Fat Bass"] == "Bass" and by_title["Subtle EP"] == "Piano"
    assert by_title["Std Jimmy"] == "Organ" and by_title["Fat Belly"] == "Organ"  # the Organ's own; not "bells"
    again = render_synths(["dx7"], tmp_path / "dx", processes=1, limit_presets=1, progress=False)
    assert len(list(csv.DictReader(open(again)))) > 0


def test_names_imply_a_family_and_descriptions_read_like_speech():
    from timbreclip.training.labels import descriptions, name_family

    assert name_family("Cozy Rhodes") == ("Piano", "Electric Piano")
    assert name_family("E.PIANO 1")[0] == "Piano" and name_family("FB:Trumpet")[0] == "Brass"
    assert name_family("Rezo Bass")[0] == "Bass" and name_family("Warm Pad")[0] == "Synth Pad"
    assert name_family("basic11") == ("", "")
    assert descriptions("Bass", "Synth Bass", ["bright", "percussive", "short release"])[0] == \
        "a bright plucked bass with a short release"
    assert descriptions("Organ", "", [])[0] == "an organ"


def test_text_sampling_weights_title_and_category_up():
    from timbreclip.training.labels import sample_texts, sound_texts

    texts = sound_texts("Warm Pad 2", "Synth Pad", "Synth Pad", ["dark", "soft attack", "long release"])
    assert "FluidR3_GM" not in texts and "a dark slow pad with a long release" in texts
    rng = np.random.default_rng(0)
    draws = [sample_texts(texts, "Warm Pad 2", "Synth Pad", rng, 4) for _ in range(2000)]
    assert all(len(d) == 4 and set(d) <= set(texts) for d in draws)
    share = {t: sum(t in d for d in draws) / len(draws) for t in texts}
    assert share["Warm Pad 2"] + share["Warm Pad"] > 0.99
    assert share["Synth Pad"] > 0.5
    others = [share[t] for t in texts if t not in ("Warm Pad 2", "Warm Pad", "Synth Pad")]
    assert max(others) < 0.35


def test_split_holds_out_gm_programs_and_synth_name_groups(tmp_path):
    from timbreclip.library.patchfolder import Note
    from timbreclip.training.data import split_validation

    notes = [Note(tmp_path / f"g{p}-{k}.wav", f"font:0:{p}", f"GM {p}", "x", 60, "", "font", 0.0, {"program": str(p)})
             for p in range(128) for k in range(2)]
    for g in range(60):
        name = "Sound" + chr(65 + g // 26) + chr(65 + g % 26)
        for suffix in ("", " 2"):  # near-duplicate names ("Rezo Bass", "Rezo Bass 2"): one group
            notes.append(Note(tmp_path / f"s{g}{suffix}.wav", f"amsynth:{g}{suffix}", f"{name}{suffix}", "Synth",
                              60, "", "amsynth", 0.0, {}))
    train, val = split_validation(notes, seed=3, per_family=2, synth_share=0.1)
    val_programs = {notes[i].extra["program"] for i in val if "program" in notes[i].extra}
    assert len(val_programs) == 32
    held = {notes[i].title.split()[0] for i in val if notes[i].source == "amsynth"}
    trained = {notes[i].title.split()[0] for i in train if notes[i].source == "amsynth"}
    assert len(held) == 6 and not held & trained
    assert split_validation(notes, seed=3, per_family=2, synth_share=0.1) == (train, val)


def test_training_reads_several_folders_as_one_set_and_refuses_shared_patch_ids(tmp_path):
    from timbreclip.library.patchfolder import DatasetError, write_metadata
    from timbreclip.training.data import read_any
    from timbreclip.dsp.audio_io import write_audio

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        write_audio(tmp_path / name / "n.wav", np.zeros(1600, np.float32), 16000)
        write_metadata(tmp_path / name, [{"path": "n.wav", "patch_id": f"{name}:1", "title": "T", "category": "C",
                                          "pitch": 60}])
    assert len(read_any([tmp_path / "a", tmp_path / "b"])) == 2
    with pytest.raises(DatasetError, match="also in"):
        read_any([tmp_path / "a", tmp_path / "a"])


def test_device_option_is_checked():
    import torch

    from timbreclip.dsp.errors import TimbreclipError
    from timbreclip.neural.model import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(TimbreclipError, match="--device gpu0"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(TimbreclipError, match="CUDA is not available"):
            resolve_device("cuda")
