"""The module that is sharded and trained: model + objective, batch in, loss out."""

from __future__ import annotations

import torch
from torch import nn

from recsys_kdef.data.batch import Batch
from recsys_kdef.models.ensemble import EnsembleOutput
from recsys_kdef.objectives.base import ObjectiveOutput


class EnsembleTrain(nn.Module):
    """Runs the ensemble and its objective on a Batch, plus the optional embedding L2 term.

    loss = objective + embedding_l2 * mean_b sum(e_b^2), e_b the pooled embeddings row b reads.
    The L2 term lives here rather than in the sparse optimizer because fbgemm's CPU kernels
    ignore weight decay; as a loss it acts the same on every device and sharding type.

    Returns (loss, (objective_output, model_output)), the shape TorchRec's train pipelines
    expect (loss first). Objectives with parameters (e.g. a gating network) live here too,
    so they are trained and made data-parallel with the towers.
    """

    def __init__(self, model: nn.Module, objective: nn.Module, embedding_l2: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.embedding_l2 = embedding_l2

    def forward(self, batch: Batch) -> tuple[torch.Tensor, tuple[ObjectiveOutput, EnsembleOutput]]:
        output = self.model(batch.dense, batch.sparse)
        result = self.objective(output, batch.labels)
        loss = result.loss
        if self.embedding_l2 > 0 and output.embeddings is not None:
            penalty = output.embeddings.pow(2).sum(dim=(1, 2)).mean()
            loss = loss + self.embedding_l2 * penalty
            result.components["l2"] = penalty.detach()
        return loss, (result, output)
