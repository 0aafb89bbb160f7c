"""The offline evaluation job: a checkpoint written by 2 ranks, evaluated on 1 rank (the CLI in
a fresh process) and on 4 ranks, gives the training run's test metrics; plots, calibration
bins and per-rank prediction files come with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from multiprocess import run_multiprocess
from torchmetrics.functional.classification import binary_auroc

from recsys_kdef.config import SyntheticConfig, load_config
from recsys_kdef.data.synthetic import generate
from recsys_kdef.eval.__main__ import parse_args, run_evaluation
from recsys_kdef.train import run

ROOT = Path(__file__).resolve().parents[2]


def _train(ctx, args: list[str]) -> dict:
    return run(load_config(args), ctx)  # INFO lines go to train.log only (no console handler)


def _evaluate(ctx, argv: list[str]) -> dict:
    return run_evaluation(parse_args(argv), ctx)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A K=3 run on 2 ranks; the test split has 4 row groups (so 4 ranks each get one)."""
    root = tmp_path_factory.mktemp("offline_eval")
    data = root / "data"
    generate(
        SyntheticConfig(
            rows=4000, num_sparse=3, num_multi=1, num_dense=2, vocab_size=40, num_users=30,
            row_group_size=100, seed=11,
        ),
        data,
    )  # fmt: skip
    args = [
        "--data.path", str(data), "--data.batch_size", "128", "--model.num_students", "3",
        "--model.tower.hidden_units", "[16]", "--train.epochs", "1",
        "--train.progress_bar", "false", "--train.output_dir", str(root / "run"),
    ]  # fmt: skip
    report = run_multiprocess(_train, world_size=2, args=args)[0]
    return data, root / "run", report


def assert_metrics_match(got: dict, expected: dict) -> None:
    assert got
    for head, metrics in got.items():
        for name, value in metrics.items():
            assert value == pytest.approx(expected[head][name], abs=1e-6), (head, name)


def test_a_2_rank_checkpoint_evaluates_alike_on_1_and_4_ranks(trained, tmp_path):
    data, run_dir, report = trained
    assert not list(run_dir.glob("gauc-*"))  # the run's test gAUC spilled there, then cleaned
    one = tmp_path / "one"
    cmd = [
        sys.executable, "-m", "recsys_kdef.eval", "--checkpoint", str(run_dir),
        "--data", str(data), "--out", str(one), "--predictions", str(tmp_path / "p1"),
        "--batch-size", "64", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    single = json.loads((one / "evaluation.json").read_text())
    assert single["world_size"] == 1 and single["rows"] == report["test_rows"]
    assert_metrics_match(single["metrics"], report["test"])
    assert "best_student" in single["metrics"] and "calibration" in single["metrics"]["ensemble"]
    for png in ("roc.png", "calibration.png", "heads.png"):
        assert (one / png).stat().st_size > 1000
    curve = single["curves"]["ensemble"]
    assert sum(b[2] for b in curve["reliability"]) == single["rows"]
    assert curve["roc"]["tpr"][-1] == pytest.approx(1.0)
    assert not list(one.glob("gauc-*"))  # gAUC's spilled rows (under --out) are removed

    argv = [
        "--checkpoint", str(run_dir), "--data", str(data), "--out", str(tmp_path / "four"),
        "--heads", "student_1,ensemble", "--predictions", str(tmp_path / "p4"),
        "--no-plots", "--no-progress", "--tmp-dir", str(tmp_path / "spill"),
    ]  # fmt: skip
    four = run_multiprocess(_evaluate, world_size=4, argv=argv)[0]
    assert list((tmp_path / "spill").iterdir()) == []
    assert four["world_size"] == 4 and four["rows"] == single["rows"]
    assert set(four["metrics"]) - {"best_student"} == {"student_1", "ensemble"}
    assert_metrics_match(four["metrics"], report["test"])

    parts = sorted((tmp_path / "p4").glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-{r:05d}.parquet" for r in range(4)]
    table = pq.read_table(tmp_path / "p4")
    assert table.num_rows == single["rows"]
    auc = binary_auroc(
        torch.from_numpy(table.column("ensemble").to_numpy()),
        torch.from_numpy(table.column("label").to_numpy()).long(),
    )
    assert auc.item() == pytest.approx(report["test"]["ensemble"]["auc"], abs=1e-4)


def test_an_unknown_head_is_named(trained, tmp_path):
    data, run_dir, _ = trained
    argv = ["--checkpoint", str(run_dir), "--data", str(data), "--heads", "student_9"]
    with pytest.raises(AssertionError, match=r"unknown heads \['student_9'\]"):
        run_multiprocess(_evaluate, world_size=1, argv=[*argv, "--out", str(tmp_path)])


def test_the_run_leaves_a_log_a_learning_curve_and_names_its_files(trained):
    _, run_dir, report = trained
    log = (run_dir / "train.log").read_text()
    # each validation line, with a timestamp, and the printed test table with calibration
    validations = [line for line in log.splitlines() if "| valid AUC" in line]
    assert len(validations) == len(report["history"]) >= 1
    assert all(line[:4].isdigit() and line[4] == "-" for line in validations)
    assert "calib" in log and "mean prediction / observed click rate" in log
    ensemble = report["test"]["ensemble"]
    assert f"{ensemble['calibration']:.5f}" in log
    assert "written: " in log and "learning_curve.png" in log
    assert (run_dir / "learning_curve.png").stat().st_size > 1000
    assert not (run_dir / "tensorboard").exists()  # train.tensorboard is off by default


def test_evaluation_outputs_go_beside_the_checkpoint_and_are_named(trained, capsys):
    data, run_dir, _ = trained
    argv = ["--checkpoint", str(run_dir), "--data", str(data), "--no-progress"]
    report = run_multiprocess(_evaluate, world_size=1, argv=argv)[0]
    out = run_dir / "eval-test" / "best"
    assert (out / "evaluation.json").is_file()
    assert report["files"] == [str(out / n) for n in ("roc.png", "calibration.png", "heads.png")]
    best = run_dir / "checkpoints" / "best"
    assert not [
        p for p in best.iterdir() if p.suffix in (".png", ".json") and p.name != "meta.json"
    ]
    for name in report["files"]:
        assert Path(name).stat().st_size > 1000
