"""Bad flags are refused where they are parsed: one line naming the flag and the problem, exit code 2, before any
model loads or any work is done (the hardening audit's cases)."""

import pytest

from timbreclip.cli import main


@pytest.mark.parametrize("args, fragment", [
    (["eq", "x.wav", "-o", "y.wav", "--prompt", "warm", "--weight", "abc"], "--weight 'abc': not a number"),
    (["eq", "x.wav", "-o", "y.wav", "--prompt", "warm", "--weight", "inf"], "--weight inf: must be a finite"),
    (["eq", "x.wav", "-o", "y.wav", "--prompt", "warm", "--weight", "nan"], "--weight nan: must be a finite"),
    (["eq", "x.wav", "-o", "y.wav", "--prompt", "warm", "--source-weight", "nan"], "--source-weight nan: must be finite"),
    (["eq", "x.wav", "-o", "y.wav", "--prompt", "warm", "--penalty", "-5"], "--penalty -5: must be >= 0"),
    (["eq", "x.wav", "-o", "y.wav", "--prompt", "warm", "--steps", "-3"], "--steps -3: must be >= 1"),
    (["eq", "x.wav", "-o", "y.wav", "--prompt", "warm", "--time-budget", "nan"], "--time-budget nan: must be finite"),
    (["eq", "x.wav", "-o", "y.wav", "--prompt", "warm", "--lr", "-1"], "--lr -1: must be > 0"),
    (["eq", "x.wav", "-o", "y.wav", "--prompt", "warm", "--lr", "nan"], "--lr nan: must be finite"),
    (["eq", "x.wav", "-o", "y.wav", "--prompt", "warm", "--excerpt", "0"], "--excerpt 0: must be > 0"),
    (["eq", "x.wav", "-o", "y.wav", "--prompt", "warm", "--excerpt", "-5"], "--excerpt -5: must be > 0"),
    (["eq", "x.wav", "-o", "y.wav", "--prompt", "warm", "--excerpt", "nan"], "--excerpt nan: must be finite"),
    (["embed", "--text", "warm", "--template", "no placeholder"], "--template 'no placeholder': needs exactly one {}"),
    (["embed", "--text", "warm", "--template", "{} and {}"], "found 2 field(s)"),
    (["similarity", "x.wav", "--text", "warm", "--template", "{name}"], "found 1 field(s) ['name']"),
    (["dataset", "render", "--soundfont", "x.sf2", "--out", "d", "--processes", "0"], "--processes 0: must be >= 1"),
])
def test_bad_flags_are_one_line_and_exit_2(args, fragment, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err


def test_template_is_required_to_hold_one_placeholder_in_python_too():
    from timbreclip.dsp.errors import TimbreclipError
    from timbreclip.neural.text import check_prompts

    assert check_prompts(["warm"], "the sound of a {}") == ["the sound of a warm"]
    with pytest.raises(TimbreclipError, match="needs exactly one"):
        check_prompts(["warm"], "no placeholder")


def test_output_paths_are_checked_before_any_work(tmp_path, capsys):
    """eq/apply-eq/evaluate name a bad output path (missing folder, unknown plot format) at once, and nothing is
    written: the audio output used to be written before the plot failed."""
    import numpy as np

    from timbreclip.dsp.audio_io import write_audio

    note = tmp_path / "note.wav"
    write_audio(note, (0.3 * np.sin(np.arange(48000) / 10)).astype(np.float32), 48000)
    settings = tmp_path / "eq.json"
    settings.write_text('{"sample_rate": 48000, "bands": []}')
    out = tmp_path / "out.wav"
    for args, fragment in (
        (["eq", str(note), "-o", str(out), "--prompt", "warm", "--settings-out", "nodir/s.json"],
         "--settings-out nodir/s.json: folder nodir does not exist"),
        (["eq", str(note), "-o", str(out), "--prompt", "warm", "--plot", "nodir/p.png"], "folder nodir does not exist"),
        (["eq", str(note), "-o", str(out), "--prompt", "warm", "--plot", str(tmp_path / "p.xyz")],
         "unknown image format"),
        (["apply-eq", str(note), "-o", str(out), "--settings", str(settings), "--plot", "nodir/p.png"],
         "--plot nodir/p.png: folder nodir does not exist"),
        (["apply-eq", str(note), "-o", str(out), "--settings", str(settings), "--plot", str(tmp_path / "p.xyz")],
         "unknown image format"),
        (["eq", str(tmp_path / "missing.wav"), "-o", str(out), "--prompt", "warm"], "missing.wav"),
        (["evaluate", str(tmp_path), "--json", "nodir/r.json"], "--json nodir/r.json: folder nodir does not exist"),
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], (args, err)
        assert not out.exists()


def test_settings_files_that_are_not_text_or_too_deep(tmp_path, capsys):
    from timbreclip.dsp.settings import EQSettings
    from timbreclip.dsp.errors import SettingsError

    binary = tmp_path / "b.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    deep = tmp_path / "d.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SettingsError, match="not UTF-8"):
        EQSettings.load(binary)
    with pytest.raises(SettingsError, match="nested too deeply"):
        EQSettings.load(deep)


def test_embed_and_similarity_refuse_silent_and_tiny_files_unless_allowed(tmp_path, capsys):
    import json

    import numpy as np

    from timbreclip.dsp.audio_io import write_audio

    silent = tmp_path / "silent.wav"
    write_audio(silent, np.zeros(48000, np.float32), 48000)
    tiny = tmp_path / "tiny.wav"
    write_audio(tiny, (0.5 * np.ones(480)).astype(np.float32), 48000)  # 10 ms
    for command in (["embed", str(silent)], ["similarity", str(silent), "--text", "bright"]):
        assert main(command) == 2
        assert "silent" in capsys.readouterr().err
    assert main(["embed", str(tiny)]) == 2
    assert "too short (10 ms" in capsys.readouterr().err
    assert main(["embed", str(silent), "--allow-silent"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
