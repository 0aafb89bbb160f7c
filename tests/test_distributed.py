"""Real TorchRec sharding on 2 gloo ranks: the plan is applied, results match an unsharded
model, and one training step moves exactly what it should."""

from __future__ import annotations

import pytest
import torch
from multiprocess import run_multiprocess

from recsys_kdef.builders.job import checkpoint_meta
from recsys_kdef.builders.model import build_train_module
from recsys_kdef.builders.train_wrapper import EnsembleTrain
from recsys_kdef.checkpoint.store import load_full_state_dict
from recsys_kdef.config import load_config
from recsys_kdef.data import Schema, build_readers
from recsys_kdef.distributed.collectives import all_gather_rows
from recsys_kdef.distributed.optimizers import build_optimizer
from recsys_kdef.distributed.sharding import shard_model
from recsys_kdef.models.ensemble import build_model
from recsys_kdef.objectives import build_objective
from recsys_kdef.training.trainer import Trainer

K = 3


def setup(ctx, path, mode="per_model", sharding=("table_wise", "column_wise"), extra=()):
    cfg = load_config(
        [
            "--data.path",
            path,
            "--data.batch_size",
            "64",
            "--data.eval_batch_size",
            "64",
            "--model.num_students",
            str(K),
            "--model.embedding_dim",
            "4",
            "--model.embedding_mode",
            mode,
            "--model.tower.hidden_units",
            "[8]",
            "--model.tower.dropout",
            "0.0",
            *(["--planner.sharding_types", str(list(sharding))] if sharding else []),
            "--planner.min_partition",
            "2",
            "--train.sparse_lr",
            "0.1",
            *extra,
        ]
    )
    schema = Schema.load(path)
    readers = build_readers(cfg.data, schema, rank=ctx.rank, world_size=ctx.world_size, seed=0)
    torch.manual_seed(0)
    module, _ = build_train_module(cfg, schema)  # as train.py builds it
    dmp, plan = shard_model(module, ctx, cfg.planner, cfg.train, cfg.data.batch_size)
    return cfg, schema, readers, dmp, plan


def local_table_state(dmp):
    """{table: [(offsets, tensor copy)]} of the shards this rank holds."""
    out = {}
    for name, value in dmp.state_dict().items():
        if ".embedding_bags." not in name:
            continue
        table = name.split(".")[-2]
        if hasattr(value, "local_shards"):
            out[table] = [
                (tuple(s.metadata.shard_offsets), s.tensor.detach().clone())
                for s in value.local_shards()
            ]
        else:
            out[table] = [((0, 0), value.detach().clone())]
    return out


def assert_local_state_matches(dmp, full, atol=1e-5):
    """Every tensor (or local shard) of `dmp` equals the matching region of `full`."""
    for name, value in dmp.state_dict().items():
        want = full[next(k for k in full if name.endswith(k))]
        for shard in value.local_shards() if hasattr(value, "local_shards") else [None]:
            if shard is None:
                have, region = value, ...
            else:
                have = shard.tensor
                offsets, sizes = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                region = tuple(slice(o, o + n) for o, n in zip(offsets, sizes, strict=True))
            torch.testing.assert_close(have, want[region], rtol=0, atol=atol, msg=name)


def rank_of(placement) -> int:
    return (
        placement.rank()
        if hasattr(placement, "rank")
        else int(str(placement).split(":")[1].split("/")[0])
    )


def _check_plan_applied(ctx, path, mode):
    _, schema, _, dmp, plan = setup(ctx, path, mode)
    (module_plan,) = plan.plan.values()
    held = {}
    for table, shards in local_table_state(dmp).items():
        held[table] = sorted(offsets for offsets, _ in shards)
    for table, sharding in module_plan.items():
        planned = sorted(
            tuple(s.shard_offsets)
            for s in sharding.sharding_spec.shards
            if rank_of(s.placement) == ctx.rank
        )
        assert held.get(table, []) == planned, (table, held.get(table), planned)
    return {t: (s.sharding_type, sorted(s.ranks)) for t, s in module_plan.items()}, len(
        schema.sparse
    )


@pytest.mark.parametrize("mode", ["per_model", "shared"])
def test_the_planners_plan_is_what_gets_applied(tiny_dataset, mode):
    plans = run_multiprocess(_check_plan_applied, path=str(tiny_dataset), mode=mode)
    (plan, num_fields), (plan_1, _) = plans
    assert plan == plan_1  # every rank holds the same (collective) plan
    assert len(plan) == (K * num_fields if mode == "per_model" else num_fields)
    kinds = {kind for kind, _ in plan.values()}
    assert kinds <= {"table_wise", "column_wise"}
    assert {r for _, ranks in plan.values() for r in ranks} == {0, 1}


def _check_matches_unsharded(ctx, path, mode):
    cfg, schema, readers, dmp, _ = setup(ctx, path, mode)
    torch.manual_seed(1)
    full_model = build_model(cfg.model, schema, device=torch.device("cpu"))
    full = EnsembleTrain(full_model, build_objective(cfg.objective, full_model))
    load_full_state_dict(dmp, full.state_dict())
    dmp.eval()
    full.eval()
    batch = next(iter(readers.valid))
    with torch.no_grad():
        _, (_, sharded_out) = dmp(batch)
        _, (_, full_out) = full(batch)
    torch.testing.assert_close(sharded_out.logits, full_out.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(sharded_out.hidden, full_out.hidden, rtol=0, atol=1e-5)
    return float(full_out.logits.std())


@pytest.mark.parametrize("mode", ["per_model", "shared"])
def test_sharded_forward_equals_unsharded_with_the_same_weights(tiny_dataset, mode):
    spreads = run_multiprocess(_check_matches_unsharded, path=str(tiny_dataset), mode=mode)
    assert all(s > 0 for s in spreads)  # the logits are not trivially constant


def _check_training_step(ctx, path, sharding, l2):
    cfg, schema, readers, dmp, _ = setup(
        ctx, path, sharding=sharding, extra=["--train.embedding_l2", str(l2)]
    )
    single_valued = {f.name for f in schema.sparse if not f.multi_valued}
    optimizer = build_optimizer(dmp, dmp.plan, cfg.train)
    tables0 = local_table_state(dmp)
    towers0 = {n: p.detach().clone() for n, p in dmp.named_parameters() if "towers" in n}
    batch = next(iter(readers.train))
    touched = {
        f: set(all_gather_rows(jt.values()).tolist()) for f, jt in batch.sparse.to_dict().items()
    }

    optimizer.zero_grad()
    loss, _ = dmp(batch)
    loss.backward()
    optimizer.step()
    tables1 = local_table_state(dmp)
    moved_rows = 0
    for table, shards in tables0.items():
        field = table.split("__")[-1]
        for (_, before), (_, after) in zip(
            shards, tables1[table], strict=True
        ):  # all shards hold every row
            delta = after - before
            rows = torch.zeros(before.shape[0], dtype=torch.bool)
            rows[sorted(touched[field])] = True
            assert torch.all(delta[~rows] == 0), f"{table}: a row outside the batch moved"
            if l2 == 0:
                # rowwise Adagrad's first step has RMS exactly lr on every row with a gradient
                rms = delta[rows].pow(2).mean(dim=1).sqrt()
                rms = rms[rms > 0]
                assert len(rms) > 0
                torch.testing.assert_close(
                    rms, torch.full_like(rms, cfg.train.sparse_lr), rtol=1e-3, atol=0
                )
            elif field in single_valued:
                # strong L2 on the pooled vector of a one-id field: each row is pulled to zero
                cos = torch.nn.functional.cosine_similarity(delta[rows], -before[rows], dim=1)
                assert cos.min() > 0.99, cos.min()
            moved_rows += int((delta.abs().sum(dim=1) > 0).sum())
    assert moved_rows > 0
    for n, p in dmp.named_parameters():
        if "towers" in n:  # the biases before batch norm cancel in it: exactly zero gradient
            assert torch.equal(p.detach(), towers0[n]) == (".biases." in n), n

    for group in optimizer.param_groups:  # a learning rate of 0 must reach every kernel
        group["lr"] = 0.0
    optimizer.zero_grad()
    loss, _ = dmp(batch)
    loss.backward()
    optimizer.step()
    for table, shards in local_table_state(dmp).items():
        for (_, after), (_, before) in zip(shards, tables1[table], strict=True):
            assert torch.equal(after, before), f"{table} moved with lr 0"
    return moved_rows


@pytest.mark.parametrize(
    "sharding, l2",
    [
        (("table_wise", "column_wise"), 0.0),
        (("data_parallel",), 0.0),
        (("table_wise",), 1e4),
        (("data_parallel",), 1e4),
    ],
    ids=["fused", "data_parallel", "fused_l2", "data_parallel_l2"],
)
def test_one_training_step_moves_the_batch_rows_and_the_towers(tiny_dataset, sharding, l2):
    moved = run_multiprocess(_check_training_step, path=str(tiny_dataset), sharding=sharding, l2=l2)
    assert sum(moved) > 0


def _check_adam_on_cpu(ctx, path, l2):
    """Adam on CPU (and whole-table L2): the tables are made data_parallel, and 3 steps equal
    torch.optim.Adam on a dense copy of the model whose gradients are averaged by hand."""
    # no batch norm: the biases before it get ~1e-9 gradients, whose sign Adam turns into +-lr
    extra = ["--train.sparse_optimizer", "adam", "--train.sparse_lr", "0.01"]
    extra += ["--model.tower.batch_norm", "false"]
    extra += ["--train.embedding_l2", str(l2), "--train.embedding_l2_mode", "whole_table"]
    cfg, schema, readers, dmp, plan = setup(ctx, path, sharding=None, extra=extra)
    kinds = {o.sharding_type for module_plan in plan.plan.values() for o in module_plan.values()}
    assert kinds == {"data_parallel"}, kinds
    torch.manual_seed(1)
    ref_model = build_model(cfg.model, schema, device=torch.device("cpu"))
    ref = EnsembleTrain(ref_model, build_objective(cfg.objective, ref_model))
    load_full_state_dict(dmp, ref.state_dict())
    tables = [p for n, p in ref.named_parameters() if ".embedding_bags." in n]
    dense = [p for n, p in ref.named_parameters() if ".embedding_bags." not in n]
    ref_opt = [
        torch.optim.Adam(tables, lr=cfg.train.sparse_lr),
        torch.optim.Adam(dense, lr=cfg.train.dense_lr),
    ]
    optimizer = build_optimizer(dmp, plan, cfg.train)
    for _, batch in zip(range(3), readers.train):
        optimizer.zero_grad()
        dmp(batch)[0].backward()
        optimizer.step()
        for o in ref_opt:
            o.zero_grad()
        loss = ref(batch)[0]
        if l2:  # FuxiCTR's embedding_regularizer, written out: (l2 / 2) * ||E||^2 per table
            loss = loss + sum(l2 / 2 * w.pow(2).sum() for w in tables)
        loss.backward()
        for w in ref.parameters():
            torch.distributed.all_reduce(w.grad)
            w.grad /= ctx.world_size
        for o in ref_opt:
            o.step()
    got = {k: v for k, v in dmp.state_dict().items()}
    moved = 0
    for name, want in ref.state_dict().items():
        have = got[next(k for k in got if k.endswith(name))]
        torch.testing.assert_close(have, want, rtol=0, atol=1e-5, msg=name)
        moved += int(".embedding_bags." in name)
    return moved


@pytest.mark.parametrize("l2", [0.0, 0.5], ids=["adam", "adam_whole_table_l2"])
def test_adam_on_cpu_equals_torch_adam_on_a_dense_copy(tiny_dataset, l2):
    moved = run_multiprocess(_check_adam_on_cpu, path=str(tiny_dataset), l2=l2)
    assert all(m > 0 for m in moved)


def test_dense_tables_are_asked_for_only_when_needed_and_conflicts_are_named():
    from recsys_kdef.config import ConfigError
    from recsys_kdef.distributed.sharding import dense_tables_if_needed

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    plain = load_config([])
    assert dense_tables_if_needed(plain.planner, plain.train, cpu) is plain.planner
    adam = load_config(["--train.sparse_optimizer", "adam"])
    assert dense_tables_if_needed(adam.planner, adam.train, gpu) is adam.planner  # fused Adam
    assert dense_tables_if_needed(adam.planner, adam.train, cpu).sharding_types == ["data_parallel"]
    l2 = load_config(["--train.embedding_l2", "0.01", "--train.embedding_l2_mode", "whole_table"])
    assert dense_tables_if_needed(l2.planner, l2.train, gpu).sharding_types == ["data_parallel"]
    clash = load_config(
        ["--train.sparse_optimizer", "adam", "--planner.sharding_types", "[table_wise]"]
    )
    with pytest.raises(ConfigError, match="adam on CPU.*set it to \\[data_parallel\\]"):
        dense_tables_if_needed(clash.planner, clash.train, cpu)


def test_a_plan_that_shards_a_table_which_must_stay_dense_is_refused():
    """A plan file or constraints YAML can still shard a table; shard_model checks the plan."""
    from types import SimpleNamespace

    from recsys_kdef.config import ConfigError
    from recsys_kdef.distributed.sharding import _check_dense_tables, dense_tables_if_needed

    cfg = load_config(["--train.sparse_optimizer", "adam"])
    dense = dense_tables_if_needed(cfg.planner, cfg.train, torch.device("cpu"))
    plan = SimpleNamespace(
        tables=[
            SimpleNamespace(name="s0__c1", sharding_type="data_parallel"),
            SimpleNamespace(name="s0__c2", sharding_type="table_wise"),
        ]
    )
    with pytest.raises(ConfigError, match=r"\['s0__c2'\] are not data_parallel"):
        _check_dense_tables(dense, plan)
    plan.tables.pop()
    _check_dense_tables(dense, plan)  # every table dense: accepted
    _check_dense_tables(cfg.planner, SimpleNamespace(tables=[]))  # nothing asked: no check


def _check_decoupled_decay(ctx, path, sharding):
    """embedding_l2_mode = decoupled on fused (sharded) or data_parallel tables: 3 trainer steps
    equal SGD on a dense copy followed by scaling every row by (1 - lr * l2), untouched rows
    included."""
    l2 = 0.5
    extra = ["--train.sparse_optimizer", "sgd", "--train.embedding_l2", str(l2)]
    extra += ["--train.embedding_l2_mode", "decoupled", "--model.tower.batch_norm", "false"]
    cfg, schema, readers, dmp, plan = setup(ctx, path, sharding=sharding, extra=extra)
    torch.manual_seed(1)
    ref_model = build_model(cfg.model, schema, device=torch.device("cpu"))
    ref = EnsembleTrain(ref_model, build_objective(cfg.objective, ref_model))
    load_full_state_dict(dmp, ref.state_dict())
    tables = [p for n, p in ref.named_parameters() if ".embedding_bags." in n]
    dense = [p for n, p in ref.named_parameters() if ".embedding_bags." not in n]
    ref_dense_opt = torch.optim.Adam(dense, lr=cfg.train.dense_lr)
    trainer = Trainer(
        dmp, build_optimizer(dmp, plan, cfg.train), ctx, cfg.train, checkpoint_meta(cfg, schema)
    )
    lr, untouched = cfg.train.sparse_lr, None
    for i, batch in zip(range(3), readers.train):
        trainer.train_step(batch, i + 1)
        ref_dense_opt.zero_grad()
        for w in tables:
            w.grad = None
        ref(batch)[0].backward()
        for w in ref.parameters():
            torch.distributed.all_reduce(w.grad)
            w.grad /= ctx.world_size
        ref_dense_opt.step()
        with torch.no_grad():
            for w in tables:
                w.sub_(lr * w.grad).mul_(1 - lr * l2)
        untouched = [w.grad.abs().sum(dim=1) == 0 for w in tables]
    assert sum(int(u.sum()) for u in untouched) > 0  # the decay must reach rows without gradient
    assert_local_state_matches(dmp, ref.state_dict())
    return {o.sharding_type for module_plan in plan.plan.values() for o in module_plan.values()}


@pytest.mark.parametrize(
    "sharding", [("table_wise", "column_wise"), ("data_parallel",)], ids=["fused", "data_parallel"]
)
def test_decoupled_decay_scales_whole_tables_under_any_sharding(tiny_dataset, sharding):
    kinds = run_multiprocess(_check_decoupled_decay, path=str(tiny_dataset), sharding=sharding)
    assert kinds[0] <= set(sharding), kinds
