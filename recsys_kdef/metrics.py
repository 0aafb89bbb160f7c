"""Evaluation metrics for several prediction heads at once (students, ensemble, ...).

AUC, logloss and NE come from torchrec.metrics (AUCMetric, NEMetric), reduced across ranks.
TorchRec reports logloss in bits (log2); we report nats, as FuxiCTR and scikit-learn do.
gAUC is the mean, over groups (users) that have both a click and a non-click, of the AUC
within the group; TorchRec's GAUC computes it for groups that sit together in one batch,
so rows are first sent to the rank that owns their group (group id mod world size),
sorted by group, and fed to TorchRec's GAUC kernel in chunks of whole groups.
Calibration (mean prediction / observed CTR) comes from running sums; with `curves=True`,
fixed-width histograms of the predictions (bounded memory, summed over ranks) give the
reliability bins and an ROC curve for plots.
"""

from __future__ import annotations

import math

import torch
from torchrec.metrics.auc import AUCMetric
from torchrec.metrics.gauc import get_auc_states
from torchrec.metrics.metrics_config import RecComputeMode, RecTaskInfo
from torchrec.metrics.ne import NEMetric

from recsys_kdef.distributed import all_reduce_sum, exchange_rows

GAUC_CHUNK_ELEMENTS = 1 << 22  # padded (group x longest group) cells per GAUC kernel call
RELIABILITY_BINS = 10  # equal-width predicted-probability bins of the calibration curve
ROC_BINS = 1000  # score bins of the (plotted) ROC curve; the reported AUC is TorchRec's exact one


class EvalMetrics:
    """Accumulates (B, H) predicted probabilities of H named heads over an evaluation pass.

    Example::

        metrics = EvalMetrics(["student_0", "student_1", "ensemble"], rank=0, world_size=1)
        metrics.update(probs, labels, groups)        # probs (B, 3)
        metrics.compute()["ensemble"]["auc"]
    """

    def __init__(
        self,
        heads: list[str],
        *,
        rank: int,
        world_size: int,
        batch_size: int = 1024,
        with_gauc: bool = True,
        curves: bool = False,
    ) -> None:
        self.heads = heads
        h = len(heads)
        # per head: [sum of predictions, sum of labels, rows]
        self._calibration = torch.zeros(h, 3, dtype=torch.float64)
        # per head and score bin: [positives, negatives, sum of predictions] (only with curves)
        self._histogram = torch.zeros(h, ROC_BINS, 3, dtype=torch.float64) if curves else None
        self.curves: dict[str, dict[str, list]] = {}
        """Filled by compute() when built with curves=True: {head: {reliability, roc}}."""
        self.world_size = world_size
        tasks = [RecTaskInfo(name=h, label_name="label", prediction_name=h) for h in heads]
        common = dict(
            world_size=world_size,
            my_rank=rank,
            batch_size=batch_size,
            tasks=tasks,
            compute_mode=RecComputeMode.FUSED_TASKS_COMPUTATION,
            window_size=2**62,
            compute_on_all_ranks=True,
        )
        self._auc = AUCMetric(**common)
        self._ne = NEMetric(**common, include_logloss=True)
        self.with_gauc = with_gauc
        self._gauc_rows: list[torch.Tensor] = []  # (B, 2 + H): group, label, probs

    def update(
        self, probs: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None = None
    ) -> None:
        probs, labels = probs.detach().float(), labels.detach().float()
        preds = {h: probs[:, i] for i, h in enumerate(self.heads)}
        label_map = {h: labels for h in self.heads}
        weights = {h: torch.ones_like(labels) for h in self.heads}
        self._auc.update(predictions=preds, labels=label_map, weights=weights)
        self._ne.update(predictions=preds, labels=label_map, weights=weights)
        p, y = probs.double().cpu(), labels.double().cpu()
        self._calibration[:, 0] += p.sum(0)
        self._calibration[:, 1] += y.sum()
        self._calibration[:, 2] += len(y)
        if self._histogram is not None:
            bins = (p * ROC_BINS).long().clamp_(0, ROC_BINS - 1).t()  # (H, B)
            for values, column in ((y, 0), (1 - y, 1)):
                self._histogram[:, :, column].scatter_add_(1, bins, values.expand_as(bins))
            self._histogram[:, :, 2].scatter_add_(1, bins, p.t())
        if self.with_gauc and groups is not None:
            self._gauc_rows.append(
                torch.cat(
                    [groups.double().unsqueeze(1), labels.double().unsqueeze(1), probs.double()],
                    dim=1,
                ).cpu()
            )

    def compute(self) -> dict[str, dict[str, float]]:
        """{head: {auc, logloss, ne[, gauc]}} over all ranks' rows (every rank gets the result)."""
        auc = self._auc.compute()
        ne = self._ne.compute()
        out: dict[str, dict[str, float]] = {}
        for h in self.heads:
            out[h] = {
                "auc": float(auc[f"auc-{h}|window_auc"]),
                "logloss": float(ne[f"ne-{h}|lifetime_logloss"]) * math.log(2),
                "ne": float(ne[f"ne-{h}|lifetime_ne"]),
            }
        calibration = all_reduce_sum(self._calibration.clone())
        for h, (pred_sum, label_sum, _) in zip(self.heads, calibration.tolist(), strict=True):
            out[h]["calibration"] = pred_sum / label_sum if label_sum else math.nan
        if self._histogram is not None:
            self.curves = curves_from_histogram(self.heads, all_reduce_sum(self._histogram.clone()))
        if self.with_gauc:
            gauc = self._compute_gauc()
            if gauc is not None:
                for h, value in zip(self.heads, gauc.tolist()):
                    out[h]["gauc"] = value
        return out

    def _compute_gauc(self) -> torch.Tensor | None:
        local = (
            torch.cat(self._gauc_rows)
            if self._gauc_rows
            else torch.empty(0, 2 + len(self.heads), dtype=torch.float64)
        )
        has_groups = all_reduce_sum(torch.tensor([float(len(self._gauc_rows) > 0)]))
        if has_groups.item() == 0:
            return None
        owner = (
            (local[:, 0].long() % self.world_size)
            if self.world_size > 1
            else torch.zeros(len(local), dtype=torch.long)
        )
        rows = exchange_rows(local, owner)
        auc_sum, num_groups = grouped_auc(rows[:, 0].long(), rows[:, 2:], rows[:, 1])
        totals = all_reduce_sum(torch.cat([auc_sum, num_groups]))
        h = len(self.heads)
        return totals[:h] / totals[h:].clamp(min=1)


def curves_from_histogram(heads: list[str], histogram: torch.Tensor) -> dict[str, dict[str, list]]:
    """Reliability bins and ROC points per head from (H, ROC_BINS, [pos, neg, sum p]) counts.

    reliability: [mean prediction, observed CTR, rows] of each non-empty of RELIABILITY_BINS
    equal-width bins; roc: false / true positive rates at every score-bin threshold.
    """
    out = {}
    per_bin = ROC_BINS // RELIABILITY_BINS
    for i, head in enumerate(heads):
        pos, neg, psum = histogram[i].unbind(1)
        coarse = torch.stack([pos, neg, psum], 1).reshape(RELIABILITY_BINS, per_bin, 3).sum(1)
        rows = coarse[:, 0] + coarse[:, 1]
        reliability = [
            [float(s / n), float(p / n), int(n)]
            for p, s, n in zip(coarse[:, 0], coarse[:, 2], rows, strict=True)
            if n > 0
        ]
        # thresholds from the highest score down: rates of rows scored at or above each bin
        tpr = torch.cat([torch.zeros(1), pos.flip(0).cumsum(0) / pos.sum().clamp(min=1)])
        fpr = torch.cat([torch.zeros(1), neg.flip(0).cumsum(0) / neg.sum().clamp(min=1)])
        out[head] = {
            "reliability": reliability,
            "roc": {"fpr": fpr.float().tolist(), "tpr": tpr.float().tolist()},
        }
    return out


def grouped_auc(
    groups: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over groups of the within-group AUC, and the number of groups counted, per head.

    groups (N,), probs (N, H), labels (N,). Groups whose rows are all one class, or whose
    predictions are all equal, are skipped (TorchRec's GAUC rule). Returns two (H,) tensors.
    """
    num_heads = probs.shape[1]
    auc_sum = torch.zeros(num_heads, dtype=torch.float64)
    count = torch.zeros(num_heads, dtype=torch.float64)
    if groups.numel() == 0:
        return auc_sum, count
    _, group_index, sizes = torch.unique(groups, return_inverse=True, return_counts=True)
    # order rows by (group size, group) so that each chunk of whole groups pads to a similar length
    size_rank = torch.empty_like(sizes)
    size_rank[torch.argsort(sizes, stable=True)] = torch.arange(len(sizes))
    order = torch.argsort(size_rank[group_index], stable=True)
    probs, labels = probs[order], labels[order]
    sizes = torch.sort(sizes).values  # (G,) ascending, in the new group order
    row_start = torch.cumsum(sizes, 0) - sizes
    first = 0
    while first < len(sizes):
        # largest chunk [first, last) whose padded area (groups x longest) fits the budget
        area = torch.arange(1, len(sizes) - first + 1) * sizes[first:]
        last = first + max(1, int(torch.searchsorted(area, GAUC_CHUNK_ELEMENTS, right=True)))
        rows = slice(int(row_start[first]), int(row_start[last - 1] + sizes[last - 1]))
        p = probs[rows].t().float().contiguous()  # (H, n); the fbgemm kernel takes float32
        y = labels[rows].float().unsqueeze(0).expand(num_heads, -1).contiguous()
        states = get_auc_states(y, p, torch.ones_like(p), sizes[first:last])
        auc_sum += states["auc_sum"].double()
        count += states["num_samples"].double()
        first = last
    return auc_sum, count
