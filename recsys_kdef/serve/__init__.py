"""Serving: export a checkpoint's model to one self-contained file (export) and score Parquet
or raw rows with it (predict, raw_rows)."""
