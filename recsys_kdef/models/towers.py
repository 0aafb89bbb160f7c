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


def _drops(units: list[int], batch: int, p: float, device: torch.device) -> torch.Tensor:
    """Units to drop, (1, sum(units), batch), True with probability p rounded to a multiple of
    2^-16; 64 random bits per four units (full-range int64 draws seen as int16), 4x cheaper
    than one draw per unit on CPU. Under torch.compile, one int16 draw per unit (dynamo cannot
    trace random_)."""
    threshold = min(round(p * (1 << 16)), (1 << 16) - 1) - (1 << 15)  # int16 draws below it
    total = sum(units)
    n = total * batch
    if torch.compiler.is_compiling():
        draws = torch.randint(-(1 << 15), 1 << 15, (n,), dtype=torch.int16, device=device)
    elif batch % 4 == 0:  # the same words, drawn in the mask's shape (no reshape after)
        words = torch.empty(1, total, batch // 4, dtype=torch.int64, device=device)
        return words.random_(-(1 << 63), None).view(torch.int16) < threshold
    else:
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
        draws = words.random_(-(1 << 63), None).view(torch.int16)
        draws = draws[:n] if n % 4 else draws
    return (draws < threshold).view(1, total, batch)


def _split(t: torch.Tensor, units: list[int]) -> list[torch.Tensor]:
    return list(t.split(units, dim=1)) if len(units) > 1 else [t]


def dropout_masks(
    units: list[int], batch: int, p: float, device: torch.device
) -> list[torch.Tensor]:
    """Units to drop in (1, n, batch) tensors for each n of `units`, from one draw for all
    (_drops)."""
    return _split(_drops(units, batch, p, device), units)


def dropout_bounds(
    units: list[int],
    batch: int,
    p: float,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """dropout_masks' draw as upper bounds of a clamp, in `dtype` (the activations'): 0 where a
    unit is dropped, +inf where it is kept, so that clamp(y, 0, bound) is ReLU and dropout in
    one pass."""
    drops = _drops(units, batch, p, device)
    zero, inf = _constant(0.0, device, dtype), _constant(math.inf, device, dtype)
    return _split(torch.where(drops, zero, inf), units)


_CONSTANTS: dict[tuple[float, torch.device, torch.dtype], torch.Tensor] = {}


def _constant(
    value: float, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A 0-dim `value` on `device`, made once (no op a step); made afresh under torch.compile,
    whose traced tensors must not be kept."""
    if torch.compiler.is_compiling():
        return torch.full((), value, device=device, dtype=dtype)
    t = _CONSTANTS.get((value, device, dtype))
    if t is None:
        t = _CONSTANTS[(value, device, dtype)] = torch.full((), value, device=device, dtype=dtype)
    return t


def dropout_mask(shape: tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """Units to drop in a tensor of `shape` (dropout_masks' draw)."""
    return dropout_masks([math.prod(shape)], 1, p, device)[0].view(shape)


def _widen(t: torch.Tensor) -> torch.Tensor:
    """A half-precision result (of an autocast matmul) as float32; other tensors as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The matmul dtype of an enclosing torch.autocast on `device`, or None."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


class _TrainingTowers(torch.autograd.Function):
    """Training forward of K MLP towers (Linear -> batch norm -> ReLU -> dropout per layer, then
    Linear to 1), with its closed-form backward, in a (K, H, B) layout.

    Laid out (K, H, B), a layer's K x H units are the channels of one (1, K x H, B) tensor, so
    torch's native batch norm normalises every student's units over the batch in one pass each
    way (statistics included) instead of the ~8 passes and ~25 ops of a composed norm; each
    layer is one bmm (W^T h) each way and its weight gradient one more. The dropout scale
    1 / keep is folded into the norm's affine map (ReLU is positively homogeneous), ReLU and
    dropout are one clamp (upper bound 0 where a unit is dropped, +inf where kept), and the
    backward reads the ReLU and dropout mask from the output (y > 0 exactly where both let the
    unit through). The layer bias before the norm cancels in the batch statistics: its gradient
    is exactly zero. Given `running` (each norm's flat running mean and variance, and a weight),
    the norm kernels move the running statistics themselves. Under torch.autocast (bf16) the
    matmuls run in its dtype (their operands cast here, the backward's too), and the
    activations between layers are stored in it as well, as autocast leaves a matmul's output:
    half the bytes of every elementwise pass. The norms' statistics and affine parameters stay
    float32 (the native kernel accumulates in float32); the logits are returned as float32,
    the last hidden layer as it is stored.

    Returns logits (K, B), the last hidden layer (K, B, H) (a view, which the head reads too)
    and each norm's batch mean and 1 / std (K x H,), which the caller folds into the running
    statistics where the kernels did not.
    """

    @staticmethod
    def forward(ctx, x, keep: float, eps: float, dropout, views, running, n_layers: int, *params):
        weights = params[:n_layers]  # then the biases before the norms (zero gradient)
        head_w, head_b = params[4 * n_layers :]
        mm = _autocast_dtype(x.device)
        cast = (lambda t: t.to(mm)) if mm is not None else (lambda t: t)
        # in place in eager mode; not under torch.compile, where torch 2.11 then gave wrong
        # input gradients (tests/test_compile.py)
        inplace = not torch.compiler.is_compiling()
        transposed, affine = views  # each W^T (K, H, D); the norms' (K x H,) weights, biases
        if keep < 1:
            affine = torch._foreach_div(affine, keep)
        norm_w, norm_b = affine[:n_layers], affine[n_layers:]
        lower, bounds = dropout if dropout is not None else (None, [None] * n_layers)
        # each norm's running mean and variance (K x H,) and the weight the kernel moves them by
        means, variances, momentum = running or ([None] * n_layers, [None] * n_layers, 0.0)
        num = weights[0].shape[0]
        with torch.autocast(x.device.type, enabled=False):
            h = cast(x).transpose(1, 2)  # (K_in, D, B)
            if h.shape[0] != num:  # a shared input: every student reads it
                h = h.expand(num, -1, -1)
            layer_in, matmul_w, pre_norm, outs, stats = [], [], [], [], []
            for w, w_t, g, b, bound, r_mean, r_var in zip(
                weights, transposed, norm_w, norm_b, bounds, means, variances
            ):
                if mm is not None:
                    w = cast(w)
                    w_t = w.transpose(1, 2)
                z = torch.bmm(w_t, h)  # (K, H, B)
                k, units, batch = z.shape
                z = z.view(1, k * units, batch)
                y, mean, invstd = torch.native_batch_norm(
                    z, g, b, r_mean, r_var, True, momentum, eps
                )
                if bound is None:
                    y = y.relu_() if inplace else y.relu()
                else:  # ReLU and dropout (drawn outside, so torch.compile can trace this)
                    y = y.clamp_(lower, bound) if inplace else y.clamp(lower, bound)
                layer_in.append(h)
                matmul_w.append(w)
                pre_norm.append(z)
                outs.append(y)
                stats += [mean, invstd]
                h = cast(y).view(k, units, batch)
            head = cast(head_w)
            hidden = h.transpose(1, 2)  # (K, B, H), what the towers return
            logits = torch.baddbmm(cast(head_b), hidden, head)  # (K, B, 1)
        ctx.mark_non_differentiable(*stats)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*layer_in, *matmul_w, *pre_norm, *outs, *norm_w, *stats, head, h)
        ctx.n_layers, ctx.keep, ctx.eps, ctx.mm = n_layers, keep, eps, mm
        ctx.shared = x.shape[0] != num
        return (_widen(logits.view(num, batch)), hidden, *stats)

    @staticmethod
    def backward(ctx, g_logits, g_hidden, *_):
        n = ctx.n_layers
        saved = ctx.saved_tensors
        layer_in, matmul_w = saved[:n], saved[n : 2 * n]
        pre_norm, outs, norm_w = saved[2 * n : 3 * n], saved[3 * n : 4 * n], saved[4 * n : 5 * n]
        stats, (head, h) = saved[5 * n : 7 * n], saved[7 * n :]
        mm, keep = ctx.mm, ctx.keep
        cast = (lambda t: t.to(mm)) if mm is not None else (lambda t: t)
        inplace = not torch.compiler.is_compiling()
        k, units, batch = h.shape
        with torch.autocast(h.device.type, enabled=False):
            if g_logits is None:
                g_logits = h.new_zeros(k, batch)
            g = cast(g_logits)
            g_col = g.view(k, batch, 1)
            grad_head_w = torch.bmm(h, g_col)  # (K, H, 1)
            grad_head_b = g_col.sum(dim=1, keepdim=True)  # (K, 1, 1)
            gy = torch.bmm(head, g.view(k, 1, batch)).to(outs[-1].dtype)  # (K, H, B)
            if g_hidden is not None:
                g_hidden = g_hidden.transpose(1, 2)
                gy = gy.add_(g_hidden) if inplace else gy + g_hidden
            grad_w, grad_g, grad_b = [], [], []
            for i in reversed(range(n)):
                y = outs[i]
                gz = torch.ops.aten.threshold_backward(gy.reshape(y.shape).to(y.dtype), y, 0)
                gx, gg, gb = torch.ops.aten.native_batch_norm_backward(
                    gz,
                    pre_norm[i],
                    norm_w[i],
                    None,
                    None,
                    *stats[2 * i : 2 * i + 2],
                    True,
                    ctx.eps,
                    [True, True, True],
                )
                gx = cast(gx.view(k, -1, batch))  # (K, H, B)
                grad_w.append(torch.bmm(layer_in[i], gx.transpose(1, 2)))  # (K, D, H)
                grad_g.append(gg.view(k, 1, -1))
                grad_b.append(gb.view(k, 1, -1))
                if i > 0 or ctx.needs_input_grad[0]:
                    gy = torch.bmm(matmul_w[i], gx)  # (K, D, B)
            if keep < 1:
                torch._foreach_div_([*grad_g, *grad_b], keep)
            grad_x = None
            if ctx.needs_input_grad[0]:
                grad_x = (gy.sum(dim=0, keepdim=True) if ctx.shared else gy).transpose(1, 2)
        grad_g, grad_b = grad_g[::-1], grad_b[::-1]
        zeros = _zeros_like(grad_g)  # the biases before the norms
        return (
            grad_x,
            None,
            None,
            None,
            None,
            None,
            None,
            *grad_w[::-1],
            *zeros,
            *grad_g,
            *grad_b,
            grad_head_w,
            grad_head_b,
        )


def _zeros_like(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Zeros shaped like each of `tensors`: one allocation when their shapes are equal."""
    first = tensors[0]
    if all(t.shape == first.shape for t in tensors):
        return torch.zeros(
            (len(tensors), *first.shape), dtype=first.dtype, device=first.device
        ).unbind(0)
    return tuple(torch.zeros_like(t) for t in tensors)


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

    @staticmethod
    @torch.no_grad()
    def track_all(
        norms: list[StudentBatchNorm],
        means: list[torch.Tensor],
        invstds: list[torch.Tensor],
        pre_biases: list[torch.Tensor],
        n: int,
    ) -> None:
        """_track for several norms at once, from their batches' means of x and 1 / sqrt(var +
        eps) (native batch norm's statistics, (K x H,) each) where the layer's input is x +
        pre_bias: a dozen multi-tensor ops for all layers rather than ~8 ops per layer."""
        first = norms[0]
        steps = [m.num_batches_tracked for m in norms]
        torch._foreach_add_(steps, 1)
        shapes = [m.running_mean.shape for m in norms]
        means = torch._foreach_add([m.view(s) for m, s in zip(means, shapes)], pre_biases)
        var = torch._foreach_pow([i.view(s) for i, s in zip(invstds, shapes)], -2)
        torch._foreach_sub_(var, first.eps)
        torch._foreach_mul_(var, n / max(n - 1, 1))  # unbiased, as BatchNorm1d's estimate
        weight = first.momentum
        if first.debias:
            weight = torch._foreach_reciprocal(steps)
            torch._foreach_clamp_min_(weight, first.momentum)
            if weight[0].dtype != first.running_mean.dtype:
                weight = [w.to(first.running_mean.dtype) for w in weight]
        running = [m.running_mean for m in norms] + [m.running_var for m in norms]
        torch._foreach_lerp_(
            running, means + var, weight if isinstance(weight, float) else weight * 2
        )

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
        self.batch_norm = batch_norm
        self.dropout = nn.Dropout(dropout)
        self.output_dim = hidden_units[-1]
        self._views = None  # _training_views' cache: (its key, the views)
        self._tracked = None  # _running_weight's: (the counters' key, their common value)
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
        if self.training and self.inplace_relu and self.batch_norm:
            return self._training_forward(x)
        h = x
        for weight, bias, norm in zip(self.weights, self.biases, self.norms):
            # (K, B, H); a (1, B, D) input broadcasts over K. Under a bf16 autocast (train.autocast)
            # the matmul runs in bf16 and the rest in float32
            h = _widen(torch.matmul(h, weight))
            h = self.dropout(self.activation(norm(h + bias)))
        logits = _widen(torch.baddbmm(self.head_bias, h, self.head_weight)).squeeze(-1)  # (K, B)
        return logits, h

    def _training_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """forward() in training mode with ReLU and batch norm: _TrainingTowers, then the
        running statistics of every norm: moved by the norm kernels themselves where the host
        knows this step's weight (_running_weight), else by StudentBatchNorm.track_all."""
        p, n, batch = self.dropout.p, len(self.weights), x.shape[1]
        dropout = None
        if p > 0:  # one draw for every layer, outside the Function (torch.compile traces it)
            units = [self.num_students * w.shape[2] for w in self.weights]
            act = _autocast_dtype(x.device) or x.dtype  # the activations' dtype
            bounds = dropout_bounds(units, batch, p, x.device, act)
            dropout = (_constant(0.0, x.device, act), bounds)
        norms = list(self.norms)
        transposed, affine, means, variances = self._training_views()
        weight = self._running_weight(batch)
        running = None if weight is None else (means, variances, weight)
        logits, hidden, *stats = _TrainingTowers.apply(
            x, 1 - p, norms[0].eps, dropout, (transposed, affine), running, n,
            *list(self.weights), *list(self.biases), *[m.weight for m in norms],
            *[m.bias for m in norms], self.head_weight, self.head_bias,
        )  # fmt: skip
        if weight is None:
            StudentBatchNorm.track_all(norms, stats[::2], stats[1::2], list(self.biases), batch)
        else:  # the kernels moved the means of x; those of x + the bias before the norm:
            with torch.no_grad():
                counters = [m.num_batches_tracked for m in norms]
                torch._foreach_add_(counters, 1)
                torch._foreach_add_(
                    [m.running_mean for m in norms], list(self.biases), alpha=weight
                )
            self._tracked = (self._counters_key(), self._tracked[1] + 1)
        return logits, hidden  # (K, B), (K, B, H)

    def _counters_key(self) -> list[tuple[int, int, int]]:
        """What tells whether the norms' step counters changed outside _training_forward."""
        counters = [m.num_batches_tracked for m in self.norms]
        return [(id(c), c.data_ptr(), c._version) for c in counters]

    def _running_weight(self, batch: int) -> float | None:
        """The weight by which this step moves every norm's running statistics, max(momentum,
        1 / t) for the t-th batch (momentum without debias), where the host knows t: the
        norms' counters, read once (a host sync) and then followed on the host while only
        this module changes them. None under torch.compile, for a batch of one, and where
        the students' counters differ (track_all then uses each student's)."""
        if torch.compiler.is_compiling() or batch < 2:
            return None
        key = self._counters_key()
        if self._tracked is None or self._tracked[0] != key:
            counts = {v for m in self.norms for v in m.num_batches_tracked.flatten().tolist()}
            self._tracked = (key, counts.pop() if len(counts) == 1 else None)
        steps = self._tracked[1]
        if steps is None:
            return None
        first = self.norms[0]
        return max(first.momentum, 1 / (steps + 1)) if first.debias else first.momentum

    def _training_views(self) -> tuple[list[torch.Tensor], ...]:
        """Views of the parameters and statistics in the layouts _TrainingTowers reads: each
        weight transposed (K, H, D); flat (K x H,) each norm's weight then bias, its running
        means and its running variances. Kept between steps (views follow in-place updates)
        while the tensors and their storage stay, so a step makes none; made afresh under
        torch.compile."""
        norms = list(self.norms)
        # lists, not generators, unpacked: torch 2.11's dynamo cannot unpack those
        sources = [
            *[m.weight for m in norms],
            *[m.bias for m in norms],
            *[m.running_mean for m in norms],
            *[m.running_var for m in norms],
        ]
        weights = list(self.weights)
        compiling = torch.compiler.is_compiling()
        key = None
        if not compiling:
            key = [(id(t), t.data_ptr(), t.shape) for t in [*weights, *sources]]
        if compiling or self._views is None or self._views[0] != key:
            n = len(norms)
            with torch.no_grad():
                flat = [t.view(-1) for t in sources]
                views = (
                    [w.transpose(1, 2) for w in weights],
                    flat[: 2 * n],
                    flat[2 * n : 3 * n],
                    flat[3 * n :],
                )
            if compiling:
                return views
            self._views = (key, views)
        return self._views[1]

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
