"""Retrieval scoring, once, for search and for evaluation: how a patch (many notes) scores against a query.

- ``patch_scores``: the paper's rule: a patch's similarity is the best over its notes (its distance the minimum).
- ``nearest_pitch_notes``: what a player hears when auditioning at a key: each patch scores by its note nearest
  that pitch.

Embeddings are L2-normalised, so similarity is a dot product.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def patch_scores(queries: np.ndarray, note_emb: np.ndarray, note_patch: np.ndarray, n_patches: int,
                 note_chunk: int = 32768) -> torch.Tensor:
    """``queries (Q, D)`` x ``note_emb (M, D)`` -> ``(Q, n_patches)``: each patch's best note similarity
    (``-inf`` for a patch without notes). ``note_patch (M,)`` holds each note's patch index.

    Where each patch's notes are one contiguous run (as the library and the evaluation store them), the best note
    is a segment maximum over one BLAS product (``np.maximum.reduceat``), queries taken in chunks that keep the
    similarity block near 64 MB; otherwise a scatter-max over note chunks."""
    notes = np.ascontiguousarray(note_emb, dtype=np.float32)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    note_patch = np.asarray(note_patch, dtype=np.int64)
    best = np.full((len(q), n_patches), -np.inf, np.float32)
    if len(notes) == 0 or len(q) == 0:
        return torch.from_numpy(best)
    run_start = np.r_[True, note_patch[1:] != note_patch[:-1]]
    starts = np.flatnonzero(run_start)
    if len(np.unique(note_patch[starts])) == len(starts):  # one run per patch
        ids = note_patch[starts]
        q_chunk = max(1, (1 << 24) // len(notes))
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
    distance = np.abs(np.asarray(note_pitch, np.float64) - pitch)
    distance = np.where(np.isnan(distance), 1e6, distance)
    # sort by (patch, distance, pitch) and keep the first note of each patch
    order = np.lexsort((np.nan_to_num(note_pitch, nan=1e6), distance, note_patch))
    patches = np.asarray(note_patch)[order]
    first = np.ones(len(order), bool)
    first[1:] = patches[1:] != patches[:-1]
    out = np.full(n_patches, -1, np.int64)
    out[patches[first]] = order[first]
    return out
