"""One evaluation pass: every head's AUC / logloss / NE / gAUC, the mean loss components and
the mean objective weights (exam lambda / mu, fusion weights), reduced over all ranks."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recsys_kdef.data.reader import ParquetBatchReader
from recsys_kdef.distributed import DistContext, all_reduce_sum
from recsys_kdef.metrics import EvalMetrics


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


@torch.no_grad()
def evaluate(module: nn.Module, reader: ParquetBatchReader, ctx: DistContext) -> EvalResult:
    """Run `module` (the sharded train module) over `reader` on every rank; results on every rank.

    The heads are the model output's (`heads()`: students, ensemble, fused, ...) plus any
    prediction the objective adds (ObjectiveOutput.heads).
    """
    module.eval()
    metrics: EvalMetrics | None = None
    losses, weights = WeightedMeans(), WeightedMeans()
    for batch in reader:
        batch = batch.to(ctx.device, non_blocking=True)
        _, (objective, output) = module(batch)  # padding batches run too: the lookup is collective
        heads = {**output.heads(), **objective.heads}
        if metrics is None:
            metrics = EvalMetrics(
                list(heads),
                rank=ctx.rank,
                world_size=ctx.world_size,
                batch_size=reader.batch_size,
                with_gauc=reader.schema.group is not None,
            )
        n = 0 if batch.padding else len(batch)
        losses.add(objective.components, n)
        weights.add(objective.weights, n)
        if n:
            probs = torch.sigmoid(torch.stack(list(heads.values()), dim=1))  # (B, heads)
            metrics.update(probs, batch.labels, batch.groups)
    module.train()
    assert metrics is not None, "an evaluation reader yields at least one batch on every rank"
    loss_means, rows = losses.reduce()
    weight_means, _ = weights.reduce()
    return EvalResult(
        metrics=metrics.compute(), losses=loss_means, weights=weight_means, rows=int(rows)
    )
