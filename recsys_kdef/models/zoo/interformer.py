"""InterFormer (Zeng et al., "InterFormer: Towards Effective Heterogeneous Interaction Learning
for Click-Through Rate Prediction", arXiv 2411.09852, 2024), written from the paper: neither
FuxiCTR nor TorchRec ships one, and no public implementation was found.

Non-sequence tokens X (B, n, D) (the fields that are not sequences and the embedded numeric
values) and the behaviour sequence S (B, L, D) are learnt in interleaved layers, each with three
arms; information flows both ways through the cross arm's summaries:

    cross arm (selection and summarisation), from layer l's states:
        X_sum = Gate(W_c X)                     W_c (n_sum, n) compresses the n tokens
        S_sum = Gate([S_cls || PMA(S) || S_recent])
            S_cls:    the states of k_cls learnt CLS tokens prepended to the sequence
            PMA(S):   k_pma learnt queries attending over the sequence (multi-head, masked)
            S_recent: the last k_recent ids' states (zeros where a history is shorter)
        Gate(Z) = sigmoid(Z W_g + b_g) * Z      self-gating per token
    interaction arm (behaviour-aware interaction): Z = [X || S_sum] (B, T, D), T = n + k_sum
        X' = LayerNorm(X + unvec(W_i [vec(X) || triu(Z Z^T)] + b_i))
    sequence arm (context-aware sequence learning): the personalised FFN, then self-attention
        P = S W(X_sum), W(X_sum) = unvec(W_p vec(X_sum) + b_p) (D, D) per sample
        S' = LayerNorm(P + MHA(P))   (key padding mask; CLS tokens always attend)

After `num_layers` layers a last cross arm summarises both; the DNN reads [vec(X_sum) ||
vec(S_sum)] (the hidden vector is its last layer) -> logit. Several sequences are joined per
position (concatenated, then Linear(S D -> D); the paper unifies them with a MaskNet). The
interaction arm uses inner products (the paper allows any interaction module there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from recsys_kdef.models.zoo.base import FieldEmbeddings, MLPBlock, StudentInputs


@dataclass(kw_only=True, slots=True)
class InterFormerParams:
    """InterFormer's hyperparameters (the paper's: layers, heads, summary token counts)."""

    num_layers: int = 2
    num_heads: int = 2
    num_summary_tokens: int = 4
    """n_sum: non-sequence tokens after the cross arm's compression."""
    num_cls_tokens: int = 2
    num_pma_tokens: int = 2
    num_recent_tokens: int = 2
    dnn_hidden_units: list[int] = field(default_factory=lambda: [256, 128])
    dnn_activations: str = "ReLU"
    net_dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self) -> None:
        counts = (self.num_layers, self.num_heads, self.num_summary_tokens)
        if min(counts) < 1 or min(self.num_cls_tokens, self.num_pma_tokens) < 0:
            raise ValueError(
                "interformer: num_layers, num_heads and num_summary_tokens must be >= 1 and the "
                f"other token counts >= 0, got {self}"
            )
        if self.num_cls_tokens + self.num_pma_tokens + self.num_recent_tokens < 1:
            raise ValueError("interformer: the sequence summary needs at least one token")


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor, heads: int
) -> torch.Tensor:
    """Multi-head self-attention: q, k, v (B, T, D), key_mask (B, T) -> (B, T, D); a row with
    no live key gets the mean of its values (its positions are masked: the caller zeroes them).

    softmax(q k^T / sqrt(D / h) - 1e9 [key masked]) v per head, by PyTorch's fused kernel: it
    never holds the (B, h, T, T) weights, which at 100 positions cost ~3x the time."""
    b, t, d = q.shape
    split = [x.view(b, t, heads, d // heads).transpose(1, 2) for x in (q, k, v)]
    bias = torch.zeros_like(key_mask, dtype=q.dtype).masked_fill(~key_mask, -1e9)  # (B, T)
    out = F.scaled_dot_product_attention(*split, attn_mask=bias[:, None, None, :])  # (B, h, T, d)
    return out.transpose(1, 2).reshape(b, t, d)


def pool(
    s: torch.Tensor, mask: torch.Tensor, queries: torch.Tensor, kv: torch.Tensor, heads: int
) -> torch.Tensor:
    """PMA: learnt queries (k, D) attend over keys s W_k^T and values s W_v^T (kv = [W_k; W_v],
    (2D, D)), multi-head, masked: s (B, T, D), mask (B, T) -> (B, k, D), zeros for a row with
    no live position.

    The same sums in another order: head j's scores are (q_j W_k,j) s^T and its output
    (weights s) W_v,j^T, so the (B, T, 2D) keys and values are never made (the k queries are
    few, the positions many)."""
    b, t, d = s.shape
    k, dh = queries.shape[0], d // heads
    w_k, w_v = kv.view(2, heads, dh, d).unbind(0)  # head j's rows of W_k and W_v: (h, dh, D)
    q = queries.view(k, heads, dh) * dh**-0.5
    m = torch.einsum("kje,jei->jki", q, w_k).reshape(heads * k, d)  # q_j W_k,j per head, query
    bias = torch.zeros_like(mask, dtype=s.dtype).masked_fill(~mask, -1e9).unsqueeze(1)
    scores = torch.baddbmm(bias, m.expand(b, -1, -1), s.transpose(1, 2))  # (B, h k, T)
    pooled = scores.softmax(dim=-1) @ s  # (B, h k, D)
    out = torch.einsum("bjki,jei->bkje", pooled.view(b, heads, k, d), w_v)  # (B, k, h, dh)
    live = mask.any(dim=1).to(s.dtype)[:, None, None, None]
    return (out * live).reshape(b, k, d)


class Gate(nn.Module):
    """Self-gating: sigmoid(Z W + b) * Z, (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(z)) * z


class CrossArm(nn.Module):
    """Summaries: X (B, n, D), S (B, k_cls + L, D), mask (B, k_cls + L) -> X_sum (B, n_sum, D),
    S_sum (B, k_cls + k_pma + k_recent, D)."""

    def __init__(self, n: int, dim: int, p: InterFormerParams) -> None:
        super().__init__()
        self.compress = nn.Parameter(torch.randn(p.num_summary_tokens, n) / n**0.5)
        self.x_gate = Gate(dim)
        self.pma_query = nn.Parameter(torch.randn(p.num_pma_tokens, dim) / dim**0.5)
        self.pma_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.s_gate = Gate(dim)
        self.heads, self.k_cls, self.k_recent = p.num_heads, p.num_cls_tokens, p.num_recent_tokens

    def forward(
        self, x: torch.Tensor, s: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_sum = self.x_gate(torch.einsum("mn,bnd->bmd", self.compress, x))  # (B, n_sum, D)
        picked = cls_and_recent(s, mask, self.k_cls, self.k_recent)  # (B, k_cls + k_recent, D)
        parts = [picked[:, : self.k_cls]]
        if self.pma_query.shape[0]:
            parts.append(pool(s, mask, self.pma_query, self.pma_kv.weight, self.heads))
        parts.append(picked[:, self.k_cls :])
        return x_sum, self.s_gate(torch.cat(parts, dim=1))


def cls_and_recent(s: torch.Tensor, mask: torch.Tensor, k_cls: int, k: int) -> torch.Tensor:
    """The CLS tokens' states, then those of the last k live positions of left-aligned
    sequences, oldest first: s (B, k_cls + L, D), mask (B, k_cls + L) -> (B, k_cls + k, D),
    zeros where a row has fewer than k. One gather (its backward: one scatter into s's grad)."""
    b, d = s.shape[0], s.shape[-1]
    length = mask[:, k_cls:].sum(dim=1, keepdim=True)  # (B, 1)
    last = k_cls + length - k + torch.arange(k, device=s.device)  # (B, k)
    index = torch.cat([torch.arange(k_cls, device=s.device).expand(b, -1), last], dim=1)
    live = torch.cat([mask.new_ones(b, k_cls), last >= k_cls], dim=1).unsqueeze(-1)
    return s.gather(1, index.clamp(min=0).unsqueeze(-1).expand(-1, -1, d)) * live


class InteractionArm(nn.Module):
    """X (B, n, D), S_sum (B, k, D) -> X' (B, n, D): inner products of all tokens, then a linear
    map back to the n tokens, a residual and LayerNorm."""

    def __init__(self, n: int, k: int, dim: int) -> None:
        super().__init__()
        t = n + k
        self.linear = nn.Linear(n * dim + t * (t + 1) // 2, n * dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, s_sum: torch.Tensor) -> torch.Tensor:
        z = torch.cat([x, s_sum], dim=1)  # (B, T, D)
        t = z.shape[1]
        rows, cols = torch.triu_indices(t, t, device=z.device)
        # the upper triangle of Z Z^T, by index_select on the flat products (its backward is
        # cheaper than a 2-d advanced index's)
        products = (z @ z.transpose(1, 2)).flatten(1).index_select(1, rows * t + cols)
        y = self.linear(torch.cat([x.flatten(1), products], dim=1)).view_as(x)
        return self.norm(x + y)


class SequenceArm(nn.Module):
    """X_sum (B, n_sum, D), S (B, T, D), mask (B, T) -> S' (B, T, D): personalised FFN, then
    multi-head self-attention with a residual and LayerNorm; masked positions stay zero."""

    def __init__(self, n_sum: int, dim: int, heads: int) -> None:
        super().__init__()
        self.pffn = nn.Linear(n_sum * dim, dim * dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.heads = heads

    def forward(self, x_sum: torch.Tensor, s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, _, d = s.shape
        w = self.pffn(x_sum.flatten(1)).view(b, d, d)  # (B, D, D), one per sample
        p = s @ w  # (B, T, D)
        q, k, v = self.qkv(p).chunk(3, dim=-1)
        y = self.norm(p + self.out(attend(q, k, v, mask, self.heads)))
        return y * mask.unsqueeze(-1).to(y.dtype)


class InterFormerLayer(nn.Module):
    """One interleaved layer: (X, S, mask) -> (X', S'), the three arms (module docstring)."""

    def __init__(self, n: int, dim: int, p: InterFormerParams) -> None:
        super().__init__()
        k = p.num_cls_tokens + p.num_pma_tokens + p.num_recent_tokens
        self.cross = CrossArm(n, dim, p)
        self.interaction = InteractionArm(n, k, dim)
        self.sequence = SequenceArm(p.num_summary_tokens, dim, p.num_heads)

    def forward(
        self, x: torch.Tensor, s: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_sum, s_sum = self.cross(x, s, mask)
        return self.interaction(x, s_sum), self.sequence(x_sum, s, mask)


class InterFormer(nn.Module):
    """One InterFormer student: (B, F, D), (B, Dd), seq (B, S, L, D), mask (B, S, L) -> logit
    (B,), hidden (B, H) (the DNN's last hidden layer)."""

    reads_sequence = True

    def __init__(self, p: InterFormerParams, inputs: StudentInputs) -> None:
        super().__init__()
        if not inputs.sequences:
            raise ValueError(
                "interformer reads a behaviour sequence; the schema has none (give a sparse "
                "field sequence_of and max_len)"
            )
        dim = inputs.embedding_dim
        if dim % p.num_heads:
            raise ValueError(
                f"interformer: embedding_dim {dim} is not divisible by num_heads {p.num_heads}"
            )
        self.fields = FieldEmbeddings(inputs)
        sequence_fields = {f for f, _ in inputs.sequences}
        keep = [f for f in range(inputs.num_sparse) if f not in sequence_fields]
        keep += list(range(inputs.num_sparse, inputs.num_fields))  # the numeric values
        self.tokens = keep  # the non-sequence tokens among the F + Dd fields
        n, num_seq = len(keep), len(inputs.sequences)
        self.join = nn.Linear(num_seq * dim, dim) if num_seq > 1 else nn.Identity()
        self.cls = nn.Parameter(torch.randn(p.num_cls_tokens, dim) / dim**0.5)
        self.layers = nn.ModuleList(InterFormerLayer(n, dim, p) for _ in range(p.num_layers))
        self.summary = CrossArm(n, dim, p)
        k = p.num_cls_tokens + p.num_pma_tokens + p.num_recent_tokens
        self.dnn = MLPBlock(
            (p.num_summary_tokens + k) * dim,
            list(p.dnn_hidden_units),
            p.dnn_activations,
            p.net_dropout,
            p.batch_norm,
        )
        self.fc = nn.Linear(self.dnn.output_dim, 1)
        self.output_dim = self.dnn.output_dim

    def forward(
        self, emb: torch.Tensor, dense: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.fields(emb, dense)[:, self.tokens]  # (B, n, D)
        b = x.shape[0]
        s = self.join(seq.transpose(1, 2).flatten(2))  # (B, L, D): the sequences per position
        live = mask.any(dim=1)  # (B, L)
        s = s * live.unsqueeze(-1).to(s.dtype)
        s = torch.cat([self.cls.expand(b, -1, -1), s], dim=1)  # (B, k_cls + L, D)
        live = torch.cat([live.new_ones(b, self.cls.shape[0]), live], dim=1)
        for layer in self.layers:
            x, s = layer(x, s, live)
        x_sum, s_sum = self.summary(x, s, live)
        h = self.dnn(torch.cat([x_sum.flatten(1), s_sum.flatten(1)], dim=1))  # (B, H)
        return self.fc(h).squeeze(1), h
