"""This project's binned AUC against torchrec.metrics' compute_auc and torchmetrics' exact AUC:
value, seconds, state kept.

    python tools/bench_auc.py [--rows 1000000] [--json auc.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torchmetrics.functional.classification import binary_auroc
from torchrec.metrics.auc import compute_auc

from recsys_kdef.eval.binned_auc import BinnedAUC


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    n = args.rows
    y = (torch.rand(n) < 0.1).float()  # 10% click rate
    p = torch.sigmoid(torch.randn(n) + 1.5 * y - 2)
    start = time.perf_counter()
    ours = BinnedAUC(1)
    for i in range(0, n, 8192):  # batches as evaluation feeds them
        ours.update(p[i : i + 8192, None], y[i : i + 8192])
    auc, bound = ours.compute()
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    theirs = compute_auc(1, [p[None]], [y[None]], [torch.ones(1, n)])
    t_theirs = time.perf_counter() - start
    rows = [
        ("binned (recsys_kdef)", float(auc), t_ours, ours.counts.numel() * 8 / 1e6),
        ("torchrec compute_auc", float(theirs), t_theirs, 3 * n * 4 / 1e6),
        ("torchmetrics exact", float(binary_auroc(p, y.long())), float("nan"), float("nan")),
    ]
    print(
        f"{'method':<22}{'AUC':>11}{'seconds':>9}{'state MB':>10}   rows {n:,}, bound {float(bound):.1e}"
    )
    for name, value, seconds, mb in rows:
        print(f"{name:<22}{value:>11.7f}{seconds:>9.2f}{mb:>10.1f}")
    if args.json:
        keys = ("method", "auc", "seconds", "state_mb")
        with open(args.json, "w") as f:
            json.dump({"rows": n, "results": [dict(zip(keys, r)) for r in rows]}, f, indent=2)


if __name__ == "__main__":
    main()
