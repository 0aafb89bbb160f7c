import pytest
import torch
from conftest import TINY

from recsys_kdef.builders.train_wrapper import EnsembleTrain
from recsys_kdef.config import ModelConfig, TowerConfig, load_config
from recsys_kdef.data.reader import ParquetBatchReader, list_split_files
from recsys_kdef.data.schema import Schema
from recsys_kdef.models.ensemble import build_model
from recsys_kdef.objectives import build_objective


def make(tiny_dataset, mode, k=3):
    schema = Schema.load(tiny_dataset)
    cfg = ModelConfig(
        num_students=k,
        embedding_dim=4,
        embedding_mode=mode,
        tower=TowerConfig(hidden_units=[8], batch_norm=False, dropout=0.0),
    )
    torch.manual_seed(0)
    model = build_model(cfg, schema, device=torch.device("cpu"))
    batch = next(
        iter(
            ParquetBatchReader(list_split_files(tiny_dataset, "valid"), schema, 16, training=False)
        )
    )
    return schema, model, batch


def table_names(model):
    return [c.name for c in model.sparse_arch.embedding_bag_collection.embedding_bag_configs()]


def test_per_model_has_k_times_f_tables_and_shared_has_f(tiny_dataset):
    schema, per_model, _ = make(tiny_dataset, "per_model")
    fields = schema.sparse_names
    assert len(fields) == 1 + TINY.num_sparse + TINY.num_multi
    assert table_names(per_model) == [f"s{k}__{f}" for k in range(3) for f in fields]
    _, shared, _ = make(tiny_dataset, "shared")
    assert table_names(shared) == fields


def test_outputs_and_teacher_is_the_mean_logit(tiny_dataset):
    _, model, batch = make(tiny_dataset, "per_model")
    out = model(batch.dense, batch.sparse)
    assert out.logits.shape == (16, 3) and out.hidden.shape == (16, 3, 8)
    torch.testing.assert_close(out.teacher_logit, out.logits.mean(dim=1))


def perturb(model, prefix):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if f"embedding_bags.{prefix}" in name:
                p.add_(torch.randn_like(p))


def test_per_model_students_read_only_their_own_tables(tiny_dataset):
    _, model, batch = make(tiny_dataset, "per_model")
    before = model(batch.dense, batch.sparse).logits
    perturb(model, "s1__")
    after = model(batch.dense, batch.sparse).logits
    changed = (after - before).abs().amax(dim=0)
    assert changed[1] > 1e-3 and changed[0] == 0 and changed[2] == 0


def test_shared_tables_feed_every_student(tiny_dataset):
    _, model, batch = make(tiny_dataset, "shared")
    before = model(batch.dense, batch.sparse).logits
    perturb(model, "c1")
    changed = (model(batch.dense, batch.sparse).logits - before).abs().amax(dim=0)
    assert bool((changed > 1e-4).all())


def test_whole_table_l2_adds_exactly_l2_times_every_table_row_to_the_gradient(tiny_dataset):
    """(l2/2)*||E||^2 per table: the gradient of every row, read or not, grows by l2 * E; the
    towers' gradients do not change."""
    from recsys_kdef.builders.train_wrapper import EnsembleTrain
    from recsys_kdef.config import ObjectiveConfig
    from recsys_kdef.objectives import build_objective

    _, model, batch = make(tiny_dataset, "per_model")
    objective = build_objective(ObjectiveConfig(name="kdef"), model)
    grads = []
    for l2 in (0.0, 0.3):
        model.zero_grad()
        EnsembleTrain(model, objective, embedding_l2=l2, l2_mode="whole_table")(batch)[0].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, param in model.named_parameters():
        expected = grads[0][name] + (0.3 * param.detach() if ".embedding_bags." in name else 0)
        torch.testing.assert_close(grads[1][name], expected, rtol=0, atol=1e-6, msg=name)
    unread = grads[0]["sparse_arch.embedding_bag_collection.embedding_bags.s0__user_id.weight"]
    assert (unread.abs().sum(dim=1) == 0).any()  # some rows are not in the batch, and still decay


@pytest.mark.parametrize("objective", ["kdef", "mean", "cetnet"])
def test_a_students_auxiliary_loss_joins_every_objective_reduced_as_its_bce(seq_dataset, objective):
    """loss = objective + aux_loss_weight * (mean over students of aux_k, the sum for cetnet,
    whose per-model BCE terms sum), aux_k = DIEN's aux_loss_alpha * L_aux and 0 for the MLP;
    a weight of 0 leaves it out."""
    schema = Schema.load(seq_dataset)
    students = (
        "[{arch: dien, params: {dnn_hidden_units: [8], aux_loss_alpha: 0.5,"
        " aux_hidden_units: [4]}}, {arch: mlp, params: {hidden_units: [8]}}]"
    )
    fusion = ["--model.fusion.name", "confidence"] if objective == "cetnet" else []
    cfg = load_config(
        ["--model.embedding_dim", "4", "--model.students", students, *fusion]
        + ["--objective.name", objective]
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, schema, device=torch.device("cpu")).eval()
    batch = next(iter(ParquetBatchReader(list_split_files(seq_dataset, "valid"), schema, 64)))
    for weight in (1.0, 0.3, 0.0):
        train = EnsembleTrain(model, build_objective(cfg.objective, model), aux_loss_weight=weight)
        loss, (result, output) = train(batch)
        aux = output.aux_loss
        assert aux.shape == (2,) and aux[0] > 0 and aux[1] == 0
        alone = build_objective(cfg.objective, model)(output, batch.labels).loss
        reduced = aux.sum() if objective == "cetnet" else aux.mean()
        torch.testing.assert_close(loss, alone + weight * reduced)
        assert ("aux" in result.components) == (weight > 0)
