"""The ``timbreclip`` command: subcommands over the domain packages. This is the edge: it parses arguments, picks
the model and backend, prints, and turns every bad input into one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import math
import sys
import warnings

from timbreclip import __version__
from timbreclip.dsp.errors import TimbreclipError


def _fail(message: str, code: int = 2) -> int:
    print(f"timbreclip: error: {message}", file=sys.stderr)
    return code


def _warn(message, category, filename, lineno, file=None, line=None) -> None:  # one line, no source excerpt
    print(f"timbreclip: warning: {message}", file=sys.stderr)


def _number(name: str, lo: float | None = None, hi: float | None = None, integer: bool = False, lo_open=False):
    """An argparse type: a finite number in [lo, hi] (lo excluded when lo_open), named in the error."""

    def parse(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {text!r}: not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{name} {text}: must be finite")
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise argparse.ArgumentTypeError(f"{name} {text}: must be {'>' if lo_open else '>='} {lo:g}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"{name} {text}: must be <= {hi:g}")
        return value

    return parse


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
    p.add_argument("--amount", type=_number("--amount", 0.0, 1.5), default=1.0,
                   help="how much of the saved curve to apply: every gain (dB) and the output gain times A "
                        "(0 flat, 1 as saved, up to 1.5; default 1)")
    p.add_argument("--overwrite-input", action="store_true", help="allow -o to be the input file itself")
    p.set_defaults(run=_run_apply_eq)


def _run_apply_eq(args) -> int:
    from timbreclip.dsp.audio_io import audio_info, process_file
    from timbreclip.dsp.engine import BiquadCascade
    from timbreclip.dsp.settings import EQSettings

    _check_outputs((args.output, "-o"), (args.plot, "--plot"))
    _check_not_input(args)
    settings = EQSettings.load(args.settings).scaled(args.amount)
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


# -- embed / similarity ------------------------------------------------------------------------------------------
def _add_model_args(p) -> None:
    p.add_argument("--model", help="model directory (model.safetensors + config.json); default: the shipped model")
    p.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="inference backend (auto picks the fastest that works here)")
    p.add_argument("--device", default="cpu", help="torch backend: cpu, cuda, cuda:N or auto (default cpu)")


BACKENDS = ("torch", "onnxruntime", "tensorrt", "auto")


def _template(text: str) -> str:
    """argparse type for --template: exactly one {} (checked before any model loads)."""
    from timbreclip.neural.text import check_template

    try:
        check_template(text)
    except TimbreclipError as err:
        raise argparse.ArgumentTypeError(f"--{err}") from None  # "template ...: why" -> "--template ...: why"
    return text


def _add_embed(sub) -> None:
    p = sub.add_parser("embed", help="print embeddings of audio files or texts as JSON")
    p.add_argument("files", nargs="*", metavar="FILE", help="audio files")
    p.add_argument("--text", action="append", default=[], help="a text to embed (repeatable)")
    p.add_argument("--template", type=_template, help='prompt template with one {}, e.g. "the sound of a {}"')
    p.add_argument("--json", action="store_true",
                   help="JSON output; it is also the default (a list of {\"input\", \"embedding\"})")
    p.add_argument("--allow-silent", action="store_true", help="embed silent or very short files too")
    _add_model_args(p)
    p.set_defaults(run=_run_embed)


def _run_embed(args) -> int:
    import json

    from timbreclip.defaults import load_embedder
    from timbreclip.dsp.audio_io import check_listenable, read_audio

    if not args.files and not args.text:
        raise TimbreclipError("give audio files and/or --text")
    out = []
    audios = []
    for path in args.files:  # every file is checked before the model loads
        audio, rate = read_audio(path)
        if not args.allow_silent:
            check_listenable(audio, rate, path)
        audios.append((path, audio, rate))
    embedder = load_embedder(args.model, args.backend, args.device)
    for path, audio, rate in audios:
        out.append({"input": path, "embedding": [round(float(v), 6) for v in embedder.embed_audio(audio, rate)]})
    if args.text:
        for text, z in zip(args.text, embedder.embed_text(args.text, template=args.template)):
            out.append({"input": text, "embedding": [round(float(v), 6) for v in z]})
    print(json.dumps(out))
    return 0


def _add_similarity(sub) -> None:
    p = sub.add_parser("similarity", help="cosine similarity between an audio file and texts")
    p.add_argument("file", help="audio file")
    p.add_argument("--text", action="append", required=True, help="a text (repeatable)")
    p.add_argument("--template", type=_template, help='prompt template with one {}, e.g. "the sound of a {}"')
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--allow-silent", action="store_true", help="score silent or very short files too")
    _add_model_args(p)
    p.set_defaults(run=_run_similarity)


def _run_similarity(args) -> int:
    import json

    from timbreclip.defaults import load_embedder
    from timbreclip.dsp.audio_io import check_listenable, read_audio

    audio, rate = read_audio(args.file)
    if not args.allow_silent:
        check_listenable(audio, rate, args.file)
    embedder = load_embedder(args.model, args.backend, args.device)
    scores = embedder.embed_text(args.text, template=args.template) @ embedder.embed_audio(audio, rate)
    if args.json:
        print(json.dumps([{"text": t, "similarity": round(float(s), 6)} for t, s in zip(args.text, scores)]))
    else:
        width = max(len(t) for t in args.text)
        for text, score in sorted(zip(args.text, scores), key=lambda x: -x[1]):
            print(f"{text:<{width}}  {score:+.4f}")
    return 0


# -- dataset render ---------------------------------------------------------------------------------------------
def _add_dataset(sub) -> None:
    p = sub.add_parser("dataset", help="build labelled patch folders")
    dsub = p.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    r = dsub.add_parser("render", help="render soundfont or synth presets into a labelled patch folder",
                        description="Render every melodic preset of the soundfonts (16 notes, 3 s + 1 s, 16 kHz "
                                    "mono), or every preset of real synthesizers (11 notes, C2..C7), into a labelled "
                                    "patch folder with metadata.csv. Resumable.")
    r.add_argument("--soundfont", nargs="+", metavar="FILE", help=".sf2 / .sf3 files")
    r.add_argument("--synth", nargs="+", metavar="NAME", choices=("amsynth", "dx7", "whysynth", "calf"),
                   help="synthesizers: amsynth (its banks), dx7 (hexter's voices through Dexed), whysynth (its "
                        "patches with a category: the held-out synth test set), calf (Calf Monosynth and Organ "
                        "presets, LV2)")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--pitch-variants", type=int, default=0,
                   help="extra pitch-shifted renders per note (augmentation; default 0)")
    r.add_argument("--processes", type=_number("--processes", 1, 64, integer=True), default=2,
                   help="rendering processes (default 2)")
    r.add_argument("--seed", type=int, default=0, help="seed of the pitch-variant shifts (default 0)")
    r.add_argument("--limit-presets", type=int, default=None, help="first N presets per font (quick tests)")
    r.set_defaults(run=_run_dataset_render)


def _run_dataset_render(args) -> int:
    from timbreclip.training.render import render_soundfonts, render_synths

    if bool(args.soundfont) == bool(args.synth):
        return _fail("dataset render: give --soundfont FILE... or --synth NAME... (one kind per folder)")
    if args.synth:
        path = render_synths(args.synth, args.out, processes=args.processes, limit_presets=args.limit_presets)
    else:
        path = render_soundfonts(args.soundfont, args.out, variants=args.pitch_variants, processes=args.processes,
                                 seed=args.seed, limit_presets=args.limit_presets)
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    patches = len({r["patch_id"] for r in rows})
    print(f"wrote {path}: {len(rows)} notes of {patches} patches")
    return 0


# -- train / evaluate -------------------------------------------------------------------------------------------
def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a TimbreCLIP model on a labelled patch folder",
                       description="Contrastive training against the frozen text encoder. Runs as is on one CPU, or "
                                   "under torchrun (DistributedDataParallel) on many processes or GPUs.")
    p.add_argument("--config", default="scratch-cpu", help="shipped config name (paper, scratch-cpu) or JSON file")
    p.add_argument("--data", required=True, nargs="+", metavar="DIR",
                   help="labelled patch folder(s) (or NSynth json/wav folders) to train on, read as one set")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA where present; default auto); "
                   "bf16 autocast on CUDA")
    p.add_argument("--out", required=True, help="run folder: best/, last/, log.jsonl")
    p.add_argument("--init", nargs=2, metavar=("KIND", "FILE"), help="initial weights: wav2clip FILE, or model DIR (a TimbreCLIP model "
                   "folder, e.g. timbreclip/model, to fine-tune)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    p.add_argument("--cache", help="folder for the log-mel cache (default: OUT/cache)")
    for flag, kind in (("--epochs", int), ("--batch-size", int), ("--lr", float), ("--width", int),
                       ("--steps-per-epoch", int), ("--patience", int), ("--seed", int)):
        p.add_argument(flag, type=kind, help="override the config's value")
    p.set_defaults(run=_run_train)


def _run_train(args) -> int:
    from dataclasses import replace

    from timbreclip.training.trainer import TrainConfig, train

    cfg = TrainConfig.load(args.config)
    overrides = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "width", "steps_per_epoch",
                                                "patience", "seed") if getattr(args, k) is not None}
    cfg = replace(cfg, **overrides)
    init_file = init_model = None
    if args.init:
        kind, path = args.init
        if kind not in ("wav2clip", "model"):
            raise TimbreclipError(f"--init {kind}: use 'wav2clip FILE' or 'model DIR'")
        init_file, init_model = (path, None) if kind == "wav2clip" else (None, path)
        cfg = replace(cfg, init=kind)
    data = args.data[0] if len(args.data) == 1 else args.data
    result = train(cfg, data, args.out, resume=args.resume, init_wav2clip=init_file, init_model=init_model,
                   cache_dir=args.cache, device=args.device)
    print(f"best validation score {result['best_score']:.2f} at epoch {result['best_epoch']} "
          f"({result['epochs_run']} epochs run); model in {args.out}/best")
    return 0


def _add_train_predictor(sub) -> None:
    p = sub.add_parser("train-predictor", help="train the one-pass steering predictor for a model",
                       description="Distil the steering optimiser into a small network (source and target "
                                   "embeddings and the source's spectral profile -> EQ) on the model's training notes, then tune it on the steering "
                                   "objective; saved beside the model (steering_predictor.safetensors).")
    p.add_argument("--model", required=True, help="model directory (the predictor is saved into it)")
    p.add_argument("--data", required=True, nargs="+", metavar="DIR",
                   help="the model's training folder(s): only its training split is used")
    p.add_argument("--fits", type=_number("--fits", 0, 1_000_000, integer=True), default=400,
                   help="optimiser fits to distil (about two seconds each; default 400; 0: no distillation, the "
                        "objective stage starts from flat)")
    p.add_argument("--draws", type=_number("--draws", 10, 1_000_000, integer=True), default=2400,
                   help="(note, words) examples for the objective stage, the fits among them (default 2400)")
    p.add_argument("--notes", type=_number("--notes", 1, 1_000_000, integer=True), default=600,
                   help="training notes to draw them on (default 600)")
    p.add_argument("--epochs", type=_number("--epochs", 1, 10_000, integer=True), default=12,
                   help="epochs of the objective stage (default 12)")
    p.add_argument("--spectrum-bands", type=_number("--spectrum-bands", 0, 128, integer=True), default=32,
                   help="bands of the source's spectral profile the predictor also takes (default 32; 0: the "
                        "embeddings only)")
    p.add_argument("--sensitivity-bands", type=_number("--sensitivity-bands", 0, 128, integer=True), default=32,
                   help="bands of the steering objective's gradient at flat the predictor also takes (one backward "
                        "pass through the encoder per prediction; default 32; 0: none)")
    p.add_argument("--refine-hidden", type=_number("--refine-hidden", 0, 4096, integer=True), default=128,
                   help="width of the learned second step, which probes the objective once at the first answer "
                        "and corrects it (one more forward and backward pass per prediction; default 128; 0: none)")
    p.add_argument("--refine-epochs", type=_number("--refine-epochs", 1, 10_000, integer=True), default=None,
                   help="epochs of the second step (default: --epochs)")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--refine-only", action="store_true",
                      help="keep the first network of the predictor already beside the model; train the second "
                           "step only")
    keep.add_argument("--add-step", action="store_true",
                      help="keep the whole predictor already beside the model and train one more learned step "
                           "after its last (one more probe of the objective, a forward and a backward pass, per "
                           "prediction)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_run_train_predictor)


def _run_train_predictor(args) -> int:
    from timbreclip.training.predictor import run

    report = run(args.model, args.data, fits=args.fits, draws=args.draws, notes=args.notes, seed=args.seed,
                 epochs=args.epochs, spectrum_bands=args.spectrum_bands, sensitivity_bands=args.sensitivity_bands,
                 refine_hidden=args.refine_hidden, refine_epochs=args.refine_epochs, refine_only=args.refine_only,
                 add_step=args.add_step)
    if args.add_step:
        n = report["refine_steps"] + 1
        print(f"steering predictor saved to {report['saved']}: step {n} added, held-out objective "
              f"{' -> '.join(str(v) for v in report[f'step{n}_held_out_objective_before'])} -> "
              f"{report[f'step{n}_held_out_objective']}")
        return 0
    print(f"steering predictor saved to {report['saved']}: held-out objective {report.get('held_out_objective')}, "
          + (f"curve RMS {report['distill_rms_db']} dB after distillation " if report.get("distill_rms_db")
             is not None else "no distillation ") + f"({report.get('fits')} fits, {report.get('draws')} draws)"
          + (f"; second step: held-out objective {report['held_out_objective_first_answer']} -> "
             f"{report['held_out_objective_refined']}" if args.refine_hidden else ""))
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="cross-modal retrieval evaluation (the paper's Table 1) on a patch folder")
    p.add_argument("dataset", nargs="+", help="labelled patch folder(s), read as one set")
    p.add_argument("--model", action="append", help="model directory (repeatable); default: the shipped model")
    p.add_argument("--backend", default="torch", choices=BACKENDS)
    p.add_argument("--device", default="cpu", help="torch backend: cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--json", dest="json_out", help="write the report as JSON")
    p.add_argument("--markdown", help="write the Table-1 style markdown table")
    p.add_argument("--plot", help="write R@k curves (PNG)")
    p.add_argument("--no-cache", action="store_true", help="recompute embeddings even if cached")
    p.add_argument("--split", choices=("all", "validation"), default="all",
                   help="validation: only the programs the model's trainer held out (its seed, from its provenance)")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> int:
    from pathlib import Path

    from timbreclip.defaults import load_embedder
    from timbreclip.training.evaluation import evaluate_models, markdown_table

    _check_outputs((args.json_out, "--json"), (args.markdown, "--markdown"), (args.plot, "--plot"))
    paths = args.model or [None]
    models = {}
    for path in paths:
        name = Path(path).name if path else "timbreclip (shipped)"
        if path and Path(path).name in ("best", "last"):
            name = f"{Path(path).parent.name}/{Path(path).name}"
        models[name] = load_embedder(path, args.backend, args.device)
    dataset = args.dataset[0] if len(args.dataset) == 1 else args.dataset
    report = evaluate_models(dataset, models, args.json_out, args.markdown, args.plot,
                             use_cache=not args.no_cache, split=args.split)
    print(markdown_table(report))
    return 0


# -- eq (text-steered) --------------------------------------------------------------------------------------------
class _PromptAction(argparse.Action):
    """--prompt P appends (P, 1.0); --weight W sets the weight of the --prompt just before it."""

    def __call__(self, parser, namespace, value, option_string=None):
        pairs = getattr(namespace, "prompts", None) or []
        if option_string == "--prompt":
            pairs.append([value, 1.0])
        else:
            if not pairs:
                parser.error("--weight must follow a --prompt")
            try:
                weight = float(value)
            except ValueError:
                parser.error(f"--weight {value!r}: not a number")
            if not math.isfinite(weight) or weight < 0:
                parser.error(f"--weight {value}: must be a finite number >= 0")
            pairs[-1][1] = weight
        namespace.prompts = pairs


def _prompt_weights(args) -> dict[str, float]:
    """--prompt/--weight pairs as {words: weight} (a repeated prompt adds up), checked with --source-weight."""
    from timbreclip.neural.steering import check_weights

    if not args.prompts:
        raise TimbreclipError("give at least one --prompt")
    prompts: dict[str, float] = {}
    for text, weight in args.prompts:
        prompts[text] = prompts.get(text, 0.0) + weight
    check_weights(prompts, args.source_weight)
    return prompts


def _add_eq(sub) -> None:
    p = sub.add_parser("eq", help="steer an EQ with words and apply it to a file",
                       description="Describe the sound you want; the EQ moves toward it (TimbreCLIP text-guided "
                                   "EQ). The model listens at 16 kHz: bands stay below 7.2 kHz.")
    p.add_argument("input", help="audio file")
    p.add_argument("-o", "--output", required=True, help="output audio file")
    p.add_argument("--prompt", action=_PromptAction, dest="prompts", metavar="WORDS",
                   help="words for the target sound (repeatable)")
    p.add_argument("--weight", action=_PromptAction, dest="prompts", metavar="W",
                   help="weight of the --prompt before it (default 1)")
    p.add_argument("--source-weight", type=_number("--source-weight", 0.0), default=0.5,
                   help="weight of the source sound in the target (default 0.5)")
    p.add_argument("--settings-out", help="write the EQ settings (JSON interchange format)")
    p.add_argument("--plot", help="write the EQ curve and before/after spectrograms (PNG)")
    p.add_argument("--steps", type=_number("--steps", 1, 10_000_000, integer=True),
                   help="optimiser steps (default 128; --surgical 64; --paper 5000)")
    p.add_argument("--time-budget", type=_number("--time-budget", 0.0),
                   help="seconds per 4 s window the fit may take (default none: a fixed step count, so the same "
                   "command gives the same EQ on any machine; 0 = none)")
    p.add_argument("--surgical", action="store_true",
                   help="today's freedom: +-12 dB, narrow bands (Q up to 10), no shape penalty (default: broad, "
                   "moderate moves an engineer would sign: +-9 dB, Q <= 3, a penalty on big boosts and spans)")
    p.add_argument("--amount", type=_number("--amount", 0.0, 1.5), default=1.0,
                   help="how much of the fitted curve to apply (0 flat, 1 the fit, up to 1.5; default 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--init", choices=("broad", "flat", "predict"), help="start from the best broad move (fast "
                   "default), flat (--paper), or the one-pass predictor's EQ where it scores better than flat (predict)")
    p.add_argument("--fast-predict", action="store_true",
                   help="no optimisation: the one-pass steering predictor's EQ (milliseconds; needs a predictor "
                        "beside the model, as the shipped model has)")
    p.add_argument("--learned-steps", type=_number("--learned-steps", 0, 100, integer=True),
                   help="with --fast-predict or --init predict: the predictor's learned steps to take (each one "
                        "more look at the objective, 10-17 ms on a 2-core CPU; default: all it has, 2 for "
                        "the shipped model; 1 is about twice as fast)")
    p.add_argument("--lr", type=_number("--lr", 0.0, 100.0, lo_open=True),
                   help="learning rate (fast default 0.3; --paper: 0.01)")
    p.add_argument("--paper", action="store_true", help="the paper's optimiser: 5000 Adam steps at lr 1e-2")
    p.add_argument("--penalty", type=_number("--penalty", 0.0, 100.0), default=None,
                   help="gain penalty weight (default 0.01; --surgical and --paper 0.02)")
    p.add_argument("--no-match-loudness", action="store_true", help="keep the EQ's loudness change")
    p.add_argument("--excerpt", type=_number("--excerpt", 0.0, lo_open=True), default=60.0,
                   help="seconds of the file the EQ listens to (default 60)")
    p.add_argument("--model", help="model directory; default: the shipped model")
    p.add_argument("--seed", type=int, default=0,
                   help="kept for scripts: nothing in the fit is random")
    p.add_argument("--overwrite-input", action="store_true", help="allow -o to be the input file itself")
    p.set_defaults(run=_run_eq, prompts=None)


def _run_eq(args) -> int:
    from dataclasses import replace

    from timbreclip.defaults import load_torch_model
    from timbreclip.neural.steering import SteeringConfig
    from timbreclip.dsp.audio_io import audio_info
    from timbreclip.text_eq import plot_eq_run, print_run, run_eq

    _check_outputs((args.output, "-o"), (args.settings_out, "--settings-out"), (args.plot, "--plot"))
    _check_not_input(args)
    audio_info(args.input)  # a missing or corrupt input is named before the model loads

    prompts = _prompt_weights(args)
    config = SteeringConfig.paper(surgical=args.surgical) if args.paper else (
        SteeringConfig.surgical(time_budget_s=None) if args.surgical else SteeringConfig.offline())
    for field_name, value in (("steps", args.steps), ("lr", args.lr), ("penalty", args.penalty), ("seed", args.seed),
                              ("init", args.init)):
        if value is not None:
            config = replace(config, **{field_name: value})
    if args.time_budget is not None:
        if args.time_budget < 0:
            raise TimbreclipError(f"--time-budget {args.time_budget:g}: must be >= 0 (0 = no budget)")
        config = replace(config, time_budget_s=args.time_budget or None)
    if args.fast_predict:
        if args.paper or args.surgical or args.steps is not None or args.init not in (None, "predict"):
            raise TimbreclipError("--fast-predict is one forward pass: it takes no --paper, --surgical, --steps "
                                  "or --init")
        config = replace(config, init="predict", steps=0)
    if args.learned_steps is not None:
        if config.init != "predict":
            raise TimbreclipError("--learned-steps is for the steering predictor: add --fast-predict or --init predict")
        config = replace(config, learned_steps=args.learned_steps, start_learned_steps=args.learned_steps)
    model = load_torch_model(args.model, args.device)
    if config.init == "predict":
        from timbreclip.neural.predictor import find_predictor

        predictor = find_predictor(model)
        if predictor is None:
            raise TimbreclipError(f"{args.model or 'the shipped model'}: no steering predictor beside it (train "
                                  "one with `timbreclip train-predictor`)")
        predictor.check_learned_steps(args.learned_steps, "--learned-steps")
    run = run_eq(args.input, args.output, prompts, model, args.source_weight, config,
                 match_loudness=not args.no_match_loudness, excerpt_seconds=args.excerpt, amount=args.amount)
    if args.settings_out:
        run.settings.save(args.settings_out)
    if args.plot:
        from timbreclip.dsp.audio_io import read_audio

        before, rate = read_audio(args.input, max_seconds=10)
        after, _ = read_audio(args.output, max_seconds=10)
        plot_eq_run(run, before, after, rate, args.plot, " + ".join(f"{w:g} x {p}" for p, w in prompts.items()))
    print_run(run)
    print(f"wrote {args.output}" + (f" and {args.settings_out}" if args.settings_out else ""))
    return 0


# -- live ---------------------------------------------------------------------------------------------------------
def _check_not_input(args) -> None:
    """-o naming the input (directly or through a link) would destroy the source: refused unless asked for."""
    from timbreclip.dsp.audio_io import same_file

    if same_file(args.input, args.output) and not args.overwrite_input:
        raise TimbreclipError(f"-o {args.output}: is the input file; write elsewhere, or pass --overwrite-input")


_PLOT_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


def _check_outputs(*outputs: tuple[str | None, str]) -> None:
    """Every output path checked before any work: its folder exists and is writable; a plot's format is known."""
    for path, flag in outputs:
        _check_output_path(path, flag)
        if path and flag.endswith("plot"):
            suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
            if suffix not in _PLOT_FORMATS:
                raise TimbreclipError(f"{flag} {path}: unknown image format (use {', '.join(_PLOT_FORMATS)})")


def _check_output_path(path: str | None, flag: str) -> None:
    """Refuse an output path whose folder is missing or not writable before any work is done."""
    import os
    from pathlib import Path

    if not path:
        return
    target = Path(path)
    if target.is_dir():
        raise TimbreclipError(f"{flag} {path}: is a directory")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise TimbreclipError(f"{flag} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise TimbreclipError(f"{flag} {path}: folder {folder} is not writable")


def _add_live(sub) -> None:
    p = sub.add_parser("live", help="a live EQ steered by words while the music plays",
                       description="Audio in -> EQ -> audio out, the EQ re-steered toward the words every "
                                   "--update-every seconds on the last 4 s heard. Type words to replace the prompts, "
                                   ":b bypass, :h hold, + / - amount, :s FILE save, :q quit.")
    p.add_argument("--prompt", action=_PromptAction, dest="prompts", metavar="WORDS",
                   help="words for the target sound (repeatable)")
    p.add_argument("--weight", action=_PromptAction, dest="prompts", metavar="W",
                   help="weight of the --prompt before it (default 1)")
    p.add_argument("--source-weight", type=_number("--source-weight", 0.0), default=0.5)
    p.add_argument("--amount", type=_number("--amount", 0.0, 1.5), default=1.0,
                   help="how much of the steered EQ plays (0..1.5, default 1; MIDI CC 1)")
    p.add_argument("--fast-predict", action="store_true",
                   help="steer with the one-pass predictor instead of the optimiser (an update in milliseconds: "
                        "pair it with a short --update-every, e.g. 0.1)")
    p.add_argument("--learned-steps", type=_number("--learned-steps", 0, 100, integer=True),
                   help="with --fast-predict: the predictor's learned steps per update (default: all it has, 2 "
                        "for the shipped model; 1 answers about twice as fast, with a less exact EQ)")
    p.add_argument("--device", default="cpu", help="where the steering model runs: cpu, cuda, cuda:N or auto "
                   "(default cpu)")
    p.add_argument("--input-device", help="input device name (or part of it) or index")
    p.add_argument("--output-device", help="output device name (or part of it) or index")
    p.add_argument("--samplerate", type=_number("--samplerate", 8000.0, 384000.0), default=48000.0)
    p.add_argument("--blocksize", type=_number("--blocksize", 16, 8192, integer=True), default=256)
    p.add_argument("--channels", type=_number("--channels", 1, 64, integer=True), default=2)
    p.add_argument("--play", help="loop an audio file as the source instead of an input device")
    p.add_argument("--input-file", help="render a live take of this file on a simulated clock (with --output-file)")
    p.add_argument("--output-file", help="where the simulated live take is written")
    p.add_argument("--update-every", type=_number("--update-every", 0.0, 60.0, lo_open=True), default=0.5,
                   help="seconds between steering updates (default 0.5)")
    p.add_argument("--time-budget", type=_number("--time-budget", 0.0, 60.0, lo_open=True),
                   help="wall-clock seconds one update may take (default 0.6 x --update-every, at most 0.35)")
    p.add_argument("--sim-latency", type=_number("--sim-latency", 0.0, 60.0), default=0.25,
                   help="simulated clock: seconds from the end of a window until its EQ plays (default 0.25)")
    p.add_argument("--duration", type=_number("--duration", 0.0, lo_open=True), help="stop after this many seconds")
    p.add_argument("--settings-out", help="write the EQ playing at exit (JSON interchange format)")
    p.add_argument("--stats", help="write callback, xrun and update statistics (JSON)")
    p.add_argument("--midi-port", help="MIDI input port for control (name, part of it, or index)")
    p.add_argument("--midi-api", default="auto", choices=("auto", "jack", "alsa"),
                   help="MIDI API (auto: ALSA where its sequencer exists, else JACK)")
    p.add_argument("--midi-map", help="JSON CC map overriding the default (see README)")
    p.add_argument("--worker", choices=("process", "thread", "off"), default="process",
                   help="where steering runs (default: a separate process; see README); off: the EQ stays flat "
                        "(benchmarks)")
    p.add_argument("--callback", choices=("native", "python"), default="native",
                   help="the audio callback: native (default: compiled code PortAudio calls directly, no Python in "
                        "the audio thread) or python (a sounddevice Python callback; for comparison)")
    p.add_argument("--no-input", action="store_true", help="do not read commands from standard input")
    p.add_argument("--model", help="model directory; default: the shipped model")
    p.set_defaults(run=_run_live, prompts=None)


def _run_live(args) -> int:
    import os

    from timbreclip.realtime.loop import LiveConfig

    prompts = _prompt_weights(args)
    offline = args.input_file or args.output_file
    if offline and not (args.input_file and args.output_file):
        raise TimbreclipError("--input-file and --output-file go together")
    if offline and args.play:
        raise TimbreclipError("--play is for a device; with --input-file the file is the source")
    for path, flag in ((args.play, "--play"), (args.input_file, "--input-file")):
        if path and not os.path.isfile(path):
            raise TimbreclipError(f"{flag} {path}: no such file")
        if path and not os.access(path, os.R_OK):
            raise TimbreclipError(f"{flag} {path}: not readable")
    for path, flag in ((args.output_file, "--output-file"), (args.settings_out, "--settings-out"),
                       (args.stats, "--stats")):
        _check_output_path(path, flag)
    midi_map = None
    if args.midi_map:
        from timbreclip.realtime.midi import MidiMap

        midi_map = MidiMap.load(args.midi_map)
    from timbreclip.defaults import default_model_path
    from timbreclip.neural.model import resolve_device

    resolve_device(args.device)  # a bad --device is one line before any stream opens
    if args.learned_steps is not None and not args.fast_predict:
        raise TimbreclipError("--learned-steps is for the steering predictor's updates: add --fast-predict")
    if args.fast_predict:
        from pathlib import Path

        from timbreclip.neural.predictor import PREDICTOR_FILE, SteeringPredictor

        if not (Path(args.model or default_model_path()) / PREDICTOR_FILE).is_file():
            raise TimbreclipError(f"--fast-predict: {args.model or 'the shipped model'} has no steering predictor "
                                  "beside it (train one with `timbreclip train-predictor`)")
        if args.learned_steps is not None:  # checked here, not in the worker after the stream has opened
            SteeringPredictor.load(args.model or default_model_path()).check_learned_steps(args.learned_steps,
                                                                                            "--learned-steps")
    config = LiveConfig(prompts=prompts, source_weight=args.source_weight, amount=args.amount,
                        sample_rate=args.samplerate, channels=args.channels, blocksize=args.blocksize,
                        update_every_s=args.update_every, model_dir=str(args.model or default_model_path()),
                        worker=args.worker, device=args.device, fast_predict=args.fast_predict,
                        learned_steps=args.learned_steps, time_budget_s=args.time_budget, callback=args.callback)
    if offline:
        from timbreclip.dsp.audio_io import audio_info
        from timbreclip.realtime.stream import run_file

        audio_info(args.input_file)  # a clear error for a corrupt file before the model loads
        live = run_file(config, args.input_file, args.output_file, args.sim_latency, args.settings_out, args.stats)
        stats = live.stats_dict()
        print(f"rendered {args.output_file}: {stats['callbacks']} blocks, {stats['updates']} steering updates")
        return 0
    from timbreclip.realtime.stream import run_live

    run = run_live(config, args.input_device, args.output_device, play=args.play, duration_s=args.duration,
                   midi_port=args.midi_port, midi_api=args.midi_api, midi_map=midi_map,
                   read_stdin=not args.no_input, settings_out=args.settings_out, stats_out=args.stats)
    stats = run.live.stats_dict()
    print(f"timbreclip live: {run.reason}; {stats['callbacks']} callbacks, {stats['xruns']} xruns, "
          f"{stats['updates']} updates", file=sys.stderr)
    if run.stream_stuck:  # PortAudio still holds a dead device: leave without its exit handlers (they would hang)
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(run.code)
    return run.code


def _add_devices(sub) -> None:
    p = sub.add_parser("devices", help="list audio devices and MIDI ports")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--midi-api", default="auto", choices=("auto", "jack", "alsa"))
    p.set_defaults(run=_run_devices)


def _run_devices(args) -> int:
    import json

    from timbreclip.realtime.devices import audio_devices, midi_ports, refresh_audio

    refresh_audio()
    audio = audio_devices()
    midi = midi_ports(args.midi_api)
    if args.json:
        print(json.dumps({"audio": audio, "midi": midi}, indent=2))
        return 0
    print("audio devices:")
    for d in audio or []:
        print(f"  {d['index']:>2}  {d['name']}  [{d['hostapi']}]  {d['max_input_channels']} in / "
              f"{d['max_output_channels']} out  {d['default_samplerate']:g} Hz")
    if not audio:
        print("  none (no sound card; is a JACK server running?)")
    print(f"MIDI ports ({midi['api']}):" + (f" unavailable: {midi['error']}" if "error" in midi else ""))
    for kind in ("inputs", "outputs"):
        for i, name in enumerate(midi[kind]):
            print(f"  {kind[:-1]:<6} {i:>2}  {name}")
    return 0


# -- library, search, tag ----------------------------------------------------------------------------------------
def _add_db_arg(p) -> None:
    p.add_argument("--db", help="library file (default: $TIMBRECLIP_LIBRARY or "
                                "~/.local/share/timbreclip/library.sqlite)")


def _library_model(args):
    """(embedder, the model's fingerprint, its front-end config) for --model / --backend / --device."""
    from timbreclip.defaults import load_torch_model

    model = load_torch_model(args.model, getattr(args, "device", None) or "cpu")
    if args.backend == "torch":
        embedder = model
    else:
        from timbreclip.export.backends import load_backend

        embedder = load_backend(model, args.backend)
    return embedder, model.fingerprint(), model.config.frontend


def _add_library(sub) -> None:
    p = sub.add_parser("library", help="the patch library: add soundfonts and sample folders, list, remove")
    lsub = p.add_subparsers(dest="library_command", required=True, metavar="ACTION")
    a = lsub.add_parser("add", help="render, embed and store sources (soundfonts, sample folders, patch folders)",
                        description="Add soundfonts (.sf2/.sf3), folders of one-shot samples, or labelled patch "
                                    "folders (metadata.csv). Unchanged sources are skipped.")
    a.add_argument("sources", nargs="*", help="soundfont files or folders")
    a.add_argument("--installed", action="store_true", help="add every soundfont the system has")
    a.add_argument("--soundfont-dir", action="append", default=[], help="another folder to look in (repeatable)")
    a.add_argument("--pitches", help="index pitches for soundfont presets, comma-separated MIDI notes "
                                     "(default: C and F# over 8 octaves, 16 notes)")
    a.add_argument("--processes", type=_number("--processes", 1, 64, integer=True), default=2,
                   help="rendering processes (default 2)")
    a.add_argument("--force", action="store_true", help="re-render and re-embed even unchanged sources")
    _add_db_arg(a)
    _add_model_args(a)
    a.set_defaults(run=_run_library_add)
    r = lsub.add_parser("reembed", help="re-embed every source with --model (after a model change)")
    r.add_argument("--processes", type=_number("--processes", 1, 64, integer=True), default=2)
    _add_db_arg(r)
    _add_model_args(r)
    r.set_defaults(run=_run_library_reembed)
    ls = lsub.add_parser("list", help="the sources in the library")
    ls.add_argument("--json", action="store_true")
    _add_db_arg(ls)
    ls.set_defaults(run=_run_library_list)
    st = lsub.add_parser("stats", help="counts, categories, model, size")
    st.add_argument("--json", action="store_true")
    _add_db_arg(st)
    st.set_defaults(run=_run_library_stats)
    rm = lsub.add_parser("remove", help="remove a source (by path or name)")
    rm.add_argument("source")
    _add_db_arg(rm)
    rm.set_defaults(run=_run_library_remove)


def _print_report(r) -> None:
    """One source's outcome, printed (and flushed) as soon as it is committed."""
    if r.status == "added":
        print(f"added {r.path}: {r.patches} patches, {r.notes} notes"
              + (f" ({len(r.skipped)} left out)" if r.skipped else ""), flush=True)
    elif r.status == "unchanged":
        print(f"unchanged {r.path}", flush=True)
    else:
        print(f"skipped {r.error}", file=sys.stderr, flush=True)
    for item in r.skipped:
        print(f"  left out {item}", file=sys.stderr, flush=True)
    for item in r.silent:
        print(f"  silent at every index pitch, not added: {item}", flush=True)


def _summarise_reports(reports) -> int:
    added = [r for r in reports if r.status == "added"]
    print(f"{len(added)} added, {sum(r.status == 'unchanged' for r in reports)} unchanged, "
          f"{sum(r.status == 'skipped' for r in reports)} skipped; {sum(r.notes for r in added)} notes embedded")
    return 2 if any(r.status == "skipped" or r.skipped for r in reports) else 0


def _run_library_add(args) -> int:
    import time

    from timbreclip.library.db import Library
    from timbreclip.library.sources import add_sources, discover_installed

    sources = list(args.sources)
    if args.installed:
        found = discover_installed(args.soundfont_dir)
        if not found:
            raise TimbreclipError("--installed: no soundfonts in /usr/share/sounds/sf2, /usr/share/sounds/sf3 or "
                                  "~/.local/share/soundfonts" + (" or --soundfont-dir" if args.soundfont_dir else ""))
        sources += found
    if not sources:
        raise TimbreclipError("give soundfonts or folders to add, or --installed")
    pitches = None
    if args.pitches:
        try:
            pitches = [int(v) for v in args.pitches.split(",")]
        except ValueError:
            raise TimbreclipError(f"--pitches {args.pitches}: expected comma-separated MIDI notes") from None
        if not pitches or any(not 0 <= v <= 127 for v in pitches):
            raise TimbreclipError(f"--pitches {args.pitches}: MIDI notes are 0..127")
    library = Library(args.db)
    embedder, fingerprint, frontend = _library_model(args)
    started = time.perf_counter()
    with library:
        reports = add_sources(library, sources, embedder, fingerprint, frontend, pitches, args.processes,
                              progress=sys.stderr.isatty(), force=args.force, on_report=_print_report)
    code = _summarise_reports(reports)
    seconds = time.perf_counter() - started
    notes = sum(r.notes for r in reports if r.status == "added")
    if notes:
        print(f"{seconds:.1f} s ({notes / seconds:.0f} notes per second, rendering included)")
    return code


def _run_library_reembed(args) -> int:
    from timbreclip.library.db import Library
    from timbreclip.library.sources import add_sources

    library = Library(args.db, create=False)
    embedder, fingerprint, frontend = _library_model(args)
    with library:
        paths = [s["path"] for s in library.sources()]
        if library.model_fingerprint() != fingerprint:  # a new model: every set is rebuilt, source by source
            library.conn.execute("DELETE FROM meta WHERE key='model_fingerprint'")
            for path in paths:
                library.remove_source(path)
        reports = add_sources(library, paths, embedder, fingerprint, frontend, None, args.processes,
                              progress=sys.stderr.isatty(), force=True, on_report=_print_report)
    return _summarise_reports(reports)


def _run_library_list(args) -> int:
    import json

    from timbreclip.library.db import Library

    with Library(args.db, create=False) as library:
        sources = library.sources()
    if args.json:
        print(json.dumps(sources, indent=2))
        return 0
    if not sources:
        print("the library is empty: `timbreclip library add --installed` fills it")
    for s in sources:
        print(f"{s['name']:<28} {s['kind']:<12} {s['patches']:>5} patches {s['notes']:>6} notes  {s['path']}")
    return 0


def _run_library_stats(args) -> int:
    import json

    from timbreclip.library.db import Library

    with Library(args.db, create=False) as library:
        stats = library.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"{stats['path']}: {stats['sources']} sources, {stats['patches']} patches, {stats['notes']} notes, "
          f"{stats['bytes'] / 1e6:.1f} MB, schema {stats['schema_version']}")
    print(f"model: {stats['model_fingerprint'] or '(none yet)'}; favourites: {stats['favourites']}")
    for name, count in list(stats["categories"].items())[:20]:
        print(f"  {name:<24} {count}")
    return 0


def _run_library_remove(args) -> int:
    from timbreclip.library.db import Library

    with Library(args.db, create=False) as library:
        row = library.remove_source(args.source)
    print(f"removed {row['path']}")
    return 0


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="find patches by words, by example (--like FILE), at a pitch",
                       description="Text -> patches (a patch scores by its best note, or with --pitch by its note "
                                   "nearest that pitch). --like FILE searches by example; --like FILE \"brighter\" "
                                   "moves the example toward the words.")
    p.add_argument("query", nargs="?", help="words (with --like: words to move the example toward)")
    p.add_argument("--like", help="an audio file: find patches that sound like it")
    p.add_argument("--source-weight", type=_number("--source-weight", 0.0), default=0.5,
                   help="with --like and words: weight of the example (default 0.5; the words weigh 1)")
    p.add_argument("--top", type=_number("--top", 1, 10000, integer=True), default=10)
    p.add_argument("--pitch", type=_number("--pitch", 0, 127),
                   help="score each patch by its note nearest this MIDI pitch")
    p.add_argument("--category", help="only patches whose category contains this")
    p.add_argument("--source", help="only patches from sources whose name or path contains this")
    p.add_argument("--json", action="store_true", help="print the results as a JSON list")
    _add_db_arg(p)
    _add_model_args(p)
    p.set_defaults(run=_run_search)


def _open_search(args):
    from timbreclip.library.db import Library
    from timbreclip.library.search import PatchSearch

    library = Library(args.db, create=False)
    if not library.note_count():
        library.close()
        raise TimbreclipError(f"{library.path}: the library is empty; fill it with `timbreclip library add "
                              "--installed` (or add soundfonts and sample folders by path)")
    embedder, fingerprint, _ = _library_model(args)
    return library, PatchSearch(library, embedder, fingerprint)


def _run_search(args) -> int:
    import json

    from timbreclip.library.search import Query

    if args.like:
        from timbreclip.dsp.audio_io import audio_info

        audio_info(args.like)  # one clear line for a missing or corrupt example, before the model loads
    elif not args.query or not args.query.strip():
        raise TimbreclipError("give words to search for, or an example with --like FILE")
    library, search = _open_search(args)
    with library:
        prompts = {args.query.strip(): 1.0} if args.like and args.query and args.query.strip() else None
        hits = search.search(Query(text=args.query, like=args.like, prompts=prompts,
                                   source_weight=args.source_weight),
                             top=args.top, pitch=args.pitch, category=args.category, source=args.source)
    if args.json:
        print(json.dumps([{k: h[k] for k in ("rank", "patch_id", "title", "category", "source", "score", "pitch")}
                          for h in hits], indent=2))
        return 0
    if not hits:
        print("no patches match")
    for h in hits:
        pitch = f"  @{h['pitch']:g}" if h["pitch"] is not None else ""
        print(f"{h['rank']:>3}. {h['score']:+.3f}  {h['title']:<28} {h['category']:<20} {h['source']}{pitch}")
    return 0


def _add_browse(sub) -> None:
    p = sub.add_parser("browse", help="the MIDI-triggered patch browser: search by words, play the results",
                       description="A terminal UI over the patch library: type words (or like:FILE), the results "
                                   "rank at the pitch you play; MIDI (or the computer-keyboard piano) plays the "
                                   "selected patch. See the README for keys and the controller map.")
    _add_db_arg(p)
    p.add_argument("--midi-port", help="MIDI input port (name, part of it, or index); without it: computer keyboard")
    p.add_argument("--midi-api", default="auto", choices=("auto", "jack", "alsa"),
                   help="MIDI API (auto: ALSA where its sequencer exists, else JACK)")
    p.add_argument("--midi-map", help="JSON browsing map (CCs or button notes; see README)")
    p.add_argument("--output-device", help="audio output device name (or part of it) or index")
    p.add_argument("--blocksize", type=_number("--blocksize", 16, 8192, integer=True), default=256)
    p.add_argument("--samplerate", type=_number("--samplerate", 8000.0, 384000.0),
                   help="default: the output device's rate")
    p.add_argument("--query", help="start with this search")
    p.add_argument("--no-audio", action="store_true", help="browse without sound (no audio device needed)")
    p.add_argument("--headless", action="store_true",
                   help="no screen: browse from the MIDI controller only, one line per selection on stdout")
    _add_model_args(p)
    p.set_defaults(run=_run_browse)


def _run_browse(args) -> int:
    from timbreclip.library.db import Library

    midi_map = None
    if args.midi_map:
        from timbreclip.realtime.browser import BrowseMap

        midi_map = BrowseMap.load(args.midi_map)
    if args.query and args.query.strip().lower().startswith("like:"):
        import os

        path = args.query.strip()[5:].strip()
        if not os.path.isfile(path) and not os.path.isfile(path.split(" ", 1)[0]):
            raise TimbreclipError(f"--query {args.query}: no such file {path}")
    library = Library(args.db, create=False)
    with library:
        if not library.note_count():
            raise TimbreclipError(f"{library.path}: the library is empty; fill it with `timbreclip library add "
                                  "--installed` (or add soundfonts and sample folders by path)")
        from timbreclip.realtime.devices import open_midi_input, refresh_audio, resolve_audio_device

        if not args.no_audio:  # the devices are checked before the model loads (each problem is one line)
            refresh_audio()
            resolve_audio_device(args.output_device, "output")
        if args.midi_port:
            probe = open_midi_input(args.midi_port, args.midi_api, client_name="timbreclip-probe")
            probe.close_port()
            probe.delete()
        from timbreclip.library.search import PatchSearch
        from timbreclip.realtime.browse_ui import run_browser

        embedder, fingerprint, _ = _library_model(args)
        search = PatchSearch(library, embedder, fingerprint)
        return run_browser(library, search, args.output_device, args.midi_port, args.midi_api, args.blocksize,
                           args.samplerate, args.query, midi_map, audio=not args.no_audio,
                           headless=args.headless)


def _add_tag(sub) -> None:
    p = sub.add_parser("tag", help="audio -> words: categories, instruments and timbre words with scores")
    p.add_argument("file", help="audio file")
    p.add_argument("--top", type=_number("--top", 1, 1000, integer=True), default=10)
    p.add_argument("--json", action="store_true")
    _add_db_arg(p)
    _add_model_args(p)
    p.set_defaults(run=_run_tag)


def _run_tag(args) -> int:
    import json

    from timbreclip.dsp.audio_io import audio_info

    audio_info(args.file)
    library, search = _open_search(args)
    with library:
        words = search.tag(args.file, args.top)
    if args.json:
        print(json.dumps(words, indent=2))
        return 0
    for w in words:
        print(f"{w['rank']:>3}. {w['score']:+.3f}  {w['word']:<28} ({w['kind']})")
    return 0


# -- export -----------------------------------------------------------------------------------------------------
def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export the encoders to ONNX (or build TensorRT engines)")
    p.add_argument("--model", help="model directory; default: the shipped model")
    p.add_argument("--out", required=True, help="export folder")
    p.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx",
                   help="onnx (default: ONNX files + manifest) or tensorrt (also build TensorRT engines)")
    p.add_argument("--fp16", action="store_true", help="half-precision weights (TensorRT: fp16 engine)")
    p.set_defaults(run=_run_export)


def _run_export(args) -> int:
    import json
    from pathlib import Path

    from timbreclip.defaults import load_torch_model
    from timbreclip.export.onnx_export import export_onnx

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise TimbreclipError(f"{args.out}: output folder is a file")
    model = load_torch_model(args.model)
    if args.format == "tensorrt":
        from timbreclip.export.backends import tensorrt_available

        ok, why = tensorrt_available()
        if not ok:
            raise TimbreclipError(f"--format tensorrt: {why}")
    manifest = export_onnx(model, args.out, fp16=args.fp16 and args.format == "onnx")
    if args.format == "tensorrt":
        from timbreclip.export.tensorrt import TensorRTEmbedder

        TensorRTEmbedder(model, fp16=args.fp16)
    files = json.loads(Path(manifest).read_text())["files"]
    for name, entry in files.items():
        print(f"{name}: {'skipped (' + entry['skipped'] + ')' if 'skipped' in entry else 'ok'}")
    print(f"wrote {manifest}")
    return 0


# -- demo -------------------------------------------------------------------------------------------------------
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the showcase on the shipped defaults and write the results to a folder")
    p.add_argument("--out", default="demo-output", help="folder for audio, settings and plots")
    p.set_defaults(run=lambda args: __import__("timbreclip.demo", fromlist=["main"]).main(args.out))


class _Parser(argparse.ArgumentParser):
    """Bad flags get one line naming the flag and the problem (no usage block), exit code 2."""

    def error(self, message: str):
        import re

        message = re.sub(r"^argument (\S+?)(?:/\S+)?: (\1 )", r"\2", message)  # our types name the flag already
        print(f"timbreclip: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="timbreclip", description="Connect timbre and text: text-steered EQ, "
                                     "timbre embeddings and synth patch search.")
    parser.add_argument("--version", action="version", version=f"timbreclip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_apply_eq(sub)
    _add_embed(sub)
    _add_similarity(sub)
    _add_eq(sub)
    _add_live(sub)
    _add_library(sub)
    _add_search(sub)
    _add_tag(sub)
    _add_browse(sub)
    _add_devices(sub)
    _add_export(sub)
    _add_dataset(sub)
    _add_train(sub)
    _add_train_predictor(sub)
    _add_evaluate(sub)
    _add_demo(sub)
    return parser


def entry() -> int:
    """The ``timbreclip`` command: ``main``, then PortAudio closed so that a JACK server gone or stalled cannot turn
    the exit code into an abort (``realtime.devices.release_audio``)."""
    from timbreclip.realtime.devices import release_audio  # light: no PortAudio import of its own

    code = main()
    release_audio(code)  # nothing to do where the command never loaded PortAudio
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # a bad flag (one line already printed), or --help / --version
        return int(stop.code or 0)
    warnings.showwarning = _warn
    try:
        return args.run(args)
    except TimbreclipError as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:  # the reader went away (`timbreclip eq ... | head -1`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as err:  # read-only filesystem, full disk, permissions: one line naming the file
        where = err.filename or "output"
        return _fail(f"{where}: {err.strerror or err}")
