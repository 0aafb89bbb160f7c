"""Behaviour-sequence fields: the schema keys and their errors, and the batch's positional
features (the last max_len ids of the list column, left-aligned, empty bags past them)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_kdef.config import SyntheticConfig
from recsys_kdef.data.reader import ParquetBatchReader, list_split_files
from recsys_kdef.data.schema import DataError, Schema, SparseField
from recsys_kdef.data.synthetic import generate

ITEM = SparseField("item", 50)
HIST = SparseField("hist", 50, multi_valued=True, pooling="mean", sequence_of="item", max_len=3)


def test_a_sequence_field_round_trips_through_json_and_older_files_keep_their_keys():
    schema = Schema(sparse=(SparseField("user", 9), ITEM, HIST))
    again = Schema.from_json(schema.to_json())
    assert again == schema and again.sparse[2].sequence_of == "item"
    assert schema.to_json()["sparse"][0] == {
        "name": "user",
        "vocab_size": 9,
        "multi_valued": False,
        "pooling": "sum",
    }
    assert schema.feature_names == ["user", "item", "hist#0", "hist#1", "hist#2"]
    assert schema.sequences == [HIST]


@pytest.mark.parametrize(
    "field, message",
    [
        (SparseField("hist", 50, True, sequence_of="nope", max_len=3), "no sparse field 'nope'"),
        (SparseField("hist", 51, True, sequence_of="item", max_len=3), "vocab_size 51 differs"),
        (SparseField("hist", 50, False, sequence_of="item", max_len=3), "multi_valued: true"),
        (SparseField("hist", 50, True, sequence_of="item", max_len=0), "max_len >= 1"),
        (SparseField("hist", 50, True, sequence_of="tags", max_len=2), "single-valued"),
        (SparseField("h#1", 50, True, sequence_of="item", max_len=2), "may not contain '#'"),
        (SparseField("hist", 50, True, max_len=2), "max_len without sequence_of"),
    ],
)
def test_schema_errors_name_the_sequence_field(field, message):
    tags = SparseField("tags", 50, multi_valued=True)
    with pytest.raises(DataError, match=f"'{field.name}'.*{message}"):
        Schema(sparse=(ITEM, tags, field))


def test_a_sequence_must_be_a_list_column(tmp_path):
    schema = Schema(sparse=(ITEM, HIST))
    table = pa.table({"item": [1, 2], "hist": [3, 4], "label": [0.0, 1.0]})
    pq.write_table(table, tmp_path / "x.parquet")
    with pytest.raises(DataError, match="column 'hist'.*list of integer ids"):
        ParquetBatchReader([tmp_path / "x.parquet"], schema, 2)


def test_the_batch_carries_the_last_ids_of_each_list_as_positions(tmp_path):
    schema = Schema(sparse=(ITEM, HIST))
    hist = [[1, 2, 3, 4, 5], [], [7], None, [8, 9, 10]]
    table = pa.table(
        {"item": [0, 1, 2, 3, 4], "hist": hist, "label": [0.0, 1.0, 0.0, 1.0, 0.0]},
        schema=schema.arrow_schema(),
    )
    pq.write_table(table, tmp_path / "x.parquet")
    (batch,) = ParquetBatchReader([tmp_path / "x.parquet"], schema, 5, training=False)
    assert batch.sparse.keys() == ["item", "hist#0", "hist#1", "hist#2"]
    got = {k: jt.to_dense() for k, jt in batch.sparse.to_dict().items()}
    want = [[3, 4, 5], [], [7], [], [8, 9, 10]]  # the last 3, left-aligned
    for i, row in enumerate(want):
        for p in range(3):
            assert got[f"hist#{p}"][i].tolist() == row[p : p + 1], (i, p)


def test_synthetic_sequences_match_their_list_column_through_a_shuffling_reader(tmp_path):
    cfg = SyntheticConfig(
        rows=1200,
        num_sparse=2,
        num_multi=0,
        num_dense=1,
        vocab_size=64,
        sequence_len=4,
        row_group_size=300,
    )
    schema = generate(cfg, tmp_path / "seq")
    files = list_split_files(tmp_path / "seq", "train")
    rows = pq.read_table(files, columns=["c1", "hist_c1", "d1"]).to_pylist()
    by_dense = {round(r["d1"], 6): r for r in rows}
    rd = ParquetBatchReader(files, schema, 64, training=True, shuffle_buffer=600, seed=1)
    batch = next(iter(rd))
    per_key = {k: jt.to_dense() for k, jt in batch.sparse.to_dict().items()}
    for i in range(len(batch)):
        row = by_dense[round(float(batch.dense[i, 0]), 6)]
        assert per_key["c1"][i].tolist() == [row["c1"]]
        positions = [per_key[f"hist_c1#{p}"][i].tolist() for p in range(4)]
        assert sum(positions, []) == row["hist_c1"][-4:]
    lengths = np.array([len(r["hist_c1"]) for r in rows])
    assert lengths.max() > 4 and lengths.min() >= 1  # truncation is exercised
