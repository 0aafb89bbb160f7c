"""Evaluation: metrics of every head over a split (evaluate, metrics, binned_auc, grouped_auc),
the run report and its plots; `python -m recsys_kdef.eval` is the offline job on a checkpoint."""
