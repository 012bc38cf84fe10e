"""The training report as pictures: ROC and precision-recall curves, feature importance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and workers

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt

from workflows.evaluation import average_precision, precision_recall_curve, roc_auc, roc_curve


def write_report(folder: Path, labels: npt.ArrayLike, scores: Mapping[str, npt.ArrayLike],
                 importance: Mapping[str, float]) -> list[Path]:
    """roc.png and pr.png (one curve per model in `scores`, e.g. candidate and production,
    on the same holdout) and feature_importance.png (total gain); returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    y = np.asarray(labels, dtype=np.float64)
    if not 0 < y.sum() < len(y):  # curves need both classes
        return [_importance(folder / "feature_importance.png", importance)]
    return [_roc(folder / "roc.png", y, scores), _pr(folder / "pr.png", y, scores),
            _importance(folder / "feature_importance.png", importance)]


def _roc(path: Path, y: npt.NDArray[np.float64], scores: Mapping[str, npt.ArrayLike]) -> Path:
    figure, axes = plt.subplots(figsize=(6, 5))
    for name, score in scores.items():
        p = np.asarray(score, dtype=np.float64)
        fpr, tpr = roc_curve(y, p)
        axes.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(y, p):.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate",
             title=f"ROC on the holdout ({int(y.sum())} attributed of {len(y)})")
    axes.legend(loc="lower right")
    return _save(figure, path)


def _pr(path: Path, y: npt.NDArray[np.float64], scores: Mapping[str, npt.ArrayLike]) -> Path:
    figure, axes = plt.subplots(figsize=(6, 5))
    for name, score in scores.items():
        p = np.asarray(score, dtype=np.float64)
        precision, recall, _ = precision_recall_curve(y, p)
        axes.step(recall, precision, where="post",
                  label=f"{name} (AP {average_precision(y, p):.3f})")
    axes.axhline(y.mean(), linestyle="--", color="grey", label=f"base rate {y.mean():.4f}")
    axes.set(xlabel="recall", ylabel="precision", ylim=(0, 1.02),
             title="Precision-recall on the holdout")
    axes.legend(loc="upper right")
    return _save(figure, path)


def _importance(path: Path, importance: Mapping[str, float]) -> Path:
    names: Sequence[str] = sorted(importance, key=importance.__getitem__)
    figure, axes = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
    axes.barh(names, [importance[n] for n in names])
    axes.set(xlabel="total gain", title="Feature importance")
    return _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
