"""Batches -> forward, backward and optimizer step: the plain loop, or TorchRec's
TrainPipelineSparseDist (train.pipeline).

The pipeline overlaps batch i+1's host-to-device copy (on CUDA, a side stream) and its
embedding input all-to-all with batch i's forward, backward and optimizer step; the
results are the plain loop's, batch for batch. It runs on CPU / gloo too (no streams
there: the same order of work, without the overlap). `BatchRunner.run` drives either over
one segment of batches and drains the pipeline at the segment's end, so that validation,
checkpoints and evaluation always see a model with no batch in flight.

A forward function returns (loss, out): the runner calls backward on the loss and steps the
optimizer when the module is training, and yields `out`. A loss of None means "no update
for this batch" (train.nonfinite = skip): no backward pass of the model and no change by
the optimizer, in both modes.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from recsys_kdef.data.batch import Batch

logger = logging.getLogger("recsys_kdef")

Forward = Callable[[Batch], tuple[torch.Tensor | None, Any]]


class BatchRunner:
    """Runs a forward function over batches: plain, or pipelined by TorchRec.

    `module` is the sharded (DMP) module the forward functions call; `optimizer` may be None
    for a runner that only evaluates. With `pipelined`, a model that TorchRec's tracer cannot
    follow (it must reach the sharded embedding collection through attributes of the batch)
    falls back to the plain loop, with a logged message.
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        device: torch.device,
        pipelined: bool = False,
    ) -> None:
        self.module = module
        self.optimizer = optimizer
        self.device = device
        self._forward: Forward = module
        self._pipeline: TrainPipelineSparseDist | None = None
        if pipelined:
            self._pipeline = TrainPipelineSparseDist(
                module,
                optimizer,
                device,
                execute_all_batches=True,
                custom_model_fwd=self._pipelined_forward,
            )

    @property
    def pipelined(self) -> bool:
        return self._pipeline is not None

    def run(self, batches: Iterable[Batch], forward: Forward) -> Iterator[Any]:
        """Yield forward(batch)[1] for every batch, in order; when the module is training, each
        batch is also a backward pass and an optimizer step (done before its result is
        yielded). Every batch is done when the iterator ends (the pipeline is drained)."""
        self._forward = forward
        if self._pipeline is None:
            yield from self._plain(batches)
        else:
            yield from self._pipelined(iter(batches))

    def detach(self) -> None:
        """Give the module its own forward back (the pipeline replaced the sharded collection's):
        call before using the module outside this runner. The next `run` attaches it again."""
        if self._pipeline is not None:
            self._pipeline.detach()

    def _plain(self, batches: Iterable[Batch]) -> Iterator[Any]:
        training = self.module.training
        for batch in batches:
            batch = batch.to(self.device, non_blocking=True)
            if training:
                self.optimizer.zero_grad()
            loss, out = self._forward(batch)
            if training and loss is not None:
                loss.backward()
                self.optimizer.step()
            yield out

    def _pipelined(self, batches: Iterator[Batch]) -> Iterator[Any]:
        pipeline = self._pipeline
        while True:
            try:
                out = pipeline.progress(batches)
            except StopIteration:
                return
            except Exception as e:
                if not _raised_by_tracing(e):
                    raise
                logger.warning(
                    "train.pipeline: TorchRec cannot trace this model (%s: %s); using the plain "
                    "loop instead",
                    type(e).__name__,
                    e,
                )
                self._pipeline = None
                pending = [b for b in pipeline.batches if b is not None]  # copied, not yet run
                pipeline.reset()
                yield from self._plain([*pending, *batches])
                return
            yield out

    def _pipelined_forward(self, batch: Batch) -> tuple[torch.Tensor, Any]:
        """The pipeline always runs backward and step when training: a batch without a loss gets
        a loss with no graph, whose backward makes no gradient; zero_grad left every gradient
        None, so the step changes nothing (tests/distributed/test_batch_runner.py checks the state)."""
        loss, out = self._forward(batch)
        if loss is None:
            loss = torch.zeros((), device=self.device, requires_grad=True)
        return loss, out


def _raised_by_tracing(error: Exception) -> bool:
    """True for an error of TorchRec's model rewrite (fx tracing), before any batch ran."""
    return any(
        frame.name == "_rewrite_model" for frame in traceback.extract_tb(error.__traceback__)
    )
