"""DIN (Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018), as
FuxiCTR's DIN.

Local activation unit (eq. 3): the user's interest in target item e_t is
    v_U(t) = sum_j w_j e_j,  w_j = a([e_t, e_j, e_t - e_j, e_t * e_j]) * m_j
over the behaviour sequence e_1..e_L (mask m_j; `din_use_softmax`: w = softmax over the
unmasked positions instead), a = an MLP (attention_hidden_units, Dice by default) -> scalar.
v_U(t) replaces the sequence field; a DNN reads all fields and the embedded numeric values.
With no sequence in the schema DIN is its DNN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from recsys_kdef.models.zoo.base import Activation, FieldEmbeddings, MLPBlock, StudentInputs


@dataclass(kw_only=True, slots=True)
class DINParams:
    """FuxiCTR DIN's hyperparameters (same names and defaults)."""

    dnn_hidden_units: list[int] = field(default_factory=lambda: [512, 128, 64])
    dnn_activations: str = "ReLU"
    attention_hidden_units: list[int] = field(default_factory=lambda: [64])
    attention_hidden_activations: str = "Dice"
    attention_output_activation: str | None = None
    attention_dropout: float = 0.0
    net_dropout: float = 0.0
    batch_norm: bool = False
    din_use_softmax: bool = False


class DINAttention(nn.Module):
    """Target attention over a sequence: e_t (B, D), seq (B, L, D), mask (B, L) -> (B, D)."""

    def __init__(self, dim: int, p: DINParams) -> None:
        super().__init__()
        self.mlp = MLPBlock(
            4 * dim,
            list(p.attention_hidden_units),
            p.attention_hidden_activations,
            p.attention_dropout,
            output_dim=1,
        )
        out = p.attention_output_activation
        self.output_activation = Activation(out) if out is not None else nn.Identity()
        self.use_softmax = p.din_use_softmax

    def scores(self, target: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """a([e_t, e_j, e_t - e_j, e_t * e_j]) per position, unmasked: (B, D), (B, L, D) -> (B, L).

        The first layer W [e_t, e_j, e_t - e_j, e_t * e_j] + b is computed as
        (W_1 + W_3) e_t + b once per row plus e_j (W_2 - W_3 + W_4 diag(e_t))^T per position, a
        (D, H) matrix per row: the same sum, without the (B, L, 4D) unit or the (B, L, D)
        products e_t * e_j (a quarter of the multiply-adds)."""
        batch, length, dim = seq.shape
        first, rest = self.mlp.layers[0], self.mlp.layers[1:]
        w_t, w_s, w_d, w_p = first.weight.split(dim, dim=1)  # (H, D) each
        per_row = F.linear(target, w_t + w_d, first.bias).unsqueeze(1)  # (B, 1, H)
        weight = (w_s - w_d).t() + target.unsqueeze(-1) * w_p.t()  # (B, D, H)
        hidden = torch.baddbmm(per_row, seq, weight)  # (B, L, H)
        w = self.output_activation(rest(hidden.reshape(batch * length, -1)))
        return w.view(batch, length)

    def forward(self, target: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(seq.dtype)
        w = self.scores(target, seq) * m  # (B, L)
        if self.use_softmax:
            w = (w - 1e9 * (1 - m)).softmax(dim=-1)
        return (w.unsqueeze(1) @ seq).squeeze(1)  # (B, D): sum_j w_j e_j


class DIN(nn.Module):
    """One DIN student: (B, F, D), (B, Dd), seq (B, S, L, D), mask (B, S, L) -> logit (B,),
    hidden (B, H) (the DNN's last hidden layer, the fc's input)."""

    reads_sequence = True

    def __init__(self, p: DINParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        self.sequences = inputs.sequences  # (sequence field, target field) per sequence
        dim = inputs.embedding_dim
        self.attention = nn.ModuleList(DINAttention(dim, p) for _ in inputs.sequences)
        self.dnn = MLPBlock(
            inputs.flat_dim,
            list(p.dnn_hidden_units),
            p.dnn_activations,
            p.net_dropout,
            p.batch_norm,
        )
        self.fc = nn.Linear(self.dnn.output_dim, 1)
        self.output_dim = self.dnn.output_dim

    def forward(
        self,
        emb: torch.Tensor,
        dense: torch.Tensor,
        seq: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if seq is not None:
            columns = list(emb.unbind(dim=1))  # F x (B, D)
            for s, (seq_field, target) in enumerate(self.sequences):
                columns[seq_field] = self.attention[s](emb[:, target], seq[:, s], mask[:, s])
            emb = torch.stack(columns, dim=1)  # (B, F, D): each sequence is its interest v_U(t)
        h = self.dnn(self.fields(emb, dense).flatten(1))  # (B, H)
        return self.fc(h).squeeze(1), h
