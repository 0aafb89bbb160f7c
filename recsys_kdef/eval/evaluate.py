"""Evaluation: one pass of every head's AUC / logloss / NE / gAUC / calibration, the mean loss
components and objective weights (exam lambda / mu, fusion weights), reduced over all ranks;
used inside training and by the offline job on a checkpoint (`python -m recsys_kdef.eval`), on
any number of ranks.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn
from tqdm import tqdm

from recsys_kdef.data.reader import ParquetBatchReader
from recsys_kdef.distributed.batch_runner import BatchRunner
from recsys_kdef.distributed.collectives import all_reduce_sum
from recsys_kdef.distributed.process import DistContext
from recsys_kdef.eval.metrics import EvalMetrics
from recsys_kdef.io import atomic_path


def best_student(metrics: dict[str, dict[str, float]]) -> int:
    """Index of the student with the highest AUC in `metrics` (a validation result)."""
    aucs = {int(h.split("_")[1]): m["auc"] for h, m in metrics.items() if h.startswith("student_")}
    return max(aucs, key=aucs.get)


class WeightedMeans:
    """Running weighted means of named tensors (scalars, (K,) or (K, K)), summed over ranks."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.weight = 0.0

    def add(self, values: dict[str, torch.Tensor], weight: float) -> None:
        for name, value in values.items():  # every name is added, even at weight 0, so ranks agree
            v = value.detach().double().cpu() * weight
            self.sums[name] = self.sums[name] + v if name in self.sums else v
        self.weight += weight

    def reduce(self) -> tuple[dict[str, float | list], float]:
        """(means over all ranks, total weight over all ranks); a collective every rank calls."""
        names = sorted(self.sums)
        flat = [self.sums[n].reshape(-1) for n in names] + [
            torch.tensor([self.weight], dtype=torch.float64)
        ]
        total = all_reduce_sum(torch.cat(flat))
        out, offset = {}, 0
        for n in names:
            size = self.sums[n].numel()
            mean = total[offset : offset + size].reshape(self.sums[n].shape) / max(
                float(total[-1]), 1e-12
            )
            out[n] = mean.item() if mean.dim() == 0 else mean.tolist()
            offset += size
        return out, float(total[-1])


@dataclass
class EvalResult:
    metrics: dict[str, dict[str, float]]
    """{head: {auc, logloss, ne, gauc}}"""
    losses: dict[str, float] = field(default_factory=dict)
    """Mean objective components over the evaluated rows (labels as given, no label noise)."""
    weights: dict[str, float | list] = field(default_factory=dict)
    """Mean objective weights over the rows: exam lambda (K,), mu (K, K), fusion (K,), gate (T,)."""
    rows: int = 0
    curves: dict[str, dict] = field(default_factory=dict)
    """{head: {reliability, roc}} when asked for (see EvalMetrics.curves)."""


class PredictionWriter:
    """This rank's predictions as `<directory>/part-<rank>.parquet`: one column per head, the
    label and the group; written in row groups as rows arrive, visible only when complete."""

    ROWS_PER_GROUP = 1 << 16

    def __init__(self, directory: str | Path, rank: int) -> None:
        self.path = Path(directory) / f"part-{rank:05d}.parquet"
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[dict[str, np.ndarray]] = []
        self.rows = 0

    def add(self, heads: list[str], probs: torch.Tensor, labels: torch.Tensor, groups) -> None:
        columns = {h: probs[:, i].float().cpu().numpy() for i, h in enumerate(heads)}
        columns["label"] = labels.float().cpu().numpy()
        if groups is not None:
            columns["group"] = groups.cpu().numpy()
        self._pending.append(columns)
        self.rows += len(labels)
        if sum(len(c["label"]) for c in self._pending) >= self.ROWS_PER_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.table(
            {k: np.concatenate([c[k] for c in self._pending]) for k in self._pending[0]}
        )
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, table.schema)
        self._writer.write_table(table)
        self._pending = []

    def close(self, ok: bool = True) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
        elif ok:  # no rows on this rank: an empty file keeps one part per rank
            pq.write_table(pa.table({"label": pa.array([], pa.float32())}), self._tmp)
        self._atomic.__exit__(*((None, None, None) if ok else sys.exc_info()))


@torch.no_grad()
def evaluate(
    module: nn.Module,
    reader: ParquetBatchReader,
    ctx: DistContext,
    *,
    heads: list[str] | None = None,
    curves: bool = False,
    predictions: PredictionWriter | None = None,
    progress: bool = False,
    spill_dir: str | Path | None = None,
    runner: BatchRunner | None = None,
) -> EvalResult:
    """Run `module` (the sharded train module) over `reader` on every rank; results on every rank.

    The heads are the model output's (`heads()`: students, ensemble, fused, ...) plus any
    prediction the objective adds (ObjectiveOutput.heads), or the subset `heads`. With
    `curves`, the result has reliability bins and ROC points; `predictions` gets every row.
    With `spill_dir`, gAUC's rows wait in temporary files there (removed at the end, also on
    error), so memory does not grow with the split; without, they wait in memory.
    `runner` (the trainer's, pipelined or not) runs the forwards; by default a plain loop.
    """
    module.eval()
    metrics: EvalMetrics | None = None
    losses, weights = WeightedMeans(), WeightedMeans()
    bar = tqdm(
        total=len(reader),
        desc="evaluate",
        unit="batch",
        disable=not (progress and ctx.is_main),
        mininterval=1.0,
        dynamic_ncols=True,
    )
    try:
        runner = runner or BatchRunner(module, None, ctx.device)
        # padding batches run too: lookups are collective
        for batch, (objective, output) in runner.run(reader, _with_batch(module)):
            all_heads = {**output.heads(), **objective.heads}
            if metrics is None:
                unknown = sorted(set(heads or []) - set(all_heads))
                if unknown:
                    raise ValueError(f"unknown heads {unknown}; this model has {list(all_heads)}")
                metrics = EvalMetrics(
                    heads or list(all_heads),
                    rank=ctx.rank,
                    world_size=ctx.world_size,
                    with_gauc=reader.schema.group is not None,
                    curves=curves,
                    spill_dir=spill_dir,
                    expected_rows=sum(g.num_rows for g in reader.row_groups),
                )
            n = 0 if batch.padding else len(batch)
            losses.add(objective.components, n)
            weights.add(objective.weights, n)
            if n:
                logits = torch.stack([all_heads[h] for h in metrics.heads], dim=1)
                probs = torch.sigmoid(logits)  # (B, heads)
                metrics.update(probs, batch.labels, batch.groups)
                if predictions is not None:
                    predictions.add(metrics.heads, probs, batch.labels, batch.groups)
            bar.update(1)
        bar.close()
        module.train()
        assert metrics is not None, "an evaluation reader yields at least one batch on every rank"
        loss_means, rows = losses.reduce()
        weight_means, _ = weights.reduce()
        return EvalResult(
            metrics=metrics.compute(),
            losses=loss_means,
            weights=weight_means,
            rows=int(rows),
            curves=metrics.curves,
        )
    finally:
        if metrics is not None:
            metrics.close()


def _with_batch(module: nn.Module):
    """A forward that also returns its (device) batch: labels, groups and padding for metrics."""

    def forward(batch):
        loss, outputs = module(batch)
        return loss, (batch, outputs)

    return forward
