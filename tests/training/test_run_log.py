"""The run's readable outputs: train.log, TensorBoard scalars (when the package is there, a
clear error when it is not), the learning-curve figure and its integer step ticks."""

from __future__ import annotations

import importlib.util
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_kdef.config import ConfigError
from recsys_kdef.eval.evaluate import EvalResult
from recsys_kdef.training.run_log import RunLog, plot_learning_curve, validation_scalars
from recsys_kdef.training.trainer import Validation

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def point(step: int, auc: float) -> Validation:
    metrics = {
        "student_0": {"auc": auc, "logloss": 0.5, "calibration": 1.2},
        "ensemble": {"auc": auc + 0.01, "logloss": 0.45, "calibration": 0.9},
    }
    return Validation(
        epoch=0,
        step=step,
        monitor_value=auc,
        result=EvalResult(metrics=metrics),
        lr={"dense": 1e-3, "sparse": 0.05},
        train_loss={"loss": 0.6, "ctr": 0.5},
        train_weights={"lambda": [0.25, 0.75], "mu": [[0.0, 1.0], [1.0, 0.0]]},
        samples_per_sec=1234.0,
    )


def test_validation_scalars_cover_heads_losses_weights_and_throughput():
    scalars = validation_scalars(point(10, 0.7))
    assert scalars["valid/ensemble/auc"] == pytest.approx(0.71)
    assert scalars["valid/student_0/calibration"] == 1.2
    assert scalars["train/ctr"] == 0.5
    assert scalars["weights/lambda/1"] == 0.75
    assert not any(tag.startswith("weights/mu") for tag in scalars)  # a (K, K) matrix: not a curve
    assert scalars["lr/sparse"] == 0.05 and scalars["samples_per_sec"] == 1234.0


def test_train_log_keeps_logged_and_printed_lines_with_timestamps(tmp_path, capsys):
    log = RunLog(tmp_path, enabled=True)
    logging.getLogger("recsys_kdef.training.trainer").info(
        "epoch 0 step 5 | valid AUC ensemble=0.7"
    )
    logging.getLogger("torchrec.some.module").info("library chatter")  # libraries: WARNING up
    log.echo("head   auc\nensemble 0.7")
    log.close()
    logging.getLogger("recsys_kdef.training.trainer").info("after close")
    text = (tmp_path / "train.log").read_text()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.search(stamp + r".* recsys_kdef.training.trainer INFO epoch 0 step 5", text)
    assert re.search(stamp + " printed:\nhead   auc\nensemble 0.7\n", text)
    assert "library chatter" not in text and "after close" not in text
    assert "ensemble 0.7" in capsys.readouterr().out
    RunLog(tmp_path, enabled=True).close()  # a resumed run appends
    assert (tmp_path / "train.log").read_text() == text


def test_a_run_that_logs_nothing_leaves_no_directory(tmp_path):
    RunLog(tmp_path / "out", enabled=True).close()
    assert not (tmp_path / "out").exists()


def test_other_ranks_write_nothing(tmp_path):
    log = RunLog(tmp_path / "out", enabled=False)
    log.echo("x")
    log.validation(point(1, 0.5))
    log.close()
    assert not (tmp_path / "out").exists() and log.files == []


@pytest.mark.skipif(HAS_TENSORBOARD, reason="tensorboard is installed here")
def test_tensorboard_without_the_package_is_a_clear_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"train.tensorboard: true needs the `tensorboard`"):
        RunLog(tmp_path, enabled=False, tensorboard=True)  # every rank checks, before training
    assert not (tmp_path / "train.log").exists()


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="needs the tensorboard package")
def test_tensorboard_events_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = RunLog(tmp_path, enabled=True, tensorboard=True)
    for step, auc in ((10, 0.6), (20, 0.7)):
        log.validation(point(step, auc))
    log.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    auc = events.Scalars("valid/ensemble/auc")
    assert [(e.step, round(e.value, 4)) for e in auc] == [(10, 0.61), (20, 0.71)]
    assert [e.value for e in events.Scalars("weights/lambda/0")] == [0.25, 0.25]


def test_tensorboard_error_reaches_the_training_command(tmp_path, tiny_dataset):
    """The CLI says what to do (install or switch off) and writes no output."""
    if HAS_TENSORBOARD:
        pytest.skip("tensorboard is installed here")
    cmd = [sys.executable, "recsys_kdef/train.py", "--data.path", str(tiny_dataset),
           "--train.output_dir", str(tmp_path / "run"), "--train.tensorboard", "true"]  # fmt: skip
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "pip install tensorboard" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_learning_curve_draws_every_head_on_integer_steps(tmp_path, monkeypatch):
    history = [
        {"step": s, "train_loss": {"loss": 0.7 - s / 100},
         "valid": {"student_0": {"auc": 0.6 + s / 100, "logloss": 0.5},
                   "ensemble": {"auc": 0.61 + s / 100, "logloss": 0.49},
                   "best_student": {"auc": 0.6, "logloss": 0.5, "index": 0}}}
        for s in (1, 2, 3)
    ]  # fmt: skip
    seen = {}
    import recsys_kdef.figures as plots

    def capture(fig, ax, path, legend=True):
        seen["axes"] = ax
        seen["title"] = ax[0].get_title()
        seen["labels"] = [line.get_label() for line in ax[0].get_lines()]
        seen["ticks"] = [t for t in ax[0].get_xticks() if 1 <= t <= 3]
        return path

    monkeypatch.setattr(plots, "save_figure", capture)
    plot_learning_curve(history, tmp_path / "curve.png", "tiny, 3 epochs, seed 1")
    assert seen["title"].startswith("tiny, 3 epochs, seed 1")
    assert seen["labels"] == ["student_0", "ensemble"]  # best_student repeats a student
    assert seen["ticks"] and all(float(t).is_integer() for t in seen["ticks"])
    plot_learning_curve(history[:1], tmp_path / "curve.png", "x")  # one validation point
    assert list(seen["axes"][0].get_xticks()) == [1]  # not 0.8, 0.9, 1.0, 1.1
    assert plot_learning_curve([], tmp_path / "none.png", "x") is None
