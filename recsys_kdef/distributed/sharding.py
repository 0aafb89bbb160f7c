"""Sharding: the planner's plan (made on rank 0 for all, or read from a plan file), the tables
that must stay dense, and DistributedModelParallel around the model."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.model_parallel import DefaultDataParallelWrapper
from torchrec.distributed.types import ShardingEnv, ShardingPlan

from recsys_kdef.config import ConfigError, PlannerConfig, TrainConfig
from recsys_kdef.data.stats import FieldStats
from recsys_kdef.distributed.collectives import broadcast_object
from recsys_kdef.distributed.optimizers import SPARSE_OPTIMIZERS, attach_sparse_optimizer
from recsys_kdef.distributed.process import DistContext
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


def shard_model(
    module: nn.Module,
    ctx: DistContext,
    planner_cfg: PlannerConfig,
    train_cfg: TrainConfig,
    batch_size: int,
    field_stats: dict[str, FieldStats] | None = None,
) -> tuple[DistributedModelParallel, ShardingPlan]:
    """Plan (on rank 0, for all), shard the embedding collection and wrap the rest in DDP.

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
