"""Collaborative objectives: a registry of loss modules, chosen by `objective.name`.

Each is an nn.Module with `from_config(objective_cfg, model)` (the built model, for sizes) and
`forward(output: EnsembleOutput, labels) -> ObjectiveOutput`. A new objective is one file,
one line here, and its name in recsys_kdef.config.sections.ObjectiveName (with options: their
dataclass and field in ObjectiveConfig there); config imports no objective code, and a test keeps
ObjectiveName equal to OBJECTIVES.
"""

from __future__ import annotations

from torch import nn

from recsys_kdef.objectives.base import ObjectiveOutput
from recsys_kdef.objectives.cetnet import CETNetObjective
from recsys_kdef.objectives.eckd import ECKDObjective
from recsys_kdef.objectives.kdef import KDEFObjective
from recsys_kdef.objectives.mean import MeanEnsembleObjective

OBJECTIVES: dict[str, type[nn.Module]] = {
    "mean": MeanEnsembleObjective,
    "kdef": KDEFObjective,
    "cetnet": CETNetObjective,
    "eckd": ECKDObjective,
}

__all__ = ["OBJECTIVES", "ObjectiveOutput", "build_objective"]


def build_objective(cfg, model: nn.Module) -> nn.Module:
    """The objective named by `cfg.name` (an ObjectiveConfig) for the built `model`."""
    return OBJECTIVES[cfg.name].from_config(cfg, model)
