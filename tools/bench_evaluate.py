"""Offline evaluation throughput and memory on a KDD12-shaped synthetic split, K students.

KDD12 (KDD Cup 2012 track 2, as KDD12_x10) has 13 fields; here: 12 categorical fields of
`--vocab` ids plus the user field (the gAUC group), from recsys_kdef's synthetic generator
(one vocabulary size for all fields). Each size is evaluated in a fresh process (one rank)
with the real job's pieces (build_module, a DCP checkpoint loaded with load_into, evaluate
with calibration curves and gAUC rows spilled to disk, as the job does); the model's forward time is measured with hooks, the rest of the
wall time is reading Parquet, building batches and metrics. Prints a table, writes JSON.

    python tools/bench_evaluate.py --rows 1000000 3000000 10000000 --out bench/evaluate.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from recsys_kdef.builders.job import build_module, checkpoint_meta
from recsys_kdef.checkpoint import store as ckpt
from recsys_kdef.config import SyntheticConfig, load_config
from recsys_kdef.data.reader import ParquetBatchReader, list_split_files
from recsys_kdef.data.schema import Schema
from recsys_kdef.data.synthetic import generate
from recsys_kdef.distributed.library_warnings import quiet_library_warnings
from recsys_kdef.distributed.process import destroy_distributed, init_distributed
from recsys_kdef.eval.evaluate import evaluate


def config_args(data: Path, students: int, batch_size: int) -> list[str]:
    return [
        "--data.path", str(data), "--data.eval_batch_size", str(batch_size),
        "--model.num_students", str(students), "--model.embedding_dim", "16",
        "--model.tower.hidden_units", "[400, 400, 400]",
        "--train.output_dir", str(data.parent / f"run_{data.name}"),
    ]  # fmt: skip


def prepare(rows: int, vocab: int, work: Path, students: int, batch_size: int) -> Path:
    """The dataset (test split ~98% of the rows) and a checkpoint of an untrained model."""
    data = work / f"kdd12_like_{rows}"
    if not (data / "schema.json").exists():
        generate(
            SyntheticConfig(
                rows=rows, valid_fraction=0.01, test_fraction=0.98, num_sparse=12, num_multi=0,
                num_dense=0, vocab_size=vocab, num_users=vocab, row_group_size=65536,
                files_per_split=4, seed=1,
            ),
            data,
        )  # fmt: skip
    cfg = load_config(config_args(data, students, batch_size))
    best = Path(cfg.train.output_dir) / ckpt.CHECKPOINTS / ckpt.BEST
    if not ckpt.is_complete(best):
        ctx = init_distributed()
        try:
            schema = Schema.load(data)
            module, _ = build_module(cfg, schema, ctx)
            meta = {**checkpoint_meta(cfg, schema), "best_student": 0, "valid": {}}
            ckpt.save_checkpoint(best, module, None, meta)
        finally:
            destroy_distributed()
    return data


def measure(data: Path, students: int, batch_size: int) -> dict:
    """One evaluation of the test split in this process: times and peak RSS."""
    cfg = load_config(config_args(data, students, batch_size))
    ctx = init_distributed()
    try:
        schema = Schema.load(data)
        module, _ = build_module(cfg, schema, ctx, load_teachers=False)
        ckpt.load_into(Path(cfg.train.output_dir) / ckpt.CHECKPOINTS / ckpt.BEST, module)
        forward = [0.0, 0.0]  # [started, total]
        module.register_forward_pre_hook(lambda *_: forward.__setitem__(0, time.perf_counter()))
        module.register_forward_hook(
            lambda *_: forward.__setitem__(1, forward[1] + time.perf_counter() - forward[0])
        )
        reader = ParquetBatchReader(
            list_split_files(data, "test"), schema, batch_size, training=False
        )
        loaded_rss, loading_peak = _rss_mb("VmRSS:"), _rss_mb("VmHWM:")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM restarts: the evaluation's own peak
        start = time.perf_counter()
        result = evaluate(module, reader, ctx, curves=True, spill_dir=data.parent / "spill")
        wall = time.perf_counter() - start
    finally:
        destroy_distributed()
    return {
        "rows": result.rows,
        "wall_s": wall,
        "forward_s": forward[1],
        "overhead_s": wall - forward[1],
        "overhead_pct_of_forward": 100 * (wall - forward[1]) / forward[1],
        "rows_per_s": result.rows / wall,
        "peak_rss_mb": max(loading_peak, _rss_mb("VmHWM:")),
        "eval_peak_rss_mb": _rss_mb("VmHWM:"),
        "rss_after_loading_mb": loaded_rss,
        "ensemble_auc": result.metrics["ensemble"]["auc"],
        "ensemble_auc_bound": result.metrics["ensemble"]["auc_bound"],
        "ensemble_gauc": result.metrics["ensemble"].get("gauc"),
    }


def _rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--students", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=100_000, help="ids per field")
    parser.add_argument("--batch-size", type=int, default=16384)
    parser.add_argument("--work", default="bench/work", help="datasets and checkpoints")
    parser.add_argument("--out", default="bench/evaluate.json")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    quiet_library_warnings()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.students, args.batch_size)))
        return
    runs = []
    for rows in args.rows:
        data = prepare(rows, args.vocab, Path(args.work), args.students, args.batch_size)
        cmd = [sys.executable, __file__, "--measure", str(data), "--students", str(args.students)]
        cmd += ["--batch-size", str(args.batch_size)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs.append({"dataset_rows": rows, **json.loads(proc.stdout.strip().splitlines()[-1])})
    print(f"\nevaluate, K={args.students}, 13 fields x {args.vocab:,} ids, batch {args.batch_size}")
    print(
        f"{'test rows':>10} {'rows/s':>10} {'forward s':>10} {'I/O+metrics s':>14} "
        f"{'overhead %':>11} {'RSS loaded MB':>14} {'peak RSS MB':>12}"
    )
    for r in runs:
        print(
            f"{r['rows']:>10,} {r['rows_per_s']:>10,.0f} {r['forward_s']:>10.1f} "
            f"{r['overhead_s']:>14.1f} {r['overhead_pct_of_forward']:>11.1f} "
            f"{r['rss_after_loading_mb']:>14.0f} {r['peak_rss_mb']:>12.0f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__}
    out.write_text(
        json.dumps({"machine": machine, "students": args.students, "runs": runs}, indent=1)
    )
    print(f"-> {out}")


if __name__ == "__main__":
    main()
