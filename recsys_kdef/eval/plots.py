"""PNG plots of an evaluation: ROC curves, calibration (reliability) curves, per-head bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_roc(curves: dict[str, dict], metrics: dict[str, dict], path: Path) -> None:
    """One ROC curve per head, AUC in the legend."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for head, curve in curves.items():
        ax.plot(
            curve["roc"]["fpr"], curve["roc"]["tpr"], label=f"{head} ({metrics[head]['auc']:.4f})"
        )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (AUC)")
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def plot_calibration(curves: dict[str, dict], path: Path, title: str = "Calibration") -> None:
    """Observed CTR against mean prediction per reliability bin; the diagonal is perfect. The
    axes span the data (a click rate of 0.09 is not squeezed into a corner of 0..1)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for head, curve in curves.items():
        bins = curve["reliability"]
        ax.plot([b[0] for b in bins], [b[1] for b in bins], marker="o", markersize=3, label=head)
    low, high = calibration_limits(curves)
    ax.plot([low, high], [low, high], color="grey", linestyle=":", linewidth=1)
    ax.set(xlim=(low, high), ylim=(low, high), aspect="equal")
    ax.set(xlabel="mean predicted probability", ylabel="observed CTR", title=title)
    ax.legend(fontsize=7, loc="upper left")
    _save(fig, path)


def calibration_limits(curves: dict[str, dict], margin: float = 0.05) -> tuple[float, float]:
    """(low, high) of both calibration axes: every bin's prediction and CTR, plus `margin` of
    the span on each side, within [0, 1]; (0, 1) without bins."""
    values = [v for c in curves.values() for b in c["reliability"] for v in b[:2]]
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    pad = margin * max(high - low, 1e-3)
    return max(0.0, low - pad), min(1.0, high + pad)


def plot_heads(metrics: dict[str, dict], path: Path) -> None:
    """Bars of AUC and logloss per head (students, ensemble, fused, ...)."""
    heads = list(metrics)
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.2 * len(heads)), 3.5))
    for ax, name in zip(axes, ("auc", "logloss"), strict=True):
        values = [metrics[h][name] for h in heads]
        ax.bar(range(len(heads)), values, color="tab:blue")
        ax.set_xticks(range(len(heads)), heads, rotation=45, ha="right", fontsize=7)
        low, high = min(values), max(values)
        ax.set_ylim(low - 0.1 * (high - low + 1e-3), high + 0.1 * (high - low + 1e-3))
        ax.set_title(name)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
