"""Collaborative objectives: a registry of loss modules, chosen by `objective.name`.

Each is an nn.Module with `from_config(objective_cfg, num_students)` and
`forward(output: EnsembleOutput, labels) -> ObjectiveOutput`. A new objective is one file
plus one line here.
"""

from __future__ import annotations

from torch import nn

from recsys_kdef.objectives.base import ObjectiveOutput
from recsys_kdef.objectives.cetnet import CETNetObjective
from recsys_kdef.objectives.kdef import KDEFObjective
from recsys_kdef.objectives.mean import MeanEnsembleObjective

OBJECTIVES: dict[str, type[nn.Module]] = {
    "mean": MeanEnsembleObjective,
    "kdef": KDEFObjective,
    "cetnet": CETNetObjective,
}

__all__ = ["OBJECTIVES", "ObjectiveOutput", "build_objective"]


def build_objective(cfg, num_students: int) -> nn.Module:
    """The objective named by `cfg.name` (an ObjectiveConfig)."""
    return OBJECTIVES[cfg.name].from_config(cfg, num_students)
