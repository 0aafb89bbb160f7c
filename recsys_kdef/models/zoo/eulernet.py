"""EulerNet (Tian et al., "EulerNet: Adaptive Feature Interaction Learning via Euler's Formula
for CTR Prediction", SIGIR 2023), as FuxiCTR's EulerNet.

Field embeddings become complex vectors r + i p = mu_f (cos e + i sin e) (eq. 7, mu per
field). Each Euler interaction layer maps n complex fields to K = `shape[l]` (eq. 8-11):
    explicit: polar form lam e^{i theta} of z, lam = ln|z|, theta = atan2(p, r), then
        lam'_{k,d} = exp(sum_f a_{f,k} ln|z_{f,d}| + b^lam_{k,d}),
        theta'_{k,d} = sum_f a_{f,k} theta_{f,d} + b^theta_{k,d}
        i.e. z'_{k,d} = prod_f z_{f,d}^{a_{f,k}} with learnable orders a (n, K);
    implicit: relu(W r + b), relu(W p + b) over the flat (B, n D) (one W for both parts);
    out = implicit + lam' (cos theta' + i sin theta'), optionally layer-normalised per field.
logit = w^T r_L + w^T p_L + 2b (FuxiCTR's `reg` applied to both parts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recsys_kdef.models.zoo.base import FieldEmbeddings, StudentInputs


@dataclass(kw_only=True, slots=True)
class EulerNetParams:
    """FuxiCTR EulerNet's hyperparameters (same names and defaults)."""

    shape: list[int] = field(default_factory=lambda: [3])
    net_ex_dropout: float = 0.0
    net_im_dropout: float = 0.0
    layer_norm: bool = False

    def __post_init__(self) -> None:
        if not self.shape or min(self.shape) < 1:
            raise ValueError(f"eulernet: shape={self.shape} must list >= 1 neurons per layer")


class EulerInteraction(nn.Module):
    """(B, n, D), (B, n, D) real and imaginary parts -> (B, K, D), (B, K, D)."""

    def __init__(self, n_in: int, n_out: int, dim: int, p: EulerNetParams) -> None:
        super().__init__()
        # FuxiCTR's initial orders: the identity for equal widths, else a sharp softmax
        # (each output order close to one input field)
        if n_in == n_out:
            orders = torch.eye(n_in)
        else:
            orders = torch.softmax(torch.randn(n_in, n_out) / 0.01, dim=0)
        self.inter_orders = nn.Parameter(orders)  # (n, K)
        self.im = nn.Linear(n_in * dim, n_out * dim)  # default bias init, as FuxiCTR's
        nn.init.xavier_uniform_(self.im.weight)
        self.bias_lam = nn.Parameter(torch.randn(1, dim, n_out) * 0.01)
        self.bias_theta = nn.Parameter(torch.randn(1, dim, n_out) * 0.01)
        self.drop_ex = nn.Dropout(p.net_ex_dropout)
        self.drop_im = nn.Dropout(p.net_im_dropout)
        self.apply_norm = p.layer_norm
        self.norm_r = nn.LayerNorm(dim)  # FuxiCTR builds both norms either way
        self.norm_p = nn.LayerNorm(dim)
        self.dim = dim

    def forward(self, r: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = r.shape[0]
        lam = 0.5 * torch.log(r.square() + p.square() + 1e-8)  # (B, n, D): ln|z|
        theta = torch.atan2(p, r)
        lam, theta = self.drop_ex(lam), self.drop_ex(theta)
        lam = torch.exp(lam.transpose(1, 2) @ self.inter_orders + self.bias_lam)  # (B, D, K)
        theta = theta.transpose(1, 2) @ self.inter_orders + self.bias_theta
        lam, theta = lam.transpose(1, 2), theta.transpose(1, 2)  # (B, K, D)
        r_im = torch.relu(self.im(self.drop_im(r.flatten(1)))).view(batch, -1, self.dim)
        p_im = torch.relu(self.im(self.drop_im(p.flatten(1)))).view(batch, -1, self.dim)
        o_r, o_p = r_im + lam * torch.cos(theta), p_im + lam * torch.sin(theta)
        if self.apply_norm:
            o_r, o_p = self.norm_r(o_r), self.norm_p(o_p)
        return o_r, o_p


class EulerNet(nn.Module):
    """One EulerNet student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, 2 K_L D) = the last
    layer's [real, imaginary] parts."""

    def __init__(self, p: EulerNetParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        d, widths = inputs.embedding_dim, [inputs.num_fields, *p.shape]
        self.layers = nn.ModuleList(
            EulerInteraction(n_in, n_out, d, p) for n_in, n_out in zip(widths, widths[1:])
        )
        self.mu = nn.Parameter(torch.ones(1, inputs.num_fields, 1))
        self.reg = nn.Linear(widths[-1] * d, 1)
        nn.init.xavier_normal_(self.reg.weight)
        self.output_dim = 2 * widths[-1] * d

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.fields(emb, dense)  # (B, N, D)
        r, p = self.mu * torch.cos(e), self.mu * torch.sin(e)
        for layer in self.layers:
            r, p = layer(r, p)
        r, p = r.flatten(1), p.flatten(1)  # (B, K D)
        return (self.reg(r) + self.reg(p)).squeeze(1), torch.cat([r, p], dim=1)
