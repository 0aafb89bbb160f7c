"""Sharded checkpoints: exact resume after an interruption, recovery of a killed rank under
torchrun --max-restarts, partial checkpoints never loaded, NaN/inf losses."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from multiprocess import run_multiprocess

from recsys_kdef.checkpoint import store as ckpt
from recsys_kdef.config import load_config
from recsys_kdef.distributed.process import destroy_distributed, init_distributed
from recsys_kdef.train import run
from recsys_kdef.training.trainer import FAIL_AT_STEP_ENV
from recsys_kdef.training.watches import NonFiniteLoss

ROOT = Path(__file__).resolve().parents[2]


def run_args(data: Path, out: Path) -> list[str]:
    """2 epochs of 9 steps per rank (2 ranks); validation every 4 steps, checkpoints every 3;
    no early stop (the learning rate still decays)."""
    return [
        "--data.path",
        str(data),
        "--data.batch_size",
        "256",
        "--model.num_students",
        "2",
        "--model.tower.hidden_units",
        "[16]",
        "--model.tower.dropout",
        "0.2",  # dropout draws from the RNG: resume must restore it
        "--train.epochs",
        "2",
        "--train.eval_every_steps",
        "4",
        "--train.checkpoint_every_steps",
        "3",
        "--train.keep_last",
        "2",
        "--train.early_stop_patience",
        "10",
        "--train.progress_bar",
        "false",
        "--train.output_dir",
        str(out),
    ]


def _train(ctx, args: list[str]) -> dict:
    logging.disable(logging.INFO)
    return run(load_config(args), ctx)


def torchrun(args: list[str], *, fail_at: str | None = None, max_restarts: int = 0):
    """`torchrun --nproc_per_node 2 recsys_kdef/train.py ARGS` with the failure hook set."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop(FAIL_AT_STEP_ENV, None)
    if fail_at:
        env[FAIL_AT_STEP_ENV] = fail_at
    cmd = [
        "torchrun",
        "--standalone",
        "--nproc_per_node",
        "2",
        "--max-restarts",
        str(max_restarts),
        "recsys_kdef/train.py",
        *args,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    return run_multiprocess(_train, world_size=2, args=run_args(tiny_dataset, out))[0]


def assert_same_run(report: dict, reference: dict) -> None:
    assert report["steps"] == reference["steps"] == 18
    for split in ("valid", "test"):
        for head, metrics in reference[split].items():
            for name, value in metrics.items():
                assert report[split][head][name] == pytest.approx(value, abs=1e-6), (split, head)
    assert [h["step"] for h in report["history"]] == [h["step"] for h in reference["history"]]
    for ours, theirs in zip(report["history"], reference["history"], strict=True):
        assert ours["monitor_value"] == pytest.approx(theirs["monitor_value"], abs=1e-6)
        for name, value in theirs["train_loss"].items():
            assert ours["train_loss"][name] == pytest.approx(value, abs=1e-6), name


def test_resume_after_interruption_equals_the_uninterrupted_run(
    tiny_dataset, tmp_path, uninterrupted
):
    out = tmp_path / "run"
    killed = torchrun(run_args(tiny_dataset, out), fail_at="all:11")
    assert killed.returncode != 0 and not (out / "metrics.json").exists()
    root = out / ckpt.CHECKPOINTS
    assert [p.name for p in ckpt.step_checkpoints(root)] == ["step-000000008", "step-000000009"]
    # a half-written save (no meta.json) and a temporary directory are never picked
    partial = root / "step-000000010"
    shutil.copytree(root / "step-000000009", partial)
    (partial / ckpt.META).unlink()
    shutil.copytree(root / "step-000000009", root / ".tmp-step-000000011")
    assert ckpt.resume_point("auto", out) == root / "step-000000009"
    with pytest.raises(ckpt.CheckpointError, match="meta.json"):
        ckpt.read_meta(partial)

    resumed = torchrun([*run_args(tiny_dataset, out), "--train.resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    assert "resumed from" in resumed.stderr and "step-000000009" in resumed.stderr
    assert_same_run(json.loads((out / "metrics.json").read_text()), uninterrupted)
    kept = [p.name for p in ckpt.step_checkpoints(root)]
    assert kept == ["step-000000016", "step-000000018"]  # keep_last 2
    assert ckpt.read_meta(root / ckpt.BEST)["best_student"] in (0, 1)


def test_a_pipelined_run_equals_the_plain_run(tiny_dataset, tmp_path, uninterrupted):
    """train.pipeline through fit: validations every 4 steps, checkpoints every 3, LR decay,
    best weights restored, test evaluation; every number is the plain loop's."""
    args = [*run_args(tiny_dataset, tmp_path / "run"), "--train.pipeline", "true"]
    report = run_multiprocess(_train, world_size=2, args=args)[0]
    assert_same_run(report, uninterrupted)
    assert report["config"]["train"]["pipeline"] is True


def test_a_killed_rank_recovers_under_torchrun_max_restarts(tiny_dataset, tmp_path, uninterrupted):
    out = tmp_path / "run"
    args = [*run_args(tiny_dataset, out), "--train.resume", "auto"]
    proc = torchrun(args, fail_at="1:7", max_restarts=1)  # rank 1 dies after step 7 (mid-epoch)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "step-000000006" in proc.stderr  # restarted from the last checkpoint before the kill
    assert_same_run(json.loads((out / "metrics.json").read_text()), uninterrupted)


def test_resume_of_a_missing_checkpoint_names_it(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no complete step checkpoint"):
        ckpt.resume_point(str(tmp_path / "nothing"), tmp_path)
    assert ckpt.resume_point("auto", tmp_path) is None  # auto with nothing to resume: fresh start


def with_nan_rows(source: Path, target: Path) -> Path:
    """A copy of `source` whose first training file has NaN in every dense column."""
    shutil.copytree(source, target)
    first = sorted((target / "train").glob("*.parquet"))[0]
    table = pq.read_table(first)
    for i, name in enumerate(table.column_names):
        if pa.types.is_floating(table.schema.field(name).type) and name != "label":
            nan = pa.array(
                np.full(len(table), np.nan, dtype=np.float32), table.schema.field(name).type
            )
            table = table.set_column(i, name, nan)
    pq.write_table(table, first, row_group_size=500)
    return target


@pytest.mark.parametrize("pipeline", [False, True], ids=["plain", "pipelined"])
@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_a_nonfinite_loss_stops_or_is_skipped(tiny_dataset, tmp_path, mode, pipeline):
    data = with_nan_rows(tiny_dataset, tmp_path / "data")
    args = [
        *run_args(data, tmp_path / "run"),
        "--train.epochs",
        "1",
        "--train.nonfinite",
        mode,
        "--data.shuffle_buffer",
        "0",
        "--train.pipeline",
        str(pipeline).lower(),
    ]
    logging.disable(logging.INFO)
    ctx = init_distributed()
    try:
        if mode == "raise":
            with pytest.raises(NonFiniteLoss, match=r"at step 1 .*'loss': nan"):
                run(load_config(args), ctx)
        else:
            report = run(load_config(args), ctx)
            assert report["skipped_batches"] > 0
            assert all(np.isfinite(m["auc"]) for m in report["test"].values() if "auc" in m)
    finally:
        destroy_distributed()
        logging.disable(logging.NOTSET)
