"""The training loop: epochs over the reader, validation, LR decay on plateau, early stopping.

FuxiCTR's rules: after each validation without a gain in the monitored AUC, every learning
rate (dense and sparse) is multiplied by `lr_decay_factor` (down to `min_lr`); after
`early_stop_patience` such validations training stops, and the best weights are restored.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torchrec.optim.keyed import CombinedOptimizer
from tqdm import tqdm

from recsys_kdef.config import TrainConfig
from recsys_kdef.data.reader import ParquetBatchReader
from recsys_kdef.distributed import DistContext, broadcast_object, learning_rates
from recsys_kdef.evaluate import EvalResult, best_student, evaluate

logger = logging.getLogger(__name__)


@dataclass
class Validation:
    """One validation point of the run, as logged and written to metrics.json."""

    epoch: int
    step: int
    monitor_value: float
    result: EvalResult
    lr: dict[str, float]
    train_loss: dict[str, float]
    train_weights: dict[str, list]
    """Objective weights averaged over the training steps since the last validation."""
    samples_per_sec: float


@dataclass
class FitResult:
    history: list[Validation] = field(default_factory=list)
    best: Validation | None = None
    steps: int = 0
    stopped_early: bool = False


class Trainer:
    """Trains a sharded EnsembleTrain module with its combined optimizer.

    The plateau schedule scales the learning rate of every param group of `optimizer`
    (dense, fused sparse and data-parallel tables alike).
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: CombinedOptimizer,
        ctx: DistContext,
        cfg: TrainConfig,
    ) -> None:
        self.module = module
        self.optimizer = optimizer
        self.ctx = ctx
        self.cfg = cfg
        self._best_state: dict | None = None
        self._bad_validations = 0

    def fit(self, train: ParquetBatchReader, valid: ParquetBatchReader) -> FitResult:
        result = FitResult()
        step = 0
        for epoch in range(self.cfg.epochs):
            train.set_epoch(epoch)
            steps = len(train)
            if self.cfg.max_steps_per_epoch is not None:
                steps = min(steps, self.cfg.max_steps_per_epoch)
            bar = tqdm(
                total=steps,
                desc=f"epoch {epoch}",
                disable=not (self.ctx.is_main and self.cfg.progress_bar),
                mininterval=1.0,
                dynamic_ncols=True,
            )
            window = _LossWindow()
            for i, batch in enumerate(train):
                if i == steps:
                    break
                window.add(*self.train_step(batch), len(batch))
                step += 1
                bar.update(1)
                if step % self.cfg.log_every_steps == 0 or i == steps - 1:
                    rate = window.samples_per_sec(self.ctx.world_size)
                    bar.set_postfix(
                        loss=f"{window.mean()['loss']:.4f}", samples_per_s=f"{rate:,.0f}"
                    )
                if self.cfg.eval_every_steps and step % self.cfg.eval_every_steps == 0:
                    if self._validate(valid, result, epoch, step, window):
                        return self._finish(result, step, stopped_early=True, bar=bar)
            bar.close()
            last_epoch = epoch == self.cfg.epochs - 1
            # validate each epoch, or (every N steps) once more at the end if the last step was not one
            if not self.cfg.eval_every_steps or (last_epoch and step % self.cfg.eval_every_steps):
                if self._validate(valid, result, epoch, step, window):
                    return self._finish(result, step, stopped_early=True)
        return self._finish(result, step, stopped_early=False)

    def train_step(self, batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One optimizer step; returns the loss components and the objective's weights."""
        batch = batch.to(self.ctx.device, non_blocking=True)
        self.optimizer.zero_grad()
        loss, (objective, _) = self.module(batch)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach(), **objective.components}, objective.weights

    def _validate(
        self, valid, result: FitResult, epoch: int, step: int, window: _LossWindow
    ) -> bool:
        """Evaluate, keep the best weights, decay LR or stop. Returns True to stop."""
        rate = window.samples_per_sec(self.ctx.world_size)
        evaluation = evaluate(self.module, valid, self.ctx)
        monitor = self._monitor_value(evaluation)
        point = Validation(
            epoch=epoch,
            step=step,
            monitor_value=monitor,
            result=evaluation,
            lr=learning_rates(self.optimizer),
            train_loss=window.mean(),
            train_weights=window.mean_weights(),
            samples_per_sec=rate,
        )
        result.history.append(point)
        window.reset()
        _log_validation(point, self.ctx)
        if result.best is None or monitor > result.best.monitor_value:
            result.best = point
            self._best_state = copy.deepcopy(self.module.state_dict())
            self._bad_validations = 0
            return False
        self._bad_validations += 1
        for group in self.optimizer.param_groups:
            group["lr"] = max(group["lr"] * self.cfg.lr_decay_factor, self.cfg.min_lr)
        return self._bad_validations >= self.cfg.early_stop_patience

    def _monitor_value(self, evaluation: EvalResult) -> float:
        """The monitored value, higher is better, identical on every rank (rank 0's value):
        a head's validation AUC, or minus the validation distillation loss."""
        metrics = evaluation.metrics
        if self.cfg.monitor == "distill":
            value = -evaluation.losses["distill"]
        elif self.cfg.monitor == "best_student":
            value = metrics[f"student_{best_student(metrics)}"]["auc"]
        else:  # ensemble, fused
            value = metrics[self.cfg.monitor]["auc"]
        return float(broadcast_object(value))

    def _finish(self, result: FitResult, step: int, stopped_early: bool, bar=None) -> FitResult:
        if bar is not None:
            bar.close()
        if self._best_state is not None:
            self.module.load_state_dict(self._best_state)
        result.steps = step
        result.stopped_early = stopped_early
        if self.ctx.is_main and result.best is not None:
            logger.info(
                "best validation %s %.5f at epoch %d step %d%s",
                self.cfg.monitor,
                result.best.monitor_value,
                result.best.epoch,
                result.best.step,
                " (early stop)" if stopped_early else "",
            )
        return result


class _LossWindow:
    """Running sums of the loss components since the last validation."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.weight_sums: dict[str, torch.Tensor] = {}
        self.batches = 0
        self.samples = 0
        self.started = time.perf_counter()

    def samples_per_sec(self, world_size: int) -> float:
        """Training throughput of all ranks since the window started (validation time excluded)."""
        return self.samples * world_size / max(time.perf_counter() - self.started, 1e-9)

    def add(
        self, components: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], samples: int
    ) -> None:
        for k, v in components.items():
            self.sums[k] = self.sums.get(k, 0) + v
        for k, v in weights.items():
            self.weight_sums[k] = self.weight_sums.get(k, 0) + v
        self.batches += 1
        self.samples += samples

    def mean(self) -> dict[str, float]:
        return {k: float(v) / max(self.batches, 1) for k, v in self.sums.items()}

    def mean_weights(self) -> dict[str, list]:
        return {k: (v / max(self.batches, 1)).tolist() for k, v in self.weight_sums.items()}


def _log_validation(point: Validation, ctx: DistContext) -> None:
    if not ctx.is_main:
        return
    metrics = point.result.metrics
    heads = " ".join(f"{h}={m['auc']:.4f}" for h, m in metrics.items())
    heads += f" best=student_{best_student(metrics)}"
    losses = " ".join(f"{k}={v:.4f}" for k, v in point.train_loss.items())
    for name, value in point.train_weights.items():
        if name in ("lambda", "fusion", "gate"):
            losses += f" {name}=[" + ",".join(f"{x:.3f}" for x in value) + "]"
    logger.info(
        "epoch %d step %d | valid AUC %s | train %s | %.0f samples/s",
        point.epoch,
        point.step,
        heads,
        losses,
        point.samples_per_sec,
    )
