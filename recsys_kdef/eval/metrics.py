"""Evaluation metrics for several prediction heads at once (students, ensemble, ...).

Every state is bounded in the number of rows, except gAUC's rows without a spill directory.
AUC comes from fine score histograms (recsys_kdef.eval.binned_auc), reported with its error bound
(`auc_bound`, typically below 1e-5); TorchRec's exact AUCMetric keeps every prediction.
Logloss (natural log, as FuxiCTR and scikit-learn; TorchRec reports bits) and NE (logloss
over the entropy of the base rate) come from running sums reduced across ranks, with
predictions clamped to [1e-12, 1 - 1e-12] as TorchRec's NE does (whose NEMetric keeps about
50 bytes per row evaluated in its update path, so it is not used here; the value equals
torchrec.metrics.ne.compute_ne's: tests/test_library_parity.py).
gAUC is the mean, over groups (users) that have both a click and a non-click, of the AUC
within the group, exact: rows are kept in partitions by hash(group), on disk with
`spill_dir` (recsys_kdef.eval.grouped_auc), and each partition is gathered on one rank and sorted
by (group, score); ties count 1/2.
Calibration (mean prediction / observed CTR) comes from running sums; with `curves=True`,
fixed-width histograms of the predictions (bounded memory, summed over ranks) give the
reliability bins (equal row counts, so that a click rate of 0.09 still gets ten points, not
two) and an ROC curve for plots.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from recsys_kdef.distributed.collectives import all_reduce_sum
from recsys_kdef.eval.binned_auc import BinnedAUC
from recsys_kdef.eval.grouped_auc import GroupRows, num_partitions

EPS = 1e-12  # predictions and the base rate are clamped to [EPS, 1 - EPS] in logloss and NE
RELIABILITY_BINS = 10  # bins of about equal row counts of the calibration curve
ROC_BINS = 1000  # score bins of the plotted ROC curve (the reported AUC uses far finer bins)


class EvalMetrics:
    """Accumulates (B, H) predicted probabilities of H named heads over an evaluation pass.

    Example::

        metrics = EvalMetrics(["student_0", "student_1", "ensemble"], rank=0, world_size=1)
        metrics.update(probs, labels, groups)        # probs (B, 3)
        metrics.compute()["ensemble"]["auc"]
        metrics.close()                               # removes spilled gAUC rows

    With `spill_dir`, gAUC's rows go to files under it, in partitions of about
    ROWS_PER_PARTITION rows given `expected_rows` (all ranks' rows); without, they stay in
    memory. close() removes the files, also after an error.
    """

    def __init__(
        self,
        heads: list[str],
        *,
        rank: int,
        world_size: int,
        with_gauc: bool = True,
        curves: bool = False,
        spill_dir: str | Path | None = None,
        expected_rows: int = 0,
    ) -> None:
        self.heads = heads
        h = len(heads)
        # per head: [sum of predictions, sum of labels, rows, sum of cross-entropies]
        self._sums = torch.zeros(h, 4, dtype=torch.float64)
        # per head and score bin: [positives, negatives, sum of predictions] (only with curves)
        self._histogram = torch.zeros(h, ROC_BINS, 3, dtype=torch.float64) if curves else None
        self.curves: dict[str, dict[str, list]] = {}
        """Filled by compute() when built with curves=True: {head: {reliability, roc}}."""
        self.world_size = world_size
        self._auc = BinnedAUC(h)
        self.with_gauc = with_gauc
        self._has_groups = False
        self._group_rows = (
            GroupRows(
                h,
                partitions=num_partitions(expected_rows, world_size) if spill_dir else world_size,
                directory=spill_dir,
                rank=rank,
                world_size=world_size,
            )
            if with_gauc
            else None
        )

    def update(
        self, probs: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None = None
    ) -> None:
        probs, labels = probs.detach().float(), labels.detach().float()
        self._auc.update(probs, labels)
        p, y = probs.double().cpu(), labels.double().cpu()
        self._sums[:, 0] += p.sum(0)
        self._sums[:, 1] += y.sum()
        self._sums[:, 2] += len(y)
        q, y_col = p.clamp(EPS, 1 - EPS), y.unsqueeze(1)  # (B, H), (B, 1)
        self._sums[:, 3] -= (y_col * q.log() + (1 - y_col) * torch.log1p(-q)).sum(0)
        if self._histogram is not None:
            bins = (p * ROC_BINS).long().clamp_(0, ROC_BINS - 1).t()  # (H, B)
            for values, column in ((y, 0), (1 - y, 1)):
                self._histogram[:, :, column].scatter_add_(1, bins, values.expand_as(bins))
            self._histogram[:, :, 2].scatter_add_(1, bins, p.t())
        if self._group_rows is not None and groups is not None:
            self._group_rows.add(groups, labels, probs)
            self._has_groups = True

    def compute(self) -> dict[str, dict[str, float]]:
        """{head: {auc, auc_bound, logloss, ne, calibration[, gauc]}} over all ranks' rows
        (every rank gets the result); |auc - exact AUC| <= auc_bound."""
        auc, auc_bound = self._auc.compute()
        sums = all_reduce_sum(self._sums.clone())
        out: dict[str, dict[str, float]] = {}
        for i, (h, (pred_sum, label_sum, rows, ce_sum)) in enumerate(
            zip(self.heads, sums.tolist(), strict=True)
        ):
            logloss = ce_sum / rows if rows else math.nan
            base = min(max(label_sum / rows, EPS), 1 - EPS) if rows else math.nan
            entropy = -(base * math.log(base) + (1 - base) * math.log1p(-base))
            out[h] = {
                "auc": float(auc[i]),
                "auc_bound": float(auc_bound[i]),
                "logloss": logloss,
                "ne": logloss / entropy,
                "calibration": pred_sum / label_sum if label_sum else math.nan,
            }
        if self._histogram is not None:
            self.curves = curves_from_histogram(self.heads, all_reduce_sum(self._histogram.clone()))
        if self.with_gauc:
            gauc = self._compute_gauc()
            if gauc is not None:
                for h, value in zip(self.heads, gauc.tolist()):
                    out[h]["gauc"] = value
        return out

    def _compute_gauc(self) -> torch.Tensor | None:
        has_groups = all_reduce_sum(torch.tensor([float(self._has_groups)]))
        if has_groups.item() == 0:
            return None
        auc_sum, num_groups = self._group_rows.grouped_auc_sums()
        return auc_sum / num_groups.clamp(min=1)

    def close(self) -> None:
        """Remove spilled gAUC rows (safe to call twice, and after an error)."""
        if self._group_rows is not None:
            self._group_rows.close()


def curves_from_histogram(heads: list[str], histogram: torch.Tensor) -> dict[str, dict[str, list]]:
    """Reliability bins and ROC points per head from (H, ROC_BINS, [pos, neg, sum p]) counts.

    reliability: [mean prediction, observed CTR, rows] of each non-empty bin of about
    1 / RELIABILITY_BINS of the rows (whole score bins, in score order); roc: false / true
    positive rates at every score-bin threshold.
    """
    out = {}
    for i, head in enumerate(heads):
        pos, neg, psum = histogram[i].unbind(1)  # each (ROC_BINS,)
        rows = pos + neg
        # each score bin goes to the quantile bin of its middle row: bins stay in score order
        middle = torch.cumsum(rows, 0) - rows / 2
        group = (middle * RELIABILITY_BINS / rows.sum().clamp(min=1)).long()
        group = group.clamp_(0, RELIABILITY_BINS - 1)
        coarse = torch.zeros(RELIABILITY_BINS, 3, dtype=histogram.dtype)
        coarse.index_add_(0, group, torch.stack([pos, rows, psum], 1))
        reliability = [[float(s / n), float(p / n), int(n)] for p, n, s in coarse.tolist() if n > 0]
        # thresholds from the highest score down: rates of rows scored at or above each bin
        tpr = torch.cat([torch.zeros(1), pos.flip(0).cumsum(0) / pos.sum().clamp(min=1)])
        fpr = torch.cat([torch.zeros(1), neg.flip(0).cumsum(0) / neg.sum().clamp(min=1)])
        out[head] = {
            "reliability": reliability,
            "roc": {"fpr": fpr.float().tolist(), "tpr": tpr.float().tolist()},
        }
    return out
