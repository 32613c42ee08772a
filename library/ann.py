"""An approximate nearest-neighbour index over a large library's notes (faiss IVF with 8-bit scalar quantisation,
inner product), and an exact re-scoring of what it finds.

Exact search is one matrix-vector product over every note: about 5 ms at 160,000 notes here, 35 ms or more at a
million, and it grows with the library. Past ``ANN_MIN_NOTES`` notes, ``PatchSearch`` asks this index for the
``k`` nearest notes: the query is compared with ``NLIST`` cluster centres, the notes of the ``NPROBE`` nearest
clusters are scanned in 8-bit form (a quarter of the memory traffic of float32), and the candidates found are
re-scored exactly against the float32 notes before each patch keeps its best. Measured on a million clustered
synthetic notes (benchmarks/bench_search.py --ann-notes): nprobe 128 -> patch recall@10 0.89, 256 -> 0.95, with 400
candidate notes. An HNSW graph was tried first: it took 257 s to build and gave recall 0.86 at efSearch 2048.

The index is built from the database once per library generation and cached beside the database file
(``library.sqlite.ivf-<generation>-<model>``); any write to the library makes a new generation, so a stale index is
never used. faiss is optional: without it search stays exact.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ANN_MIN_NOTES = 1_000_000
NLIST = 1024  # clusters (k-means on TRAIN_PER_LIST x NLIST notes)
NPROBE = 256
TRAIN_PER_LIST = 64
MIN_CANDIDATES = 400


def available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class NoteANN:
    """IVF-SQ8 over ``note_emb (M, D)`` (unit vectors: inner product = cosine), re-scored exactly on ``note_emb``."""

    def __init__(self, note_emb: np.ndarray, cache_path: str | os.PathLike | None = None,
                 threads: int | None = None, seed: int = 0) -> None:
        import faiss

        if threads:
            faiss.omp_set_num_threads(threads)
        self.note_emb = note_emb
        path = Path(cache_path) if cache_path else None
        if path is not None and path.is_file():
            self.index = faiss.read_index(str(path))
        else:
            dim = note_emb.shape[1]
            nlist = int(min(NLIST, max(1, len(note_emb) // TRAIN_PER_LIST)))
            self.index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, nlist,
                                                       faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            sample = rng.choice(len(note_emb), min(len(note_emb), nlist * TRAIN_PER_LIST), replace=False)
            self.index.train(np.ascontiguousarray(note_emb[np.sort(sample)], dtype=np.float32))
            self.index.add(np.ascontiguousarray(note_emb, dtype=np.float32))
            if path is not None:
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                try:
                    faiss.write_index(self.index, str(tmp))
                    os.replace(tmp, path)
                except (OSError, RuntimeError):
                    tmp.unlink(missing_ok=True)  # a read-only folder: keep the index in memory only
        self.index.nprobe = min(NPROBE, self.index.nlist)

    def nearest_notes(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """About the ``k`` nearest notes to ``query (D,)`` (at least MIN_CANDIDATES are looked at), scored exactly:
        (similarities, note indices), best first."""
        _, ids = self.index.search(np.ascontiguousarray(query[None], dtype=np.float32), max(k, MIN_CANDIDATES))
        ids = ids[0][ids[0] >= 0]
        sims = self.note_emb[ids] @ np.asarray(query, np.float32)
        order = np.argsort(-sims, kind="stable")[:k]
        return sims[order], ids[order]
