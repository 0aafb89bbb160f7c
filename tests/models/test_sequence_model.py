"""The model's cut of behaviour sequences: the sequence and mask a sequence-reading group gets
equal a direct lookup of the target's table, and other students see the pooled sequence;
sequences of different lengths are padded to the longest."""

from __future__ import annotations

import pytest
import torch

from recsys_kdef.config import ModelConfig, TowerConfig
from recsys_kdef.data.reader import ParquetBatchReader, list_split_files
from recsys_kdef.data.schema import Schema, SparseField
from recsys_kdef.models.ensemble import build_model
from recsys_kdef.models.sparse import SequenceCut


def make(path, mode):
    schema = Schema.load(path)
    cfg = ModelConfig(
        num_students=3,
        embedding_dim=4,
        embedding_mode=mode,
        tower=TowerConfig(hidden_units=[8], batch_norm=False, dropout=0.0),
    )
    torch.manual_seed(0)
    model = build_model(cfg, schema, device=torch.device("cpu"))
    files = list_split_files(path, "valid")
    batch = next(iter(ParquetBatchReader(files, schema, 32, training=False)))
    return schema, model, batch


def tower_inputs(model, batch):
    """What the towers receive: per group (fields, dense, sequences)."""
    seen = {}

    def hook(_, args):
        seen["args"] = args

    handle = model.towers.register_forward_pre_hook(hook)
    model(batch.dense, batch.sparse)
    handle.remove()
    return seen["args"]


def weight(model, table):
    return model.sparse_arch.embedding_bag_collection.embedding_bags[table].weight.detach()


@pytest.mark.parametrize("mode", ["per_model", "shared"])
def test_sequence_and_mask_equal_a_direct_lookup_of_the_target_table(seq_dataset, mode):
    schema, model, batch = make(seq_dataset, mode)
    (fields,), _, sequences = tower_inputs(model, batch)
    ((seq, mask),) = sequences
    n_in = 3 if mode == "per_model" else 1
    assert fields.shape == (n_in, 32, len(schema.sparse), 4)
    assert seq.shape == (n_in, 32, 1, 4, 4) and mask.shape == (32, 1, 4)
    ids = {k: jt.to_dense() for k, jt in batch.sparse.to_dict().items()}
    hist = schema.sparse_names.index("hist_c1")
    for k in range(n_in):
        table = torch.nn.Embedding.from_pretrained(weight(model, f"s{k}__c1" if n_in > 1 else "c1"))
        for b in range(32):
            rows = [ids[f"hist_c1#{p}"][b].tolist() for p in range(4)]
            assert mask[b, 0].tolist() == [len(r) == 1 for r in rows]
            for p, r in enumerate(rows):
                want = table(torch.tensor(r)).sum(0) if r else torch.zeros(4)
                torch.testing.assert_close(seq[k, b, 0, p], want)
            present = torch.stack([table(torch.tensor(r))[0] for r in rows if r])
            torch.testing.assert_close(fields[k, b, hist], present.mean(0))  # pooling: mean
            torch.testing.assert_close(fields[k, b, 1], table(ids["c1"][b])[0])  # the target


def test_the_sequence_shares_the_target_table_and_has_none_of_its_own(seq_dataset):
    _, model, _ = make(seq_dataset, "per_model")
    configs = model.sparse_arch.embedding_bag_collection.embedding_bag_configs()
    names = [c.name for c in configs]
    assert not any("hist" in n for n in names)
    c1 = next(c for c in configs if c.name == "s2__c1")
    assert c1.feature_names == ["c1", *(f"hist_c1#{p}" for p in range(4))]


def test_training_moves_the_target_rows_the_history_reads(seq_dataset):
    schema, model, batch = make(seq_dataset, "shared")
    out = model(batch.dense, batch.sparse)
    out.logits.sum().backward()
    grad = model.sparse_arch.embedding_bag_collection.embedding_bags["c1"].weight.grad
    read = {int(i) for p in range(4) for i in batch.sparse[f"hist_c1#{p}"].values()}
    read |= {int(i) for i in batch.sparse["c1"].values()}
    moved = {int(i) for i in (grad.abs().sum(1) > 0).nonzero().flatten()}
    assert moved == read


def test_the_cut_of_two_sequences_of_different_lengths_equals_a_lookup_by_feature_name():
    seqs = [
        SparseField("hist_item", 10, True, "sum", sequence_of="item", max_len=3),
        SparseField("hist_cat", 10, True, "mean", sequence_of="cat", max_len=2),
    ]
    plain = [SparseField(n, 10) for n in ("a", "item", "b", "cat")]
    schema = Schema(sparse=(plain[0], plain[1], seqs[0], plain[2], plain[3], seqs[1]))
    features = ["a", "item", *seqs[0].feature_names, "b", "cat", *seqs[1].feature_names]
    cut = SequenceCut(schema)
    assert cut.num_features == len(features)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, len(features), 3, generator=g)  # (n, B, Nf, D)
    lengths = torch.tensor([[3, 2], [1, 0], [0, 1], [2, 2], [3, 1]])  # (B, S)
    mask = torch.arange(3) < lengths.unsqueeze(-1)  # (B, S, L), left-aligned
    fields, seq = cut(x, mask)
    assert seq.shape == (2, 5, 2, 3, 3) and fields.shape == (2, 5, 6, 3)
    col = {name: x[:, :, i] for i, name in enumerate(features)}
    for s, f in enumerate(seqs):
        for p in range(3):
            want = col[f"{f.name}#{p}"] if p < f.max_len else torch.zeros(2, 5, 3)
            torch.testing.assert_close(seq[:, :, s, p], want)
    for b in range(5):
        item = [col[f"hist_item#{p}"][:, b] for p in range(lengths[b, 0])]
        cat = [col[f"hist_cat#{p}"][:, b] for p in range(lengths[b, 1])]
        want = [col["a"][:, b], col["item"][:, b], sum(item, torch.zeros(2, 3))]
        want += [col["b"][:, b], col["cat"][:, b], sum(cat, torch.zeros(2, 3)) / max(len(cat), 1)]
        torch.testing.assert_close(fields[:, b], torch.stack(want, dim=1))
