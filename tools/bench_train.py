"""Training throughput (samples/s) of K-student ensembles on a Criteo-shaped synthetic batch.

Runs the training loop's own steps (Trainer.train_steps: DMP-sharded EmbeddingBagCollection
with fused rowwise Adagrad, K batched towers, KDEF loss, Adam on the towers), with the plain
loop and with TorchRec's TrainPipelineSparseDist (train.pipeline), in one process, on CPU
and, if present, on the GPU. A step's time is the interval between two steps' losses
coming back (the median is reported), beside the process CPU time of that interval (what a
busy machine inflates least). Batches are made in memory, so reading is not measured. Prints
a table (ms/step, samples/s, step(K)/step(K=min), CPU ms/step and its ratio, the step's
counted matmul and attention GFLOP and their ratio, and a FLOP/byte roofline bound) and writes
JSON; arguments it does not know are config overrides.

    python tools/bench_train.py                       # K in {1,4,10} x {per_model, shared}
    python tools/bench_train.py --students 4 --batch-size 10000 --steps 20 --out bench/gpu.json
    python tools/bench_train.py --pipeline off --train.embedding_backward_threads null
    python tools/bench_train.py --mixes all --modes per_model --pipeline off   # mixed ensembles
    python tools/bench_train.py --compile both --modes per_model --pipeline off  # torch.compile

Mixed ensembles (`--mixes`, model.students) are timed beside the identical-MLP ensembles: 4 MLPs
+ 2 DCNv2 (the MLPs one batched group), the same 4 MLPs as 4 one-student groups (what
batching saves), and the KDEF authors' PNN + FINAL + ECN; and single students of the zoo
(`--students 1 --mixes zoo`, or some of them by name) beside one MLP.

Sequence students (`--seq-len L`): the schema gains a target item field and its behaviour
sequence of the last L item ids (every row a full history, so L positions are looked up), and
`--students 1 --mixes seq` times one DIN, DIEN and InterFormer student beside one MLP of the
same widths (the MLP reads the history as one mean-pooled field):

    python tools/bench_train.py --students 1 --modes per_model --pipeline off --seq-len 100 --mixes seq
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from machine import cpu_model, cpuinfo  # noqa: E402  (tools/, beside this file)
from naive_reference import NaiveEnsemble, NaiveStep  # noqa: E402  (tools/, beside this file)

from recsys_kdef.builders.job import checkpoint_meta
from recsys_kdef.builders.model import build_train_module
from recsys_kdef.config import load_config
from recsys_kdef.data.batch import Batch
from recsys_kdef.data.columns import Columns
from recsys_kdef.data.schema import Schema, SparseField
from recsys_kdef.distributed.library_warnings import quiet_library_warnings
from recsys_kdef.distributed.optimizers import build_optimizer
from recsys_kdef.distributed.process import DistContext, destroy_distributed, init_distributed
from recsys_kdef.distributed.sharding import shard_model
from recsys_kdef.training.step_counts import OpCounter, OpCounts, flop_counter, ids_looked_up
from recsys_kdef.training.trainer import Trainer

# Vocabulary sizes of Criteo_x4 as FuxiCTR encodes it (13 bucketised integer fields, 26 categorical)
CRITEO_VOCAB = [44, 99, 122, 41, 220, 112, 80, 69, 92, 6, 27, 37, 72] + [
    1446,
    554,
    157339,
    117822,
    306,
    18,
    11882,
    630,
    5,
    39530,
    5131,
    156656,
    3176,
    28,
    11043,
    148913,
    12,
    4560,
    2003,
    5,
    154564,
    18,
    17,
    53031,
    82,
    40955,
]


# the target item of the sequence benchmark: AmazonElectronics_x1's item vocabulary (63,001)
ITEM_VOCAB = 63001


def criteo_schema(vocab_scale: float, seq_len: int = 0) -> Schema:
    """Criteo_x4's 39 fields; with seq_len > 0 also a target `item` and its behaviour sequence
    `item_history` (its last seq_len ids, in the item's table, mean-pooled for students that do
    not read sequences)."""
    fields = [
        SparseField(f"f{i}", max(2, int(v * vocab_scale))) for i, v in enumerate(CRITEO_VOCAB)
    ]
    if seq_len:
        items = max(2, int(ITEM_VOCAB * vocab_scale))
        fields += [
            SparseField("item", items),
            SparseField("item_history", items, True, "mean", sequence_of="item", max_len=seq_len),
        ]
    return Schema(sparse=tuple(fields), dense=(), label="label")


def make_batches(
    schema: Schema, batch_size: int, count: int, seed: int = 0, pin: bool = False
) -> list[Batch]:
    """`count` random batches, ids Zipf-like (a = 1.1) per field, a sequence full (max_len ids
    per row), decoded as the reader decodes a row group; in pinned memory if `pin` (as the
    reader gives them on CUDA), so host-to-device copies are asynchronous."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        columns = {}
        for f in schema.sparse:
            size = batch_size * (f.max_len if f.sequence_of else 1)
            ids = pa.array(np.minimum(rng.zipf(1.1, size) - 1, f.vocab_size - 1))
            if f.sequence_of:
                offsets = pa.array(np.arange(0, size + 1, f.max_len, dtype=np.int32))
                ids = pa.ListArray.from_arrays(offsets, ids)
            columns[f.name] = ids
        columns[schema.label] = pa.array((rng.random(batch_size) < 0.25).astype(np.float32))
        cols = Columns.from_arrow(pa.table(columns), schema, "benchmark batch")
        batch = cols.to_batch(schema.feature_names)
        batches.append(batch.pin_memory() if pin else batch)
    return batches


def mlp(hidden: list[int], count: int = 1) -> str:
    return f"{{arch: mlp, count: {count}, params: {{hidden_units: {hidden}}}}}"


def mixes(hidden: list[int]) -> dict[str, str]:
    """Named heterogeneous ensembles (model.students YAML), towers of `hidden` widths."""
    return {
        "4 mlp + 2 dcnv2": f"[{mlp(hidden, 4)}, {{arch: dcnv2, count: 2, params: "
        f"{{parallel_dnn_hidden_units: {hidden}}}}}]",
        "4 mlp, 4 groups": "[" + ", ".join([mlp(hidden)] * 4) + "]",
        "pnn + final + ecn": f"[{{arch: pnn, params: {{hidden_units: {hidden}}}}}, "
        f"{{arch: final, params: {{block_type: 1B, block1_hidden_units: {hidden}}}}}, "
        "{arch: ecn, params: {num_cross_layers: 4}}]",
    }


def zoo_students(hidden: list[int]) -> dict[str, str]:
    """One student of each FuxiCTR-derived architecture, FuxiCTR's defaults with MLPs of
    `hidden` widths: each one's step time beside the 1-MLP row."""
    one = {
        "wukong": f"{{mlp_hidden_units: {hidden}}}",
        "masknet": f"{{dnn_hidden_units: {hidden}}}",
        "masknet parallel": f"{{model_type: ParallelMaskNet, dnn_hidden_units: {hidden}}}",
        "edcn": "{}",
        "gdcn": f"{{dnn_hidden_units: {hidden}}}",
        "gdcnp": f"{{dnn_hidden_units: {hidden}}}",
        "afn": f"{{afn_hidden_units: {hidden}, dnn_hidden_units: {hidden}}}",
        "eulernet": "{shape: [20], layer_norm: true}",
    }
    return {name: f"[{{arch: {name.split()[0]}, params: {p}}}]" for name, p in one.items()}


def sequence_students(hidden: list[int]) -> dict[str, str]:
    """One student of each sequence architecture (FuxiCTR's defaults, DNNs of `hidden` widths;
    InterFormer its own defaults, and with one layer): each one's step time beside the 1-MLP
    row (`--seq-len`)."""
    one = {
        "din": f"{{dnn_hidden_units: {hidden}}}",
        "dien": f"{{dnn_hidden_units: {hidden}}}",
        "dien aux": f"{{dnn_hidden_units: {hidden}, aux_loss_alpha: 0.2}}",
        "interformer": f"{{dnn_hidden_units: {hidden}}}",
        "interformer 1 layer": f"{{dnn_hidden_units: {hidden}, num_layers: 1}}",
    }
    return {name: f"[{{arch: {name.split()[0]}, params: {p}}}]" for name, p in one.items()}


def bench_one(
    ctx: DistContext,
    schema: Schema,
    k: int,
    mode: str,
    pipeline: bool,
    compiled: bool,
    args,
    mix: str | None,
    layout: str = "auto",
) -> dict:
    named = {**mixes(args.hidden), **zoo_students(args.hidden), **sequence_students(args.hidden)}
    students = ["--model.students", named[mix]] if mix else []
    cfg = load_config(
        [
            "--model.num_students",
            str(k),
            *students,
            "--model.embedding_mode",
            mode,
            "--model.table_layout",
            layout,
            "--model.embedding_dim",
            "16",
            "--model.tower.hidden_units",
            str(args.hidden),
            "--objective.name",
            "kdef",
            "--train.sparse_optimizer",
            "rowwise_adagrad",
            "--data.batch_size",
            str(args.batch_size),
            "--train.pipeline",
            str(pipeline).lower(),
            "--train.compile",
            str(compiled).lower(),
            *args.overrides,
        ]
    )
    torch.manual_seed(0)
    module, _ = build_train_module(cfg, schema)  # as train.py builds it (train.compile too)
    batches = make_batches(schema, args.batch_size, 4, pin=ctx.device.type == "cuda")
    ids = ids_looked_up(module, batches[0].sparse)  # before sharding: the tables as configured
    dmp, plan = shard_model(module, ctx, cfg.planner, cfg.train, args.batch_size)
    # the training loop's own steps: plain or pipelined, thread settings, non-finite watch
    trainer = Trainer(
        dmp, build_optimizer(dmp, plan, cfg.train), ctx, cfg.train, checkpoint_meta(cfg, schema)
    )
    warmup = max(args.warmup, 1)  # the first step's time is not an interval
    total = warmup + args.steps
    stream = (batches[i % len(batches)] for i in range(total))
    losses = (stepped.components["loss"] for stepped in trainer.train_steps(stream))
    times, cpu_times, counts, flops, faults = time_steps(losses, total, warmup, ctx.device)
    trainer.nonfinite.check()
    trainer.runner.detach()
    ms = 1000 * float(np.median(times))
    params = sum(p.numel() for p in dmp.parameters() if p.device.type != "meta")
    return {
        "device": ctx.device.type,
        "students": cfg.model.num_students,
        "ensemble": mix or f"{cfg.model.num_students} mlp",
        "embedding_mode": mode,
        "table_layout": cfg.model.table_layout if mode == "per_model" else "shared",
        "pipeline": pipeline,
        "compile": compiled,
        "batch_size": args.batch_size,
        "tables": len(plan_tables(plan)),
        "ms_per_step": ms,
        "samples_per_sec": args.batch_size / (ms / 1000),
        "steps": args.steps,
        "step_ms": [1000 * float(t) for t in times],
        "cpu_ms_per_step": 1000 * float(np.median(cpu_times)),
        # pages the kernel had to map in (and zero) per step: large blocks malloc gave back
        "page_faults_per_step": faults / args.steps,
        "local_parameters": params,
        # device-independent counts of one step (forward, backward, optimizer)
        "ids_per_step": ids,
        # matmul and attention FLOPs of one step (forward and backward): its own arithmetic
        "gflop_per_step": flops / 1e9,
        "ops_per_step": counts.total,
        "kernels_per_step": counts.kernels,
        "bytes_written_nonmatmul": counts.bytes_written_nonmatmul,
        "host_syncs_per_step": counts.host_syncs,
        "top_ops": dict(counts.ops.most_common(12)),
    }


def time_steps(
    losses: Iterator[torch.Tensor], total: int, warmup: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray, OpCounts, int, int]:
    """Run `total` steps (each yields its loss): the wall-clock and the process CPU times of
    those after `warmup`, the op counts and FLOPs of the last warm-up step, and the page faults
    over the timed steps. On a shared CPU the CPU time is what other jobs inflate least."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    done, cpu, faults = [], [], []  # times at which each step's result came back, faults by then
    counts, flops = OpCounts(), 0
    for i in range(total):
        # the last warm-up step is counted (op by op, so it is slower), outside the timed ones
        counted = i == warmup - 1
        counting = OpCounter(device) if counted else contextlib.nullcontext()
        flopping = flop_counter() if counted else contextlib.nullcontext()
        with counting as counter, flopping as f:
            loss = next(losses)
        if counted:
            counts, flops = counter.counts, f.get_total_flops()
        float(loss)  # what a log line reads; waits for the step
        sync()
        done.append(time.perf_counter())
        cpu.append(time.process_time())
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
    next(losses, None)  # the generator's end
    times = np.diff(done)[warmup - 1 :]  # step s took done[s] - done[s - 1]
    cpu_times = np.diff(cpu)[warmup - 1 :]
    return times, cpu_times, counts, flops, faults[-1] - faults[warmup - 1]


def bench_naive(ctx: DistContext, schema: Schema, k: int, args) -> dict:
    """The reference row: the KDEF authors' computation (tools/naive_reference.py)."""
    torch.manual_seed(0)
    model = NaiveEnsemble(schema, k, 16, args.hidden)
    step = NaiveStep(model, ctx.device)
    batches = make_batches(schema, args.batch_size, 4, pin=ctx.device.type == "cuda")
    warmup = max(args.warmup, 1)
    total = warmup + args.steps
    losses = (step(batches[i % len(batches)]) for i in range(total))
    times, cpu_times, counts, flops, faults = time_steps(losses, total, warmup, ctx.device)
    ms = 1000 * float(np.median(times))
    return {
        "device": ctx.device.type,
        "students": k,
        "ensemble": f"{k} naive",
        "embedding_mode": "shared",
        "table_layout": "naive",
        "pipeline": False,
        "compile": False,
        "batch_size": args.batch_size,
        "tables": len(schema.sparse),
        "ms_per_step": ms,
        "samples_per_sec": args.batch_size / (ms / 1000),
        "steps": args.steps,
        "step_ms": [1000 * float(t) for t in times],
        "cpu_ms_per_step": 1000 * float(np.median(cpu_times)),
        "page_faults_per_step": faults / args.steps,
        "local_parameters": sum(p.numel() for p in model.parameters()),
        "ids_per_step": int(batches[0].sparse.values().numel()),
        # matmul and attention FLOPs of one step (forward and backward): its own arithmetic
        "gflop_per_step": flops / 1e9,
        "ops_per_step": counts.total,
        "kernels_per_step": counts.kernels,
        "bytes_written_nonmatmul": counts.bytes_written_nonmatmul,
        "host_syncs_per_step": counts.host_syncs,
        "top_ops": dict(counts.ops.most_common(12)),
    }


CHOICES = {"off": [False], "on": [True], "both": [False, True]}


def setting(r: dict) -> tuple:
    """A row's loop setting: rows of one setting are compared across K."""
    return r["embedding_mode"], r.get("table_layout", ""), r["pipeline"], r["compile"]


def cpu_peak_flops() -> float:
    """fp32 peak of the cores torch uses: 2 FMA units x (16 lanes with AVX-512, else 8) x 2
    flops x ~3 GHz each (an assumption: the clock is not read)."""
    lanes = 16 if " avx512f" in cpuinfo() else 8
    return torch.get_num_threads() * 2 * lanes * 2 * 3e9


# assumed peaks (FLOP/s, bytes/s): the CPU's fp32 FMA peak and a DDR share; H100 SXM: dense
# TF32 tensor cores and HBM3
PEAKS = {"cpu": (cpu_peak_flops(), 20e9), "cuda": (495e12, 3.35e12)}


def roofline(r: dict, fields: int, lookups: int, dense: int, dim: int, hidden: list[int]) -> dict:
    """Lower-bound step time from towers' FLOPs (fwd + bwd = 3x fwd) over `fields` pooled
    fields and embedding bytes of `lookups` ids per row (fp32 rows read forward, read + written
    by the fused row-wise optimizer: 3x)."""
    b, k = r["batch_size"], r["students"]
    widths = [fields * dim + dense, *hidden, 1]
    flops = 3 * 2 * b * k * sum(i * o for i, o in zip(widths, widths[1:]))
    reads = k if r["embedding_mode"] == "per_model" else 1
    nbytes = 3 * reads * b * lookups * dim * 4
    peak_flops, peak_bw = PEAKS[r["device"]]
    bound_ms = 1000 * max(flops / peak_flops, nbytes / peak_bw)
    return {"gflops": flops / 1e9, "embedding_mb": nbytes / 1e6, "roofline_ms": bound_ms}


def fit_scaling(results: list[dict]) -> list[dict]:
    """Least-squares step(K) = fixed + K x per_student over the identical-MLP rows of each
    (embedding mode, pipeline, compile) with two K or more. step(Kmax)/step(Kmin) <= R needs
    fixed >= per_student x (Kmax - R Kmin) / (R - 1): 0.8x for K = 10 against 1 and R = 6."""
    fits = []
    mlps = sorted((r for r in results if r["ensemble"].endswith(" mlp")), key=setting)
    for key, rows in itertools.groupby(mlps, key=setting):
        rows = list(rows)
        if len({r["students"] for r in rows}) < 2:
            continue
        per_student, fixed = np.polyfit(
            [r["students"] for r in rows], [r["ms_per_step"] for r in rows], 1
        )
        fits.append(
            dict(
                zip(("embedding_mode", "table_layout", "pipeline", "compile"), key),
                fixed_ms=float(fixed),
                per_student_ms=float(per_student),
                fixed_over_per_student=float(fixed / per_student),
            )
        )
    return fits


def plan_tables(plan) -> list[str]:
    return [t for module_plan in plan.plan.values() for t in module_plan]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument(
        "--modes", nargs="+", default=["per_model", "shared"], choices=["per_model", "shared"]
    )
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--hidden", type=int, nargs="+", default=[400, 400, 400])
    parser.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (at least 1)")
    parser.add_argument(
        "--vocab-scale", type=float, default=1.0, help="shrink Criteo's vocabularies"
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu"],
        default="auto",
        help="auto: the GPU if there is one; cpu: hide GPUs",
    )
    parser.add_argument(
        "--pipeline",
        choices=["off", "on", "both"],
        default="both",
        help="train.pipeline: the plain loop, TorchRec's TrainPipelineSparseDist, or both",
    )
    parser.add_argument(
        "--compile",
        choices=["off", "on", "both"],
        default="off",
        help="train.compile: eager towers and objective, torch.compile'd ones, or both",
    )
    parser.add_argument(
        "--mixes",
        nargs="*",
        default=[],
        help="ensembles to time too: names of mixes(), zoo_students() or sequence_students(), "
        "'all' (the mixes), 'zoo' (one student of each of zoo_students()) or 'seq' (of "
        "sequence_students(); needs --seq-len)",
    )
    parser.add_argument(
        "--seq-len",
        type=int,
        default=0,
        help="add a target item and its behaviour sequence of this many ids to the schema",
    )
    parser.add_argument(
        "--layouts",
        nargs="+",
        default=["auto"],
        choices=["auto", "separate", "stacked"],
        help="model.table_layout of the per_model rows (auto: from the sparse optimizer)",
    )
    parser.add_argument(
        "--naive",
        action="store_true",
        help="also time the KDEF authors' computation (shared nn.Embedding, students in a "
        "Python loop, dense Adam) at each K, in the same run",
    )
    parser.add_argument("--out", default="bench/bench_train.json")
    args, args.overrides = parser.parse_known_args()  # the rest: config overrides
    if args.naive and args.seq_len:
        parser.error("--naive times the KDEF authors' MLPs, which read no sequence; drop --seq-len")
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before anything asks torch.cuda
    args.hidden = list(args.hidden)

    quiet_library_warnings()
    ctx = init_distributed()  # one process: cuda if present, else cpu
    if ctx.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    schema = criteo_schema(args.vocab_scale, args.seq_len)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    print(f"{cpu_model()}, {cores} cores, load average {load:.2f}", flush=True)
    if load > cores:  # other jobs' threads share the cores (at load 5-8 on 2 cores the K=1
        # rows ran 3-8x slower than on an idle machine, and the K ratios looked 2-3x better)
        print("warning: the machine is busy; CPU timings (and their K ratios) are unreliable")
    results = []
    try:
        settings = [
            (m, lay) for m in args.modes for lay in (args.layouts if m == "per_model" else ["auto"])
        ]
        for mode, layout in settings:
            for pipeline, compiled in itertools.product(
                CHOICES[args.pipeline], CHOICES[args.compile]
            ):
                sets = {
                    "all": list(mixes(args.hidden)),
                    "zoo": list(zoo_students(args.hidden)),
                    "seq": list(sequence_students(args.hidden)),
                }
                names = sets.get(" ".join(args.mixes), args.mixes)
                for k, mix in [*((k, None) for k in args.students), *((0, m) for m in names)]:
                    r = bench_one(ctx, schema, k, mode, pipeline, compiled, args, mix, layout)
                    results.append(r)
                    print(
                        f"{r['device']:>5} {r['ensemble']:<18} {mode:<10} {r['table_layout']:<9} pipeline={pipeline!s:<5} "
                        f"compile={compiled!s:<5} {r['ms_per_step']:9.1f} ms/step "
                        f"{r['samples_per_sec']:12,.0f} samples/s",
                        flush=True,
                    )
        for k in args.students if args.naive else []:
            r = bench_naive(ctx, schema, k, args)
            results.append(r)
            print(
                f"{r['device']:>5} {r['ensemble']:<18} {r['ms_per_step']:9.1f} ms/step", flush=True
            )
    finally:
        destroy_distributed()

    for r in results:
        base = [q for q in results if setting(q) == setting(r)]
        first = min(base, key=lambda q: q["students"])
        r["step_over_k1"] = r["ms_per_step"] / first["ms_per_step"]
        r["cpu_over_k1"] = r["cpu_ms_per_step"] / first["cpu_ms_per_step"]
        r["gflop_over_k1"] = r["gflop_per_step"] / (first["gflop_per_step"] or float("nan"))
        if r["ensemble"].endswith(" mlp"):  # the roofline counts MLP towers' FLOPs
            fields, lookups = len(schema.sparse), len(schema.feature_names)
            r.update(roofline(r, fields, lookups, len(schema.dense), 16, args.hidden))
        else:
            r.update(gflops=float("nan"), embedding_mb=float("nan"), roofline_ms=float("nan"))
    header = (
        f"{'device':<7}{'ensemble':<21}{'K':>3}  {'embeddings':<11}{'layout':<9}{'pipeline':<9}{'compile':<8}{'tables':>7}"
        f"{'batch':>7}"
        f"{'ms/step':>10}"
        f"{'samples/s':>13}{'x K=min':>9}{'cpu ms':>9}{'x':>6}{'faults':>8}{'GFLOP/step':>11}{'x':>6}{'tower GFLOP':>12}{'emb MB':>8}{'roofline ms':>13}"
        f"{'ids/step':>10}{'ops/step':>9}{'MB written':>11}{'syncs':>6}"
    )
    print("\n" + header)
    for r in results:
        print(
            f"{r['device']:<7}{r['ensemble']:<21}{r['students']:>3}  {r['embedding_mode']:<11}{r['table_layout']:<9}"
            f"{'on' if r['pipeline'] else 'off':<9}{'on' if r['compile'] else 'off':<8}{r['tables']:>7}{r['batch_size']:>7}"
            f"{r['ms_per_step']:>10.1f}{r['samples_per_sec']:>13,.0f}{r['step_over_k1']:>9.2f}"
            f"{r['cpu_ms_per_step']:>9.1f}{r['cpu_over_k1']:>6.2f}"
            f"{r['page_faults_per_step']:>8.0f}"
            f"{r['gflop_per_step']:>11.1f}{r['gflop_over_k1']:>6.2f}"
            f"{r['gflops']:>12.1f}{r['embedding_mb']:>8.1f}{r['roofline_ms']:>13.1f}"
            f"{r['ids_per_step']:>10,}{r['ops_per_step']:>9}{r['bytes_written_nonmatmul'] / 1e6:>11.1f}"
            f"{r['host_syncs_per_step']:>6}"
        )
    print(f"roofline: assumed peaks (FLOP/s, bytes/s) {PEAKS[results[0]['device']]}")
    scaling = fit_scaling(results)
    for s in scaling:
        print(
            f"scaling {s['embedding_mode']} {s['table_layout']} pipeline={s['pipeline']} compile={s['compile']}: "
            f"step = {s['fixed_ms']:.0f} ms + K x {s['per_student_ms']:.0f} ms "
            f"(the part that does not grow with K is {s['fixed_over_per_student']:.2f}x a student's)"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "hidden_units": args.hidden,
        "vocab_scale": args.vocab_scale,
        "fields": len(schema.sparse),
        "seq_len": args.seq_len,
        "load_average": os.getloadavg(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "overrides": args.overrides,
    }
    report = {"meta": meta, "results": results, "scaling": scaling}
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
