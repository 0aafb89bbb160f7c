"""ECKD's model: a student ensemble plus teacher ensembles whose outputs guide it (NOTES §6).

Teachers are ordinary EnsembleModels with their own embedding tables, so the planner shards
them with the student's. Frozen teachers (the pre-train scheme: loaded from earlier runs'
checkpoints) run without gradients and stay in eval mode; co-trained teachers learn too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_kdef.checkpoint import load_checkpoint
from recsys_kdef.config import ExperimentConfig, ModelConfig
from recsys_kdef.config.loading import from_dict
from recsys_kdef.data.schema import Schema
from recsys_kdef.models.ensemble import EnsembleModel, EnsembleOutput, build_model


@dataclass
class DistillOutput:
    """The student's output and every teacher model's output for one batch."""

    student: EnsembleOutput
    teachers: list[EnsembleOutput]

    @property
    def embeddings(self) -> torch.Tensor | None:
        return self.student.embeddings  # the embedding L2 term regularises the student

    def heads(self) -> dict[str, torch.Tensor]:
        """The student's heads, and each teacher model's ensemble as `teacher_{j}`."""
        heads = self.student.heads()
        for j, t in enumerate(self.teachers):
            heads[f"teacher_{j}"] = t.teacher_logit
        return heads


class TeacherStudentModel(nn.Module):
    """Student and teacher ensembles over the same batch.

    Example::

        model = TeacherStudentModel(student, [teacher], frozen_teachers=True)
        out = model(batch.dense, batch.sparse)  # out.student.logits (B, K_s), out.teachers[0]...
    """

    def __init__(
        self, student: EnsembleModel, teachers: list[EnsembleModel], frozen_teachers: bool
    ) -> None:
        super().__init__()
        if not teachers:
            raise ValueError("a teacher-student model needs at least one teacher")
        self.student = student
        self.teachers = nn.ModuleList(teachers)
        self.frozen_teachers = frozen_teachers
        if frozen_teachers:
            self.teachers.requires_grad_(False)
            self.teachers.eval()

    def train(self, mode: bool = True) -> TeacherStudentModel:
        super().train(mode)
        if self.frozen_teachers:
            self.teachers.eval()  # batch-norm statistics and dropout stay as the teachers were trained
        return self

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> DistillOutput:
        student = self.student(dense, sparse)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_teachers):
            teachers = [t(dense, sparse) for t in self.teachers]
        return DistillOutput(student=student, teachers=teachers)


def model_prefix(cfg: ExperimentConfig) -> str:
    """Where the (student) EnsembleModel's weights sit in a train module's state dict."""
    return "model.student." if cfg.objective.name == "eckd" else "model."


def build_training_model(
    cfg: ExperimentConfig, schema: Schema
) -> tuple[nn.Module, list[dict[str, torch.Tensor]]]:
    """The model `cfg.objective` trains, and the full weights of each pretrained teacher.

    Plain objectives train `build_model(cfg.model)`. ECKD wraps it as the student with
    teachers: `cotrain` builds `objective.eckd.teacher_model`; `pretrain` rebuilds each
    checkpoint's (student) model from the config stored with it, frozen. The teachers'
    weights are returned to be loaded after sharding (load_full_state_dict).
    """
    student = build_model(cfg.model, schema)
    if cfg.objective.name != "eckd":
        return student, []
    eckd = cfg.objective.eckd
    if eckd.schedule == "cotrain":
        return TeacherStudentModel(student, [build_model(eckd.teacher_model, schema)], False), []
    teachers, weights = [], []
    for path in eckd.teachers:
        ckpt = load_checkpoint(path)
        schema.check_compatible(Schema.from_json(ckpt["schema"]), f"teacher {path}")
        teacher_cfg = from_dict(ModelConfig, ckpt["config"]["model"], "model")
        teachers.append(build_model(teacher_cfg, schema))
        weights.append(ckpt["state_dict"])
    return TeacherStudentModel(student, teachers, frozen_teachers=True), weights
