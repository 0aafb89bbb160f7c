"""tools/recipe_check.py: random re-splits of a prepared dataset and the per-head summary."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("recipe_check", ROOT / "tools/recipe_check.py")
rc = importlib.util.module_from_spec(_spec)
sys.path.insert(0, str(ROOT / "tools"))  # its sibling tools/machine.py
sys.modules[_spec.name] = rc  # dataclasses look their module up there
_spec.loader.exec_module(rc)


def _rows(root: Path) -> dict[str, list[tuple]]:
    """Each split's rows as tuples of every column (a row's identity)."""
    out = {}
    for split in rc.SPLITS:
        table = rc.read_split(root, split)
        cols = [table.column(c).to_pylist() for c in table.column_names]
        out[split] = [tuple(map(str, r)) for r in zip(*cols, strict=True)]
    return out


def test_resplits_are_disjoint_cover_every_row_keep_sizes_and_differ_by_seed(
    tiny_dataset, tmp_path
):
    original = _rows(tiny_dataset)
    everything = sorted(r for rows in original.values() for r in rows)
    cuts = []
    for seed in (0, 1):
        out = tmp_path / f"split-{seed}"
        sizes = rc.resplit(tiny_dataset, out, split_seed=seed)
        rows = _rows(out)
        assert sizes == {s: len(original[s]) for s in rc.SPLITS}
        assert {s: len(rows[s]) for s in rc.SPLITS} == sizes
        assert sorted(r for split in rows.values() for r in split) == everything  # a partition
        schema = json.loads((out / "schema.json").read_text())
        assert schema["extra"]["resplit"]["split_seed"] == seed
        label = schema["label"]
        test_ctr = np.mean(pq.read_table(out / "test").column(label).to_numpy())
        assert schema["extra"]["ctr"]["test"] == pytest.approx(test_ctr, abs=1e-6)
        cuts.append(rows)
    assert set(cuts[0]["test"]) != set(cuts[1]["test"])
    assert set(cuts[0]["test"]) != set(original["test"])  # not the prepared cut again


def test_a_finished_resplit_is_kept_and_a_failed_one_leaves_nothing(
    tiny_dataset, tmp_path, monkeypatch
):
    out = tmp_path / "split-0"
    rc.resplit(tiny_dataset, out, split_seed=0)
    stamp = (out / "test" / "part-00000.parquet").stat().st_mtime_ns
    rc.resplit(tiny_dataset, out, split_seed=0)
    assert (out / "test" / "part-00000.parquet").stat().st_mtime_ns == stamp

    real_write = pq.write_table

    def disk_full_at_test(table, path, **kwargs):
        if Path(path).parent.name == "test":
            raise OSError("disk full")
        real_write(table, path, **kwargs)

    monkeypatch.setattr(rc.pq, "write_table", disk_full_at_test)
    with pytest.raises(OSError, match="disk full"):
        rc.resplit(tiny_dataset, tmp_path / "split-9", split_seed=9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split-0"]


def _run(split: int, seed: int, ensemble: float, students: list[float]) -> rc.RunMetrics:
    test = {"ensemble": {"auc": ensemble, "logloss": 1 - ensemble}}
    test |= {f"student_{k}": {"auc": a, "logloss": 1 - a} for k, a in enumerate(students)}
    test["best_student"] = {"auc": 0.0, "logloss": 9.0}  # a copy of a student: ignored
    return rc.RunMetrics(split, seed, test, stopped_at_epoch=3, best_epoch=2)


def test_summary_gives_mean_std_and_extremes_of_every_head():
    runs = [
        _run(0, 1, 0.86, [0.85, 0.84]),
        _run(0, 2, 0.88, [0.87, 0.86]),
        _run(1, 1, 0.80, [0.79, 0.70]),
    ]
    s = rc.summarize(runs)
    assert "best_student" not in s
    ens = np.array([0.86, 0.88, 0.80])
    assert s["ensemble"]["auc_mean"] == pytest.approx(ens.mean())
    assert s["ensemble"]["auc_std"] == pytest.approx(ens.std(ddof=1))
    assert s["ensemble"]["auc_min"] == 0.80 and s["ensemble"]["logloss_max"] == pytest.approx(0.20)
    assert s["student_1"]["auc_min"] == 0.70
    gaps = np.array([0.84 - 0.86, 0.86 - 0.88, 0.70 - 0.80])
    assert s["worst_student_gap"]["auc_mean"] == pytest.approx(gaps.mean())
    assert s["worst_student_gap"]["auc_min"] == pytest.approx(-0.10)
    # logloss is 1 - AUC here: the worst student's logloss is above the ensemble's by -gap
    assert s["worst_student_gap"]["logloss_mean"] == pytest.approx(-gaps.mean())
    assert s["worst_student_gap"]["logloss_max"] == pytest.approx(0.10)
    assert [(r.split, r.seed) for r in rc.collapsed(runs, 0.02)] == [(1, 1)]
    assert rc.collapsed(runs, 0.05) == []
    assert rc.collapsed(runs, 0.005, by_split=True) == [runs[0]]  # 0.86 vs its split's 0.87
    assert rc.collapsed(runs, 0.02, by_split=True) == []  # split 1's one run is its own mean
    table = rc.format_table(s, len(runs))
    assert "| ensemble | 0.8467 ± 0.0416 | 0.8000 |" in table


def test_one_run_prints_no_spread():
    s = rc.summarize([_run(0, 1, 0.86, [0.85])])
    assert s["ensemble"]["auc_std"] == 0.0
    assert "±" not in rc.format_table(s, 1)


def test_seeds_are_a_count_from_the_configs_seed_or_a_list():
    assert rc.parse_seeds("3", 2024) == [2024, 2025, 2026]
    assert rc.parse_seeds("2024,2030", 1) == [2024, 2030]
