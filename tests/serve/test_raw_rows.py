"""Predictor.predict on raw values: a prepared MovieLens-style dataset's test rows, turned back
into their tokens through its vocabulary files, score exactly as the prepared rows do; unknown
and missing tokens are OOV; export says which student it took and carries the vocabularies."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recsys_kdef.config import ModelConfig
from recsys_kdef.data.prepare.__main__ import main as prepare_main
from recsys_kdef.data.prepare.fake import make_fake
from recsys_kdef.data.reader import ParquetBatchReader, list_split_files
from recsys_kdef.data.schema import DataError, Schema
from recsys_kdef.models.ensemble import build_model
from recsys_kdef.serve.export import student_label
from recsys_kdef.serve.predict import Predictor


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    make_fake("movielens", root / "ml", 4000, seed=3)
    prepare_main(["movielens", "--raw", str(root / "ml"), "--out", str(root / "data"),
                  "--no-progress"])  # fmt: skip
    schema = Schema.load(root / "data")
    torch.manual_seed(0)
    cfg = ModelConfig(num_students=2, embedding_dim=4)
    model = build_model(cfg, schema, device=torch.device("cpu"))
    return root / "data", schema, Predictor(model, schema, "ensemble", root / "data")


def raw_tokens(data, schema: Schema, table: pa.Table) -> dict[str, list]:
    """The prepared ids of `table` back as tokens (the vocab files' token column, id - 1);
    the OOV id as a token no vocabulary has."""
    out = {}
    for f in schema.sparse:
        tokens = pq.read_table(data / "vocab" / f"{f.name}.parquet").column("token").to_pylist()

        def token(i: int, tokens: list = tokens) -> str:
            return tokens[i - 1] if 1 <= i <= len(tokens) else "never-seen"

        column = table.column(f.name).to_pylist()
        out[f.name] = (
            [[token(i) for i in v] for v in column]
            if f.multi_valued
            else [token(i) for i in column]
        )
    for f in schema.dense:
        out[f.name] = table.column(f.name).to_pylist()
    return out


def test_raw_rows_score_as_their_prepared_rows(prepared):
    data, schema, predictor = prepared
    path = list_split_files(data, "test")[0]
    batch = next(iter(ParquetBatchReader([path], schema, 256, training=False)))
    table = pq.read_table(path).slice(0, 256)
    expected = predictor.predict(batch)
    raw = raw_tokens(data, schema, table)
    assert torch.equal(predictor.predict(raw), expected)  # a dict of columns
    assert torch.equal(predictor.predict(pa.table(raw)), expected)  # a pyarrow table
    one = {name: values[3] for name, values in raw.items()}  # one row as a dict of scalars
    assert torch.equal(predictor.predict(one), expected[3:4])


def test_unknown_and_missing_values_are_oov(prepared):
    data, schema, predictor = prepared
    field = next(f for f in schema.sparse if not f.multi_valued)
    oov = field.vocab_size - 1  # ids: padding 0, tokens 1..n, OOV n + 1
    batch = predictor.encode({field.name: ["no-such-token", None]})
    values, lengths = batch.sparse[field.name].values(), batch.sparse[field.name].lengths()
    assert values.tolist() == [oov, oov] and lengths.tolist() == [1, 1]
    with pytest.raises(DataError, match=r"unknown columns \['colour'\]"):
        predictor.encode({"colour": ["red"]})


def test_a_dataset_without_vocabularies_is_named(prepared, tmp_path):
    _, schema, predictor = prepared
    bare = Predictor(predictor.model, schema, "ensemble", tmp_path)
    with pytest.raises(DataError, match=str(tmp_path / "vocab")):
        bare.predict({schema.sparse[0].name: ["x"]})


def test_export_label_names_the_student():
    valid = {"student_2": {"auc": 0.812346}}
    assert student_label(2, "best", valid) == "student 2 (best on validation AUC 0.81235)"
    assert student_label(1, "1", valid) == "student 1 (asked for)"
    assert student_label(None, "ensemble", valid) == "the ensemble"
