"""Raw feature values -> the ids a model reads, through the prepared dataset's vocabularies
(`<dataset>/vocab/<field>.parquet`, see recsys_kdef.data.prepare.vocab), so a served model
scores the same values the dataset card describes.

Raw values are each field's tokens as its vocabulary holds them (after the format's own
derivations, e.g. Criteo's log2 buckets or Avazu's hour of day): a token per row, a list of
tokens for multi-valued fields and sequences, floats for dense fields. Unknown, rare and
missing tokens get the field's OOV id, exactly as preparation gave them; hashed fields
(`--max-vocab`) are hashed the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys_kdef.data.batch import Batch
from recsys_kdef.data.columns import Columns
from recsys_kdef.data.prepare.formats import Features
from recsys_kdef.data.prepare.pipeline import encode
from recsys_kdef.data.prepare.vocab import HashedIds, Vocabulary
from recsys_kdef.data.schema import DataError, Schema

VOCAB_DIR = "vocab"


def load_vocabularies(directory: str | Path, schema: Schema) -> dict[str, Vocabulary | HashedIds]:
    """Every sparse field's encoder from a prepared dataset (or exported artifact) directory;
    DataError naming the missing file when a field has neither a vocabulary nor a hash."""
    directory = Path(directory)
    card = schema.extra.get("card", {}).get("fields", {})
    out: dict[str, Vocabulary | HashedIds] = {}
    for f in schema.sparse:
        if f.sequence_of is not None:
            continue  # a sequence shares its target's ids
        if card.get(f.name, {}).get("hashed"):
            out[f.name] = HashedIds(f.vocab_size)
            continue
        path = directory / VOCAB_DIR / f"{f.name}.parquet"
        if not path.is_file():
            raise DataError(
                f"{path}: no vocabulary for field '{f.name}'; raw values need the vocabularies "
                "`python -m recsys_kdef.data.prepare` writes (synthetic datasets have none: "
                "score their prepared ids with Predictor.predict_parquet)"
            )
        table = pq.read_table(path, columns=["token", "count"])
        tokens = table.column("token").combine_chunks()
        out[f.name] = Vocabulary(tokens, table.column("count").to_numpy(), len(tokens), 0, 0)
    for f in schema.sequences:
        out[f.name] = out[f.sequence_of]
    return out


def encode_raw(
    rows: dict[str, Any] | pa.Table, schema: Schema, vocabs: dict[str, Vocabulary | HashedIds]
) -> Batch:
    """A Batch of raw rows: a pyarrow table, a dict of columns (lists) or one row (a dict of
    scalar values); fields the rows lack are missing (OOV, dense 0)."""
    if isinstance(rows, dict) and _is_one_row(rows, schema):
        rows = {k: [v] for k, v in rows.items()}
    table = rows if isinstance(rows, pa.Table) else pa.table(dict(rows))
    n = table.num_rows
    unknown = set(table.column_names) - set(_columns(schema)) - {schema.label, schema.group}
    if unknown:
        raise DataError(
            f"raw rows: unknown columns {sorted(unknown)}; the schema has {_columns(schema)}"
        )
    sparse = {}
    for f in schema.sparse:
        if f.name in table.column_names:
            sparse[f.name] = table.column(f.name).combine_chunks()
        else:
            sparse[f.name] = pa.nulls(n, pa.list_(pa.string()) if f.multi_valued else pa.string())
    dense = {
        f.name: np.nan_to_num(
            table.column(f.name).to_numpy(zero_copy_only=False).astype(np.float32)
        )
        if f.name in table.column_names
        else np.zeros(n, np.float32)
        for f in schema.dense
    }
    feats = Features(sparse, dense, np.zeros(n, np.float32), np.arange(n))
    encoded = encode(feats, schema, vocabs)
    columns = Columns.from_arrow(encoded, schema, "raw rows", with_label=False)
    return columns.to_batch(schema.feature_names)


def _columns(schema: Schema) -> list[str]:
    return [*schema.sparse_names, *(f.name for f in schema.dense)]


def _is_one_row(rows: dict[str, Any], schema: Schema) -> bool:
    """Whether a dict holds one row's values (not columns): a multi-valued field's value is a
    list of tokens (not a list of lists), any other field's a scalar."""
    multi = {f.name for f in schema.sparse if f.multi_valued}
    for name, value in rows.items():
        listed = isinstance(value, list | tuple)
        if name in multi:
            return not (listed and value and isinstance(value[0], list | tuple))
        return not listed
    return False
