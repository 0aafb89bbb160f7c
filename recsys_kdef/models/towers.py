"""Student towers: K networks of one architecture computed as one batched computation.

Activations are laid out (K, B, H) so each layer is one batched matmul over the students
rather than a Python loop. Other architectures live in recsys_kdef.models.zoo. Contract: every
parameter and buffer of a tower module has the students as its first dimension, so that one
student can be sliced out (recsys_kdef.export).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "leaky_relu": F.leaky_relu,
}


class StudentBatchNorm(nn.Module):
    """Batch norm with separate statistics and affine parameters per student: (K, B, H) -> (K, B, H).

    Equal to K independent nn.BatchNorm1d(H) (same momentum, eps, biased batch variance for
    normalising and unbiased for the running estimate), without moving (K, B, H) to (B, K * H).
    """

    def __init__(
        self, num_students: int, features: int, eps: float = 1e-5, momentum: float = 0.1
    ) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_students, 1, features))
        self.bias = nn.Parameter(torch.zeros(num_students, 1, features))
        self.register_buffer("running_mean", torch.zeros(num_students, 1, features))
        self.register_buffer("running_var", torch.ones(num_students, 1, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            var, mean = torch.var_mean(x, dim=1, correction=0, keepdim=True)  # (K, 1, H)
            with torch.no_grad():
                n = x.shape[1]
                unbiased = var * (n / max(n - 1, 1))
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(unbiased, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias

    def inference_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift), each (K, 1, H), with eval-mode forward(x) == x * scale + shift."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale


class BatchedMLP(nn.Module):
    """K MLP towers (Linear -> BatchNorm -> activation -> dropout per layer, then Linear to 1).

    Input (K_in, B, D) with K_in = K (per-model inputs) or 1 (shared input, broadcast).
    Returns logits (K, B) and the last hidden vectors (K, B, H), which the output layer reads.
    Weights are Xavier-normal and biases zero, per student, as FuxiCTR's MLP_Block.

    Example::

        towers = BatchedMLP(num_students=4, in_features=64, hidden_units=[32, 16])
        logits, hidden = towers(torch.randn(4, 8, 64))  # (4, 8), (4, 8, 16)
    """

    def __init__(
        self,
        num_students: int,
        in_features: int,
        hidden_units: list[int],
        batch_norm: bool = True,
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.num_students = num_students
        sizes = [in_features, *hidden_units]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(num_students, d_in, d_out))
            for d_in, d_out in zip(sizes, sizes[1:])
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(num_students, 1, d)) for d in hidden_units
        )
        self.norms = nn.ModuleList(
            StudentBatchNorm(num_students, d) if batch_norm else nn.Identity() for d in hidden_units
        )
        self.head_weight = nn.Parameter(torch.empty(num_students, hidden_units[-1], 1))
        self.head_bias = nn.Parameter(torch.zeros(num_students, 1, 1))
        self.activation = ACTIVATIONS[activation]
        self.inplace_relu = activation == "relu"
        self.dropout = nn.Dropout(dropout)
        self.output_dim = hidden_units[-1]
        self.reset_parameters()

    @classmethod
    def from_config(cls, cfg, num_students: int, in_features: int) -> BatchedMLP:
        return cls(
            num_students,
            in_features,
            list(cfg.hidden_units),
            cfg.batch_norm,
            cfg.dropout,
            cfg.activation,
        )

    def reset_parameters(self) -> None:
        for w in [*self.weights, self.head_weight]:
            fan_in, fan_out = w.shape[1], w.shape[2]
            nn.init.normal_(
                w, 0.0, math.sqrt(2.0 / (fan_in + fan_out))
            )  # xavier_normal_, per student

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training and not torch.is_grad_enabled():
            return self._inference_forward(x)
        h = x
        for weight, bias, norm in zip(self.weights, self.biases, self.norms):
            h = torch.matmul(h, weight) + bias  # (K, B, H); a (1, B, D) input broadcasts over K
            h = self.dropout(self.activation(norm(h)))
        logits = torch.baddbmm(self.head_bias, h, self.head_weight).squeeze(-1)  # (K, B)
        return logits, h

    def _inference_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """forward() in eval mode without autograd, with each batch norm folded into its layer:
        one baddbmm and an in-place activation per layer instead of five passes over (K, B, H)
        (the elementwise passes cost as much as the matmuls on CPU)."""
        h = x.expand(self.num_students, -1, -1)  # a shared (1, B, D) input, once per student
        for weight, bias, norm in zip(self.weights, self.biases, self.norms):
            if isinstance(norm, StudentBatchNorm):
                scale, shift = norm.inference_affine()  # (K, 1, H)
                weight, bias = weight * scale, bias * scale + shift
            h = torch.baddbmm(bias, h, weight)  # (K, B, H)
            h = torch.relu_(h) if self.inplace_relu else self.activation(h)
        logits = torch.baddbmm(self.head_bias, h, self.head_weight).squeeze(-1)  # (K, B)
        return logits, h
