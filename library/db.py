"""The patch database: one SQLite file (WAL) holding every source, patch and note embedding, favourites and history.

- Default location: ``$TIMBRECLIP_LIBRARY``, else ``$XDG_DATA_HOME/timbreclip/library.sqlite`` (usually
  ``~/.local/share/timbreclip/library.sqlite``); every command takes ``--db PATH``.
- Schema versioned (``PRAGMA user_version``) with forward migrations applied on open, in one transaction.
- Embeddings are float16 blobs, one per note, tagged with the model's fingerprint. A library is embedded by one
  model: opening it for search with another is refused with a message saying how to re-embed; it is never mixed.
- Writes are one transaction per source (``replace_source``): rendering and embedding happen before it, so a crash
  or Ctrl-C mid-build leaves the library exactly as it was before that source.
- A corrupt or foreign file is detected on open (integrity check) and named; nothing is overwritten. A database
  locked by another writer is waited for (``timeout_s``), then reported.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from timbreclip.dsp.errors import TimbreclipError

SCHEMA_VERSION = 1
LOCK_TIMEOUT_S = 10.0

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
        """CREATE TABLE sources (
            id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, name TEXT NOT NULL,
            content_hash TEXT NOT NULL, added_at REAL NOT NULL, skipped TEXT NOT NULL DEFAULT '[]')""",
        """CREATE TABLE patches (
            id INTEGER PRIMARY KEY, source_id INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
            title TEXT NOT NULL, category TEXT NOT NULL DEFAULT '', instrument TEXT NOT NULL DEFAULT '',
            tags TEXT NOT NULL DEFAULT '[]', bank INTEGER, program INTEGER, file TEXT,
            content_hash TEXT NOT NULL DEFAULT '')""",
        """CREATE INDEX patches_source ON patches(source_id)""",
        """CREATE TABLE embedding_sets (
            id INTEGER PRIMARY KEY, model_fingerprint TEXT NOT NULL UNIQUE, dim INTEGER NOT NULL,
            created REAL NOT NULL)""",
        """CREATE TABLE notes (
            id INTEGER PRIMARY KEY, patch_id INTEGER NOT NULL REFERENCES patches(id) ON DELETE CASCADE,
            pitch REAL, set_id INTEGER NOT NULL REFERENCES embedding_sets(id), embedding BLOB NOT NULL)""",
        """CREATE INDEX notes_patch ON notes(patch_id)""",
        """CREATE TABLE favourites (
            patch_key TEXT PRIMARY KEY, added_at REAL NOT NULL)""",
        """CREATE TABLE history (
            id INTEGER PRIMARY KEY, patch_key TEXT NOT NULL, at REAL NOT NULL, query TEXT NOT NULL DEFAULT '')""",
    ),
}


class LibraryError(TimbreclipError):
    """A missing, corrupt, locked or mismatched library."""


def default_library_path() -> Path:
    env = os.environ.get("TIMBRECLIP_LIBRARY")
    if env:
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "timbreclip" / "library.sqlite"


@dataclass
class PatchRecord:
    """A patch ready to store: labels plus its notes ``[(pitch or None, embedding (dim,) float32)]``."""

    title: str
    category: str = ""
    instrument: str = ""
    tags: list[str] = field(default_factory=list)
    bank: int | None = None
    program: int | None = None
    file: str | None = None
    content_hash: str = ""
    notes: list[tuple[float | None, np.ndarray]] = field(default_factory=list)


@dataclass
class NoteIndex:
    """Everything search needs, in memory: note embeddings and their patches."""

    fingerprint: str
    note_emb: np.ndarray  # (M, D) float32
    note_patch: np.ndarray  # (M,) index into patches
    note_pitch: np.ndarray  # (M,) float (NaN: unpitched)
    patches: list[dict]  # id, title, category, instrument, tags, source, source_path, kind, bank, program, file, key


def patch_key(source_path: str, bank, program, file) -> str:
    """A patch's identity across re-adds of its source (favourites and history survive a rebuild)."""
    return f"{source_path}|{bank if bank is not None else ''}|{program if program is not None else ''}|{file or ''}"


class Library:
    """The patch database at ``path`` (see module docstring). ``create=False`` refuses a missing file."""

    def __init__(self, path: str | os.PathLike | None = None, create: bool = True,
                 timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.path = Path(path) if path is not None else default_library_path()
        if self.path.is_dir():
            raise LibraryError(f"{self.path}: is a folder, not a library file")
        if not self.path.exists():
            if not create:
                raise LibraryError(f"{self.path}: no library here yet; fill one with `timbreclip library add "
                                   f"--installed` (or add soundfonts and sample folders by path)")
            if path is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            elif not self.path.parent.is_dir():
                raise LibraryError(f"{self.path}: folder {self.path.parent} does not exist")
        self.timeout_s = timeout_s
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            check = self.conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise LibraryError(f"{self.path}: corrupt library (integrity check: {check}); it was left as it is")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self._migrate()
        except sqlite3.OperationalError as err:
            self._close_quietly()
            if "locked" in str(err) or "busy" in str(err):
                raise LibraryError(f"{self.path}: locked by another process for {timeout_s:g} s; try again when "
                                   "it is done") from None
            raise LibraryError(f"{self.path}: cannot open the library ({err})") from None
        except sqlite3.DatabaseError as err:
            self._close_quietly()
            raise LibraryError(f"{self.path}: not a timbreclip library or corrupt ({err}); it was left as it "
                               "is") from None

    def _close_quietly(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- schema -------------------------------------------------------------------------------------------------
    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LibraryError(f"{self.path}: made by a newer timbreclip (schema {version}, this one knows "
                               f"{SCHEMA_VERSION}); it was left as it is")
        if version == SCHEMA_VERSION:
            return
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version == 0 and tables:
            raise LibraryError(f"{self.path}: an SQLite file, but not a timbreclip library; it was left as it is")
        with self._transaction():
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[v]:
                    self.conn.execute(statement)
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._set_meta("created", str(time.time()))

    def _transaction(self):
        conn, path, timeout_s = self.conn, self.path, self.timeout_s

        class _Tx:
            def __enter__(self_inner):
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as err:
                    if "locked" in str(err) or "busy" in str(err):
                        raise LibraryError(f"{path}: locked by another process for {timeout_s:g} s; try again "
                                           "when it is done") from None
                    raise

            def __exit__(self_inner, exc_type, exc, tb):
                conn.execute("ROLLBACK" if exc_type else "COMMIT")
                return False

        return _Tx()

    def _set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                          "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    # -- models -------------------------------------------------------------------------------------------------
    def model_fingerprint(self) -> str | None:
        return self.meta("model_fingerprint")

    def check_model(self, fingerprint: str) -> None:
        """Refuse a model other than the one the library was embedded with."""
        have = self.model_fingerprint()
        if have is not None and have != fingerprint and self.note_count():
            raise LibraryError(f"{self.path}: embedded with another model ({have[:23]}..., this one is "
                               f"{fingerprint[:23]}...); re-embed it with `timbreclip library reembed --db "
                               f"{self.path}` (and the --model you want), or use the model it was built with")

    # -- sources ------------------------------------------------------------------------------------------------
    def sources(self) -> list[dict]:
        rows = self.conn.execute(
            "SELECT s.*, (SELECT COUNT(*) FROM patches p WHERE p.source_id=s.id) AS patches, "
            "(SELECT COUNT(*) FROM notes n JOIN patches p ON n.patch_id=p.id WHERE p.source_id=s.id) AS notes "
            "FROM sources s ORDER BY s.name").fetchall()
        return [{**dict(r), "skipped": json.loads(r["skipped"])} for r in rows]

    def source(self, path: str) -> dict | None:
        row = self.conn.execute("SELECT * FROM sources WHERE path=?", (str(path),)).fetchone()
        return None if row is None else dict(row)

    def replace_source(self, path: str, kind: str, name: str, content_hash: str, patches: list[PatchRecord],
                       fingerprint: str, skipped: list[str] | None = None) -> int:
        """Store ``patches`` as the whole content of source ``path``, atomically (one transaction)."""
        dims = {int(e.shape[-1]) for p in patches for _, e in p.notes}
        if len(dims) > 1:
            raise ValueError(f"embeddings of several sizes: {sorted(dims)}")
        with self._transaction():
            have = self.model_fingerprint()
            if have is not None and have != fingerprint and self.note_count():
                raise LibraryError(f"{self.path}: embedded with another model; re-embed it first "
                                   "(`timbreclip library reembed`)")
            self._set_meta("model_fingerprint", fingerprint)
            dim = dims.pop() if dims else 0
            self.conn.execute("INSERT OR IGNORE INTO embedding_sets(model_fingerprint, dim, created) VALUES (?,?,?)",
                              (fingerprint, dim, time.time()))
            set_id = self.conn.execute("SELECT id FROM embedding_sets WHERE model_fingerprint=?",
                                       (fingerprint,)).fetchone()[0]
            self.conn.execute("DELETE FROM sources WHERE path=?", (str(path),))  # cascades to patches and notes
            cur = self.conn.execute(
                "INSERT INTO sources(path, kind, name, content_hash, added_at, skipped) VALUES (?,?,?,?,?,?)",
                (str(path), kind, name, content_hash, time.time(), json.dumps(skipped or [])))
            source_id = cur.lastrowid
            for p in patches:
                pid = self.conn.execute(
                    "INSERT INTO patches(source_id, title, category, instrument, tags, bank, program, file, "
                    "content_hash) VALUES (?,?,?,?,?,?,?,?,?)",
                    (source_id, p.title, p.category, p.instrument, json.dumps(p.tags), p.bank, p.program, p.file,
                     p.content_hash)).lastrowid
                self.conn.executemany(
                    "INSERT INTO notes(patch_id, pitch, set_id, embedding) VALUES (?,?,?,?)",
                    [(pid, None if pitch is None else float(pitch), set_id,
                      np.asarray(e, np.float16).tobytes()) for pitch, e in p.notes])
            self._bump_generation()
        return source_id

    def remove_source(self, what: str) -> dict:
        """Remove a source by its path (or its name when that is unique)."""
        row = self.source(str(what)) or self.source(str(Path(what).resolve()))
        if row is None:
            named = self.conn.execute("SELECT * FROM sources WHERE name=?", (str(what),)).fetchall()
            if len(named) > 1:
                raise LibraryError(f"{what}: several sources have that name; give its path "
                                   f"({', '.join(r['path'] for r in named)})")
            row = dict(named[0]) if named else None
        if row is None:
            raise LibraryError(f"{what}: no such source in {self.path} (see `timbreclip library list`)")
        with self._transaction():
            self.conn.execute("DELETE FROM sources WHERE id=?", (row["id"],))
            self._bump_generation()
        return row

    def _bump_generation(self) -> None:
        self._set_meta("generation", str(int(self.meta("generation") or 0) + 1))

    def note_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM notes").fetchone()[0]

    def stats(self) -> dict:
        c = self.conn
        return {
            "path": str(self.path),
            "schema_version": SCHEMA_VERSION,
            "sources": c.execute("SELECT COUNT(*) FROM sources").fetchone()[0],
            "patches": c.execute("SELECT COUNT(*) FROM patches").fetchone()[0],
            "notes": self.note_count(),
            "model_fingerprint": self.model_fingerprint(),
            "favourites": c.execute("SELECT COUNT(*) FROM favourites").fetchone()[0],
            "categories": {r[0] or "(none)": r[1] for r in c.execute(
                "SELECT category, COUNT(*) FROM patches GROUP BY category ORDER BY COUNT(*) DESC")},
            "bytes": self.path.stat().st_size if self.path.exists() else 0,
        }

    # -- search index ---------------------------------------------------------------------------------------------
    def note_index(self) -> NoteIndex:
        """Every note embedding of the library's model, with its patch, in memory."""
        fingerprint = self.model_fingerprint() or ""
        patches = [dict(r) for r in self.conn.execute(
            "SELECT p.id, p.title, p.category, p.instrument, p.tags, p.bank, p.program, p.file, s.name AS source, "
            "s.path AS source_path, s.kind FROM patches p JOIN sources s ON p.source_id=s.id ORDER BY p.id")]
        position = {p["id"]: i for i, p in enumerate(patches)}
        for p in patches:
            p["tags"] = json.loads(p["tags"])
            p["key"] = patch_key(p["source_path"], p["bank"], p["program"], p["file"])
        rows = self.conn.execute("SELECT patch_id, pitch, embedding FROM notes ORDER BY patch_id, pitch").fetchall()
        dim = len(rows[0][2]) // 2 if rows else 0
        emb = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float16).reshape(len(rows), dim) \
            if rows else np.zeros((0, 0), np.float16)
        note_patch = np.array([position[r[0]] for r in rows], np.int64)
        note_pitch = np.array([np.nan if r[1] is None else r[1] for r in rows], np.float64)
        return NoteIndex(fingerprint, emb.astype(np.float32), note_patch, note_pitch, patches)

    def generation(self) -> int:
        return int(self.meta("generation") or 0)

    def search(self, text: str | None = None, *, embedder, fingerprint: str | None = None, like: str | None = None,
               prompts: dict[str, float] | None = None, source_weight: float = 0.5, top: int = 10,
               pitch: float | None = None, category: str | None = None, source: str | None = None) -> list[dict]:
        """``timbreclip search`` as a call: a list of ``{"rank", "patch_id", "title", "category", "source",
        "score", "pitch", "key"}`` (see ``search.py``). ``fingerprint`` defaults to the embedder model's."""
        from .search import PatchSearch, Query

        if fingerprint is None:
            model = embedder if hasattr(embedder, "fingerprint") else getattr(embedder, "model", None)
            fingerprint = model.fingerprint()
        searcher = PatchSearch(self, embedder, fingerprint)
        return searcher.search(Query(text, like, prompts, source_weight), top, pitch, category, source)

    # -- favourites and history ---------------------------------------------------------------------------------
    def set_favourite(self, key: str, on: bool = True) -> None:
        with self._transaction():
            if on:
                self.conn.execute("INSERT OR IGNORE INTO favourites(patch_key, added_at) VALUES (?, ?)",
                                  (key, time.time()))
            else:
                self.conn.execute("DELETE FROM favourites WHERE patch_key=?", (key,))

    def favourites(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT patch_key FROM favourites")}

    def add_history(self, key: str, query: str = "") -> None:
        with self._transaction():
            self.conn.execute("INSERT INTO history(patch_key, at, query) VALUES (?, ?, ?)", (key, time.time(), query))

    def history(self, limit: int = 50) -> list[dict]:
        return [dict(r) for r in self.conn.execute(
            "SELECT patch_key, at, query FROM history ORDER BY id DESC LIMIT ?", (limit,))]
