"""Moving weights between sharded (DMP) and full (single-process) state dicts."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor


@torch.no_grad()
def load_full_state_dict(module: nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Copy full tensors into `module`'s (possibly sharded) state; each rank writes its own shards.

    Keys are those of the unsharded module (DMP reports the same names). A missing or
    extra key is an error naming it.
    """
    target_state = module.state_dict()
    missing = sorted(set(target_state) - set(full))
    unexpected = sorted(set(full) - set(target_state))
    if missing or unexpected:
        raise KeyError(f"state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, target in target_state.items():
        source = full[name]
        if isinstance(target, ShardedTensor):
            if tuple(source.shape) != tuple(target.size()):
                raise ValueError(
                    f"{name}: full tensor {tuple(source.shape)} vs sharded {tuple(target.size())}"
                )
            for shard in target.local_shards():
                region = tuple(
                    slice(o, o + s)
                    for o, s in zip(
                        shard.metadata.shard_offsets, shard.metadata.shard_sizes, strict=True
                    )
                )
                shard.tensor.copy_(source[region])
        else:
            target.copy_(source)
