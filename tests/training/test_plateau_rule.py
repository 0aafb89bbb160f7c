"""PlateauRule: which validations decay the LR and count towards early stopping."""

from __future__ import annotations

from recsys_kdef.training.early_stopping import PlateauRule


def _verdicts(rule: PlateauRule, points: list[tuple[float, float | None]]) -> list[str]:
    """Judge (monitor, auc) points in order, keeping the best monitored value as the trainer does."""
    best, out = None, []
    for i, (monitor, auc) in enumerate(points, start=1):
        verdict = rule.judge(i, monitor, auc, best)
        if verdict == "gain":
            best = monitor
        out.append(verdict)
    return out


def test_any_rise_is_a_gain_and_anything_else_is_no_gain_by_default():
    points = [(0.5, 0.8), (0.6, 0.81), (0.6, 0.82), (0.55, 0.83)]
    assert _verdicts(PlateauRule(), points) == ["gain", "gain", "no_gain", "no_gain"]


def test_min_delta_makes_a_small_rise_no_gain():
    points = [(0.5, None), (0.505, None), (0.52, None)]
    assert _verdicts(PlateauRule(min_delta=0.01), points) == ["gain", "no_gain", "gain"]


def test_the_warm_up_never_counts_but_still_keeps_the_best():
    points = [(0.5, None), (0.4, None), (0.45, None), (0.3, None)]
    assert _verdicts(PlateauRule(warmup=3), points) == ["gain", "neutral", "neutral", "no_gain"]


def test_the_auc_guard_ignores_a_calibration_dip_while_auc_rises():
    # AUC - logloss falls at 2 and 3 while AUC climbs (a logloss phase); at 4 AUC stalls too
    points = [(0.30, 0.828), (0.28, 0.835), (0.29, 0.841), (0.27, 0.840), (0.35, 0.850)]
    guarded = _verdicts(PlateauRule(auc_guard=True), points)
    assert guarded == ["gain", "neutral", "neutral", "no_gain", "gain"]
    plain = _verdicts(PlateauRule(auc_guard=False), points)
    assert plain[:4] == ["gain", "no_gain", "no_gain", "no_gain"]  # patience 2 stops at 3


def test_the_guard_compares_with_the_best_auc_so_far_not_the_last():
    points = [(0.30, 0.84), (0.28, 0.83), (0.27, 0.835)]  # 0.835 rose from 0.83, not from 0.84
    assert _verdicts(PlateauRule(auc_guard=True), points) == ["gain", "no_gain", "no_gain"]
