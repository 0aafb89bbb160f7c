"""The offline evaluation job: shard a checkpoint's model over this job's ranks (DCP reshards),
stream a split, write evaluation.json, plots and optional per-rank prediction files:

    recsys-kdef-evaluate --checkpoint runs/demo --data data/demo [--split test] \
        [--heads student_0,ensemble] [--predictions preds/] [--out eval/]
    torchrun --nproc_per_node 4 -m recsys_kdef.eval --checkpoint runs/demo --data data/demo

The job streams the split (bounded memory), writes `<out>/evaluation.json` and PNG plots
(ROC, calibration, per-head bars), and with --predictions one Parquet file per rank.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from recsys_kdef.builders.job import build_module
from recsys_kdef.checkpoint import store as ckpt
from recsys_kdef.checkpoint.paths import beside_checkpoint, written_line
from recsys_kdef.checkpoint.store import CheckpointError
from recsys_kdef.config import ConfigError, ExperimentConfig
from recsys_kdef.config.loading import from_dict
from recsys_kdef.data.reader import ParquetBatchReader, list_split_files
from recsys_kdef.data.schema import DataError, Schema
from recsys_kdef.distributed.library_warnings import quiet_library_warnings
from recsys_kdef.distributed.process import DistContext, destroy_distributed, init_distributed
from recsys_kdef.eval.evaluate import PredictionWriter, evaluate
from recsys_kdef.eval.plots import plot_calibration, plot_heads, plot_roc
from recsys_kdef.eval.report import format_table, with_best_student, write_json_atomic
from recsys_kdef.io import check_writable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Evaluate a checkpoint on a Parquet split (any number of ranks)."
    )
    parser.add_argument(
        "--checkpoint", required=True, help="a run directory (its best), or a checkpoint directory"
    )
    parser.add_argument("--data", required=True, help="dataset directory (schema.json, <split>/)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--heads", default=None, help="comma-separated heads (default: all)")
    parser.add_argument("--predictions", default=None, help="directory for part-<rank>.parquet")
    parser.add_argument(
        "--out",
        default=None,
        help="evaluation.json and plots (default: beside the checkpoint, never inside it: "
        "<run>/eval-<split>/<checkpoint name>/ for <run>/checkpoints/<checkpoint name>)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: data.eval_batch_size"
    )
    parser.add_argument(
        "--tmp-dir",
        default=None,
        help="where gAUC's rows wait on disk, removed at the end (default: --out)",
    )
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def run_evaluation(args: argparse.Namespace, ctx: DistContext) -> dict:
    """Shard the checkpoint's model over this job's ranks, evaluate, write the outputs (rank 0)."""

    directory = ckpt.resolve(args.checkpoint)
    out = Path(args.out) if args.out else beside_checkpoint(directory, f"eval-{args.split}")
    outputs = {"--out": out, "--predictions": args.predictions}
    outputs["--tmp-dir"] = args.tmp_dir
    for what, path in outputs.items():  # before any work, not after the evaluation
        if path is not None:
            check_writable(path, what)
    meta = ckpt.read_meta(directory)
    cfg = from_dict(ExperimentConfig, meta["config"])
    schema = Schema.load(args.data)
    schema.check_compatible(Schema.from_json(meta["schema"]), f"checkpoint {directory}")
    module, _ = build_module(cfg, schema, ctx, load_teachers=False)
    ckpt.load_into(directory, module, hint=ckpt.ALTERED)  # the model of its own meta.json
    reader = ParquetBatchReader(
        list_split_files(args.data, args.split),
        schema,
        args.batch_size or cfg.data.eval_batch_size,
        rank=ctx.rank,
        world_size=ctx.world_size,
        training=False,
    )
    writer = PredictionWriter(args.predictions, ctx.rank) if args.predictions else None
    try:
        result = evaluate(
            module,
            reader,
            ctx,
            heads=args.heads.split(",") if args.heads else None,
            curves=True,
            predictions=writer,
            progress=not args.no_progress,
            spill_dir=args.tmp_dir or out,
        )
    except BaseException:
        if writer is not None:
            writer.close(ok=False)
        raise
    if writer is not None:
        writer.close()
    metrics = result.metrics
    if "best_student" in meta and f"student_{meta['best_student']}" in metrics:
        metrics = with_best_student(metrics, meta["best_student"])
    report = {
        "checkpoint": str(directory),
        "data": str(args.data),
        "split": args.split,
        "world_size": ctx.world_size,
        "rows": result.rows,
        "metrics": metrics,
        "losses": result.losses,
        "curves": result.curves,
    }
    if ctx.is_main:
        plots = (
            [] if args.no_plots else [out / n for n in ("roc.png", "calibration.png", "heads.png")]
        )
        written = [out / "evaluation.json", *plots]
        if args.predictions:
            written.append(f"{Path(args.predictions) / 'part-*.parquet'} ({ctx.world_size} files)")
        report["files"] = [str(p) for p in written[1:]]
        write_json_atomic(out / "evaluation.json", report)
        if plots:
            title = f"{Path(args.data).name} {args.split}, {result.rows:,} rows"
            plot_roc(result.curves, result.metrics, plots[0])
            plot_calibration(result.curves, plots[1], f"Calibration: {title}")
            plot_heads(result.metrics, plots[2])
        print(format_table(f"\n{args.split} ({result.rows:,} rows) of {directory}", metrics))
        print(written_line(written))
    return report


def main(argv: list[str] | None = None) -> None:

    logging.basicConfig(level=logging.WARNING, force=True)
    quiet_library_warnings()
    args = parse_args(argv)
    try:
        ctx = init_distributed()
        try:
            run_evaluation(args, ctx)
        finally:
            destroy_distributed()
    except (ConfigError, DataError, CheckpointError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
