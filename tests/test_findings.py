"""The papers' findings, reproduced on synthetic data (one process each, fixed seeds).

* KDEF (Finding 3): KDEF students stay close to the ensemble; mean-fusion students do not.
* CETNet: with one model deliberately weakened, confidence fusion weights the strong one.
* ECKD: a small student distilled from a pretrained teacher ensemble beats the same student
  trained alone; the frozen teacher reproduces its own run's test AUC (checkpoint round trip).
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from recsys_kdef.builders.job import checkpoint_meta
from recsys_kdef.builders.model import build_training_model
from recsys_kdef.builders.train_wrapper import EnsembleTrain
from recsys_kdef.config import SyntheticConfig, load_config
from recsys_kdef.data import Schema, build_readers
from recsys_kdef.data.synthetic import generate
from recsys_kdef.distributed.optimizers import build_optimizer
from recsys_kdef.distributed.process import destroy_distributed, init_distributed
from recsys_kdef.distributed.sharding import shard_model
from recsys_kdef.eval.evaluate import evaluate
from recsys_kdef.objectives import build_objective
from recsys_kdef.train import run
from recsys_kdef.training.trainer import Trainer


@pytest.fixture(scope="module")
def ctx():
    logging.disable(logging.INFO)
    context = init_distributed()
    yield context
    destroy_distributed()
    logging.disable(logging.NOTSET)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("findings") / "ctr20"
    generate(SyntheticConfig(rows=60000, row_group_size=4096, seed=11), path)
    return path


def config(data, out, *overrides):
    return load_config(
        [
            "--data.path",
            str(data),
            "--data.batch_size",
            "1024",
            "--train.progress_bar",
            "false",
            "--train.output_dir",
            str(out),
            "--model.tower.hidden_units",
            "[64,32]",
            *overrides,
        ]
    )


def test_kdef_students_are_closer_to_the_ensemble_than_mean_fusion_students(ctx, data, tmp_path):
    gaps = {}
    for objective in ("kdef", "mean"):
        test = run(
            config(
                data, tmp_path / objective, "--objective.name", objective, "--train.epochs", "2"
            ),
            ctx,
        )["test"]
        gaps[objective] = [
            abs(test["ensemble"]["auc"] - test[f"student_{k}"]["auc"]) for k in range(4)
        ]
    assert max(gaps["kdef"]) < min(gaps["mean"]), gaps


class MaskStudents(nn.Module):
    """Feeds zeros instead of embeddings to the masked students (a deliberately weak model)."""

    def __init__(self, sparse_arch: nn.Module, num_students: int, masked: list[int]) -> None:
        super().__init__()
        self.sparse_arch, self.num_students, self.masked = sparse_arch, num_students, masked

    def forward(self, features):
        emb = self.sparse_arch(features)  # (B, K * F * D), student-major
        keep = torch.ones(self.num_students, 1)
        keep[self.masked] = 0
        return (emb.view(emb.shape[0], self.num_students, -1) * keep).flatten(1)


def test_confidence_fusion_weights_the_strong_model(ctx, tmp_path_factory):
    # balanced labels: a weak model's default guess (the base rate) is then uninformative and uncertain
    data = tmp_path_factory.mktemp("findings") / "ctr50"
    generate(SyntheticConfig(rows=60000, row_group_size=4096, seed=11, base_ctr=0.5), data)
    cfg = config(
        data,
        tmp_path_factory.mktemp("cetnet"),
        "--model.num_students",
        "2",
        "--objective.name",
        "cetnet",
        "--model.fusion.name",
        "confidence",
        "--train.epochs",
        "2",
        "--train.monitor",
        "fused",
    )
    schema = Schema.load(cfg.data.path)
    readers = build_readers(cfg.data, schema, rank=0, world_size=1, seed=0)
    torch.manual_seed(0)
    model, _ = build_training_model(cfg, schema)
    model.sparse_arch = MaskStudents(model.sparse_arch, 2, masked=[1])
    module, plan = shard_model(
        EnsembleTrain(model, build_objective(cfg.objective, model)),
        ctx,
        cfg.planner,
        cfg.train,
        cfg.data.batch_size,
    )
    meta = checkpoint_meta(cfg, schema)
    Trainer(module, build_optimizer(module, plan, cfg.train), ctx, cfg.train, meta).fit(
        readers.train, readers.valid
    )
    result = evaluate(module, readers.test, ctx)
    assert (
        result.metrics["student_0"]["auc"] > result.metrics["student_1"]["auc"] + 0.1
    )  # the mask works
    strong, weak = result.weights["fusion"]
    assert strong > weak + 0.02, result.weights


def test_distilled_student_beats_the_same_student_alone(ctx, data, tmp_path):
    teacher = run(
        config(
            data,
            tmp_path / "teacher",
            "--objective.name",
            "kdef",
            "--train.epochs",
            "3",
            "--model.tower.hidden_units",
            "[128,64]",
        ),
        ctx,
    )
    small = [
        "--model.num_students",
        "1",
        "--model.embedding_dim",
        "4",
        "--model.tower.hidden_units",
        "[16]",
        "--train.epochs",
        "2",
    ]
    alone = run(config(data, tmp_path / "alone", "--objective.name", "mean", *small), ctx)
    distilled = run(
        config(
            data,
            tmp_path / "distilled",
            "--objective.name",
            "eckd",
            "--objective.eckd.teachers",
            f"[{tmp_path / 'teacher'}]",
            *small,
        ),
        ctx,
    )
    assert distilled["test"]["student_0"]["auc"] > alone["test"]["student_0"]["auc"] + 0.002
    # the frozen teacher, gathered to a checkpoint and re-sharded, predicts as it did in its own run
    assert distilled["test"]["teacher_0"]["auc"] == pytest.approx(
        teacher["test"]["ensemble"]["auc"], abs=1e-6
    )
    assert sum(distilled["test_weights"]["gate"]) == pytest.approx(1.0)
    assert set(distilled["test_loss"]) == {"ctr", "distill"}
    fields = len(Schema.load(data).sparse)
    assert (
        len(distilled["plan"]) == fields + 4 * fields
    )  # the student's tables and the teacher's K x F
    # several teachers of different architectures, each rebuilt from its own checkpoint's config
    two = run(
        config(
            data,
            tmp_path / "two",
            "--objective.name",
            "eckd",
            "--objective.eckd.teachers",
            f"[{tmp_path / 'teacher'}, {tmp_path / 'alone' / 'checkpoints' / 'best'}]",
            *small,
        ),
        ctx,
    )
    assert two["test"]["teacher_1"]["auc"] == pytest.approx(
        alone["test"]["ensemble"]["auc"], abs=1e-6
    )
    assert two["test"]["teacher_0"]["auc"] == pytest.approx(
        teacher["test"]["ensemble"]["auc"], abs=1e-6
    )
    assert len(two["test_weights"]["gate"]) == 2 and min(two["test_weights"]["gate"]) > 0


def test_cotrained_hint_distillation_monitored_by_distillation_loss(ctx, data, tmp_path):
    report = run(
        config(
            data,
            tmp_path,
            "--objective.name",
            "eckd",
            "--objective.eckd.schedule",
            "cotrain",
            "--objective.eckd.method",
            "hint",
            "--objective.eckd.beta",
            "0.001",
            "--objective.eckd.teacher_model",
            "{num_students: 2, tower: {hidden_units: [32]}}",
            "--objective.eckd.teacher_heads",
            "students",
            "--model.num_students",
            "1",
            "--data.train_on_valid",
            "true",
            "--train.monitor",
            "distill",
            "--train.epochs",
            "2",
        ),
        ctx,
    )
    history = report["history"]
    assert [h["monitor_value"] for h in history] == [-h["valid_loss"]["distill"] for h in history]
    assert set(history[-1]["train_loss"]) == {"loss", "ctr", "distill", "teacher"}
    assert (
        len(history[0]["train_weights"]["gate"]) == 2
    )  # the teacher ensemble's 2 students are the teachers
    assert report["test"]["teacher_0"]["auc"] > 0.7  # co-trained teachers learned
