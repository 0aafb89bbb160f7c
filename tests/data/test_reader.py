from collections import Counter
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_kdef.data.reader import ParquetBatchReader, list_split_files
from recsys_kdef.data.schema import DataError, DenseField, Schema, SparseField


def rows_of(batch):
    """Each row of a Batch as a hashable tuple (ids of every field, dense, label)."""
    per_key = {k: jt.to_dense() for k, jt in batch.sparse.to_dict().items()}
    out = []
    for i in range(len(batch)):
        ids = tuple(tuple(per_key[k][i].tolist()) for k in batch.sparse.keys())
        out.append((ids, tuple(np.round(batch.dense[i].tolist(), 5)), float(batch.labels[i])))
    return out


def reader(path, split="train", **kw):
    schema = Schema.load(path)
    return ParquetBatchReader(list_split_files(path, split), schema, kw.pop("batch_size", 64), **kw)


def test_eval_reads_every_row_once_across_ranks_with_equal_step_counts(tiny_dataset):
    all_rows = [r for b in reader(tiny_dataset, "train", training=False) for r in rows_of(b)]
    per_rank, steps = [], []
    for rank in range(3):
        rd = reader(tiny_dataset, "train", training=False, rank=rank, world_size=3)
        batches = list(rd)
        steps.append(len(batches))
        per_rank.append([r for b in batches if not b.padding for r in rows_of(b)])
    assert len(set(steps)) == 1
    assert Counter(r for rows in per_rank for r in rows) == Counter(all_rows)
    assert all(per_rank)


def test_training_ranks_are_disjoint_equal_and_full_batches(tiny_dataset):
    seen = []
    for rank in range(2):
        rd = reader(
            tiny_dataset, training=True, rank=rank, world_size=2, shuffle_buffer=1000, seed=3
        )
        batches = list(rd)
        assert len(batches) == len(rd) > 0
        assert all(len(b) == 64 for b in batches)
        seen.append({r for b in batches for r in rows_of(b)})
    assert len(seen[0]) > 0 and not seen[0] & seen[1]
    assert len(reader(tiny_dataset, rank=0, world_size=2, shuffle_buffer=1000)) == len(
        reader(tiny_dataset, rank=1, world_size=2, shuffle_buffer=1000)
    )


def test_shuffle_is_deterministic_per_seed_and_epoch(tiny_dataset):
    def order(seed, epoch):
        rd = reader(tiny_dataset, shuffle_buffer=1000, seed=seed)
        rd.set_epoch(epoch)
        return [r for b in rd for r in rows_of(b)]

    first = order(1, 0)
    assert first == order(1, 0)
    assert first != order(1, 1)
    assert first != order(2, 0)
    unshuffled = [r for b in reader(tiny_dataset, shuffle_buffer=0) for r in rows_of(b)]
    assert first != unshuffled
    assert len(set(first)) == len(first)  # no row twice within an epoch


def test_buffer_stays_bounded(tiny_dataset):
    rd = reader(tiny_dataset, shuffle_buffer=1200, batch_size=100)
    n = sum(len(b) for b in rd)
    assert n > 3000
    assert rd.max_buffered_rows <= 1200 + 500 + 100  # buffer + one row group + one batch
    assert rd.max_buffered_rows < n / 2


def write(path, table, row_group_size=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


SCHEMA = Schema(
    sparse=(SparseField("a", 10), SparseField("tags", 5, multi_valued=True)),
    dense=(DenseField("x"),),
    label="y",
    group="a",
)


def test_rows_become_the_right_keyed_jagged_tensor(tmp_path):
    table = pa.table(
        {
            "a": pa.array([3, None, 9], pa.int32()),
            "tags": pa.array([[1, 2], [], None], pa.list_(pa.int64())),
            "x": pa.array([0.5, None, 2.0], pa.float64()),
            "y": pa.array([1, 0, 1], pa.int8()),
        }
    )
    f = write(tmp_path / "t.parquet", table)
    schema = replace(SCHEMA, group=None)
    (batch,) = list(ParquetBatchReader([f], schema, 8, training=False))
    kjt = batch.sparse.to_dict()
    assert kjt["a"].lengths().tolist() == [1, 0, 1] and kjt["a"].values().tolist() == [3, 9]
    assert kjt["tags"].lengths().tolist() == [2, 0, 0] and kjt["tags"].values().tolist() == [1, 2]
    assert batch.dense[:, 0].tolist() == [0.5, 0.0, 2.0]
    assert batch.labels.tolist() == [1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    "columns, words",
    [
        ({"tags": [[1]], "x": [1.0], "y": [1.0]}, ["column 'a' is missing", "integer id"]),
        ({"a": ["p"], "tags": [[1]], "x": [1.0], "y": [1.0]}, ["column 'a' has type string"]),
        ({"a": [12], "tags": [[1]], "x": [1.0], "y": [1.0]}, ["column 'a' has id 12", "[0, 10)"]),
        ({"a": [1], "tags": [[7]], "x": [1.0], "y": [1.0]}, ["column 'tags' has id 7", "[0, 5)"]),
        ({"a": [1], "tags": [[1]], "x": [1.0], "y": [2.0]}, ["column 'y'", "value 2.0", "0 or 1"]),
        (
            {"a": [1], "tags": [[1]], "x": [1.0], "y": pa.array([None], pa.float32())},
            ["column 'y'", "nulls"],
        ),
    ],
)
def test_bad_files_are_named_with_column_and_value(tmp_path, columns, words):
    f = write(tmp_path / "bad.parquet", pa.table(columns))
    with pytest.raises(DataError) as err:
        list(ParquetBatchReader([f], SCHEMA, 8, training=False))
    assert str(f) in str(err.value)
    for w in words:
        assert w in str(err.value)


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "train" / "junk.parquet"
    junk.parent.mkdir()
    junk.write_text("not parquet")
    with pytest.raises(DataError, match="junk.parquet: not a readable Parquet file"):
        ParquetBatchReader([junk], SCHEMA, 8)
    with pytest.raises(DataError, match="no \\*.parquet files for the 'valid' split"):
        list_split_files(tmp_path, "valid")
    with pytest.raises(DataError, match="no schema.json"):
        Schema.load(tmp_path)


def test_too_few_row_groups_or_rows_for_the_ranks(tmp_path):
    f = write(
        tmp_path / "one.parquet",
        pa.table({"a": [1, 2], "tags": [[1], [2]], "x": [0.0, 1.0], "y": [0.0, 1.0]}),
    )
    with pytest.raises(DataError, match="1 row groups for 2 ranks"):
        ParquetBatchReader([f], SCHEMA, 8, world_size=2)
    with pytest.raises(DataError, match="lower data.batch_size"):
        list(ParquetBatchReader([f], SCHEMA, 8, training=True))
