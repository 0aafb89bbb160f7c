"""Reliability bins hold about equal row counts, in score order, so predictions around a 9%
click rate get ten points (equal-width bins of 0..1 gave them two)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys_kdef.eval.metrics import RELIABILITY_BINS, EvalMetrics


def test_reliability_bins_split_the_rows_evenly_and_measure_each_bin():
    torch.manual_seed(0)
    n = 50_000
    p = torch.rand(n) * 0.18  # predictions in [0, 0.18), mean 0.09
    y = (torch.rand(n) < p).float()
    metrics = EvalMetrics(["h"], rank=0, world_size=1, with_gauc=False, curves=True)
    metrics.update(p[:, None], y)
    result = metrics.compute()["h"]
    bins = metrics.curves["h"]["reliability"]
    assert len(bins) == RELIABILITY_BINS
    rows = np.array([b[2] for b in bins])
    assert rows.sum() == n and rows.min() > 0.8 * n / RELIABILITY_BINS
    means = [b[0] for b in bins]
    assert means == sorted(means) and means[0] < 0.02 and means[-1] > 0.16
    # each bin's figures against the rows it holds (whole score bins of width 1/1000)
    edges = np.cumsum(rows)
    order = np.argsort(p.numpy(), kind="stable")
    first = 0
    for b, last in zip(bins, edges, strict=True):
        idx = order[first:last]
        assert b[0] == pytest.approx(float(p.numpy()[idx].astype(np.float64).mean()), rel=1e-4)
        assert b[1] == pytest.approx(float(y.numpy()[idx].astype(np.float64).mean()), abs=1e-12)
        first = last
    assert result["calibration"] == pytest.approx(float(p.sum() / y.sum()), rel=1e-6)
