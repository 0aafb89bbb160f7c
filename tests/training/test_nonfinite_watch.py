"""NonFiniteWatch: the first non-finite loss is kept on the device and raised at a check; a
check with no new steps since the last one costs no all-reduce."""

import pytest
import torch

from recsys_kdef.training import watches
from recsys_kdef.training.watches import NonFiniteLoss, NonFiniteWatch


def components(loss: float) -> dict[str, torch.Tensor]:
    return {"loss": torch.tensor(loss), "kd": torch.tensor(2 * loss)}


def test_the_first_nonfinite_step_is_named_and_repeated_checks_do_not_reduce(monkeypatch):
    reductions = []

    def counting(t):
        reductions.append(t.clone())
        return t

    monkeypatch.setattr(watches, "all_reduce_sum", counting)
    watch = NonFiniteWatch(torch.device("cpu"), rank=0)
    watch.check()  # nothing trained yet
    for step in (1, 2):
        watch.update(step, components(0.5))
    watch.check()
    watch.check()  # as at an epoch's end, right after the last log step's check
    assert len(reductions) == 1
    watch.update(3, components(float("nan")))
    watch.update(4, components(float("inf")))  # a later bad step does not replace the first
    with pytest.raises(NonFiniteLoss, match=r"at step 3 on rank 0 .*'loss': nan, 'kd': nan"):
        watch.check()
    assert len(reductions) == 2 and float(reductions[1]) == 1.0
