"""Detection metrics on target and non-target scores, exact on the empirical ROC.

The EER is where the miss and false-alarm rates cross, interpolated linearly between the two adjacent
operating points, not read off a threshold grid.
"""
from __future__ import annotations

import numpy as np


class EvaluationError(ValueError):
    """Input that cannot be evaluated; ``str()`` is one line naming the file or option at fault."""


def _check_scores(target: np.ndarray, nontarget: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    target = np.asarray(target, dtype=np.float64).ravel()
    nontarget = np.asarray(nontarget, dtype=np.float64).ravel()
    if target.size == 0 or nontarget.size == 0:
        raise EvaluationError(
            f"need both target and non-target trials (got {target.size} target, {nontarget.size} non-target)"
        )
    if not (np.all(np.isfinite(target)) and np.all(np.isfinite(nontarget))):
        raise EvaluationError("scores contain NaN or infinite values")
    return target, nontarget


def operating_points(target: np.ndarray, nontarget: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct operating point of the rule "accept when score >= threshold".

    Returns ``(p_fa, p_miss, thresholds)`` with one entry per distinct score plus a final
    reject-everything point (threshold +inf). ``p_fa`` falls from 1 to 0 and ``p_miss`` rises from 0 to 1;
    tied target and non-target scores move both at once, which is what interpolation then follows.
    """
    target, nontarget = _check_scores(target, nontarget)
    scores = np.concatenate([target, nontarget])
    is_target = np.concatenate([np.ones(target.size), np.zeros(nontarget.size)])
    order = np.argsort(scores, kind="mergesort")
    scores, is_target = scores[order], is_target[order]
    thresholds, first = np.unique(scores, return_index=True)
    targets_below = np.concatenate([[0.0], np.cumsum(is_target)])[first]
    nontargets_below = first - targets_below
    p_miss = np.append(targets_below / target.size, 1.0)
    p_fa = np.append(1.0 - nontargets_below / nontarget.size, 0.0)
    return p_fa, p_miss, np.append(thresholds, np.inf)


def equal_error_rate(target: np.ndarray, nontarget: np.ndarray) -> tuple[float, float]:
    """``(eer, threshold)``: where p_miss = p_fa on the ROC, linearly interpolated between the two
    adjacent operating points (the threshold is interpolated the same way)."""
    p_fa, p_miss, thresholds = operating_points(target, nontarget)
    difference = p_miss - p_fa  # rises from -1 to +1
    k = int(np.argmax(difference >= 0.0))
    if k == 0:
        return float(p_fa[0]), float(thresholds[0])
    d0, d1 = difference[k - 1], difference[k]
    weight = d0 / (d0 - d1) if d1 != d0 else 0.0
    eer = p_fa[k - 1] + weight * (p_fa[k] - p_fa[k - 1])
    low, high = thresholds[k - 1], thresholds[k]
    threshold = low + weight * (high - low) if np.isfinite(high) else low
    return float(eer), float(threshold)


def min_dcf(
    target: np.ndarray, nontarget: np.ndarray, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> tuple[float, float]:
    """``(min_dcf, threshold)``: the detection cost ``c_miss p_target P_miss + c_fa (1 - p_target) P_fa``
    minimised over thresholds and normalised by the cost of the better trivial system, so 1.0 means
    "no better than always accepting or always rejecting"."""
    if not 0.0 < p_target < 1.0:
        raise EvaluationError(f"p_target must be in (0, 1), got {p_target}")
    p_fa, p_miss, thresholds = operating_points(target, nontarget)
    cost = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    best = int(np.argmin(cost))
    return float(cost[best] / min(c_miss * p_target, c_fa * (1.0 - p_target))), float(thresholds[best])


def cosine_scores(embeddings: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine similarity of ``embeddings[first[k]]`` and ``embeddings[second[k]]`` for every trial k."""
    vectors = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.maximum(norms, 1e-12)
    return np.einsum("ij,ij->i", unit[first], unit[second])
