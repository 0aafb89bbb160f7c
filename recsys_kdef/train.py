"""Train an ensemble of CTR students: parse -> build -> train -> evaluate -> report.

python recsys_kdef/train.py --config configs/demo.yaml [--section.key value ...]
torchrun --nproc_per_node 2 recsys_kdef/train.py --config configs/demo.yaml
torchx run -s local_cwd dist.ddp -j 1x2 --script recsys_kdef/train.py -- --config configs/demo.yaml
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.types import ShardingPlan
from torchrec.optim.keyed import CombinedOptimizer

from recsys_kdef.checkpoint import CHECKPOINTS, CheckpointError, load_full_state_dict, resume_point
from recsys_kdef.config import ConfigError, ExperimentConfig, load_config, to_dict
from recsys_kdef.data import DataError, Readers, Schema, build_readers
from recsys_kdef.data.stats import estimate_field_stats
from recsys_kdef.distributed import (
    DistContext,
    build_optimizer,
    destroy_distributed,
    init_distributed,
    quiet_library_warnings,
    shard_model,
)
from recsys_kdef.divergence import TrainingDiverged, check_valid_auc, failed_report
from recsys_kdef.evaluate import best_student, evaluate
from recsys_kdef.models.teacher_student import build_training_model, model_prefix
from recsys_kdef.models.train_wrapper import EnsembleTrain
from recsys_kdef.objectives import build_objective
from recsys_kdef.outputs import check_writable
from recsys_kdef.plots import plural
from recsys_kdef.report import build_report, format_table, write_json_atomic
from recsys_kdef.run_log import LEARNING_CURVE, RunLog, plot_learning_curve, require_tensorboard
from recsys_kdef.trainer import NonFiniteLoss, Trainer

logger = logging.getLogger("recsys_kdef")


@dataclass
class Job:
    """Everything a run is built from: data readers, the sharded model and its optimizer."""

    schema: Schema
    readers: Readers
    module: DistributedModelParallel
    plan: ShardingPlan
    optimizer: CombinedOptimizer


def build_train_module(
    cfg: ExperimentConfig, schema: Schema
) -> tuple[EnsembleTrain, list[dict[str, torch.Tensor]]]:
    """The module the planner shards (model + objective, tables on `meta`), and the weights of
    pretrained ECKD teachers to load after sharding. The plan tool plans this same module."""
    model, teacher_weights = build_training_model(cfg, schema)
    objective = build_objective(cfg.objective, model)
    module = EnsembleTrain(
        model,
        objective,
        embedding_l2=cfg.train.embedding_l2,
        l2_mode=cfg.train.embedding_l2_mode,
        aux_loss_weight=cfg.objective.aux_loss_weight,
    )
    if cfg.train.compile:
        module.compile_dense()
    return module, teacher_weights


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


def run(cfg: ExperimentConfig, ctx: DistContext) -> dict:
    """Train, validate, test; returns the report (also written to train.output_dir/metrics.json)."""
    out = Path(cfg.train.output_dir)
    check_writable(out, "train.output_dir", ConfigError)  # before any work, not at the first save
    check_writable(out / CHECKPOINTS, "train.output_dir (its checkpoints/)", ConfigError)
    if cfg.train.tensorboard:
        require_tensorboard()  # every rank, before any work
    # train.log from here on (the sharding plan included); created at its first line, so a
    # data or config error in build_job leaves no output directory
    log = RunLog(cfg.train.output_dir, enabled=ctx.is_main, tensorboard=cfg.train.tensorboard)
    try:
        return _run(cfg, ctx, build_job(cfg, ctx), log)
    finally:
        log.close()


def _run(cfg: ExperimentConfig, ctx: DistContext, job: Job, log: RunLog) -> dict:
    out = Path(cfg.train.output_dir)
    trainer = Trainer(job.module, job.optimizer, ctx, cfg.train, checkpoint_meta(cfg, job.schema))
    trainer.observers.append(log.validation)
    resume = resume_point(cfg.train.resume, cfg.train.output_dir)
    try:
        fit = trainer.fit(job.readers.train, job.readers.valid, resume=resume)
        # the best weights are loaded now
        valid = (
            fit.best.result
            if fit.best is not None
            else evaluate(job.module, job.readers.valid, ctx)
        )
        best = best_student(valid.metrics)
        if not cfg.data.train_on_valid:  # there validation AUC says nothing
            check_valid_auc(cfg.train, valid.metrics, best)
    except (NonFiniteLoss, TrainingDiverged) as e:
        if ctx.is_main:  # the run is recorded as failed, never as a result
            write_json_atomic(out / "metrics.json", failed_report(to_dict(cfg), e))
            log.note(f"run failed: {e}")
        raise
    # the test split may be large: gAUC's rows wait on disk (validation keeps them in memory)
    test = evaluate(job.module, job.readers.test, ctx, spill_dir=cfg.train.output_dir)
    report = {"status": "ok"} | build_report(
        config=to_dict(cfg),
        dataset={"path": cfg.data.path, **job.schema.extra},
        world_size=ctx.world_size,
        plan=job.plan,
        fit=fit,
        best=best,
        valid=valid,
        test=test,
    )
    if ctx.is_main:
        write_json_atomic(out / "metrics.json", report)
        log.echo(
            format_table(
                f"\nTest ({test.rows:,} rows, best student chosen on validation AUC)",
                report["test"],
            )
        )
        if "bayes_auc" in job.schema.extra:
            log.echo(
                f"Bayes-optimal test AUC of the synthetic data: {job.schema.extra['bayes_auc']['test']:.5f}"
            )
        title = f"{Path(cfg.data.path).name}, {plural(cfg.train.epochs, 'epoch')}, seed {cfg.train.seed}"
        curve = plot_learning_curve(report["history"], out / LEARNING_CURVE, title)
        written = [out / "metrics.json", out / "checkpoints/best", *log.files]
        log.echo("written: " + ", ".join(str(p) for p in [*written, *([curve] if curve else [])]))
    return report


def main(argv: list[str] | None = None) -> None:
    # libraries log at WARNING; this project's progress at INFO, on rank 0 only
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True
    )
    quiet_library_warnings()
    try:
        cfg = load_config(sys.argv[1:] if argv is None else argv)
        ctx = init_distributed()
        logger.setLevel(logging.INFO if ctx.is_main else logging.WARNING)
        try:
            run(cfg, ctx)
        finally:
            destroy_distributed()
    except (
        ConfigError,
        DataError,
        CheckpointError,
        NonFiniteLoss,
        TrainingDiverged,
    ) as e:  # the user's to fix: the message says what and where
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
