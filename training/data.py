"""Training data: notes and their texts, the honest split, a log-mel cache, and augmentation that lives with it.

- Split: the Fluid fonts share recordings, so random validation patches would leak. Validation holds out whole GM
  programs (``val_programs_per_family`` per family, drawn with the seed) across every training font and bank, so it
  asks about instruments the model never heard. Folders without a ``program`` column fall back to holding out whole
  patches. The Tim family is never read here: it is the test set.
- Cache: every clip's log-mel spectrogram (float16, ``(clips, mels, frames)`` in one memory-mapped file), so an
  epoch costs encoder time only. Pitch-shift variants rendered by the synth are cached like any note; each epoch
  draws one of a note's variants.
- Random EQ: drawn from ``EQ_ARCHETYPES``, designed with the same RBJ math as the product's EQ, evaluated as
  |H|^2 on the STFT's linear bins, then averaged under each mel filter and added in the log domain. This equals
  applying the EQ to linear power before the mel step wherever |H| is flat within a mel band (true of the broad
  shelves used here); it keeps the cache 8x smaller than caching linear power (513 bins).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from timbreclip.dsp.biquad import BAND_CODE, cascade_response, normalise, rbj_coefficients
from timbreclip.dsp.parametric_eq import DEFAULT_BAND_TYPES as PARAMETRIC_BANDS
from timbreclip.neural.frontend import LOG_FLOOR, FrontEnd, FrontEndConfig

from timbreclip.library.gm import GM_FAMILIES
from .labels import BRIGHTNESS_WORDS, EQ_ARCHETYPES, LOW_SHARE_CUTOFF_HZ, descriptor_words, plain_texts, sound_texts
from timbreclip.library.patchfolder import DatasetError, Note, read_patch_folder


@dataclass
class NoteSet:
    notes: list[Note]
    texts: list[list[str]]  # every text of each note
    words: list[list[str]]  # its measured timbre words
    base: list[int]  # indices of original-pitch notes
    variants: dict[int, list[int]]  # base index -> indices of it and its pitch variants


def note_words(note: Note) -> list[str]:
    if "qualities" in note.extra:  # NSynth
        return [w.replace("_", " ") for w in note.extra["qualities"].split(";") if w]
    return descriptor_words(note.extra)


TEXT_SETS = ("full", "plain")


def build_note_set(notes: list[Note], texts: str = "full") -> NoteSet:
    """Notes with their texts: ``texts`` "full" (``labels.sound_texts``: names, timbre words, descriptions) or
    "plain" (``labels.plain_texts``: names only, the plain recipe's)."""
    words = [note_words(n) for n in notes]
    if texts not in TEXT_SETS:
        raise ValueError(f"unknown text set {texts!r} ({', '.join(TEXT_SETS)})")
    texts = [plain_texts(n.title, n.instrument, n.category) if texts == "plain"
             else sound_texts(n.title, n.instrument, n.category, w) for n, w in zip(notes, words)]
    base, variants = [], {}
    key_to_base: dict[tuple[str, float], int] = {}
    for i, n in enumerate(notes):
        if n.pitch_shift == 0.0:
            key_to_base[(n.patch_id, n.pitch)] = i
            base.append(i)
            variants[i] = [i]
    for i, n in enumerate(notes):
        if n.pitch_shift != 0.0 and (n.patch_id, n.pitch) in key_to_base:
            variants[key_to_base[(n.patch_id, n.pitch)]].append(i)
    return NoteSet(notes, texts, words, base, variants)


def select_notes(notes: list[Note], sources=None, banks=None, pitch_variants: bool = True) -> list[Note]:
    """The notes a run trains and validates on: only these ``sources`` (soundfont or synth names), only these
    ``banks`` (notes with a GM program; others have no bank and are dropped when banks are given), and without the
    pitch-shift variants unless ``pitch_variants``. A source or bank that matches nothing is an error."""
    if sources is not None:
        present = {n.source for n in notes}
        missing = [s for s in sources if s not in present]
        if missing:
            raise DatasetError(f"sources {', '.join(missing)}: not in the data (it has {', '.join(sorted(present))})")
        wanted = set(sources)
        notes = [n for n in notes if n.source in wanted]
    if banks is not None:
        def bank(n):
            b = n.extra.get("bank")
            return int(b) if n.extra.get("program") not in (None, "") and b not in (None, "") else None
        present = {bank(n) for n in notes} - {None}
        missing = [b for b in banks if b not in present]
        if missing:
            raise DatasetError(f"banks {', '.join(map(str, missing))}: no soundfont note in the data has them")
        wanted_banks = set(banks)
        notes = [n for n in notes if bank(n) in wanted_banks]
    if not pitch_variants:
        notes = [n for n in notes if n.pitch_shift == 0.0]
    return notes


def split_validation(notes: list[Note], seed: int, per_family: int = 1,
                     synth_share: float = 0.1) -> tuple[list[int], list[int]]:
    """Indices of training and validation notes (see module docstring).

    Notes with a GM ``program`` (soundfonts): ``per_family`` whole programs per GM family held out across every
    font and bank. Notes without one (synth presets, other folders): a ``synth_share`` of name groups held out per
    source, a name group being the patches whose titles agree once trailing indices are stripped ("Rezo Bass",
    "Rezo Bass 2"), so near-duplicates never straddle the split."""
    from .labels import strip_index

    rng = np.random.default_rng(seed)
    programs = [n.extra.get("program") for n in notes]
    is_val = [False] * len(notes)
    gm = [i for i, p in enumerate(programs) if p not in (None, "")]
    if gm:
        held = set()
        for family in range(len(GM_FAMILIES)):
            held.update(int(p) for p in rng.choice(np.arange(8 * family, 8 * family + 8), per_family, replace=False))
        for i in gm:
            is_val[i] = int(programs[i]) in held
    other = [i for i, p in enumerate(programs) if p in (None, "")]
    if other:
        group_of: dict[str, tuple[str, str]] = {}
        for i in other:
            n = notes[i]
            group_of.setdefault(n.patch_id, (n.source, strip_index(n.title).lower()))
        groups = sorted(set(group_of.values()))
        synth_rng = np.random.default_rng([seed, 1])
        count = max(1, int(round(len(groups) * synth_share)))
        held_groups = {groups[k] for k in synth_rng.choice(len(groups), min(count, len(groups)), replace=False)}
        for i in other:
            is_val[i] = group_of[notes[i].patch_id] in held_groups
    train = [i for i, v in enumerate(is_val) if not v]
    val = [i for i, v in enumerate(is_val) if v]
    if not train or not val:
        raise DatasetError("the split left no training or no validation notes (too few patches)")
    return train, val


def read_nsynth(folder: str | os.PathLike) -> list[Note]:
    """NSynth's json/wav release (``examples.json`` + ``audio/<note_str>.wav``) as patch-folder notes: one patch per
    instrument, category = instrument family, source = acoustic/electronic/synthetic, qualities as timbre words."""
    root = Path(folder)
    meta = root / "examples.json"
    if not meta.is_file():
        raise DatasetError(f"{folder}: no examples.json (not an NSynth json/wav folder)")
    try:
        examples = json.loads(meta.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{meta}: malformed JSON ({err.msg})") from None
    notes = []
    for key, ex in sorted(examples.items()):
        path = root / "audio" / f"{key}.wav"
        if not path.is_file():
            raise DatasetError(f"{meta}: entry {key}: audio file audio/{key}.wav does not exist")
        try:
            notes.append(Note(path, ex["instrument_str"], ex["instrument_str"], ex["instrument_family_str"],
                              float(ex["pitch"]), ex["instrument_family_str"], ex["instrument_source_str"], 0.0,
                              {"qualities": ";".join(ex.get("qualities_str", [])), "velocity": str(ex.get("velocity"))}))
        except KeyError as err:
            raise DatasetError(f"{meta}: entry {key} lacks {err.args[0]}") from None
    if not notes:
        raise DatasetError(f"{meta}: no examples")
    return notes


def read_any(folder) -> list[Note]:
    """A labelled patch folder (metadata.csv) or an NSynth json/wav folder; a list of folders is read as one set
    (patch ids must not repeat across them)."""
    if isinstance(folder, (list, tuple)):
        notes, owner = [], {}
        for f in folder:
            part = read_any(f)
            ids = {n.patch_id for n in part}
            for pid in sorted(ids & set(owner)):
                raise DatasetError(f"{f}: patch id {pid} is also in {owner[pid]} (one patch, one folder)")
            owner.update(dict.fromkeys(ids, str(f)))
            notes += part
        return notes
    if (Path(folder) / "examples.json").exists() and not (Path(folder) / "metadata.csv").exists():
        return read_nsynth(folder)
    return read_patch_folder(folder)


# -- the log-mel cache ---------------------------------------------------------------------------------------------
def mel_cache(notes: list[Note], config: FrontEndConfig, cache_dir: str | os.PathLike, progress: bool = True,
              batch: int = 64) -> np.ndarray:
    """float16 log band-power ``(notes, n_features, frames)``, memory-mapped, built once per (notes, config)."""
    from tqdm import tqdm

    from timbreclip.neural.frontend import load_clips

    key = hashlib.sha256(json.dumps([config.as_dict(), [str(n.path) for n in notes]]).encode()).hexdigest()[:16]
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path, done = folder / f"mels-{key}.f16", folder / f"mels-{key}.done"
    shape = (len(notes), config.n_features, config.n_frames())
    if done.exists():
        return np.memmap(path, dtype=np.float16, mode="r", shape=shape)
    out = np.memmap(path, dtype=np.float16, mode="w+", shape=shape)
    fe = FrontEnd(config)
    for start in tqdm(range(0, len(notes), batch), desc="mel cache", unit="batch", disable=not progress):
        clips = load_clips([n.path for n in notes[start:start + batch]], config.sample_rate, config.window_samples)
        with torch.no_grad():
            logmel = torch.log(fe.project(fe.power(torch.from_numpy(clips))) + LOG_FLOOR)
        out[start:start + len(clips)] = logmel.numpy().astype(np.float16)
    out.flush()
    done.write_text("ok\n")
    return np.memmap(path, dtype=np.float16, mode="r", shape=shape)


# -- augmentation ----------------------------------------------------------------------------------------------------
class RandomEQ:
    """Random EQs as log-gains per mel band (see module docstring): archetypes with their words, and free parametric
    EQs (the steering EQ's band layout) for the direction loss; plus the descriptors a log-mel spectrogram implies."""

    def __init__(self, config: FrontEndConfig) -> None:
        fe = FrontEnd(config)
        self.rate = float(config.sample_rate)
        self.freqs = torch.fft.rfftfreq(config.n_fft, 1.0 / config.sample_rate, dtype=torch.float64)
        self.filters = fe.filters.double() if fe.filters is not None else None
        if self.filters is not None:  # each (unit-area) filter's centre and how many bins of power it stands for
            self.centres = (self.filters @ self.freqs) / self.filters.sum(1)
            self.widths = 1.0 / self.filters.max(1).values
        else:
            self.centres, self.widths = self.freqs, torch.ones_like(self.freqs)

    def _log_gain(self, kinds: list[str], freqs, gains, qs) -> torch.Tensor:
        """Log power gain ``(..., n_features)`` of cascades of ``kinds`` with parameters ``(..., bands)``."""
        codes = torch.tensor([BAND_CODE[k] for k in kinds])
        sos = normalise(rbj_coefficients(codes, torch.as_tensor(freqs, dtype=torch.float64),
                                         torch.as_tensor(gains, dtype=torch.float64),
                                         torch.as_tensor(qs, dtype=torch.float64), self.rate, xp=torch))
        h = cascade_response(sos, self.freqs, self.rate, xp=torch)
        power_gain = h.real**2 + h.imag**2
        if self.filters is not None:
            power_gain = power_gain @ self.filters.T
        return torch.log(power_gain).float()

    def log_gain(self, archetype, rng: np.random.Generator) -> torch.Tensor:
        """``(n_features,)`` log power gain of one random EQ of ``archetype``."""
        bands = []
        for kind, spec in (("low_shelf", archetype.low_shelf), ("high_shelf", archetype.high_shelf)):
            if spec:
                (f_lo, f_hi), (g_lo, g_hi) = spec
                bands.append((kind, float(np.exp(rng.uniform(np.log(f_lo), np.log(f_hi)))), float(rng.uniform(g_lo, g_hi))))
        return self._log_gain([k for k, _, _ in bands], [f for _, f, _ in bands], [g for _, _, g in bands],
                              [0.7071] * len(bands))

    def parametric_log_gain(self, count: int, rng: np.random.Generator, kinds: tuple[str, ...] = PARAMETRIC_BANDS,
                            p_active: float = 0.5, max_gain_db: float = 12.0) -> torch.Tensor:
        """``(count, n_features)`` log power gains of random EQs with the steering EQ's band layout: each band is
        active with probability ``p_active``, gain uniform in +-``max_gain_db``, frequency log-uniform from 30 Hz to
        0.45 x rate, Q log-uniform 0.3..10 (shelves 0.3..2)."""
        n = len(kinds)
        freqs = np.exp(rng.uniform(np.log(30.0), np.log(0.45 * self.rate), (count, n)))
        gains = rng.uniform(-max_gain_db, max_gain_db, (count, n)) * (rng.random((count, n)) < p_active)
        q_hi = np.array([2.0 if k.endswith("shelf") else 10.0 for k in kinds])
        qs = np.exp(rng.uniform(np.log(0.3), np.log(q_hi), (count, n)))
        return self._log_gain(list(kinds), freqs, gains, qs)

    def descriptors(self, logmel: torch.Tensor, cutoff_hz: float = LOW_SHARE_CUTOFF_HZ) -> dict[str, torch.Tensor]:
        """Power-weighted spectral centroid (Hz) and share of power below ``cutoff_hz`` of each clip of a log band
        power spectrogram ``(batch, n_features, frames)``, the band powers weighted by the bins they stand for."""
        power = (torch.exp(logmel.double()) * self.widths[:, None]).sum(-1)
        total = power.sum(-1).clamp(min=1e-30)
        return {"centroid": (power * self.centres).sum(-1) / total,
                "low_share": power[:, self.centres < cutoff_hz].sum(-1) / total}


def random_crop(logmel: torch.Tensor, rng: np.random.Generator, crop_frames: int | None) -> torch.Tensor:
    """A random ``crop_frames``-long excerpt of each clip of ``(batch, features, frames)`` (all of it if shorter)."""
    frames = logmel.shape[-1]
    if not crop_frames or crop_frames >= frames:
        return logmel
    starts = rng.integers(0, frames - crop_frames + 1, size=len(logmel))
    return torch.stack([logmel[i, :, s:s + crop_frames] for i, s in enumerate(starts)])


def augment_batch(logmel: torch.Tensor, texts: list[list[str]], categories: list[str], rng: np.random.Generator,
                  random_eq: RandomEQ,
                  p_eq: float, crop_frames: int | None, freq_masks: int, freq_mask_width: int,
                  mel_roll: int = 0) -> tuple[torch.Tensor, list[list[str]]]:
    """Random crop, random EQ (with its words), mel-bin shift (``mel_roll``: each clip moved up or down by up to
    that many mel bins, a crude pitch shift; the bins it leaves are filled with the clip's lowest value), frequency
    masking; returns standardised features and texts."""
    batch, n_feat, _ = logmel.shape
    logmel = random_crop(logmel, rng, crop_frames)
    if mel_roll:
        for i in range(batch):
            k = int(rng.integers(-mel_roll, mel_roll + 1))
            if k:
                floor = logmel[i].min()
                logmel[i] = torch.roll(logmel[i], k, dims=0)
                logmel[i, slice(0, k) if k > 0 else slice(k, None)] = floor
    texts = [list(t) for t in texts]
    for i in range(batch):
        if rng.random() < p_eq:
            arch = EQ_ARCHETYPES[int(rng.integers(len(EQ_ARCHETYPES)))]
            logmel[i] += random_eq.log_gain(arch, rng)[:, None]
            kept = [t for t in texts[i] if not any(t == w or t.startswith(w + " ") for w in BRIGHTNESS_WORDS)]
            texts[i] = kept + list(arch.words) + [f"{arch.words[0]} {categories[i]}"]
    features = FrontEnd.standardise(logmel)
    for i in range(batch):
        for _ in range(freq_masks):
            width = int(rng.integers(0, freq_mask_width + 1))
            start = int(rng.integers(0, max(1, n_feat - width)))
            features[i, 0, start:start + width, :] = 0.0
    return features, texts
