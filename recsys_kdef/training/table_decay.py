"""Decoupled whole-table decay of the embedding tables, under any sharding.

train.embedding_l2_mode = decoupled: after each optimizer step every row of every trainable
table is scaled by (1 - sparse lr * embedding_l2), AdamW's decoupled weight decay applied to
whole tables rather than to the rows a batch reads. Fused kernels update rows inside the
backward and fbgemm's CPU kernels ignore weight_decay, so the decay is done here, in place on
the shards each rank holds; it is elementwise, so no communication is needed.
"""

from __future__ import annotations

import torch
from torch import nn

TABLE_MARK = ".embedding_bags."


def trainable_table_names(module: nn.Module) -> set[str]:
    """State-dict names of the trainable embedding tables (frozen teachers excluded)."""
    return {n for n, p in module.named_parameters() if TABLE_MARK in n and p.requires_grad}


@torch.no_grad()
def decay_tables(module: nn.Module, factor: float, names: set[str] | None = None) -> int:
    """Multiply every local shard of the trainable tables by `factor`; returns the number of
    elements scaled on this rank. `names` (from trainable_table_names) saves the lookup."""
    names = trainable_table_names(module) if names is None else names
    scaled = 0
    for name, value in module.state_dict().items():
        if name not in names:
            continue
        shards = (
            [s.tensor for s in value.local_shards()] if hasattr(value, "local_shards") else [value]
        )
        for shard in shards:
            shard.mul_(factor)
            scaled += shard.numel()
    return scaled
