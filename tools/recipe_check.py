"""A recipe checked across random re-splits and seeds: mean, std and worst of every head.

    python tools/recipe_check.py configs/movielens100k.yaml --splits 3 --seeds 3 \
        [--data data/ml100k] [--out runs/recipe_check/movielens100k] [--first-split 0] \
        [--jobs 1] [--section.key value ...]

The prepared dataset (`--data`, default the config's data.path) is pooled (train + valid +
test) and cut again R times at random with the same row counts per split (split seeds F..F+R-1,
F = `--first-split`, so that a recipe chosen on 0..2 can be confirmed on 10..12), each written
once under `<out>/splits/split-<seed>/`. Every config is trained with S seeds on each
(`--seeds 3`: the config's train.seed and the next two; or a list `2024,2025`), each run
recsys_kdef/train.py in its own process in `<out>/runs/split-<seed>-seed-<s>/` (`--jobs N`: N at
a time, each with cores / N threads); a run that finished before is read back, so an
interrupted check resumes. Prints a Markdown table (each head's test
AUC and logloss: mean, std, min / max over the R x S runs, and the worst student's gap to the
ensemble) and writes `<out>/recipe_check.json` with every run and the machine.

A recipe "holds" when no run collapses (every run's ensemble AUC within `--tolerance` of the
mean) and its worst student stays close to the ensemble; the table says both. The pooled
dataset is held in memory: this tool is for datasets of up to a few million rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from machine import machine  # tools/, beside this file

from recsys_kdef.analysis.study import train_in_subprocess
from recsys_kdef.config import load_config
from recsys_kdef.data.reader import list_split_files
from recsys_kdef.io import atomic_path

SPLITS = ("train", "valid", "test")


def read_split(root: Path, split: str) -> pa.Table:
    """Every row of one split of a prepared dataset, in file order."""
    files = list_split_files(root, split)
    return pa.concat_tables([pq.read_table(f) for f in files])


def resplit(dataset: Path, out: Path, split_seed: int) -> dict[str, int]:
    """Write `dataset`'s rows, pooled and shuffled with `split_seed`, as train / valid / test of
    the original sizes under `out` (schema.json and vocab/ copied); returns the row counts.

    A finished re-split (its schema.json present) is kept; a failed one leaves nothing."""
    if (out / "schema.json").is_file():
        return json.loads((out / "schema.json").read_text())["extra"]["rows"]
    tables = {s: read_split(dataset, s) for s in SPLITS}
    sizes = {s: t.num_rows for s, t in tables.items()}
    pooled = pa.concat_tables(list(tables.values()))
    order = np.random.default_rng(split_seed).permutation(pooled.num_rows)
    first = pq.ParquetFile(list_split_files(dataset, "train")[0])
    row_group = max(1, first.metadata.row_group(0).num_rows)
    schema = json.loads((dataset / "schema.json").read_text())
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_splits(pooled.take(order), sizes, schema, row_group, tmp)
        if (dataset / "vocab").is_dir():
            shutil.copytree(dataset / "vocab", tmp / "vocab")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    schema.setdefault("extra", {})["resplit"] = {"from": str(dataset), "split_seed": split_seed}
    (tmp / "schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return sizes


def _write_splits(
    rows: pa.Table, sizes: dict[str, int], schema: dict, row_group: int, out: Path
) -> None:
    """Consecutive slices of `rows` as the splits of `sizes`; their rows and CTR into `schema`."""
    start, ctr = 0, {}
    for split in SPLITS:
        part = rows.slice(start, sizes[split])
        start += sizes[split]
        (out / split).mkdir(parents=True)
        pq.write_table(part, out / split / "part-00000.parquet", row_group_size=row_group)
        ctr[split] = round(float(np.mean(part.column(schema["label"]).to_numpy())), 6)
    schema.setdefault("extra", {}).update(rows=sizes, ctr=ctr)


@dataclass
class RunMetrics:
    split: int
    """The split seed."""
    seed: int
    test: dict[str, dict[str, float]]
    """head -> {"auc", "logloss"} on the re-split's test rows."""
    stopped_at_epoch: int
    best_epoch: int


def run_metrics(split: int, seed: int, report: dict) -> RunMetrics:
    """The test AUC / logloss of every head, and where the run stopped, from a metrics.json."""
    heads = {h: {"auc": m["auc"], "logloss": m["logloss"]} for h, m in report["test"].items()}
    history = report.get("history") or [{}]
    best = report.get("best_validation") or {}
    return RunMetrics(split, seed, heads, history[-1].get("epoch", -1), best.get("epoch", -1))


def summarize(runs: list[RunMetrics]) -> dict[str, dict[str, float]]:
    """Per head: mean, std, min and max of test AUC and logloss over the runs; plus
    `worst_student_gap` (per run: the worst student's AUC minus the ensemble's, and the worst
    student's logloss minus the ensemble's)."""
    heads = [h for h in runs[0].test if h != "best_student"]
    summary: dict[str, dict[str, float]] = {}
    for head in heads:
        entry: dict[str, float] = {}
        for metric in ("auc", "logloss"):
            values = np.array([r.test[head][metric] for r in runs])
            entry |= {
                f"{metric}_mean": float(values.mean()),
                f"{metric}_std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                f"{metric}_min": float(values.min()),
                f"{metric}_max": float(values.max()),
            }
        summary[head] = entry
    students = [h for h in heads if h.startswith("student_")]
    if students and "ensemble" in heads:
        gaps = np.array(
            [min(r.test[s]["auc"] for s in students) - r.test["ensemble"]["auc"] for r in runs]
        )
        loss_gaps = np.array(
            [
                max(r.test[s]["logloss"] for s in students) - r.test["ensemble"]["logloss"]
                for r in runs
            ]
        )
        summary["worst_student_gap"] = {
            "auc_mean": float(gaps.mean()),
            "auc_min": float(gaps.min()),
            "auc_max": float(gaps.max()),
            "logloss_mean": float(loss_gaps.mean()),
            "logloss_max": float(loss_gaps.max()),
        }
    return summary


def collapsed(runs: list[RunMetrics], tolerance: float, by_split: bool = False) -> list[RunMetrics]:
    """Runs whose ensemble test AUC is more than `tolerance` below the mean over all runs, or
    (`by_split`) over the runs of their own split: a seed that failed, apart from how hard
    the split's test rows are (on 7k test rows the AUC of one model moves by ~0.5 pt from
    split to split)."""

    def mean_of(run: RunMetrics) -> float:
        peers = [r for r in runs if r.split == run.split] if by_split else runs
        return float(np.mean([r.test["ensemble"]["auc"] for r in peers]))

    return [r for r in runs if r.test["ensemble"]["auc"] < mean_of(r) - tolerance]


def format_table(summary: dict[str, dict[str, float]], n: int) -> str:
    """Markdown: one row per head; AUC and logloss mean ± std and the worst over n runs."""
    spread = "± std " if n > 1 else ""
    lines = [
        f"| head | AUC mean {spread}| AUC min | logloss mean {spread}| logloss max |",
        "| --- | --- | --- | --- | --- |",
    ]
    for head, m in summary.items():
        if head == "worst_student_gap":
            continue
        auc_std, loss_std = (
            (f" ± {m['auc_std']:.4f}", f" ± {m['logloss_std']:.4f}") if n > 1 else ("", "")
        )
        lines.append(
            f"| {head} | {m['auc_mean']:.4f}{auc_std} | {m['auc_min']:.4f} "
            f"| {m['logloss_mean']:.4f}{loss_std} | {m['logloss_max']:.4f} |"
        )
    if "worst_student_gap" in summary:
        g = summary["worst_student_gap"]
        lines.append(
            f"\nworst student - ensemble AUC: mean {g['auc_mean']:+.4f}, "
            f"worst {g['auc_min']:+.4f}; logloss: mean {g['logloss_mean']:+.4f}, "
            f"worst {g['logloss_max']:+.4f} (over {n} runs)"
        )
    return "\n".join(lines)


def parse_seeds(text: str, first: int) -> list[int]:
    """`3` -> [first, first + 1, first + 2]; `2024,2026` -> [2024, 2026]."""
    if "," not in text and text.isdigit() and int(text) < 100:
        return [first + i for i in range(int(text))]
    return [int(s) for s in text.split(",")]


def run_one(args, overrides: list[str], split: int, seed: int, split_dir: Path) -> RunMetrics:
    """One seed on one re-split: read back if it finished before, else trained in a subprocess."""
    run_dir = args.out / "runs" / f"split-{split}-seed-{seed}"
    done = run_dir / "metrics.json"
    if done.is_file() and json.loads(done.read_text()).get("test"):
        report = json.loads(done.read_text())
    else:
        extra = ["--data.path", str(split_dir), "--train.seed", str(seed)]
        report, _ = train_in_subprocess(args.config, run_dir, [*overrides, *extra])
    metrics = run_metrics(split, seed, report)
    print(f"split {split} seed {seed}: ensemble {metrics.test['ensemble']['auc']:.4f}", flush=True)
    return metrics


def threads_per_job(jobs: int) -> None:
    """With several runs at a time, each gets cores / jobs intra-op threads (unless
    OMP_NUM_THREADS is set), so that they do not oversubscribe the cores."""
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, int(machine()["cores"]) // jobs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="the recipe (a YAML config)")
    parser.add_argument("--splits", type=int, default=3, help="random re-splits (R)")
    parser.add_argument("--first-split", type=int, default=0, help="split seeds F..F+R-1")
    parser.add_argument("--seeds", default="3", help="seeds per split: a count or a list")
    parser.add_argument("--data", type=Path, default=None, help="default: the config's data.path")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at a time")
    parser.add_argument(
        "--tolerance", type=float, default=0.005, help="a run this far below the mean collapsed"
    )
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(["--config", args.config, *overrides])
    data = args.data or Path(cfg.data.path)
    args.out = args.out or Path("runs/recipe_check") / Path(args.config).stem
    seeds = parse_seeds(args.seeds, cfg.train.seed)
    split_seeds = range(args.first_split, args.first_split + args.splits)
    work = []
    for r in split_seeds:
        split_dir = args.out / "splits" / f"split-{r}"
        resplit(data, split_dir, split_seed=r)
        work += [(r, seed, split_dir) for seed in seeds]
    threads_per_job(args.jobs)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        runs = list(pool.map(lambda w: run_one(args, overrides, *w), work))
    summary = summarize(runs)
    bad = collapsed(runs, args.tolerance)
    bad_in_split = collapsed(runs, args.tolerance, by_split=True)
    host = machine()
    print(
        f"\n{args.config} on {data}: {args.splits} splits (seeds {list(split_seeds)}) x "
        f"{len(seeds)} seeds; {host['cpu']}, {host['cores']} cores"
    )
    print(format_table(summary, len(runs)))
    for name, which in (("the mean", bad), ("the mean of its split", bad_in_split)):
        print(
            f"collapsed runs (ensemble AUC > {args.tolerance} below {name}): "
            + (", ".join(f"split {b.split} seed {b.seed}" for b in which) or "none")
        )
    with atomic_path(args.out / "recipe_check.json") as tmp:
        record = {
            "config": args.config,
            "data": str(data),
            "overrides": overrides,
            "splits": args.splits,
            "split_seeds": list(split_seeds),
            "seeds": seeds,
            "machine": host,
            "summary": summary,
            "collapsed": [asdict(b) for b in bad],
            "collapsed_within_split": [asdict(b) for b in bad_in_split],
            "runs": [asdict(r) for r in runs],
        }
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {args.out / 'recipe_check.json'}")


if __name__ == "__main__":
    main()
