"""Train an ensemble of CTR students: parse -> build -> train -> evaluate -> report -> close.

recsys-kdef-train --config configs/demo.yaml [--section.key value ...]   (--help: every key)
python recsys_kdef/train.py --config configs/demo.yaml [--section.key value ...]
torchrun --nproc_per_node 2 recsys_kdef/train.py --config configs/demo.yaml
torchx run -s local_cwd dist.ddp -j 1x2 --script recsys_kdef/train.py -- --config configs/demo.yaml
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from recsys_kdef.builders.job import Job, build_job, checkpoint_meta
from recsys_kdef.checkpoint.store import CHECKPOINTS, CheckpointError, resume_point
from recsys_kdef.config import ConfigError, ExperimentConfig, load_config, to_dict
from recsys_kdef.config.help import config_help
from recsys_kdef.data import DataError
from recsys_kdef.distributed.library_warnings import quiet_library_warnings
from recsys_kdef.distributed.process import DistContext, destroy_distributed, init_distributed
from recsys_kdef.eval.evaluate import best_student, evaluate
from recsys_kdef.eval.report import build_report, format_table, write_json_atomic
from recsys_kdef.figures import plural
from recsys_kdef.io import check_writable
from recsys_kdef.training.divergence import TrainingDiverged, check_valid_auc, failed_report
from recsys_kdef.training.run_log import (
    LEARNING_CURVE,
    RunLog,
    plot_learning_curve,
    require_tensorboard,
)
from recsys_kdef.training.trainer import Trainer
from recsys_kdef.training.watches import NonFiniteLoss

logger = logging.getLogger("recsys_kdef")


def run(cfg: ExperimentConfig, ctx: DistContext) -> dict:
    """Train, validate, test; returns the report (also written to train.output_dir/metrics.json)."""
    out = Path(cfg.train.output_dir)
    check_writable(out, "train.output_dir", ConfigError)  # before any work, not at the first save
    check_writable(out / CHECKPOINTS, "train.output_dir (its checkpoints/)", ConfigError)
    if cfg.train.tensorboard:
        require_tensorboard()  # every rank, before any work
    # train.log from here on (the sharding plan included); created at its first line, so a
    # data or config error in build_job leaves no output directory
    created = not out.exists()
    log = RunLog(cfg.train.output_dir, enabled=ctx.is_main, tensorboard=cfg.train.tensorboard)
    try:
        return _run(cfg, ctx, build_job(cfg, ctx), log)
    except (ConfigError, DataError) as e:  # bad input met while training (e.g. at a batch)
        log.note(f"run failed: {e}")
        log.close()
        saved = (out / CHECKPOINTS).is_dir() and any((out / CHECKPOINTS).iterdir())
        if ctx.is_main and created and not saved:
            shutil.rmtree(out, ignore_errors=True)  # nothing trained: no partial output left
        raise
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


USAGE = """usage: recsys-kdef-train [--config FILE] [--section.key VALUE ...]

Train an ensemble of CTR students on a Parquet dataset (any number of processes: torchrun,
torchx). --config reads a YAML file of the sections below (configs/*.yaml); each
--section.key VALUE then overrides one key, VALUE read as YAML (3, 1e-3, true, null, [64, 32]).
Writes metrics.json, train.log, learning_curve.png and checkpoints/ to train.output_dir.
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(USAGE + "\n" + config_help(ExperimentConfig))
        return
    # libraries log at WARNING; this project's progress at INFO, on rank 0 only
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True
    )
    quiet_library_warnings()
    try:
        cfg = load_config(argv)
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
