"""What every objective returns, and the shared loss pieces."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class ObjectiveOutput:
    """loss: the scalar to minimise; components: detached scalars for logs (ctr, kd, dml, ...);
    weights: detached loss weights for reports (e.g. KDEF's lambda (K,) and mu (K, K));
    heads: extra predictions (B,) logits the objective makes, evaluated like the model's."""

    loss: torch.Tensor
    components: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    heads: dict[str, torch.Tensor] = field(default_factory=dict)


def per_student_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(K,) mean BCE of each student: logits (B, K), labels (B,)."""
    return F.binary_cross_entropy_with_logits(
        logits, labels.unsqueeze(1).expand_as(logits), reduction="none"
    ).mean(dim=0)
