"""The ensemble scaling study: a grid of (objective, K, seed) training runs, then the KDEF
paper's pictures of it (Fig. 2/4/8): ensemble AUC vs K per objective, best and worst student
vs K, the gap between ensemble and worst student, and training cost vs K.

    python -m recsys_kdef.analysis.study --config configs/demo.yaml --students 1,2,4,6,8,10 \
        --objectives mean,kdef,cetnet --seeds 3 --out runs/study [--nproc 2] [--section.key v ...]

Each run is `recsys_kdef/train.py` in its own process (or a TorchX job with `--nproc`), with
its output in `<out>/runs/<objective>-K<k>-seed<s>/`. A run that finished before is skipped,
so an interrupted study resumes where it stopped. `<out>/study.json` holds every run and the
aggregates; `<out>/*.png` the figures.

With a heterogeneous config (`model.students`, e.g. configs/kdef_latest.yaml's PNN + FINAL +
ECN), K counts all students and must be a multiple of the mix's size: K = 6 runs every group
with twice its count (`--students 3,6,9` for that mix).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from recsys_kdef.config import load_config
from recsys_kdef.figures import mean_std_text, plural, save_figure, subplots, ticks_at
from recsys_kdef.io import atomic_path

TRAIN_SCRIPT = Path(__file__).parents[1] / "train.py"
# per objective: the overrides that select it, and the head that is "the ensemble"
OBJECTIVES = {
    "mean": (["--objective.name", "mean"], "ensemble"),
    "kdef": (["--objective.name", "kdef"], "ensemble"),
    "cetnet": (
        [
            "--objective.name",
            "cetnet",
            "--model.fusion.name",
            "confidence",
            "--train.monitor",
            "fused",
        ],
        "fused",
    ),
}
MIN_STUDENTS = {"cetnet": 2}  # fusion and symmetric KL need two models


@dataclass(frozen=True)
class RunSpec:
    objective: str
    students: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.objective}-K{self.students}-seed{self.seed}"


@dataclass
class RunResult:
    """What the figures need from one finished run (test split)."""

    objective: str
    students: int
    seed: int
    ensemble_auc: float
    best_student_auc: float
    worst_student_auc: float
    student_aucs: list[float]
    ensemble_logloss: float
    wall_seconds: float
    samples_per_sec: float

    @property
    def gap(self) -> float:
        """Ensemble AUC minus the worst student's: how far students trail their ensemble."""
        return self.ensemble_auc - self.worst_student_auc


def grid(students: list[int], objectives: list[str], seeds: int, base_seed: int) -> list[RunSpec]:
    return [
        RunSpec(o, k, base_seed + s)
        for o in objectives
        for k in students
        if k >= MIN_STUDENTS.get(o, 1)
        for s in range(seeds)
    ]


def student_mix(config: str, overrides: list[str]) -> list[dict] | None:
    """The config's heterogeneous groups (model.students) as plain dicts; None for the
    shorthand of K identical MLP students."""
    students = load_config(["--config", config, *overrides]).model.students
    return None if students is None else [asdict(group) for group in students]


def scaled_mix(mix: list[dict], k: int) -> list[dict]:
    """The mix with K students in all: every group's count times K / (the mix's size)."""
    size = sum(group["count"] for group in mix)
    if k % size:
        archs = " + ".join(f"{g['count']} {g['arch']}" for g in mix)
        raise ValueError(
            f"K = {k} is not a multiple of the {size} students of model.students ({archs}); "
            f"use --students {size},{2 * size},{3 * size}, ..."
        )
    return [{**group, "count": group["count"] * (k // size)} for group in mix]


def students_override(k: int, mix: list[dict] | None) -> list[str]:
    """The overrides that make a run's ensemble K students."""
    if mix is None:
        return ["--model.num_students", str(k)]
    return ["--model.students", yaml.safe_dump(scaled_mix(mix, k), default_flow_style=True)]


def run_one(
    spec: RunSpec,
    config: str,
    out: Path,
    nproc: int,
    overrides: list[str],
    mix: list[dict] | None = None,
) -> RunResult:
    """Train one grid point (or read it back if it finished before)."""
    run_dir = out / "runs" / spec.name
    done = run_dir / "run.json"
    if done.is_file():
        return RunResult(**json.loads(done.read_text()))
    args = [*OBJECTIVES[spec.objective][0], "--train.seed", str(spec.seed), *overrides]
    args += students_override(spec.students, mix)  # last: it scales an overridden mix too
    report, wall = train_in_subprocess(config, run_dir, args, nproc)
    result = summarize(spec, report, wall)
    with atomic_path(done) as tmp:
        tmp.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def train_in_subprocess(
    config: str, run_dir: Path, overrides: list[str], nproc: int = 1
) -> tuple[dict, float]:
    """Run recsys_kdef/train.py (a TorchX job of `nproc` ranks if > 1) with its output in
    `run_dir`; returns its metrics.json report and the wall-clock seconds."""
    args = ["--config", config, *overrides]
    args += ["--train.output_dir", str(run_dir), "--train.progress_bar", "false"]
    if nproc > 1:
        cmd = ["torchx", "run", "-s", "local_cwd", "dist.ddp", "-j", f"1x{nproc}"]
        cmd += ["--script", str(TRAIN_SCRIPT), "--", *args]
    else:
        cmd = [sys.executable, str(TRAIN_SCRIPT), *args]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"run {run_dir.name} failed:\n{' '.join(cmd)}\n{proc.stderr[-4000:]}")
    return json.loads((run_dir / "metrics.json").read_text()), wall


def summarize(spec: RunSpec, report: dict, wall: float) -> RunResult:
    test = report["test"]
    students = [test[f"student_{k}"]["auc"] for k in range(spec.students)]
    head = OBJECTIVES[spec.objective][1]
    rates = [h["samples_per_sec"] for h in report["history"] if h.get("samples_per_sec")]
    return RunResult(
        objective=spec.objective,
        students=spec.students,
        seed=spec.seed,
        ensemble_auc=test[head]["auc"],
        best_student_auc=max(students),
        worst_student_auc=min(students),
        student_aucs=students,
        ensemble_logloss=test[head]["logloss"],
        wall_seconds=wall,
        samples_per_sec=float(np.mean(rates)) if rates else float("nan"),
    )


def aggregate(results: list[RunResult]) -> list[dict]:
    """Mean and standard deviation over seeds, per (objective, K)."""
    rows = []
    keys = sorted({(r.objective, r.students) for r in results})
    for objective, k in keys:
        runs = [r for r in results if (r.objective, r.students) == (objective, k)]
        row = {"objective": objective, "students": k, "seeds": len(runs)}
        for metric in ("ensemble_auc", "best_student_auc", "worst_student_auc", "gap",
                       "wall_seconds", "samples_per_sec"):  # fmt: skip
            values = np.array([getattr(r, metric) for r in runs])
            row[metric] = float(values.mean())
            row[f"{metric}_std"] = float(values.std())
        rows.append(row)
    return rows


def plot(rows: list[dict], out: Path, context: str = "") -> list[Path]:
    """The study's figures, one PNG each; ticks at the K values run, `context` (dataset,
    epochs, seeds) under each title. One seed draws no error bar (it has no spread)."""
    objectives = sorted({r["objective"] for r in rows})
    ks = sorted({r["students"] for r in rows})

    def series(objective: str, metric: str):
        pts = [r for r in rows if r["objective"] == objective]
        spread = [r[f"{metric}_std"] if r["seeds"] > 1 else 0.0 for r in pts]
        return [r["students"] for r in pts], [r[metric] for r in pts], spread

    def finish(fig, ax, ylabel: str, title: str, name: str) -> Path:
        ticks_at(ax.xaxis, ks)
        ax.set(
            xlabel="students K", ylabel=ylabel, title=f"{title}\n{context}" if context else title
        )
        return save_figure(fig, ax, out / name)

    paths = []
    fig, ax = subplots()
    for o in objectives:
        ax.errorbar(*series(o, "ensemble_auc"), marker="o", capsize=3, label=o)
    paths.append(
        finish(fig, ax, "test AUC of the ensemble", "Ensemble AUC vs K", "ensemble_auc_vs_k.png")
    )

    fig, ax = subplots()
    for i, o in enumerate(objectives):
        color = f"C{i}"
        ax.errorbar(*series(o, "best_student_auc"), color=color, marker="^", capsize=3,
                    label=f"{o}: best")  # fmt: skip
        ax.errorbar(*series(o, "worst_student_auc"), color=color, marker="v", capsize=3, ls="--",
                    label=f"{o}: worst")  # fmt: skip
    paths.append(
        finish(fig, ax, "test AUC", "Best and worst student vs K", "students_auc_vs_k.png")
    )

    fig, ax = subplots()
    for o in objectives:
        ax.errorbar(*series(o, "gap"), marker="o", capsize=3, label=o)
    paths.append(finish(fig, ax, "ensemble AUC - worst student AUC",
                        "How far students trail the ensemble", "gap_vs_k.png"))  # fmt: skip

    fig, ax = subplots()
    for o in objectives:
        ax.errorbar(*series(o, "samples_per_sec"), marker="o", capsize=3, label=o)
    paths.append(finish(fig, ax, "training samples / s", "Training cost vs K", "cost_vs_k.png"))
    return paths


def study_context(config: str, overrides: list[str], seeds: int) -> str:
    """'<dataset>, <epochs> epochs, <seeds> seeds': what every figure of the study is about."""
    cfg = load_config(["--config", config, *overrides])
    return (
        f"{Path(cfg.data.path).name}, {plural(cfg.train.epochs, 'epoch')}, {plural(seeds, 'seed')}"
    )


def format_summary(rows: list[dict]) -> str:
    """One line per (objective, K): ensemble AUC as mean ± std over seeds (n=1: no std)."""
    head = f"{'objective':<10}{'K':>4}{'ensemble (over seeds)':>28}{'best':>10}{'worst':>10}{'gap':>9}{'samples/s':>12}"
    lines = [head]
    for r in rows:
        ensemble = mean_std_text(r["ensemble_auc"], r["ensemble_auc_std"], r["seeds"])
        lines.append(
            f"{r['objective']:<10}{r['students']:>4}{ensemble:>28}"
            f"{r['best_student_auc']:>10.5f}{r['worst_student_auc']:>10.5f}{r['gap']:>9.5f}"
            f"{r['samples_per_sec']:>12,.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="the experiment YAML every run starts from")
    parser.add_argument("--students", default="1,2,4,6,8,10", help="values of K")
    parser.add_argument("--objectives", default="mean,kdef", help=f"of {', '.join(OBJECTIVES)}")
    parser.add_argument("--seeds", type=int, default=3, help="runs per grid point")
    parser.add_argument("--base-seed", type=int, default=2024)
    parser.add_argument(
        "--nproc", type=int, default=1, help=">1: each run a TorchX job of N processes"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/study"))
    args, overrides = parser.parse_known_args(argv)
    try:
        students = [int(k) for k in args.students.split(",")]
    except ValueError:
        sys.exit(f"error: --students {args.students}: expected numbers like 1,2,4")
    objectives = args.objectives.split(",")
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or min(students) < 1 or args.seeds < 1:
        sys.exit(
            f"error: objectives must be of {', '.join(OBJECTIVES)} (got {unknown or objectives}), "
            "K >= 1 and --seeds >= 1"
        )
    try:
        mix = student_mix(args.config, overrides)
        for k in students if mix is not None else []:
            scaled_mix(mix, k)  # every K fits the mix, before any run starts
    except ValueError as e:  # a config error, or a K the mix does not divide
        sys.exit(f"error: {args.config}: {e}")
    specs = grid(students, objectives, args.seeds, args.base_seed)
    results = []
    for spec in tqdm(specs, desc="study", unit="run"):
        try:
            results.append(run_one(spec, args.config, args.out, args.nproc, overrides, mix))
        except RuntimeError as e:
            sys.exit(f"error: {e}")
    rows = aggregate(results)
    figures = plot(rows, args.out, study_context(args.config, overrides, args.seeds))
    report = {"config": args.config, "overrides": overrides, "runs": [asdict(r) for r in results],
              "aggregate": rows, "figures": [p.name for p in figures]}  # fmt: skip
    with atomic_path(args.out / "study.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    print(format_summary(rows))
    print(f"study: {args.out / 'study.json'}, figures: {', '.join(p.name for p in figures)}")


if __name__ == "__main__":
    main()
