"""Retrieval scoring, once, for search and for evaluation: how a patch (many notes) scores against a query.

- ``patch_scores``: the paper's rule: a patch's similarity is the best over its notes (its distance the minimum).
- ``nearest_pitch_notes``: what a player hears when auditioning at a key: each patch scores by its note nearest
  that pitch.

Embeddings are L2-normalised, so similarity is a dot product.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch


_BLAS = None


def few_query_blas(n_queries: int):
    """A context for numpy products with few queries: one BLAS thread. A matrix-vector product is bound by memory
    bandwidth, so a second thread gains nothing, and OpenBLAS's threads keep spinning after the call, taking the
    cores from the torch text tower that embeds the next query (measured: a search p95 of 104 ms with two threads,
    17 ms with one, on 2 cores). Many queries (evaluation) keep every thread."""
    global _BLAS
    if n_queries > 8:
        return contextlib.nullcontext()
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def patch_runs(note_patch: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(starts, patch ids)`` of the runs of equal patch indices, or None when a patch has more than one run."""
    note_patch = np.asarray(note_patch, dtype=np.int64)
    if len(note_patch) == 0:
        return None
    starts = np.flatnonzero(np.r_[True, note_patch[1:] != note_patch[:-1]])
    ids = note_patch[starts]
    return (starts, ids) if len(np.unique(ids)) == len(ids) else None


def patch_scores(queries: np.ndarray, note_emb: np.ndarray, note_patch: np.ndarray, n_patches: int,
                 note_chunk: int = 32768, runs: tuple[np.ndarray, np.ndarray] | None = None) -> torch.Tensor:
    """``queries (Q, D)`` x ``note_emb (M, D)`` -> ``(Q, n_patches)``: each patch's best note similarity
    (``-inf`` for a patch without notes). ``note_patch (M,)`` holds each note's patch index.

    Where each patch's notes are one contiguous run (as the library and the evaluation store them), the best note
    is a segment maximum over one BLAS product (``np.maximum.reduceat``), queries taken in chunks that keep the
    similarity block near 64 MB; otherwise a scatter-max over note chunks. ``runs``: ``patch_runs(note_patch)``,
    for a caller that scores the same notes again and again."""
    notes = np.ascontiguousarray(note_emb, dtype=np.float32)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    note_patch = np.asarray(note_patch, dtype=np.int64)
    best = np.full((len(q), n_patches), -np.inf, np.float32)
    if len(notes) == 0 or len(q) == 0:
        return torch.from_numpy(best)
    runs = runs if runs is not None else patch_runs(note_patch)
    if runs is not None:  # one run per patch
        starts, ids = runs
        q_chunk = max(1, (1 << 24) // len(notes))
        with few_query_blas(len(q)):
            for q0 in range(0, len(q), q_chunk):
                sims = q[q0:q0 + q_chunk] @ notes.T
                best[q0:q0 + q_chunk, ids] = np.maximum.reduceat(sims, starts, axis=1)
        return torch.from_numpy(best)
    tnotes, tq, patch_index = torch.from_numpy(notes), torch.from_numpy(q), torch.from_numpy(note_patch)
    out = torch.from_numpy(best)
    for n0 in range(0, len(tnotes), note_chunk):
        sims = tq @ tnotes[n0:n0 + note_chunk].T
        out.scatter_reduce_(1, patch_index[n0:n0 + note_chunk].expand(len(tq), -1), sims, reduce="amax")
    return out


def nearest_pitch_notes(note_patch: np.ndarray, note_pitch: np.ndarray, pitch: float, n_patches: int) -> np.ndarray:
    """For every patch, the index of its note nearest ``pitch`` (ties: the lower note); -1 for a patch without a
    pitched note. Notes without a pitch (NaN) are used only by patches that have nothing else."""
    note_patch = np.asarray(note_patch, np.int64)
    note_pitch = np.asarray(note_pitch, np.float64)
    distance = np.abs(note_pitch - pitch)
    distance = np.where(np.isnan(distance), 1e6, distance)
    out = np.full(n_patches, -1, np.int64)
    if len(note_patch) == 0:
        return out
    run_start = np.r_[True, note_patch[1:] != note_patch[:-1]]
    starts = np.flatnonzero(run_start)
    ordered = np.all(np.diff(np.nan_to_num(note_pitch, nan=1e6))[~run_start[1:]] >= 0)
    if ordered and len(np.unique(note_patch[starts])) == len(starts):
        # the library's layout: each patch one run, its notes by rising pitch (unpitched last): the first note at
        # the run's smallest distance is the nearest, the lower one on a tie
        nearest = np.minimum.reduceat(distance, starts)
        run = np.cumsum(run_start) - 1
        hits = np.flatnonzero(distance == nearest[run])
        first = hits[np.r_[True, run[hits][1:] != run[hits][:-1]]]
        out[note_patch[first]] = first
        return out
    # any layout: sort by (patch, distance, pitch) and keep the first note of each patch
    order = np.lexsort((np.nan_to_num(note_pitch, nan=1e6), distance, note_patch))
    patches = note_patch[order]
    first = np.ones(len(order), bool)
    first[1:] = patches[1:] != patches[:-1]
    out[patches[first]] = order[first]
    return out
