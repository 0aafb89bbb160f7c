"""A run's parts built from its config: data readers, the model + objective sharded by the
planner (pretrained ECKD teachers loaded), the combined optimizer, checkpoint metadata."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.types import ShardingPlan
from torchrec.optim.keyed import CombinedOptimizer

from recsys_kdef.builders.model import build_train_module, model_prefix
from recsys_kdef.checkpoint.store import load_full_state_dict
from recsys_kdef.config import ExperimentConfig, to_dict
from recsys_kdef.data import Readers, Schema, build_readers
from recsys_kdef.data.stats import estimate_field_stats
from recsys_kdef.distributed.optimizers import build_optimizer
from recsys_kdef.distributed.process import DistContext
from recsys_kdef.distributed.sharding import shard_model


@dataclass
class Job:
    """Everything a run is built from: data readers, the sharded model and its optimizer."""

    schema: Schema
    readers: Readers
    module: DistributedModelParallel
    plan: ShardingPlan
    optimizer: CombinedOptimizer


def build_module(
    cfg: ExperimentConfig, schema: Schema, ctx: DistContext, load_teachers: bool = True
) -> tuple[DistributedModelParallel, ShardingPlan]:
    """The model + objective sharded by the planner (pretrained ECKD teachers loaded)."""
    torch.manual_seed(cfg.train.seed)  # same tower init on every rank
    train_module, teacher_weights = build_train_module(cfg, schema)  # tables on `meta`
    stats = estimate_field_stats(cfg.data.path, schema, cfg.planner.stats_row_groups)
    module, plan = shard_model(
        train_module, ctx, cfg.planner, cfg.train, cfg.data.batch_size, field_stats=stats
    )
    for j, weights in enumerate(teacher_weights if load_teachers else []):
        load_full_state_dict(module, weights, prefix=f"model.teachers.{j}.")  # each rank its shards
    return module, plan


def build_job(cfg: ExperimentConfig, ctx: DistContext) -> Job:
    """Readers, the model + objective sharded by the planner, and the combined optimizer."""
    schema = Schema.load(cfg.data.path)
    readers = build_readers(
        cfg.data, schema, rank=ctx.rank, world_size=ctx.world_size, seed=cfg.train.seed
    )
    module, plan = build_module(cfg, schema, ctx)
    optimizer = build_optimizer(module, plan, cfg.train)
    torch.manual_seed(cfg.train.seed + ctx.rank)  # different dropout masks per rank
    return Job(schema, readers, module, plan, optimizer)


def checkpoint_meta(cfg: ExperimentConfig, schema: Schema) -> dict:
    """What every checkpoint of this run records besides tensors: config, schema, model prefix."""
    return {"config": to_dict(cfg), "schema": schema.to_json(), "model_prefix": model_prefix(cfg)}
