"""Plan a training config offline and print the plan (no GPU, no process group).

    python -m recsys_kdef.plan --config configs/demo.yaml --world 2x8 --device h100 [--data DIR]
        [--constraints c.yaml] [--json plan.json] [--compare 4x8 | --compare other.yaml]
        [--section.key value ...]

The module, sparse optimizer, topology, constraints, batch size and pooling factors are
those training uses (train.build_train_module, distributed.attach_sparse_optimizer,
plan.planning.build_planner), so `--json` with `--planner.plan_file` runs what was printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from recsys_kdef.builders.model import build_train_module
from recsys_kdef.config import ConfigError, ExperimentConfig, load_config
from recsys_kdef.data import DataError, Schema
from recsys_kdef.data.stats import FieldStats, estimate_field_stats
from recsys_kdef.distributed.library_warnings import quiet_library_warnings
from recsys_kdef.distributed.optimizers import attach_sparse_optimizer
from recsys_kdef.plan.figure import plot_ranks
from recsys_kdef.plan.planning import PlanTarget, build_planner, collections, plan_module
from recsys_kdef.plan.summary import PlanSummary
from recsys_kdef.plan.text import format_compare, format_summary

# compute device, HBM GB, HBM bandwidth GB/s (vendor figures); planner.* overrides win
DEVICES: dict[str, tuple[str, float | None, float | None]] = {
    "cpu": ("cpu", None, None),
    "h100": ("cuda", 80, 3350),
    "h200": ("cuda", 141, 4800),
    "a100": ("cuda", 80, 2039),
    "custom": ("cuda", None, None),  # planner.hbm_cap_gb / hbm_bw_gbps from the config
}


def parse_world(text: str) -> tuple[int, int]:
    """'2x8' -> (16 ranks, 8 per host); '4' -> (4, 4)."""
    match = re.fullmatch(r"(?:(\d+)x)?(\d+)", text)
    if not match or int(match.group(2)) < 1 or int(match.group(1) or 1) < 1:
        raise ConfigError(f"--world {text!r}: expected NODESxPROCS like 2x8 (or a rank count)")
    nodes, local = int(match.group(1) or 1), int(match.group(2))
    return nodes * local, local


def load(args: argparse.Namespace, overrides: list[str], config: str | None) -> ExperimentConfig:
    """The config with the device preset applied first, then --data, --constraints and overrides."""
    _, cap, bw = DEVICES[args.device]
    argv = ["--config", config] if config else []
    argv += ["--planner.hbm_cap_gb", str(cap)] if cap else []
    argv += ["--planner.hbm_bw_gbps", str(bw)] if bw else []
    argv += ["--data.path", args.data] if args.data else []
    argv += ["--planner.constraints", args.constraints] if args.constraints else []
    return load_config(argv + overrides)


def make_plan(cfg: ExperimentConfig, world: str, device: str) -> PlanSummary:
    """Plan cfg's training module for `world` ranks of `device` (a DEVICES key), with the
    schema and pooling factors of the dataset at data.path (Parquet files are optional)."""
    schema = load_schema(cfg.data.path)
    stats = estimate_field_stats(cfg.data.path, schema, cfg.planner.stats_row_groups)
    return plan_schema(cfg, schema, stats, world, device)


def load_schema(path: str) -> Schema:
    """The dataset's schema: `path` is a dataset directory (its schema.json, and train/*.parquet
    for pooling factors when there) or a schema.json file alone (pooling factors 1.0)."""
    if Path(path).is_file():
        try:
            return Schema.from_json(json.loads(Path(path).read_text()))
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not a valid schema.json: {e}") from e
    if not Path(path, "schema.json").is_file():
        raise DataError(
            f"{Path(path, 'schema.json')}: not found. The planner needs the dataset's schema "
            "(fields and vocabulary sizes): pass --data DIR, a prepared dataset directory "
            "(schema.json, optionally train/*.parquet for pooling factors), or --data "
            "path/to/schema.json to plan from the schema file alone"
        )
    return Schema.load(path)


def plan_schema(
    cfg: ExperimentConfig,
    schema: Schema,
    stats: dict[str, FieldStats],
    world: str,
    device: str,
) -> PlanSummary:
    """Plan the training module cfg builds over `schema` (see make_plan)."""
    world_size, local = parse_world(world)
    compute_device = DEVICES[device][0]
    module, _ = build_train_module(cfg, schema)
    attach_sparse_optimizer(module, cfg.train, torch.device(compute_device))
    specs = [f"{cfg.planner.hbm_cap_gb:g} GB"] if cfg.planner.hbm_cap_gb else []
    specs += [f"{cfg.planner.hbm_bw_gbps:g} GB/s"] if cfg.planner.hbm_bw_gbps else []
    label = f"{device} ({', '.join(specs)})" if specs else device
    planner = build_planner(
        cfg.planner,
        PlanTarget(world_size, local, compute_device, label),
        batch_size=cfg.data.batch_size,
        tables=[t for ebc in collections(module) for t in ebc.embedding_bag_configs()],
        pooling_factors={f: s.pooling_factor for f, s in stats.items()},
    )
    summary, _ = plan_module(planner, module, {f: asdict(s) for f, s in stats.items()})
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m recsys_kdef.plan",
        description="Plan a config's embedding sharding offline and print it. Other arguments "
        "are config overrides (--section.key value).",
    )
    p.add_argument("--config", help="experiment YAML (as for training)")
    p.add_argument("--world", default="1x2", help="NODESxPROCS, e.g. 2x8 (default 1x2)")
    p.add_argument("--device", choices=list(DEVICES), default="cpu", help="device preset")
    p.add_argument(
        "--data",
        help="dataset directory (schema.json, train/*.parquet for pooling factors) or a "
        "schema.json file alone; default data.path",
    )
    p.add_argument("--constraints", help="per-table constraints YAML (= planner.constraints)")
    p.add_argument("--json", help="write the full plan here (training reads it: planner.plan_file)")
    p.add_argument("--figure", help="write a PNG of memory and estimated cost per rank here")
    p.add_argument(
        "--compare", help="a world (4x8) or another config YAML to plan and compare with"
    )
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    quiet_library_warnings()
    args, overrides = parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        summary = make_plan(load(args, overrides, args.config), args.world, args.device)
        if args.json:
            summary.save(args.json)
        if args.figure:
            plot_ranks(summary, args.figure)
        if args.compare is None:
            print(format_summary(summary))
        else:
            is_world = re.fullmatch(r"(\d+x)?\d+", args.compare) is not None
            other_cfg = load(args, overrides, args.config if is_world else args.compare)
            other = make_plan(other_cfg, args.compare if is_world else args.world, args.device)
            label_a = args.world if is_world else (args.config or "defaults")
            print(format_compare(summary, other, label_a, args.compare))
        if args.figure:
            print(f"\nper-rank figure: {args.figure}")
        if args.json:
            print(f"\nplan written to {args.json} (train with --planner.plan_file {args.json})")
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
