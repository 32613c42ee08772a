"""The labelled patch folder format, read by training, evaluation and the patch library.

A folder holds audio files and ``metadata.csv`` with at least the columns ``path, patch_id, title, category,
pitch`` (and, where known, ``instrument, source, velocity``; extra columns are kept):

- ``path``: the audio file, relative to the folder;
- ``patch_id``: unique within the folder; one patch = one preset of one source, with one row per note;
- ``title``: the preset name; ``category``: its family (GM family for soundfonts);
- ``pitch``: MIDI note number; ``instrument``: GM instrument name; ``source``: the soundfont or library.

Rows written by ``timbreclip dataset render`` also carry ``bank, program, pitch_shift`` (semitones of a rendered
pitch-shift augmentation, 0 for the original note) and measured descriptors (``brightness, attack_s, ...``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from timbreclip.dsp.errors import TimbreclipError

REQUIRED = ("path", "patch_id", "title", "category", "pitch")
METADATA = "metadata.csv"


class DatasetError(TimbreclipError):
    """A patch folder that cannot be read; the message names the file and row."""


@dataclass(frozen=True)
class Note:
    """One row of metadata.csv: a single note of one patch."""

    path: Path
    patch_id: str
    title: str
    category: str
    pitch: float
    instrument: str = ""
    source: str = ""
    pitch_shift: float = 0.0
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


def read_patch_folder(folder: str | os.PathLike, check_files: bool = True) -> list[Note]:
    """Read and validate ``folder/metadata.csv``; every problem raises ``DatasetError`` naming file and row."""
    root = Path(folder)
    meta = root / METADATA
    if not root.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    if not meta.exists():
        raise DatasetError(f"{folder}: no {METADATA} (a labelled patch folder needs one; see README)")
    with open(meta, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise DatasetError(f"{meta}: missing required column(s) {', '.join(missing)}")
        notes = []
        for line, row in enumerate(reader, start=2):
            where = f"{meta}, row {line}"
            for column in REQUIRED:
                if not (row.get(column) or "").strip():
                    raise DatasetError(f"{where}: empty {column}")
            try:
                pitch = float(row["pitch"])
                shift = float(row.get("pitch_shift") or 0.0)
            except ValueError:
                raise DatasetError(f"{where}: pitch {row['pitch']!r} is not a MIDI note number") from None
            path = root / row["path"]
            if check_files and not path.is_file():
                raise DatasetError(f"{where}: audio file {row['path']} does not exist")
            known = {"path", "patch_id", "title", "category", "pitch", "instrument", "source", "pitch_shift"}
            notes.append(Note(path, row["patch_id"].strip(), row["title"].strip(), row["category"].strip(), pitch,
                              (row.get("instrument") or "").strip(), (row.get("source") or "").strip(), shift,
                              {k: v for k, v in row.items() if k not in known and k is not None}))
    if not notes:
        raise DatasetError(f"{meta}: no rows (the set is empty)")
    return notes


def write_metadata(folder: str | os.PathLike, rows: list[dict[str, object]]) -> Path:
    """Write ``metadata.csv`` atomically; the columns are the union of the rows' keys, required ones first."""
    root = Path(folder)
    keys: list[str] = list(REQUIRED)
    for row in rows:
        keys += [k for k in row if k not in keys]
    tmp = root / f".{METADATA}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, root / METADATA)
    return root / METADATA
