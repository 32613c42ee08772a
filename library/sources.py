"""Filling the library: soundfonts, folders of samples and labelled patch folders, turned into embedded patches.

- A soundfont (.sf2/.sf3): every melodic preset rendered at the index pitches (the training renderer's 16 notes or
  ``pitches``) at the model's rate, mono, then embedded. Rendering runs in ``processes`` processes.
- A folder of samples (one-shots in wav/flac/aiff/mp3/ogg, any rate): one patch per file; the title from the file
  name, the category from the folder it sits in (the folders above it become tags); the pitch from a note name in
  the file name ("Bass_A#1.wav", "pluck-C4.flac") or else estimated from the audio (YIN), or none for unpitched
  sounds.
- A labelled patch folder (``metadata.csv``): imported with its labels, one note per row.

Incremental: a source whose content hash (a soundfont's bytes; a folder's file names, sizes and times and its
metadata) is unchanged since it was added, with the same model, is skipped without rendering anything. A missing,
truncated or corrupt file is named and skipped; the rest goes on, and the report says what was skipped.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from timbreclip.dsp.errors import TimbreclipError

from .db import Library, PatchRecord

SOUNDFONT_EXTENSIONS = (".sf2", ".sf3")
SAMPLE_EXTENSIONS = (".wav", ".flac", ".aif", ".aiff", ".mp3", ".ogg")
INSTALLED_DIRS = ("/usr/share/sounds/sf2", "/usr/share/sounds/sf3", "~/.local/share/soundfonts")
_NOTE_NAME = re.compile(r"(?:^|[^A-Za-z0-9])([A-Ga-g])([#sb]?)(-?[0-8])(?=$|[^A-Za-z0-9#])")
_SEMITONE = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}


@dataclass
class SourceReport:
    path: str
    kind: str
    status: str  # "added", "unchanged", "skipped"
    patches: int = 0
    notes: int = 0
    skipped: list[str] = field(default_factory=list)  # "file: why" for files left out (unreadable, broken)
    error: str | None = None
    silent: list[str] = field(default_factory=list)  # presets that made no sound at any index pitch (not errors)


def discover_installed(extra_dirs: list[str] | None = None) -> list[str]:
    """The soundfonts the system has: /usr/share/sounds/sf2 and sf3, ~/.local/share/soundfonts, ``extra_dirs``."""
    found = []
    for folder in list(INSTALLED_DIRS) + list(extra_dirs or []):
        root = Path(os.path.expanduser(folder))
        if root.is_dir():
            found += [str(p.resolve()) for p in sorted(root.rglob("*")) if p.suffix.lower() in SOUNDFONT_EXTENSIONS
                      and p.is_file()]
    return sorted(set(found))


def source_kind(path: str) -> str:
    p = Path(path)
    if p.is_file() and p.suffix.lower() in SOUNDFONT_EXTENSIONS:
        return "soundfont"
    if p.is_dir():
        return "patch_folder" if (p / "metadata.csv").is_file() else "samples"
    if p.is_file():
        raise TimbreclipError(f"{path}: not a soundfont (.sf2/.sf3) or a folder of samples")
    raise TimbreclipError(f"{path}: no such file or folder")


def _sample_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SAMPLE_EXTENSIONS
                  and not p.name.startswith("."))


def content_hash(path: str, kind: str) -> str:
    h = hashlib.sha256()
    p = Path(path)
    if kind == "soundfont":
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    files = _sample_files(p) + ([p / "metadata.csv"] if kind == "patch_folder" else [])
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    if kind == "patch_folder":
        h.update((p / "metadata.csv").read_bytes())
    return h.hexdigest()


def pitch_from_name(name: str) -> float | None:
    """A MIDI note from a note name in a file name (C4 = 60; "#"/"s" sharp, "b" flat), or None."""
    matches = _NOTE_NAME.findall(Path(name).stem)
    if not matches:
        return None
    letter, accidental, octave = matches[-1]
    semitone = _SEMITONE[letter.lower()] + (1 if accidental in ("#", "s") else -1 if accidental == "b" else 0)
    return float(12 * (int(octave) + 1) + semitone)


def title_from_name(name: str) -> str:
    return re.sub(r"[_]+", " ", Path(name).stem).strip() or Path(name).stem


# -- rendering (runs in worker processes for soundfonts) ---------------------------------------------------------
def _render_job(job: tuple) -> tuple:
    font, bank, program, pitches, rate = job
    from .soundfont import render_index_notes

    try:
        return bank, program, render_index_notes(font, bank, program, pitches, sample_rate=rate), None
    except Exception as err:  # a preset the synth cannot play is named, not fatal
        return bank, program, [], f"{type(err).__name__}: {err}"


def _clips(notes: list[np.ndarray], samples: int) -> np.ndarray:
    out = np.zeros((len(notes), samples), np.float32)
    for i, x in enumerate(notes):
        out[i, : min(samples, len(x))] = x[:samples]
    return out


def _soundfont_patches(path: str, embed, frontend, pitches, processes: int, progress: bool):
    from multiprocessing import get_context

    from tqdm import tqdm

    from .gm import GM_INSTRUMENTS, gm_family
    from .soundfont import list_presets, preset_title

    presets = list_presets(path)
    if not presets:
        raise TimbreclipError(f"{path}: no melodic presets")
    jobs = [(path, p.bank, p.program, tuple(pitches), frontend.sample_rate) for p in presets]
    by_key = {(p.bank, p.program): p for p in presets}
    bar = tqdm(total=len(jobs), unit="preset", desc=Path(path).name, disable=not progress, leave=False)
    rendered, skipped, silent = [], [], []
    if processes > 1 and len(jobs) > 1:
        with get_context("spawn").Pool(processes) as pool:
            for result in pool.imap(_render_job, jobs, chunksize=2):
                rendered.append(result)
                bar.update()
    else:
        for job in jobs:
            rendered.append(_render_job(job))
            bar.update()
    bar.close()
    patches = []
    for bank, program, notes, error in rendered:
        preset = by_key[(bank, program)]
        if error:
            skipped.append(f"preset {bank}:{program} {preset.name!r}: {error}")
            continue
        if not notes:
            silent.append(f"preset {bank}:{program} {preset.name!r}")
            continue
        emb = embed(_clips([a for _, a in notes], frontend.window_samples))
        patches.append(PatchRecord(title=preset_title(preset), category=gm_family(program),
                                   instrument=GM_INSTRUMENTS[program], tags=[], bank=bank, program=program,
                                   notes=[(float(p), e) for (p, _), e in zip(notes, emb)]))
    return patches, skipped, silent


def _sample_patches(path: str, embed, frontend, progress: bool):
    from tqdm import tqdm

    from timbreclip.dsp.audio_io import read_audio
    from timbreclip.dsp.descriptors import estimate_pitch_midi, peak_dbfs
    from timbreclip.neural.frontend import prepare_audio

    root = Path(path)
    files = _sample_files(root)
    patches, skipped = [], []
    for f in tqdm(files, unit="file", desc=root.name, disable=not progress, leave=False):
        rel = f.relative_to(root)
        try:
            audio, rate = read_audio(f, max_seconds=frontend.window_samples / frontend.sample_rate + 0.1)
            if audio.shape[-1] < 0.02 * rate:
                raise TimbreclipError("too short (under 20 ms)")
            if peak_dbfs(audio) < -80:
                raise TimbreclipError("silent")
            window = prepare_audio(audio, rate, frontend)[:1]
        except Exception as err:
            skipped.append(f"{rel}: {str(err).split(': ', 1)[-1] if isinstance(err, TimbreclipError) else err}")
            continue
        pitch = pitch_from_name(f.name)
        if pitch is None:
            pitch = estimate_pitch_midi(audio, rate)
        stat = f.stat()
        folders = list(rel.parent.parts)
        patches.append(PatchRecord(title=title_from_name(f.name), category=folders[-1] if folders else "",
                                   tags=folders[:-1], file=str(rel),
                                   content_hash=f"{stat.st_size}:{stat.st_mtime_ns}",
                                   notes=[(None if pitch is None else round(float(pitch), 2), embed(window)[0])]))
    if files and not patches:
        raise TimbreclipError(f"{path}: none of its {len(files)} audio files could be read")
    if not files:
        raise TimbreclipError(f"{path}: no audio files ({', '.join(SAMPLE_EXTENSIONS)}) in it")
    return patches, skipped


def _patch_folder_patches(path: str, embed, frontend, progress: bool):
    from tqdm import tqdm

    from timbreclip.dsp.audio_io import read_audio
    from timbreclip.neural.frontend import prepare_audio

    from .patchfolder import read_patch_folder

    notes = read_patch_folder(path, check_files=False)
    grouped: dict[str, list] = {}
    for n in notes:
        grouped.setdefault(n.patch_id, []).append(n)
    patches, skipped = [], []
    for patch_id, members in tqdm(grouped.items(), unit="patch", desc=Path(path).name, disable=not progress,
                                  leave=False):
        windows, pitches = [], []
        for n in members:
            try:
                audio, rate = read_audio(n.path, max_seconds=frontend.window_samples / frontend.sample_rate + 0.1)
                windows.append(prepare_audio(audio, rate, frontend)[0])
                pitches.append(float(n.pitch))
            except Exception as err:
                skipped.append(f"{Path(n.path).name}: {str(err).split(': ', 1)[-1]}")
        if not windows:
            continue
        emb = embed(np.stack(windows))
        first = members[0]
        patches.append(PatchRecord(title=first.title, category=first.category,
                                   instrument=getattr(first, "instrument", "") or "", tags=[], file=patch_id,
                                   notes=list(zip(pitches, emb))))
    return patches, skipped


def add_sources(library: Library, paths: list[str], embedder, fingerprint: str, frontend, pitches=None,
                processes: int = 2, progress: bool = True, force: bool = False,
                on_report=None) -> list[SourceReport]:
    """Add (or refresh) each source; unchanged ones are skipped unless ``force``. One transaction per source;
    ``on_report(report)`` is called as each source is done (committed, skipped or unchanged)."""
    from timbreclip.neural.embedder import embed_windows

    from .soundfont import PITCHES

    pitches = tuple(PITCHES if pitches is None else pitches)

    def embed(clips: np.ndarray) -> np.ndarray:
        return embed_windows(embedder, np.ascontiguousarray(clips, np.float32))

    reports: list[SourceReport] = []

    def done(report: SourceReport) -> None:
        reports.append(report)
        if on_report is not None:
            on_report(report)

    for raw in paths:
        try:
            kind = source_kind(raw)
        except TimbreclipError as err:
            done(SourceReport(str(raw), "?", "skipped", error=str(err)))
            continue
        path = str(Path(raw).resolve())
        try:
            digest = content_hash(path, kind)
            have = library.source(path)
            if have and have["content_hash"] == digest and library.model_fingerprint() == fingerprint and not force:
                done(SourceReport(path, kind, "unchanged"))
                continue
            silent: list[str] = []
            if kind == "soundfont":
                patches, skipped, silent = _soundfont_patches(path, embed, frontend, pitches, processes, progress)
            elif kind == "samples":
                patches, skipped = _sample_patches(path, embed, frontend, progress)
            else:
                patches, skipped = _patch_folder_patches(path, embed, frontend, progress)
        except TimbreclipError as err:
            done(SourceReport(path, kind, "skipped", error=str(err)))
            continue
        except OSError as err:
            done(SourceReport(path, kind, "skipped", error=f"{path}: {err.strerror or err}"))
            continue
        name = Path(path).stem if kind == "soundfont" else Path(path).name
        library.replace_source(path, kind, name, digest, patches, fingerprint, skipped)
        done(SourceReport(path, kind, "added", len(patches), sum(len(p.notes) for p in patches), skipped,
                                    silent=silent))
    return reports
