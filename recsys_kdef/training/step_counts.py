"""Device-independent counts of one training step: aten ops dispatched, bytes the non-matmul
ops write, matmul and attention FLOPs, and embedding ids looked up. A CPU run tracks them where a GPU is not at hand:
on a GPU the ops are roughly the kernels launched (host time per step) and the bytes the
elementwise memory traffic (device time at large batches)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from torchrec import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

# ops whose output is the result of a matrix product: their traffic is the matmul's, not an
# elementwise pass (the bytes count leaves them out)
MATMUL_OPS = frozenset(
    {"mm", "bmm", "addmm", "baddbmm", "matmul", "linear", "addbmm", "addmv", "mv", "dot"}
)
# bookkeeping that launches no kernel and moves no bytes (views, metadata)
FREE_OPS = frozenset(
    {
        "view",
        "_unsafe_view",
        "reshape",
        "alias",
        "as_strided",
        "detach",
        "t",
        "transpose",
        "permute",
        "expand",
        "squeeze",
        "unsqueeze",
        "slice",
        "select",
        "split",
        "split_with_sizes",
        "unbind",
        "chunk",
        "narrow",
        "lift_fresh",
        "_reshape_alias",
        "sym_size",
        "sym_stride",
        "sym_numel",
        "sym_storage_offset",
        "is_same_size",
        "empty",
        "empty_like",
        "empty_strided",
        # profiler annotations (torch.autograd.profiler.record_function, which TorchRec and
        # torch.optim open around their steps): dispatched, but no kernel and no bytes
        "_record_function_enter",
        "_record_function_enter_new",
        "_record_function_exit",
    }
)
# ops whose result the host must read (a value or a data-dependent size) before it can go on:
# on a GPU each waits for the device's queue to drain. `.item()`, `bool(t)`, `int(t)` and
# `float(t)` reach the dispatcher as _local_scalar_dense
HOST_SYNC_OPS = frozenset(
    {
        "_local_scalar_dense",
        "nonzero",
        "masked_select",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
        "equal",
    }
)


def op_name(func) -> str:
    """`aten.addmm.default` -> `addmm` (trailing `_` of in-place variants dropped)."""
    return func._schema.name.split("::")[-1].rstrip("_")


@dataclass
class OpCounts:
    """What an OpCounter saw: ops by name, the bytes written by non-matmul ops, host syncs."""

    ops: Counter = field(default_factory=Counter)
    bytes_written_nonmatmul: int = 0
    host_syncs: int = 0
    """HOST_SYNC_OPS (and copies to the CPU) on tensors of the counted device."""

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    @property
    def kernels(self) -> int:
        """Ops that launch work: every op but views, metadata and annotations (FREE_OPS)."""
        return sum(n for name, n in self.ops.items() if name not in FREE_OPS)


class OpCounter(TorchDispatchMode):
    """Counts every op dispatched inside `with OpCounter() as c:` (backward and optimizer
    included: the autograd engine carries the mode into its threads), the bytes of the
    tensors non-matmul, non-view ops return, and the host syncs, as `c.counts`.

    A host sync is a HOST_SYNC_OPS op, or a copy to the CPU, reading a tensor on `device`
    (where the step runs; on a GPU, reads of CPU-side tensors such as fbgemm's iteration
    counter do not wait for the device). On a CPU every read counts.

    Example::

        with OpCounter() as c:
            loss = model(x).sum(); loss.backward(); opt.step()
        c.counts.total, c.counts.bytes_written_nonmatmul
    """

    def __init__(self, device: torch.device | None = None) -> None:
        super().__init__()
        self.counts = OpCounts()
        self.device_type = (device or torch.device("cpu")).type

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = op_name(func)
        self.counts.ops[name] += 1
        if self._syncs(name, args, out):
            self.counts.host_syncs += 1
        if name not in MATMUL_OPS and name not in FREE_OPS:
            self.counts.bytes_written_nonmatmul += sum(
                t.numel() * t.element_size()
                for t in tree_flatten(out)[0]
                if isinstance(t, torch.Tensor)
            )
        return out

    def _syncs(self, name: str, args, out) -> bool:
        """Whether the host waits for this op's input (a read of a tensor on the device)."""
        read_back = name == "_to_copy" and isinstance(out, torch.Tensor) and out.is_cpu
        if name not in HOST_SYNC_OPS and not read_back:
            return False
        inputs = [t for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor)]
        if self.device_type == "cpu":  # every read, but not a CPU-to-CPU copy
            return not read_back
        return any(t.device.type == self.device_type for t in inputs)


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def flop_counter() -> FlopCounterMode:
    """`with flop_counter() as f:` counts the FLOPs of matmuls, convolutions and attention
    (FlopCounterMode's formulas) as `f.get_total_flops()`; backward included. PyTorch's CPU
    flash-attention kernel, which FlopCounterMode leaves out, is counted as its GPU kernels are:
    4 b h Lq Lk d forward, 10 b h Lq Lk d backward (the scores recomputed)."""
    aten = torch.ops.aten
    return FlopCounterMode(
        display=False,
        custom_mapping={
            aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
        },
    )


def ids_looked_up(module: torch.nn.Module, features: KeyedJaggedTensor) -> int:
    """Embedding ids one forward of `module` (unsharded) looks up: for every table of its
    EmbeddingBagCollections, the ids of each feature the table reads (a feature read by K
    tables counts K times: its ids are copied, permuted and checked K times)."""
    per_key = dict(zip(features.keys(), features.length_per_key()))
    return sum(
        per_key.get(feature, 0)
        for m in module.modules()
        if isinstance(m, EmbeddingBagCollection)
        for t in m.embedding_bag_configs()
        for feature in t.feature_names
    )
