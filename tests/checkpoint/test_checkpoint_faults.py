"""Damaged and foreign checkpoints are errors naming the file and the difference (checked
before DCP reads anything); a rank SIGKILLed from outside, during training or while a
checkpoint is being written, leaves a run that resumes to the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from multiprocess import run_multiprocess
from test_checkpoint import ROOT, _train, assert_same_run, run_args

from recsys_kdef.checkpoint import store as ckpt
from recsys_kdef.config import load_config
from recsys_kdef.distributed.process import destroy_distributed, init_distributed
from recsys_kdef.train import run


def train_here(args: list[str]) -> dict:
    ctx = init_distributed()
    try:
        return run(load_config(args), ctx)
    finally:
        destroy_distributed()


@pytest.fixture(scope="module")
def one_rank_run(tiny_dataset, tmp_path_factory) -> Path:
    """A finished 1-rank run of test_checkpoint's recipe (1 epoch): best/ and step-*/ on disk."""
    out = tmp_path_factory.mktemp("faults") / "run"
    train_here([*run_args(tiny_dataset, out), "--train.epochs", "1"])
    return out


def copy_run(source: Path, target: Path) -> Path:
    subprocess.run(["cp", "-r", str(source), str(target)], check=True)
    return target


def shard_of(directory: Path) -> Path:
    return sorted(directory.glob("*.distcp"))[0]


def test_a_truncated_shard_is_named_before_dcp_reads_it(one_rank_run, tmp_path):
    run_dir = copy_run(one_rank_run, tmp_path / "run")
    best = run_dir / ckpt.CHECKPOINTS / ckpt.BEST
    shard = shard_of(best)
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(
        ckpt.CheckpointError, match=f"{shard}: truncated shard: {size // 2:,} bytes"
    ):
        ckpt.load_checkpoint(run_dir)


def test_a_shard_damaged_inside_is_an_error_naming_the_checkpoint(one_rank_run, tmp_path):
    run_dir = copy_run(one_rank_run, tmp_path / "run")
    best = run_dir / ckpt.CHECKPOINTS / ckpt.BEST
    shard = shard_of(best)
    data = bytearray(shard.read_bytes())
    data[: len(data) // 2] = bytes(len(data) // 2)  # same size, zeros over the first half
    shard.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match=f"{shard}: damaged: CRC-32 .* written as"):
        ckpt.load_checkpoint(run_dir)
    meta = json.loads((best / ckpt.META).read_text())
    del meta["files"]  # a checkpoint without sums: DCP's own failure, named
    (best / ckpt.META).write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match=f"{best}: reading its shards .* damaged"):
        ckpt.load_checkpoint(run_dir)


def test_damaged_tensor_bytes_are_never_loaded_as_weights(one_rank_run, tiny_dataset, tmp_path):
    """256 zero bytes inside a tensor's data: DCP itself reads them without complaint (the
    control), the sums meta.json records name the shard for every loader."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint import load as dcp_load

    from recsys_kdef.checkpoint import safe_dcp
    from recsys_kdef.eval.__main__ import main as evaluate_main

    run_dir = copy_run(one_rank_run, tmp_path / "run")
    best = run_dir / ckpt.CHECKPOINTS / ckpt.BEST
    good = ckpt.load_checkpoint(run_dir)["state_dict"]
    metadata = safe_dcp.read_metadata(best)
    index, info = max(metadata.storage_data.items(), key=lambda item: item[1].length)
    shard = best / info.relative_path
    data = bytearray(shard.read_bytes())
    middle = info.offset + info.length // 2
    data[middle : middle + 256] = bytes(256)
    shard.write_bytes(bytes(data))
    name = index.fqn[len("model.") :]
    damaged = {name: torch.empty_like(good[name[len("model.") :]])}
    dcp_load({"model": damaged}, storage_reader=FileSystemReader(str(best)), no_dist=True)
    assert not torch.equal(damaged[name], good[name[len("model.") :]])  # DCP: silently wrong
    with pytest.raises(ckpt.CheckpointError, match=f"{shard}: damaged: CRC-32"):
        ckpt.load_checkpoint(run_dir)  # export, diagnose, ECKD teachers
    argv = ["--checkpoint", str(best), "--data", str(tiny_dataset), "--no-plots", "--no-progress"]
    with pytest.raises(SystemExit, match=f"{shard}: damaged: CRC-32"):
        evaluate_main(argv)  # load_into: evaluate, resume, the best weights after training


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"format": 2, "config": 5', r"meta.json: not valid JSON"),
        ('{"format": 2, "config": 5}', r"meta.json: config, schema, model_prefix, world_size"),
        ("[1, 2]", r"meta.json: format list, expected 2"),
    ],
)
def test_a_damaged_meta_json_is_named(one_rank_run, tmp_path, text, expected):
    run_dir = copy_run(one_rank_run, tmp_path / "run")
    best = run_dir / ckpt.CHECKPOINTS / ckpt.BEST
    (best / ckpt.META).write_text(text)
    with pytest.raises(ckpt.CheckpointError, match=expected):
        ckpt.load_checkpoint(run_dir)
    meta = json.loads((one_rank_run / ckpt.CHECKPOINTS / ckpt.BEST / ckpt.META).read_text())
    meta["config"]["model"]["tower"]["bogus"] = 1
    (best / ckpt.META).write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match=r"meta.json: its config or schema is invalid"):
        ckpt.load_checkpoint(run_dir)


@pytest.mark.parametrize("record", [{"../../x": [1, "00000000"]}, {"__0_0.distcp": "x"}])
def test_a_malformed_record_of_sums_is_named(one_rank_run, tmp_path, record):
    run_dir = copy_run(one_rank_run, tmp_path / "run")
    best = run_dir / ckpt.CHECKPOINTS / ckpt.BEST
    meta = json.loads((best / ckpt.META).read_text())
    meta["files"] |= record
    (best / ckpt.META).write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match=r"meta.json: its record of .* is not \[bytes"):
        ckpt.load_checkpoint(run_dir)


def test_export_and_diagnose_of_a_checkpoint_whose_tensors_differ_name_them(one_rank_run, tmp_path):
    """meta.json says K=3, the shards hold K=2: every full-weights loader says so, no
    state-dict traceback, no artifact."""
    from recsys_kdef.analysis import diagnose
    from recsys_kdef.serve import export

    run_dir = copy_run(one_rank_run, tmp_path / "run")
    best = run_dir / ckpt.CHECKPOINTS / ckpt.BEST
    meta = json.loads((best / ckpt.META).read_text())
    meta["config"]["model"]["num_students"] = 3
    (best / ckpt.META).write_text(json.dumps(meta))
    expected = rf"{best}: holds another model .*s2__.* \(the model meta.json's config"
    with pytest.raises(SystemExit, match=expected):
        export.main(["--checkpoint", str(run_dir), "--out", str(tmp_path / "art")])
    with pytest.raises(SystemExit, match=expected):
        diagnose.main(["--checkpoint", str(run_dir), "--out", str(tmp_path / "diag")])
    assert not (tmp_path / "art" / "model.pt").exists()
    assert not (tmp_path / "diag" / "diagnose.json").exists()


def test_resume_with_another_model_names_the_difference(one_rank_run, tiny_dataset, tmp_path):
    run_dir = copy_run(one_rank_run, tmp_path / "run")
    args = [
        *run_args(tiny_dataset, run_dir),
        "--train.resume", "auto", "--model.num_students", "3", "--model.embedding_dim", "8",
    ]  # fmt: skip
    with pytest.raises(ckpt.CheckpointError) as e:
        train_here(args)
    assert "model.embedding_dim: checkpoint 16, config 8" in str(e.value)
    assert "model.num_students: checkpoint 2, config 3" in str(e.value)
    assert str(run_dir / ckpt.CHECKPOINTS) in str(e.value)


def test_evaluate_of_a_checkpoint_whose_tensors_differ_names_them(
    one_rank_run, tiny_dataset, tmp_path
):
    """meta.json says K=3, the shards hold K=2: caught from DCP's .metadata, not by DCP."""
    from recsys_kdef.eval.__main__ import main

    run_dir = copy_run(one_rank_run, tmp_path / "run")
    best = run_dir / ckpt.CHECKPOINTS / ckpt.BEST
    meta = json.loads((best / ckpt.META).read_text())
    meta["config"]["model"]["num_students"] = 3
    (best / ckpt.META).write_text(json.dumps(meta))
    argv = ["--checkpoint", str(best), "--data", str(tiny_dataset), "--no-plots", "--no-progress"]
    expected = r"holds another model .* not in it \(.*s2__.*\(the model meta.json's config"
    with pytest.raises(SystemExit, match=expected) as e:
        main(argv)
    assert str(best) in str(e.value.code)
    assert not (best / "evaluation.json").exists()


@pytest.fixture(scope="module")
def reference(tiny_dataset, tmp_path_factory) -> dict:
    """test_checkpoint's recipe run on 2 ranks without interruption."""
    out = tmp_path_factory.mktemp("reference")
    return run_multiprocess(_train, world_size=2, args=run_args(tiny_dataset, out))[0]


def rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    """The pid of `rank` among the launcher's children (their RANK environment variable)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if (
                ppid == launcher.pid
                and f"RANK={rank}\0".encode() in (entry / "environ").read_bytes()
            ):
                return int(entry.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


def kill_rank_when(launcher: subprocess.Popen, rank: int, ready, timeout: float = 300) -> str:
    """SIGKILL `rank` from outside as soon as `ready()` returns a description; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and launcher.poll() is None:
        what = ready()
        if what:
            pid = rank_pid(launcher, rank)
            assert pid is not None, "rank process not found"
            os.kill(pid, signal.SIGKILL)
            return what
        time.sleep(0.0005)
    raise AssertionError(f"the run ended before the kill point ({launcher.returncode})")


def launch(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    cmd = ["torchrun", "--standalone", "--nproc_per_node", "2", "recsys_kdef/train.py", *args]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def resume_and_compare(tiny_dataset, out: Path, reference: dict) -> None:
    from test_checkpoint import torchrun

    resumed = torchrun([*run_args(tiny_dataset, out), "--train.resume", "auto"])
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    assert "resumed from" in resumed.stderr
    assert_same_run(json.loads((out / "metrics.json").read_text()), reference)


@pytest.mark.slow
def test_a_rank_sigkilled_during_training_resumes_to_the_same_run(
    tiny_dataset, tmp_path, reference
):
    out = tmp_path / "run"
    launcher = launch(run_args(tiny_dataset, out))
    root = out / ckpt.CHECKPOINTS
    step3 = root / ckpt.step_name(3)
    kill_rank_when(launcher, 1, lambda: (step3 / ckpt.META).is_file() and "after step 3")
    launcher.communicate(timeout=300)
    assert launcher.returncode != 0 and not (out / "metrics.json").exists()
    resume_and_compare(tiny_dataset, out, reference)


@pytest.mark.slow
def test_a_rank_sigkilled_while_a_checkpoint_is_written_resumes(tiny_dataset, tmp_path, reference):
    out = tmp_path / "run"
    launcher = launch(run_args(tiny_dataset, out))
    root = out / ckpt.CHECKPOINTS

    def writing() -> str | None:  # a temporary checkpoint after the first complete one
        if not root.is_dir() or not ckpt.step_checkpoints(root):
            return None
        tmp = [p.name for p in root.iterdir() if p.name.startswith(".tmp-step-")]
        return tmp[0] if tmp else None

    killed_during = kill_rank_when(launcher, 1, writing)
    launcher.communicate(timeout=300)
    assert launcher.returncode != 0 and not (out / "metrics.json").exists()
    assert killed_during.startswith(".tmp-step-")
    assert ckpt.resume_point("auto", out) in ckpt.step_checkpoints(root)  # never the .tmp-
    resume_and_compare(tiny_dataset, out, reference)
