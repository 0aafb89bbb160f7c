"""Figures as PNG files, drawn with matplotlib's Agg backend (no display needed), and the tick
and title rules every figure follows."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from recsys_kdef.io import atomic_path  # noqa: E402


def subplots(width: float = 6.0, height: float = 4.0, *, nrows: int = 1, ncols: int = 1):
    """One figure and its axes: (fig, ax), or (fig, array of axes) for a row or grid."""
    return plt.subplots(nrows, ncols, figsize=(width, height))


def save_figure(fig, ax, path: Path, legend: bool = True) -> Path:
    """Write `fig` to `path` (PNG, atomically) and close it; returns the path. `ax` is one
    axes or an array of them (each gets a grid and, with `legend`, its legend)."""
    for one in np.atleast_1d(ax).ravel():
        if legend and one.get_legend_handles_labels()[0]:
            one.legend(fontsize=8)
        one.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def ticks_at(axis, values: Iterable[int]) -> list[int]:
    """Ticks at exactly `values` (e.g. the K values of a study), labelled as integers."""
    ticks = sorted({int(v) for v in values})
    axis.set_ticks(ticks, [str(v) for v in ticks])
    return ticks


def integer_axis(axis, values: Iterable[int] | None = None) -> None:
    """Ticks on integers only (steps, epochs): at exactly `values` when there are few of them
    (one validation point would otherwise get ticks 4.8, 5.0, 5.2), else as many as fit."""
    few = sorted({int(v) for v in values}) if values is not None else []
    if 0 < len(few) <= 10:
        ticks_at(axis, few)
    else:
        axis.set_major_locator(MaxNLocator(integer=True))


def plural(n: int, word: str) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def mean_std_text(mean: float, std: float, n: int, digits: int = 4) -> str:
    """'0.81234 ± 0.0012 (n=3)', or '0.81234 (n=1)' for one run: one value has no spread."""
    if n <= 1:
        return f"{mean:.{digits + 1}f} (n=1)"
    return f"{mean:.{digits + 1}f} ± {std:.{digits}f} (n={n})"
