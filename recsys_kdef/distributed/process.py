"""This process's place in the job: the process group and device.

Backends: nccl when CUDA is available, gloo otherwise. One process (a plain `python
recsys_kdef/train.py`) still gets a process group (of size 1), so the code path is the same
as under torchrun / torchx.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True, slots=True)
class DistContext:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistContext:
    """Join the job's process group (env:// under torchrun/torchx), or make a 1-process one."""
    use_cuda = torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        if use_cuda:
            torch.cuda.set_device(local_rank)
        if "TORCHELASTIC_RESTART_COUNT" in os.environ:
            dist.init_process_group(
                backend=backend,
                store=_attempt_store(),
                rank=int(os.environ["RANK"]),
                world_size=int(os.environ["WORLD_SIZE"]),
            )
        else:
            dist.init_process_group(backend=backend)
    else:
        local_rank, local_world = 0, 1
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        local_world_size=local_world,
        device=device,
        backend=backend,
    )


def _attempt_store() -> dist.Store:
    """The elastic agent's store, with keys prefixed by the restart attempt.

    torch 2.13's torchrun reuses one store across restarts, and the gloo group of a restarted
    job then reads the previous attempt's addresses ("Gloo connectFullMesh failed ...
    Connection refused"); a prefix per attempt keeps them apart.
    """
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        int(os.environ["WORLD_SIZE"]),
        is_master=not agent_hosts and os.environ["RANK"] == "0",
    )
    return dist.PrefixStore(f"attempt_{os.environ['TORCHELASTIC_RESTART_COUNT']}", store)


def destroy_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
