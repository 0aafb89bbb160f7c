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


def mean_symmetric_kl(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the K (K - 1) / 2 pairs a < b of the batch-mean KL(p_a || p_b) + KL(p_b || p_a),
    without a (B, K, K) tensor: the two directions sum to (p_a - p_b)(z_a - z_b) (log p - log
    (1 - p) is the logit z), and the sum over pairs of that is K sum_a (p_a - mean p)(z_a -
    mean z) for each row, computed from centred values (no cancellation)."""
    k = logits.shape[1]
    p = torch.sigmoid(logits)
    p = p - p.mean(dim=1, keepdim=True)
    z = logits - logits.mean(dim=1, keepdim=True)
    return torch.dot(p.flatten(), z.flatten()) * (2 / ((k - 1) * logits.shape[0]))


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
            symmetric = mean_symmetric_kl(output.logits)
            loss = loss + self.alpha * symmetric
            components["kl"] = symmetric.detach()
        weights = {}
        if output.fusion_weights is not None:
            weights["fusion"] = output.fusion_weights.detach().mean(dim=0)
        return ObjectiveOutput(loss=loss, components=components, weights=weights)
