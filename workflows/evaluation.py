"""Binary-classifier metrics on a holdout: ROC AUC, average precision, log loss, curves.

Written on numpy (scikit-learn is not a dependency); the definitions are scikit-learn's:
AUC with tied scores counted half, average precision as the step-wise area under the PR curve.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

Array = npt.NDArray[np.float64]
_EPS = 1e-15


@dataclass(frozen=True)
class Metrics:
    auc: float | None  # None when the holdout has only one class
    pr_auc: float | None  # average precision
    logloss: float
    rows: int
    positives: int

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def evaluate(labels: npt.ArrayLike, scores: npt.ArrayLike) -> Metrics:
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(scores, dtype=np.float64)
    positives = int(y.sum())
    both_classes = 0 < positives < len(y)
    return Metrics(
        auc=roc_auc(y, p) if both_classes else None,
        pr_auc=average_precision(y, p) if both_classes else None,
        logloss=log_loss(y, p),
        rows=len(y),
        positives=positives,
    )


def roc_auc(y: Array, p: Array) -> float:
    """Mann-Whitney U over average ranks: ties between a positive and a negative count 1/2."""
    ranks = pd.Series(p).rank(method="average").to_numpy()
    positives = y.sum()
    negatives = len(y) - positives
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) /
                 (positives * negatives))


def average_precision(y: Array, p: Array) -> float:
    precision, recall, _ = precision_recall_curve(y, p)
    return float(np.sum(np.diff(recall) * precision[1:]))


def log_loss(y: Array, p: Array) -> float:
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _cumulative_counts(y: Array, p: Array) -> tuple[Array, Array, Array]:
    """True and false positives at each distinct score threshold, highest threshold first."""
    order = np.argsort(-p, kind="mergesort")
    y, p = y[order], p[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]
    true_positives = np.cumsum(y)[last_of_tie]
    false_positives = last_of_tie + 1 - true_positives
    return true_positives, false_positives, p[last_of_tie]


def roc_curve(y: Array, p: Array) -> tuple[Array, Array]:
    """(false positive rate, true positive rate), starting at (0, 0)."""
    tps, fps, _ = _cumulative_counts(y, p)
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def precision_recall_curve(y: Array, p: Array) -> tuple[Array, Array, Array]:
    """(precision, recall, thresholds) by decreasing threshold, starting at recall 0."""
    tps, fps, thresholds = _cumulative_counts(y, p)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return np.r_[1.0, precision], np.r_[0.0, recall], thresholds
