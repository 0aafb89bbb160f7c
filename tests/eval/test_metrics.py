"""EvalMetrics against independent computations, in one process and split over 2 ranks."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from multiprocess import run_multiprocess
from torchmetrics.functional.classification import binary_auroc

from recsys_kdef.eval.grouped_auc import ROWS_PER_PARTITION, GroupRows
from recsys_kdef.eval.metrics import EvalMetrics

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


# Bounded state: binned AUC with its error bound, gAUC rows spilled to partition files.


def exact_auc(probs, labels):
    """Mann-Whitney AUC with ties counted 1/2: mean over (positive, negative) pairs."""
    pos, neg = probs[labels == 1].double(), probs[labels == 0].double()
    above = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    return above.mean().item()


@pytest.mark.parametrize("scores", ["ctr_logits", "tiny_probabilities", "rounded_ties"])
def test_binned_auc_is_within_its_bound_of_the_exact_auc(scores):
    g = torch.Generator().manual_seed(3)
    n = 6000
    labels = (torch.rand(n, generator=g) < 0.1).float()
    logits = torch.randn(n, 3, generator=g) + labels[:, None] * torch.tensor([0.1, 0.7, 2.0])
    if scores == "ctr_logits":  # clicks around 5%, as in CTR data
        probs = torch.sigmoid(logits - 3)
    elif scores == "tiny_probabilities":  # 1e-7 .. 1e-4: bins scale with the score
        probs = torch.sigmoid(logits - 13)
    else:  # few distinct scores: many tied pairs, which the bound must cover
        probs = (torch.sigmoid(logits) * 20).round() / 20
    metrics = EvalMetrics(HEADS, rank=0, world_size=1, with_gauc=False)
    for chunk in torch.arange(n).split(1000):
        metrics.update(probs[chunk], labels[chunk])
    got = metrics.compute()
    for i, h in enumerate(HEADS):
        want = exact_auc(probs[:, i], labels)
        assert abs(got[h]["auc"] - want) <= got[h]["auc_bound"] + 1e-12, h
        if scores != "rounded_ties":  # distinct scores: a bound far below any AUC difference
            assert got[h]["auc_bound"] < 2e-5, h
        else:  # rounded scores: exact ties are exact in bins too (both count 1/2)
            assert got[h]["auc"] == pytest.approx(want, abs=1e-12)


def make_many_groups(n=24000, num_groups=4000, seed=5):
    g = torch.Generator().manual_seed(seed)
    groups = torch.randint(0, num_groups, (n,), generator=g) * 7919 + 10**12  # large, strided ids
    labels = (torch.rand(n, generator=g) < 0.3).float()
    probs = torch.sigmoid(torch.randn(n, len(HEADS), generator=g) + labels[:, None])
    return probs, labels, groups


def reference_gauc(probs, labels, groups):
    order = torch.argsort(groups, stable=True)
    probs, labels, groups = probs[order], labels[order], groups[order]
    _, sizes = torch.unique_consecutive(groups, return_counts=True)
    per_head = [[] for _ in HEADS]
    for p, y in zip(probs.split(sizes.tolist()), labels.split(sizes.tolist()), strict=True):
        for i in range(len(HEADS)):  # TorchRec's rule: skip one-class and constant-score groups
            if 0 < y.mean() < 1 and p[:, i].unique().numel() > 1:
                per_head[i].append(exact_auc(p[:, i], y))
    return [sum(a) / len(a) for a in per_head]


def test_gauc_counts_tied_scores_as_half_and_skips_constant_groups():
    probs, labels, groups = make_many_groups(n=6000, num_groups=500)
    probs = (probs * 4).round() / 4  # 5 distinct scores: ties and some constant groups
    metrics = EvalMetrics(HEADS, rank=0, world_size=1)
    for chunk in torch.arange(len(labels)).split(1000):
        metrics.update(probs[chunk], labels[chunk], groups[chunk])
    got = metrics.compute()
    for h, want in zip(HEADS, reference_gauc(probs, labels, groups), strict=True):
        assert got[h]["gauc"] == pytest.approx(want, abs=1e-12), h


def _rank_spilled_gauc(ctx, spill_dir):
    probs, labels, groups = make_many_groups()
    part = slice(ctx.rank, None, 2)  # every group has rows on both ranks
    partitions = 6  # as if the split had 6 * ROWS_PER_PARTITION rows: 3 rounds of 2
    metrics = EvalMetrics(
        HEADS,
        rank=ctx.rank,
        world_size=2,
        spill_dir=spill_dir,
        expected_rows=6 * ROWS_PER_PARTITION,
    )
    for chunk in torch.arange(len(labels))[part].split(997):
        metrics.update(probs[chunk], labels[chunk], groups[chunk])
    spilled = sorted(p.name for p in Path(spill_dir).glob(f"gauc-rank{ctx.rank}-*/part-*.bin"))
    result = metrics.compute()
    metrics.close()
    left = list(Path(spill_dir).glob(f"gauc-rank{ctx.rank}-*"))
    return result, len(spilled), partitions, left


def test_spilled_gauc_over_two_ranks_equals_the_exact_gauc(tmp_path):
    probs, labels, groups = make_many_groups()
    want = reference_gauc(probs, labels, groups)
    for result, spilled, partitions, left in run_multiprocess(
        _rank_spilled_gauc, spill_dir=str(tmp_path)
    ):
        assert spilled == partitions  # every partition got rows, in its own file
        assert left == []  # close() removed the files
        for i, h in enumerate(HEADS):
            assert result[h]["gauc"] == pytest.approx(want[i], abs=1e-6), h
            assert abs(result[h]["auc"] - exact_auc(probs[:, i], labels)) <= result[h]["auc_bound"]


def test_spill_files_are_removed_when_evaluation_fails(tmp_path):
    probs, labels, groups = make_many_groups(n=2000)
    rows = GroupRows(len(HEADS), partitions=4, directory=tmp_path)
    with pytest.raises(RuntimeError):
        try:
            rows.add(groups, labels, probs)
            assert len(list(tmp_path.glob("gauc-*/part-*.bin"))) == 4
            raise RuntimeError("the model failed mid-evaluation")
        finally:
            rows.close()
    assert list(tmp_path.iterdir()) == []
