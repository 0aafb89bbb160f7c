"""Real CTR data in: raw Criteo / Avazu / KDD12 / MovieLens / libFM / CSV / Parquet files ->
a dataset directory the trainer reads (schema.json + train/valid/test Parquet).

    python -m recsys_kdef.data.prepare criteo --raw train.txt --out data/criteo
    python -m recsys_kdef.data.prepare.fake kdd12 --rows 1000000 --out raw/kdd12   # test data
"""

from recsys_kdef.data.prepare.formats import FORMATS, Format
from recsys_kdef.data.prepare.pipeline import PrepareOptions, PrepareResult, RawFile, prepare

__all__ = ["FORMATS", "Format", "PrepareOptions", "PrepareResult", "RawFile", "prepare"]
