"""A sharding plan as data: where each table's shards live, what they cost, per-rank totals.

Built from the planner's own chosen ShardingOptions (storage and perf estimates included),
written as JSON by the plan tool and read back by training (`planner.plan_file`), which turns
it into a TorchRec ShardingPlan after checking it fits the job.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torchrec.distributed.types import (
    CacheParams,
    EmbeddingModuleShardingPlan,
    EnumerableShardingSpec,
    ParameterSharding,
    ShardingPlan,
    ShardMetadata,
)

from recsys_kdef.config import ConfigError
from recsys_kdef.io import atomic_path

FORMAT = "recsys_kdef.plan/1"


@dataclass(slots=True)
class ShardInfo:
    """One shard: its rank, offsets and sizes (rows, columns), estimated bytes and milliseconds."""

    rank: int
    offsets: list[int]
    sizes: list[int]
    hbm_bytes: int
    ddr_bytes: int
    cost_ms: float


@dataclass(slots=True)
class TableInfo:
    """One table's sharding as the planner chose it."""

    module: str
    name: str
    rows: int
    dim: int
    pooling_factor: float
    sharding_type: str
    compute_kernel: str
    ranks: list[int]
    shards: list[ShardInfo]
    cache_load_factor: float | None = None

    @property
    def key(self) -> str:
        return f"{self.module}/{self.name}"

    @property
    def cost_ms(self) -> float:
        return sum(s.cost_ms for s in self.shards)


@dataclass(slots=True)
class RankInfo:
    """One rank's memory (capacity, planner reservation for dense parameters / inputs / margin,
    embedding shards) and estimated step cost of its shards."""

    rank: int
    hbm_cap: int
    ddr_cap: int
    hbm_reserved: int
    ddr_reserved: int
    hbm_used: int
    ddr_used: int
    cost_ms: float
    num_shards: int

    @property
    def hbm_free(self) -> int:
        return self.hbm_cap - self.hbm_reserved - self.hbm_used

    @property
    def ddr_free(self) -> int:
        return self.ddr_cap - self.ddr_reserved - self.ddr_used


@dataclass(slots=True)
class Rejection:
    """A sharding (type, kernel) the planner could not use for a table, and why."""

    table: str
    sharding_type: str
    compute_kernel: str
    reason: str


@dataclass(slots=True)
class PlanSummary:
    """Everything the tool prints and `--json` writes."""

    world_size: int
    local_world_size: int
    compute_device: str
    device: str
    """A label: the preset (h100, cpu, ...) and its memory / bandwidth."""
    batch_size: int
    tables: list[TableInfo]
    ranks: list[RankInfo]
    rejected: list[Rejection] = field(default_factory=list)
    field_stats: dict[str, dict] = field(default_factory=dict)
    """Per sparse field (and sequence position `<name>#i`): pooling_factor, distinct_fraction,
    rows (from --data / data.path)."""
    planner: dict = field(default_factory=dict)
    """How the plan was found: seconds, proposals, plans, storage reservation."""
    format: str = FORMAT

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> PlanSummary:
        tables = [
            TableInfo(**{**t, "shards": [ShardInfo(**s) for s in t["shards"]]})
            for t in data["tables"]
        ]
        return cls(
            **{
                **data,
                "tables": tables,
                "ranks": [RankInfo(**r) for r in data["ranks"]],
                "rejected": [Rejection(**r) for r in data.get("rejected", [])],
            }
        )

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PlanSummary:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"planner.plan_file: {path} not found")
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
            return cls.from_json(data)
        except (AttributeError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"planner.plan_file: {path} is not a plan written by `python -m recsys_kdef.plan "
                f"--json`: {e}"
            ) from e

    def check_fits(
        self, path: str, world_size: int, compute_device: str, tables: dict[str, tuple[int, int]]
    ) -> None:
        """Raise ConfigError unless this plan is for `world_size` `compute_device` ranks and exactly
        `tables` ({module/table: (rows, dim)}), each covered by its shards."""
        where = f"planner.plan_file {path}"
        if self.world_size != world_size:
            raise ConfigError(
                f"{where}: planned for {self.world_size} ranks, this job has {world_size}; "
                f"plan again with --world for {world_size} ranks"
            )
        if self.compute_device != compute_device:
            raise ConfigError(
                f"{where}: planned for {self.compute_device} devices, this job runs on "
                f"{compute_device}; plan again with the matching --device"
            )
        planned = {t.key: t for t in self.tables}
        missing, extra = sorted(set(tables) - set(planned)), sorted(set(planned) - set(tables))
        if missing or extra:
            raise ConfigError(
                f"{where}: its tables differ from the model's: missing from the plan "
                f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, not in the model "
                f"{extra[:5]}{' ...' if len(extra) > 5 else ''} (same config, K and embedding_mode?)"
            )
        for key, (rows, dim) in tables.items():
            t = planned[key]
            bad_rank = [s.rank for s in t.shards if not 0 <= s.rank < world_size]
            covered = (
                sum(s.sizes[0] * s.sizes[1] for s in t.shards)
                if t.sharding_type != "data_parallel"
                else rows * dim
            )
            if (t.rows, t.dim) != (rows, dim) or covered != rows * dim or bad_rank:
                raise ConfigError(
                    f"{where}: table {key}: the model has {rows} x {dim}, the plan {t.rows} x "
                    f"{t.dim} in shards covering {covered} values"
                    + (f", on ranks {bad_rank} outside 0..{world_size - 1}" if bad_rank else "")
                )

    def to_sharding_plan(self) -> ShardingPlan:
        """The TorchRec plan: shard placements `rank:r/cpu` or `rank:r/cuda:(r % local_world_size)`."""

        def placement(rank: int) -> str:
            if self.compute_device == "cpu":
                return f"rank:{rank}/cpu"
            return f"rank:{rank}/{self.compute_device}:{rank % self.local_world_size}"

        plan: dict[str, EmbeddingModuleShardingPlan] = {}
        for t in self.tables:
            spec = None
            if t.sharding_type != "data_parallel":
                spec = EnumerableShardingSpec(
                    [
                        ShardMetadata(
                            shard_offsets=s.offsets,
                            shard_sizes=s.sizes,
                            placement=placement(s.rank),
                        )
                        for s in t.shards
                    ]
                )
            module_plan = plan.setdefault(t.module, EmbeddingModuleShardingPlan())
            module_plan[t.name] = ParameterSharding(
                sharding_type=t.sharding_type,
                compute_kernel=t.compute_kernel,
                ranks=[s.rank for s in t.shards],
                sharding_spec=spec,
                cache_params=None
                if t.cache_load_factor is None
                else CacheParams(load_factor=t.cache_load_factor),
            )
        return ShardingPlan(plan)  # type: ignore[arg-type]
