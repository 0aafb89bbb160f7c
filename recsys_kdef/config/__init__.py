"""Typed experiment config, loaded from YAML with `--section.key value` overrides."""

from __future__ import annotations

from collections.abc import Sequence

from recsys_kdef.config.loading import (
    ConfigError,
    apply_override,
    from_dict,
    parse_overrides,
    read_yaml,
    to_dict,
)
from recsys_kdef.config.sections import (
    CETNetConfig,
    DataConfig,
    ECKDConfig,
    ExperimentConfig,
    FusionConfig,
    KDEFConfig,
    ModelConfig,
    ObjectiveConfig,
    PlannerConfig,
    StudentSpec,
    SyntheticConfig,
    TowerConfig,
    TrainConfig,
)

__all__ = [
    "CETNetConfig",
    "ConfigError",
    "ECKDConfig",
    "FusionConfig",
    "DataConfig",
    "ExperimentConfig",
    "KDEFConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "PlannerConfig",
    "StudentSpec",
    "SyntheticConfig",
    "TowerConfig",
    "TrainConfig",
    "load_config",
    "to_dict",
]


def load_config(argv: Sequence[str]) -> ExperimentConfig:
    """`[--config FILE] [--section.key value ...]` -> ExperimentConfig (defaults where unset)."""
    rest: list[str] = []
    data: dict = {}
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] == "--config" or args[i].startswith("--config="):
            if args[i] == "--config":
                if i + 1 >= len(args):
                    raise ConfigError("--config needs a YAML file")
                path, i = args[i + 1], i + 2
            else:
                path, i = args[i].split("=", 1)[1], i + 1
            data = read_yaml(path)
        else:
            rest.append(args[i])
            i += 1
    for key, value in parse_overrides(rest):
        apply_override(data, key, value)
    return from_dict(ExperimentConfig, data)
