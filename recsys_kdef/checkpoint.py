"""Checkpoints: the full (unsharded) weights of a run, with the config and schema they need.

A sharded model's state is gathered shard by shard to rank 0 and written there; loading
copies full tensors into a (possibly differently) sharded model, each rank taking its own
shards. Checkpoints feed ECKD's pretrained teachers and `recsys_kdef.export`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor

from recsys_kdef.io import atomic_path, load_versioned

FORMAT = 1


def gather_full_state_dict(module: nn.Module) -> dict[str, torch.Tensor] | None:
    """The module's full state on rank 0 (None on other ranks); every rank must call it."""
    is_main = not dist.is_initialized() or dist.get_rank() == 0
    full: dict[str, torch.Tensor] = {}
    for name, value in module.state_dict().items():
        if isinstance(value, ShardedTensor):
            out = torch.empty(value.size(), dtype=value.dtype) if is_main else None
            value.gather(dst=0, out=out)
            if is_main:
                full[name] = out
        elif is_main:
            full[name] = value.detach().cpu().clone()
    return full if is_main else None


def save_checkpoint(path: str | Path, module: nn.Module, **meta: Any) -> None:
    """Gather `module` and write {"format", "state_dict", **meta} to `path` on rank 0, atomically."""
    state = gather_full_state_dict(module)
    if state is None:
        return
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "state_dict": state, **meta}, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by save_checkpoint (tensors on CPU); `path` may be its run directory."""
    return load_versioned(
        path,
        "checkpoint.pt",
        FORMAT,
        "checkpoint",
        "a training run writes <train.output_dir>/checkpoint.pt",
    )


def sub_state_dict(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix` (e.g. "model."), with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


@torch.no_grad()
def load_full_state_dict(
    module: nn.Module, full: dict[str, torch.Tensor], prefix: str = ""
) -> None:
    """Copy full tensors into the part of `module`'s (possibly sharded) state under `prefix`.

    `full` is keyed without the prefix. Each rank writes its own shards. A missing or extra
    key, or a shape that differs, is an error naming it.
    """
    target_state = {
        k[len(prefix) :]: v for k, v in module.state_dict().items() if k.startswith(prefix)
    }
    missing = sorted(set(target_state) - set(full))
    unexpected = sorted(set(full) - set(target_state))
    if missing or unexpected:
        raise KeyError(
            f"state dict mismatch under '{prefix}': missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, target in target_state.items():
        source = full[name]
        if tuple(source.shape) != tuple(target.size()):
            raise ValueError(
                f"{prefix}{name}: saved shape {tuple(source.shape)}, model has {tuple(target.size())}"
            )
        if isinstance(target, ShardedTensor):
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
