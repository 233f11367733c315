from __future__ import annotations

import numpy as np
import pytest

from models.metrics import ndcg_at_k, recall_at_k, roc_auc


def test_auc_of_perfect_random_and_inverted_scores() -> None:
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(labels, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5


def test_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.random(300), 2)  # rounding creates ties
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert roc_auc(labels, scores) == pytest.approx(pairwise)


def test_auc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_auc(np.ones(3), np.arange(3))


def test_recall_and_ndcg_at_k() -> None:
    ranked = np.array([[1, 2, 3, 4], [4, 3, 2, 1]])
    relevant = [{1, 2}, {1}]
    assert recall_at_k(ranked, relevant, 2) == pytest.approx((1.0 + 0.0) / 2)
    perfect = ndcg_at_k(np.array([[1, 2, 3]]), [{1, 2}], 3)
    worse = ndcg_at_k(np.array([[3, 1, 2]]), [{1, 2}], 3)
    assert perfect == pytest.approx(1.0)
    assert 0 < worse < perfect
