"""End to end: the demo under torchx with 2 processes learns the planted signal; the plain
script runs in 1 process; early stopping restores the best weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from recsys_kdef.builders.job import build_job, checkpoint_meta
from recsys_kdef.config import SyntheticConfig, load_config
from recsys_kdef.data.synthetic import generate
from recsys_kdef.distributed.process import destroy_distributed, init_distributed
from recsys_kdef.eval.evaluate import evaluate
from recsys_kdef.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def env_with_venv() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # torchrun, torchx
    return env


@pytest.mark.slow
def test_demo_under_torchx_learns_the_planted_signal(tmp_path):
    """The README's demo command (2 processes, K=4 KDEF) reaches near-Bayes AUC."""
    demo = load_config(["--config", str(ROOT / "configs/demo.yaml")])
    data = tmp_path / "demo"
    generate(demo.data.synthetic, data)
    out = tmp_path / "run"
    cmd = [
        "torchx",
        "run",
        "-s",
        "local_cwd",
        "dist.ddp",
        "-j",
        "1x2",
        "--script",
        "recsys_kdef/train.py",
        "--",
        "--config",
        "configs/demo.yaml",
        "--data.path",
        str(data),
        "--train.output_dir",
        str(out),
        "--train.progress_bar",
        "false",
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env_with_venv(), capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads((out / "metrics.json").read_text())
    assert report["world_size"] == 2
    assert report["config"]["model"]["num_students"] == 4
    test, bayes = report["test"], report["dataset"]["bayes_auc"]["test"]
    assert test["ensemble"]["auc"] > bayes - 0.02, (test["ensemble"]["auc"], bayes)
    for k in range(4):
        assert test[f"student_{k}"]["auc"] > test["ensemble"]["auc"] - 0.01
        assert set(test[f"student_{k}"]) == {
            "auc",
            "auc_bound",
            "logloss",
            "ne",
            "gauc",
            "calibration",
        }
        assert test[f"student_{k}"]["auc_bound"] < 1e-3  # trained scores spread over many bins
    best = test["best_student"]["index"]
    assert test["best_student"]["auc"] == test[f"student_{best}"]["auc"]
    assert report["valid"][f"student_{best}"]["auc"] == max(
        report["valid"][f"student_{k}"]["auc"] for k in range(4)
    )
    assert len(report["plan"]) == 4 * 11  # K x F tables in one collection, all planned
    printed = proc.stdout + proc.stderr  # torchx relays the workers' output on its stderr
    assert "best_student (student_" in printed and "Bayes-optimal test AUC" in printed

    # the best student, gathered from the 2 ranks' shards and exported, scores the test split in a
    # fresh process with the AUC the sharded run measured for it
    artifact = tmp_path / "best"
    export = [
        sys.executable,
        "-m",
        "recsys_kdef.serve.export",
        "--checkpoint",
        str(out),
        "--out",
        str(artifact),
    ]
    assert subprocess.run(export, cwd=ROOT, capture_output=True).returncode == 0
    preds, labels = [], []
    for i, part in enumerate(sorted((data / "test").glob("*.parquet"))):
        scored = tmp_path / f"scored_{i}.parquet"
        cmd = [
            sys.executable,
            "-m",
            "recsys_kdef.serve.predict",
            "--model",
            str(artifact),
            "--input",
            str(part),
            "--output",
            str(scored),
        ]
        assert subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0
        table = pq.read_table(scored)
        preds.append(torch.from_numpy(table.column("prediction").to_numpy()))
        labels.append(torch.from_numpy(table.column("label").to_numpy()))
    auc = binary_auroc(torch.cat(preds), torch.cat(labels).long()).item()
    assert auc == pytest.approx(test["best_student"]["auc"], abs=1e-4)


@pytest.fixture(scope="module")
def overfit_data(tmp_path_factory) -> Path:
    """Many rare ids and few rows: validation AUC peaks early, then falls."""
    cfg = SyntheticConfig(
        rows=12000,
        num_sparse=4,
        num_multi=0,
        num_dense=1,
        vocab_size=3000,
        num_users=3000,
        row_group_size=1000,
        seed=3,
    )
    path = tmp_path_factory.mktemp("overfit") / "data"
    generate(cfg, path)
    return path


def train_script(*args: str) -> subprocess.CompletedProcess:
    """`python recsys_kdef/train.py ARGS` in a fresh process (one rank, no launcher)."""
    cmd = [sys.executable, "recsys_kdef/train.py", "--train.progress_bar", "false", *args]
    return subprocess.run(
        cmd, cwd=ROOT, env=env_with_venv(), capture_output=True, text=True, timeout=600
    )


def test_plain_script_runs_in_one_process(overfit_data, tmp_path):
    proc = train_script(
        "--data.path",
        str(overfit_data),
        "--train.output_dir",
        str(tmp_path),
        "--train.epochs",
        "1",
        "--train.eval_every_steps",
        "5",
        "--data.batch_size",
        "512",
        "--model.tower.hidden_units",
        "[16]",
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["world_size"] == 1
    steps = report["steps"]
    assert steps % 5 and [h["step"] for h in report["history"]] == [*range(5, steps, 5), steps]
    assert (tmp_path / "checkpoints" / "best" / "meta.json").is_file()


@pytest.mark.parametrize("metric", ["auc", "auc_minus_logloss"])
def test_early_stopping_decays_lr_and_restores_the_best_weights(overfit_data, tmp_path, metric):
    cfg = load_config(
        [
            "--train.monitor_metric",
            metric,
            "--data.path",
            str(overfit_data),
            "--data.batch_size",
            "256",
            "--model.num_students",
            "2",
            "--model.tower.hidden_units",
            "[32]",
            "--train.sparse_lr",
            "0.3",
            "--train.dense_lr",
            "0.01",
            "--train.epochs",
            "8",
            "--train.early_stop_patience",
            "2",
            "--train.progress_bar",
            "false",
            "--train.output_dir",
            str(tmp_path),
        ]
    )
    ctx = init_distributed()
    try:
        job = build_job(cfg, ctx)
        meta = checkpoint_meta(cfg, job.schema)
        fit = Trainer(job.module, job.optimizer, ctx, cfg.train, meta).fit(
            job.readers.train, job.readers.valid
        )
        assert fit.stopped_early and len(fit.history) < cfg.train.epochs
        aucs = [v.monitor_value for v in fit.history]
        assert fit.best.monitor_value == max(aucs) and aucs[-1] < max(aucs)
        # the learning rate after each validation without gain is 10x lower
        # lr is logged before the decision at each validation: after a validation without gain,
        # every learning rate (dense, fused sparse) is 10x lower at the next one
        # ... unless the ensemble's AUC still rose (the AUC guard of AUC - logloss)
        head = [v.result.metrics["ensemble"]["auc"] for v in fit.history]
        guarded = metric == "auc_minus_logloss"
        bad = [
            i
            for i in range(1, len(aucs))
            if aucs[i] <= max(aucs[:i]) and not (guarded and head[i] > max(head[:i]))
        ]
        assert bad and bad[-1] == len(aucs) - 1
        for i in bad[:-1]:
            for key, lr in fit.history[i].lr.items():
                assert fit.history[i + 1].lr[key] == pytest.approx(lr * 0.1), key
        assert fit.history[0].lr["sparse"] == pytest.approx(0.3)
        for v in fit.history:  # the monitored value is the ensemble's AUC [- logloss]
            ensemble = v.result.metrics["ensemble"]
            want = ensemble["auc"] - (ensemble["logloss"] if metric != "auc" else 0.0)
            assert v.monitor_value == pytest.approx(want, abs=1e-9)
        again = evaluate(job.module, job.readers.valid, ctx).metrics["ensemble"]
        restored = again["auc"] - (again["logloss"] if metric != "auc" else 0.0)
        assert restored == pytest.approx(fit.best.monitor_value, abs=1e-6)
    finally:
        destroy_distributed()


def test_no_validation_of_the_warm_up_decays_or_stops(overfit_data, tmp_path):
    """The same run as above (which stops early) with every epoch inside the warm-up."""
    args = ["--data.path", str(overfit_data), "--data.batch_size", "256"]
    args += ["--model.num_students", "2", "--model.tower.hidden_units", "[32]"]
    args += ["--train.sparse_lr", "0.3", "--train.dense_lr", "0.01", "--train.epochs", "5"]
    args += ["--train.early_stop_patience", "1", "--train.early_stop_warmup", "5"]
    args += ["--train.progress_bar", "false", "--train.output_dir", str(tmp_path)]
    cfg = load_config(args)
    ctx = init_distributed()
    try:
        job = build_job(cfg, ctx)
        meta = checkpoint_meta(cfg, job.schema)
        fit = Trainer(job.module, job.optimizer, ctx, cfg.train, meta).fit(
            job.readers.train, job.readers.valid
        )
        assert not fit.stopped_early and len(fit.history) == 5
        values = [v.monitor_value for v in fit.history]
        assert any(values[i] <= max(values[:i]) for i in range(1, 5))  # it would have stopped
        assert all(v.lr == fit.history[0].lr for v in fit.history)  # and never decayed
        assert fit.best.monitor_value == max(values)
    finally:
        destroy_distributed()


def test_report_is_not_written_when_training_fails(overfit_data, tmp_path):
    proc = train_script(
        "--data.path",
        str(overfit_data),
        "--train.output_dir",
        str(tmp_path / "out"),
        "--data.batch_size",
        "100000",
    )
    assert proc.returncode != 0
    assert "lower data.batch_size" in proc.stderr
    assert "Traceback" not in proc.stderr  # a data error is a message for the user, not a crash
    assert not (tmp_path / "out").exists()


def test_a_trainer_without_checkpoint_meta_is_refused_before_any_step():
    """Else the run would fail only at its end, when it reloads its best checkpoint."""
    cfg = load_config([])
    with pytest.raises(ValueError, match="config, schema, model_prefix: pass checkpoint_meta"):
        Trainer(None, None, None, cfg.train, {})
    with pytest.raises(ValueError, match=r"lacks model_prefix"):
        Trainer(None, None, None, cfg.train, {"config": {}, "schema": {}})
