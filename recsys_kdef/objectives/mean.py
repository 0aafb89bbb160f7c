"""`mean`: the plain ensemble baseline, BCE on the mean of the students' logits only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys_kdef.models.outputs import EnsembleOutput
from recsys_kdef.objectives.base import ObjectiveOutput


class MeanEnsembleObjective(nn.Module):
    """L = BCE(sigmoid(mean_k logit_k), y): the students learn only through the ensemble."""

    @classmethod
    def from_config(cls, cfg, model: nn.Module) -> MeanEnsembleObjective:
        return cls()

    def forward(self, output: EnsembleOutput, labels: torch.Tensor) -> ObjectiveOutput:
        loss = F.binary_cross_entropy_with_logits(output.teacher_logit, labels)
        return ObjectiveOutput(loss=loss, components={"ctr": loss.detach()})
