"""The trainer's early stopping on scripted validation results: a run whose monitored AUC still
improves is neither stopped nor decayed inside the warm-up, nor by a calibration dip after it;
it stops at the first validations without gain that the rule counts."""

from __future__ import annotations

import pytest

from recsys_kdef.builders.job import build_job, checkpoint_meta
from recsys_kdef.config import load_config
from recsys_kdef.distributed.process import destroy_distributed, init_distributed
from recsys_kdef.eval.evaluate import EvalResult
from recsys_kdef.training import trainer as trainer_module
from recsys_kdef.training.trainer import Trainer


def scripted(points: list[tuple[float, float]]):
    """An `evaluate` that returns the next (ensemble AUC, logloss) of `points` each call (the
    two students a little below it)."""
    queue = iter(points)

    def evaluate(*args, **kwargs) -> EvalResult:
        auc, logloss = next(queue)
        heads = {"ensemble": 0.0, "student_0": 0.01, "student_1": 0.02}
        return EvalResult({h: {"auc": auc - d, "logloss": logloss + d} for h, d in heads.items()})

    return evaluate


def fit(data, tmp_path, monkeypatch, points, *options: str):
    """Train 1 step an epoch for len(points) epochs with validations scripted by `points`."""
    monkeypatch.setattr(trainer_module, "evaluate", scripted(points))
    args = ["--data.path", str(data), "--data.batch_size", "512"]
    args += ["--model.num_students", "2", "--model.tower.hidden_units", "[8]"]
    args += ["--train.epochs", str(len(points)), "--train.max_steps_per_epoch", "1"]
    args += ["--train.early_stop_patience", "1", "--train.save_checkpoint", "false"]
    args += ["--train.progress_bar", "false", "--train.output_dir", str(tmp_path), *options]
    cfg = load_config(args)
    ctx = init_distributed()
    try:
        job = build_job(cfg, ctx)
        meta = checkpoint_meta(cfg, job.schema)
        return Trainer(job.module, job.optimizer, ctx, cfg.train, meta).fit(
            job.readers.train, job.readers.valid
        )
    finally:
        destroy_distributed()


# AUC rises by 0.001 a validation for 6 validations while logloss worsens (AUC - logloss
# falls from the 2nd on: a calibration phase), then AUC stalls.
RISING = [(0.800 + 0.001 * i, 0.40 + 0.01 * i) for i in range(6)] + [(0.805, 0.47), (0.8, 0.5)]


def test_a_rising_auc_inside_the_warm_up_is_not_stopped_even_below_min_delta(
    tiny_dataset, tmp_path, monkeypatch
):
    # monitor AUC, min_delta 0.01: each rise of 0.001 is no gain, but the warm-up (5) holds it
    result = fit(
        tiny_dataset, tmp_path, monkeypatch, RISING,
        "--train.early_stop_min_delta", "0.01", "--train.early_stop_warmup", "5",
    )  # fmt: skip
    assert len(result.history) == 6 and result.stopped_early  # the 6th is past the warm-up
    lrs = [v.lr for v in result.history]
    assert all(lr == lrs[0] for lr in lrs)  # no decay before (the LR is logged before judging)
    assert result.best is result.history[0]  # a gain needs +0.01 over the best

    without = fit(
        tiny_dataset, tmp_path / "b", monkeypatch, RISING, "--train.early_stop_min_delta", "0.01"
    )
    assert len(without.history) == 2 and without.stopped_early  # what the warm-up prevented


def test_a_calibration_dip_never_stops_a_run_whose_auc_rises(tiny_dataset, tmp_path, monkeypatch):
    result = fit(
        tiny_dataset, tmp_path, monkeypatch, RISING,
        "--train.monitor_metric", "auc_minus_logloss", "--train.early_stop_warmup", "2",
    )  # fmt: skip
    assert len(result.history) == 7 and result.stopped_early  # stops once the AUC stalls
    assert all(v.lr == result.history[0].lr for v in result.history)
    assert result.best is result.history[0]  # the best AUC - logloss is kept all the same
    assert [v.monitor_value for v in result.history] == pytest.approx(
        [a - loss for a, loss in RISING[:7]]
    )

    unguarded = fit(
        tiny_dataset, tmp_path / "b", monkeypatch, RISING,
        "--train.monitor_metric", "auc_minus_logloss", "--train.early_stop_warmup", "2",
        "--train.early_stop_auc_guard", "false",
    )  # fmt: skip
    assert len(unguarded.history) == 3  # the first dip after the warm-up stops it
