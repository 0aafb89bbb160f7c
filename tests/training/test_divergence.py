"""Divergence beyond NaN/inf: a loss far above its running level or above the base-rate loss,
and a validation AUC near 0.5, stop the run (exit 1, metrics.json status failed), while
healthy training is left alone; output locations are checked before any work."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_kdef.config import ConfigError, TrainConfig, load_config
from recsys_kdef.distributed.process import DistContext, destroy_distributed, init_distributed
from recsys_kdef.train import run
from recsys_kdef.training.divergence import DivergenceWatch, TrainingDiverged, base_rate_loss

ROOT = Path(__file__).resolve().parents[2]
CTX = DistContext(0, 1, 0, 1, torch.device("cpu"), "gloo")


def watch_losses(losses: list[float], every: int = 5, **cfg) -> DivergenceWatch:
    """Feed per-step losses to a watch that checks every `every` steps, as the trainer does."""
    watch = DivergenceWatch(TrainConfig(**cfg), CTX, ctr=0.2)
    for step, loss in enumerate(losses, start=1):
        watch.add({"loss": torch.tensor(loss)})
        if step % every == 0:
            watch.check(step)
    return watch


def test_base_rate_loss_is_the_entropy_of_the_click_rate():
    p = 0.2
    labels = np.r_[np.ones(200), np.zeros(800)]
    bce = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))  # predict p everywhere
    assert base_rate_loss(p) == pytest.approx(bce)


def test_healthy_noisy_loss_curves_are_left_alone():
    rng = np.random.default_rng(0)
    steps = np.arange(2000)
    # falling from the init loss 0.8 to 0.35 with noisy batches; and an overfit run near 0
    healthy = 0.35 + 0.45 * np.exp(-steps / 300) + rng.normal(0, 0.05, len(steps))
    watch_losses(list(np.abs(healthy)), every=1)
    watch_losses(list(0.002 + rng.exponential(0.01, len(steps))), every=1)


def test_a_loss_far_above_its_running_level_stops_at_that_step():
    losses = [0.6] * 50 + [0.55] * 50 + [30.0] * 10
    with pytest.raises(TrainingDiverged, match=r"at step 105: mean loss 30 .* running level 0.5"):
        watch_losses(losses)
    watch_losses(losses, divergence_loss_factor=None)  # off


def test_a_ctr_loss_above_the_base_rate_loss_stops_before_validation():
    watch = DivergenceWatch(TrainConfig(), CTX, ctr=0.2)
    watch.check_window(10, {"loss": 1.0, "ctr": 0.9})  # 1.8 x H(0.2) = 0.5004: not yet
    with pytest.raises(TrainingDiverged, match=r"CTR loss 1.6 .*=3 x 0.5004.*click rate 0.2000"):
        watch.check_window(20, {"loss": 2.0, "ctr": 1.6})
    DivergenceWatch(TrainConfig(), CTX, ctr=None).check_window(20, {"ctr": 99.0})  # rate unknown


@pytest.mark.parametrize(
    "key, value",
    [
        ("divergence_loss_factor", 1.0),
        ("divergence_base_rate_factor", 0.5),
        ("divergence_min_auc", 1.0),
    ],
)
def test_thresholds_are_validated_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"train.{key}"):
        load_config([f"--train.{key}", str(value)])


def tiny_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data.path", str(data), "--data.batch_size", "256",
        "--model.num_students", "2", "--model.tower.hidden_units", "[16]",
        "--train.epochs", "1", "--train.progress_bar", "false", "--train.log_every_steps", "1",
        "--train.output_dir", str(out), *extra,
    ]  # fmt: skip


def run_here(args: list[str]) -> dict:
    logging.disable(logging.INFO)
    ctx = init_distributed()
    try:
        return run(load_config(args), ctx)
    finally:
        destroy_distributed()
        logging.disable(logging.NOTSET)


def test_a_healthy_run_passes_every_check_and_is_recorded_ok(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    report = run_here(tiny_args(tiny_dataset, out, "--train.eval_every_steps", "3"))
    assert report["status"] == "ok"
    assert json.loads((out / "metrics.json").read_text())["status"] == "ok"
    assert report["valid"]["ensemble"]["auc"] > 0.51


def test_a_validation_auc_near_chance_fails_the_run(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    args = tiny_args(tiny_dataset, out, "--train.divergence_min_auc", "0.99")  # planted: ~0.7
    with pytest.raises(TrainingDiverged, match=r"validation AUC of 'ensemble' is 0\.\d+, below"):
        run_here(args)
    report = json.loads((out / "metrics.json").read_text())
    assert report["status"] == "failed" and "divergence_min_auc=0.99" in report["error"]
    assert "test" not in report  # no result is reported for a failed run
    log = (out / "train.log").read_text()  # why it failed, under a timestamp
    assert re.search(r"\d\d:\d\d:\d\d run failed: .*divergence_min_auc=0\.99", log)


@pytest.mark.slow
def test_a_diverging_run_exits_nonzero_and_is_recorded_failed(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    args = tiny_args(tiny_dataset, out, "--train.dense_lr", "1e6", "--train.sparse_lr", "1e6")
    cmd = [sys.executable, "recsys_kdef/train.py", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "error: training diverged" in proc.stderr and "Traceback" not in proc.stderr
    report = json.loads((out / "metrics.json").read_text())
    assert report["status"] == "failed" and report["error"].startswith("training diverged")
    assert report["failed_at_step"] >= 1 and "history" not in report
    log = (out / "train.log").read_text()  # the plan (logged before training) and the failure
    assert "sharding plan" in log and "run failed: training diverged" in log


@pytest.mark.parametrize("where", ["under-a-file", "checkpoints-is-a-file", "proc"])
def test_an_unwritable_output_dir_fails_before_any_work(tiny_dataset, tmp_path, where):
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    out = {
        "under-a-file": blocker / "run",
        "checkpoints-is-a-file": tmp_path / "run",
        "proc": Path("/proc/recsys_kdef_test/run"),
    }[where]
    if where == "checkpoints-is-a-file":
        out.mkdir()
        (out / "checkpoints").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ConfigError, match=r"train\.output_dir.*=" + str(out)):
        run_here(tiny_args(tiny_dataset, out))
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_evaluate_out_is_checked_before_the_checkpoint_is_read(tmp_path):
    from recsys_kdef.eval.__main__ import main

    fake = tmp_path / "ckpt"  # looks complete; never read since --out fails first
    fake.mkdir()
    (fake / "meta.json").write_text("{")
    (fake / ".metadata").write_text("")
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    argv = ["--checkpoint", str(fake), "--data", str(tmp_path), "--out", str(blocker / "eval")]
    with pytest.raises(SystemExit, match=f"--out={blocker / 'eval'}: cannot create it"):
        main(argv)


@pytest.mark.parametrize("tool", ["export", "diagnose", "predict"])
def test_other_tools_check_their_outputs_before_reading_anything(tmp_path, tool):
    """A checkpoint (or model) that would fail to load: the output location fails first."""
    from recsys_kdef.analysis import diagnose
    from recsys_kdef.serve import export, predict

    fake = tmp_path / "ckpt"
    fake.mkdir()
    (fake / "meta.json").write_text("{")
    (fake / ".metadata").write_text("")
    (fake / "model.pt").write_text("")
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    target = blocker / "out"
    argv, main = {
        "export": (["--checkpoint", str(fake), "--out", str(target)], export.main),
        "diagnose": (["--checkpoint", str(fake), "--out", str(target)], diagnose.main),
        "predict": (
            ["--model", str(fake), "--input", str(blocker), "--output", str(target / "p.parquet")],
            predict.main,
        ),
    }[tool]
    with pytest.raises(SystemExit, match=rf"--out.*={target}.*: cannot create it: {blocker} is a"):
        main(argv)
    assert blocker.read_text() == "x"
