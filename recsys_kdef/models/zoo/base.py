"""What every architecture of the zoo is built from: its inputs, the stacking of identical
students into one vmapped call, and FuxiCTR's MLP block.

An architecture is written for ONE student (readable, and its parameter count compares with
FuxiCTR's model of the same hyperparameters directly):

    forward(emb (B, F, D), dense (B, Dd)) -> logit (B,), hidden (B, H)

`StackedStudents` turns n copies into one group whose parameters lead with n and whose
forward is one `torch.func.vmap` over the copies: (n_in, B, F, D) -> (n, B), (n, B, H).
An architecture with `reads_sequence = True` also takes the behaviour sequences:
forward(emb, dense, seq (B, S, L, D), mask (B, S, L)) (StackedStudents: (n_in, B, S, L, D)).
One whose instance sets `has_aux_loss = True` returns a third value, its auxiliary loss ()
(DIEN's), which the group returns as (n,) after the logits and hidden vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from recsys_kdef.models.towers import ACTIVATIONS


@dataclass(frozen=True)
class StudentInputs:
    """What one student reads: F sparse fields of dimension D, and Dd numeric values."""

    num_sparse: int
    num_dense: int
    embedding_dim: int
    sequences: tuple[tuple[int, int], ...] = ()
    """Behaviour sequences as (sequence field, target field) positions among the F fields, in
    the order of the (B, S, L, D) sequences an arch that `reads_sequence` receives."""

    @property
    def num_fields(self) -> int:
        """Fields once numeric values are embedded too (FuxiCTR embeds each numeric feature)."""
        return self.num_sparse + self.num_dense

    @property
    def flat_dim(self) -> int:
        """Width of all fields' embeddings side by side: (F + Dd) * D."""
        return self.num_fields * self.embedding_dim


class FieldEmbeddings(nn.Module):
    """Sparse embeddings plus embedded numeric values: (B, F, D), (B, Dd) -> (B, F + Dd, D).

    Numeric value x_j becomes x_j * v_j (FuxiCTR's `nn.Linear(1, D, bias=False)` per numeric
    feature, Xavier-normal as FuxiCTR's reset gives it), so interaction layers treat it as one
    more field.
    """

    def __init__(self, inputs: StudentInputs) -> None:
        super().__init__()
        self.numeric = nn.Parameter(torch.empty(inputs.num_dense, inputs.embedding_dim))
        nn.init.normal_(self.numeric, 0.0, (2.0 / (1 + inputs.embedding_dim)) ** 0.5)

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        if self.numeric.shape[0] == 0:
            return emb
        return torch.cat([emb, dense.unsqueeze(-1) * self.numeric], dim=1)  # (B, F + Dd, D)


class MLPBlock(nn.Module):
    """FuxiCTR's MLP_Block: (Linear -> [BatchNorm] -> activation -> [Dropout]) per hidden layer,
    then an optional Linear to `output_dim`; Xavier-normal weights, zero biases. The
    activation "dice" is DIN's Dice, one per layer of that layer's width.

    Example::

        block = MLPBlock(64, [32, 16], output_dim=1)
        y = block(torch.randn(8, 64))  # (8, 1)
    """

    def __init__(
        self,
        input_dim: int,
        hidden_units: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        output_dim: int | None = None,
        output_bias: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        sizes = [input_dim, *hidden_units]
        for d_in, d_out in zip(sizes, hidden_units):
            layers.append(nn.Linear(d_in, d_out))
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(Dice(d_out) if activation.lower() == "dice" else Activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        if output_dim is not None:
            layers.append(nn.Linear(sizes[-1], output_dim, bias=output_bias))
        self.layers = nn.Sequential(*layers)
        self.output_dim = output_dim if output_dim is not None else sizes[-1]
        xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Activation(nn.Module):
    """An activation of recsys_kdef.models.towers.ACTIVATIONS by name, as a module."""

    def __init__(self, name: str) -> None:
        super().__init__()
        if name.lower() not in ACTIVATIONS:  # FuxiCTR writes ReLU
            raise ValueError(
                f"activation {name!r} is unknown; choose one of: {', '.join(ACTIVATIONS)}"
            )
        self.name = name.lower()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.name](x)


class Dice(nn.Module):
    """Dice (Zhou et al., KDD 2018, eq. 9), as FuxiCTR's: p = sigmoid(BN(x)) with BN unscaled
    (eps 1e-9, momentum 0.01), f(x) = p * x + alpha * (1 - p) * x; (N, H) -> (N, H)."""

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(input_dim, affine=False, eps=1e-9, momentum=0.01)
        self.alpha = nn.Parameter(torch.zeros(input_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.bn(x))
        return x * (self.alpha + (1 - self.alpha) * p)  # p x + alpha (1 - p) x, 3 passes not 5


def xavier_init(module: nn.Module) -> None:
    """FuxiCTR's initialisation of dense layers: Xavier-normal weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class StackedStudents(nn.Module):
    """n identical-architecture students as one group, computed by one vmapped call.

    `make()` builds one student (a fresh initialisation each call). Their parameters and
    buffers are stacked along a new first dimension n (the towers' contract: student j of the
    group is slice j of every tensor, which export relies on); forward runs the one-student
    module over all n with `torch.func.vmap` (batch-norm statistics update per student,
    dropout draws differ per student).

    Example::

        group = StackedStudents(lambda: DCNv2(DCNv2Params(), inputs), count=2)
        logits, hidden = group(emb, dense)  # emb (1 or 2, B, F, D) -> (2, B), (2, B, H)
    """

    def __init__(self, make: Callable[[], nn.Module], count: int) -> None:
        super().__init__()
        copies = [make() for _ in range(count)]
        params, buffers = stack_module_state(copies)
        self.num_students = count
        self.output_dim = copies[0].output_dim
        self.reads_sequence = getattr(copies[0], "reads_sequence", False)
        self.has_aux_loss = getattr(copies[0], "has_aux_loss", False)
        self.stacked = nn.ParameterDict({_key(k): nn.Parameter(v) for k, v in params.items()})
        for k, v in buffers.items():
            self.register_buffer(f"buf__{_key(k)}", v)
        self._param_names = list(params)
        self._buffer_names = list(buffers)
        # the architecture without weights: functional_call supplies them (not a submodule,
        # so it is neither in the state dict nor moved by .to())
        self._skeleton = [copies[0].to("meta")]

    def train(self, mode: bool = True) -> StackedStudents:
        super().train(mode)
        self._skeleton[0].train(mode)
        return self

    def forward(
        self,
        emb: torch.Tensor,
        dense: torch.Tensor,
        seq: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        params = {k: self.stacked[_key(k)] for k in self._param_names}
        buffers = {k: getattr(self, f"buf__{_key(k)}") for k in self._buffer_names}
        skeleton = self._skeleton[0]

        def one(p, b, e, x, *sequences):
            return functional_call(skeleton, (p, b), (e, x, *sequences))

        emb_dim = 0 if emb.shape[0] == self.num_students and self.num_students > 1 else None
        if emb_dim is None:
            emb = emb[0]  # a shared (1, B, F, D) input, the same for every student
            seq = None if seq is None else seq[0]
        extra, dims = ((seq, mask), (emb_dim, None)) if seq is not None else ((), ())
        if self.num_students == 1:  # no vmap for a group of one (it costs 5-50 % on CPU)
            p1 = {k: v[0] for k, v in params.items()}
            b1 = {k: v[0] for k, v in buffers.items()}  # views: statistics update in place
            return tuple(t.unsqueeze(0) for t in one(p1, b1, emb, dense, *extra))
        out = vmap(one, in_dims=(0, 0, emb_dim, None, *dims), randomness="different")(
            params, buffers, emb, dense, *extra
        )
        return out  # (n, B), (n, B, H) [, (n,) auxiliary losses]


def _key(name: str) -> str:
    """A dotted parameter name as a ParameterDict / buffer key."""
    if "__" in name:
        raise ValueError(f"parameter name {name!r} must not contain '__'")
    return name.replace(".", "__")
