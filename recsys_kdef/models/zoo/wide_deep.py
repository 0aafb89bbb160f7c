"""Wide & Deep (Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS 2016), as
FuxiCTR's WideDeep.

P(y = 1 | x) = sigma(w_wide^T [x, phi(x)] + w_deep^T a^(l_f) + b) (eq. 3): the wide part a
linear model, the deep part an MLP over the flat field embeddings (B, (F + Dd) * D).

Wide part: FuxiCTR's LogisticRegression keeps its own 1-dim embedding table per sparse field,
which would be a separate TorchRec table (an architecture cannot add tables). Here it is a
linear layer over the flat field embeddings, w^T [e_1, ..., e_F+Dd]: per id a weight w_f^T e_f
tied to the id's embedding (per numeric feature x_j w_j^T v_j, the same as FuxiCTR's weight
per numeric feature); no cross-product transformations phi, as FuxiCTR.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recsys_kdef.models.zoo.base import FieldEmbeddings, MLPBlock, StudentInputs, xavier_init


@dataclass(kw_only=True, slots=True)
class WideDeepParams:
    """FuxiCTR WideDeep's hyperparameters (same names and defaults)."""

    hidden_units: list[int] = field(default_factory=lambda: [64, 64, 64])
    hidden_activations: str = "relu"
    net_dropout: float = 0.0
    batch_norm: bool = False


class LinearAndDNN(nn.Module):
    """A linear (wide / first-order) logit plus an MLP's logit over the flat embeddings:
    (B, N) -> logit (B,), the MLP's last hidden layer (B, H).

    Shared by Wide & Deep, DeepFM (whose first-order term has a bias) and xDeepFM.
    """

    def __init__(self, input_dim: int, dnn: MLPBlock, linear_bias: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, 1, bias=linear_bias)
        self.dnn = dnn
        self.dnn_out = nn.Linear(dnn.output_dim, 1)
        xavier_init(self)
        self.output_dim = dnn.output_dim

    def forward(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.dnn(flat)  # (B, H)
        return (self.linear(flat) + self.dnn_out(h)).squeeze(1), h


class WideDeep(nn.Module):
    """One Wide & Deep student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, H) (the DNN's
    last hidden layer; the logit adds the wide part's to the DNN's)."""

    def __init__(self, p: WideDeepParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        n = inputs.flat_dim
        dnn = MLPBlock(n, list(p.hidden_units), p.hidden_activations, p.net_dropout, p.batch_norm)
        self.wide_deep = LinearAndDNN(n, dnn, linear_bias=False)  # FuxiCTR: LR without bias
        self.output_dim = self.wide_deep.output_dim

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.wide_deep(self.fields(emb, dense).flatten(1))  # (B,), (B, H)
