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
    (``-inf`` for a patch without notes). ``note_patch (M,)`` holds each note's patch index."""
    notes = torch.from_numpy(np.ascontiguousarray(note_emb, dtype=np.float32))
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    patch_index = torch.from_numpy(np.asarray(note_patch, dtype=np.int64))
    best = torch.full((len(q), n_patches), -math.inf)
    for n0 in range(0, len(notes), note_chunk):
        sims = q @ notes[n0:n0 + note_chunk].T
        best.scatter_reduce_(1, patch_index[n0:n0 + note_chunk].expand(len(q), -1), sims, reduce="amax")
    return best


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
