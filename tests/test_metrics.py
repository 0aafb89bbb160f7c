"""EvalMetrics against independent computations, in one process and split over 2 ranks."""

import math

import pytest
import torch
import torch.nn.functional as F
from multiprocess import run_multiprocess
from torchmetrics.functional.classification import binary_auroc

from recsys_kdef.metrics import EvalMetrics

HEADS = ["student_0", "student_1", "ensemble"]


def make_rows(n=3000, seed=0):
    g = torch.Generator().manual_seed(seed)
    groups = torch.randint(0, 60, (n,), generator=g)
    labels = (torch.rand(n, generator=g) < 0.25).float()
    noise = torch.rand(n, len(HEADS), generator=g)
    probs = (0.6 * noise + 0.35 * labels[:, None] * torch.tensor([0.5, 0.8, 1.0])).clamp(
        1e-4, 1 - 1e-4
    )
    return probs, labels, groups


def reference(probs, labels, groups):
    out = {}
    base = labels.mean().item()
    entropy = -(base * math.log(base) + (1 - base) * math.log(1 - base))
    for i, h in enumerate(HEADS):
        p = probs[:, i]
        logloss = F.binary_cross_entropy(p.double(), labels.double()).item()
        per_group = [
            binary_auroc(p[groups == u], labels[groups == u].long()).item()
            for u in groups.unique()
            if 0 < labels[groups == u].mean() < 1
        ]
        out[h] = {
            "auc": binary_auroc(p, labels.long()).item(),
            "logloss": logloss,
            "ne": logloss / entropy,
            "gauc": sum(per_group) / len(per_group),
        }
    return out


def assert_matches(got, want):
    for h in HEADS:
        for key in ("auc", "logloss", "ne", "gauc"):
            assert got[h][key] == pytest.approx(want[h][key], abs=2e-5), (h, key)


def test_one_process_matches_independent_computations():
    probs, labels, groups = make_rows()
    metrics = EvalMetrics(HEADS, rank=0, world_size=1)
    for chunk in torch.arange(len(labels)).split(700):  # uneven batches
        metrics.update(probs[chunk], labels[chunk], groups[chunk])
    assert_matches(metrics.compute(), reference(probs, labels, groups))


def _rank_metrics(ctx):
    probs, labels, groups = make_rows()
    cut = 1100  # rank 0 gets fewer rows; every group has rows on both ranks
    part = slice(0, cut) if ctx.rank == 0 else slice(cut, None)
    metrics = EvalMetrics(HEADS, rank=ctx.rank, world_size=ctx.world_size)
    metrics.update(probs[part], labels[part], groups[part])
    return metrics.compute()


def test_two_ranks_give_the_metrics_of_all_rows():
    probs, labels, groups = make_rows()
    got = run_multiprocess(_rank_metrics)
    want = reference(probs, labels, groups)
    for per_rank in got:
        assert_matches(per_rank, want)
