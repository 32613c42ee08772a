"""Evaluation speed: the full Table-1 protocol on 10,000 patches x 16 notes (synthetic embeddings), excluding the
first embedding pass. Goal: under two minutes on this machine, memory bounded by chunking.

    python benchmarks/bench_evaluation.py [--patches 10000] [--notes-per-patch 16] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from timbreclip.training.evaluation import EvalSet, evaluate_embeddings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=10000)
    ap.add_argument("--notes-per-patch", type=int, default=16)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n_notes = args.patches * args.notes_per_patch
    titles = [f"patch {i // 2}" if i % 5 else f"patch {i}" for i in range(args.patches)]  # some titles repeat
    categories = [f"category {i % 31}" for i in range(args.patches)]
    texts = {"title": titles, "category": categories, "title_category": [f"{t} {c}" for t, c in zip(titles, categories)]}
    note_patch = np.repeat(np.arange(args.patches), args.notes_per_patch)
    note_emb = rng.standard_normal((n_notes, args.dim)).astype(np.float32)
    note_emb /= np.linalg.norm(note_emb, axis=1, keepdims=True)
    table: dict[str, np.ndarray] = {}

    def embed_texts(batch):
        out = np.empty((len(batch), args.dim), np.float32)
        for i, t in enumerate(batch):
            if t not in table:
                v = rng.standard_normal(args.dim).astype(np.float32)
                table[t] = v / np.linalg.norm(v)
            out[i] = table[t]
        return out

    eval_set = EvalSet("synthetic", [None] * n_notes, note_patch, [str(i) for i in range(args.patches)], texts, [], "x")
    for qt in texts:  # text embeddings are cached by the model in real runs: fill the table first
        embed_texts(sorted(set(texts[qt])))
    t0 = time.perf_counter()
    evaluate_embeddings(eval_set, note_emb, embed_texts, rng=np.random.default_rng(0))
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {"patches": args.patches, "notes": n_notes, "distinct_titles": len(set(titles)), "seconds": round(seconds, 1),
              "peak_rss_mb": round(peak_mb), "goal_under_120_s": seconds < 120}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.patches} patches x {args.notes_per_patch} notes ({len(set(titles))} distinct titles): "
              f"{seconds:.1f} s for both directions, 3 query types, with bootstrap intervals; peak RSS {peak_mb:.0f} MB"
              f" -> goal (< 120 s) {'met' if seconds < 120 else 'NOT met'}")


if __name__ == "__main__":
    main()
