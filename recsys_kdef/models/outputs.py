"""What the models return: EnsembleOutput (the K students of a batch) and DistillOutput
(ECKD's student and teachers). Objectives read these; this module imports no model code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EnsembleOutput:
    """What the students produce for a batch of B rows.

    logits: (B, K) each student's logit
    hidden: (B, K, H) each student's last hidden vector (input of its output layer), zero-padded
        to the widest student's H in a heterogeneous ensemble
    embeddings: (B, T) every table's pooled embedding, side by side (what the batch L2 reads)
    fused_logit: (B,) the fusion module's prediction, if the model has one
    fusion_weights: (B, K) the fusion's per-sample weights of the students
    aux_loss: (K,) each student's own auxiliary loss (DIEN's; 0 for students without one), or
        None when no student has one; the train wrapper adds it to the objective
    """

    logits: torch.Tensor
    hidden: torch.Tensor
    embeddings: torch.Tensor | None = None
    fused_logit: torch.Tensor | None = None
    fusion_weights: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None

    @property
    def teacher_logit(self) -> torch.Tensor:
        """(B,) the ensemble: mean of the students' logits (KDEF's abstract teacher)."""
        return self.logits.mean(dim=1)

    def heads(self) -> dict[str, torch.Tensor]:
        """Every prediction to evaluate, as (B,) logits: each student, the ensemble, the fusion."""
        heads = {f"student_{k}": self.logits[:, k] for k in range(self.logits.shape[1])}
        heads["ensemble"] = self.teacher_logit
        if self.fused_logit is not None:
            heads["fused"] = self.fused_logit
        return heads


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
