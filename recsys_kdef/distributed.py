"""Everything that knows about processes: process group and device, the sharding planner,
DistributedModelParallel, the fused sparse + dense optimizers, and the collectives that
metrics need. Model and objective code never import torch.distributed; this module does.

Backends: nccl when CUDA is available, gloo otherwise. One process (a plain `python
recsys_kdef/train.py`) still gets a process group (of size 1), so the code path is the same
as under torchrun / torchx.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.optim import _apply_optimizer_in_backward as apply_optimizer_in_backward
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.model_parallel import DefaultDataParallelWrapper
from torchrec.distributed.types import ShardingEnv, ShardingPlan
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from recsys_kdef.config import ConfigError, PlannerConfig, TrainConfig
from recsys_kdef.data.stats import FieldStats
from recsys_kdef.plan.device import sized_for_device
from recsys_kdef.plan.planning import (
    PlanTarget,
    build_planner,
    collections,
    model_tables,
    plan_module,
    sharders,
)
from recsys_kdef.plan.summary import PlanSummary
from recsys_kdef.plan.text import format_summary

logger = logging.getLogger("recsys_kdef")

SPARSE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "rowwise_adagrad": RowWiseAdagrad,
    "adagrad": torch.optim.Adagrad,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}


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


# Warnings torch and torchrec raise about their own internals (ShardedTensor's deprecation,
# DDP arguments torchrec passes, the planner's storage heuristics, torchrec 1.6's
# ShardingEnv calling torch's deprecated `_get_pg_default_device`): nothing a user can act on.
LIBRARY_WARNINGS = (
    "Please use DTensor instead",
    "HeuristicalStorageReservation",
    "`broadcast_buffers` is deprecated",
    "Using a non-tuple sequence for multidimensional indexing",
    "`_get_pg_default_device` will be deprecated",
    # torch 2.13, on every backward through a data_parallel table (fbgemm's dense kernel):
    # the updates are right (tests/test_distributed.py::test_adam_on_cpu_equals_torch_adam_...)
    "fbgemm::dense_embedding_codegen_lookup_function: an autograd kernel was not registered",
)


# Loggers that print such notes at WARNING on every start.
LIBRARY_LOGGERS = ("torchrec.distributed.planner.storage_reservations", "torch.fx._symbolic_trace")


# What the planner logs on the root logger for every data_parallel table (which has no spec).
ROOT_LOG_NOISE = ("Sharding spec not found for",)


def _not_noise(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(ROOT_LOG_NOISE)


def quiet_library_warnings() -> None:
    for message in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=f".*{re.escape(message)}")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    root = logging.getLogger()
    if _not_noise not in root.filters:
        root.addFilter(_not_noise)


def destroy_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


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


def shard_model(
    module: nn.Module,
    ctx: DistContext,
    planner_cfg: PlannerConfig,
    train_cfg: TrainConfig,
    batch_size: int,
    field_stats: dict[str, FieldStats] | None = None,
) -> tuple[DistributedModelParallel, ShardingPlan]:
    """Plan (on rank 0, for all), shard the embedding collection and wrap the rest in DDP
    (on more than one rank: DenseDataParallel).

        With `planner.plan_file` the saved plan is applied instead, after checking it fits this
        world and model. Rank 0 logs the plan summary the plan tool prints. `field_stats` (from
        the training data) give the planner its pooling factors. Tables must still be on `meta`;
        DMP materialises each rank's shards.
    """
    planner_cfg = dense_tables_if_needed(planner_cfg, train_cfg, ctx.device)
    planner_cfg = sized_for_device(planner_cfg, ctx.device, ctx.world_size)
    attach_sparse_optimizer(module, train_cfg, ctx.device)
    if planner_cfg.plan_file:
        summary = PlanSummary.load(planner_cfg.plan_file)
        summary.check_fits(
            planner_cfg.plan_file,
            ctx.world_size,
            ctx.device.type,
            {k: (t.num_embeddings, t.embedding_dim) for k, t in model_tables(module).items()},
        )
        plan = summary.to_sharding_plan()
    else:
        summary, plan = _plan_on_rank_0(module, ctx, planner_cfg, batch_size, field_stats or {})
    if ctx.is_main:
        logger.info("sharding plan\n%s", format_summary(summary))
    _check_dense_tables(planner_cfg, summary)
    dmp = DistributedModelParallel(
        module=module,
        device=ctx.device,
        plan=plan,
        sharders=sharders(),
        data_parallel_wrapper=DenseDataParallel(),
    )
    return dmp, plan


class DenseDataParallel(DefaultDataParallelWrapper):
    """TorchRec's DDP wrapper of the dense part, left out on a single rank: there DDP's
    all-reduce has nothing to average, yet it copies every gradient into its bucket, all-reduces
    the bucket and reads a per-parameter flag on the host: ~60 ops and 2x the dense gradients'
    bytes a step."""

    def wrap(self, dmp: DistributedModelParallel, env: ShardingEnv, device: torch.device) -> None:
        if env.world_size > 1:
            super().wrap(dmp, env, device)
        else:
            dmp._dmp_wrapped_module.to(device)  # what DDP's wrap does besides wrapping


def dense_table_reasons(train_cfg: TrainConfig, device: torch.device) -> list[str]:
    """Why the embedding tables must be dense (data_parallel) parameters, if they must."""
    reasons = []
    if train_cfg.sparse_optimizer == "adam" and device.type == "cpu":
        reasons.append(
            "train.sparse_optimizer = adam on CPU (fbgemm's fused CPU kernels lack Adam)"
        )
    if train_cfg.embedding_l2 > 0 and train_cfg.embedding_l2_mode == "whole_table":
        reasons.append("train.embedding_l2_mode = whole_table (the penalty reads every row)")
    return reasons


def dense_tables_if_needed(
    planner_cfg: PlannerConfig, train_cfg: TrainConfig, device: torch.device
) -> PlannerConfig:
    """The planner config, restricted to data_parallel tables when the training options need
    dense tables: replicated on every rank, gradients all-reduced, stepped by the torch
    optimizer (build_optimizer's sparse_dp group). Said in the log, never silent."""
    reasons = dense_table_reasons(train_cfg, device)
    if not reasons:
        return planner_cfg
    if planner_cfg.sharding_types not in (None, ["data_parallel"]):
        raise ConfigError(
            f"{' and '.join(reasons)} need data_parallel tables, but planner.sharding_types = "
            f"{planner_cfg.sharding_types}; set it to [data_parallel] or null"
        )
    if not dist.is_initialized() or dist.get_rank() == 0:
        logger.info(
            "embedding tables kept data_parallel, stepped by torch.optim.%s: %s",
            SPARSE_OPTIMIZERS[train_cfg.sparse_optimizer].__name__,
            "; ".join(reasons),
        )
    return replace(planner_cfg, sharding_types=["data_parallel"])


def _check_dense_tables(planner_cfg: PlannerConfig, summary: PlanSummary) -> None:
    """A plan file or constraints YAML must not shard a table that has to stay dense."""
    if planner_cfg.sharding_types != ["data_parallel"]:
        return
    sharded = [t.name for t in summary.tables if t.sharding_type != "data_parallel"]
    if sharded:
        raise ConfigError(
            f"tables {sharded} are not data_parallel in the plan, but the training options need "
            "dense tables (see the log); remove them from planner.constraints / plan_file"
        )


def _plan_on_rank_0(
    module: nn.Module,
    ctx: DistContext,
    cfg: PlannerConfig,
    batch_size: int,
    field_stats: dict[str, FieldStats],
) -> tuple[PlanSummary, ShardingPlan]:
    """Rank 0 plans, every rank gets its plan (TorchRec's collective_plan does the same); a
    planning error (infeasible, bad constraints) is raised on every rank, not only rank 0."""
    result: tuple | str | None = None
    if ctx.is_main:
        planner = build_planner(
            cfg,
            PlanTarget(ctx.world_size, ctx.local_world_size, ctx.device.type),
            batch_size=batch_size,
            tables=[t for ebc in collections(module) for t in ebc.embedding_bag_configs()],
            pooling_factors={f: s.pooling_factor for f, s in field_stats.items()},
        )
        try:
            result = plan_module(planner, module, {f: asdict(s) for f, s in field_stats.items()})
        except ConfigError as e:
            result = str(e)
    result = broadcast_object(result)
    if isinstance(result, str):
        raise ConfigError(result)
    return result


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


# -- collectives used by evaluation ---------------------------------------------------------


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
