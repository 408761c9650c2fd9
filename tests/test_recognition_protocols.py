"""Identification / verification protocols on tiny cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from acfd.recognition.protocols import (
    best_threshold,
    choose_gallery,
    evaluate_embeddings,
    identification,
    roc_auc,
    verification,
    verification_pairs,
)


def _known_rank_case():
    u, v = np.array([0.6, 0.8, 0.0]), np.array([0.6, -0.8, 0.0])  # identity 0: u . v = -0.28
    w = np.array([0.0, 0.0, 1.0])  # identity 1: two identical images
    emb = np.stack([u, v, w, w]).astype(np.float32)
    labels = np.array([0, 0, 1, 1])
    distractor = np.array([[1.0, 0.0, 0.0]], np.float32)  # 0.6 to u and v: beats identity 0's own image
    return emb, labels, distractor


def test_identification_ranks_with_a_distractor() -> None:
    emb, labels, distractor = _known_rank_case()
    res = identification(emb, labels, distractor, seed=3)
    # identity 0's probe: the distractor (0.6) and identity 1's gallery image (0.0) beat its own (-0.28)
    assert res.ranks == [3, 1] and res.num_probes == 2 and res.gallery_size == 3
    assert res.cmc[:4] == [0.5, 0.5, 1.0, 1.0] and len(res.cmc) == 10
    assert identification(emb, labels, None, seed=3).ranks == [2, 1]  # without the distractor


def test_identification_gallery_choice_is_seeded_and_one_per_identity() -> None:
    labels = np.repeat(np.arange(5), 7)
    a, b = choose_gallery(labels, seed=1), choose_gallery(labels, seed=1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(labels[a], np.arange(5))
    assert not np.array_equal(a, choose_gallery(labels, seed=2))


def test_identification_needs_two_images_per_identity() -> None:
    with pytest.raises(ValueError, match="at least 2 images"):
        identification(np.eye(3, dtype=np.float32), np.array([0, 0, 1]))


def test_verification_pairs_are_balanced_distinct_and_seeded() -> None:
    labels = np.repeat(np.arange(4), 10)
    pairs, same = verification_pairs(labels, num_pairs=50, seed=0)
    assert same.sum() == 50 and (~same).sum() == 50
    assert len({tuple(p) for p in pairs}) == 100 and (pairs[:, 0] < pairs[:, 1]).all()
    np.testing.assert_array_equal(labels[pairs[:, 0]] == labels[pairs[:, 1]], same)
    np.testing.assert_array_equal(verification_pairs(labels, 50, seed=0)[0], pairs)
    small, small_same = verification_pairs(np.array([0, 0, 1]), num_pairs=10)  # only 1 positive exists
    assert small_same.sum() == 1 and (~small_same).sum() == 1


def test_roc_auc_and_best_threshold_hand_computed() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    same = np.array([True, False, True, False])
    fpr, tpr, auc = roc_auc(scores, same)
    assert auc == pytest.approx(0.75)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1.0, 1.0])
    t, acc = best_threshold(scores, same)
    assert acc == pytest.approx(0.75) and ((scores >= t) == same).mean() == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5]), np.array([True, False]))[2] == pytest.approx(0.5)  # ties count half


def test_verification_separable_and_random() -> None:
    labels = np.repeat(np.arange(6), 8)
    centres = np.eye(8, dtype=np.float32)[:6]
    perfect = centres[labels]
    res = verification(perfect, labels, num_pairs=100, seed=0)
    assert res.accuracy == 1.0 and res.auc == 1.0 and len(res.fold_accuracies) == 10
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(48, 16)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    rand = verification(noise, labels, num_pairs=200, seed=0)
    assert 0.35 < rand.auc < 0.65 and rand.accuracy < 0.7


def test_report_lines() -> None:
    emb, labels, distractor = _known_rank_case()
    emb, labels = np.concatenate([emb, emb[2:], emb[2:]]), np.array([0, 0, 1, 1, 1, 1, 1, 1])  # 6 images of 1
    lines = evaluate_embeddings(emb, labels, distractor, seed=3, num_pairs=20, model_id="m").summary_lines()
    # 5 of the 6 probes at rank 1, identity 0's at rank 3
    assert lines[0] == "rank1 83.33" and lines[1] == "rank5 100.00" and lines[2] == "rank10 100.00"
    assert lines[3].startswith("verification accuracy ") and lines[4].startswith("AUC ")
