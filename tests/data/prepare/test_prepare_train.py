"""A prepared MovieLens-style dataset trains with the demo's command line (torchx, 2 processes,
K=4 KDEF) and the ensemble learns the planted taste signal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_kdef.data.prepare.__main__ import main as prepare_main
from recsys_kdef.data.prepare.fake import make_fake

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_kdef_learns_on_prepared_movielens(tmp_path):
    make_fake("movielens", tmp_path / "ml-1m", 150_000, seed=11)
    data = tmp_path / "movielens"
    prepare_main(
        ["movielens", "--raw", str(tmp_path / "ml-1m"), "--out", str(data), "--no-progress"]
    )
    out = tmp_path / "run"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [
        "torchx", "run", "-s", "local_cwd", "dist.ddp", "-j", "1x2",
        "--script", "recsys_kdef/train.py", "--",
        "--config", "configs/movielens.yaml",
        "--data.path", str(data),
        "--data.batch_size", "1024",
        "--model.tower.hidden_units", "[128,64]",
        "--train.epochs", "4",
        "--train.output_dir", str(out),
        "--train.progress_bar", "false",
        "--train.save_checkpoint", "false",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads((out / "metrics.json").read_text())
    test = report["test"]
    assert test["ensemble"]["auc"] > 0.7, test["ensemble"]
    for k in range(4):
        assert test[f"student_{k}"]["auc"] > 0.68, test[f"student_{k}"]
    assert test["ensemble"]["gauc"] > 0.6  # UserID is the group key
    assert report["dataset"]["card"]["source"]["format"] == "movielens"
