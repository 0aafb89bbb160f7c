"""The optimizers: the sparse one fused into the embedding backward, Adam on the dense
parameters, combined so that one learning-rate schedule drives all."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.optim import _apply_optimizer_in_backward as apply_optimizer_in_backward
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.types import ShardingPlan
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from recsys_kdef.config import TrainConfig
from recsys_kdef.plan.planning import collections

SPARSE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "rowwise_adagrad": RowWiseAdagrad,
    "adagrad": torch.optim.Adagrad,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}


def sparse_optimizer_args(cfg: TrainConfig, device: torch.device) -> tuple[type, dict]:
    """(optimizer class, its kwargs) for the embedding tables.

    No weight decay here: fbgemm-gpu-cpu 1.8's CPU kernels ignore weight_decay (every
    optimizer and mode), so L2 on embeddings is a loss term instead (EnsembleTrain).
    """
    kwargs: dict[str, Any] = {"lr": cfg.sparse_lr}
    if cfg.sparse_optimizer in ("rowwise_adagrad", "adagrad"):
        kwargs["eps"] = 1e-8
    return SPARSE_OPTIMIZERS[cfg.sparse_optimizer], kwargs


def attach_sparse_optimizer(module: nn.Module, cfg: TrainConfig, device: torch.device) -> None:
    """Fuse the sparse optimizer into the backward of every trainable embedding table.

    Before planning: the planner sizes each table's optimizer state from the class attached
    here. Frozen collections (e.g. pretrained teachers) get none.
    """
    opt_cls, opt_kwargs = sparse_optimizer_args(cfg, device)
    trainable = [p for ebc in collections(module) for p in ebc.parameters() if p.requires_grad]
    if trainable:
        apply_optimizer_in_backward(opt_cls, trainable, opt_kwargs)


def build_optimizer(
    dmp: DistributedModelParallel, plan: ShardingPlan, cfg: TrainConfig
) -> CombinedOptimizer:
    """Adam on the dense parameters + the sparse optimizer on every embedding table, stepped together.

    Tables sharded with fused kernels update in backward (dmp.fused_optimizer); tables the
    planner made data_parallel lose their in-backward optimizer and get the same sparse
    optimizer class here, on their (all-reduced) dense gradients. Stepping the combined
    optimizer each iteration also pushes learning-rate changes into the fused kernels
    (fbgemm reads param_groups[0]["lr"] in step / zero_grad), so one schedule drives all.
    """
    tables = {table for module_plan in plan.plan.values() for table in module_plan}  # type: ignore[union-attr]
    dense, dp_tables = {}, {}
    for name, param in in_backward_optimizer_filter(dmp.named_parameters()):
        if not param.requires_grad:  # frozen (e.g. pretrained teachers)
            continue
        is_table = (
            name.endswith(".weight")
            and name.rsplit(".", 2)[-2] in tables
            and ".embedding_bags." in name
        )
        (dp_tables if is_table else dense)[name] = param
    optimizers = [
        (
            "dense",
            # fused: one multi-tensor kernel for all dense parameters, not ~12 ops per tensor
            KeyedOptimizerWrapper(
                dense, lambda params: torch.optim.Adam(params, lr=cfg.dense_lr, fused=True)
            ),
        ),
        ("sparse", dmp.fused_optimizer),
    ]
    if dp_tables:
        opt_cls, opt_kwargs = sparse_optimizer_args(cfg, next(iter(dp_tables.values())).device)
        optimizers.append(
            (
                "sparse_dp",
                KeyedOptimizerWrapper(dp_tables, lambda params: opt_cls(params, **opt_kwargs)),
            )
        )
    return CombinedOptimizer(optimizers)


def learning_rates(optimizer: CombinedOptimizer) -> dict[str, float]:
    """{dense, sparse[, sparse_dp]: current learning rate} for logs."""
    return {
        key: opt.param_groups[0]["lr"] for key, opt in optimizer.optimizers if len(opt.param_groups)
    }


def sparse_learning_rate(optimizer: CombinedOptimizer) -> float:
    """The embedding tables' current learning rate (fused kernels', else data_parallel tables')."""
    rates = learning_rates(optimizer)
    return rates.get("sparse", rates.get("sparse_dp", 0.0))
