"""Run a function on N real processes with a gloo process group, as TorchRec's CPU tests do.

    results = run_multiprocess(check_fn, world_size=2, path=str(tmp_path))

`check_fn(rank, world_size, **kwargs)` must be a module-level function (it is pickled into
spawned processes); it may assert, and what it returns comes back in rank order.
"""

from __future__ import annotations

import os
import socket
import traceback
from typing import Any

import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, fn, kwargs: dict, queue) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        OMP_NUM_THREADS="1",
    )
    import torch

    torch.set_num_threads(1)
    from recsys_kdef.distributed.process import destroy_distributed, init_distributed

    try:
        ctx = init_distributed()
        result = fn(ctx, **kwargs)
        queue.put((rank, "ok", result))
    except BaseException:
        queue.put((rank, "error", traceback.format_exc()))
    finally:
        destroy_distributed()


def run_multiprocess(fn, world_size: int = 2, timeout: float = 300, **kwargs: Any) -> list[Any]:
    """Spawn `world_size` ranks running fn(ctx, **kwargs); re-raise any rank's failure here."""
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = _free_port()
    procs = [
        ctx.Process(target=_worker, args=(r, world_size, port, fn, kwargs, queue))
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    errors = []
    for _ in procs:
        rank, status, payload = queue.get()
        if status == "ok":
            results[rank] = payload
        else:
            errors.append(f"rank {rank} failed:\n{payload}")
            break  # the other ranks may hang in a collective; stop them below
    for p in procs:
        p.join(timeout=5 if errors else timeout)
        if p.is_alive():
            p.kill()
    if errors:
        raise AssertionError("\n".join(errors))
    return [results[r] for r in range(world_size)]
