"""train.compile: the torch.compile'd towers, fusion and objective train as the eager ones do,
on 2 gloo ranks through DMP (and TorchRec's pipeline), in one graph each."""

from __future__ import annotations

import itertools

import pytest
import torch
from multiprocess import run_multiprocess
from test_distributed import setup

from recsys_kdef.builders.job import checkpoint_meta
from recsys_kdef.distributed.optimizers import build_optimizer
from recsys_kdef.eval.evaluate import evaluate
from recsys_kdef.training.trainer import Trainer

STEPS = 4
# an MLP group (bmm) beside a vmapped ECN pair, confidence fusion and CETNet's loss; no
# dropout, since compiled code draws its random numbers differently
EXTRA = [
    "--model.students",
    "[{arch: mlp, count: 2, params: {hidden_units: [8, 8], net_dropout: 0.0}},"
    " {arch: ecn, count: 2, params: {num_cross_layers: 2, net_dropout: 0.0}}]",
    "--objective.name",
    "cetnet",
    "--model.fusion.name",
    "confidence",
    "--train.pipeline",
    "true",
]


# K = 3 MLP students (one batched group: the towers' and KDEF's closed-form autograd Functions)
KDEF = ["--objective.name", "kdef", "--train.pipeline", "true"]


def _train(ctx, path, compiled: bool, extra_args: list[str]):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    extra = [*extra_args, "--train.compile", str(compiled).lower()]
    cfg, schema, readers, dmp, plan = setup(ctx, path, extra=extra)
    trainer = Trainer(
        dmp, build_optimizer(dmp, plan, cfg.train), ctx, cfg.train, checkpoint_meta(cfg, schema)
    )
    steps = list(trainer.train_steps(itertools.islice(readers.train, STEPS)))
    evaluation = evaluate(trainer.module, readers.valid, ctx, runner=trainer.runner)
    counters = torch._dynamo.utils.counters
    graphs = {
        "graphs": counters["stats"]["unique_graphs"],
        "breaks": sum(counters["graph_break"].values()),
    }
    return [float(s.components["loss"]) for s in steps], evaluation.metrics, graphs


def _both(ctx, path, extra):
    return _train(ctx, path, False, extra), _train(ctx, path, True, extra)


@pytest.mark.slow
@pytest.mark.parametrize(("extra", "min_graphs"), [(EXTRA, 3), (KDEF, 2)], ids=["cetnet", "kdef"])
def test_compiled_dense_parts_train_as_the_eager_ones(tiny_dataset, extra, min_graphs):
    for (eager, eager_eval, none), (compiled, compiled_eval, graphs) in run_multiprocess(
        _both, path=str(tiny_dataset), extra=extra
    ):
        assert none["graphs"] == 0
        # towers (+ fusion) + objective, for training and for evaluation, unbroken
        assert graphs["graphs"] >= min_graphs and graphs["breaks"] == 0, graphs
        assert len(set(eager)) == STEPS  # real steps: the loss moves
        torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-5)
        for head, metrics in eager_eval.items():
            for name, value in metrics.items():
                assert abs(compiled_eval[head][name] - value) < 1e-6, (head, name)
