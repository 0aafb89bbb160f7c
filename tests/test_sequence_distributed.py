"""Sequence students on 2 gloo ranks: the target table a DIN student's history shares is
sharded by the planner like any other, the sharded forward equals the unsharded one, and a
training step moves the rows that only the history read; CETNet's InterFormer + DHEN trains
sharded on fake AmazonElectronics_x1 files to a test AUC well above chance, and each of its
students exports and scores as inside the ensemble."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from multiprocess import run_multiprocess
from test_distributed import local_table_state, rank_of
from test_zoo_ensemble import assert_every_student_exports_as_inside

from recsys_kdef.builders.train_wrapper import EnsembleTrain
from recsys_kdef.checkpoint.store import load_full_state_dict
from recsys_kdef.config import load_config
from recsys_kdef.data import Schema, build_readers
from recsys_kdef.data.prepare.__main__ import main as prepare_main
from recsys_kdef.data.prepare.fake import make_fake
from recsys_kdef.distributed.collectives import all_gather_rows
from recsys_kdef.distributed.optimizers import build_optimizer
from recsys_kdef.distributed.sharding import shard_model
from recsys_kdef.models.ensemble import build_model
from recsys_kdef.objectives import build_objective

STUDENTS = (
    "[{arch: din, params: {dnn_hidden_units: [8], attention_hidden_units: [4]}},"
    " {arch: mlp, params: {hidden_units: [8], net_dropout: 0.0}}]"
)


def _check_din_sharded(ctx, path):
    cfg = load_config(
        ["--data.path", path, "--data.batch_size", "64", "--data.eval_batch_size", "64"]
        + ["--model.num_students", "2", "--model.students", STUDENTS]
        + ["--model.embedding_dim", "4", "--planner.min_partition", "2"]
        + ["--planner.sharding_types", "[table_wise, column_wise]", "--train.sparse_lr", "0.1"]
    )
    schema = Schema.load(path)
    readers = build_readers(cfg.data, schema, rank=ctx.rank, world_size=ctx.world_size, seed=0)
    torch.manual_seed(0)

    def build():
        model = build_model(cfg.model, schema, device=torch.device("cpu"))
        return EnsembleTrain(model, build_objective(cfg.objective, model))

    module = EnsembleTrain(m := build_model(cfg.model, schema), build_objective(cfg.objective, m))
    dmp, plan = shard_model(module, ctx, cfg.planner, cfg.train, cfg.data.batch_size)
    (module_plan,) = plan.plan.values()
    planned = {
        t: (s.sharding_type, sorted({rank_of(x.placement) for x in s.sharding_spec.shards}))
        for t, s in module_plan.items()
    }

    full = build()
    load_full_state_dict(dmp, full.state_dict())
    dmp.eval()
    full.eval()
    batch = next(iter(readers.valid))
    with torch.no_grad():
        sharded_out, full_out = dmp(batch)[1][1], full(batch)[1][1]
    torch.testing.assert_close(sharded_out.logits, full_out.logits, rtol=0, atol=1e-5)

    dmp.train()
    optimizer = build_optimizer(dmp, dmp.plan, cfg.train)
    batch = next(iter(readers.train))
    ids = batch.sparse.to_dict()
    target = set(all_gather_rows(ids["c1"].values()).tolist())
    history = set(all_gather_rows(torch.cat([ids[f"hist_c1#{p}"].values() for p in range(4)])))
    only_history = sorted({int(i) for i in history} - target)
    before = local_table_state(dmp).get("s0__c1", [])
    optimizer.zero_grad()
    loss, _ = dmp(batch)
    loss.backward()
    optimizer.step()
    after = local_table_state(dmp).get("s0__c1", [])
    moved = []  # per local shard of s0__c1 (each holds all rows, some columns)
    for (_, b), (_, a) in zip(before, after, strict=True):
        moved.append(int(((a - b)[only_history].abs().sum(dim=1) > 0).sum()))
    return planned, moved, len(only_history), float(loss)


def test_a_din_student_trains_with_its_shared_history_table_sharded(seq_dataset):
    (plan, moved0, n_only, loss), (plan1, moved1, _, _) = run_multiprocess(
        _check_din_sharded, path=str(seq_dataset)
    )
    assert plan == plan1
    assert set(plan) == {f"s{k}__{f}" for k in range(2) for f in ("user_id", "c1", "c2")}
    assert {kind for kind, _ in plan.values()} <= {"table_wise", "column_wise"}
    assert {r for _, ranks in plan.values() for r in ranks} == {0, 1}
    # every row that only the DIN student's history read moved, in every shard of its table
    assert n_only > 0 and moved0 + moved1 and set(moved0 + moved1) == {n_only}
    assert torch.isfinite(torch.tensor(loss))


CONFIGS = Path(__file__).parents[1] / "configs"
# CETNet's best pair, small: InterFormer over the item and category histories, DHEN
SMALL_PAIR = (
    "[{arch: interformer, params: {num_layers: 1, num_heads: 2, dnn_hidden_units: [16]}},"
    " {arch: dhen, params: {num_layers: 1, modules: [self_attention, linear]}}]"
)


def _train_cetnet(ctx, path: str, out: str) -> None:
    from recsys_kdef.train import run

    cfg = load_config(
        ["--config", str(CONFIGS / "cetnet_interformer_dhen.yaml"), "--data.path", path]
        + ["--data.batch_size", "256", "--data.eval_batch_size", "1024"]
        + ["--model.embedding_dim", "8", "--model.students", SMALL_PAIR]
        + ["--train.epochs", "3", "--train.dense_lr", "0.003", "--train.progress_bar", "false"]
        + ["--planner.sharding_types", "[table_wise, column_wise]", "--train.output_dir", out]
    )
    logging.disable(logging.INFO)
    run(cfg, ctx)


@pytest.mark.slow
def test_cetnet_interformer_dhen_trains_sharded_on_amazon_layout_files(tmp_path):
    raw, data, out = tmp_path / "raw", tmp_path / "amazon", tmp_path / "run"
    make_fake("amazonelectronics", raw, 8000, seed=0)  # each user's liked category: the signal
    prepare_main(
        ["amazonelectronics", "--raw", str(raw), "--out", str(data), "--no-progress"]
        + ["--max-len", "*=20"]  # the last 20 of each history: a short test
    )
    schema = Schema.load(data)
    assert [f.max_len for f in schema.sequences] == [20, 20]
    run_multiprocess(_train_cetnet, world_size=2, timeout=900, path=str(data), out=str(out))
    report = json.loads((out / "metrics.json").read_text())
    assert report["world_size"] == 2
    test = {h: round(m["auc"], 4) for h, m in report["test"].items()}
    print(test)
    assert test["fused"] > 0.75, test  # chance is 0.5
    assert min(test["student_0"], test["student_1"]) > 0.7, test
    assert_every_student_exports_as_inside(out, data, tmp_path)
