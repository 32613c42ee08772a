"""The ``timbreclip`` command: subcommands over the domain packages. This is the edge: it parses arguments, picks
the model and backend, prints, and turns every bad input into one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import sys
import warnings

from timbreclip import __version__
from timbreclip.dsp.errors import TimbreclipError


def _fail(message: str, code: int = 2) -> int:
    print(f"timbreclip: error: {message}", file=sys.stderr)
    return code


def _warn(message, category, filename, lineno, file=None, line=None) -> None:  # one line, no source excerpt
    print(f"timbreclip: warning: {message}", file=sys.stderr)


# -- apply-eq ---------------------------------------------------------------------------------------------------
def _add_apply_eq(sub) -> None:
    p = sub.add_parser("apply-eq", help="apply saved EQ settings to an audio file",
                       description="Apply EQ settings (JSON) to any audio file pedalboard reads, at its own rate.")
    p.add_argument("input", help="audio file (wav, flac, mp3, ogg, ...)")
    p.add_argument("-o", "--output", required=True, help="output audio file (format from the extension)")
    p.add_argument("--settings", required=True, help="EQ settings JSON")
    p.add_argument("--plot", help="write a PNG of the EQ curve")
    p.add_argument("--clamp-bands", action="store_true", help="move bands at or above Nyquist to 0.45 x rate")
    p.add_argument("--allow-clipping", action="store_true", help="do not scale the output down to avoid clipping")
    p.set_defaults(run=_run_apply_eq)


def _run_apply_eq(args) -> int:
    from timbreclip.dsp.audio_io import audio_info, process_file
    from timbreclip.dsp.engine import BiquadCascade
    from timbreclip.dsp.settings import EQSettings

    settings = EQSettings.load(args.settings)
    rate, channels, _ = audio_info(args.input)
    try:
        at_rate = settings.for_rate(rate, clamp=args.clamp_bands)
    except TimbreclipError as err:
        raise TimbreclipError(f"{args.settings}: {err} (use --clamp-bands to move it to 0.45 x rate)") from None
    sos = at_rate.sos()

    def make_processor(sample_rate: float, n_channels: int):
        cascade = BiquadCascade(sos, n_channels, at_rate.output_gain_db)
        cascade.warm_up()
        return lambda block: cascade.process(block)

    report = process_file(args.input, args.output, make_processor, allow_clipping=args.allow_clipping)
    if report["scale_db"] < 0:
        print(f"output scaled by {report['scale_db']:.2f} dB to avoid clipping (use --allow-clipping to keep it)",
              file=sys.stderr)
    if args.plot:
        from timbreclip.dsp.plot import plot_eq

        plot_eq(at_rate, args.plot, title=f"{args.settings} @ {rate:g} Hz")
    print(f"wrote {args.output}: {report['frames']} frames, {channels} ch, {rate:g} Hz, peak "
          f"{report['peak']:.3f}")
    return 0


# -- demo -------------------------------------------------------------------------------------------------------
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the showcase on the shipped defaults and write the results to a folder")
    p.add_argument("--out", default="demo-output", help="folder for audio, settings and plots")
    p.set_defaults(run=lambda args: __import__("timbreclip.demo", fromlist=["main"]).main(args.out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="timbreclip", description="Connect timbre and text: text-steered EQ, "
                                     "timbre embeddings and synth patch search.")
    parser.add_argument("--version", action="version", version=f"timbreclip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_apply_eq(sub)
    _add_demo(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _warn
    try:
        return args.run(args)
    except TimbreclipError as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
