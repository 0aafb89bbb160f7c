"""The non-finite loss watch: nothing per step, a few ops and one all-reduce at each check."""

from __future__ import annotations

import torch

from recsys_kdef.distributed.collectives import all_reduce_sum


class NonFiniteLoss(RuntimeError):
    """A NaN/inf training loss (train.nonfinite = raise)."""


class NonFiniteWatch:
    """The first non-finite training loss since the start.

    `update` keeps the step's loss components (device scalars): no op and no host sync a step.
    `check` looks at the steps kept since the last check with a few ops and one all-reduce
    (none if there were none: every rank adds the same steps), and raises NonFiniteLoss on
    every rank if any rank saw one, naming the first step and its loss components. After
    `max_pending` steps without a check, `update` checks (so few tensors are ever kept).
    """

    def __init__(self, device: torch.device, rank: int, max_pending: int = 1024) -> None:
        self.device, self.rank, self.max_pending = device, rank, max_pending
        self._pending: list[tuple[int, dict[str, torch.Tensor]]] = []

    def update(self, step: int, components: dict[str, torch.Tensor]) -> None:
        self._pending.append((step, components))
        if len(self._pending) >= self.max_pending:
            self.check()

    def check(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        losses = torch.stack([next(iter(c.values())).float().reshape(()) for _, c in pending])
        bad = (losses - losses).ne(0)  # NaN for NaN or +-inf, 0 for a finite loss
        if not all_reduce_sum(bad.any().float().reshape(1)).item():
            return
        if not bad.any():
            raise NonFiniteLoss(
                f"non-finite training loss on another rank than {self.rank} (see its error); "
                "set train.nonfinite=skip to skip such batches"
            )
        step, components = pending[int(bad.nonzero()[0, 0])]
        parts = {name: v.float().reshape(()).item() for name, v in components.items()}
        raise NonFiniteLoss(
            f"non-finite training loss at step {step} on rank {self.rank} "
            f"(or another rank): {parts}; set train.nonfinite=skip to skip such batches"
        )


FAIL_AT_STEP_ENV = "RECSYS_KDEF_FAIL_AT_STEP"
"""Test hook: "RANK:STEP" (RANK may be `all`) makes that rank exit abruptly after STEP on the first attempt of an
elastic job (TORCHELASTIC_RESTART_COUNT 0), to test recovery from the last checkpoint."""
