"""The unit the model consumes: dense features, a KeyedJaggedTensor of ids, labels, group keys."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable


@dataclass
class Batch(Pipelineable):
    """One batch of B rows.

    dense:   (B, num_dense) float32
    sparse:  KeyedJaggedTensor, one key per sparse field, each row a bag of ids
    labels:  (B,) float32 in {0, 1}
    groups:  (B,) int64 group key (user id) for gAUC, or None
    padding: True for the filler batches a rank runs so that every rank makes the same
             number of (collective) forward passes; their rows are not real data.
    """

    dense: torch.Tensor
    sparse: KeyedJaggedTensor
    labels: torch.Tensor
    groups: torch.Tensor | None = None
    padding: bool = False

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return Batch(
            dense=self.dense.to(device, non_blocking=non_blocking),
            sparse=self.sparse.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
            groups=None
            if self.groups is None
            else self.groups.to(device, non_blocking=non_blocking),
            padding=self.padding,
        )

    def record_stream(self, stream: torch.Stream) -> None:
        self.dense.record_stream(stream)
        self.sparse.record_stream(stream)
        self.labels.record_stream(stream)
        if self.groups is not None:
            self.groups.record_stream(stream)

    def pin_memory(self) -> Batch:
        return Batch(
            dense=self.dense.pin_memory(),
            sparse=self.sparse.pin_memory(),
            labels=self.labels.pin_memory(),
            groups=None if self.groups is None else self.groups.pin_memory(),
            padding=self.padding,
        )
