"""Student towers: K networks of one architecture computed as one batched computation.

Activations are laid out (K, B, H) so each layer is one batched matmul over the students
rather than a Python loop. Other architectures live in recsys_kdef.models.zoo. Contract: every
parameter and buffer of a tower module has the students as its first dimension, so that one
student can be sliced out (recsys_kdef.serve.export).
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


def dropout_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Units to drop, True with probability p rounded to a multiple of 2^-16: 64 random bits
    per four units (full-range int64 draws seen as int16), 4x cheaper than one draw per unit
    on CPU. Under torch.compile, one int16 draw per unit (dynamo cannot trace random_)."""
    threshold = min(round(p * (1 << 16)), (1 << 16) - 1) - (1 << 15)  # int16 draws below it
    if torch.compiler.is_compiling():
        draws = torch.randint(-(1 << 15), 1 << 15, shape, dtype=torch.int16, device=device)
        return draws < threshold
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), None)
    return (words.view(torch.int16)[:n] < threshold).view(shape)


def _widen(t: torch.Tensor) -> torch.Tensor:
    """A half-precision result (of an autocast matmul) as float32; other tensors as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


class _NormReLUDropout(torch.autograd.Function):
    """Training-mode batch norm -> ReLU -> dropout over (K, B, H), with its closed-form backward.

    Autograd through the composition makes ~11 passes over (K, B, H) forward and ~15 backward,
    which cost more than the layer's matmuls on CPU; this makes ~8 (statistics included) and 6.
    The dropout scale 1 / keep is folded into the affine map (ReLU is positively homogeneous),
    and the backward reads the mask from the output: y > 0 exactly where the ReLU passed and
    dropout kept.
    The layer bias before the norm (`pre_bias`) cancels in the batch statistics, so its
    gradient is exactly zero (autograd through the composition gives ~1e-9 noise).

        xhat = (x - mean) * rstd;  y = relu(xhat * weight + bias) * mask / keep
    `centred` is x - mean, computed with the statistics (no autograd); x only routes the gradient.
    """

    @staticmethod
    def forward(ctx, x, centred, pre_bias, weight, bias, rstd, drop, keep: float):
        scale = weight * rstd / keep  # (K, 1, H)
        y = torch.addcmul(bias / keep, centred, scale)  # (K, B, H)
        # in place in eager mode; not under torch.compile, where torch 2.11 then gave wrong
        # input gradients (tests/test_compile.py)
        inplace = not torch.compiler.is_compiling()
        y = y.relu_() if inplace else y.relu()
        if drop is not None:  # drawn outside, so torch.compile can trace this function
            y = y.masked_fill_(drop, 0) if inplace else y.masked_fill(drop, 0)
        ctx.save_for_backward(centred, y, weight, rstd)
        ctx.keep = keep
        return y

    @staticmethod
    def backward(ctx, grad):
        centred, y, weight, rstd = ctx.saved_tensors
        n, keep = centred.shape[1], ctx.keep
        gz = torch.ops.aten.threshold_backward(grad, y, 0)  # keep * dL/d(pre-ReLU)  (K, B, H)
        s1 = gz.sum(dim=1, keepdim=True)  # (K, 1, H)
        s2 = (gz * centred).sum(dim=1, keepdim=True).mul_(rstd)  # sum over B of gz * xhat
        a = weight * rstd / keep
        grad_x = torch.addcmul(-a * s1 / n, centred, -a * s2 * rstd / n).addcmul_(gz, a)
        return grad_x, None, torch.zeros_like(weight), s2 / keep, s1 / keep, None, None, None


class StudentBatchNorm(nn.Module):
    """Batch norm with separate statistics and affine parameters per student: (K, B, H) -> (K, B, H).

    Equal to K independent nn.BatchNorm1d(H) (same momentum, eps, biased batch variance for
    normalising and unbiased for the running estimate), without moving (K, B, H) to (B, K * H).
    With `debias`, the t-th batch moves the running statistics by max(momentum, 1 / t) (a
    cumulative mean until 1 / t < momentum): BatchNorm1d's start from mean 0 / variance 1 would
    otherwise dominate eval for ~1 / momentum * log(1 / var) steps when the activations' variance
    is small (on ML-100K, 14 steps an epoch: validation logloss at the base rate for 4 epochs).
    """

    def __init__(
        self,
        num_students: int,
        features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        debias: bool = True,
    ) -> None:
        super().__init__()
        self.eps, self.momentum, self.debias = eps, momentum, debias
        self.weight = nn.Parameter(torch.ones(num_students, 1, features))
        self.bias = nn.Parameter(torch.zeros(num_students, 1, features))
        self.register_buffer("running_mean", torch.zeros(num_students, 1, features))
        self.register_buffer("running_var", torch.ones(num_students, 1, features))
        # per student (K, 1, 1), so a student's slice of the state is its own (export, groups)
        self.register_buffer(
            "num_batches_tracked", torch.zeros(num_students, 1, 1, dtype=torch.long)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            var, mean = torch.var_mean(x, dim=1, correction=0, keepdim=True)  # (K, 1, H)
            self._track(mean, var, x.shape[1])
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias

    def relu_dropout(self, x: torch.Tensor, pre_bias: torch.Tensor, dropout: float) -> torch.Tensor:
        """Training mode: dropout(relu(forward(x + pre_bias))) in one fused pass each way
        (_NormReLUDropout); x (K, B, H) is a layer's output before its bias (K, 1, H)."""
        n = x.shape[1]
        with torch.no_grad():  # two passes: var_mean over dim 1 is 2-6x slower on CPU
            mean = x.mean(dim=1, keepdim=True)  # (K, 1, H)
            centred = x - mean
            var = torch.linalg.vector_norm(centred, dim=1, keepdim=True).square_().div_(n)
            self._track(mean + pre_bias, var, n)
            rstd = torch.rsqrt(var + self.eps)
        drop = dropout_mask(x.shape, dropout, x.device) if dropout > 0 else None
        return _NormReLUDropout.apply(
            x, centred, pre_bias, self.weight, self.bias, rstd, drop, 1 - dropout
        )

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        """Move the running statistics towards the batch's (unbiased variance, as BatchNorm1d)."""
        self.num_batches_tracked.add_(1)
        weight = self.momentum
        if self.debias:  # a tensor, so no host sync and one graph under torch.compile
            weight = self.num_batches_tracked.reciprocal().clamp_(min=self.momentum)
            weight = weight.to(self.running_mean.dtype)
        self.running_mean.lerp_(mean, weight)
        self.running_var.lerp_(var * (n / max(n - 1, 1)), weight)

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
        batch_norm_debias: bool = True,
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
            StudentBatchNorm(num_students, d, debias=batch_norm_debias)
            if batch_norm
            else nn.Identity()
            for d in hidden_units
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
            cfg.batch_norm_debias,
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
        fused = self.training and self.inplace_relu
        h = x
        for weight, bias, norm in zip(self.weights, self.biases, self.norms):
            # (K, B, H); a (1, B, D) input broadcasts over K. Under a bf16 autocast (train.autocast)
            # the matmul runs in bf16 and the rest in float32
            h = _widen(torch.matmul(h, weight))
            if fused and isinstance(norm, StudentBatchNorm):
                h = norm.relu_dropout(h, bias, self.dropout.p)
            else:
                h = self.dropout(self.activation(norm(h + bias)))
        logits = _widen(torch.baddbmm(self.head_bias, h, self.head_weight)).squeeze(-1)  # (K, B)
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
