"""The embedding optimizer and L2 settings side by side: each named variant trained on the same
data, embedding modes and seeds; test AUC / logloss of the ensemble and the students, the
students' spread, and training samples/s. Prints a Markdown table and writes JSON.

    python tools/optimizer_sweep.py --config configs/fuxictr_parity.yaml --out runs/sweep \
        --variants default,batch_rows,decoupled,parity --modes shared,per_model \
        --seeds 2024,2025,2026 [--section.key value ...]

Each run is recsys_kdef/train.py in its own process (recsys_kdef.analysis.study's runner), in
`<out>/runs/<variant>-<mode>-seed<s>/`; a run that finished before is read back, so an
interrupted sweep resumes. Variants are named below; extra `--section.key value` arguments
apply to every run (e.g. `--data.path data/ml100k`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from recsys_kdef.analysis.study import train_in_subprocess
from recsys_kdef.io import atomic_path

ADAGRAD = ["--train.sparse_optimizer", "rowwise_adagrad", "--train.sparse_lr", "0.05"]
ADAM = ["--train.sparse_optimizer", "adam", "--train.sparse_lr", "0.001"]
PARITY = [*ADAM, "--train.embedding_l2", "0.01", "--train.embedding_l2_mode", "whole_table"]

# name: (what it is, the overrides that select it)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "default": ("rowwise Adagrad 0.05, no L2", [*ADAGRAD, "--train.embedding_l2", "0"]),
    "batch_rows": (
        "rowwise Adagrad 0.05, L2 0.01 batch_rows",
        [*ADAGRAD, "--train.embedding_l2", "0.01", "--train.embedding_l2_mode", "batch_rows"],
    ),
    "decoupled": (
        "rowwise Adagrad 0.05, decay 0.01 decoupled",
        [*ADAGRAD, "--train.embedding_l2", "0.01", "--train.embedding_l2_mode", "decoupled"],
    ),
    "adagrad": (
        "exact Adagrad 0.05, no L2",
        ["--train.sparse_optimizer", "adagrad", "--train.sparse_lr", "0.05"],
    ),
    "sgd": ("SGD 1.0, no L2", ["--train.sparse_optimizer", "sgd", "--train.sparse_lr", "1.0"]),
    "adam": ("Adam 1e-3, no L2", [*ADAM, "--train.embedding_l2", "0"]),
    "parity": ("Adam 1e-3, L2 0.01 whole_table (FuxiCTR)", PARITY),
    "parity_auc_logloss": (
        "parity, monitor AUC - logloss (FuxiCTR)",
        [*PARITY, "--train.monitor_metric", "auc_minus_logloss"],
    ),
    "default_auc_logloss": (
        "rowwise Adagrad 0.05, no L2, monitor AUC - logloss",
        [*ADAGRAD, "--train.embedding_l2", "0", "--train.monitor_metric", "auc_minus_logloss"],
    ),
    "parity_l2x3": (
        "Adam 1e-3, L2 0.03 whole_table",
        [*PARITY, "--train.embedding_l2", "0.03"],
    ),
    "parity_l2x10": (
        "Adam 1e-3, L2 0.1 whole_table",
        [*PARITY, "--train.embedding_l2", "0.1"],
    ),
    "parity_l2x10_auc_logloss": (
        "Adam 1e-3, L2 0.1 whole_table, monitor AUC - logloss",
        [*PARITY, "--train.embedding_l2", "0.1", "--train.monitor_metric", "auc_minus_logloss"],
    ),
    "parity_dim8": ("parity, embedding dim 8", [*PARITY, "--model.embedding_dim", "8"]),
    "parity_table_lr": ("parity, table lr 3e-4", [*PARITY, "--train.sparse_lr", "0.0003"]),
    "parity_dropout": ("parity, tower dropout 0.3", [*PARITY, "--model.tower.dropout", "0.3"]),
}


@dataclass
class SweepResult:
    variant: str
    mode: str
    seed: int
    ensemble_auc: float
    ensemble_logloss: float
    student_auc: tuple[float, float]
    """(worst, best) student test AUC."""
    student_logloss: tuple[float, float]
    """(best, worst) student test logloss."""
    samples_per_sec: float
    steps: int
    wall_seconds: float = float("nan")
    """Wall-clock seconds of the whole run (training, validations, test)."""


def summarize(variant: str, mode: str, seed: int, report: dict, wall: float) -> SweepResult:
    test = report["test"]
    students = [m for head, m in test.items() if head.startswith("student_")]
    aucs = [m["auc"] for m in students]
    losses = [m["logloss"] for m in students]
    rates = [h["samples_per_sec"] for h in report["history"] if h.get("samples_per_sec")]
    return SweepResult(
        variant=variant,
        mode=mode,
        seed=seed,
        ensemble_auc=test["ensemble"]["auc"],
        ensemble_logloss=test["ensemble"]["logloss"],
        student_auc=(min(aucs), max(aucs)),
        student_logloss=(min(losses), max(losses)),
        samples_per_sec=float(np.mean(rates)) if rates else float("nan"),
        steps=report["steps"],
        wall_seconds=wall,
    )


def run_point(
    variant: str, mode: str, seed: int, config: str, out: Path, overrides: list[str]
) -> SweepResult:
    """Train one (variant, mode, seed), or read it back if it finished before."""
    run_dir = out / "runs" / f"{variant}-{mode}-seed{seed}"
    done = run_dir / "run.json"
    if done.is_file():
        saved = json.loads(done.read_text())
        return SweepResult(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    args = [*overrides, *VARIANTS[variant][1], "--model.embedding_mode", mode]
    report, wall = train_in_subprocess(config, run_dir, [*args, "--train.seed", str(seed)])
    result = summarize(variant, mode, seed, report, wall)
    with atomic_path(done) as tmp:
        tmp.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def format_summary(results: list[SweepResult]) -> list[str]:
    """One Markdown row per (mode, variant) over its seeds: the ensemble's mean test AUC (with
    the range over seeds) and mean logloss, the students' AUC and logloss ranges over every seed,
    the mean gap between the best student's logloss and the ensemble's, and mean samples/s."""
    lines = [
        "| embeddings | setting | seeds | ensemble AUC | ensemble logloss | students AUC "
        "| students logloss | best-student logloss gap | samples/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, str], list[SweepResult]] = {}
    for r in results:
        groups.setdefault((r.mode, r.variant), []).append(r)
    for (mode, variant), rs in groups.items():
        aucs = [r.ensemble_auc for r in rs]
        auc = f"{np.mean(aucs):.4f}" + (
            f" ({min(aucs):.4f}-{max(aucs):.4f})" if len(rs) > 1 else ""
        )
        loss = np.mean([r.ensemble_logloss for r in rs])
        s_auc = (min(r.student_auc[0] for r in rs), max(r.student_auc[1] for r in rs))
        s_loss = (min(r.student_logloss[0] for r in rs), max(r.student_logloss[1] for r in rs))
        gap = np.mean([r.student_logloss[0] - r.ensemble_logloss for r in rs])
        rate = np.mean([r.samples_per_sec for r in rs])
        seeds = ", ".join(str(r.seed) for r in rs)
        lines.append(
            f"| {mode} | {VARIANTS[variant][0]} | {seeds} | {auc} | {loss:.4f} "
            f"| {s_auc[0]:.4f}-{s_auc[1]:.4f} | {s_loss[0]:.4f}-{s_loss[1]:.4f} | {gap:+.4f} "
            f"| {rate:,.0f} |"
        )
    return lines


def format_table(results: list[SweepResult]) -> str:
    """One Markdown row per run, then one per (mode, variant) over its seeds (format_summary)."""
    lines = [
        "| embeddings | variant | seed | ensemble AUC | ensemble logloss | students AUC "
        "| students logloss | logloss gap | samples/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        gap = r.student_logloss[0] - r.ensemble_logloss
        lines.append(
            f"| {r.mode} | {VARIANTS[r.variant][0]} | {r.seed} | {r.ensemble_auc:.4f} "
            f"| {r.ensemble_logloss:.4f} | {r.student_auc[0]:.4f}-{r.student_auc[1]:.4f} "
            f"| {r.student_logloss[0]:.4f}-{r.student_logloss[1]:.4f} | {gap:+.4f} "
            f"| {r.samples_per_sec:,.0f} |"
        )
    lines += ["", *format_summary(results)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default="default,batch_rows,decoupled,parity")
    parser.add_argument("--modes", default="shared,per_model")
    parser.add_argument("--seeds", default="2024")
    args, overrides = parser.parse_known_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    results = [
        run_point(variant, mode, int(seed), args.config, args.out, overrides)
        for mode in args.modes.split(",")
        for variant in variants
        for seed in args.seeds.split(",")
    ]
    table = format_table(results)
    print(table)
    with atomic_path(args.out / "sweep.json") as tmp:
        tmp.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


if __name__ == "__main__":
    main()
