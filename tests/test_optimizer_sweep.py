"""tools/optimizer_sweep.py: what it reads from a run's report and how it summarises seeds."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("optimizer_sweep", ROOT / "tools/optimizer_sweep.py")
sweep = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = sweep  # dataclasses look their module up there
_spec.loader.exec_module(sweep)


def _report(ensemble: tuple[float, float], students: list[tuple[float, float]]) -> dict:
    test = {"ensemble": {"auc": ensemble[0], "logloss": ensemble[1]}}
    test |= {f"student_{k}": {"auc": a, "logloss": ll} for k, (a, ll) in enumerate(students)}
    test["best_student"] = {"auc": 0.0, "logloss": 9.0}  # not a student: must be ignored
    history = [{"samples_per_sec": 100.0}, {"samples_per_sec": 300.0}, {"step": 3}]
    return {"test": test, "history": history, "steps": 3}


def test_summarize_takes_the_students_extremes_and_the_mean_rate():
    r = sweep.summarize(
        "parity", "per_model", 2024, _report((0.87, 0.39), [(0.85, 0.42), (0.86, 0.41)]), 12.5
    )
    assert r.student_auc == (0.85, 0.86) and r.student_logloss == (0.41, 0.42)
    assert r.samples_per_sec == 200.0 and r.wall_seconds == 12.5 and r.steps == 3


def test_summary_row_averages_seeds_and_spans_every_students_range():
    first = _report((0.86, 0.38), [(0.85, 0.39), (0.86, 0.40)])
    second = _report((0.88, 0.40), [(0.84, 0.41)])
    rs = [
        sweep.summarize("parity_l2x10", "per_model", seed, report, 1.0)
        for seed, report in ((2024, first), (2025, second))
    ]
    header, rule, row = sweep.format_summary(rs)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["per_model", sweep.VARIANTS["parity_l2x10"][0], "2024, 2025"]
    assert cells[3] == "0.8700 (0.8600-0.8800)" and cells[4] == "0.3900"
    assert cells[5] == "0.8400-0.8600" and cells[6] == "0.3900-0.4100"
    assert cells[7] == "+0.0100"  # mean of (0.39 - 0.38) and (0.41 - 0.40)
    assert len(cells) == len(header.strip("|").split("|"))


def test_a_finished_run_is_read_back_without_training(tmp_path, monkeypatch):
    result = sweep.summarize("adam", "shared", 7, _report((0.8, 0.4), [(0.79, 0.41)]), 3.0)
    saved = asdict(result)
    del saved["wall_seconds"]  # written before the field existed: read with its default
    run_dir = tmp_path / "runs" / "adam-shared-seed7"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(saved))

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run must not be trained again")

    monkeypatch.setattr(sweep, "train_in_subprocess", no_training)
    back = sweep.run_point("adam", "shared", 7, "unused.yaml", tmp_path, [])
    assert back.student_auc == result.student_auc and back.ensemble_auc == result.ensemble_auc
    assert back.wall_seconds != back.wall_seconds  # NaN: unknown
    with pytest.raises(AssertionError, match="must not be trained"):
        sweep.run_point("adam", "shared", 8, "unused.yaml", tmp_path, [])
