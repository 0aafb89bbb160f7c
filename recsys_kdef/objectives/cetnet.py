"""CETNet (docs/papers.md §5): the fused prediction, every model's own prediction, and a symmetric KL
that aligns the models' predictions with each other.

    L = BCE(p_fused, y) + sum_m BCE(p_m, y) + alpha * SKL
    SKL = mean over pairs a < b of [ mean_i KL(p_a,i || p_b,i) + mean_i KL(p_b,i || p_a,i) ]
with Bernoulli KL; for two models this is the paper's two-direction sum. Gradients flow into
both sides of every pair. The fused prediction comes from the model's fusion module
(`model.fusion`), whose weights are detached by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys_kdef.models.outputs import EnsembleOutput
from recsys_kdef.objectives.base import ObjectiveOutput, per_student_bce


def pairwise_bernoulli_kl(logits: torch.Tensor) -> torch.Tensor:
    """(K, K) matrix: [a, b] = mean over the batch of KL(p_a || p_b), for logits (B, K)."""
    log_p = F.logsigmoid(logits)  # log p
    log_q = F.logsigmoid(-logits)  # log (1 - p)
    p = torch.sigmoid(logits)
    # KL(a || b) = p_a (log p_a - log p_b) + (1 - p_a) (log(1 - p_a) - log(1 - p_b)): (B, K, K)
    kl = p.unsqueeze(2) * (log_p.unsqueeze(2) - log_p.unsqueeze(1)) + (1 - p).unsqueeze(2) * (
        log_q.unsqueeze(2) - log_q.unsqueeze(1)
    )
    return kl.mean(dim=0)


class CETNetObjective(nn.Module):
    """The CETNet loss; needs a model with a fusion module (model.fusion.name != none)."""

    student_reduction = "sum"  # sum_m BCE(p_m): students' auxiliary losses add up alike

    def __init__(self, alpha: float = 0.1) -> None:
        super().__init__()
        self.alpha = alpha

    @classmethod
    def from_config(cls, cfg, model: nn.Module) -> CETNetObjective:
        return cls(alpha=cfg.cetnet.alpha)

    def forward(self, output: EnsembleOutput, labels: torch.Tensor) -> ObjectiveOutput:
        if output.fused_logit is None:
            raise ValueError("objective cetnet needs a fused prediction: set model.fusion.name")
        fused = F.binary_cross_entropy_with_logits(output.fused_logit, labels)
        ctr = per_student_bce(output.logits, labels)  # (K,)
        loss = fused + ctr.sum()
        components = {"fused": fused.detach(), "ctr": ctr.mean().detach()}
        num_students = output.logits.shape[1]
        if self.alpha > 0 and num_students > 1:
            kl = pairwise_bernoulli_kl(output.logits)  # (K, K)
            pairs = num_students * (num_students - 1) / 2  # a < b (no boolean indexing: it
            symmetric = (kl + kl.t()).triu(diagonal=1).sum() / pairs  # would break a compile)
            loss = loss + self.alpha * symmetric
            components["kl"] = symmetric.detach()
        weights = {}
        if output.fusion_weights is not None:
            weights["fusion"] = output.fusion_weights.detach().mean(dim=0)
        return ObjectiveOutput(loss=loss, components=components, weights=weights)
