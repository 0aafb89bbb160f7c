"""The planner's device figures when planner.hbm_cap_gb / hbm_bw_gbps are null on CUDA: the
device's own memory and its HBM bandwidth by name, instead of TorchRec's defaults (32 GB,
897 GB/s), which made the planner choose row_wise for every table on a 141 GB H200."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from recsys_kdef.config import PlannerConfig

GB = 2**30
# HBM bandwidth (GB/s) by device name, most specific first (vendor data sheets)
HBM_BANDWIDTH_GBPS = (
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),
    ("B200", 8000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("L4", 300.0),
    ("V100", 900.0),
)


def hbm_bandwidth_gbps(name: str) -> float | None:
    """The HBM bandwidth of a device named `name` (e.g. "NVIDIA H200"), None if unknown."""
    return next((bw for key, bw in HBM_BANDWIDTH_GBPS if key in name), None)


def sized_for_device(
    cfg: PlannerConfig, device: torch.device, world_size: int, properties: Any = None
) -> PlannerConfig:
    """`cfg` with its null device figures filled in from the CUDA device (`properties`:
    torch.cuda.get_device_properties, or a stand-in with `name` and `total_memory`); on a
    single GPU with no sharding types set, table_wise only: each table whole on the one
    device, its ids permuted once, not bucketised by row (row_wise) or copied per column
    shard (column_wise). CPU configs come back unchanged."""
    if device.type != "cuda":
        return cfg
    props = properties or torch.cuda.get_device_properties(device)
    changes: dict[str, Any] = {}
    if cfg.hbm_cap_gb is None:
        changes["hbm_cap_gb"] = props.total_memory / GB
    if cfg.hbm_bw_gbps is None and (bw := hbm_bandwidth_gbps(props.name)) is not None:
        changes["hbm_bw_gbps"] = bw
    if world_size == 1 and cfg.sharding_types is None and cfg.constraints is None:
        changes["sharding_types"] = ["table_wise"]
    return replace(cfg, **changes)
