"""ECKD (docs/papers.md §6): distil one or several teachers into the student ensemble.

Teachers T_1..T_M are the teacher models' ensemble logits (`teacher_heads: ensemble`) or
their individual students (`students`). They are combined per sample by the gating network
alpha_i = softmax_i(w_i z_Ti + b_i) (or averaged, gating off): z_T = sum_i alpha_i z_Ti.
For each student k, with teachers detached (the distillation gradient reaches the student
and the gate only):

    soft_label:  L_k = (1 - beta) BCE(sigmoid(z_Sk), y) + beta BCE(sigmoid(z_Sk / tau), sigmoid(z_T / tau))
    hint:        L_k = BCE(sigmoid(z_Sk), y) + beta ||sum_i alpha_i W_i v_Ti - v_Sk||^2

(hint keeps gamma = 1 as the paper's §4.1.3 does; W_i are learned projections from teacher i's
hidden vector to the student's). The student loss is the mean over k. Co-trained teachers add
their own BCE (mean over the teacher models' students). `gate_objective: labels` also fits the
gated teacher to the labels (gradient to the gate only); by default (docs/papers.md §6: "gate trained with
the student") the gate learns from the student's loss alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys_kdef.models.outputs import DistillOutput
from recsys_kdef.models.teacher_student import TeacherStudentModel
from recsys_kdef.objectives.base import ObjectiveOutput, per_student_bce


def teacher_outputs(output: DistillOutput, heads: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(B, M) teacher logits and M hidden vectors (B, H_i), detached, for `heads` ensemble | students."""
    logits, hidden = [], []
    for t in output.teachers:
        if heads == "ensemble":
            logits.append(t.teacher_logit.unsqueeze(1))
            hidden.append(t.hidden.reshape(t.hidden.shape[0], -1))  # all its students' vectors
        else:
            logits.append(t.logits)
            hidden.extend(t.hidden.unbind(dim=1))
    return torch.cat(logits, dim=1).detach(), [h.detach() for h in hidden]


class ECKDObjective(nn.Module):
    """Distillation from (gated) teachers into every student of the student ensemble."""

    def __init__(
        self,
        teacher_dims: list[int],
        student_dim: int,
        method: str = "soft_label",
        temperature: float = 1.0,
        beta: float = 0.5,
        gating: bool = True,
        gate_objective: str = "student",
        teacher_heads: str = "ensemble",
        cotrain: bool = False,
    ) -> None:
        super().__init__()
        num_teachers = len(teacher_dims)
        self.method, self.temperature, self.beta = method, temperature, beta
        self.gating, self.gate_objective = gating, gate_objective
        self.teacher_heads, self.cotrain = teacher_heads, cotrain
        if gating:
            self.gate_weight = nn.Parameter(torch.zeros(num_teachers))
            self.gate_bias = nn.Parameter(torch.zeros(num_teachers))
        if method == "hint":
            self.projections = nn.ModuleList(
                nn.Linear(d, student_dim, bias=False) for d in teacher_dims
            )

    @classmethod
    def from_config(cls, cfg, model: nn.Module) -> ECKDObjective:
        if not isinstance(model, TeacherStudentModel):
            raise ValueError(
                "objective eckd needs a teacher-student model (built by recsys_kdef.train)"
            )
        e = cfg.eckd
        dims = []
        for t in model.teachers:
            k, h = t.towers.num_students, t.towers.output_dim
            dims += [k * h] if e.teacher_heads == "ensemble" else [h] * k
        return cls(
            dims,
            model.student.towers.output_dim,
            e.method,
            e.temperature,
            e.beta,
            e.gating,
            e.gate_objective,
            e.teacher_heads,
            cotrain=e.schedule == "cotrain",
        )

    def gate(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        """(B, M) per-sample teacher weights that sum to 1."""
        if not self.gating:
            return torch.full_like(teacher_logits, 1.0 / teacher_logits.shape[1])
        return torch.softmax(self.gate_weight * teacher_logits + self.gate_bias, dim=1)

    def forward(self, output: DistillOutput, labels: torch.Tensor) -> ObjectiveOutput:
        student = output.student
        t_logits, t_hidden = teacher_outputs(output, self.teacher_heads)  # (B, M), M x (B, H_i)
        alpha = self.gate(t_logits)  # (B, M)
        z_t = (alpha * t_logits).sum(dim=1)  # (B,) gated teacher logit
        ctr = per_student_bce(student.logits, labels)  # (K_s,)
        if self.method == "soft_label":
            target = torch.sigmoid(z_t / self.temperature).unsqueeze(1).expand_as(student.logits)
            distill = F.binary_cross_entropy_with_logits(
                student.logits / self.temperature, target, reduction="none"
            ).mean(dim=0)  # (K_s,)
            loss = ((1 - self.beta) * ctr + self.beta * distill).mean()
        else:
            hint = sum(
                a.unsqueeze(1) * w(v)
                for a, w, v in zip(alpha.unbind(1), self.projections, t_hidden)
            )
            distill = (hint.unsqueeze(1) - student.hidden).pow(2).sum(dim=2).mean(dim=0)  # (K_s,)
            loss = (ctr + self.beta * distill).mean()
        components = {"ctr": ctr.mean().detach(), "distill": distill.mean().detach()}
        if self.cotrain:  # teachers learn from the labels; nothing flows back from the student
            teacher_ctr = torch.stack(
                [per_student_bce(t.logits, labels).mean() for t in output.teachers]
            ).mean()
            loss = loss + teacher_ctr
            components["teacher"] = teacher_ctr.detach()
        if self.gating and self.gate_objective == "labels":
            gate_loss = F.binary_cross_entropy_with_logits(z_t, labels)
            loss = loss + gate_loss
            components["gate"] = gate_loss.detach()
        return ObjectiveOutput(
            loss=loss,
            components=components,
            weights={"gate": alpha.detach().mean(dim=0)},
            heads={"teacher": z_t.detach()},
        )
