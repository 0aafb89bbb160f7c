"""Per-table planner constraints: `planner.sharding_types` / `min_partition` for every table,
refined by a YAML file (`planner.constraints`) that the plan tool and training both read.

    UserID:                       # a field: every student's table of it (s0__UserID, s1__UserID, ...)
      sharding_types: [row_wise]
    "s*__Query*":                 # a glob over table names
      compute_kernels: [fused]
    s0__AdID:                     # one table
      min_partition: 8
      pooling_factor: 1.0         # instead of the estimate from data

Globs apply first (in file order), then field names, then table names; a later match
overrides the keys it sets. A key that matches no table is an error.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, fields
from typing import Literal

from torchrec import EmbeddingBagConfig
from torchrec.distributed.planner import ParameterConstraints

from recsys_kdef.config import ConfigError, PlannerConfig
from recsys_kdef.config.loading import from_dict, read_yaml
from recsys_kdef.config.sections import ShardingType

# gloo has no reduce_scatter, so row-wise kinds are CUDA-only (docs/papers.md §2)
CPU_SHARDING_TYPES = ["table_wise", "column_wise", "table_column_wise", "data_parallel"]
# The default on CPU leaves data_parallel out: the planner's CPU cost model picks it even for
# tables of 100k+ rows, whose dense gradients then cost O(table size) every step (zeroing,
# all-reduce, optimizer), measured 8x slower at K=4 on a Criteo-shaped batch (tools/bench_train.py).
CPU_DEFAULT_SHARDING_TYPES = ["table_wise", "column_wise", "table_column_wise"]
CPU_KERNELS = ["dense", "fused"]
# The default on GPU leaves fused_uvm (all rows in host memory, no HBM cache) out: it is a
# quarter of the planner's options and cost estimates (7.6 s instead of 12.6 s for 130 tables on
# 2x8 GPUs, tools/bench_plan.py) and fused_uvm_caching covers the same need with an HBM cache.
# A constraints entry (compute_kernels: [fused_uvm]) brings it back for a table.
GPU_DEFAULT_KERNELS = ["dense", "fused", "fused_uvm_caching"]

ComputeKernel = Literal["dense", "fused", "fused_uvm", "fused_uvm_caching", "key_value"]


@dataclass(kw_only=True, slots=True)
class TableConstraint:
    """What one entry of the constraints YAML may set (unset keys: inherited or TorchRec's default)."""

    sharding_types: list[ShardingType] | None = None
    compute_kernels: list[ComputeKernel] | None = None
    """Embedding kernels: fused (in HBM), fused_uvm_caching (HBM cache over DDR), fused_uvm, dense."""
    min_partition: int | None = None
    """Smallest column shard, in embedding dimensions."""
    pooling_factor: float | None = None
    """Ids per row for the cost model, instead of the estimate from data."""

    def merged(self, other: TableConstraint) -> TableConstraint:
        """self with every key `other` sets replaced."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(
            {k: v for f in fields(other) if (v := getattr(other, k := f.name)) is not None}
        )
        return TableConstraint(**values)


def read_constraints(path: str, tables: list[EmbeddingBagConfig]) -> dict[str, TableConstraint]:
    """{table name: merged constraint} for the tables the YAML at `path` addresses."""
    data = read_yaml(path)
    names = [t.name for t in tables]
    by_field: dict[str, list[str]] = {}
    for t in tables:
        for feature in t.feature_names:
            by_field.setdefault(feature, []).append(t.name)

    def targets(key: str) -> tuple[int, list[str]]:  # (specificity, tables)
        if key in names:
            return 2, [key]
        if key in by_field:
            return 1, by_field[key]
        return 0, fnmatch.filter(names, key) if any(c in key for c in "*?[") else []

    entries = []
    for order, (key, value) in enumerate(data.items()):
        if isinstance(value, dict) and "ranks" in value:
            raise ConfigError(
                f"{path}: '{key}.ranks': TorchRec's planner cannot pin tables to ranks "
                "(ParameterConstraints has no such field); write a plan with `python -m "
                "recsys_kdef.plan --json plan.json`, edit the shards' `rank` there, and train "
                "with --planner.plan_file plan.json"
            )
        specificity, matched = targets(str(key))
        if not matched:
            raise ConfigError(
                f"{path}: '{key}' matches no table; keys are table names ({', '.join(names[:4])}"
                f"{', ...' if len(names) > 4 else ''}), field names ({', '.join(list(by_field)[:4])}"
                f"{', ...' if len(by_field) > 4 else ''}) or globs over table names"
            )
        entry = from_dict(TableConstraint, value or {}, f"{path}: {key}")
        entries.append((specificity, order, entry, matched))
    out: dict[str, TableConstraint] = {}
    for _, _, entry, matched in sorted(entries, key=lambda e: (e[0], e[1])):
        for name in matched:
            out[name] = out.get(name, TableConstraint()).merged(entry)
    return out


def build_constraints(
    cfg: PlannerConfig,
    tables: list[EmbeddingBagConfig],
    compute_device: str,
    pooling_factors: dict[str, float],
) -> dict[str, ParameterConstraints]:
    """TorchRec ParameterConstraints for every table: global planner keys, the YAML, pooling factors.

    `pooling_factors` maps feature names to ids per row (from data); missing ones use 1.0.
    """
    base = TableConstraint(
        sharding_types=cfg.sharding_types,
        min_partition=cfg.min_partition,
    )
    per_table = read_constraints(cfg.constraints, tables) if cfg.constraints else {}
    where = cfg.constraints or "planner.sharding_types"
    out = {}
    for t in tables:
        c = base.merged(per_table[t.name]) if t.name in per_table else base
        types, kernels = c.sharding_types, c.compute_kernels
        if compute_device == "cpu":
            bad = [s for s in types or [] if s not in CPU_SHARDING_TYPES]
            bad += [k for k in kernels or [] if k not in CPU_KERNELS]
            if bad:
                raise ConfigError(
                    f"{where}: table {t.name}: {bad} need CUDA (gloo has no reduce_scatter; "
                    f"UVM and key-value kernels are GPU-only); on CPU choose sharding types from "
                    f"{CPU_SHARDING_TYPES} and kernels from {CPU_KERNELS}"
                )
            types = types or CPU_DEFAULT_SHARDING_TYPES
        else:
            kernels = kernels or GPU_DEFAULT_KERNELS
        pooling = [
            c.pooling_factor if c.pooling_factor is not None else pooling_factors.get(f, 1.0)
            for f in t.feature_names
        ]
        out[t.name] = ParameterConstraints(
            sharding_types=types,
            compute_kernels=kernels,
            min_partition=c.min_partition,
            pooling_factors=pooling,
        )
    return out
