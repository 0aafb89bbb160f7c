"""The training loop: epochs over the reader, validation, LR decay on plateau, early stopping,
sharded checkpoints and exact resume.

FuxiCTR's rules: after each validation without a gain in the monitored AUC, every learning
rate (dense and sparse) is multiplied by `lr_decay_factor` (down to `min_lr`); after
`early_stop_patience` such validations training stops, and the best weights are restored
(from the `best` checkpoint). PlateauRule adds `early_stop_min_delta`, a warm-up of
validations that never count, and the AUC guard of the AUC - logloss monitor. A checkpoint holds the position in the stream (epoch, batches
done), the loop's state and every rank's RNG, so a resumed run continues the same stream.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchrec.optim.keyed import CombinedOptimizer
from tqdm import tqdm

from recsys_kdef.checkpoint import store as ckpt
from recsys_kdef.checkpoint.checks import check_same_model
from recsys_kdef.config import TrainConfig
from recsys_kdef.data.reader import ParquetBatchReader
from recsys_kdef.distributed.batch_runner import BatchRunner
from recsys_kdef.distributed.collectives import (
    all_reduce_sum,
    average_norm_statistics,
    broadcast_object,
    norm_buffers,
)
from recsys_kdef.distributed.optimizers import learning_rates, sparse_learning_rate
from recsys_kdef.distributed.process import DistContext
from recsys_kdef.eval.evaluate import EvalResult, best_student, evaluate
from recsys_kdef.training.divergence import DivergenceWatch, train_ctr
from recsys_kdef.training.early_stopping import PlateauRule, decay_on_plateau
from recsys_kdef.training.process_settings import apply_process_settings
from recsys_kdef.training.run_log import WEIGHT_NAMES
from recsys_kdef.training.table_decay import decay_tables, trainable_table_names
from recsys_kdef.training.watches import NonFiniteWatch

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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Validation:
        return cls(**{**d, "result": EvalResult(**d["result"])})


@dataclass
class FitResult:
    history: list[Validation] = field(default_factory=list)
    best: Validation | None = None
    steps: int = 0
    stopped_early: bool = False
    skipped_batches: int = 0
    """Batches whose loss was NaN/inf, skipped (train.nonfinite = skip)."""


@dataclass
class StepResult:
    """What one training step leaves for the logs: device tensors, read at log intervals."""

    components: dict[str, torch.Tensor]
    """The loss ("loss") and the objective's components, detached scalars."""
    weights: dict[str, torch.Tensor]
    samples: int
    skipped: bool = False
    """The loss was not finite on some rank and train.nonfinite = skip: no update was made."""


FAIL_AT_STEP_ENV = "RECSYS_KDEF_FAIL_AT_STEP"
"""Test hook: "RANK:STEP" (RANK may be `all`) makes that rank exit abruptly after STEP on the first attempt of an
elastic job (TORCHELASTIC_RESTART_COUNT 0), to test recovery from the last checkpoint."""


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
        meta: dict[str, Any],
    ) -> None:
        missing = [k for k in ("config", "schema", "model_prefix") if k not in meta]
        if missing:  # else the run would fail at its end, restoring the best checkpoint
            raise ValueError(
                f"Trainer meta lacks {', '.join(missing)}: pass checkpoint_meta(cfg, schema)"
            )
        self.module = module
        self.optimizer = optimizer
        self.ctx = ctx
        self.cfg = cfg
        self.meta = meta
        """Written into every checkpoint's meta.json (config, schema, model prefix)."""
        self.checkpoints = Path(cfg.output_dir) / ckpt.CHECKPOINTS
        self._bad_validations = 0
        self.plateau = PlateauRule(
            min_delta=cfg.early_stop_min_delta,
            warmup=cfg.early_stop_warmup,
            auc_guard=cfg.early_stop_auc_guard and cfg.monitor_metric == "auc_minus_logloss",
        )
        self._position = (0, 0)  # (epoch, batches of it done) after the last step
        decoupled = cfg.embedding_l2 > 0 and cfg.embedding_l2_mode == "decoupled"
        self._decayed_tables = trainable_table_names(module) if decoupled else set()
        self.runner = BatchRunner(module, optimizer, ctx.device, pipelined=cfg.pipeline)
        self.nonfinite = NonFiniteWatch(ctx.device, ctx.rank)
        self.divergence = DivergenceWatch(cfg, ctx, train_ctr(self.meta))
        self._step = 0  # global steps whose forward ran
        self.observers: list[Callable[[Validation], None]] = []
        """Called with each validation point after it is logged (e.g. RunLog.validation)."""
        self._threads = torch.get_num_threads()
        limit = cfg.embedding_backward_threads
        on_cpu = ctx.device.type == "cpu" and limit is not None and limit < self._threads
        self._embedding_threads = limit if on_cpu else None
        apply_process_settings(cfg, ctx.device)

    def fit(
        self, train: ParquetBatchReader, valid: ParquetBatchReader, resume: Path | None = None
    ) -> FitResult:
        """Train (from the checkpoint `resume`, if given) and return the validation history."""
        result = FitResult()
        window = _LossWindow()
        step, start_epoch, skip = 0, 0, 0
        if resume is not None:
            state = self._restore(resume, result, window)
            step, (start_epoch, skip) = result.steps, state["position"]
            if state["finished"]:
                return self._finish(result, step, stopped_early=result.stopped_early)
        self._step = step
        for epoch in range(start_epoch, self.cfg.epochs):
            train.set_epoch(epoch)
            steps = len(train)
            if self.cfg.max_steps_per_epoch is not None:
                steps = min(steps, self.cfg.max_steps_per_epoch)
            bar = tqdm(
                total=steps,
                initial=min(skip, steps),
                desc=f"epoch {epoch}",
                disable=not (self.ctx.is_main and self.cfg.progress_bar),
                mininterval=1.0,
                dynamic_ncols=True,
            )
            source = train.batches(skip)
            i = skip
            try:
                while i < steps:
                    # a segment ends where the pipeline must be empty: validation, checkpoint
                    count = self._segment_length(step, steps - i)
                    segment = itertools.islice(source, count)
                    for stepped in self.train_steps(segment):
                        if stepped.skipped:
                            result.skipped_batches += 1
                        else:
                            window.add(stepped.components, stepped.weights, stepped.samples)
                            self.divergence.add(stepped.components)
                        step += 1
                        i += 1
                        self._position = (epoch, i)
                        _fail_here_for_tests(self.ctx.rank, step)
                        bar.update(1)
                        if step % self.cfg.log_every_steps == 0 or i == steps:
                            self.nonfinite.check()
                            self.divergence.check(step)
                            rate = window.samples_per_sec(self.ctx.world_size)
                            bar.set_postfix(
                                loss=f"{window.mean().get('loss', float('nan')):.4f}",
                                samples_per_s=f"{rate:,.0f}",
                            )
                    self.nonfinite.check()
                    if self.cfg.eval_every_steps and step % self.cfg.eval_every_steps == 0:
                        if self._validate(valid, result, epoch, step, window):
                            return self._finish(result, step, stopped_early=True, bar=bar)
                    elif (
                        self.cfg.checkpoint_every_steps
                        and step % self.cfg.checkpoint_every_steps == 0
                    ):
                        self._save_step(result, step, window)
            finally:
                source.close()
            bar.close()
            skip = 0
            self._position = (epoch + 1, 0)
            last_epoch = epoch == self.cfg.epochs - 1
            # validate each epoch, or (every N steps) once more at the end if the last step was not one
            if not self.cfg.eval_every_steps or (last_epoch and step % self.cfg.eval_every_steps):
                if self._validate(valid, result, epoch, step, window):
                    return self._finish(result, step, stopped_early=True)
        return self._finish(result, step, stopped_early=False)

    def _segment_length(self, step: int, remaining: int) -> int:
        """Steps from global step `step` to the next validation or checkpoint step (both need the
        pipeline drained), at most `remaining` (the epoch's end)."""
        count = remaining
        for every in (self.cfg.eval_every_steps, self.cfg.checkpoint_every_steps):
            if every:
                count = min(count, every - step % every)
        return count

    def train_steps(self, batches: Iterable) -> Iterator[StepResult]:
        """One optimizer step per batch (plain or pipelined, train.pipeline); each result is
        yielded after its step, the decoupled table decay included."""
        for stepped in self.runner.run(batches, self._train_forward):
            if self._decayed_tables and not stepped.skipped:
                factor = 1.0 - sparse_learning_rate(self.optimizer) * self.cfg.embedding_l2
                decay_tables(self.module, factor, self._decayed_tables)
            if self._embedding_threads:
                torch.set_num_threads(self._threads)
            yield stepped

    def train_step(self, batch, step: int) -> StepResult:
        """One optimizer step on `batch` as global step `step`."""
        self._step = step - 1
        (stepped,) = self.train_steps([batch])
        return stepped

    def _train_forward(self, batch) -> tuple[torch.Tensor | None, StepResult]:
        """The forward of one training step; a loss of None: no update (a skipped batch).

        train.nonfinite = raise costs no op and no host sync: the watch keeps the losses, and
        `self.nonfinite.check()` (every log_every_steps, before validations and
        checkpoints) raises on every rank. skip must decide before the backward, the same on
        every rank (the backward is a collective): one all-reduce and host sync per step.
        """
        self._step += 1
        skip_mode = self.cfg.nonfinite == "skip"
        # a skipped batch must not leave its batch-norm statistics behind (small dense buffers)
        norms = norm_buffers(self.module) if skip_mode else []
        saved = [b.clone() for b in norms]
        bf16 = self.cfg.autocast == "bf16"
        with torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, (objective, output) = self.module(batch)
        embeddings = getattr(output, "embeddings", None)
        if self._embedding_threads and embeddings is not None and embeddings.requires_grad:
            # fires when the towers' backward is done and the embedding backward comes next
            embeddings.register_hook(self._before_embedding_backward)
        components = {"loss": loss.detach(), **objective.components}
        stepped = StepResult(components, objective.weights, len(batch))
        if not skip_mode:
            self.nonfinite.update(self._step, components)
            return loss, stepped
        bad = all_reduce_sum((~torch.isfinite(loss)).float().reshape(1))
        if not bad.item():
            return loss, stepped
        with torch.no_grad():
            for buffer, before in zip(norms, saved, strict=True):
                buffer.copy_(before)
        return None, StepResult({}, {}, len(batch), skipped=True)

    def _before_embedding_backward(self, grad: torch.Tensor) -> None:
        """train.embedding_backward_threads: fbgemm's CPU embedding backward (fused optimizer)
        ran 9x slower with 2 intra-op threads than with 1 on 2 shared cores (docs/benchmarks.md)."""
        torch.set_num_threads(self._embedding_threads)

    def _validate(
        self, valid, result: FitResult, epoch: int, step: int, window: _LossWindow
    ) -> bool:
        """Evaluate, keep the best weights, decay LR or stop. Returns True to stop."""
        self.divergence.check_window(step, window.mean())
        rate = window.samples_per_sec(self.ctx.world_size)
        average_norm_statistics(self.module)  # one model on every rank, as checkpoints store it
        evaluation = evaluate(self.module, valid, self.ctx, runner=self.runner)
        monitor, auc = self._monitor_value(evaluation)
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
        for observe in self.observers:
            observe(point)
        verdict = self.plateau.judge(
            len(result.history), monitor, auc, result.best and result.best.monitor_value
        )
        stop = False
        if verdict == "gain":
            result.best = point
            self._bad_validations = 0
            ckpt.save_checkpoint(
                self.checkpoints / ckpt.BEST,
                self.module,
                None,
                {
                    **self.meta,
                    "best_student": best_student(evaluation.metrics),
                    "valid": evaluation.metrics,
                    "step": step,
                },
            )
        elif verdict == "no_gain":
            self._bad_validations += 1
            decay_on_plateau(self.optimizer.param_groups, self.cfg.lr_decay_factor, self.cfg.min_lr)
            stop = self._bad_validations >= self.cfg.early_stop_patience
        result.stopped_early = stop
        self._save_step(result, step, window)
        return stop

    def _save_step(self, result: FitResult, step: int, window: _LossWindow) -> None:
        """A resumable checkpoint of this step (train.save_checkpoint), then keep_last rotation."""
        if not self.cfg.save_checkpoint:
            return
        average_norm_statistics(self.module)  # what is saved is what every rank continues with
        last_epoch_done = self._position == (self.cfg.epochs, 0)
        state = {
            "position": list(self._position),
            "steps": step,
            "finished": result.stopped_early or last_epoch_done,
            "stopped_early": result.stopped_early,
            "bad_validations": self._bad_validations,
            "best_auc": self.plateau.best_auc,
            "skipped_batches": result.skipped_batches,
            "history": [asdict(v) for v in result.history],
            "best_index": result.history.index(result.best) if result.best else None,
            "window": window.state(),
        }
        ckpt.save_checkpoint(
            self.checkpoints / ckpt.step_name(step),
            self.module,
            self.optimizer,
            {**self.meta, "trainer": state, "step": step},
        )
        ckpt.rotate(self.checkpoints, self.cfg.keep_last)

    def _restore(self, directory: Path, result: FitResult, window: _LossWindow) -> dict[str, Any]:
        """Load weights, optimizer, RNG and loop state from a step checkpoint; returns its state."""
        meta = ckpt.read_meta(directory)
        if "trainer" not in meta:
            raise ckpt.CheckpointError(
                f"{directory}: not a step checkpoint (no trainer state); resume from step-*/"
            )
        check_same_model(directory, meta["config"], self.meta.get("config", meta["config"]))
        ckpt.load_into(directory, self.module, self.optimizer)
        if meta["world_size"] == self.ctx.world_size:
            ckpt.restore_rng(directory)
        state = meta["trainer"]
        result.history = [Validation.from_dict(v) for v in state["history"]]
        if state["best_index"] is not None:
            result.best = result.history[state["best_index"]]
        result.steps = state["steps"]
        result.stopped_early = state["stopped_early"]
        result.skipped_batches = state["skipped_batches"]
        self._bad_validations = state["bad_validations"]
        self.plateau.best_auc = state.get("best_auc", float("-inf"))
        self._position = tuple(state["position"])
        window.load_state(state["window"])
        if self.ctx.is_main:
            logger.info("resumed from %s (step %d)", directory, result.steps)
        return {**state, "position": tuple(state["position"])}

    def _monitor_value(self, evaluation: EvalResult) -> tuple[float, float | None]:
        """The monitored value, higher is better, identical on every rank (rank 0's value):
        a head's validation AUC (minus its logloss, per monitor_metric), or minus the
        validation distillation loss; and the monitored head's AUC (None for distill)."""
        metrics = evaluation.metrics
        if self.cfg.monitor == "distill":
            return float(broadcast_object(-evaluation.losses["distill"])), None
        head = self.cfg.monitor  # ensemble, fused
        if head == "best_student":
            head = f"student_{best_student(metrics)}"
        auc = metrics[head]["auc"]
        value = (
            auc - metrics[head]["logloss"]
            if self.cfg.monitor_metric == "auc_minus_logloss"
            else auc
        )
        value, auc = broadcast_object((value, auc))
        return float(value), float(auc)

    def _finish(self, result: FitResult, step: int, stopped_early: bool, bar=None) -> FitResult:
        if bar is not None:
            bar.close()
        self.runner.detach()  # the module is called directly after fit (test split, export)
        if result.best is not None:
            ckpt.load_into(self.checkpoints / ckpt.BEST, self.module)
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

    def state(self) -> dict[str, Any]:
        """The sums as JSON (float32 values are exact as Python floats)."""
        return {
            "sums": {k: v.tolist() for k, v in self.sums.items()},
            "weight_sums": {k: v.tolist() for k, v in self.weight_sums.items()},
            "batches": self.batches,
            "samples": self.samples,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.sums = {k: torch.tensor(v) for k, v in state["sums"].items()}
        self.weight_sums = {k: torch.tensor(v) for k, v in state["weight_sums"].items()}
        self.batches, self.samples = state["batches"], state["samples"]

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
        if name in WEIGHT_NAMES:
            losses += f" {name}=[" + ",".join(f"{x:.3f}" for x in value) + "]"
    logger.info(
        "epoch %d step %d | valid AUC %s | train %s | %.0f samples/s",
        point.epoch,
        point.step,
        heads,
        losses,
        point.samples_per_sec,
    )


def _fail_here_for_tests(rank: int, step: int) -> None:
    """The FAIL_AT_STEP_ENV hook: exit without cleanup, as a killed process would."""
    target = os.environ.get(FAIL_AT_STEP_ENV)
    if not target or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    fail_rank, fail_step = target.split(":")
    if fail_rank in ("all", str(rank)) and step == int(fail_step):
        os._exit(17)
