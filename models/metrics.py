"""Quality metrics in plain numpy, so models/ needs no ML-ops dependency."""

from __future__ import annotations

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum statistic, ties averaged."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs both positive and negative labels")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    start = 0
    while start < len(sorted_scores):
        stop = start
        while stop + 1 < len(sorted_scores) and sorted_scores[stop + 1] == sorted_scores[start]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2.0 + 1.0
        start = stop + 1
    rank_sum = ranks[labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def recall_at_k(ranked: np.ndarray, relevant: list[set[int]], k: int) -> float:
    """Mean share of each user's relevant items found in the top ``k``."""
    scores = [
        len(set(row[:k].tolist()) & rel) / min(len(rel), k)
        for row, rel in zip(ranked, relevant, strict=True)
        if rel
    ]
    return float(np.mean(scores))


def ndcg_at_k(ranked: np.ndarray, relevant: list[set[int]], k: int) -> float:
    """Mean normalised discounted cumulative gain with binary relevance."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    scores = []
    for row, rel in zip(ranked, relevant, strict=True):
        if not rel:
            continue
        gains = np.array([1.0 if item in rel else 0.0 for item in row[:k].tolist()])
        ideal = discounts[: min(len(rel), k)].sum()
        scores.append(float((gains * discounts[: len(gains)]).sum() / ideal))
    return float(np.mean(scores))
