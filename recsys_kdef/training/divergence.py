"""Divergence checks beyond NaN/inf: a training loss that blows up, one worse than predicting
the base rate, and a validation AUC no better than chance after training.

All three stop the run with TrainingDiverged on every rank (the values are all-reduced or
rank 0's, so every rank decides the same); train.py records the run as failed in
metrics.json and exits non-zero. The thresholds (train.divergence_*) are documented in
recsys_kdef.config.sections.TrainConfig; null turns a check off.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from recsys_kdef.config import TrainConfig
from recsys_kdef.distributed.collectives import all_reduce_sum
from recsys_kdef.distributed.process import DistContext

_DECAY = 0.9  # of the running level: an exponential mean of the checked interval means


class TrainingDiverged(RuntimeError):
    """The training loss or the validation AUC says the run diverged (train.divergence_*)."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


def base_rate_loss(ctr: float) -> float:
    """BCE of predicting the base rate `ctr` for every row: the entropy H(ctr), in nats."""
    if not 0 < ctr < 1:
        return 0.0
    return -(ctr * math.log(ctr) + (1 - ctr) * math.log(1 - ctr))


def train_ctr(meta: dict[str, Any]) -> float | None:
    """The training split's click rate from the checkpoint meta's schema (None if unknown)."""
    ctr = meta.get("schema", {}).get("extra", {}).get("ctr", {})
    value = ctr.get("train") if isinstance(ctr, dict) else None
    return float(value) if value is not None else None


class DivergenceWatch:
    """The training loss since the last check, kept on the device (one add per step, no sync).

    `check` (at the trainer's log points) all-reduces the interval's sums and compares their
    mean with the running level; `check_window` (before each validation) compares the mean
    CTR loss since the previous validation with the base-rate loss.
    """

    def __init__(self, cfg: TrainConfig, ctx: DistContext, ctr: float | None) -> None:
        self.cfg = cfg
        self.device, self.world_size = ctx.device, ctx.world_size
        self.base_loss = base_rate_loss(ctr) if ctr is not None else None
        self.ctr = ctr
        self.level: float | None = None
        self._sums = torch.zeros(2, device=ctx.device)  # (loss sum, steps) since the last check

    def add(self, components: dict[str, torch.Tensor]) -> None:
        if self.cfg.divergence_loss_factor is None:
            return
        loss = components["loss"].float().reshape(())
        self._sums += torch.stack([loss, torch.ones_like(loss)])

    def check(self, step: int) -> None:
        """Raise if the loss mean since the last check is divergence_loss_factor times its
        running level and worse than the base-rate loss (ln 2 if the rate is unknown)."""
        factor = self.cfg.divergence_loss_factor
        if factor is None:
            return
        total, steps = all_reduce_sum(self._sums.clone()).tolist()
        self._sums.zero_()
        if not steps:
            return
        mean = total / steps
        floor = self.base_loss if self.base_loss is not None else math.log(2)
        if self.level is not None and mean > factor * self.level and mean > floor:
            raise TrainingDiverged(
                f"training diverged at step {step}: mean loss {mean:.6g} over the last "
                f"{int(steps)} steps (all ranks) is more than train.divergence_loss_factor="
                f"{factor:g} x its running level {self.level:.6g}; lower train.dense_lr / "
                "train.sparse_lr, or set train.divergence_loss_factor: null to train on",
                step,
            )
        self.level = mean if self.level is None else _DECAY * self.level + (1 - _DECAY) * mean

    def check_window(self, step: int, train_loss: dict[str, float]) -> None:
        """Raise if the mean CTR loss since the previous validation (`train_loss`, this rank's
        window; averaged over ranks here) exceeds divergence_base_rate_factor x the loss of
        predicting the training click rate for every row."""
        factor = self.cfg.divergence_base_rate_factor
        if factor is None or self.base_loss is None or "ctr" not in train_loss:
            return
        ctr_loss = float(all_reduce_sum(torch.tensor([train_loss["ctr"]], device=self.device)))
        ctr_loss /= self.world_size
        if ctr_loss > factor * self.base_loss:
            raise TrainingDiverged(
                f"training diverged by step {step}: the mean training CTR loss {ctr_loss:.6g} "
                f"since the last validation is more than train.divergence_base_rate_factor="
                f"{factor:g} x {self.base_loss:.4f}, the loss of predicting the training click "
                f"rate {self.ctr:.4f} for every row; lower the learning rates, or set "
                "train.divergence_base_rate_factor: null",
                step,
            )


def check_valid_auc(cfg: TrainConfig, metrics: dict[str, dict[str, float]], best: int) -> None:
    """Raise if the (best) validation AUC of the monitored head is below divergence_min_auc."""
    head = monitored_head(cfg, best)
    auc = metrics.get(head, {}).get("auc", math.nan)
    limit = cfg.divergence_min_auc
    if limit is None or (math.isfinite(auc) and auc >= limit):
        return
    raise TrainingDiverged(
        f"the best validation AUC of '{head}' is {auc:.5f}, below "
        f"train.divergence_min_auc={limit:g}: the model predicts no better "
        "than chance (diverged or not learning); check the data and learning rates, or set "
        "train.divergence_min_auc: null"
    )


def monitored_head(cfg: TrainConfig, best: int) -> str:
    """The head whose validation AUC the run is judged by (the ensemble for monitor = distill)."""
    if cfg.monitor == "best_student":
        return f"student_{best}"
    return "ensemble" if cfg.monitor == "distill" else cfg.monitor


def failed_report(config: dict, error: BaseException) -> dict[str, Any]:
    """metrics.json of a run stopped by a divergence or non-finite check: status, the error
    and the config (no metrics: the weights are not worth evaluating)."""
    return {
        "status": "failed",
        "error": str(error),
        "failed_at_step": getattr(error, "step", None),
        "config": config,
    }
