"""The run's results: a printed table per split and metrics.json (written atomically)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchrec.distributed.types import ShardingPlan

from recsys_kdef.eval.evaluate import EvalResult, best_student
from recsys_kdef.io import atomic_path

if TYPE_CHECKING:  # training builds on evaluation, not the other way round
    from recsys_kdef.training.trainer import FitResult

COLUMNS = ("auc", "logloss", "ne", "gauc", "calibration")
HEADERS = {"calibration": "calib"}  # column titles where the key is too wide
CALIBRATION_NOTE = "calib = mean prediction / observed click rate (1 is calibrated)"


def with_best_student(
    metrics: dict[str, dict[str, float]], best: int
) -> dict[str, dict[str, float]]:
    """Add a 'best_student' row: the student chosen on validation AUC, measured here."""
    return {**metrics, "best_student": {**metrics[f"student_{best}"], "index": best}}


def plan_summary(plan: ShardingPlan) -> dict[str, dict[str, Any]]:
    """{table: {sharding_type, compute_kernel, ranks}} of a TorchRec sharding plan.

    With several sharded modules (ECKD's student and teachers, whose table names repeat)
    the keys are `module_path/table`.
    """
    qualify = len(plan.plan) > 1
    out = {}
    for module_path, module_plan in plan.plan.items():
        for table, sharding in module_plan.items():  # type: ignore[union-attr]
            out[f"{module_path}/{table}" if qualify else table] = {
                "sharding_type": sharding.sharding_type,
                "compute_kernel": sharding.compute_kernel,
                "ranks": sharding.ranks,
            }
    return out


def build_report(
    *,
    config: dict,
    dataset: dict,
    world_size: int,
    plan: ShardingPlan,
    fit: FitResult,
    best: int,
    valid: EvalResult,
    test: EvalResult,
) -> dict[str, Any]:
    """Everything about a run: config, data, plan, every validation, final valid / test results.

    Each validation carries all heads plus its best student, the training loss components and
    objective weights (exam lambda / mu, fusion weights) averaged since the previous
    validation, and the same measured on the validation data.
    """
    return {
        "config": config,
        "dataset": dataset,
        "world_size": world_size,
        "plan": plan_summary(plan),
        "steps": fit.steps,
        "stopped_early": fit.stopped_early,
        "skipped_batches": fit.skipped_batches,
        "best_validation": None
        if fit.best is None
        else {
            "epoch": fit.best.epoch,
            "step": fit.best.step,
            "monitor_value": fit.best.monitor_value,
        },
        "history": [
            {
                "epoch": v.epoch,
                "step": v.step,
                "monitor_value": v.monitor_value,
                "lr": v.lr,
                "samples_per_sec": v.samples_per_sec,
                "train_loss": v.train_loss,
                "train_weights": v.train_weights,
                "valid": with_best_student(v.result.metrics, best_student(v.result.metrics)),
                "valid_loss": v.result.losses,
                "valid_weights": v.result.weights,
            }
            for v in fit.history
        ],
        "best_student": best,
        "valid": with_best_student(valid.metrics, best),
        "valid_loss": valid.losses,
        "valid_weights": valid.weights,
        "test": with_best_student(test.metrics, best),
        "test_loss": test.losses,
        "test_weights": test.weights,
        "test_rows": test.rows,
    }


def format_table(title: str, metrics: dict[str, dict[str, float]]) -> str:
    """A fixed-width table: one row per head, columns AUC, logloss, NE, gAUC, calibration
    (with a line saying what calibration is, when it is shown)."""
    cols = [c for c in COLUMNS if any(c in m for m in metrics.values())]
    lines = [title, f"{'head':<28}" + "".join(f"{HEADERS.get(c, c):>10}" for c in cols)]
    for head, m in metrics.items():
        name = f"best_student (student_{m['index']})" if head == "best_student" else head
        lines.append(
            f"{name:<28}" + "".join(f"{m[c]:>10.5f}" if c in m else f"{'-':>10}" for c in cols)
        )
    if "calibration" in cols:
        lines.append(CALIBRATION_NOTE)
    return "\n".join(lines)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON so that readers never see half a file (see recsys_kdef.io.atomic_path)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
