"""CETNet's Table 1 configs (and the KDEF one over the same students) load with strict keys,
build with per-model tables on a small sequence schema, and give a finite loss on a batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recsys_kdef.builders.train_wrapper import EnsembleTrain
from recsys_kdef.config import load_config
from recsys_kdef.data import Schema, build_readers
from recsys_kdef.models.ensemble import build_model
from recsys_kdef.objectives import build_objective

CONFIGS = Path(__file__).parents[1] / "configs"
TABLE1 = {
    "cetnet_interformer_dhen": ("interformer", "dhen"),
    "cetnet_interformer_dcnv2": ("interformer", "dcnv2"),
    "cetnet_interformer_interformer": ("interformer", "interformer"),
    "cetnet_din_dien": ("din", "dien"),
    "kdef_interformer_dhen": ("interformer", "dhen"),
}


@pytest.mark.parametrize("name", sorted(TABLE1))
def test_each_config_loads_and_builds_on_a_sequence_schema(name, seq_dataset):
    cfg = load_config(["--config", str(CONFIGS / f"{name}.yaml")])
    assert cfg.data.path == "data/amazonelectronics"
    assert cfg.model.embedding_mode == "per_model"
    assert cfg.objective.name == name.split("_")[0]
    archs = tuple(s.arch for s in cfg.model.students for _ in range(s.count))
    assert archs == TABLE1[name]
    schema = Schema.load(seq_dataset)  # hist_c1, a sequence of c1
    torch.manual_seed(0)
    model = build_model(cfg.model, schema, device=torch.device("cpu"))
    tables = {c.name for c in model.sparse_arch.embedding_bag_collection.embedding_bag_configs()}
    fields = [f.name for f in schema.sparse if f.sequence_of is None]
    assert tables == {f"s{k}__{f}" for k in range(2) for f in fields}  # each model its own
    module = EnsembleTrain(
        model,
        build_objective(cfg.objective, model),
        aux_loss_weight=cfg.objective.aux_loss_weight,
    )
    cfg.data.path = str(seq_dataset)
    batch = next(iter(build_readers(cfg.data, schema, rank=0, world_size=1, seed=0).train))
    loss, (result, output) = module(batch)
    assert output.logits.shape == (cfg.data.batch_size, 2)
    assert torch.isfinite(loss)
    assert ("aux" in result.components) == ("dien" in archs)
    if cfg.objective.name == "cetnet":
        assert output.fused_logit is not None
