"""What a training run leaves for people to read besides metrics.json: `train.log` (every
logged line and every printed table, with timestamps), an optional TensorBoard event stream
(`train.tensorboard`), and `learning_curve.png` from the validation history.

All of it is written by rank 0 only; the other ranks get a RunLog that does nothing.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

from recsys_kdef.config import ConfigError

LOG_FILE = "train.log"
TENSORBOARD_DIR = "tensorboard"
LEARNING_CURVE = "learning_curve.png"
WEIGHT_NAMES = ("lambda", "fusion", "gate")
"""Objective weights written as per-student scalars (KDEF exam lambda, fusion, ECKD gate)."""

_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def require_tensorboard() -> None:
    """Raise ConfigError unless the `tensorboard` package (torch.utils.tensorboard's writer
    backend) can be imported; called on every rank before training starts."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "train.tensorboard: true needs the `tensorboard` package, which is not installed "
            "in this environment: `pip install tensorboard`, or set train.tensorboard: false "
            "(train.log and metrics.json are written either way)"
        )


class RunLog:
    """Rank 0's train.log (a handler on the root logger, appended to on resume) and optional
    TensorBoard writer; `close()` removes the handler and flushes the events.

    Example::

        log = RunLog(out_dir, enabled=ctx.is_main, tensorboard=cfg.train.tensorboard)
        trainer.observers.append(log.validation)   # one call per validation point
        log.echo(table)                              # printed and kept in train.log
        log.close()
    """

    def __init__(self, out_dir: str | Path, *, enabled: bool, tensorboard: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self._handler: _LazyFileHandler | None = None
        self._writer = None
        self._tensorboard = tensorboard and enabled
        self._project = logging.getLogger("recsys_kdef")
        self._level = self._project.level
        if tensorboard:
            require_tensorboard()
        if not enabled:
            return
        self._handler = _LazyFileHandler(self.out_dir / LOG_FILE)
        self._handler.setLevel(logging.INFO)
        self._handler.setFormatter(logging.Formatter(_FORMAT))
        logging.getLogger().addHandler(self._handler)  # this project's INFO, libraries' WARNING
        if self._project.getEffectiveLevel() > logging.INFO:  # run() called without main()
            self._project.setLevel(logging.INFO)

    @property
    def files(self) -> list[Path]:
        """The files and directories this log writes."""
        if not self.enabled:
            return []
        paths = [self.out_dir / LOG_FILE]
        return paths + ([self.out_dir / TENSORBOARD_DIR] if self._tensorboard else [])

    def echo(self, text: str) -> None:
        """Print `text` (rank 0) and keep it in train.log, each line under one timestamp."""
        if not self.enabled:
            return
        print(text, flush=True)
        if self._handler is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self._handler.write(f"{stamp} printed:\n{text}\n")

    def note(self, text: str) -> None:
        """Keep `text` in train.log only (e.g. why the run failed: main prints that itself)."""
        if self._handler is not None:
            self._handler.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def validation(self, point: Any) -> None:
        """Write one validation point (trainer.Validation) as TensorBoard scalars at its step
        (the writer, and with it the output directory, made at the first point)."""
        if not self._tensorboard:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.out_dir / TENSORBOARD_DIR))
        for tag, value in validation_scalars(point).items():
            self._writer.add_scalar(tag, value, point.step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None
            self._project.setLevel(self._level)


class _LazyFileHandler(logging.FileHandler):
    """Appends to its file, created (with its directory) at the first line: a run that fails
    before it logs anything leaves no output directory behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True)

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def write(self, text: str) -> None:
        """Raw text (a printed table), not a log record."""
        with self.lock:
            if self.stream is None:
                self.stream = self._open()
            self.stream.write(text)
            self.stream.flush()


def validation_scalars(point: Any) -> dict[str, float]:
    """{tag: value} of one validation point: per head valid AUC / logloss / calibration, the
    training loss components, per-student objective weights, learning rates and samples/s."""
    out: dict[str, float] = {}
    for head, metrics in point.result.metrics.items():
        for name in ("auc", "logloss", "calibration"):
            if name in metrics:
                out[f"valid/{head}/{name}"] = float(metrics[name])
    for name, value in point.train_loss.items():
        out[f"train/{name}"] = float(value)
    for name, values in point.train_weights.items():
        if name in WEIGHT_NAMES:
            for k, value in enumerate(values):
                out[f"weights/{name}/{k}"] = float(value)
    for group, lr in point.lr.items():
        out[f"lr/{group}"] = float(lr)
    out["samples_per_sec"] = float(point.samples_per_sec)
    return out


def plot_learning_curve(history: list[dict], path: Path, title: str) -> Path | None:
    """learning_curve.png from metrics.json's history: validation AUC per head (left) and the
    training loss with each head's validation logloss (right), against the global step; None
    when there is no validation point to draw."""
    if not history:
        return None
    from recsys_kdef.figures import integer_axis, save_figure, subplots

    steps = [h["step"] for h in history]
    heads = [head for head in history[0]["valid"] if head != "best_student"]
    fig, axes = subplots(11.0, 4.0, ncols=2)
    for head in heads:
        axes[0].plot(steps, [h["valid"][head]["auc"] for h in history], marker=".", label=head)
        axes[1].plot(
            steps, [h["valid"][head]["logloss"] for h in history], marker=".", label=f"{head} valid"
        )
    train = [h["train_loss"].get("loss") for h in history]
    if any(v is not None for v in train):
        axes[1].plot(steps, train, color="k", ls="--", marker=".", label="train loss (all terms)")
    axes[0].set(xlabel="step", ylabel="validation AUC", title=f"{title}: validation AUC")
    axes[1].set(xlabel="step", ylabel="logloss", title="training loss, validation logloss")
    for ax in axes:
        integer_axis(ax.xaxis, steps)
    return save_figure(fig, axes, path)
