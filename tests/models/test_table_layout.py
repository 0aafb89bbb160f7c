"""Stacked per-model tables (one table per field, cut per student after the lookup) against K
separate tables with the same weights: forward, optimizer steps, and whose columns a loss moves."""

import pytest
import torch
from conftest import TINY

from recsys_kdef.config import ModelConfig, StudentSpec, load_config
from recsys_kdef.data.reader import ParquetBatchReader, list_split_files
from recsys_kdef.data.schema import Schema
from recsys_kdef.models.ensemble import build_model
from recsys_kdef.models.table_layout import stack_state_dict, unstack_state_dict
from recsys_kdef.training.step_counts import ids_looked_up

# two students of dim 4 and one of dim 8: stacked width 16, columns [0, 4), [4, 8), [8, 16)
DIMS = [4, 4, 8]


def make(tiny_dataset, layout, seed=0):
    schema = Schema.load(tiny_dataset)
    mlp = {"hidden_units": [8], "batch_norm": False, "net_dropout": 0.0}
    cfg = ModelConfig(
        embedding_dim=4,
        table_layout=layout,
        students=[
            StudentSpec(count=2, params=mlp),
            StudentSpec(count=1, embedding_dim=8, params=mlp),
        ],
    )
    torch.manual_seed(seed)
    model = build_model(cfg, schema, device=torch.device("cpu"))
    batch = next(
        iter(
            ParquetBatchReader(list_split_files(tiny_dataset, "valid"), schema, 16, training=False)
        )
    )
    return schema, model, batch


def pair(tiny_dataset):
    """A separate-layout model and a stacked one with the same weights (different seeds first)."""
    schema, separate, batch = make(tiny_dataset, "separate", seed=0)
    _, stacked, _ = make(tiny_dataset, "stacked", seed=1)
    stacked.load_state_dict(stack_state_dict(separate.state_dict()))
    return schema, separate, stacked, batch


def table(model, field):
    return model.sparse_arch.embedding_bag_collection.embedding_bags[f"stack__{field}"].weight


def separate_table(model, k, field):
    return model.sparse_arch.embedding_bag_collection.embedding_bags[f"s{k}__{field}"].weight


def test_stacked_has_one_table_per_field_of_the_summed_width(tiny_dataset):
    schema, separate, stacked, batch = pair(tiny_dataset)
    configs = stacked.sparse_arch.embedding_bag_collection.embedding_bag_configs()
    assert [c.name for c in configs] == [f"stack__{f}" for f in schema.sparse_names]
    assert {c.embedding_dim for c in configs} == {sum(DIMS)}
    fields = 1 + TINY.num_sparse + TINY.num_multi
    ids = int(batch.sparse.values().numel())  # every field's ids of the batch, once
    assert len(configs) == fields
    assert ids_looked_up(stacked, batch.sparse) == ids
    assert ids_looked_up(separate, batch.sparse) == len(DIMS) * ids


def test_stacked_forward_equals_separate_tables_with_copied_weights(tiny_dataset):
    _, separate, stacked, batch = pair(tiny_dataset)
    want = separate(batch.dense, batch.sparse)
    have = stacked(batch.dense, batch.sparse)
    assert want.logits.std() > 0
    torch.testing.assert_close(have.logits, want.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(have.hidden, want.hidden, rtol=0, atol=1e-6)
    # the L2 term reads the sum of squares of every pooled embedding: equal in either layout
    torch.testing.assert_close(have.embeddings.pow(2).sum(), want.embeddings.pow(2).sum())


@pytest.mark.parametrize("student", [0, 2])
def test_a_students_loss_moves_only_its_own_columns(tiny_dataset, student):
    schema, _, stacked, batch = pair(tiny_dataset)
    stacked(batch.dense, batch.sparse).logits[:, student].sum().backward()
    start = sum(DIMS[:student])
    own = slice(start, start + DIMS[student])
    for field in schema.sparse_names:
        grad = table(stacked, field).grad
        assert grad[:, own].abs().sum() > 0, field
        others = torch.ones(sum(DIMS), dtype=torch.bool)
        others[own] = False
        assert grad[:, others].abs().sum() == 0, field


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimizer_steps_equal_separate_tables(tiny_dataset, optimizer):
    schema, separate, stacked, batch = pair(tiny_dataset)
    before = table(stacked, schema.sparse_names[0]).detach().clone()
    steps = []
    for model in (separate, stacked):
        opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer](
            model.parameters(), lr=0.05
        )
        for _ in range(3):
            opt.zero_grad()
            out = model(batch.dense, batch.sparse)
            (out.logits.sigmoid() - 0.3).square().mean().backward()
            opt.step()
        steps.append(model.state_dict())
    torch.testing.assert_close(stack_state_dict(steps[0]), steps[1], rtol=0, atol=1e-6)
    assert (table(stacked, schema.sparse_names[0]) != before).any()  # the steps moved rows


def test_auto_layout_follows_the_sparse_optimizer():
    def layout(*overrides):
        return load_config(list(overrides)).model.table_layout

    assert layout() == "separate"  # rowwise Adagrad: one row state would serve K students
    assert layout("--train.sparse_optimizer", "adam") == "stacked"
    assert layout("--train.sparse_optimizer", "sgd") == "stacked"
    assert layout("--model.table_layout", "stacked") == "stacked"
    assert layout("--train.sparse_optimizer", "sgd", "--model.table_layout", "separate") == (
        "separate"
    )


def test_unstacking_gives_back_each_students_separate_tables(tiny_dataset):
    """unstack_state_dict (what diagnose reads per student) inverts stack_state_dict, with
    students of different widths."""
    _, separate, stacked, _ = pair(tiny_dataset)
    back = unstack_state_dict(stacked.state_dict(), DIMS)
    want = separate.state_dict()
    assert sorted(back) == sorted(want)
    for key, value in want.items():
        assert torch.equal(back[key], value), key
