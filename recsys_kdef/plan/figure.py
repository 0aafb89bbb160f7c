"""The plan's per-rank figure: embedding memory (against capacity) and estimated step cost."""

from __future__ import annotations

from pathlib import Path

from recsys_kdef.figures import save_figure, subplots, ticks_at
from recsys_kdef.plan.summary import PlanSummary


def rank_series(s: PlanSummary) -> dict[str, list[float]]:
    """Per rank, in GB and ms: embedding memory used, capacity, estimated step cost (HBM on
    GPU, DRAM on CPU)."""
    gpu = s.compute_device != "cpu"
    return {
        "used_gb": [(r.hbm_used if gpu else r.ddr_used) / 2**30 for r in s.ranks],
        "reserved_gb": [(r.hbm_reserved if gpu else r.ddr_reserved) / 2**30 for r in s.ranks],
        "cap_gb": [(r.hbm_cap if gpu else r.ddr_cap) / 2**30 for r in s.ranks],
        "cost_ms": [r.cost_ms for r in s.ranks],
    }


def plot_ranks(s: PlanSummary, path: str | Path) -> Path:
    """Two panels over the ranks: memory (the planner's reservation for dense parameters and
    activations, the embedding shards on top, capacity dotted) and estimated cost."""
    series = rank_series(s)
    ranks = [r.rank for r in s.ranks]
    mem = "HBM" if s.compute_device != "cpu" else "DRAM"
    fig, (left, right) = subplots(max(8.0, 0.4 * len(ranks)), 3.5, ncols=2)
    left.bar(ranks, series["reserved_gb"], color="tab:gray", label="reserved (dense, activations)")
    left.bar(
        ranks,
        series["used_gb"],
        bottom=series["reserved_gb"],
        color="tab:blue",
        label="embedding tables",
    )
    left.plot(ranks, series["cap_gb"], "k:", marker="_", label="capacity")
    left.set(xlabel="rank", ylabel=f"{mem} GB", title=f"{mem} per rank ({s.device})")
    right.bar(ranks, series["cost_ms"], color="tab:orange")
    right.set(xlabel="rank", ylabel="ms", title=f"estimated step cost, batch {s.batch_size}")
    step = -(-len(ranks) // 8)  # at most 8 labels a panel: 16 ranks' labels would overlap
    for ax in (left, right):
        ticks_at(ax.xaxis, ranks[::step])
    return save_figure(fig, (left, right), Path(path))
