"""The model zoo: one file per CTR architecture, each written for ONE student.

Contract of an architecture (a subclass of `StudentArch`, registered in ARCHS):

* `__init__(self, num_fields, embedding_dim, dense_dim, **hparams)`, with hyperparameter
  names as FuxiCTR's model_zoo spells them (`dnn_hidden_units`, `num_cross_layers`, ...);
  an unknown name is an error (see `StudentArch.from_params`), never silently ignored.
* `forward(inputs: StudentInputs) -> (logit (B,), hidden (B, H))`; `hidden` is the vector
  the output layer reads (what KDEF's DML/CETNet's fusion see), `output_dim == H`.
* `first_order = True` if the model has FuxiCTR's LR term (`inputs.first_order` is then the
  (B, F) per-field 1-dim weights, summed over a bag); otherwise it is None.

The ensemble groups students of one architecture and shape and computes each group at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class StudentInputs:
    """What one student reads: its pooled field embeddings and the dense features."""

    emb: torch.Tensor
    """(B, F, D) pooled embeddings, one row per sparse field."""
    dense: torch.Tensor
    """(B, Dd) dense features (Dd may be 0)."""
    first_order: torch.Tensor | None = None
    """(B, F) first-order (LR) weights when the architecture asks for them."""


class StudentArch(nn.Module):
    """Base class of a one-student architecture; see the module docstring for the contract."""

    first_order: bool = False
    output_dim: int

    @classmethod
    def from_params(
        cls, params: dict, num_fields: int, embedding_dim: int, dense_dim: int
    ) -> StudentArch:
        """Build from a config dict; unknown keys raise, naming the valid ones."""
        import inspect

        accepted = [
            p
            for p in inspect.signature(cls.__init__).parameters
            if p not in ("self", "num_fields", "embedding_dim", "dense_dim")
        ]
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown option(s) {unknown}; valid: {', '.join(accepted)}"
            )
        return cls(num_fields, embedding_dim, dense_dim, **params)


ARCHS: dict[str, type[StudentArch]] = {}
"""Architecture name (as in `model.students[].arch`) -> class."""
