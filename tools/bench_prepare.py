"""Throughput and peak memory of `recsys_kdef.data.prepare` on KDD12-shaped raw files, and of
the training reader (Parquet -> KeyedJaggedTensor batches) on the result.

Each size runs in a fresh process, so its peak RSS is its own: once with vocabularies (their
token counts grow with the distinct ids) and once with every field hashed (`--max-vocab`, no
counts), which shows the memory of the streaming itself. Prints a table, writes JSON.

    python tools/bench_prepare.py                      # 1M, 3M and 10M rows
    python tools/bench_prepare.py --rows 1000000 --work /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

KDD12_ROWS = 149_639_105  # lines of the released training.txt (KDD12_x10 keeps 141,371,038)


def measure(rows: int, work: Path, batch_size: int, hashed: bool) -> dict:
    """In this (fresh) process: fake raw -> prepare -> read every training batch once."""
    from recsys_kdef.data import ParquetBatchReader
    from recsys_kdef.data.prepare import FORMATS, PrepareOptions, RawFile, prepare
    from recsys_kdef.data.prepare.__main__ import build_parser
    from recsys_kdef.data.prepare.fake import make_fake
    from recsys_kdef.data.reader import list_split_files

    raw_dir, out = work / f"raw-{rows}", work / f"kdd12-{rows}{'-hashed' if hashed else ''}"
    if not (raw_dir / "training.txt").is_file():
        make_fake("kdd12", raw_dir, rows, seed=0)
    raw = raw_dir / "training.txt"
    shutil.rmtree(out, ignore_errors=True)
    args = build_parser().parse_args(["kdd12", "--raw", str(raw), "--out", str(out)])
    opts = PrepareOptions(progress=False, max_vocab={"*": 1 << 20} if hashed else {})
    result = prepare(FORMATS["kdd12"](args), [RawFile(raw)], out, opts)
    rss_prepare = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB

    reader = ParquetBatchReader(
        list_split_files(out, "train"), result.schema, batch_size, shuffle_buffer=65536, seed=0
    )
    start = time.perf_counter()
    samples = sum(len(batch) for batch in reader)
    read_s = time.perf_counter() - start
    card = result.schema.extra["card"]["fields"].values()
    return {
        "rows": rows,
        "mode": "hashed" if hashed else "vocab",
        "distinct_train_tokens": sum(f.get("distinct_train_tokens", 0) for f in card),
        "raw_bytes": raw.stat().st_size,
        "pass1_s": result.seconds["pass1"],
        "pass2_s": result.seconds["pass2"],
        "pass1_rows_per_s": rows / result.seconds["pass1"],
        "pass2_rows_per_s": rows / result.seconds["pass2"],
        "peak_rss_gib_prepare": rss_prepare,
        "vocab_total": sum(f.vocab_size for f in result.schema.sparse),
        "reader_samples_per_s": samples / read_s,
        "reader_batch_size": batch_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--work", type=Path, default=Path("bench/prepare"))
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=Path("bench/bench_prepare.json"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one measurement
    parser.add_argument("--hashed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.work, args.batch_size, args.hashed)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for rows in args.rows:
        for hashed in (False, True):
            cmd = [sys.executable, __file__, "--one", str(rows), "--work", str(args.work)]
            cmd += ["--batch-size", str(args.batch_size)] + (["--hashed"] if hashed else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(
        "| raw rows | raw MB | ids | distinct train ids | pass 1 rows/s | pass 2 rows/s | "
        "peak RSS (GiB) | reader samples/s | est. KDD12 (149.6M lines) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        estimate = KDD12_ROWS / r["pass1_rows_per_s"] + KDD12_ROWS / r["pass2_rows_per_s"]
        r["kdd12_estimate_min"] = estimate / 60
        print(
            f"| {r['rows']:,} | {r['raw_bytes'] / 2**20:,.0f} | {r['mode']} | "
            f"{r['distinct_train_tokens']:,} | {r['pass1_rows_per_s']:,.0f} | "
            f"{r['pass2_rows_per_s']:,.0f} | {r['peak_rss_gib_prepare']:.2f} | "
            f"{r['reader_samples_per_s']:,.0f} | {estimate / 60:.0f} min |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
