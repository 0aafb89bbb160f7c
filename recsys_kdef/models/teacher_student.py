"""ECKD's model: a student ensemble plus teacher ensembles whose outputs guide it (docs/papers.md §6).

Teachers are ordinary EnsembleModels with their own embedding tables, so the planner shards
them with the student's. Frozen teachers (the pre-train scheme: loaded from earlier runs'
checkpoints) run without gradients and stay in eval mode; co-trained teachers learn too.
recsys_kdef.builders.model builds it and reads the teachers' checkpoints; this module reads no files.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_kdef.models.ensemble import EnsembleModel
from recsys_kdef.models.outputs import DistillOutput


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
