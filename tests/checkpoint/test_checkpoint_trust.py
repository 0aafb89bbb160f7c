"""A checkpoint directory from elsewhere cannot run code: a crafted DCP `.metadata` (or a
pickled shard entry) whose unpickling would create a marker file is refused by every loader
(evaluate, export, diagnose, train --train.resume auto, ECKD teachers, predict), and nothing
runs; the attacker here also rewrites meta.json's file sums, as anyone who edits the files can."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

from recsys_kdef import train as train_cli
from recsys_kdef.analysis import diagnose
from recsys_kdef.checkpoint import safe_dcp
from recsys_kdef.checkpoint import store as ckpt
from recsys_kdef.checkpoint.checks import file_sums
from recsys_kdef.config import load_config
from recsys_kdef.distributed.process import destroy_distributed, init_distributed
from recsys_kdef.eval import __main__ as offline_eval
from recsys_kdef.serve.export import export_artifact
from recsys_kdef.train import run


class Payload:
    """Unpickles into `os.system("touch MARKER")`: what an attacker plants."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class DottedPayload(Payload):
    """Unpickles into `pathlib.Path.touch(MARKER)`: a dotted name under an allowed module."""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def train_args(data: Path, out: Path) -> list[str]:
    return [
        "--data.path", str(data), "--data.batch_size", "512", "--model.num_students", "2",
        "--model.tower.hidden_units", "[8]", "--train.epochs", "1",
        "--train.checkpoint_every_steps", "4", "--train.progress_bar", "false",
        "--train.output_dir", str(out),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory) -> Path:
    """A real 1-epoch run: checkpoints/best and step-* checkpoints written by DCP."""
    out = tmp_path_factory.mktemp("trusted") / "run"
    logging.disable(logging.INFO)
    ctx = init_distributed()
    try:
        run(load_config(train_args(tiny_dataset, out)), ctx)
    finally:
        destroy_distributed()
        logging.disable(logging.NOTSET)
    return out


def resum(checkpoint: Path) -> None:
    """Record the files' new sizes and sums in meta.json, as an attacker who edits a checkpoint
    can (the sums detect damage, not tampering)."""
    meta = json.loads((checkpoint / ckpt.META).read_text())
    meta["files"] = file_sums(checkpoint, [*meta["files"], *(
        p.name for p in checkpoint.glob("*.distcp") if p.name not in meta["files"]
    )])  # fmt: skip
    (checkpoint / ckpt.META).write_text(json.dumps(meta))


def plant(checkpoint: Path, payload: object, sums: bool = True) -> None:
    """Replace `.metadata` by the real metadata with `payload` inside (planner_data); with
    `sums`, meta.json's record of it too."""
    with (checkpoint / ".metadata").open("rb") as f:
        metadata = pickle.load(f)  # our own file, written by the fixture
    metadata.planner_data = {"x": payload}
    (checkpoint / ".metadata").write_bytes(pickle.dumps(metadata))
    if sums:
        resum(checkpoint)


@pytest.fixture
def checkpoint(trained, tmp_path) -> Path:
    """A copy of the trained run's best checkpoint, for a test to damage."""
    copy = tmp_path / "best"
    shutil.copytree(trained / ckpt.CHECKPOINTS / ckpt.BEST, copy)
    return copy


@pytest.fixture
def evil_run(trained, tmp_path) -> tuple[Path, Path]:
    """A copy of the run whose best and newest step checkpoint carry the payload; the marker."""
    run_dir = tmp_path / "evil"
    shutil.copytree(trained, run_dir)
    marker = tmp_path / "PWNED"
    root = run_dir / ckpt.CHECKPOINTS
    for checkpoint in (root / ckpt.BEST, ckpt.step_checkpoints(root)[-1]):
        plant(checkpoint, Payload(marker))
    return run_dir, marker


@pytest.mark.parametrize("payload", [Payload, DottedPayload])
def test_the_payload_runs_under_pickle_and_is_refused_by_the_reader(checkpoint, tmp_path, payload):
    marker = tmp_path / "PWNED"
    plant(checkpoint, payload(marker))
    pickle.loads((checkpoint / ".metadata").read_bytes())  # the control: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"\.metadata: refused.*not part of DCP"):
        safe_dcp.read_metadata(checkpoint)
    with pytest.raises(ckpt.CheckpointError, match="refused"):
        ckpt.load_checkpoint(checkpoint)
    assert not marker.exists()


def test_a_planted_metadata_without_new_sums_is_refused_as_damaged(checkpoint, tmp_path):
    marker = tmp_path / "PWNED"
    plant(checkpoint, Payload(marker), sums=False)
    with pytest.raises(ckpt.CheckpointError, match=r"\.metadata: .* bytes, .*meta.json records"):
        ckpt.load_checkpoint(checkpoint)
    assert not marker.exists()


def test_a_whole_file_payload_and_a_non_pickle_are_refused(checkpoint, tmp_path):
    marker = tmp_path / "PWNED"
    (checkpoint / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ckpt.CheckpointError, match=r"posix\.system|os\.system"):
        safe_dcp.read_metadata(checkpoint)
    (checkpoint / ".metadata").write_bytes(b"not a pickle")
    with pytest.raises(ckpt.CheckpointError, match=r"\.metadata: refused"):
        safe_dcp.read_metadata(checkpoint)
    assert not marker.exists()


def test_storage_files_outside_the_checkpoint_are_refused(checkpoint):
    metadata = safe_dcp.read_metadata(checkpoint)
    (index, info), *_ = metadata.storage_data.items()
    info.relative_path = "../../" + info.relative_path
    (checkpoint / ".metadata").write_bytes(pickle.dumps(metadata))
    with pytest.raises(ckpt.CheckpointError, match=r"is stored in '\.\./\.\./__0_0\.distcp'"):
        safe_dcp.read_metadata(checkpoint)


def test_every_loader_refuses_a_planted_metadata_and_runs_nothing(
    evil_run, tiny_dataset, tmp_path, capsys
):
    run_dir, marker = evil_run
    best = run_dir / ckpt.CHECKPOINTS / ckpt.BEST
    refused = r"\.metadata: refused"
    with pytest.raises(SystemExit, match=refused):  # python -m recsys_kdef.eval
        offline_eval.main(["--checkpoint", str(run_dir), "--data", str(tiny_dataset), "--no-plots"])
    with pytest.raises(ckpt.CheckpointError, match=refused):  # python -m recsys_kdef.serve.export
        export_artifact(run_dir, tmp_path / "export")
    with pytest.raises(SystemExit, match=refused):  # python -m recsys_kdef.analysis.diagnose
        diagnose.main(["--checkpoint", str(best), "--out", str(tmp_path / "diag")])
    with pytest.raises(SystemExit, match=refused):  # train --train.resume auto (a step-*)
        train_cli.main([*train_args(tiny_dataset, run_dir), "--train.resume", "auto"])
    teacher = [  # ECKD, pre-trained teacher
        "--objective.name", "eckd", "--objective.eckd.teachers", f"[{run_dir}]",
        "--train.monitor", "distill",
    ]  # fmt: skip
    with pytest.raises(SystemExit, match=refused):
        train_cli.main([*train_args(tiny_dataset, tmp_path / "student"), *teacher])
    assert not marker.exists()
    assert not (tmp_path / "export" / "model.pt").exists()


def test_a_pickled_shard_entry_is_read_as_plain_data_only(evil_run, tiny_dataset, tmp_path):
    """A tensor re-declared as a bytes entry whose bytes are a torch.save'd payload: DCP's own
    planner would torch.load it with weights_only=False."""
    run_dir, marker = evil_run
    best = run_dir / ckpt.CHECKPOINTS / ckpt.BEST
    shutil.copytree(ckpt.step_checkpoints(run_dir / ckpt.CHECKPOINTS)[0], best, dirs_exist_ok=True)
    metadata = safe_dcp.read_metadata(best)
    fqn = next(k for k in metadata.state_dict_metadata if ".towers." in k)
    blob = io.BytesIO()
    torch.save(Payload(marker), blob)
    (best / "__9_0.distcp").write_bytes(blob.getvalue())
    metadata.state_dict_metadata[fqn] = BytesStorageMetadata()
    metadata.storage_data[MetadataIndex(fqn)] = type(next(iter(metadata.storage_data.values())))(
        relative_path="__9_0.distcp", offset=0, length=len(blob.getvalue())
    )
    (best / ".metadata").write_bytes(pickle.dumps(metadata))
    resum(best)
    # the model's loaders: its tensor is missing (checked from .metadata, before DCP reads)
    with pytest.raises(SystemExit, match=rf"{best}: holds another model .*{fqn[6:]}"):
        offline_eval.main(["--checkpoint", str(best), "--data", str(tiny_dataset), "--no-plots"])
    with pytest.raises(ckpt.CheckpointError, match=rf"{best}: holds another model"):
        export_artifact(best, tmp_path / "export")
    # the entry asked for directly (as resume asks for optimizer entries): the planner refuses
    state = {"model": {fqn[len("model.") :]: torch.empty(1)}}
    with pytest.raises(ckpt.CheckpointError, match=rf"entry '{fqn}': refused, not plain data"):
        safe_dcp.load(state, best, no_dist=True)
    with pytest.raises(ckpt.CheckpointError) as refused:
        safe_dcp.load(state, best, no_dist=True)
    assert "GLOBAL" in str(refused.value) and "weights_only` set to `False" not in str(
        refused.value
    )
    assert not marker.exists()


def test_a_pickled_rng_state_is_refused_naming_the_file(trained, tmp_path):
    checkpoint = tmp_path / "step"
    shutil.copytree(ckpt.step_checkpoints(trained / ckpt.CHECKPOINTS)[-1], checkpoint)
    marker = tmp_path / "PWNED"
    torch.save({"torch": Payload(marker)}, checkpoint / "rng" / "rank-0.pt")
    meta = json.loads((checkpoint / ckpt.META).read_text())
    meta["files"] |= file_sums(checkpoint, ["rng/rank-0.pt"])
    (checkpoint / ckpt.META).write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match=r"rng/rank-0.pt: refused, not a torch RNG"):
        ckpt.restore_rng(checkpoint)
    assert not marker.exists()


def test_an_exported_model_that_is_a_pickle_is_refused(tmp_path, tiny_dataset):
    from recsys_kdef.serve import predict

    artifact = tmp_path / "artifact"
    artifact.mkdir()
    marker = tmp_path / "PWNED"
    torch.save({"format": 1, "state_dict": Payload(marker)}, artifact / "model.pt")
    parquet = sorted((tiny_dataset / "test").glob("*.parquet"))[0]
    argv = ["--model", str(artifact), "--input", str(parquet), "--output", str(tmp_path / "p")]
    with pytest.raises(SystemExit, match=rf"{artifact}/model.pt: refused, .*nothing in it was run"):
        predict.main(argv)
    assert not marker.exists() and not (tmp_path / "p").exists()


def test_a_real_checkpoint_loads_as_dcp_itself_loads_it(trained):
    """The verified path gives the same tensors as DCP's own reader on our own checkpoint."""
    best = trained / ckpt.CHECKPOINTS / ckpt.BEST
    ours = ckpt.load_checkpoint(trained)
    reader = dcp.FileSystemReader(str(best))  # trusted here: the fixture wrote it
    prefix = f"model.{ours['model_prefix']}"
    reference = {
        k: torch.empty(v.size, dtype=v.properties.dtype)
        for k, v in reader.read_metadata().state_dict_metadata.items()
        if k.startswith(prefix)
    }
    dcp.load(reference, storage_reader=reader, no_dist=True)
    assert sorted(ours["state_dict"]) == sorted(k[len(prefix) :] for k in reference)
    for key, tensor in reference.items():
        assert torch.equal(ours["state_dict"][key[len(prefix) :]], tensor), key
    for step in ckpt.step_checkpoints(trained / ckpt.CHECKPOINTS):
        assert safe_dcp.read_metadata(step).state_dict_metadata.keys() >= {
            k for k in reference
        }  # step checkpoints (with optimizer state) pass the same checks
