"""Load an exported artifact (no process group, CPU) and score rows or Parquet files.

    python -m recsys_kdef.serve.predict --model artifacts/best --input data/demo/test/part-00000.parquet \
        --output preds.parquet

The output has one `prediction` column (the click probability) in input row order, plus the
label and group columns when the input has them. It appears only when complete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recsys_kdef.config import ModelConfig
from recsys_kdef.config.loading import from_dict
from recsys_kdef.data.batch import Batch
from recsys_kdef.data.reader import ParquetBatchReader
from recsys_kdef.data.schema import DataError, Schema
from recsys_kdef.io import atomic_path, check_writable, load_versioned
from recsys_kdef.models.ensemble import EnsembleModel, build_model
from recsys_kdef.serve.export import ARTIFACT_FORMAT
from recsys_kdef.serve.raw_rows import encode_raw, load_vocabularies


class Predictor:
    """A standalone exported model: `predict(rows)` returns (B,) click probabilities of a
    Batch of prepared ids, or of raw rows (a dict or a pyarrow table of raw values, mapped
    through the dataset's vocabularies: recsys_kdef.serve.raw_rows)."""

    def __init__(
        self, model: EnsembleModel, schema: Schema, head: str, vocab_dir: Path | None = None
    ) -> None:
        self.model = model.eval()
        self.schema = schema
        self.head = head
        self.vocab_dir = vocab_dir
        """Where raw values find their vocabularies (an artifact or dataset directory)."""
        self._vocabs = None

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        artifact = load_versioned(
            path,
            "model.pt",
            ARTIFACT_FORMAT,
            "exported model",
            "make one with python -m recsys_kdef.serve.export",
        )
        source = Path(path) / "model.pt" if Path(path).is_dir() else Path(path)
        try:
            schema = Schema.from_json(artifact["schema"])
            cfg = from_dict(ModelConfig, artifact["model"], "model")
            model = build_model(cfg, schema, device=torch.device("cpu"))
            model.load_state_dict(artifact["state_dict"])
            head = artifact["head"]
        except (KeyError, TypeError, ValueError, RuntimeError) as e:  # schema, config, weights
            raise ValueError(
                f"{source}: not a usable exported model "
                f"({type(e).__name__}: {str(e).strip()[:300]}); export it again"
            ) from None
        return cls(model, schema, head, source.parent)

    @torch.no_grad()
    def predict(self, rows: Batch | dict | pa.Table) -> torch.Tensor:
        """(B,) click probabilities of a Batch, or of raw rows (unknown values: OOV)."""
        batch = rows if isinstance(rows, Batch) else self.encode(rows)
        return torch.sigmoid(self.model(batch.dense, batch.sparse).heads()[self.head])

    def encode(self, rows: dict | pa.Table) -> Batch:
        """Raw rows as a Batch of the dataset's ids (vocabularies read once, from vocab_dir)."""
        if self._vocabs is None:
            if self.vocab_dir is None:
                raise DataError("raw rows need vocabularies: give Predictor a vocab_dir")
            self._vocabs = load_vocabularies(self.vocab_dir, self.schema)
        return encode_raw(rows, self.schema, self._vocabs)

    def predict_parquet(
        self, source: str | Path, destination: str | Path, batch_size: int = 8192
    ) -> int:
        """Score every row of `source`; write `destination` atomically; returns the row count."""
        has_label = self.schema.label in pq.read_schema(source).names
        reader = ParquetBatchReader(
            [Path(source)], self.schema, batch_size, training=False, with_labels=has_label
        )
        preds, labels, groups = [], [], []
        for batch in reader:
            preds.append(self.predict(batch).numpy())
            labels.append(batch.labels.numpy())
            if batch.groups is not None:
                groups.append(batch.groups.numpy())
        columns = {"prediction": pa.array(np.concatenate(preds).astype(np.float32))}
        if has_label:
            columns[self.schema.label] = pa.array(np.concatenate(labels))
        if groups:
            columns[self.schema.group] = pa.array(np.concatenate(groups))
        with atomic_path(destination) as tmp:
            pq.write_table(pa.table(columns), tmp)
        return len(columns["prediction"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Score a Parquet file with an exported model.")
    parser.add_argument("--model", required=True, help="artifact directory (or its model.pt)")
    parser.add_argument(
        "--input", required=True, help="Parquet file with the schema's feature columns"
    )
    parser.add_argument("--output", required=True, help="Parquet file to write (prediction column)")
    parser.add_argument("--batch-size", type=int, default=8192)
    args = parser.parse_args(argv)
    try:
        check_writable(Path(args.output).parent, "--output (its directory)")
        if not Path(args.input).is_file():
            raise FileNotFoundError(f"--input={args.input}: no such file")
        predictor = Predictor.load(args.model)
        rows = predictor.predict_parquet(args.input, args.output, args.batch_size)
    except (DataError, FileNotFoundError, ValueError) as e:  # the user's to fix: no traceback
        sys.exit(f"error: {e}")
    print(f"scored {rows:,} rows -> {args.output}")


if __name__ == "__main__":
    main()
