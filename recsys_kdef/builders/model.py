"""The module training shards: the model `cfg.objective` trains (ECKD: the student with its
teachers, pretrained ones rebuilt from their checkpoints) wrapped with its objective.
Single-device, tables on `meta`; recsys_kdef.builders.job shards it.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys_kdef.builders.train_wrapper import EnsembleTrain
from recsys_kdef.checkpoint.store import load_checkpoint
from recsys_kdef.config import ExperimentConfig, ModelConfig
from recsys_kdef.config.loading import from_dict
from recsys_kdef.data.schema import Schema
from recsys_kdef.models.ensemble import build_model
from recsys_kdef.models.teacher_student import TeacherStudentModel
from recsys_kdef.objectives import build_objective


def build_train_module(
    cfg: ExperimentConfig, schema: Schema
) -> tuple[EnsembleTrain, list[dict[str, torch.Tensor]]]:
    """The module the planner shards (model + objective, tables on `meta`), and the weights of
    pretrained ECKD teachers to load after sharding. The plan tool plans this same module."""
    model, teacher_weights = build_training_model(cfg, schema)
    objective = build_objective(cfg.objective, model)
    module = EnsembleTrain(
        model,
        objective,
        embedding_l2=cfg.train.embedding_l2,
        l2_mode=cfg.train.embedding_l2_mode,
        aux_loss_weight=cfg.objective.aux_loss_weight,
    )
    if cfg.train.compile:
        module.compile_dense()
    return module, teacher_weights


def model_prefix(cfg: ExperimentConfig) -> str:
    """Where the (student) EnsembleModel's weights sit in a train module's state dict."""
    return "model.student." if cfg.objective.name == "eckd" else "model."


def build_training_model(
    cfg: ExperimentConfig, schema: Schema
) -> tuple[nn.Module, list[dict[str, torch.Tensor]]]:
    """The model `cfg.objective` trains, and the full weights of each pretrained teacher.

    Plain objectives train `build_model(cfg.model)`. ECKD wraps it as the student with
    teachers: `cotrain` builds `objective.eckd.teacher_model`; `pretrain` rebuilds each
    checkpoint's (student) model from the config stored with it, frozen. The teachers'
    weights are returned to be loaded after sharding (load_full_state_dict).
    """
    student = build_model(cfg.model, schema)
    if cfg.objective.name != "eckd":
        return student, []
    eckd = cfg.objective.eckd
    if eckd.schedule == "cotrain":
        return TeacherStudentModel(student, [build_model(eckd.teacher_model, schema)], False), []
    teachers, weights = [], []
    for path in eckd.teachers:
        ckpt = load_checkpoint(path)
        schema.check_compatible(Schema.from_json(ckpt["schema"]), f"teacher {path}")
        teacher_cfg = from_dict(ModelConfig, ckpt["config"]["model"], "model")
        teachers.append(build_model(teacher_cfg, schema))
        weights.append(ckpt["state_dict"])
    return TeacherStudentModel(student, teachers, frozen_teachers=True), weights
