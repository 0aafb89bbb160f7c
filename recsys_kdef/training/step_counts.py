"""Device-independent counts of one training step: aten ops dispatched, bytes the non-matmul
ops write, and embedding ids looked up. A CPU run tracks them where a GPU is not at hand:
on a GPU the ops are roughly the kernels launched (host time per step) and the bytes the
elementwise memory traffic (device time at large batches)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
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
    }
)


def op_name(func) -> str:
    """`aten.addmm.default` -> `addmm` (trailing `_` of in-place variants dropped)."""
    return func._schema.name.split("::")[-1].rstrip("_")


@dataclass
class OpCounts:
    """What an OpCounter saw: aten ops by name, and the bytes written by non-matmul ops."""

    ops: Counter = field(default_factory=Counter)
    bytes_written_nonmatmul: int = 0

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    @property
    def kernels(self) -> int:
        """Ops that launch work: every op but views and metadata (FREE_OPS)."""
        return sum(n for name, n in self.ops.items() if name not in FREE_OPS)


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched inside `with OpCounter() as c:` (backward and optimizer
    included: the autograd engine carries the mode into its threads) and the bytes of the
    tensors non-matmul, non-view ops return, as `c.counts`.

    Example::

        with OpCounter() as c:
            loss = model(x).sum(); loss.backward(); opt.step()
        c.counts.total, c.counts.bytes_written_nonmatmul
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts = OpCounts()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = op_name(func)
        self.counts.ops[name] += 1
        if name not in MATMUL_OPS and name not in FREE_OPS:
            self.counts.bytes_written_nonmatmul += sum(
                t.numel() * t.element_size()
                for t in tree_flatten(out)[0]
                if isinstance(t, torch.Tensor)
            )
        return out


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
