"""train.pipeline: TorchRec's TrainPipelineSparseDist on 2 gloo ranks gives the plain loop's
losses step for step, and the same evaluation."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from multiprocess import run_multiprocess
from test_distributed import local_table_state, setup

from recsys_kdef.builders.job import checkpoint_meta
from recsys_kdef.distributed.collectives import norm_buffers
from recsys_kdef.distributed.optimizers import build_optimizer
from recsys_kdef.eval.evaluate import evaluate
from recsys_kdef.training.trainer import Trainer

STEPS = 6


def _run(ctx, path, extra: list[str]):
    """6 training steps in two segments, as fit runs them between checkpoints (the pipeline
    drains and refills); with dropout, so the RNG must be drawn in the same order."""
    cfg, schema, readers, dmp, plan = setup(
        ctx, path, extra=[*extra, "--model.tower.dropout", "0.2"]
    )
    trainer = Trainer(
        dmp, build_optimizer(dmp, plan, cfg.train), ctx, cfg.train, checkpoint_meta(cfg, schema)
    )
    torch.manual_seed(10 + ctx.rank)
    batches = iter(readers.train)
    steps = [*trainer.train_steps(itertools.islice(batches, STEPS // 2))]
    steps += trainer.train_steps(itertools.islice(batches, STEPS - STEPS // 2))
    return trainer, readers, [float(s.components["loss"]) for s in steps]


def _losses(ctx, path, pipeline: bool, nonfinite: str, students: list[str] = ()):
    extra = ["--train.pipeline", str(pipeline).lower(), "--train.nonfinite", nonfinite, *students]
    trainer, readers, losses = _run(ctx, path, extra)
    evaluation = evaluate(trainer.module, readers.valid, ctx, runner=trainer.runner)
    assert trainer.runner.pipelined == pipeline  # no silent fallback to the plain loop
    return losses, evaluation.metrics, evaluation.rows


def _compare(ctx, path, nonfinite, students=()):
    plain = _losses(ctx, path, pipeline=False, nonfinite=nonfinite, students=students)
    pipelined = _losses(ctx, path, pipeline=True, nonfinite=nonfinite, students=students)
    return plain, pipelined


# heterogeneous students (vmapped groups, dropout drawn per student) go through the pipeline too
MIXED = [
    "--model.students",
    "[{arch: pnn, params: {hidden_units: [8], net_dropout: 0.2}},"
    " {arch: ecn, count: 2, params: {num_cross_layers: 2, net_dropout: 0.2}}]",
]


@pytest.mark.parametrize(
    "nonfinite, students",
    [("raise", ()), ("skip", ()), ("raise", MIXED)],
    ids=["raise", "skip", "mixed"],
)
def test_the_pipelined_loop_gives_the_plain_loops_losses(tiny_dataset, nonfinite, students):
    ranks = run_multiprocess(
        _compare, path=str(tiny_dataset), nonfinite=nonfinite, students=students
    )
    for (plain, plain_eval, rows), (pipelined, pipe_eval, pipe_rows) in ranks:
        assert len(plain) == STEPS and len(set(plain)) == STEPS  # real steps, the loss moves
        torch.testing.assert_close(pipelined, plain, rtol=0, atol=1e-6)
        assert pipe_rows == rows > 0
        for head, metrics in plain_eval.items():
            for name, value in metrics.items():
                assert pipe_eval[head][name] == pytest.approx(value, abs=1e-6), (head, name)
    assert ranks[0][0][0] != ranks[1][0][0]  # each rank trains on its own batches


def _state(dmp) -> list[torch.Tensor]:
    tables = [t for shards in local_table_state(dmp).values() for _, t in shards]
    dense = [p.detach().clone() for n, p in dmp.named_parameters() if ".embedding_bags." not in n]
    return tables + dense + [b.clone() for b in norm_buffers(dmp)]


def _skip_in_the_pipeline(ctx, path):
    extra = ["--train.pipeline", "true", "--train.nonfinite", "skip"]
    cfg, schema, readers, dmp, plan = setup(ctx, path, extra=extra)
    trainer = Trainer(
        dmp, build_optimizer(dmp, plan, cfg.train), ctx, cfg.train, checkpoint_meta(cfg, schema)
    )
    batches = list(itertools.islice(readers.train, 4))
    if ctx.rank == 0:  # NaN features on one rank only: every rank must skip that batch
        batches[2] = dataclasses.replace(
            batches[2], dense=torch.full_like(batches[2].dense, float("nan"))
        )
    states, skipped = [], []
    for stepped in trainer.train_steps(batches):
        states.append(_state(dmp))
        skipped.append(stepped.skipped)
    assert trainer.runner.pipelined
    assert skipped == [False, False, True, False], skipped
    changed = [
        any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
        for before, after in itertools.pairwise(states)
    ]
    assert changed == [True, False, True], changed  # Adam's momentum alone would move step 3
    return skipped


def test_a_nonfinite_batch_is_skipped_in_the_pipeline_on_every_rank(tiny_dataset):
    ranks = run_multiprocess(_skip_in_the_pipeline, path=str(tiny_dataset))
    assert ranks[0] == ranks[1]


def _untraceable(ctx, path):
    """SparseArch with Python control flow on its input: TorchRec's fx trace fails."""
    from recsys_kdef.models.sparse import SparseArch

    original = SparseArch.forward

    def branching(self, features):
        if features.values().numel() == 0:  # a bool of a traced value: fx cannot follow it
            raise ValueError("empty batch")
        return original(self, features)

    SparseArch.forward = branching
    plain = _run(ctx, path, ["--train.pipeline", "false"])[2]
    trainer, _, fallback = _run(ctx, path, ["--train.pipeline", "true"])
    return plain, fallback, trainer.runner.pipelined


def test_a_model_torchrec_cannot_trace_falls_back_to_the_plain_loop(tiny_dataset):
    """Every batch runs once, in order (the ones the pipeline had copied included)."""
    for plain, fallback, pipelined in run_multiprocess(_untraceable, path=str(tiny_dataset)):
        assert not pipelined
        torch.testing.assert_close(fallback, plain, rtol=0, atol=1e-6)
