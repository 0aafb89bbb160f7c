"""Where the project writes out what a library does, it agrees with the library: the plateau
LR decay with torch's ReduceLROnPlateau, the binned AUC with torchrec.metrics' AUC."""

from __future__ import annotations

import pytest
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchrec.metrics.auc import compute_auc

from recsys_kdef.eval.binned_auc import BinnedAUC
from recsys_kdef.training.early_stopping import decay_on_plateau


def test_plateau_decay_is_reduce_lr_on_plateau_step_for_step():
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    ours = torch.optim.SGD(
        [{"params": [params[0]], "lr": 1e-3}, {"params": [params[1]], "lr": 0.05}]
    )
    theirs = torch.optim.SGD(
        [{"params": [params[0]], "lr": 1e-3}, {"params": [params[1]], "lr": 0.05}]
    )
    scheduler = ReduceLROnPlateau(theirs, mode="max", factor=0.1, patience=0, threshold=0,
                                  min_lr=1e-6, eps=0)  # fmt: skip
    best = None
    monitor = [0.70, 0.72, 0.72, 0.71, 0.73, 0.60, 0.60, 0.60, 0.60, 0.74]  # ties are no gain
    decays = 0
    for value in monitor:
        scheduler.step(value)
        if best is not None and value <= best:
            decay_on_plateau(ours.param_groups, 0.1, 1e-6)
            decays += 1
        best = value if best is None else max(best, value)
        assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in theirs.param_groups]
    assert decays == 6 and ours.param_groups[0]["lr"] == 1e-6  # min_lr reached and held


def test_binned_auc_matches_torchrec_within_its_bound():
    torch.manual_seed(0)
    n = 100_000
    y = (torch.rand(n) < 0.1).float()
    p = torch.sigmoid(torch.randn(n) + 1.5 * y - 2)
    ours = BinnedAUC(1)
    ours.update(p[:, None], y)
    auc, bound = ours.compute()
    theirs = compute_auc(1, [p[None]], [y[None]], [torch.ones(1, n)])
    assert abs(float(auc) - float(theirs)) <= float(bound) + 1e-7 and float(bound) < 1e-4


def test_ne_matches_torchrec_compute_ne():
    """NE (logloss over the base rate's entropy) as torchrec.metrics.ne computes it, from the
    running sums EvalMetrics keeps instead of NEMetric's per-row state."""
    from torchrec.metrics.ne import compute_cross_entropy, compute_ne

    from recsys_kdef.eval.metrics import EPS, EvalMetrics

    torch.manual_seed(1)
    n = 50_000
    y = (torch.rand(n) < 0.08).double()
    p = torch.sigmoid(torch.randn(n) + 2.0 * y - 2.5).double()
    ours = EvalMetrics(["h"], rank=0, world_size=1, with_gauc=False)
    ours.update(p[:, None], y)
    ce = compute_cross_entropy(y, p, torch.ones(n, dtype=torch.float64), EPS)
    pos, neg = y.sum(), (1 - y).sum()
    theirs = compute_ne(ce.sum(), torch.tensor(float(n)), pos, neg, EPS)
    assert ours.compute()["h"]["ne"] == pytest.approx(float(theirs), rel=1e-9)
