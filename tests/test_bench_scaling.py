"""tools/bench_train.py's scaling fit: step(K) = fixed + K x per_student per loop setting."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from bench_train import fit_scaling  # noqa: E402


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
