"""Binary-classifier metrics on a holdout: ROC AUC, average precision, log loss, curves, and
the operating point that turns scores into decisions.

Written on numpy (scikit-learn is not a dependency); the definitions are scikit-learn's:
AUC with tied scores counted half, average precision as the step-wise area under the PR curve.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from core.registry import OperatingPoint

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


def choose_operating_point(labels: npt.ArrayLike, scores: npt.ArrayLike,
                           max_install_loss: float) -> OperatingPoint:
    """The highest threshold that loses at most `max_install_loss` of the holdout's installs
    (a click is blocked when its score is below the threshold): the score of the (k+1)-th
    lowest-scoring install, k = the installs the target lets go. No threshold blocks more
    clicks without losing more installs.

    Refused (threshold None, the reason stated) when the target lets no install go, i.e. the
    holdout has fewer than 1/max_install_loss installs: the threshold would hang on the single
    lowest-scoring install, and a loss of 0 of so few says nothing about new clicks."""
    if not 0 < max_install_loss < 1:
        raise ValueError(f"max_install_loss must be in (0, 1), got {max_install_loss}")
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(scores, dtype=np.float64)
    installs = int(y.sum())
    # The epsilon keeps 0.29 * 100 (28.999999999999996 in floats) at 29.
    allowed = math.floor(max_install_loss * installs + 1e-9)
    if allowed == 0:
        needed = math.ceil(1 / max_install_loss - 1e-9)
        lose_one = f"losing one is {1 / installs:.1%}" if installs else "there is none to lose"
        return OperatingPoint(
            max_install_loss, None, len(y), installs, 0, 0,
            refusal=(f"the holdout has {installs} install(s) among {len(y)} clicks: "
                     f"{lose_one}, beyond the target of at most {max_install_loss:.1%}; "
                     f"choosing a threshold needs at least {needed} installs (a longer "
                     f"training window, a larger holdout fraction, or a looser target)"))
    threshold = float(np.sort(p[y == 1])[allowed])
    return point_at(y, p, threshold, max_install_loss)


def point_at(labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float,
             max_install_loss: float) -> OperatingPoint:
    """What a given threshold does on a labelled set of clicks."""
    y = np.asarray(labels, dtype=np.float64)
    blocked = np.asarray(scores, dtype=np.float64) < threshold
    return OperatingPoint(max_install_loss, threshold, len(y), int(y.sum()),
                          int(blocked.sum()), int(y[blocked].sum()))
