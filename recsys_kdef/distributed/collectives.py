"""The collectives evaluation, metrics and the trainer need; each is a no-op in a
one-process job. Model and objective code never import torch.distributed."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's (N_r, ...) tensor along dim 0 (N_r may differ), in rank order."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes)])


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def exchange_rows(tensor: torch.Tensor, dest: torch.Tensor) -> torch.Tensor:
    """Send row i of `tensor` (N, ...) to rank dest[i]; returns the rows this rank received."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    world = dist.get_world_size()
    order = torch.argsort(dest, stable=True)
    send_counts = torch.bincount(dest, minlength=world)
    recv_counts = torch.empty_like(send_counts)
    dist.all_to_all_single(recv_counts, send_counts)
    received = torch.empty(
        (int(recv_counts.sum()), *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device
    )
    dist.all_to_all_single(
        received,
        tensor[order].contiguous(),
        output_split_sizes=recv_counts.tolist(),
        input_split_sizes=send_counts.tolist(),
    )
    return received


def norm_buffers(module: nn.Module) -> list[torch.Tensor]:
    """The running statistics of every (batch-)norm layer: buffers named `running_*` or
    `num_batches_tracked` (not the embedding kernels' buffers)."""
    return [
        b
        for name, b in module.named_buffers()
        if name.rsplit(".", 1)[-1].startswith("running_") or name.endswith("num_batches_tracked")
    ]


@torch.no_grad()
def average_norm_statistics(module: nn.Module) -> None:
    """Average the batch-norm running statistics over ranks (a collective).

    Each rank's statistics follow its own batches (the dense part's DDP does not broadcast
    buffers), so without this the ranks would evaluate, and a checkpoint (which stores one
    copy of a replicated tensor) would save, different models.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    stats = [b for b in norm_buffers(module) if b.is_floating_point()]
    if stats:
        flat = torch.cat([b.reshape(-1) for b in stats])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        offset = 0
        for b in stats:
            b.copy_(flat[offset : offset + b.numel()].view_as(b))
            offset += b.numel()
