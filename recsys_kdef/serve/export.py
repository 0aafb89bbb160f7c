"""Export the ensemble, or one student, from a training checkpoint as a standalone artifact.

The artifact is one file, `model.pt`: the (sub)model's weights, the ModelConfig and schema
it needs, and which head predicts. No optimizer state, no sharding, no other student:

    python -m recsys_kdef.serve.export --checkpoint runs/demo --out artifacts/best     # best student
    python -m recsys_kdef.serve.export --checkpoint runs/demo --out artifacts/s2 --student 2
    python -m recsys_kdef.serve.export --checkpoint runs/demo --out artifacts/all --student ensemble

Score Parquet with it: `python -m recsys_kdef.serve.predict --model artifacts/best ...`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch

from recsys_kdef.checkpoint import store as ckpt
from recsys_kdef.checkpoint.store import load_checkpoint
from recsys_kdef.config import FusionConfig, ModelConfig
from recsys_kdef.config.loading import from_dict
from recsys_kdef.io import atomic_path, check_writable
from recsys_kdef.models.students import locate_student, student_groups
from recsys_kdef.serve.raw_rows import VOCAB_DIR

ARTIFACT_FORMAT = 1


def select_student(
    state: dict[str, torch.Tensor], cfg: ModelConfig, k: int
) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """Student k of an ensemble's state dict, as the state and config of a one-student ensemble.

    Its tables `s{k}__*` become `s0__*` (shared tables are kept; of stacked tables
    `stack__<field>` its columns, as a separate table `s0__<field>`); its group's tower
    tensors become group 0's, sliced at its place in the group (every tower tensor leads with
    the group's students: the towers' contract); other groups and the fusion are dropped.
    """
    group, j = locate_student(cfg, k)
    dims = [g.embedding_dim for g in student_groups(cfg) for _ in range(g.count)]
    columns = slice(sum(dims[:k]), sum(dims[: k + 1]))  # student k's in a stacked table
    out = {}
    for name, tensor in state.items():
        if name.startswith("sparse_arch."):
            table = name.split(".")[-2]
            if cfg.embedding_mode == "shared":
                out[name] = tensor
            elif table.startswith(f"s{k}__"):
                out[name.replace(f".s{k}__", ".s0__")] = tensor
            elif table.startswith("stack__"):
                field = table[len("stack__") :]
                out[name.replace(f".{table}.", f".s0__{field}.")] = tensor[:, columns].clone()
        elif name.startswith(f"towers.groups.{group}."):
            local = "towers.groups.0." + name[len(f"towers.groups.{group}.") :]
            out[local] = tensor[j : j + 1].clone()
        elif not name.startswith(("fusion.", "towers.groups.")):
            raise ValueError(f"cannot export '{name}': not a table, tower or fusion tensor")
    spec = student_groups(cfg)[group].spec
    one = replace(
        cfg,
        students=[replace(spec, count=1)],
        num_students=1,
        fusion=FusionConfig(),
        table_layout="separate",  # one student: its tables as they are
    )
    return out, one


def export_artifact(checkpoint: str | Path, out_dir: str | Path, student: str = "best") -> Path:
    """Write `out_dir/model.pt` for `student` = best | ensemble | an index; returns its path."""
    ckpt = load_checkpoint(checkpoint)
    cfg = from_dict(ModelConfig, ckpt["config"]["model"], "model")
    state = ckpt["state_dict"]
    if student == "ensemble":
        head = "fused" if cfg.fusion.name != "none" else "ensemble"
        chosen = None
    else:
        if student != "best" and not student.isdigit():
            raise ValueError(
                f"--student must be best, ensemble or a student index, got {student!r}"
            )
        chosen = ckpt["best_student"] if student == "best" else int(student)
        state, cfg = select_student(state, cfg, chosen)
        head = "student_0"
    artifact = {
        "format": ARTIFACT_FORMAT,
        "model": asdict(cfg),
        "schema": ckpt["schema"],
        "head": head,
        "state_dict": state,
        "source": {"checkpoint": str(checkpoint), "student": chosen, "valid": ckpt.get("valid")},
    }
    artifact["source"]["label"] = student_label(chosen, student, ckpt.get("valid"))
    out = Path(out_dir) / "model.pt"
    with atomic_path(out) as tmp:
        torch.save(artifact, tmp)
    copy_vocabularies(Path(ckpt["config"]["data"]["path"]), Path(out_dir))
    return out


def student_label(chosen: int | None, asked: str, valid: dict | None) -> str:
    """What was exported, for people: 'student 2 (best on validation AUC 0.81234)'."""
    if chosen is None:
        return "the ensemble"
    why = " (best on validation AUC" if asked == "best" else " (asked for"
    auc = (valid or {}).get(f"student_{chosen}", {}).get("auc")
    return f"student {chosen}{why}" + (
        f" {auc:.5f})" if auc is not None and asked == "best" else ")"
    )


def copy_vocabularies(dataset: Path, out_dir: Path) -> None:
    """The dataset's vocab/ beside model.pt, so the artifact scores raw values on its own
    (synthetic datasets have none). New files, not copytree: their mode comes from this
    process's umask, not from whoever prepared the dataset."""
    source = dataset / VOCAB_DIR
    for path in sorted(source.rglob("*")) if source.is_dir() else []:
        target = out_dir / VOCAB_DIR / path.relative_to(source)
        if path.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Export a student or the ensemble from a checkpoint."
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a run directory (its checkpoints/best), or one checkpoint directory",
    )
    parser.add_argument("--out", required=True, help="directory for model.pt")
    parser.add_argument(
        "--student", default="best", help="best (on validation AUC), ensemble, or an index"
    )
    args = parser.parse_args(argv)
    try:
        check_writable(args.out, "--out")  # before reading the checkpoint
        path = export_artifact(args.checkpoint, args.out, args.student)
    except (ckpt.CheckpointError, ValueError) as e:  # a refused or damaged checkpoint, --student
        sys.exit(f"error: {e}")
    label = torch.load(path, map_location="cpu", weights_only=True)["source"]["label"]
    print(f"exported {label} -> {path}")


if __name__ == "__main__":
    main()
