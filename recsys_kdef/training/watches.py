"""The non-finite loss watch: a device flag per step, one all-reduce at each check."""

from __future__ import annotations

import torch

from recsys_kdef.distributed.collectives import all_reduce_sum


class NonFiniteLoss(RuntimeError):
    """A NaN/inf training loss (train.nonfinite = raise)."""


class NonFiniteWatch:
    """The first non-finite training loss since the start, kept on the device.

    `update` is a few device ops per step (no host sync); `check` is one all-reduce (none if
    no step was added since the last check: every rank adds the same steps), and raises
    NonFiniteLoss on every rank if any rank saw one, naming the first step and its loss
    components.
    """

    def __init__(self, device: torch.device, rank: int) -> None:
        self.device, self.rank = device, rank
        self.first_step = torch.zeros((), dtype=torch.long, device=device)  # 0: none yet
        self.values: torch.Tensor | None = None
        self.names: list[str] = []
        self._unchecked = False  # steps added since the last check

    def update(self, step: int, components: dict[str, torch.Tensor]) -> None:
        values = torch.stack([v.float().reshape(()) for v in components.values()])
        if self.values is None or len(values) != len(self.values):
            self.names, self.values = list(components), torch.zeros_like(values)
        first = ~torch.isfinite(values[0]) & (self.first_step == 0)
        self.first_step = torch.where(first, step, self.first_step)
        self.values = torch.where(first, values, self.values)
        self._unchecked = True

    def check(self) -> None:
        if not self._unchecked:
            return
        self._unchecked = False
        if not all_reduce_sum((self.first_step > 0).float().reshape(1)).item():
            return
        step = int(self.first_step)
        if not step:
            raise NonFiniteLoss(
                f"non-finite training loss on another rank than {self.rank} (see its error); "
                "set train.nonfinite=skip to skip such batches"
            )
        parts = dict(zip(self.names, self.values.tolist(), strict=True))
        raise NonFiniteLoss(
            f"non-finite training loss at step {step} on rank {self.rank} "
            f"(or another rank): {parts}; set train.nonfinite=skip to skip such batches"
        )
