"""MLP (FuxiCTR's DNN): the students of the KDEF code, computed as one batched bmm group.

Reads the concatenated pooled embeddings and the raw numeric values (as the shorthand
`model.num_students` + `model.tower` does); see recsys_kdef.models.towers.BatchedMLP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from recsys_kdef.models.towers import BatchedMLP
from recsys_kdef.models.zoo.base import StudentInputs


@dataclass(kw_only=True, slots=True)
class MLPParams:
    """FuxiCTR DNN's hyperparameters."""

    hidden_units: list[int] = field(default_factory=lambda: [400, 400, 400])
    hidden_activations: str = "relu"
    net_dropout: float = 0.1
    batch_norm: bool = True


class MLPStudents(BatchedMLP):
    """n MLP students over (n_in, B, F, D) embeddings and (B, Dd) numeric values."""

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_in, batch = emb.shape[0], emb.shape[1]
        x = emb.reshape(n_in, batch, -1)  # (n_in, B, F * D)
        if dense.shape[1]:  # no copy of every embedding for a schema without numeric fields
            x = torch.cat([x, dense.unsqueeze(0).expand(n_in, batch, dense.shape[1])], dim=2)
        return super().forward(x)  # (n_in, B, F * D + Dd)


def build_mlp(params: MLPParams, inputs: StudentInputs, count: int) -> MLPStudents:
    return MLPStudents(
        count,
        inputs.num_sparse * inputs.embedding_dim + inputs.num_dense,
        list(params.hidden_units),
        params.batch_norm,
        params.net_dropout,
        params.hidden_activations,
    )
