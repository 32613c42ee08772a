"""Search the patch library: by words, by example, by example moved toward words, at the pitch being played.

A query becomes one embedding: the text's (``"warm evolving pad"``), an example's (``like=FILE``), or the example
moved toward words as the text-steered EQ does it: ``normalise(source_weight x z_example + sum_i w_i x z_word_i)``.
Patches then score by their best note (the paper's min-over-notes distance), or with ``pitch`` by their note nearest
that pitch (what a player hears when auditioning at that key); both rules live in ``scoring.py``, shared with the
evaluation. ``tag`` runs the other way: audio -> words (categories, instruments, timbre words) with scores.

The index is the library's notes in memory (float32), reloaded when the library changes. At 10,000 patches x 16
notes a query is one matrix-vector product and a segment maximum (benchmarks/bench_search.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from timbreclip.dsp.errors import TimbreclipError

from .db import Library, NoteIndex
from .scoring import few_query_blas, nearest_pitch_notes, patch_runs, patch_scores

NEAREST_CACHE = 8  # pitches whose chosen notes' embeddings stay gathered (the browser plays a few keys again and again)
TIMBRE_WORDS = ("bright", "dark", "warm", "thin", "airy", "punchy", "percussive", "soft attack", "sustained",
                "decaying", "short release", "long release", "noisy", "muffled", "crisp", "bass-heavy", "boomy")


@dataclass
class Query:
    text: str | None = None
    like: str | None = None
    prompts: dict[str, float] | None = None  # words to move an example toward (with like)
    source_weight: float = 0.5


def _normalise(z: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(z))
    if n == 0:
        raise TimbreclipError("the query has no direction (every weight is 0)")
    return z / n


class PatchSearch:
    """Search over one library with one embedder (the library's model; checked)."""

    def __init__(self, library: Library, embedder, fingerprint: str, ann_min_notes: int | None = None) -> None:
        from .ann import ANN_MIN_NOTES

        library.check_model(fingerprint)
        self.library = library
        self.embedder = embedder
        self.ann_min_notes = ANN_MIN_NOTES if ann_min_notes is None else ann_min_notes
        self._ann = None
        self._generation = -1
        self.index: NoteIndex | None = None
        self.refresh()

    def refresh(self) -> None:
        generation = self.library.generation()
        if generation != self._generation:
            self.index = self.library.note_index()
            self._generation = generation
            index = self.index
            self._n = len(index.patches)
            # notes come sorted by patch: each patch's notes are one contiguous run
            self._starts = np.searchsorted(index.note_patch, np.arange(self._n + 1))
            self._runs = patch_runs(index.note_patch)
            self._nearest: dict[float, tuple[np.ndarray, np.ndarray | None]] = {}
            self._ann = None

    def _nearest_at(self, key: float) -> tuple[np.ndarray, np.ndarray | None]:
        """Each patch's note nearest pitch ``key`` (remembered for every pitch asked), and, from the second time a
        pitch is asked, those notes' embeddings gathered into one block (kept for the NEAREST_CACHE most recent
        pitches: a block is patches x dim floats)."""
        entry = self._nearest.pop(key, None)
        if entry is None:
            nearest = nearest_pitch_notes(self.index.note_patch, self.index.note_pitch, key, self._n)
            entry = (nearest, None)
        elif entry[1] is None:
            entry = (entry[0], np.ascontiguousarray(self.index.note_emb[entry[0][entry[0] >= 0]]))
        self._nearest[key] = entry  # most recent last
        gathered = [k for k, v in self._nearest.items() if v[1] is not None]
        for old in gathered[:-NEAREST_CACHE]:
            self._nearest[old] = (self._nearest[old][0], None)
        return entry

    def _ann_ready(self) -> bool:
        from . import ann

        if self._ann is None and ann.available():
            cache = f"{self.library.path}.ivf-{self._generation}-{self.index.fingerprint[:12]}"
            self._ann = ann.NoteANN(self.index.note_emb, cache)
        return self._ann is not None

    def query_vector(self, query: Query) -> np.ndarray:
        if query.like:
            from timbreclip.dsp.audio_io import read_audio

            audio, rate = read_audio(query.like, max_seconds=60)
            z = self.embedder.embed_audio(audio, rate)
            if query.prompts:
                words = self.embedder.embed_text(list(query.prompts))
                weights = np.array(list(query.prompts.values()), np.float32)
                z = _normalise(query.source_weight * z + (weights[:, None] * words).sum(0))
            return np.asarray(z, np.float32)
        if not query.text:
            raise TimbreclipError("give words to search for, or an example with --like FILE")
        return np.asarray(self.embedder.embed_text([query.text])[0], np.float32)

    def rank(self, z: np.ndarray, top: int = 10, pitch: float | None = None, category: str | None = None,
             source: str | None = None, keep=None) -> list[dict]:
        """The ``top`` patches for query embedding ``z`` (see module docstring); ``keep(patch) -> bool`` filters."""
        self.refresh()
        index = self.index
        if not index.patches:
            return []
        approximate = (pitch is None and not (category or source or keep)
                       and len(index.note_emb) >= self.ann_min_notes and self._ann_ready())
        if approximate:  # the nearest notes from the IVF index, scored exactly; each patch keeps its best
            # the top patches' best notes lie among the (most notes a patch has x top) best notes overall
            sims, ids = self._ann.nearest_notes(z, max(1, int(np.diff(self._starts).max())) * top)
            patches = index.note_patch[ids]
            first = np.unique(patches, return_index=True)[1]
            scores = np.full(self._n, -np.inf, np.float32)
            scores[patches[first]] = sims[first]
            chosen = None
        elif pitch is None:
            scores = patch_scores(z[None], index.note_emb, index.note_patch, self._n, runs=self._runs)[0].numpy()
            chosen = None
        else:
            key = round(float(pitch), 2)
            chosen, chosen_emb = self._nearest_at(key)
            scores = np.full(self._n, -np.inf, np.float32)
            with few_query_blas(1):
                if chosen_emb is not None:  # a pitch asked for before: its notes gathered, a product over them
                    scores[chosen >= 0] = chosen_emb @ z
                else:  # a new pitch: a product over every note, then each patch's chosen one
                    scores[chosen >= 0] = (index.note_emb @ z)[chosen[chosen >= 0]]
        mask = np.isfinite(scores)
        if category:
            wanted = category.lower()
            mask &= np.array([wanted in (p["category"] or "").lower() for p in index.patches])
        if source:
            wanted = source.lower()
            mask &= np.array([wanted in p["source"].lower() or wanted in p["source_path"].lower()
                              for p in index.patches])
        if keep is not None:
            mask &= np.array([bool(keep(p)) for p in index.patches])
        candidates = np.nonzero(mask)[0]
        if len(candidates) > 4 * top:  # the top by partition first (ties at the cut all kept), then an exact sort
            cut = np.partition(scores[candidates], len(candidates) - top)[len(candidates) - top]
            candidates = candidates[scores[candidates] >= cut]
        order = candidates[np.lexsort((candidates, -scores[candidates]))][:top]
        out = []
        for rank, i in enumerate(order, start=1):
            p = index.patches[i]
            if chosen is None:  # the patch's best note, for the pitch it was found at
                s0, s1 = self._starts[i], self._starts[i + 1]
                note = s0 + int(np.argmax(index.note_emb[s0:s1] @ z))
            else:
                note = chosen[i]
            note_pitch = index.note_pitch[note]
            out.append({"rank": rank, "patch_id": int(p["id"]), "title": p["title"], "category": p["category"],
                        "source": p["source"], "score": round(float(scores[i]), 6),
                        "pitch": None if np.isnan(note_pitch) else float(note_pitch), "key": p["key"]})
        return out

    def search(self, query: Query, top: int = 10, pitch: float | None = None, category: str | None = None,
               source: str | None = None) -> list[dict]:
        return self.rank(self.query_vector(query), top, pitch, category, source)

    def tag(self, audio_path: str, top: int = 10) -> list[dict]:
        """Audio -> words: the library's categories, GM instrument names and timbre words, by similarity."""
        from timbreclip.dsp.audio_io import read_audio

        from .gm import GM_FAMILIES, GM_INSTRUMENTS

        self.refresh()
        words: dict[str, str] = {}
        for p in self.index.patches:
            if p["category"]:
                words.setdefault(p["category"], "category")
        for w in GM_FAMILIES:
            words.setdefault(w, "category")
        for w in GM_INSTRUMENTS:
            words.setdefault(w, "instrument")
        for w in TIMBRE_WORDS:
            words.setdefault(w, "timbre")
        texts = list(words)
        audio, rate = read_audio(audio_path, max_seconds=60)
        z = np.asarray(self.embedder.embed_audio(audio, rate), np.float32)
        sims = np.asarray(self.embedder.embed_text(texts), np.float32) @ z
        order = np.argsort(-sims, kind="stable")[:top]
        return [{"rank": r, "word": texts[i], "kind": words[texts[i]], "score": round(float(sims[i]), 6)}
                for r, i in enumerate(order, start=1)]
