"""DeepFM (Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR
Prediction", IJCAI 2017), as FuxiCTR's DeepFM.

y = y_FM + y_DNN (eq. 1), y_FM = <w, x> + sum_{i<j} <V_i, V_j> x_i x_j (eq. 2) over the
field embeddings e_i (B, F + Dd, D), with the pairwise sum computed in O(F D) as
0.5 * sum_d ((sum_i e_id)^2 - sum_i e_id^2); y_DNN = MLP(flat embeddings) (eq. 3-4).

First-order term <w, x>: FuxiCTR's LogisticRegression keeps its own 1-dim embedding table per
sparse field, which would be a separate TorchRec table (an architecture cannot add tables).
Here it is a linear layer over the flat field embeddings, w^T [e_1, ..., e_F+Dd] + b: per id a
weight w_f^T e_f tied to the id's embedding (and per numeric feature x_j w_j^T v_j, the same
as FuxiCTR's weight per numeric feature).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recsys_kdef.models.zoo.base import FieldEmbeddings, MLPBlock, StudentInputs
from recsys_kdef.models.zoo.wide_deep import LinearAndDNN


@dataclass(kw_only=True, slots=True)
class DeepFMParams:
    """FuxiCTR DeepFM's hyperparameters (same names and defaults)."""

    hidden_units: list[int] = field(default_factory=lambda: [64, 64, 64])
    hidden_activations: str = "relu"
    net_dropout: float = 0.0
    batch_norm: bool = False


def fm_pairwise(e: torch.Tensor) -> torch.Tensor:
    """sum_{i<j} <e_i, e_j>: (B, N, D) -> (B,)."""
    return 0.5 * (e.sum(dim=1).square() - e.square().sum(dim=1)).sum(dim=1)


class DeepFM(nn.Module):
    """One DeepFM student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, H) (the DNN's last
    hidden layer; the logit adds the FM term to the DNN's output)."""

    def __init__(self, p: DeepFMParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        n = inputs.flat_dim
        dnn = MLPBlock(n, list(p.hidden_units), p.hidden_activations, p.net_dropout, p.batch_norm)
        self.linear_dnn = LinearAndDNN(n, dnn, linear_bias=True)  # first-order term: see above
        self.output_dim = self.linear_dnn.output_dim

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.fields(emb, dense)  # (B, F + Dd, D)
        logit, h = self.linear_dnn(e.flatten(1))  # (B,), (B, H)
        return logit + fm_pairwise(e), h
