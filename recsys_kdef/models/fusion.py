"""Fusion of the students' hidden vectors into one prediction (CETNet, docs/papers.md §5).

`confidence` (CETNet): per sample, w = softmax_m(C_m) with C_m = -H(p_m) the negative binary
entropy of model m's prediction, detached unless stop_gradient is off; the fused vector is
concat_m(w_m * h_m), read out by a linear layer. The other variants are the paper's
ablations and Table 4 baselines: `concat` (no weights), `sum` and `mean` of the h_m.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Weighting = Literal["confidence", "uniform"]
Combine = Literal["concat", "sum", "mean"]

# name -> (weighting, combination)
FUSIONS: dict[str, tuple[Weighting, Combine]] = {
    "confidence": ("confidence", "concat"),
    "concat": ("uniform", "concat"),
    "sum": ("uniform", "sum"),
    "mean": ("uniform", "mean"),
}


def binary_entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H(p) = -p log p - (1-p) log(1-p) for p = sigmoid(z), computed stably as softplus(z) - p z."""
    return F.softplus(logits) - torch.sigmoid(logits) * logits


class HiddenFusion(nn.Module):
    """Fused logit from K students: logits (B, K), hidden (B, K, H) -> fused logit (B,), weights (B, K).

    Example::

        fusion = HiddenFusion.named("confidence", num_students=2, hidden_dim=16)
        fused_logit, weights = fusion(out.logits, out.hidden)  # weights sum to 1 per row
    """

    def __init__(
        self,
        num_students: int,
        hidden_dim: int,
        weighting: Weighting,
        combine: Combine,
        stop_gradient: bool = True,
    ) -> None:
        super().__init__()
        self.weighting, self.combine, self.stop_gradient = weighting, combine, stop_gradient
        width = num_students * hidden_dim if combine == "concat" else hidden_dim
        self.readout = nn.Linear(width, 1)

    @classmethod
    def named(
        cls, name: str, num_students: int, hidden_dim: int, stop_gradient: bool = True
    ) -> HiddenFusion:
        weighting, combine = FUSIONS[name]
        return cls(num_students, hidden_dim, weighting, combine, stop_gradient)

    def forward(
        self, logits: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.weighting == "confidence":
            confidence = -binary_entropy_from_logits(logits)  # (B, K)
            if self.stop_gradient:
                confidence = confidence.detach()
            weights = torch.softmax(confidence, dim=1)
            hidden = hidden * weights.unsqueeze(2)  # (B, K, H)
        else:
            weights = torch.full_like(logits, 1.0 / logits.shape[1])
        if self.combine == "concat":
            fused = hidden.reshape(hidden.shape[0], -1)  # (B, K * H)
        elif self.combine == "sum":
            fused = hidden.sum(dim=1)
        else:
            fused = hidden.mean(dim=1)
        return self.readout(fused).squeeze(1), weights
