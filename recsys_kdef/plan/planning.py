"""TorchRec's planner as training and the plan tool both run it: topology, constraints, storage
reservation, planner; and the plan it chooses as a PlanSummary, with the shardings it could not
use and, when nothing fits, an error with the numbers.

Needs no process group: plans for a GPU cluster are made offline on a CPU from a model whose
tables are on `meta`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from time import perf_counter

from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
from torchrec.distributed.planner.proposers import (
    DynamicProgrammingProposer,
    GreedyProposer,
    GridSearchProposer,
    UniformProposer,
)
from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
from torchrec.distributed.planner.types import (
    HardwareConfig,
    KernelConfig,
    PlannerError,
    ShardingOption,
    Stats,
    Storage,
    Topology,
    TopologyFactory,
    TrainerConfig,
)
from torchrec.distributed.types import ShardingPlan

from recsys_kdef.config import ConfigError, PlannerConfig
from recsys_kdef.plan.constraints import build_constraints
from recsys_kdef.plan.summary import PlanSummary, RankInfo, Rejection, ShardInfo, TableInfo

GB = 2**30
# What TorchRec's enumerator considers for a table with no constraints (grid_shard, key-value
# and SSD kernels only when a constraint asks for them): the baseline for "ruled out by a constraint".
ENUMERATED_TYPES = {
    "data_parallel",
    "table_wise",
    "column_wise",
    "table_column_wise",
    "row_wise",
    "table_row_wise",
}
ENUMERATED_KERNELS = {"dense", "fused", "fused_uvm", "fused_uvm_caching"}
# Our "greedy" stops after this many proposals in a row worse than its best (TorchRec's
# `threshold`); unbounded it tried 3,837 plans for 130 tables, ~2 minutes, for no better plan.
GREEDY_PATIENCE = 10
PROPOSERS = {
    "dynamic_programming": DynamicProgrammingProposer,
    "greedy": lambda: GreedyProposer(threshold=GREEDY_PATIENCE),
    "greedy_no_depth": lambda: GreedyProposer(use_depth=False, threshold=GREEDY_PATIENCE),
    "uniform": UniformProposer,
    "grid_search": GridSearchProposer,
}
# TorchRec's default: keep 15% of each device free as a margin (HeuristicalStorageReservation)
RESERVED_PERCENTAGE = 0.15


class InfeasiblePlanError(ConfigError):
    """No sharding of the tables fits the devices; the message has the numbers and what to change."""


@dataclass(frozen=True, slots=True)
class PlanTarget:
    """The job to plan for: `world_size` ranks, `local_world_size` per host, of one device kind."""

    world_size: int
    local_world_size: int
    compute_device: str  # "cpu" or "cuda"
    label: str = ""
    """How the tool names the device (h100, cpu, ...)."""


def collections(module: nn.Module) -> list[EmbeddingBagCollection]:
    found = [m for m in module.modules() if isinstance(m, EmbeddingBagCollection)]
    if not found:
        raise ValueError("the model has no EmbeddingBagCollection to shard")
    return found


def model_tables(module: nn.Module) -> dict[str, EmbeddingBagConfig]:
    """{module_path/table: config} of every EmbeddingBagCollection in `module`."""
    return {
        f"{path}/{t.name}": t
        for path, m in module.named_modules()
        if isinstance(m, EmbeddingBagCollection)
        for t in m.embedding_bag_configs()
    }


def build_topology(cfg: PlannerConfig, target: PlanTarget) -> Topology:
    """The devices: `planner.hbm_cap_gb` is HBM on GPU and DRAM on CPU; bandwidth in GB/s."""
    cap = None if cfg.hbm_cap_gb is None else int(cfg.hbm_cap_gb * GB)
    cpu = target.compute_device == "cpu"
    hardware = HardwareConfig(
        hbm_cap_bytes=None if cpu else cap,
        ddr_cap_bytes=cap if cpu else None,
        hbm_mem_bw=None if cfg.hbm_bw_gbps is None else cfg.hbm_bw_gbps * GB / 1000,  # bytes/ms
    )
    return TopologyFactory.create_topology(
        trainer_config=TrainerConfig(
            world_size=target.world_size, local_world_size=target.local_world_size
        ),
        hardware_config=hardware,
        kernel_config=KernelConfig(compute_device=target.compute_device),
    )


class OrderedEnumerator(EmbeddingEnumerator):
    """TorchRec's enumerator, with constrained sharding types and kernels kept in the sharder's
    order. TorchRec intersects them as Python sets, whose order follows the per-process string
    hash seed, and the planner breaks cost ties by that order: the same config then gave
    table_wise in one process and column_wise in another (PYTHONHASHSEED 1 vs 2)."""

    search_space: list[ShardingOption] = []

    def enumerate(self, module: nn.Module, sharders: list) -> list[ShardingOption]:
        self.search_space = super().enumerate(module, sharders)  # kept for the summary
        return self.search_space

    def _filter_sharding_types(self, name: str, allowed_sharding_types: list[str], *args, **kwargs):
        kept = super()._filter_sharding_types(name, allowed_sharding_types, *args, **kwargs)
        return [t for t in allowed_sharding_types if t in kept]

    def _filter_compute_kernels(
        self, name: str, allowed_compute_kernels: list[str], *args, **kwargs
    ):
        kept = super()._filter_compute_kernels(name, allowed_compute_kernels, *args, **kwargs)
        return [k for k in allowed_compute_kernels if k in kept]


class _KeepBestPlan(Stats):
    """A planner `Stats` hook: keeps the chosen ShardingOptions (the planner's own estimates)."""

    def __init__(self) -> None:
        self.best_plan: list[ShardingOption] = []
        self.num_proposals = self.num_plans = 0

    def log(self, *args, **kwargs) -> None:  # the signature grows between TorchRec versions
        self.best_plan = kwargs["best_plan"]
        self.num_proposals, self.num_plans = kwargs["num_proposals"], kwargs["num_plans"]


@dataclass
class Planner:
    """A configured EmbeddingShardingPlanner and the inputs it was built from."""

    planner: EmbeddingShardingPlanner
    topology: Topology
    constraints: dict[str, ParameterConstraints]
    reservation: HeuristicalStorageReservation
    batch_size: int
    target: PlanTarget
    kept: _KeepBestPlan
    enumerator: OrderedEnumerator


def build_planner(
    cfg: PlannerConfig,
    target: PlanTarget,
    *,
    batch_size: int,
    tables: list[EmbeddingBagConfig],
    pooling_factors: dict[str, float],
) -> Planner:
    """TorchRec's planner for `target`, with the constraints of `cfg` (and its YAML) and data's
    pooling factors ({feature: ids per row}). The one place training and the tool build it."""
    topology = build_topology(cfg, target)
    constraints = build_constraints(cfg, tables, target.compute_device, pooling_factors)
    reservation = HeuristicalStorageReservation(percentage=RESERVED_PERCENTAGE)
    kept = _KeepBestPlan()
    enumerator = OrderedEnumerator(topology, batch_size, constraints=constraints)
    planner = EmbeddingShardingPlanner(
        topology=topology,
        batch_size=batch_size,
        enumerator=enumerator,
        proposer=proposers(cfg, target.compute_device),
        constraints=constraints,
        storage_reservation=reservation,
        stats=[kept],
    )
    return Planner(
        planner, topology, constraints, reservation, batch_size, target, kept, enumerator
    )


def proposers(cfg: PlannerConfig, compute_device: str) -> list | None:
    """planner.proposers as TorchRec objects (None: TorchRec's default). dynamic_programming bins
    HBM (it divides by the HBM capacity), so it is left out on CPU, which has none."""
    if cfg.proposers is None:
        return None
    names = [p for p in cfg.proposers if compute_device != "cpu" or p != "dynamic_programming"]
    if not names:
        raise ConfigError(
            "planner.proposers: dynamic_programming plans GPU memory only; on CPU add greedy "
            "or uniform"
        )
    return [PROPOSERS[p]() for p in names]


# fbgemm's lookup checks every id of every lookup by default (and in its default WARNING mode
# clamps a bad one to row 0 rather than failing): 6.6 ms of a 64 ms step on an H200 at batch
# 65,536, K = 10. The readers check ids once per row group where they enter, on CPU, with an
# error naming the file, column and id (recsys_kdef.data.columns), so the kernels skip it.
UNCHECKED_LOOKUPS = {"bounds_check_mode": BoundsCheckMode.NONE}


def sharders() -> list:
    return [EmbeddingBagCollectionSharder(fused_params=dict(UNCHECKED_LOOKUPS))]


def plan_module(
    p: Planner, module: nn.Module, field_stats: dict[str, dict] | None = None
) -> tuple[PlanSummary, ShardingPlan]:
    """Plan `module` (tables on meta, sparse optimizer attached) and summarise the plan.

    Raises InfeasiblePlanError, with needed vs available memory per rank, if nothing fits.
    """
    start = perf_counter()
    try:
        plan = p.planner.plan(module, sharders())
    except PlannerError as e:
        raise InfeasiblePlanError(infeasible_message(p, module, str(e))) from e
    seconds = perf_counter() - start
    available = _available(p, module)
    summary = PlanSummary(
        world_size=p.target.world_size,
        local_world_size=p.target.local_world_size,
        compute_device=p.target.compute_device,
        device=p.target.label or p.target.compute_device,
        batch_size=p.batch_size,
        tables=[_table_info(o, p.constraints) for o in p.kept.best_plan],
        ranks=_rank_infos(p.topology, available, p.kept.best_plan),
        rejected=rejections(p, available),
        field_stats=field_stats or {},
        planner={
            "seconds": round(seconds, 3),
            "proposals": p.kept.num_proposals,
            "plans": p.kept.num_plans,
            "reserved_percentage": RESERVED_PERCENTAGE,
        },
    )
    return summary, plan


def _available(p: Planner, module: nn.Module) -> list[Storage]:
    """Per rank, what the storage reservation leaves for embedding shards (public `reserve`)."""
    reserved = p.reservation.reserve(
        topology=p.topology,
        batch_size=p.batch_size,
        module=module,
        sharders=sharders(),
        constraints=p.constraints,
    )
    return [d.storage for d in reserved.devices]


def _table_info(o: ShardingOption, constraints: dict[str, ParameterConstraints]) -> TableInfo:
    rows, dim = o.tensor.shape
    pooling = constraints[o.name].pooling_factors if o.name in constraints else [1.0]
    shards = [
        ShardInfo(
            rank=int(s.rank),
            offsets=list(s.offset),
            sizes=list(s.size),
            hbm_bytes=int(s.storage.hbm),
            ddr_bytes=int(s.storage.ddr),
            cost_ms=float(s.perf.total),
        )
        for s in o.shards
    ]
    return TableInfo(
        module=o.path,
        name=o.name,
        rows=int(rows),
        dim=int(dim),
        pooling_factor=float(sum(pooling)),
        sharding_type=o.sharding_type,
        compute_kernel=o.compute_kernel,
        ranks=[s.rank for s in shards],
        shards=shards,
        cache_load_factor=o.cache_load_factor,
    )


def _rank_infos(
    topology: Topology, available: list[Storage], best: list[ShardingOption]
) -> list[RankInfo]:
    used: dict[int, list] = defaultdict(lambda: [0, 0, 0.0, 0])
    for o in best:
        for s in o.shards:
            u = used[int(s.rank)]
            u[0] += s.storage.hbm
            u[1] += s.storage.ddr
            u[2] += s.perf.total
            u[3] += 1
    out = []
    for r, (device, avail) in enumerate(zip(topology.devices, available, strict=True)):
        hbm, ddr, cost, n = used[r]
        out.append(
            RankInfo(
                rank=r,
                hbm_cap=int(device.storage.hbm),
                ddr_cap=int(device.storage.ddr),
                hbm_reserved=int(device.storage.hbm - avail.hbm),
                ddr_reserved=int(device.storage.ddr - avail.ddr),
                hbm_used=int(hbm),
                ddr_used=int(ddr),
                cost_ms=float(cost),
                num_shards=n,
            )
        )
    return out


def _ruled_out(kind: str, kernel: str, c: ParameterConstraints | None) -> str | None:
    """Which constraint rules out (kind, kernel) for a table, or None."""
    if c is not None and c.sharding_types and kind not in c.sharding_types:
        return "constraint: sharding type not allowed"
    if c is not None and c.compute_kernels and kernel not in c.compute_kernels:
        return "constraint: kernel not allowed"
    return None


def _too_big(o: ShardingOption, avail: Storage) -> str | None:
    """Why the largest shard of `o` fits no rank, or None."""
    hbm = max(s.storage.hbm for s in o.shards)
    ddr = max(s.storage.ddr for s in o.shards)
    if hbm > avail.hbm:
        return (
            f"storage: a shard needs {hbm / GB:.3f} GB HBM, {avail.hbm / GB:.3f} GB free per rank"
        )
    if ddr > avail.ddr:
        return (
            f"storage: a shard needs {ddr / GB:.3f} GB DDR, {avail.ddr / GB:.3f} GB free per rank"
        )
    return None


def rejections(p: Planner, available: list[Storage]) -> list[Rejection]:
    """Shardings the planner could not choose for each table: ruled out by a constraint, or one
    shard larger than any rank's free memory. (Options that fit but lost on cost are not listed.)"""
    out = []
    device = p.target.compute_device
    sharder = sharders()[0]
    free = min(available, key=lambda s: s.hbm + s.ddr)
    tables = {(o.path, o.name): o for o in p.enumerator.search_space}
    for path, name in tables:
        c = p.constraints.get(name)
        for kind in sharder.sharding_types(device):
            for kernel in sharder.compute_kernels(kind, device):
                if kind not in ENUMERATED_TYPES or kernel not in ENUMERATED_KERNELS:
                    continue  # TorchRec enumerates these only when a constraint names them
                reason = _ruled_out(kind, kernel, c)
                if reason:
                    out.append(Rejection(f"{path}/{name}", kind, kernel, reason))
    seen = set()
    for o in p.enumerator.search_space:
        key = (o.path, o.name, o.sharding_type, o.compute_kernel)
        reason = _too_big(o, free)
        if reason and key not in seen:  # column-wise splits come in several sizes
            seen.add(key)
            out.append(Rejection(f"{o.path}/{o.name}", o.sharding_type, o.compute_kernel, reason))
    return out


def infeasible_message(p: Planner, module: nn.Module, planner_error: str) -> str:
    """Needed vs available memory per rank, the tables that fit no rank, and what to change."""
    options = p.enumerator.search_space  # already constrained
    smallest: dict[str, ShardingOption] = {}
    for o in options:
        key = f"{o.path}/{o.name}"
        size = o.total_storage.hbm + o.total_storage.ddr
        if (
            key not in smallest
            or size < smallest[key].total_storage.hbm + smallest[key].total_storage.ddr
        ):
            smallest[key] = o
    need_hbm = sum(o.total_storage.hbm for o in smallest.values())
    need_ddr = sum(o.total_storage.ddr for o in smallest.values())
    try:
        avail = _available(p, module)[0]
    except PlannerError:  # the dense parameters and inputs alone do not fit
        avail = Storage(hbm=0, ddr=0)
    cap = p.topology.devices[0].storage
    n = p.target.world_size
    too_big = [k for k, o in smallest.items() if _too_big(o, avail)]
    mem = "HBM" if p.target.compute_device != "cpu" else "DDR"
    need_mem = need_hbm if mem == "HBM" else need_ddr
    per_rank = avail.hbm if mem == "HBM" else avail.ddr
    ranks_needed = -(-need_mem // max(per_rank, 1))
    lines = [
        f"no sharding plan fits {n} ranks of {p.target.label or p.target.compute_device}:",
        f"  needed:    {need_hbm / GB:.3f} GB HBM + {need_ddr / GB:.3f} GB DDR in all "
        f"(the smallest allowed sharding of each of {len(smallest)} tables, with optimizer state), "
        f"{need_mem / n / GB:.3f} GB {mem} per rank if spread evenly",
        f"  available: {per_rank / GB:.3f} GB {mem} per rank ({(cap.hbm if mem == 'HBM' else cap.ddr) / GB:.3f} "
        f"GB capacity minus {RESERVED_PERCENTAGE:.0%} margin, dense parameters and inputs), "
        f"{per_rank * n / GB:.3f} GB on {n} ranks",
    ]
    if too_big:
        lines.append(
            f"  tables with no allowed shard small enough for one rank: {', '.join(too_big[:6])}"
            + (" ..." if len(too_big) > 6 else "")
        )
    lines += [
        "suggestions:",
        f"  - more ranks: about {ranks_needed} at this size (--world, or more nodes)",
        "  - a smaller model.embedding_dim, or model.embedding_mode shared (F tables instead of K x F)",
        "  - allow column_wise / row_wise (GPU) sharding for the big tables (planner.sharding_types "
        "or planner.constraints), so one table can spread over several ranks",
        "  - a device with more memory (--device, planner.hbm_cap_gb)",
        f"TorchRec's planner said: {planner_error.strip().splitlines()[0]}",
    ]
    return "\n".join(lines)
