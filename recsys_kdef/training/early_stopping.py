"""When a validation counts as no gain (PlateauRule), and what no gain does to the learning
rates (decay_on_plateau); the trainer counts the patience and keeps the best weights."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PlateauRule:
    """Whether a validation is a gain (new best weights), no gain (LR decay, patience counts),
    or neither: inside the warm-up, or, with `auc_guard`, a fall of the monitored value while
    the head's AUC still rises (a calibration dip of AUC - logloss is not a plateau)."""

    min_delta: float = 0.0
    warmup: int = 0
    auc_guard: bool = False
    best_auc: float = float("-inf")

    def judge(self, index: int, monitor: float, auc: float | None, best: float | None) -> str:
        """`gain`, `no_gain` or `neutral` for the `index`-th validation (1-based)."""
        auc_rose = auc is not None and auc > self.best_auc + self.min_delta
        if auc is not None:
            self.best_auc = max(self.best_auc, auc)
        if best is None or monitor > best + self.min_delta:
            return "gain"
        if index <= self.warmup or (self.auc_guard and auc_rose):
            return "neutral"
        return "no_gain"


def decay_on_plateau(param_groups: list[dict], factor: float, min_lr: float) -> None:
    """One validation without gain: every group's lr times `factor`, not below `min_lr`.

    This is torch.optim.lr_scheduler.ReduceLROnPlateau(mode="max", factor, patience=0,
    threshold=0, min_lr, eps=0), step for step (tests/test_library_parity.py), written out
    because the trainer's own best value and bad-validation count already drive the best
    weights and early stopping and are resumed from the checkpoint's JSON: a scheduler would
    keep a second copy of both to save, restore and keep in agreement.
    """
    for group in param_groups:
        group["lr"] = max(group["lr"] * factor, min_lr)
