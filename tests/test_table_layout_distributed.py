"""Stacked per-model tables sharded by the planner on 2 gloo ranks: the same forward and the
same SGD / Adam steps as separate tables with the same weights, and checkpoints that load back."""

from __future__ import annotations

import pytest
import torch
from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode
from multiprocess import run_multiprocess
from test_distributed import assert_local_state_matches, setup

from recsys_kdef.builders.job import checkpoint_meta
from recsys_kdef.builders.train_wrapper import EnsembleTrain
from recsys_kdef.checkpoint.store import (
    load_full_model_state,
    load_full_state_dict,
    load_into,
    save_checkpoint,
)
from recsys_kdef.distributed.optimizers import build_optimizer
from recsys_kdef.models.ensemble import build_model
from recsys_kdef.models.table_layout import stack_state_dict
from recsys_kdef.objectives import build_objective


def _sharded(ctx, path, layout, optimizer, sharding):
    extra = ["--model.table_layout", layout, "--train.sparse_optimizer", optimizer]
    extra += ["--model.tower.batch_norm", "false"]  # Adam turns ~1e-9 bias gradients into +-lr
    return setup(ctx, path, sharding=sharding, extra=extra)


def _check_stacked(ctx, path, tmp, optimizer, sharding):
    cfg, schema, readers, separate, _ = _sharded(ctx, path, "separate", optimizer, sharding)
    stacked_cfg, _, _, stacked, plan = _sharded(ctx, path, "stacked", optimizer, sharding)
    metas = {
        "separate": checkpoint_meta(cfg, schema),
        "stacked": checkpoint_meta(stacked_cfg, schema),
    }
    kinds = {o.sharding_type for p in plan.plan.values() for o in p.values()}
    torch.manual_seed(1)
    ref_model = build_model(cfg.model, schema, device=torch.device("cpu"))
    full = EnsembleTrain(ref_model, build_objective(cfg.objective, ref_model)).state_dict()
    load_full_state_dict(separate, full)
    load_full_state_dict(stacked, stack_state_dict(full))

    batch = next(iter(readers.valid))
    outs = []
    for dmp in (separate, stacked):
        dmp.eval()
        with torch.no_grad():
            outs.append(dmp(batch)[1][1].logits)
        dmp.train()
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-5)

    saved = {}
    for name, dmp in (("separate", separate), ("stacked", stacked)):
        opt = build_optimizer(dmp, dmp.plan, cfg.train)
        for _, b in zip(range(2), readers.train):
            opt.zero_grad()
            dmp(b)[0].backward()
            opt.step()
        saved[name] = save_checkpoint(f"{tmp}/{name}", dmp, opt, metas[name])
    after = {n: load_full_model_state(d, metas[n]["model_prefix"]) for n, d in saved.items()}
    before = stack_state_dict(ref_model.state_dict())
    want = stack_state_dict(after["separate"])
    assert set(want) == set(after["stacked"])
    moved = 0
    for key, value in after["stacked"].items():
        torch.testing.assert_close(value, want[key], rtol=0, atol=1e-5, msg=key)
        if "stack__" in key:
            moved += int((value != before[key]).any())

    # a stacked checkpoint loads into a fresh stacked model (another seed, another sharding)
    _, _, _, fresh, _ = _sharded(ctx, path, "stacked", optimizer, sharding)
    load_into(saved["stacked"], fresh)
    assert_local_state_matches(fresh, after["stacked"])
    # ids are checked where they are read (tests/data/test_reader.py): the kernels do not
    checks = {
        m.bounds_check_mode_int
        for sharded in stacked.modules()
        for lookup in getattr(sharded, "_lookups", [])  # a plain list: not in .modules()
        for m in lookup.modules()
        if hasattr(m, "bounds_check_mode_int")
    }
    return moved, sorted(kinds), sorted(checks)


@pytest.mark.slow
@pytest.mark.parametrize(
    "optimizer, sharding",
    [("sgd", ("table_wise", "column_wise")), ("adam", None)],
    ids=["fused_sgd", "adam_data_parallel"],
)
def test_stacked_tables_shard_train_and_load_as_separate_ones(
    tiny_dataset, tmp_path, optimizer, sharding
):
    results = run_multiprocess(
        _check_stacked,
        path=str(tiny_dataset),
        tmp=str(tmp_path),
        optimizer=optimizer,
        sharding=sharding,
    )
    for moved, kinds, checks in results:
        assert checks == ([] if optimizer == "adam" else [BoundsCheckMode.NONE.value])
        assert moved > 0  # the steps moved the stacked tables
        allowed = {"data_parallel"} if optimizer == "adam" else {"table_wise", "column_wise"}
        assert set(kinds) <= allowed, kinds
