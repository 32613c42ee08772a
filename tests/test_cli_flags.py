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
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err


def test_template_is_required_to_hold_one_placeholder_in_python_too():
    from timbreclip.dsp.errors import TimbreclipError
    from timbreclip.neural.text import check_prompts

    assert check_prompts(["warm"], "the sound of a {}") == ["the sound of a warm"]
    with pytest.raises(TimbreclipError, match="needs exactly one"):
        check_prompts(["warm"], "no placeholder")
