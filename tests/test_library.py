"""The patch library: filling it (samples, soundfonts), incremental and crash-safe writes, corrupt and mismatched
files, search ordering, pitch-aware scoring and the JSON layout."""

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from timbreclip.cli import main
from timbreclip.dsp.audio_io import write_audio
from timbreclip.library.db import Library, LibraryError, PatchRecord
from timbreclip.library.scoring import nearest_pitch_notes
from timbreclip.library.search import PatchSearch, Query
from timbreclip.library.sources import pitch_from_name
from timbreclip.neural.encoder import AudioEncoderConfig
from timbreclip.neural.model import ModelConfig, TimbreCLIP
from timbreclip.neural.text import MiniLMEncoder

FONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
has_font = pytest.mark.skipif(not Path(FONT).is_file(), reason=f"{FONT} is not installed (make installs it)")


def _model_dir(tmp, seed):
    torch.manual_seed(seed)
    out = tmp / f"model{seed}"
    TimbreCLIP(ModelConfig(audio=AudioEncoderConfig(width=8)), text_encoder=MiniLMEncoder()).save(out)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    return _model_dir(tmp, 0), _model_dir(tmp, 1)


@pytest.fixture(scope="module")
def model(models):
    return TimbreCLIP.load(models[0])


def _tone(path, f0, seconds=1.0, rate=44100, harmonics=10):
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, harmonics)) * 0.2 * np.exp(-2 * t)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_audio(path, x.astype(np.float32), rate)


def _samples(root):
    _tone(root / "Keys" / "piano_C4.wav", 261.63)
    _tone(root / "Keys" / "bell tone.wav", 880.0, harmonics=3)
    rng = np.random.default_rng(0)
    t = np.arange(22050) / 44100
    Path(root / "Drums" / "Kicks").mkdir(parents=True)
    write_audio(root / "Drums" / "Kicks" / "kick.wav", (rng.standard_normal(len(t)) * np.exp(-30 * t) * 0.5)
                .astype(np.float32), 44100)
    (root / "Keys" / "broken.wav").write_bytes(b"RIFF1234WAVEjunk")
    return root


def test_pitch_from_note_names():
    assert pitch_from_name("Bass_A#1.wav") == 34.0
    assert pitch_from_name("pluck-C4.flac") == 60.0
    assert pitch_from_name("Pad Eb3 soft.wav") == 51.0
    assert pitch_from_name("kick.wav") is None
    assert pitch_from_name("808.wav") is None


def test_sample_folder_nested_categories_broken_file_and_pitch(tmp_path, models, capsys):
    folder = _samples(tmp_path / "samples")
    db = tmp_path / "lib.sqlite"
    code = main(["library", "add", str(folder), "--db", str(db), "--model", str(models[0])])
    out, err = capsys.readouterr()
    assert code == 2  # something was left out: the summary and the exit code say so
    assert "left out Keys/broken.wav" in err
    assert "3 patches, 3 notes" in out
    with Library(db) as lib:
        index = lib.note_index()
    by_title = {p["title"]: (p, index.note_pitch[list(index.note_patch).index(i)]) for i, p in enumerate(index.patches)}
    assert by_title["kick"][0]["category"] == "Kicks" and by_title["kick"][0]["tags"] == ["Drums"]
    assert np.isnan(by_title["kick"][1])  # noise: no pitch
    assert by_title["piano C4"][1] == 60.0  # from the name
    assert by_title["bell tone"][1] == pytest.approx(81.0, abs=0.1)  # 880 Hz, estimated


def test_incremental_readd_renders_nothing_and_a_change_is_picked_up(tmp_path, models, capsys):
    folder = _samples(tmp_path / "samples")
    (folder / "Keys" / "broken.wav").unlink()
    db = tmp_path / "lib.sqlite"
    assert main(["library", "add", str(folder), "--db", str(db), "--model", str(models[0])]) == 0
    with Library(db) as lib:
        first = lib.conn.execute("SELECT MAX(id), COUNT(*) FROM notes").fetchone()
    capsys.readouterr()
    assert main(["library", "add", str(folder), "--db", str(db), "--model", str(models[0])]) == 0
    assert "unchanged" in capsys.readouterr().out
    with Library(db) as lib:
        assert tuple(lib.conn.execute("SELECT MAX(id), COUNT(*) FROM notes").fetchone()) == tuple(first)
    _tone(folder / "Keys" / "organ_G2.wav", 98.0)
    assert main(["library", "add", str(folder), "--db", str(db), "--model", str(models[0])]) == 0
    with Library(db) as lib:
        assert lib.stats()["patches"] == 4


@has_font
def test_soundfont_presets_render_at_the_index_pitches(tmp_path, models, capsys):
    db = tmp_path / "lib.sqlite"
    assert main(["library", "add", FONT, "--db", str(db), "--model", str(models[0]), "--pitches", "48,72"]) == 0
    with Library(db) as lib:
        stats = lib.stats()
        index = lib.note_index()
    assert stats["patches"] >= 100 and stats["notes"] <= 2 * stats["patches"]
    assert set(np.unique(index.note_pitch)) <= {48.0, 72.0}
    titles = {p["title"] for p in index.patches}
    assert any("piano" in t.lower() for t in titles)


@has_font
def test_crash_mid_build_leaves_the_library_as_it_was_before_that_source(tmp_path, models):
    small = _samples(tmp_path / "small")
    (small / "Keys" / "broken.wav").unlink()
    db = tmp_path / "lib.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "timbreclip", "library", "add", str(small), FONT, "--db",
                             str(db), "--model", str(models[0])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()  # the first source is committed and reported before the second starts
    assert line.startswith("added"), line + proc.stderr.read()
    time.sleep(2.0)  # the soundfont is rendering (about 20 s for all of it)
    assert proc.poll() is None, "the build ended before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with Library(db) as lib:
        names = [s["name"] for s in lib.sources()]
        assert names == ["small"]
        assert lib.stats()["patches"] == 3
        assert lib.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert main(["search", "piano", "--db", str(db), "--model", str(models[0]), "--json"]) == 0


def test_corrupt_or_foreign_file_is_named_and_left_alone(tmp_path, capsys):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    before = junk.read_bytes()
    assert main(["library", "list", "--db", str(junk)]) == 2
    err = capsys.readouterr().err
    assert str(junk) in err and "not a timbreclip library or corrupt" in err and len(err.strip().splitlines()) == 1
    assert junk.read_bytes() == before
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t(x)").connection.commit()
    assert main(["library", "stats", "--db", str(other)]) == 2
    assert "not a timbreclip library" in capsys.readouterr().err


def test_missing_and_empty_library_say_how_to_fill_it(tmp_path, models, capsys):
    assert main(["search", "pad", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert "timbreclip library add --installed" in capsys.readouterr().err
    Library(tmp_path / "empty.sqlite").close()
    assert main(["search", "pad", "--db", str(tmp_path / "empty.sqlite"), "--model", str(models[0])]) == 2
    assert "the library is empty" in capsys.readouterr().err


def test_locked_library_waits_then_says_so(tmp_path):
    db = tmp_path / "lib.sqlite"
    Library(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(LibraryError, match="locked by another process"):
            lib = Library(db, timeout_s=0.5)
            lib.replace_source("/x", "samples", "x", "h", [], "fp")
        assert time.monotonic() - started < 10
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_model_mismatch_is_refused_then_reembedded(tmp_path, models, capsys):
    folder = _samples(tmp_path / "samples")
    (folder / "Keys" / "broken.wav").unlink()
    db = tmp_path / "lib.sqlite"
    assert main(["library", "add", str(folder), "--db", str(db), "--model", str(models[0])]) == 0
    capsys.readouterr()
    assert main(["search", "bell", "--db", str(db), "--model", str(models[1])]) == 2
    assert "embedded with another model" in capsys.readouterr().err
    assert main(["library", "add", str(folder), "--db", str(db), "--model", str(models[1])]) == 2  # never mixed
    assert main(["library", "reembed", "--db", str(db), "--model", str(models[1])]) == 0
    capsys.readouterr()
    assert main(["search", "bell", "--db", str(db), "--model", str(models[1]), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


def _known_library(tmp_path, model):
    """Patches whose notes ARE text embeddings: the answer to each query is known."""
    words = ["warm pad", "bright bell", "distorted guitar", "deep bass"]
    z = model.embed_text(words)
    noise = np.random.default_rng(0).standard_normal((3, z.shape[1])).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    lib = Library(tmp_path / "known.sqlite")
    patches = [PatchRecord(title=w.title(), category="Pad" if "pad" in w else "Other", bank=0, program=i,
                           notes=[(48.0, noise[0]), (60.0, z[i]), (72.0, noise[1])]) for i, w in enumerate(words)]
    lib.replace_source("/synthetic/known", "samples", "known", "h1", patches, model.fingerprint())
    return lib, words


def test_search_order_on_a_library_whose_answer_is_known(tmp_path, model):
    lib, words = _known_library(tmp_path, model)
    with lib:
        search = PatchSearch(lib, model, model.fingerprint())
        for i, w in enumerate(words):
            hits = search.search(Query(text=w), top=4)
            assert hits[0]["title"] == w.title() and hits[0]["pitch"] == 60.0
            assert [h["rank"] for h in hits] == [1, 2, 3, 4]
            assert all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:]))
        assert [h["title"] for h in search.search(Query(text="bright bell"), category="pad")] == ["Warm Pad"]
        assert lib.search("deep bass", embedder=model)[0]["title"] == "Deep Bass"  # the Python call


def test_pitch_scores_each_patch_by_its_nearest_note(tmp_path, model):
    lib, words = _known_library(tmp_path, model)
    with lib:
        search = PatchSearch(lib, model, model.fingerprint())
        z = model.embed_text(["warm pad"])[0]
        best = search.rank(z, top=1)[0]
        assert best["pitch"] == 60.0
        at_70 = search.rank(z, top=4, pitch=70)  # nearest note is 72: noise, so the score drops
        assert all(h["pitch"] == 72.0 for h in at_70)
        assert max(h["score"] for h in at_70) < best["score"] - 0.2
        assert search.rank(z, top=1, pitch=62)[0]["pitch"] == 60.0
    # ties go to the lower note, unpitched notes only where nothing else exists
    chosen = nearest_pitch_notes(np.array([0, 0, 1]), np.array([58.0, 62.0, np.nan]), 60.0, 2)
    assert chosen.tolist() == [0, 2]


def test_json_layout_and_like_search(tmp_path, models, capsys):
    folder = _samples(tmp_path / "samples")
    (folder / "Keys" / "broken.wav").unlink()
    db = tmp_path / "lib.sqlite"
    assert main(["library", "add", str(folder), "--db", str(db), "--model", str(models[0])]) == 0
    capsys.readouterr()
    assert main(["search", "--like", str(folder / "Keys" / "piano_C4.wav"), "--db", str(db), "--model",
                 str(models[0]), "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [sorted(h) for h in hits] == [sorted(["rank", "patch_id", "title", "category", "source", "score",
                                                 "pitch"])] * 3
    assert hits[0]["title"] == "piano C4" and hits[0]["score"] == pytest.approx(1.0, abs=1e-2)
    assert main(["search", "brighter", "--like", str(folder / "Keys" / "piano_C4.wav"), "--db", str(db),
                 "--model", str(models[0]), "--json", "--top", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["tag", str(folder / "Keys" / "bell tone.wav"), "--db", str(db), "--model", str(models[0]),
                 "--json", "--top", "5"]) == 0
    words = json.loads(capsys.readouterr().out)
    assert len(words) == 5 and {"word", "kind", "score", "rank"} <= set(words[0])
    assert main(["library", "remove", "samples", "--db", str(db)]) == 0
    with Library(db) as lib:
        assert lib.stats()["patches"] == 0


def test_favourites_and_history_survive_a_rebuild(tmp_path, model):
    lib, words = _known_library(tmp_path, model)
    with lib:
        key = lib.note_index().patches[0]["key"]
        lib.set_favourite(key)
        lib.add_history(key, "warm")
        _known_library(tmp_path, model)[0].close()  # the source is written again: new patch rows, same keys
    with Library(tmp_path / "known.sqlite") as again:
        assert key in again.favourites()
        assert again.history()[0]["patch_key"] == key
        assert key in {p["key"] for p in again.note_index().patches}


def test_approximate_index_agrees_with_exact_search(tmp_path, model):
    """The approximate (IVF-SQ8) path (used past a million notes) on a small library, forced on: same answers as exact search, and
    its index is cached beside the database for this library generation."""
    from timbreclip.library import ann

    if not ann.available():
        pytest.skip("faiss is not installed")
    lib, words = _known_library(tmp_path, model)
    with lib:
        exact = PatchSearch(lib, model, model.fingerprint())
        approx = PatchSearch(lib, model, model.fingerprint(), ann_min_notes=0)
        for w in words:
            a, b = exact.search(Query(text=w), top=3), approx.search(Query(text=w), top=3)
            assert [h["title"] for h in a] == [h["title"] for h in b]
            assert [h["score"] for h in a] == pytest.approx([h["score"] for h in b], abs=1e-5)
        assert list(tmp_path.glob("known.sqlite.ivf-*"))
