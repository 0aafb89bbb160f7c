"""tools/bench_train.py's scaling fit: step(K) = fixed + K x per_student per loop setting; the
FLOPs it counts for a step against the towers' formula."""

import argparse
import sys
from pathlib import Path

import pytest

from recsys_kdef.distributed.process import destroy_distributed, init_distributed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from bench_train import bench_one, criteo_schema, fit_scaling  # noqa: E402


def row(
    k: int, ms: float, pipeline: bool = False, compiled: bool = False, ensemble: str | None = None
) -> dict:
    return {
        "students": k,
        "ms_per_step": ms,
        "embedding_mode": "per_model",
        "pipeline": pipeline,
        "compile": compiled,
        "ensemble": ensemble or f"{k} mlp",
    }


def test_fit_recovers_fixed_and_per_student_cost_per_loop_setting():
    rows = [row(k, 30 + 200 * k) for k in (1, 4, 10)]
    rows += [row(k, 5 + 100 * k + (3 if k == 4 else 0), pipeline=True) for k in (1, 4, 10)]
    rows += [row(6, 99999.0, ensemble="mix"), row(1, 1.0, compiled=True)]  # not fitted
    plain, piped = sorted(fit_scaling(rows), key=lambda f: f["pipeline"])
    assert plain["fixed_ms"] == pytest.approx(30) and plain["per_student_ms"] == pytest.approx(200)
    assert plain["fixed_over_per_student"] == pytest.approx(0.15)
    # least squares through (1, 105), (4, 408), (10, 1005), computed by hand
    assert piped["per_student_ms"] == pytest.approx(100 - 3 / 42)
    assert piped["fixed_ms"] == pytest.approx(6 + 5 / 14)
    assert len(fit_scaling(rows)) == 2


def test_counted_flops_of_an_mlp_step_are_its_towers_matmuls():
    """One MLP student's training step: its towers' 2 B sum(in out) multiply-adds forward, twice
    that backward (input and weight gradients), and nothing else a FLOP (embedding lookups,
    the KDEF loss and the optimizers are elementwise)."""
    hidden, batch, dim = [24, 8], 32, 16
    args = argparse.Namespace(hidden=hidden, batch_size=batch, steps=1, warmup=1, overrides=[])
    schema = criteo_schema(vocab_scale=1e-3)
    ctx = init_distributed()
    try:
        row = bench_one(ctx, schema, 1, "per_model", False, False, args, None)
    finally:
        destroy_distributed()
    widths = [len(schema.sparse) * dim, *hidden, 1]
    towers = 3 * 2 * batch * sum(i * o for i, o in zip(widths, widths[1:]))
    assert row["gflop_per_step"] * 1e9 == towers
