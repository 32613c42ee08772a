"""Retrieval metrics against hand-worked cases, the random baseline against its closed form, perfect rows."""

import numpy as np
import pytest

from timbreclip.training.evaluation import (_expected_ranks, audio_to_text, perfect_audio_to_text,
                                            perfect_text_to_patch, random_baseline, sampled_random_baseline,
                                            strip_index, text_to_patch)
import torch


def test_strip_index():
    assert strip_index("Pad 1") == strip_index("Pad 2") == "Pad"
    assert strip_index("Lead 1 (square)") == "Lead 1 (square)"
    assert strip_index("909") == "909"


def test_ties_count_at_expected_position():
    ranks = _expected_ranks(torch.tensor([[0.9, 0.5, 0.5, 0.1]])).numpy()[0]
    np.testing.assert_allclose(ranks, [1.0, 2.5, 2.5, 4.0])


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_text_to_patch_hand_case():
    # 3 patches, 2 notes each (2-d embeddings); the patch score is its best note
    notes = _unit([[1, 0], [0, 1], [0.8, 0.6], [-1, 0], [0.6, 0.8], [0, -1]])
    note_patch = np.array([0, 0, 1, 1, 2, 2])
    query = _unit([[1, 0.1]])
    # query 0 relevant to patches {1, 2}: best notes -> patch 0: ~0.995, patch 1: ~0.85, patch 2: ~0.68
    res = text_to_patch(query, notes, note_patch, 3, [np.array([1, 2])], ks=(1, 2, 3))
    v = {k: float(a[0]) for k, a in res.values.items()}
    assert v["R@1"] == 0.0 and v["R@2"] == 0.5 and v["R@3"] == 1.0
    assert v["hit@1"] == 0.0 and v["hit@2"] == 1.0
    assert v["mean_rank"] == 2.0


def test_audio_to_text_hand_case_with_duplicates():
    texts = _unit([[1, 0], [0, 1], [-1, 0]])
    notes = _unit([[1, 0.2], [0.1, 1], [0.2, 1]])
    res = audio_to_text(notes, texts, np.array([0, 0, 1]), np.array([0, 1, 1]), ks=(1, 2))
    np.testing.assert_allclose(res.values["R@1"], [1, 0, 1])
    np.testing.assert_allclose(res.values["mean_rank"], [1, 2, 1])
    assert res.summary()["R@1"] == pytest.approx(66.667, abs=1e-3)


def test_random_baseline_matches_sampling():
    rng = np.random.default_rng(0)
    closed = random_baseline(40, [1, 3, 10])
    sampled = sampled_random_baseline(40, [1, 3, 10], runs=4000, rng=rng)
    for key in ("R@1", "R@5", "R@10", "hit@5", "hit@10"):
        assert sampled[key] == pytest.approx(closed[key], abs=1.0), key
    assert sampled["mean_rank"] == pytest.approx(closed["mean_rank"], rel=0.03)
    assert closed["R@50"] == 100.0  # k beyond the list


def test_perfect_rows():
    # 4 patches: two titled "Pad" (one relevant block), categories repeat
    res = perfect_text_to_patch(["Pad", "Pad", "Lead", "Bass"], ["a", "b", "c", "d"])
    s = res.summary()
    assert s["R@1"] == pytest.approx(100 * (0.5 + 1 + 1) / 3, abs=1e-3) and s["hit@1"] == 100.0
    # two patches with identical sound but different titles tie: the best ranking is a coin toss between them
    tied = perfect_text_to_patch(["Pad", "Strings"], ["same", "same"]).summary()
    assert tied["R@1"] == pytest.approx(50.0) and tied["mean_rank"] == pytest.approx(1.5)
    a2t = perfect_audio_to_text(["Pad", "Strings", "Lead"], ["h1", "h1", "h2"], np.array([0, 1, 2])).summary()
    assert a2t["R@1"] == pytest.approx(100 * 2 / 3, abs=1e-3) and a2t["R@5"] == 100.0


def test_bootstrap_interval_brackets_the_mean():
    res = audio_to_text(_unit(np.random.default_rng(1).standard_normal((60, 8))),
                        _unit(np.random.default_rng(2).standard_normal((5, 8))),
                        np.random.default_rng(3).integers(0, 5, 60), np.repeat(np.arange(20), 3), ks=(1,))
    s = res.summary(np.random.default_rng(0))
    lo, hi = s["R@1_ci"]
    assert lo <= s["R@1"] <= hi and hi > lo


def test_paired_difference_is_tighter_than_the_two_intervals_and_centred():
    from timbreclip.training.evaluation import QueryResults, paired_difference

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 2)
    base = (rng.random(80) < 0.4).astype(float)
    better = np.maximum(base, (rng.random(80) < 0.15).astype(float))  # the same queries, a few more hits
    a = QueryResults({m: base for m in ("R@1", "R@10", "hit@1", "hit@10")}, groups)
    b = QueryResults({m: better for m in ("R@1", "R@10", "hit@1", "hit@10")}, groups)
    d = paired_difference(a, b, np.random.default_rng(1))["hit@1"]
    assert d[0] == pytest.approx(100 * (better - base).mean(), abs=0.01) and d[1] <= d[0] <= d[2]
    assert d[1] >= 0  # never worse on any query: the paired interval cannot go below zero
    sa, sb = a.summary(np.random.default_rng(1)), b.summary(np.random.default_rng(1))
    assert d[2] - d[1] < (sa["hit@1_ci"][1] - sa["hit@1_ci"][0])  # pairing removes the queries' own spread
    assert paired_difference(a, a, np.random.default_rng(1))["R@1"] == [0.0, 0.0, 0.0]
