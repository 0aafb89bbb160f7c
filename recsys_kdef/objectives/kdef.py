"""KDEF: students learn from labels, from the ensemble teacher (KD) and from each other (DML),
with loss weights set by an examination of each student (NOTES §4, the authors' EKTF code).

With p_k = sigmoid(logit_k), teacher y_t = sigmoid(mean_k logit_k) (mean of LOGITS):
    ctr_k = BCE(p_k, y)              kd_k = C(p_k, stopgrad(y_t))
    S_k   = mean_i (1 - |y_i - p_k,i|)   (exam score, higher is better, not detached)
    lambda = softmin(S)              KD term  = sum_k lambda_k kd_k
    mu_k,l = softmax_{l != k}(S_l - S_k)
    DML term = mean_k sum_{l != k} mu_k,l C(p_k, stopgrad(p_l))     (none when K = 1)
    L = mean_k ctr_k + KD term + DML term
C is the consistency loss (MSE in the paper's main results). All K students and all
K x K pairs are computed at once with tensor ops.

Variants (the paper's Table V / Fig. 10): `only_kd`, `only_dml`, `no_exam` (lambda = mu = 1);
"without all" is the `mean` objective. C can be mse, huber, kl or bce.

Options beyond the paper (defaults give the authors' loss exactly): `kd_weight` and
`dml_weight` scale the two terms; `temperature` tau compares softened predictions,
tau^2 C(sigmoid(z_k / tau), sigmoid(z_t / tau)) (Hinton's soft targets, ECKD's tau), in both
terms; `exam_temperature` T sharpens the examination, lambda = softmin(S / T),
mu_k,l = softmax_{l != k}((S_l - S_k) / T) (S differs between students by ~1e-3, so at T = 1
lambda and mu are nearly uniform).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from recsys_kdef.models.ensemble import EnsembleOutput
from recsys_kdef.objectives.base import ObjectiveOutput, per_student_bce

Variant = Literal["full", "only_kd", "only_dml", "no_exam"]


def _entropy(q: torch.Tensor) -> torch.Tensor:
    return -(torch.xlogy(q, q) + torch.xlogy(1 - q, 1 - q))


# Elementwise consistency of a student (given by its logit z) with a detached target probability q.
CONSISTENCY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": lambda z, q: (torch.sigmoid(z) - q).pow(2),
    "huber": lambda z, q: F.huber_loss(torch.sigmoid(z), q, reduction="none", delta=1.0),
    "bce": lambda z, q: F.binary_cross_entropy_with_logits(z, q, reduction="none"),
    # KL(q || p) of Bernoulli distributions = BCE(p, q) - H(q)
    "kl": lambda z, q: F.binary_cross_entropy_with_logits(z, q, reduction="none") - _entropy(q),
}


class KDEFObjective(nn.Module):
    """The KDEF loss over K students; see the module docstring for the equations."""

    def __init__(
        self,
        variant: Variant = "full",
        consistency: str = "mse",
        detach_exam: bool = False,
        label_flip_rate: float = 0.0,
        *,
        kd_weight: float = 1.0,
        dml_weight: float = 1.0,
        temperature: float = 1.0,
        exam_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if consistency not in CONSISTENCY:
            raise ValueError(f"consistency {consistency!r}; choose one of {list(CONSISTENCY)}")
        self.variant = variant
        self._consistency = CONSISTENCY[consistency]
        self.detach_exam = detach_exam
        self.label_flip_rate = label_flip_rate
        self.kd_weight, self.dml_weight = kd_weight, dml_weight
        self.temperature, self.exam_temperature = temperature, exam_temperature

    @classmethod
    def from_config(cls, cfg, model: nn.Module) -> KDEFObjective:
        k = cfg.kdef
        return cls(
            k.variant,
            k.consistency,
            k.detach_exam,
            k.label_flip_rate,
            kd_weight=k.kd_weight,
            dml_weight=k.dml_weight,
            temperature=k.temperature,
            exam_temperature=k.exam_temperature,
        )

    def consistency(self, logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
        """Elementwise tau^2 C(sigmoid(z / tau), stopgrad(sigmoid(z_target / tau)))."""
        tau = self.temperature
        target = torch.sigmoid(target_logits.detach() / tau)
        if tau == 1.0:
            return self._consistency(logits, target)
        return tau * tau * self._consistency(logits / tau, target)

    def forward(self, output: EnsembleOutput, labels: torch.Tensor) -> ObjectiveOutput:
        if self.training and self.label_flip_rate > 0:  # EKTF.py's `threshold` label noise
            flips = torch.rand_like(labels) < self.label_flip_rate
            labels = torch.where(flips, 1 - labels, labels)
        logits = output.logits  # (B, K)
        num_students = logits.shape[1]
        probs = torch.sigmoid(logits)  # (B, K)

        ctr = per_student_bce(logits, labels)  # (K,)
        exam = (1 - (labels.unsqueeze(1) - probs).abs()).mean(dim=0)  # (K,) S_k
        if self.detach_exam:
            exam = exam.detach()
        examined = self.variant != "no_exam"
        loss = ctr.mean()
        components = {"ctr": ctr.mean().detach()}
        weights = {"exam": exam.detach()}

        scaled_exam = exam / self.exam_temperature
        if self.variant in ("full", "only_kd", "no_exam"):
            teacher = output.teacher_logit.unsqueeze(1).expand_as(logits)  # (B, K)
            kd = self.consistency(logits, teacher).mean(dim=0)  # (K,)
            lam = torch.softmax(-scaled_exam, dim=0) if examined else torch.ones_like(kd)  # softmin
            kd_term = self.kd_weight * (lam * kd).sum()
            loss = loss + kd_term
            components["kd"] = kd_term.detach()
            weights["lambda"] = lam.detach()

        if self.variant in ("full", "only_dml", "no_exam") and num_students > 1:
            # pair[k, l] = C(p_k, stopgrad(p_l)), averaged over the batch: (B, K, K) -> (K, K)
            shape = (logits.shape[0], num_students, num_students)
            pair = self.consistency(
                logits.unsqueeze(2).expand(shape), logits.unsqueeze(1).expand(shape)
            ).mean(dim=0)
            eye = torch.eye(num_students, dtype=torch.bool, device=logits.device)
            if examined:
                gap = scaled_exam.unsqueeze(0) - scaled_exam.unsqueeze(1)  # [k, l] = S_l - S_k
                mu = torch.softmax(gap.masked_fill(eye, float("-inf")), dim=1)  # zero diagonal
            else:
                mu = (~eye).to(pair.dtype)
            dml_term = self.dml_weight * (mu * pair).sum(dim=1).mean()
            loss = loss + dml_term
            components["dml"] = dml_term.detach()
            weights["mu"] = mu.detach()
        return ObjectiveOutput(loss=loss, components=components, weights=weights)
