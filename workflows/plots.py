"""The training report as pictures: ROC and precision-recall curves with each model's
operating point marked (and said in a sentence under the plot), feature importance."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and workers

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from matplotlib.typing import ColorType

from core.registry import OperatingPoint
from workflows.evaluation import average_precision, precision_recall_curve, roc_auc, roc_curve


def write_report(folder: Path, labels: npt.ArrayLike, scores: Mapping[str, npt.ArrayLike],
                 importance: Mapping[str, float],
                 points: Mapping[str, OperatingPoint] | None = None) -> list[Path]:
    """roc.png and pr.png (one curve per model in `scores`, e.g. candidate and production,
    on the same holdout, each with its operating point in `points` marked) and
    feature_importance.png (total gain); returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    y = np.asarray(labels, dtype=np.float64)
    if not 0 < y.sum() < len(y):  # curves need both classes
        return [_importance(folder / "feature_importance.png", importance)]
    marked = {name: point for name, point in (points or {}).items()
              if name in scores and point.threshold is not None}
    return [_roc(folder / "roc.png", y, scores, marked),
            _pr(folder / "pr.png", y, scores, marked),
            _importance(folder / "feature_importance.png", importance)]


def roc_position(point: OperatingPoint) -> tuple[float, float]:
    """(false positive rate, true positive rate) of an operating point, as `roc_curve` counts
    them: a click scored at or above the threshold is let through (called an install)."""
    negatives = point.holdout_clicks - point.holdout_installs
    passed_negatives = negatives - (point.blocked_clicks - point.lost_installs)
    return (passed_negatives / negatives,
            (point.holdout_installs - point.lost_installs) / point.holdout_installs)


def pr_position(point: OperatingPoint) -> tuple[float, float]:
    """(recall, precision) of an operating point: installs kept, and installs among the clicks
    let through."""
    kept = point.holdout_installs - point.lost_installs
    passed = point.holdout_clicks - point.blocked_clicks
    return kept / point.holdout_installs, kept / passed if passed else 1.0


def _roc(path: Path, y: npt.NDArray[np.float64], scores: Mapping[str, npt.ArrayLike],
         points: Mapping[str, OperatingPoint]) -> Path:
    figure, axes = plt.subplots(figsize=(6, 5))
    for name, score in scores.items():
        p = np.asarray(score, dtype=np.float64)
        fpr, tpr = roc_curve(y, p)
        line, = axes.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(y, p):.3f})")
        if name in points:
            _mark(axes, roc_position(points[name]), line.get_color(), name)
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set(xlabel="false positive rate (clicks without install let through)",
             ylabel="true positive rate (installs let through)",
             title=f"ROC on the holdout ({int(y.sum())} attributed of {len(y)})")
    axes.legend(loc="lower right")
    return _save(figure, path, points)


def _pr(path: Path, y: npt.NDArray[np.float64], scores: Mapping[str, npt.ArrayLike],
        points: Mapping[str, OperatingPoint]) -> Path:
    figure, axes = plt.subplots(figsize=(6, 5))
    for name, score in scores.items():
        p = np.asarray(score, dtype=np.float64)
        precision, recall, _ = precision_recall_curve(y, p)
        line, = axes.step(recall, precision, where="post",
                          label=f"{name} (AP {average_precision(y, p):.3f})")
        if name in points:
            _mark(axes, pr_position(points[name]), line.get_color(), name)
    axes.axhline(y.mean(), linestyle="--", color="grey", label=f"base rate {y.mean():.4f}")
    axes.set(xlabel="recall (installs let through)",
             ylabel="precision (installs among clicks let through)", ylim=(0, 1.02),
             title="Precision-recall on the holdout")
    axes.legend(loc="upper right")
    return _save(figure, path, points)


def _mark(axes: plt.Axes, position: tuple[float, float], color: ColorType, name: str) -> None:
    axes.plot(*position, marker="o", markersize=9, markerfacecolor="none",
              markeredgewidth=2, color=color, linestyle="none",
              label=f"{name} operating point")


def _importance(path: Path, importance: Mapping[str, float]) -> Path:
    names: Sequence[str] = sorted(importance, key=importance.__getitem__)
    figure, axes = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
    axes.barh(names, [importance[n] for n in names])
    axes.set(xlabel="total gain", title="Feature importance")
    return _save(figure, path)


def _save(figure: plt.Figure, path: Path,
          points: Mapping[str, OperatingPoint] | None = None) -> Path:
    """Write the figure, with each operating point's sentence under the axes."""
    lines = [textwrap.fill(f"{name}: {point.sentence()}", 88)
             for name, point in (points or {}).items()]
    if lines:
        caption = "\n".join(lines)
        height = 0.13 * (caption.count("\n") + 1) + 0.1  # inches: 7-point lines
        width, plot_height = figure.get_size_inches()
        figure.set_size_inches(width, plot_height + height)
        figure.text(0.02, 0.01, caption, fontsize=7, va="bottom", ha="left")
        figure.tight_layout(rect=(0, height / (plot_height + height), 1, 1))
    else:
        figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
