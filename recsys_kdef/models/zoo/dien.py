"""DIEN (Zhou et al., "Deep Interest Evolution Network for Click-Through Rate Prediction",
AAAI 2019), as FuxiCTR's DIEN (model_zoo/DIEN/src/DIEN.py).

Per behaviour sequence e_1..e_L (mask m) and target item e_t:
    interest extractor (eq. 2):  h_j = GRU(e_j, h_{j-1})
    attention (eq. 5):           a_j = softmax_j(h_j W e_t) over the unmasked positions
                                 (`attention_type` bilinear; dot: h_j . e_t; din_attention: DIN's MLP)
    interest evolution (AUGRU, eqs. 7-8): u'_j = a_j * u_j,
                                 h'_j = (1 - u'_j) * h'_{j-1} + u'_j * htilde_j
The final evolved state h'_L replaces the sequence field; a DNN reads all fields and the
embedded numeric values (`enable_sum_pooling` adds the summed history and its product with
the target, as the paper's code). Masked positions leave both GRUs' states unchanged.

Auxiliary loss (eq. 1), built when `aux_loss_alpha` > 0: the extractor state h_j must tell the
next clicked item e_{j+1} from a negative, through aux_net = MLP([h_j, e]) -> logit:
    L_aux = mean of BCE(aux(h_j, e_{j+1}), 1) and BCE(aux(h_j, n_{j+1}), 0) over the live terms
The negative n_{j+1} is position j+1 of the next row's history in the batch (row b + 1 mod B;
FuxiCTR reads negatives from an extra `neg_*` sequence column, which our schema has not); a
pair counts where e_{j+1} exists (and, for its negative term, n_{j+1} too). The student
returns aux_loss_alpha * L_aux as its auxiliary loss, which the objectives add
(recsys_kdef.builders.train_wrapper).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from recsys_kdef.models.zoo.base import FieldEmbeddings, MLPBlock, StudentInputs
from recsys_kdef.models.zoo.din import DINAttention, DINParams


@dataclass(kw_only=True, slots=True)
class DIENParams:
    """FuxiCTR DIEN's hyperparameters (same names and defaults; its fields are our schema's)."""

    dnn_hidden_units: list[int] = field(default_factory=lambda: [200, 80])
    dnn_activations: str = "ReLU"
    net_dropout: float = 0.0
    batch_norm: bool = True
    gru_type: Literal["AUGRU"] = "AUGRU"
    enable_sum_pooling: bool = False
    attention_dropout: float = 0.0
    attention_type: Literal["bilinear_attention", "dot_attention", "din_attention"] = (
        "bilinear_attention"
    )
    attention_hidden_units: list[int] = field(default_factory=lambda: [80, 40])
    attention_activation: str = "Dice"
    use_attention_softmax: bool = True
    aux_hidden_units: list[int] = field(default_factory=lambda: [100, 50])
    aux_activation: str = "ReLU"
    aux_loss_alpha: float = 0.0

    def __post_init__(self) -> None:
        if self.aux_loss_alpha < 0:
            raise ValueError(f"dien: aux_loss_alpha must be >= 0, got {self.aux_loss_alpha}")


class GRULayer(nn.Module):
    """A masked GRU over a left-aligned sequence: x (B, L, I), mask (B, L) [, attention (B, L)]
    -> states (B, L, H) (0 where masked), last state (B, H); masked positions keep the state.

    Without attention it is nn.GRU (its parameter layout, gates r, z, n, h' = (1 - z) n + z h);
    with attention it is FuxiCTR's AUGRUCell (gates u, r, n of x2h / h2h, h' = h + a u (n - h),
    DIEN eq. 7). A loop over positions (not nn.GRU) so that torch.func.vmap can stack students.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size))
        bound = hidden_size**-0.5  # nn.GRU's initialisation
        for w in self.parameters():
            nn.init.uniform_(w, -bound, bound)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, attention: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gates_x = F.linear(x, self.weight_ih, self.bias_ih)  # (B, L, 3H), all positions at once
        h = x.new_zeros(x.shape[0], self.weight_hh.shape[1])  # (B, H)
        states = []
        m = mask.to(x.dtype).unsqueeze(-1)  # (B, L, 1)
        for j in range(x.shape[1]):
            x_gates = gates_x[:, j].chunk(3, dim=-1)
            h_gates = F.linear(h, self.weight_hh, self.bias_hh).chunk(3, dim=-1)
            if attention is None:  # nn.GRU: r, z, n
                r = torch.sigmoid(x_gates[0] + h_gates[0])
                u = 1 - torch.sigmoid(x_gates[1] + h_gates[1])
            else:  # AUGRU: u, r, n; the update gate scaled by the attention score
                u = torch.sigmoid(x_gates[0] + h_gates[0]) * attention[:, j : j + 1]
                r = torch.sigmoid(x_gates[1] + h_gates[1])
            n = torch.tanh(x_gates[2] + r * h_gates[2])
            h = h + m[:, j] * u * (n - h)  # unchanged where masked
            states.append(h * m[:, j])
        return torch.stack(states, dim=1), h


class InterestAttention(nn.Module):
    """FuxiCTR DIEN's AttentionLayer: interests (B, L, D), target (B, D), mask -> a (B, L)."""

    def __init__(self, dim: int, p: DIENParams) -> None:
        super().__init__()
        self.kind = p.attention_type
        self.use_softmax = p.use_attention_softmax
        if self.kind == "bilinear_attention":
            self.kernel = nn.Parameter(torch.eye(dim))
        elif self.kind == "din_attention":
            din = DINParams(
                attention_hidden_units=list(p.attention_hidden_units),
                attention_hidden_activations=p.attention_activation,
                attention_dropout=p.attention_dropout,
            )
            self.din = DINAttention(dim, din)

    def forward(self, h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "din_attention":
            score = self.din.scores(target, h)  # (B, L)
        else:
            key = h @ self.kernel if self.kind == "bilinear_attention" else h
            score = (key @ target.unsqueeze(-1)).squeeze(-1)  # (B, L)
        m = mask.to(h.dtype)
        score = score * m
        if self.use_softmax:
            score = (score - 1e9 * (1 - m)).softmax(dim=-1)
        return score


class DIEN(nn.Module):
    """One DIEN student: (B, F, D), (B, Dd), seq (B, S, L, D), mask (B, S, L) -> logit (B,),
    hidden (B, H) (the DNN's last hidden layer) and, if aux_loss_alpha > 0, its auxiliary loss ()."""

    reads_sequence = True

    def __init__(self, p: DIENParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        self.sequences = inputs.sequences
        dim = inputs.embedding_dim
        n = len(inputs.sequences)
        self.extractors = nn.ModuleList(GRULayer(dim, dim) for _ in range(n))
        self.evolvers = nn.ModuleList(GRULayer(dim, dim) for _ in range(n))
        self.attention = nn.ModuleList(InterestAttention(dim, p) for _ in range(n))
        self.sum_pooling = p.enable_sum_pooling
        extra = 2 * dim * n if p.enable_sum_pooling else 0
        self.dnn = MLPBlock(
            inputs.flat_dim + extra,
            list(p.dnn_hidden_units),
            p.dnn_activations,
            p.net_dropout,
            p.batch_norm,
        )
        self.fc = nn.Linear(self.dnn.output_dim, 1)
        self.output_dim = self.dnn.output_dim
        self.aux_loss_alpha = p.aux_loss_alpha
        self.has_aux_loss = p.aux_loss_alpha > 0 and n > 0
        if self.has_aux_loss:
            self.aux_net = MLPBlock(
                2 * dim, list(p.aux_hidden_units), p.aux_activation, p.net_dropout, output_dim=1
            )

    def forward(
        self,
        emb: torch.Tensor,
        dense: torch.Tensor,
        seq: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        aux = []
        extra = []
        if seq is not None:
            columns = list(emb.unbind(dim=1))  # F x (B, D)
            for s, (seq_field, target) in enumerate(self.sequences):
                e, m, t = seq[:, s], mask[:, s], emb[:, target]  # (B, L, D), (B, L), (B, D)
                interests, _ = self.extractors[s](e, m)  # (B, L, D)
                a = self.attention[s](interests, t, m)  # (B, L)
                _, evolved = self.evolvers[s](interests, m, a)  # (B, D)
                columns[seq_field] = evolved
                if self.sum_pooling:
                    pooled = (e * m.unsqueeze(-1)).sum(dim=1)  # (B, D)
                    extra += [pooled, t * pooled]
                if self.has_aux_loss:
                    aux.append(self.auxiliary_loss(interests, e, m))
            emb = torch.stack(columns, dim=1)  # (B, F, D)
        x = torch.cat([self.fields(emb, dense).flatten(1), *extra], dim=1)
        h = self.dnn(x)  # (B, H)
        logit = self.fc(h).squeeze(1)
        if not self.has_aux_loss:
            return logit, h
        loss = torch.stack(aux).sum() if aux else logit.new_zeros(())
        return logit, h, self.aux_loss_alpha * loss

    def auxiliary_loss(
        self, interests: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """L_aux of one sequence (module docstring): interests, seq (B, L, D), mask (B, L) -> ()."""
        h = interests[:, :-1]  # (B, L-1, D) the state after positions 0..L-2
        pos, neg = seq[:, 1:], seq.roll(-1, dims=0)[:, 1:]  # next clicked item, a negative
        m_pos = mask[:, 1:].to(seq.dtype)  # (B, L-1)
        m_neg = m_pos * mask.roll(-1, dims=0)[:, 1:].to(seq.dtype)
        pairs = torch.cat([torch.cat([h, h]), torch.cat([pos, neg])], dim=-1)  # (2B, L-1, 2D)
        logits = self.aux_net(pairs.flatten(0, 1)).view(pairs.shape[:2])  # (2B, L-1)
        labels = torch.cat([torch.ones_like(m_pos), torch.zeros_like(m_neg)])
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        weight = torch.cat([m_pos, m_neg])
        return (bce * weight).sum() / weight.sum().clamp(min=1)
