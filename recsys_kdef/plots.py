"""Figures as PNG files, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from recsys_kdef.io import atomic_path  # noqa: E402


def subplots(width: float = 6.0, height: float = 4.0):
    """One figure with one axes, (fig, ax)."""
    return plt.subplots(figsize=(width, height))


def save_figure(fig, ax, path: Path, legend: bool = True) -> Path:
    """Write `fig` to `path` (PNG, atomically) and close it; returns the path."""
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
