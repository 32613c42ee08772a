"""Cross-modal retrieval evaluation: the TimbreCLIP paper's Table 1 protocol on any labelled patch folder.

Text -> patch: the queries of a type are the distinct texts of that type (title with trailing indices stripped,
"Pad 2" -> "Pad"; category; "title category"); each patch whose text equals the query is relevant; the score of a
patch is its best note (distance = minimum over the patch's notes). Audio -> text: every note queries the distinct
texts of the type; its own patch's text is the one relevant item.

Metrics, per query then averaged over queries: R@k, the share of the query's relevant items in its top k (the
paper's recall: a perfect category R@1 is far below 100 when a category holds many patches); hit@k, whether any
relevant item is in the top k (what a user feels); the mean rank of the first relevant item. Ties in score are
broken by expected position (an item tied with t others counts t/2 places lower), so identical sounds never
score better than chance between themselves. 95% bootstrap intervals: text -> patch over queries, audio -> text
over patches (a patch's notes resampled together).

The random baseline is the expectation over random rankings, in closed form (the limit of the paper's "mean of 100
runs"): R@k = k/N, hit@k = 1 - C(N-n, k)/C(N, k), first relevant rank (N+1)/(n+1). The perfect row is the best any
embedding can do: 100 except where identical sounds (bit-identical notes, or patches whose notes are all
identical) carry different texts, and below 100 for recall of queries with more than k relevant items.

Bounded memory: similarities are computed in chunks of queries and notes, never whole.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from timbreclip.dsp.errors import TimbreclipError
from timbreclip.dsp.cache import user_cache_dir
from timbreclip.library.scoring import patch_scores
from timbreclip.neural.frontend import load_clips

from .labels import strip_index
from timbreclip.neural.embedder import embed_windows

KS = (1, 5, 10, 50)
CURVE_KS = (1, 2, 5, 10, 20, 50, 100, 200)
QUERY_TYPES = ("title", "title_category", "category")
SECTION_NAMES = {"title": "TITLE", "title_category": "TITLE + CATEGORY", "category": "CATEGORY"}
BOOTSTRAP = 1000

def query_texts(title: str, category: str) -> dict[str, str]:
    t = strip_index(title)
    return {"title": t, "category": category, "title_category": f"{t} {category}"}


# -- ranking helpers ---------------------------------------------------------------------------------------------
def _expected_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Ranks (1 = best) of every column in each row, ties counted at their expected position."""
    sorted_scores, _ = torch.sort(scores, dim=1)
    n = scores.shape[1]
    right = torch.searchsorted(sorted_scores, scores, right=True)
    left = torch.searchsorted(sorted_scores, scores, right=False)
    greater = n - right
    ties = right - left - 1
    return 1.0 + greater.to(torch.float64) + 0.5 * ties.to(torch.float64)


def _metrics_from_ranks(ranks: np.ndarray, ks=KS) -> dict[str, float]:
    """One query's metrics from the ranks of its relevant items."""
    out = {}
    n = len(ranks)
    for k in ks:
        out[f"R@{k}"] = float(np.sum(ranks <= k)) / n
        out[f"hit@{k}"] = float(np.any(ranks <= k))
    out["mean_rank"] = float(ranks.min())
    return out


@dataclass
class QueryResults:
    """Per-query metric values (rows) and the group (bootstrap unit) of each query."""

    values: dict[str, np.ndarray]
    groups: np.ndarray

    def summary(self, rng: np.random.Generator | None = None, n_boot: int = BOOTSTRAP) -> dict[str, object]:
        out: dict[str, object] = {}
        scale = {k: (1.0 if k == "mean_rank" else 100.0) for k in self.values}
        for name, v in self.values.items():
            out[name] = round(float(v.mean()) * scale[name], 3)
        if rng is None:
            return out
        uniq, inverse = np.unique(self.groups, return_inverse=True)
        counts = rng.multinomial(len(uniq), np.full(len(uniq), 1.0 / len(uniq)), size=n_boot)  # (boot, groups)
        # a resampled group brings all its queries: sum per group first, then weight the groups
        per_group_n = np.bincount(inverse, minlength=len(uniq)).astype(np.float64)
        denom = counts @ per_group_n
        for name, v in self.values.items():
            means = (counts @ np.bincount(inverse, weights=v, minlength=len(uniq))) / np.maximum(denom, 1)
            lo, hi = np.percentile(means, [2.5, 97.5]) * scale[name]
            out[f"{name}_ci"] = [round(float(lo), 3), round(float(hi), 3)]
        return out


PAIRED_METRICS = ("R@1", "R@10", "hit@1", "hit@10")


def paired_difference(a: QueryResults, b: QueryResults, rng: np.random.Generator, n_boot: int = BOOTSTRAP,
                      metrics=PAIRED_METRICS) -> dict[str, list[float]]:
    """``b - a`` for two models' results on the same queries: the mean difference and its 95% bootstrap interval,
    both models resampled with the same draws (a paired test: the spread of the queries cancels)."""
    uniq, inverse = np.unique(a.groups, return_inverse=True)
    counts = rng.multinomial(len(uniq), np.full(len(uniq), 1.0 / len(uniq)), size=n_boot)
    denom = np.maximum(counts @ np.bincount(inverse, minlength=len(uniq)).astype(np.float64), 1)
    out = {}
    for name in metrics:
        d = b.values[name] - a.values[name]
        means = (counts @ np.bincount(inverse, weights=d, minlength=len(uniq))) / denom
        lo, hi = np.percentile(means, [2.5, 97.5]) * 100.0
        out[name] = [round(float(d.mean()) * 100.0, 2), round(float(lo), 2), round(float(hi), 2)]
    return out


def text_to_patch(text_emb: np.ndarray, note_emb: np.ndarray, note_patch: np.ndarray, n_patches: int,
                  relevant: list[np.ndarray], query_chunk: int = 256, note_chunk: int = 32768,
                  ks=KS) -> QueryResults:
    """``text_emb (Q, D)``; ``note_emb (M, D)`` with ``note_patch (M,)`` patch indices; ``relevant[q]`` the
    patch indices relevant to query q. Patch score = max over its notes' cosine similarity."""
    rows: dict[str, list[float]] = {}
    for start in range(0, len(text_emb), query_chunk):
        best = patch_scores(text_emb[start:start + query_chunk], note_emb, note_patch, n_patches, note_chunk)
        ranks = _expected_ranks(best).numpy()
        for i in range(len(best)):
            for name, value in _metrics_from_ranks(ranks[i, relevant[start + i]], ks).items():
                rows.setdefault(name, []).append(value)
    return QueryResults({k: np.array(v) for k, v in rows.items()}, np.arange(len(text_emb)))


def audio_to_text(note_emb: np.ndarray, text_emb: np.ndarray, note_text: np.ndarray, note_patch: np.ndarray,
                  chunk: int = 8192, ks=KS) -> QueryResults:
    """Each note (row of ``note_emb``) ranks the texts; ``note_text[i]`` is the index of its relevant text."""
    texts = torch.from_numpy(np.ascontiguousarray(text_emb, dtype=np.float32))
    ranks = np.empty(len(note_emb))
    for start in range(0, len(note_emb), chunk):
        a = torch.from_numpy(np.ascontiguousarray(note_emb[start:start + chunk], dtype=np.float32))
        sims = a @ texts.T
        rel = torch.from_numpy(note_text[start:start + chunk].astype(np.int64))
        s = sims.gather(1, rel[:, None])
        greater = (sims > s).sum(1).to(torch.float64)
        ties = (sims == s).sum(1).to(torch.float64) - 1
        ranks[start:start + chunk] = (1.0 + greater + 0.5 * ties).numpy()
    values = {}
    for k in ks:
        values[f"R@{k}"] = (ranks <= k).astype(np.float64)
        values[f"hit@{k}"] = values[f"R@{k}"]
    values["mean_rank"] = ranks
    return QueryResults(values, note_patch)


# -- baselines -----------------------------------------------------------------------------------------------------
def _hit_probability(n_items: int, n_relevant: int, k: int) -> float:
    """P(at least one of n_relevant in a random top k of n_items)."""
    k = min(k, n_items)
    if n_relevant == 0:
        return 0.0
    if n_items - n_relevant < k:
        return 1.0
    log_none = (math.lgamma(n_items - n_relevant + 1) - math.lgamma(n_items - n_relevant - k + 1)
                - math.lgamma(n_items + 1) + math.lgamma(n_items - k + 1))
    return 1.0 - math.exp(log_none)


def random_baseline(n_items: int, relevant_counts: list[int], ks=KS) -> dict[str, float]:
    """Expected metrics of a random ranking of ``n_items``, averaged over queries with these relevant counts."""
    out = {}
    counts = np.asarray(relevant_counts)
    for k in ks:
        out[f"R@{k}"] = round(100.0 * min(k, n_items) / n_items, 3)
        out[f"hit@{k}"] = round(100.0 * float(np.mean([_hit_probability(n_items, int(n), k) for n in counts])), 3)
    out["mean_rank"] = round(float(np.mean((n_items + 1) / (counts + 1))), 3)
    return out


def sampled_random_baseline(n_items: int, relevant_counts: list[int], runs: int, rng: np.random.Generator,
                            ks=KS) -> dict[str, float]:
    """The same by sampling ``runs`` random rankings per query (only the relevant items' positions are drawn)."""
    acc: dict[str, list[float]] = {}
    for n in relevant_counts:
        for _ in range(runs):
            positions = rng.choice(n_items, size=int(n), replace=False) + 1
            for name, v in _metrics_from_ranks(positions.astype(float), ks).items():
                acc.setdefault(name, []).append(v)
    return {k: float(np.mean(v)) * (1.0 if k == "mean_rank" else 100.0) for k, v in acc.items()}


def _block_metrics(blocks: list[tuple[int, int]], n_relevant: int, ks=KS) -> dict[str, float]:
    """Expected metrics when items come in tied blocks (size, relevant in block), in the given order."""
    out = {}
    for k in ks:
        found, start, hit_missing = 0.0, 0, 1.0
        for size, rel in blocks:
            if start >= k:
                break
            take = min(size, k - start)
            found += rel * take / size
            hit_missing *= 1.0 - _hit_probability(size, rel, take)
            start += size
        out[f"R@{k}"] = found / n_relevant
        out[f"hit@{k}"] = 1.0 - hit_missing
    start = 0
    for size, rel in blocks:
        if rel:
            out["mean_rank"] = start + (size + 1) / (rel + 1)
            break
        start += size
    return out


def perfect_text_to_patch(patch_text: list[str], patch_signature: list[str], ks=KS) -> QueryResults:
    """Best possible text -> patch: relevant patches first; patches with identical sound (same signature) are tied,
    and tied blocks holding relevant and irrelevant patches cost what a random order inside them costs."""
    queries = sorted(set(patch_text))
    by_sig: dict[str, list[str]] = {}
    for text, sig in zip(patch_text, patch_signature):
        by_sig.setdefault(sig, []).append(text)
    rows: dict[str, list[float]] = {}
    for q in queries:
        blocks = []
        for texts in by_sig.values():
            rel = sum(t == q for t in texts)
            if rel:
                blocks.append((len(texts), rel))
        blocks.sort(key=lambda b: -b[1] / b[0])
        n_rel = sum(r for _, r in blocks)
        for name, v in _block_metrics(blocks, n_rel, ks).items():
            rows.setdefault(name, []).append(v)
    return QueryResults({k: np.array(v) for k, v in rows.items()}, np.arange(len(queries)))


def perfect_audio_to_text(note_text: list[str], note_hash: list[str], note_patch: np.ndarray, ks=KS) -> QueryResults:
    """Best possible audio -> text: identical notes get identical rankings, so when they carry g different texts
    those texts share the top g places (most frequent first)."""
    groups: dict[str, list[int]] = {}
    for i, h in enumerate(note_hash):
        groups.setdefault(h, []).append(i)
    ranks = np.empty(len(note_text))
    for members in groups.values():
        counts: dict[str, int] = {}
        for i in members:
            counts[note_text[i]] = counts.get(note_text[i], 0) + 1
        order = {t: r + 1 for r, (t, _) in enumerate(sorted(counts.items(), key=lambda x: -x[1]))}
        for i in members:
            ranks[i] = order[note_text[i]]
    values = {}
    for k in ks:
        values[f"R@{k}"] = (ranks <= k).astype(float)
        values[f"hit@{k}"] = values[f"R@{k}"]
    values["mean_rank"] = ranks
    return QueryResults(values, note_patch)


# -- datasets and models -------------------------------------------------------------------------------------------
@dataclass
class EvalSet:
    """The notes of a patch folder (original pitches only), their patches and query texts."""

    name: str
    paths: list[Path]
    note_patch: np.ndarray  # (notes,) patch index
    patch_ids: list[str]
    patch_texts: dict[str, list[str]]  # query type -> text per patch
    note_hash: list[str]
    fingerprint: str

    @property
    def n_notes(self) -> int:
        return len(self.paths)


def load_eval_set(folder: str | os.PathLike, notes=None) -> EvalSet:
    from timbreclip.library.patchfolder import METADATA, read_patch_folder

    notes = notes if notes is not None else read_patch_folder(folder)
    notes = [n for n in notes if n.pitch_shift == 0.0]
    patch_index: dict[str, int] = {}
    patch_meta: list[tuple[str, str]] = []
    for n in notes:
        if n.patch_id not in patch_index:
            patch_index[n.patch_id] = len(patch_index)
            patch_meta.append((n.title, n.category))
    texts = {t: [query_texts(title, cat)[t] for title, cat in patch_meta] for t in QUERY_TYPES}
    meta_bytes = (Path(folder) / METADATA).read_bytes() if (Path(folder) / METADATA).exists() else b""
    return EvalSet(str(folder), [n.path for n in notes], np.array([patch_index[n.patch_id] for n in notes]),
                   list(patch_index), texts, [], hashlib.sha256(meta_bytes).hexdigest()[:16])


def audio_hashes(clips: np.ndarray) -> list[str]:
    return [hashlib.sha1(c.tobytes()).hexdigest() for c in clips]


def cache_path(model_fingerprint: str, eval_set: EvalSet) -> Path:
    return user_cache_dir("embeddings", f"{model_fingerprint[:16]}-{eval_set.fingerprint}.npy")


def evaluate_embeddings(eval_set: EvalSet, note_emb: np.ndarray, embed_texts, rng=None,
                        ks=KS, raw: dict | None = None) -> dict[str, dict[str, dict]]:
    """Both directions, every query type, for one model's note embeddings; ``embed_texts(list) -> (N, D)``.
    ``raw``: filled with the per-query results ``{(direction, query type): QueryResults}`` (paired comparisons)."""
    row: dict[str, dict[str, dict]] = {"text_to_patch": {}, "audio_to_text": {}}
    for qt in QUERY_TYPES:
        per_patch = eval_set.patch_texts[qt]
        distinct = sorted(set(per_patch))
        index = {t: i for i, t in enumerate(distinct)}
        text_emb = embed_texts(distinct)
        relevant = [[] for _ in distinct]
        for p, t in enumerate(per_patch):
            relevant[index[t]].append(p)
        t2p = text_to_patch(text_emb, note_emb, eval_set.note_patch, len(per_patch),
                            [np.array(r) for r in relevant], ks=ks)
        note_text = np.array([index[per_patch[p]] for p in eval_set.note_patch])
        a2t = audio_to_text(note_emb, text_emb, note_text, eval_set.note_patch, ks=ks)
        row["text_to_patch"][qt] = t2p.summary(rng)
        row["audio_to_text"][qt] = a2t.summary(rng)
        if raw is not None:
            raw[("text_to_patch", qt)], raw[("audio_to_text", qt)] = t2p, a2t
    return row


def baseline_rows(eval_set: EvalSet) -> dict[str, dict]:
    """The random and perfect rows for a set (shared by every model in a run)."""
    random_row: dict[str, dict] = {"text_to_patch": {}, "audio_to_text": {}}
    perfect_row: dict[str, dict] = {"text_to_patch": {}, "audio_to_text": {}}
    n_patches = len(eval_set.patch_ids)
    signatures: dict[int, list[str]] = {}
    for i, p in enumerate(eval_set.note_patch):
        signatures.setdefault(int(p), []).append(eval_set.note_hash[i] if eval_set.note_hash else str(i))
    patch_sig = ["|".join(sorted(signatures.get(p, [str(p)]))) for p in range(n_patches)]
    for qt in QUERY_TYPES:
        per_patch = eval_set.patch_texts[qt]
        distinct = sorted(set(per_patch))
        counts = [per_patch.count(t) for t in distinct]
        random_row["text_to_patch"][qt] = random_baseline(n_patches, counts)
        random_row["audio_to_text"][qt] = random_baseline(len(distinct), [1] * eval_set.n_notes)
        perfect_row["text_to_patch"][qt] = perfect_text_to_patch(per_patch, patch_sig).summary()
        note_texts = [per_patch[p] for p in eval_set.note_patch]
        hashes = eval_set.note_hash or [str(i) for i in range(eval_set.n_notes)]
        perfect_row["audio_to_text"][qt] = perfect_audio_to_text(note_texts, hashes, eval_set.note_patch).summary()
    return {"random": random_row, "perfect": perfect_row}


# -- reports -------------------------------------------------------------------------------------------------------
def markdown_table(report: dict) -> str:
    """The report laid out like the paper's Table 1: sections by query type, rows models / random / perfect,
    column groups text-to-patch and audio-to-text (R@1, R@5, R@10, R@50 in %, mean rank of the first relevant)."""
    cols = ["R@1", "R@5", "R@10", "R@50", "mean_rank"]
    head = ("| model | " + " | ".join(f"T→P {c}" for c in cols) + " | " + " | ".join(f"A→T {c}" for c in cols)
            + " |")
    sep = "|---" * (1 + 2 * len(cols)) + "|"
    lines = [f"Dataset: {report['dataset']} ({report['patches']} patches, {report['notes']} notes)", ""]
    for qt in QUERY_TYPES:
        lines += [f"**{SECTION_NAMES[qt]}**", "", head, sep]
        for name, row in report["rows"].items():
            cells = [f"{row[d][qt][c]:.3f}" if c != "mean_rank" else f"{row[d][qt][c]:.1f}"
                     for d in ("text_to_patch", "audio_to_text") for c in cols]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    for pair, diffs in report.get("differences", {}).items():
        lines += [f"**PAIRED DIFFERENCES** {pair} (points, 95% paired bootstrap interval)", "",
                  "| direction | query | " + " | ".join(PAIRED_METRICS) + " |", "|---|---|" + "---|" * len(PAIRED_METRICS)]
        for direction, per in diffs.items():
            for qt, d in per.items():
                cells = [f"{v[0]:+.1f} ({v[1]:+.1f} to {v[2]:+.1f})" for v in (d[m] for m in PAIRED_METRICS)]
                lines.append(f"| {direction.replace('_', ' ')} | {SECTION_NAMES[qt].lower()} | " + " | ".join(cells) + " |")
        lines.append("")
    plain = {n: r for n, r in report.get("plain_language", {}).items() if r.get("queries")}
    if plain:
        lines += ["**PLAIN-LANGUAGE QUERIES** (training/queries/plain_language.json; text -> patch)", "",
                  "| model | queries | hit@10 | P@10 | P@10 random |", "|---|---|---|---|---|"]
        for name, r in plain.items():
            lines.append(f"| {name} | {r['queries']} | {r['hit@10']:.1f} | {r['P@10']:.1f} | {r['P@10_random']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def plot_curves(curves: dict[str, dict[str, dict[str, list[float]]]], path: str | os.PathLike) -> None:
    """R@k curves: one panel per (direction, query type), one line per model."""
    from matplotlib.figure import Figure  # its own Agg canvas: no pyplot, no global backend switch

    fig = Figure(figsize=(13, 7))
    axes = fig.subplots(2, 3, sharex=True)
    for r, direction in enumerate(("text_to_patch", "audio_to_text")):
        for c, qt in enumerate(QUERY_TYPES):
            ax = axes[r, c]
            for model, per in curves.items():
                ax.semilogx(CURVE_KS, per[direction][qt], marker="o", ms=3, label=model)
            ax.set_title(f"{direction.replace('_', ' ')} — {SECTION_NAMES[qt].lower()}", fontsize=9)
            ax.set_xlabel("k")
            ax.set_ylabel("R@k (%)")
            ax.grid(True, alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def curve_values(row: dict) -> dict[str, dict[str, list[float]]]:
    return {d: {qt: [row[d][qt][f"R@{k}"] for k in CURVE_KS] for qt in QUERY_TYPES} for d in row}


def training_split(model) -> tuple[int, int, float]:
    """The (seed, programs per family, synth share) a model's trainer held validation out with, from its
    provenance (a fine-tuned model's own training config, else its starting model's); the trainer's defaults
    (0, 1, 0.1) for a model that carries none."""
    config = getattr(model, "config", None) or getattr(getattr(model, "model", None), "config", None)
    provenance = getattr(config, "provenance", {}) or {}
    while provenance:
        trained = provenance.get("training", {}).get("config", {})
        if "seed" in trained:
            return (int(trained["seed"]), int(trained.get("val_programs_per_family", 1)),
                    float(trained.get("val_synth_share", 0.1)))
        provenance = provenance.get("init_model", {})
    return 0, 1, 0.1


# -- plain-language queries (training/queries/plain_language.json) ------------------------------------------------
PLAIN_LANGUAGE = Path(__file__).parent / "queries" / "plain_language.json"


def plain_language_relevance(notes, patch_ids: list[str], path=PLAIN_LANGUAGE) -> list[tuple[str, np.ndarray]]:
    """``[(query, relevant patch indices)]`` for the queries with at least one relevant patch among ``patch_ids``:
    a soundfont patch is relevant by its GM program, a WhySynth patch by its category, another synth patch by its
    (name-inferred) GM family."""
    doc = json.loads(Path(path).read_text())
    first = {}
    for n in notes:
        first.setdefault(n.patch_id, n)
    out = []
    for q in doc["queries"]:
        programs, families, why = set(q["programs"]), set(q["families"]), set(q["whysynth"])
        relevant = []
        for k, pid in enumerate(patch_ids):
            n = first[pid]
            program = n.extra.get("program")
            if program not in (None, ""):
                hit = int(program) in programs
            elif n.source == "whysynth":
                hit = n.category in why
            else:
                hit = n.category in families
            if hit:
                relevant.append(k)
        if relevant:
            out.append((q["query"], np.array(relevant)))
    return out


def plain_language_scores(queries: list[tuple[str, np.ndarray]], note_emb: np.ndarray, note_patch: np.ndarray,
                          n_patches: int, embed_texts, k: int = 10) -> dict:
    """hit@k and precision@k of each plain-language query (text -> patch, a patch scored by its best note)."""
    if not queries:
        return {"queries": 0}
    scores = patch_scores(embed_texts([q for q, _ in queries]), note_emb, note_patch, n_patches).numpy()
    rows = {}
    for (query, relevant), s in zip(queries, scores):
        top = np.argsort(-s, kind="stable")[:k]
        found = np.isin(top, relevant)
        rows[query] = {"hit": bool(found.any()), "precision": float(found.mean()), "relevant": int(len(relevant))}
    chance = float(np.mean([len(r) / n_patches for _, r in queries]))
    return {"queries": len(rows), f"hit@{k}": round(100 * np.mean([r["hit"] for r in rows.values()]), 1),
            f"P@{k}": round(100 * np.mean([r["precision"] for r in rows.values()]), 1),
            f"P@{k}_random": round(100 * chance, 1), "per_query": rows}


def evaluate_models(folder: str | os.PathLike, models: dict[str, object], json_out=None, markdown_out=None,
                    plot_out=None, seed: int = 0, use_cache: bool = True, progress: bool = False,
                    split: str = "all") -> dict:
    """Evaluate several models on one folder; they share the data, the random and the perfect rows.

    ``split="validation"`` keeps only the training split's held-out programs (as the trainer holds them out)."""
    from .data import read_any, split_validation

    notes = read_any(folder)
    if isinstance(folder, (list, tuple)):
        folder = folder[0] if len(folder) == 1 else "+".join(map(str, folder))
    if split == "validation":
        splits = {name: training_split(model) for name, model in models.items()}
        if len(set(splits.values())) > 1:
            raise TimbreclipError("--split validation: the models were trained with different validation splits "
                                  f"({', '.join(f'{n}: seed {s[0]}, {s[1]} per family, synth share {s[2]}' for n, s in splits.items())}); "
                                  "evaluate them separately")
        seed, per_family, share = next(iter(splits.values()))
        _, val = split_validation(notes, seed=seed, per_family=per_family, synth_share=share)
        notes = [notes[i] for i in val]
    eval_set = load_eval_set(folder, notes)
    plain = plain_language_relevance([n for n in notes if n.pitch_shift == 0.0], eval_set.patch_ids)
    if split != "all":
        eval_set.name = f"{folder} ({split})"
        eval_set.fingerprint += f"-{split}"
    first = next(iter(models.values()))
    rate, samples = first.config.frontend.sample_rate, first.config.frontend.window_samples
    clips = load_clips(eval_set.paths, rate, samples)
    eval_set.note_hash = audio_hashes(clips)
    report = {"dataset": eval_set.name, "patches": len(eval_set.patch_ids), "notes": eval_set.n_notes, "rows": {}}
    raw_results: dict[str, dict] = {}
    curves = {}
    for name, model in models.items():
        fe = model.config.frontend
        model_clips = clips if (fe.sample_rate, fe.window_samples) == (rate, samples) else load_clips(
            eval_set.paths, fe.sample_rate, fe.window_samples)
        fingerprint = model.fingerprint() if hasattr(model, "fingerprint") else name
        cached = cache_path(fingerprint, eval_set)
        if use_cache and cached.exists():
            note_emb = np.load(cached)
        else:
            note_emb = embed_windows(model, model_clips)
            if use_cache:
                cached.parent.mkdir(parents=True, exist_ok=True)
                np.save(cached, note_emb)
        raw_results[name] = {}
        report["rows"][name] = evaluate_embeddings(eval_set, note_emb, model.embed_text,
                                                   rng=np.random.default_rng(seed), raw=raw_results[name])
        report.setdefault("plain_language", {})[name] = plain_language_scores(
            plain, note_emb, eval_set.note_patch, len(eval_set.patch_ids), model.embed_text)
        if plot_out:
            curves[name] = curve_values(evaluate_embeddings(eval_set, note_emb, model.embed_text, ks=CURVE_KS))
    names = list(raw_results)
    if len(names) > 1:  # every later model against the first, paired
        report["differences"] = {}
        for other in names[1:]:
            diffs: dict[str, dict] = {"text_to_patch": {}, "audio_to_text": {}}
            for (direction, qt), first in raw_results[names[0]].items():
                diffs[direction][qt] = paired_difference(first, raw_results[other][(direction, qt)],
                                                         np.random.default_rng(seed))
            report["differences"][f"{other} - {names[0]}"] = diffs
    report["rows"].update(baseline_rows(eval_set))
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2) + "\n")
    if markdown_out:
        Path(markdown_out).write_text(markdown_table(report) + "\n")
    if plot_out:
        plot_curves(curves, plot_out)
    return report


WORD_PAIRS = (("bright", "dark"), ("percussive", "soft attack"), ("sustained", "decaying"),
              ("short release", "long release"))


def timbre_word_accuracy(note_emb: np.ndarray, note_words: list[list[str]], embed_texts) -> dict[str, dict]:
    """Audio -> text accuracy on derived timbre words: for each note carrying one word of a pair, is its similarity
    to that word higher than to the opposite one? Returns ``{pair: {"accuracy": %, "notes": n}}``."""
    words = sorted({w for pair in WORD_PAIRS for w in pair})
    emb = dict(zip(words, embed_texts(words)))
    out = {}
    for a, b in WORD_PAIRS:
        correct, total = 0, 0
        for z, ws in zip(note_emb, note_words):
            if (a in ws) == (b in ws):
                continue
            want, other = (a, b) if a in ws else (b, a)
            correct += int(z @ emb[want] > z @ emb[other])
            total += 1
        out[f"{a}/{b}"] = {"accuracy": round(100.0 * correct / total, 2) if total else None, "notes": total}
    return out
