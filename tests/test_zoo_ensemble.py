"""Heterogeneous ensembles: identical students are one batched group, a mixed KDEF ensemble
trains sharded on 2 gloo ranks, and every student exports and scores as inside the ensemble."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from multiprocess import run_multiprocess
from torch.utils._python_dispatch import TorchDispatchMode

from recsys_kdef.checkpoint.store import load_checkpoint
from recsys_kdef.config import ModelConfig, StudentSpec, load_config
from recsys_kdef.config.loading import from_dict
from recsys_kdef.data.reader import ParquetBatchReader, list_split_files
from recsys_kdef.data.schema import Schema
from recsys_kdef.models.ensemble import build_model
from recsys_kdef.models.towers import BatchedMLP
from recsys_kdef.models.zoo.base import StackedStudents
from recsys_kdef.serve.export import export_artifact
from recsys_kdef.serve.predict import Predictor

# a small version of the KDEF authors' latest mix (PNN + FINAL + ECN), 2 ECN students, the
# FINAL student with tables of its own dimension
MIX = (
    "[{arch: pnn, params: {hidden_units: [16]}},"
    " {arch: final, embedding_dim: 8, params: {block1_hidden_units: [16], block2_hidden_units: [8]}},"
    " {arch: ecn, count: 2, params: {num_cross_layers: 2}}]"
)


class CountOps(TorchDispatchMode):
    """Counts the aten ops a forward runs."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def test_identical_students_are_one_batched_group(tiny_dataset):
    schema = Schema.load(tiny_dataset)
    cfg = ModelConfig(
        embedding_dim=4,
        students=[
            StudentSpec(arch="mlp", count=4, params={"hidden_units": [8, 8]}),
            StudentSpec(arch="dcnv2", count=2, params={"parallel_dnn_hidden_units": [8]}),
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg, schema, device=torch.device("cpu"))
    mlp, dcn = model.towers.groups
    assert isinstance(mlp, BatchedMLP) and mlp.num_students == 4
    assert isinstance(dcn, StackedStudents) and dcn.num_students == 2
    batch = next(iter(ParquetBatchReader(list_split_files(tiny_dataset, "valid"), schema, 32)))
    model.eval()
    emb = torch.randn(4, 32, len(schema.sparse), 4)
    with torch.no_grad(), CountOps() as ops:
        logits, _ = mlp(emb, batch.dense)
    # 2 hidden layers and the head: one batched matmul each for all 4 students, not 4 x 3
    assert ops.counts.get("bmm", 0) + ops.counts.get("baddbmm", 0) == 3, ops.counts
    # and each student's slice is that student alone
    for k in range(4):
        one = BatchedMLP(1, mlp.weights[0].shape[1], [8, 8]).eval()
        one.load_state_dict({n: t[k : k + 1] for n, t in mlp.state_dict().items()})
        x = torch.cat([emb[k : k + 1].flatten(2), batch.dense.unsqueeze(0)], dim=2)
        with torch.no_grad():
            torch.testing.assert_close(one(x)[0][0], logits[k])
    out = model(batch.dense, batch.sparse)
    assert out.logits.shape == (32, 6)
    assert out.hidden.shape == (32, 6, max(mlp.output_dim, dcn.output_dim))


def _train_rank(ctx, path: str, out: str, students: str) -> None:
    from recsys_kdef.train import run

    cfg = load_config(
        [
            "--data.path",
            path,
            "--data.batch_size",
            "256",
            "--train.epochs",
            "4",
            "--train.dense_lr",
            "0.003",
            "--model.embedding_dim",
            "4",
            "--model.students",
            students,
            "--planner.sharding_types",
            "[table_wise, column_wise]",
            "--train.progress_bar",
            "false",
            "--train.output_dir",
            out,
        ]
    )
    logging.disable(logging.INFO)
    run(cfg, ctx)


def test_mixed_kdef_ensemble_trains_sharded_and_every_student_exports(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    run_multiprocess(
        _train_rank, world_size=2, timeout=600, path=str(tiny_dataset), out=str(out), students=MIX
    )
    report = json.loads((out / "metrics.json").read_text())
    assert report["world_size"] == 2
    test, bayes = report["test"], report["dataset"]["bayes_auc"]["test"]
    print({h: round(m["auc"], 4) for h, m in test.items()}, bayes)
    assert test["ensemble"]["auc"] > bayes - 0.05, (test["ensemble"]["auc"], bayes)
    for k in range(4):
        assert test[f"student_{k}"]["auc"] > bayes - 0.09, test[f"student_{k}"]
    assert_every_student_exports_as_inside(out, tiny_dataset, tmp_path)


def assert_every_student_exports_as_inside(out, dataset, tmp_path) -> None:
    """Each student of the run's checkpoint, exported alone, scores the test split as it
    does inside the trained ensemble."""
    ckpt = load_checkpoint(out)
    schema = Schema.from_json(ckpt["schema"])
    cfg = from_dict(ModelConfig, ckpt["config"]["model"], "model")
    # tables on the CPU from the start: to_empty would also wipe the buffers a checkpoint does
    # not hold (a sequence schema's position indices)
    full = build_model(cfg, schema, device=torch.device("cpu"))
    full.load_state_dict(ckpt["state_dict"])
    full.eval()
    parquet = list_split_files(dataset, "test")[0]
    batch = next(iter(ParquetBatchReader([parquet], schema, 10**6, training=False)))
    with torch.no_grad():
        inside = torch.sigmoid(full(batch.dense, batch.sparse).logits)  # (B, K)
    for k in range(inside.shape[1]):
        student = Predictor.load(export_artifact(out, tmp_path / f"s{k}", str(k)))
        assert student.model.towers.num_students == 1
        torch.testing.assert_close(student.predict(batch), inside[:, k], rtol=0, atol=1e-6)


# one of each student the FuxiCTR-derived zoo adds (MaskNet parallel, GDCN stacked as a group
# of 2), small enough to train in seconds
NEW_MIX = (
    "[{arch: wukong, params: {num_wukong_layers: 2, lcb_features: 4, fmb_features: 4,"
    " fmb_mlp_units: [16], mlp_hidden_units: [16]}},"
    " {arch: masknet, params: {model_type: ParallelMaskNet, parallel_block_dim: 16,"
    " dnn_hidden_units: [16]}},"
    " {arch: edcn, params: {num_cross_layers: 2, batch_norm: true}},"
    " {arch: gdcn, count: 2, params: {dnn_hidden_units: [16], num_cross_layers: 2}},"
    " {arch: gdcnp, params: {dnn_hidden_units: [16], num_cross_layers: 2}},"
    " {arch: afn, params: {dnn_hidden_units: [16], afn_hidden_units: [16]}},"
    " {arch: eulernet, params: {shape: [8]}}]"
)


@pytest.mark.slow
def test_the_new_students_train_sharded_and_each_exports_as_inside(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    run_multiprocess(
        _train_rank,
        world_size=2,
        timeout=600,
        path=str(tiny_dataset),
        out=str(out),
        students=NEW_MIX,
    )
    report = json.loads((out / "metrics.json").read_text())
    test, bayes = report["test"], report["dataset"]["bayes_auc"]["test"]
    print({h: round(m["auc"], 4) for h, m in test.items()}, bayes)
    assert test["ensemble"]["auc"] > 0.6, test["ensemble"]
    assert_every_student_exports_as_inside(out, tiny_dataset, tmp_path)


def test_the_plan_tool_plans_a_mixed_ensemble_with_each_students_dimension(tiny_dataset):
    from recsys_kdef.plan.__main__ import load, make_plan, parser

    args, overrides = parser().parse_known_args(
        ["--data", str(tiny_dataset), "--model.embedding_dim", "4", "--model.students", MIX]
    )
    plan = make_plan(load(args, overrides, None), "2x8", "h100")
    dims = {t.name: t.dim for t in plan.tables}
    fields = Schema.load(tiny_dataset).sparse_names
    assert dims == {
        **{f"s{k}__{f}": 4 for k in (0, 2, 3) for f in fields},
        **{f"s1__{f}": 8 for f in fields},
    }
