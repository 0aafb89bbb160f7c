"""Time to plan a 2x8 H100 job for K-student ensembles over KDD12-sized tables, offline on CPU.

Runs exactly what `python -m recsys_kdef.plan` runs (training module on meta, fused sparse
optimizer attached, TorchRec's planner, the summary with rejected shardings), for K in
{4, 10} x {per_model, shared}. Prints a table and the per-rank summaries, writes JSON, and
writes bench/kdd12/schema.json so the tool itself can be pointed at the same tables:

    python tools/bench_plan.py [--world 2x8] [--device h100] [--repeats 3] [--out bench/bench_plan.json]
    python -m recsys_kdef.plan --data bench/kdd12 --world 2x8 --device h100 --model.num_students 10

Vocabularies: KDD12_x10 has 13 fields and 4,668,096 features in all (docs/papers.md §7); the split
over fields is not published with it, so KDD12_VOCAB below is an assumption (the id fields
large, the bucketised numeric ones tiny) that sums to that total.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from recsys_kdef.config import load_config
from recsys_kdef.data.schema import Schema, SparseField
from recsys_kdef.distributed.library_warnings import quiet_library_warnings
from recsys_kdef.plan.__main__ import DEVICES, plan_schema
from recsys_kdef.plan.text import format_summary, ranks_section, totals_section

# Assumed split of KDD12_x10's 4,668,096 features (min count 10) over its 13 fields
KDD12_VOCAB = {
    "UserID": 1_800_000,
    "QueryID": 1_200_000,
    "TitleID": 600_000,
    "DescriptionID": 500_000,
    "KeywordID": 300_000,
    "AdID": 200_000,
    "DisplayURL": 40_000,
    "AdvertiserID": 28_057,
    "Impression": 20,  # bucketised numeric
    "Depth": 4,  # bucketised numeric
    "Position": 4,  # bucketised numeric
    "Gender": 4,
    "Age": 7,
}
assert sum(KDD12_VOCAB.values()) == 4_668_096


def kdd12_schema() -> Schema:
    return Schema(sparse=tuple(SparseField(name, vocab) for name, vocab in KDD12_VOCAB.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", default="2x8")
    p.add_argument("--device", default="h100", choices=list(DEVICES))
    p.add_argument("--students", type=int, nargs="+", default=[4, 10])
    p.add_argument("--batch-size", type=int, default=4096, help="per rank")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/bench_plan.json")
    p.add_argument("--show", action="store_true", help="print every full plan, not only per rank")
    args = p.parse_args()
    quiet_library_warnings()
    torch.set_num_threads(1)
    schema = kdd12_schema()
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())  # the machine is shared
    schema.save(_schema_dir(args.out))
    _, cap, bw = DEVICES[args.device]
    results = []
    for k in args.students:
        for mode in ("per_model", "shared"):
            overrides = ["--model.num_students", str(k), "--model.embedding_mode", mode]
            overrides += ["--data.batch_size", str(args.batch_size)]
            overrides += ["--planner.hbm_cap_gb", str(cap)] if cap else []
            overrides += ["--planner.hbm_bw_gbps", str(bw)] if bw else []
            cfg = load_config(overrides)
            times, cpu_times = [], []
            for _ in range(args.repeats):
                start, cpu_start = time.perf_counter(), time.process_time()
                summary = plan_schema(cfg, schema, {}, args.world, args.device)
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
            print(f"\n== K={k} {mode}: {len(summary.tables)} tables ==")
            print(format_summary(summary) if args.show else ranks_section(summary))
            print("Totals: " + totals_section(summary))
            kinds: dict[str, int] = {}
            for t in summary.tables:
                kinds[t.sharding_type] = kinds.get(t.sharding_type, 0) + 1
            results.append(
                {
                    "students": k,
                    "embedding_mode": mode,
                    "tables": len(summary.tables),
                    "seconds_median": statistics.median(times),
                    "seconds": times,
                    "cpu_seconds_median": statistics.median(cpu_times),
                    "planner_seconds": summary.planner["seconds"],
                    "proposals": summary.planner["proposals"],
                    "sharding_types": kinds,
                    "hbm_used_max_gb": max(r.hbm_used for r in summary.ranks) / 2**30,
                    "cost_ms_max": max(r.cost_ms for r in summary.ranks),
                }
            )
    print(f"\nPlanning {args.world} {args.device} (median of {args.repeats}, this machine)")
    print(f"load average before: {load_before}")
    print(
        "| K | embeddings | tables | seconds | CPU s | planner s (last) | proposals | sharding types "
        "| max HBM / rank | est. ms / step |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(r["sharding_types"].items()))
        print(
            f"| {r['students']} | {r['embedding_mode']} | {r['tables']} | {r['seconds_median']:.2f} "
            f"| {r['cpu_seconds_median']:.2f} | {r['planner_seconds']:.2f} | {r['proposals']} "
            f"| {kinds} | {r['hbm_used_max_gb']:.3f} GB | {r['cost_ms_max']:.3f} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"world": args.world, "device": args.device, "batch_size": args.batch_size}
    meta |= {"load_average_before": load_before}
    meta |= {"vocab": KDD12_VOCAB, "host": platform.node(), "torch": torch.__version__}
    out.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


def _schema_dir(out: str) -> Path:
    path = Path(out).parent / "kdd12"
    path.mkdir(parents=True, exist_ok=True)
    return path


if __name__ == "__main__":
    main()
