"""The plan as printed tables: per table, per rank, rejected shardings, totals; and two plans
side by side (what moved, memory deltas)."""

from __future__ import annotations

from collections import defaultdict

from recsys_kdef.plan.summary import PlanSummary, RankInfo, TableInfo


def size(n: float) -> str:
    """Bytes as B / KB / MB / GB (powers of 1024)."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned others."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    fmt = [f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths)]
    lines = ["  ".join(f.format(x) for f, x in zip(fmt, r, strict=True)) for r in [headers, *rows]]
    return "\n".join(lines)


def _ranks(ranks: list[int]) -> str:
    ranks = sorted(set(ranks))
    if len(ranks) > 2 and ranks == list(range(ranks[0], ranks[-1] + 1)):
        return f"{ranks[0]}-{ranks[-1]}"
    return ",".join(map(str, ranks))


def _shard_shapes(t: TableInfo) -> str:
    shapes = defaultdict(int)
    for s in t.shards:
        shapes[f"{s.sizes[0]}x{s.sizes[1]}"] += 1
    return " ".join(f"{n}*{shape}" if n > 1 else shape for shape, n in shapes.items())


def _memory(hbm: int, ddr: int) -> str:
    return (
        size(hbm)
        if ddr == 0
        else (size(ddr) + " DDR" if hbm == 0 else f"{size(hbm)}+{size(ddr)} DDR")
    )


def _imbalance(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return max(values) / mean if mean > 0 else 1.0


def header(s: PlanSummary) -> str:
    cap = s.ranks[0]
    mem = f"{size(cap.hbm_cap)} HBM" if s.compute_device != "cpu" else f"{size(cap.ddr_cap)} DRAM"
    return (
        f"Sharding plan: {s.world_size} ranks ({s.world_size // s.local_world_size} x "
        f"{s.local_world_size}), {s.device}, {mem} per rank; batch {s.batch_size} per rank; "
        f"{len(s.tables)} tables; planned in {s.planner.get('seconds', 0):.2f} s "
        f"({s.planner.get('proposals', 0)} proposals)"
    )


def tables_section(s: PlanSummary) -> str:
    rows = [
        [
            t.name if t.module == s.tables[0].module else t.key,
            f"{t.rows:,}",
            str(t.dim),
            f"{t.pooling_factor:.2f}",
            t.sharding_type,
            t.compute_kernel,
            _ranks(t.ranks),
            _shard_shapes(t),
            _memory(t.shards[0].hbm_bytes, t.shards[0].ddr_bytes),
            f"{t.cost_ms:.3f}",
        ]
        for t in s.tables
    ]
    headers = ["table", "rows", "dim", "pool", "sharding", "kernel", "ranks", "shards (rows x dim)"]
    return table([*headers, "memory/shard", "cost ms"], rows)


def ranks_section(s: PlanSummary) -> str:
    gpu = s.compute_device != "cpu"

    def row(r: RankInfo) -> list[str]:
        main = [size(r.hbm_used), size(r.hbm_reserved), size(r.hbm_cap), size(r.hbm_free)]
        ddr = [size(r.ddr_used), size(r.ddr_cap)]
        if not gpu:
            main = [size(r.ddr_used), size(r.ddr_reserved), size(r.ddr_cap), size(r.ddr_free)]
            ddr = []
        return [str(r.rank), str(r.num_shards), *main, *ddr, f"{r.cost_ms:.3f}"]

    mem = "HBM" if gpu else "DRAM"
    headers = ["rank", "shards", f"{mem} tables", "reserved", "capacity", "headroom"]
    headers += ["DDR tables", "DDR cap"] if gpu else []
    text = table([*headers, "cost ms"], collapse_ranks([row(r) for r in s.ranks]))
    used = [r.hbm_used if gpu else r.ddr_used for r in s.ranks]
    costs = [r.cost_ms for r in s.ranks]
    return (
        text + f"\nimbalance (max / mean over ranks): cost {_imbalance(costs):.2f}, "
        f"{mem} {_imbalance([float(u) for u in used]):.2f}"
    )


def collapse_ranks(rows: list[list[str]]) -> list[list[str]]:
    """Runs of consecutive ranks whose rows are equal but for the rank (column 0) become one
    row labelled '0-15' (a 2x8 plan of data-parallel tables prints one row, not 16)."""
    out: list[list[str]] = []
    runs: list[list[int]] = []
    for row in rows:
        if out and out[-1][1:] == row[1:]:
            runs[-1].append(int(row[0]))
            out[-1][0] = f"{runs[-1][0]}-{runs[-1][-1]}"
        else:
            out.append(list(row))
            runs.append([int(row[0])])
    return out


def rejected_section(s: PlanSummary) -> str:
    groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for r in s.rejected:
        groups[(r.sharding_type, r.compute_kernel, r.reason)].append(r.table.split("/")[-1])
    rows = []
    for (kind, kernel, reason), names in groups.items():
        shown = ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")
        rows.append([f"{kind}/{kernel}", str(len(names)), reason, shown])
    if not rows:
        return "none"
    return table(["sharding/kernel", "tables", "reason", "which"], rows)


def totals_section(s: PlanSummary) -> str:
    gpu = s.compute_device != "cpu"
    used = sum(r.hbm_used if gpu else r.ddr_used for r in s.ranks)
    cap = sum(r.hbm_cap if gpu else r.ddr_cap for r in s.ranks)
    ddr = sum(r.ddr_used for r in s.ranks) if gpu else 0
    kinds = defaultdict(int)
    for t in s.tables:
        kinds[t.sharding_type] += 1
    return (
        f"tables: {len(s.tables)} ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}); "
        f"embedding memory {size(used)} of {size(cap)} {'HBM' if gpu else 'DRAM'}"
        + (f" + {size(ddr)} DDR" if ddr else "")
        + f"; estimated step cost: {max(r.cost_ms for r in s.ranks):.3f} ms on the slowest rank"
    )


def format_summary(s: PlanSummary) -> str:
    """Everything the tool prints for one plan."""
    parts = [
        header(s),
        tables_section(s),
        "Per rank",
        ranks_section(s),
        "Shardings the planner could not use",
        rejected_section(s),
        "Totals: " + totals_section(s),
    ]
    return "\n\n".join(parts)


def _placement(t: TableInfo | None) -> str:
    if t is None:
        return "-"
    ranks = "all" if t.sharding_type == "data_parallel" else _ranks(t.ranks)
    return f"{t.sharding_type} @ {ranks}"


def moves(a: PlanSummary, b: PlanSummary) -> list[tuple[str, str, str]]:
    """(table, placement in a, placement in b) for every table whose sharding or ranks differ
    (a data_parallel table on every rank of either world has not moved)."""
    placed_a = {t.key: t for t in a.tables}
    placed_b = {t.key: t for t in b.tables}
    keys = list(placed_a) + [k for k in placed_b if k not in placed_a]
    pairs = [(k, _placement(placed_a.get(k)), _placement(placed_b.get(k))) for k in keys]
    return [(k, x, y) for k, x, y in pairs if x != y]


def format_compare(a: PlanSummary, b: PlanSummary, label_a: str, label_b: str) -> str:
    """Two plans side by side: moved tables, per-rank memory and cost, totals."""
    gpu = a.compute_device != "cpu"
    moved = moves(a, b)
    rows = [
        [k.split("/")[-1] if k.startswith(a.tables[0].module) else k, x, y] for k, x, y in moved
    ]
    moved_text = table(["table", label_a, label_b], rows) if rows else "no table moved"
    rank_rows = []
    for r in range(max(a.world_size, b.world_size)):
        ra = a.ranks[r] if r < a.world_size else None
        rb = b.ranks[r] if r < b.world_size else None

        def used(x: RankInfo | None) -> int:
            return 0 if x is None else (x.hbm_used if gpu else x.ddr_used)

        rank_rows.append(
            [
                str(r),
                "-" if ra is None else size(used(ra)),
                "-" if rb is None else size(used(rb)),
                size(used(rb) - used(ra)),
                "-" if ra is None else f"{ra.cost_ms:.3f}",
                "-" if rb is None else f"{rb.cost_ms:.3f}",
            ]
        )
    mem = "HBM" if gpu else "DRAM"
    headers = [
        "rank",
        f"{mem} {label_a}",
        f"{mem} {label_b}",
        "delta",
        f"ms {label_a}",
        f"ms {label_b}",
    ]
    return "\n\n".join(
        [
            f"Compare: {label_a} ({a.world_size} ranks, {len(a.tables)} tables) vs "
            f"{label_b} ({b.world_size} ranks, {len(b.tables)} tables)",
            f"Moved or resharded tables: {len(moved)}",
            moved_text,
            "Per rank",
            table(headers, rank_rows),
            f"Totals: {label_a}: {totals_section(a)}\n        {label_b}: {totals_section(b)}",
        ]
    )
